"""The paper's MDP (§4.1, SPEC §4) as a PettingZoo ``ParallelEnv``: one agent per task.

At every decision step each agent whose task still has work picks one action
``a = j * S + k``: dispatch its subtask ``j`` to server ``k``. Actions are
applied in a random order drawn each step (the execution model is sequential,
and a fixed order would always favour task 0). An action that breaks a
constraint is not executed and is penalised; the paper's agents learn from
those penalties, and the valid actions are also exposed as ``action_mask``.

Edge failures: before every step each edge is independently down with
probability ``failure_prob`` for that step (shown in the observation); a
subtask sent to a down edge is not executed and is penalised like a modality
mismatch, since the server cannot serve it then.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from llmoffload.execution import Execution, Run, Schedule
from llmoffload.instance import Instance, sample_instance
from llmoffload.network import link_rates
from llmoffload.scenario import Scenario

Array = TypeVar("Array")  # a numpy array or a torch tensor
VIOLATIONS = ("repeat", "precedence", "modality", "failure", "deadline")


def run_reward(sc: Scenario, run: Run) -> float:
    """SPEC §4's reward of one executed dispatch: the bonus if it ends by T_max,
    else the lateness penalty, minus its weighted time and cost.

    Summed over a schedule's runs it is the episode reward of replaying that
    schedule with no refused action, which puts HEFT and Optimal on the
    learners' scale.
    """
    late = max(0.0, run.end - sc.t_max_s)
    return (
        (0.0 if late > 0 else sc.reward.bonus)  # q * theta
        - sc.reward.penalty * late  # eta3
        - sc.gamma * (run.upload + run.compute)
        - (1.0 - sc.gamma) * run.cost
    )


def outcome(schedule: Schedule) -> dict[str, float]:
    """A finished schedule's objective, mean task latency, total cost and deadline misses."""
    return {
        "objective": schedule.objective,
        "latency": float(np.mean([t.latency for t in schedule.tasks])),
        "cost": sum(t.cost for t in schedule.tasks),
        "deadline_misses": schedule.deadline_misses,
    }


@dataclass(frozen=True)
class Layout:
    """Where each part lies in an agent's flat observation vector.

    ``[P_i (J) | servers (S x F_s) | nodes (J x F_n) | adjacency (J x J)]``;
    the node features and adjacency are what the GCN task encoder reads.
    """

    subtasks: int
    servers: int
    modalities: int

    @property
    def server_features(self) -> int:
        return self.modalities + 5  # GHz, price, modalities, uplink, queue delay, up

    @property
    def node_features(self) -> int:
        return self.modalities + 5  # real, modality, input, output, cycles, dispatched

    @property
    def actions(self) -> int:
        return self.subtasks * self.servers

    @property
    def size(self) -> int:
        j = self.subtasks
        return j + self.servers * self.server_features + j * self.node_features + j * j

    def split(self, obs: Array) -> tuple[Array, Array, Array, Array]:
        """(P, servers, nodes, adjacency) of one observation or a batch (numpy or torch)."""
        j, s = self.subtasks, self.servers
        lead = obs.shape[:-1]
        a = j + s * self.server_features
        b = a + j * self.node_features
        return (
            obs[..., :j],
            obs[..., j:a].reshape(*lead, s, self.server_features),
            obs[..., a:b].reshape(*lead, j, self.node_features),
            obs[..., b:].reshape(*lead, j, j),
        )


def layout_of(scenario: Scenario) -> Layout:
    longest = max(len(flow.nodes) for flow in scenario.workflows.values())
    return Layout(longest, len(scenario.servers), len(scenario.modalities))


class OffloadEnv(ParallelEnv):
    """Agents ``task_0 .. task_{I-1}`` dispatch their subtasks until all are placed."""

    metadata = {"name": "llmoffload_v0", "render_modes": ["rgb_array"]}

    def __init__(
        self,
        scenario: Scenario,
        failure_prob: float = 0.0,
        max_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.scenario = scenario
        self.layout = layout_of(scenario)
        self.failure_prob = failure_prob
        self.max_steps = max_steps or 4 * self.layout.subtasks
        self.render_mode = render_mode
        self.possible_agents = [f"task_{i}" for i in range(scenario.workload.tasks)]
        self.agents: list[str] = []
        self.rng = np.random.default_rng()
        n = self.layout
        self._observation_space = spaces.Dict(
            {
                "observation": spaces.Box(-np.inf, np.inf, (n.size,), np.float32),
                "action_mask": spaces.Box(0, 1, (n.actions,), np.int8),
            }
        )
        self._action_space = spaces.Discrete(n.actions)
        sc = scenario
        top_ghz = max(s.ghz for s in sc.servers)
        top_price = max(s.usd_per_ghz for s in sc.servers) or 1.0
        self._static_servers = np.array(
            [
                [s.ghz / top_ghz, s.usd_per_ghz / top_price]
                + [float(m in s.modalities) for m in sc.modalities]
                for s in sc.servers
            ],
            dtype=np.float32,
        )

    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._action_space

    # -- episode ---------------------------------------------------------------

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict, dict]:
        """Start an episode on a fresh instance drawn from the env's generator.

        ``options={"instance": inst}`` replays a given instance instead.
        """
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        options = options or {}
        self.instance: Instance = options.get("instance") or sample_instance(
            self.scenario, self.rng
        )
        if len(self.instance.tasks) != len(self.possible_agents):
            raise ValueError(
                f"instance has {len(self.instance.tasks)} tasks, the env "
                f"{len(self.possible_agents)} agents"
            )
        self.ex = Execution(self.instance)
        self.steps = 0
        self.violations: Counter[str] = Counter()
        self.total_reward = 0.0
        self.agents = list(self.possible_agents)
        self._graphs = [self._graph(i) for i in range(len(self.agents))]
        self._draw_failures()
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        rewards = {a: 0.0 for a in self.agents}
        infos: dict[str, dict] = {a: {} for a in self.agents}
        acting = [a for a in self.agents if a in actions]
        for a in self.rng.permutation(acting):
            i = self.possible_agents.index(a)
            j, k = divmod(int(actions[a]), self.layout.servers)
            rewards[a], infos[a] = self._apply(i, j, k)
        self.steps += 1
        self.total_reward += sum(rewards.values())
        self._draw_failures()
        terminations = {a: self.ex.left[self.possible_agents.index(a)] == 0 for a in self.agents}
        truncations = {a: self.steps >= self.max_steps for a in self.agents}
        observations = self._observations()
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def _apply(self, i: int, j: int, k: int) -> tuple[float, dict]:
        """Reward of agent i dispatching subtask j to server k (SPEC §4), executed if valid."""
        sc, ex = self.scenario, self.ex
        v = sc.reward.penalty
        task = self.instance.tasks[i]
        if j >= len(task.subtasks) or ex.placed[i][j] >= 0:
            return self._refuse("repeat", v)
        waiting = sum(ex.placed[i][p] < 0 for p in task.subtasks[j].preds)
        penalty = v * waiting  # eta1
        kinds = ["precedence"] if waiting else []
        if not ex.tables.supports(i, j, k):
            penalty += v  # eta2
            kinds.append("modality")
        elif self.down[k]:
            penalty += v  # a down edge cannot serve the subtask now
            kinds.append("failure")
        if kinds:
            return self._refuse(kinds, penalty)
        run = ex.dispatch(i, j, k)
        late = run.end > sc.t_max_s
        if late:
            self.violations["deadline"] += 1
        return run_reward(sc, run), {"run": run, "violations": ["deadline"] if late else []}

    def _refuse(self, kinds: str | list[str], penalty: float) -> tuple[float, dict]:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        self.violations.update(kinds)
        return -penalty, {"run": None, "violations": kinds}

    def _draw_failures(self) -> None:
        edges = np.array([s.kind == "edge" for s in self.scenario.servers])
        self.down = edges & (self.rng.random(len(edges)) < self.failure_prob)

    # -- observations ----------------------------------------------------------

    def _graph(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Task i's static parts, padded to J: node features, adjacency, uplink rates,
        and which servers serve each subtask."""
        n, sc = self.layout, self.scenario
        task = self.instance.tasks[i]
        nodes = np.zeros((n.subtasks, n.node_features), np.float32)
        adj = np.zeros((n.subtasks, n.subtasks), np.float32)
        serves = np.zeros((n.subtasks, n.servers), bool)
        for j, sub in enumerate(task.subtasks):
            nodes[j, 0] = 1.0
            nodes[j, 1 + sc.modalities.index(sub.modality)] = 1.0
            nodes[j, -4:-1] = sub.input_bits / 1e6, sub.output_bits / 1e4, sub.cycles / 1e9
            adj[sub.preds, j] = 1.0
            serves[j] = [sub.modality in srv.modalities for srv in sc.servers]
        up, _ = link_rates(sc, task.distances_m)
        return nodes, adj, np.array(up, np.float32) / 1e8, serves

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        i = self.possible_agents.index(agent)
        return {"observation": self.vector(i), "action_mask": self.action_mask(i)}

    def vector(self, i: int) -> np.ndarray:
        """Agent i's flat observation: P_i, server features, node features, adjacency."""
        ex, n = self.ex, self.layout
        nodes, adj, uplink, _ = self._graphs[i]
        dispatched = np.zeros(n.subtasks, np.float32)
        dispatched[: len(ex.placed[i])] = [s >= 0 for s in ex.placed[i]]
        nodes = nodes.copy()
        nodes[:, -1] = dispatched
        queue = np.array(ex.free, np.float32)
        servers = np.column_stack([self._static_servers, uplink, queue, 1.0 - self.down])
        obs = np.concatenate([dispatched, servers.ravel(), nodes.ravel(), adj.ravel()])
        return obs.astype(np.float32)

    def action_mask(self, i: int) -> np.ndarray:
        """1 where (subtask j, server k) would be executed now: j is pending with all its
        predecessors dispatched, k serves its modality and is up."""
        placed, preds = self.ex.placed[i], self.ex.tables.preds[i]
        ready = np.zeros(self.layout.subtasks, bool)
        ready[: len(placed)] = [
            s < 0 and all(placed[p] >= 0 for p in pj) for s, pj in zip(placed, preds, strict=True)
        ]
        serves = self._graphs[i][3]
        return (ready[:, None] & serves & ~self.down).astype(np.int8).ravel()

    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        return {a: self.observe(a) for a in self.agents}

    def state(self) -> np.ndarray:
        """Global state for centralised critics: every agent's observation, concatenated."""
        return np.concatenate([self.vector(i) for i in range(len(self.possible_agents))])

    # -- results ---------------------------------------------------------------

    @property
    def runs(self) -> list[Run]:
        return self.ex.runs

    def summary(self) -> dict[str, float]:
        """The episode's totals; objective, latency and cost only if every task finished."""
        done = self.ex.done
        out: dict[str, float] = {
            "reward": self.total_reward,
            "steps": self.steps,
            "undone": sum(self.ex.left),
            **{f"violations_{k}": self.violations[k] for k in VIOLATIONS},
        }
        if done:
            out.update(outcome(self.ex.schedule()))
        else:
            out.update(objective=np.nan, latency=np.nan, cost=np.nan, deadline_misses=np.nan)
        return out

    def render(self) -> np.ndarray | None:
        """The episode so far as a Gantt chart (an RGB array)."""
        if self.render_mode != "rgb_array":
            return None
        from llmoffload.gantt import gantt_rgb  # matplotlib only when asked

        return gantt_rgb(self.instance, self.ex.runs)

    def close(self) -> None:
        pass
