"""The paper's MDP (§4.1; docs/model.md §4) as a PettingZoo ``ParallelEnv``, one agent per task.

At every decision step each agent whose task still has work picks one action
``a = j * S + k``: dispatch its subtask ``j`` to server ``k``. Actions are
applied in a random order drawn each step (the execution model is sequential,
and a fixed order would always favour task 0). An action that breaks a
constraint is not executed and is penalised; the paper's agents learn from
those penalties, and the valid actions are also exposed as ``action_mask``.

Observations, masks and the global state are built for all agents at once
with NumPy: the episode's constant parts once at reset, the few entries that
change (dispatched flags, queue delays, up flags) at every step.

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

from llmoffload.model.execution import Execution, Run, Schedule
from llmoffload.model.instance import Instance, Subtask, sample_instance
from llmoffload.model.scenario import Scenario

Array = TypeVar("Array", bound=Any)  # a numpy array or a torch tensor (no common type)
VIOLATIONS = ("repeat", "precedence", "modality", "failure", "deadline")
# breaches of an action on no pending subtask (padding or done): all counted as a repeat
VOID = ("no-subtask", "no-server", "repeat")


def lateness(instance: Instance, run: Run) -> float:
    """How long after its deadline, T_max after its task's arrival, the dispatch ends."""
    return max(0.0, run.end - instance.tasks[run.task].arrival_s - instance.scenario.t_max_s)


def on_time(instance: Instance, run: Run) -> float:
    """The bonus q * theta if the dispatch ends by its deadline, else minus the lateness
    penalty eta3: the part both reward forms share."""
    late, reward = lateness(instance, run), instance.scenario.reward
    return reward.bonus if late == 0 else -reward.penalty * late


def run_reward(instance: Instance, run: Run) -> float:
    """docs/model.md §4's reward of one executed dispatch (form ``paper``): ``on_time`` minus
    its weighted time and cost."""
    sc = instance.scenario
    weighted = sc.gamma * (run.upload + run.compute) + (1.0 - sc.gamma) * run.cost
    return on_time(instance, run) - weighted


def schedule_reward(instance: Instance, schedule: Schedule) -> float:
    """The return of replaying a finished schedule with no refused action, in the
    scenario's reward form: it puts HEFT and Optimal on the learners' scale."""
    if instance.scenario.reward.form == "paper":
        return sum(run_reward(instance, run) for run in schedule.runs)
    return sum(on_time(instance, run) for run in schedule.runs) - schedule.objective


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
        return self.modalities + 5  # real, modality, input, output, work, dispatched

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
        # 4 J steps for each group of tasks that act together: all, or one at a time
        groups = scenario.workload.tasks if scenario.workload.arrivals_per_s else 1
        self.max_steps = max_steps or 4 * self.layout.subtasks * groups
        self.render_mode = render_mode
        self.possible_agents = [f"task_{i}" for i in range(scenario.workload.tasks)]
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
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
        self._edges = np.array([s.kind == "edge" for s in sc.servers])
        self._modality = {m: k for k, m in enumerate(sc.modalities)}

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
        self._statics()
        self.agents = self._acting_agents()
        self._draw_failures()
        self._refresh()
        observations = {a: self.observe(a) for a in self.agents}
        return observations, {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        joint = np.full(len(self.possible_agents), -1)
        before = self.agents
        for a in before:
            if a in actions:
                joint[self._index[a]] = actions[a]
        rewards, infos = self.play(joint)
        live = list(dict.fromkeys([*before, *self.agents]))  # the agents, and new arrivals
        terminations = {a: self.ex.left[self._index[a]] == 0 for a in live}
        truncations = {a: self.steps >= self.max_steps for a in live}
        return (
            {a: self._observation(self._index[a]) for a in live},
            {a: float(rewards[self._index[a]]) for a in live},
            terminations,
            truncations,
            {a: infos[self._index[a]] for a in live},
        )

    def play(self, actions: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """``step`` on arrays, for the trainer: one action per agent (-1: none), in
        the random order drawn for the step -> each agent's reward and info (its
        ``run``, None if refused, and its violations; empty if it did not act).
        The PettingZoo ``step`` is this plus the per-agent dictionaries."""
        rewards = np.zeros(len(self.possible_agents))
        infos: list[dict] = [{} for _ in self.possible_agents]
        acting = np.flatnonzero(actions >= 0)
        for i in acting[self.rng.permutation(len(acting))]:
            j, k = divmod(int(actions[i]), self.layout.servers)
            rewards[i], infos[i] = self._apply(int(i), j, k)
        self.steps += 1
        self.total_reward += float(rewards.sum())
        self._draw_failures()
        self._refresh()
        self.agents = self._acting_agents() if self.steps < self.max_steps else []
        return rewards, infos

    def acting(self) -> np.ndarray:
        """(I,) bool: the agents whose turn it is, the step limit aside: those whose task
        has work left and has arrived by the env's clock, the earliest arrival among the
        tasks with work left. All tasks act together when they arrive at once (the
        paper); over time they act one arrival at a time, each dispatching all its
        subtasks on arrival (decisions take no time), so a policy never sees a request
        before it comes, while Optimal does."""
        left = np.array(self.ex.left) > 0
        now = self._arrival[left].min(initial=np.inf)
        return left & (self._arrival <= now)

    def _acting_agents(self) -> list[str]:
        return [a for a, on in zip(self.possible_agents, self.acting(), strict=True) if on]

    def _apply(self, i: int, j: int, k: int) -> tuple[float, dict]:
        """Reward of agent i dispatching subtask j to server k (docs/model.md §4); the
        dispatch is executed if valid. The execution model says which constraints it
        breaks; the env adds only the down edge and the penalty v per breach (eta1 per
        waiting predecessor, eta2)."""
        sc, ex = self.scenario, self.ex
        v = sc.reward.penalty
        breaches = ex.breaches(i, j, k)
        if breaches and breaches[0].kind in VOID:
            return self._refuse("repeat", v)
        kinds = [b.kind for b in breaches]
        penalty = sum(v * b.times for b in breaches)
        if self.down[k] and "modality" not in kinds:
            penalty += v  # a down edge cannot serve the subtask now
            kinds.append("failure")
        if kinds:
            return self._refuse(kinds, penalty)
        added = ex.objective_increase(i, j, k) if sc.reward.form == "objective" else 0.0
        run = ex.dispatch(i, j, k)
        self._dispatched[i, j] = True
        late = lateness(self.instance, run) > 0
        if late:
            self.violations["deadline"] += 1
        paper = sc.reward.form == "paper"
        reward = run_reward(self.instance, run) if paper else on_time(self.instance, run) - added
        return reward, {"run": run, "violations": ["deadline"] if late else []}

    def _refuse(self, kinds: str | list[str], penalty: float) -> tuple[float, dict]:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        self.violations.update(kinds)
        return -penalty, {"run": None, "violations": kinds}

    def _draw_failures(self) -> None:
        self.down = self._edges & (self.rng.random(len(self._edges)) < self.failure_prob)

    # -- observations ----------------------------------------------------------

    def _statics(self) -> None:
        """The episode's constant parts for all agents at once: each agent's observation
        with its dynamic entries (dispatched flags, queue delays, up flags) still zero
        (the DAGs' arcs and real nodes among its constant entries)."""
        n, tasks = self.layout, self.instance.tasks
        subs = [(i, j, sub) for i, task in enumerate(tasks) for j, sub in enumerate(task.subtasks)]
        i, j, m = np.array([(i, j, self._modality[sub.modality]) for i, j, sub in subs]).T
        arcs = [(i, p, j) for i, j, sub in subs for p in sub.preds]  # p -> j in task i
        self._template = np.zeros((len(tasks), n.size), np.float32)
        _, servers, nodes, adj = n.split(self._template)  # views into the template
        servers[..., :-3] = self._static_servers
        servers[..., -3] = np.array(self.ex.tables.uplink_bps, np.float32) / 1e8
        nodes[i, j, 0] = 1.0
        nodes[i, j, 1 + m] = 1.0
        nodes[i, j, -4:-1] = [
            (sub.input_bits / 1e6, sub.output_bits / 1e4, self._work(t, k, sub))
            for t, k, sub in subs
        ]
        adj[tuple(np.array(arcs, int).reshape(-1, 3).T)] = 1.0
        self._dispatched = np.zeros((len(tasks), n.subtasks), bool)  # set by _apply alone
        self._arrival = np.array(self.ex.tables.arrival)

    def _work(self, task: int, subtask: int, sub: Subtask) -> float:
        """A node's work feature: Gcycles, or with ``compute: tokens`` its compute seconds
        on the cloud, the one server that runs every modality."""
        if self.scenario.compute == "tokens":
            return self.ex.tables.compute[task][subtask][self.scenario.cloud]
        return sub.cycles / 1e9

    def _refresh(self) -> None:
        """Build the observations and masks once per step, for every reader."""
        self._obs = self._build_observations()
        self._masks = self._build_masks()

    def observations(self) -> np.ndarray:
        """Every agent's flat observation (I, O): P_i, server features, node features,
        adjacency, as the Layout lays them out. Read-only: shared until the next step."""
        return self._obs

    def masks(self) -> np.ndarray:
        """Every agent's action mask (I, J * S): 1 where (subtask j, server k) would be
        executed now: j is pending with all its predecessors dispatched, k serves its
        modality and is up. Read-only: shared until the next step."""
        return self._masks

    def _build_observations(self) -> np.ndarray:
        obs = self._template.copy()
        p, servers, nodes, _ = self.layout.split(obs)  # views into obs
        p[:] = self._dispatched
        nodes[..., -1] = self._dispatched
        # queue delay: when each server's first slot frees up, after the agent's arrival
        servers[..., -2] = np.maximum(np.subtract(self.ex.free, self._arrival[:, None]), 0)
        servers[..., -1] = ~self.down
        return obs

    def _build_masks(self) -> np.ndarray:
        """The execution model's valid dispatches on servers that are up, padded to J."""
        valid = self.ex.valid()
        mask = np.zeros((len(valid), self.layout.subtasks, self.layout.servers), np.int8)
        mask[:, : valid.shape[1]] = valid & ~self.down
        return mask.reshape(len(mask), -1)

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        return self._observation(self._index[agent])

    def action_mask(self, i: int) -> np.ndarray:
        """Agent i's row of ``masks()``."""
        return self._masks[i]

    def _observation(self, i: int) -> dict[str, np.ndarray]:
        return {"observation": self._obs[i], "action_mask": self._masks[i]}

    def state(self) -> np.ndarray:
        """Global state for centralised critics: every agent's observation, concatenated."""
        return self._obs.ravel()

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
        from llmoffload.model.gantt import gantt_rgb  # matplotlib only when asked

        return gantt_rgb(self.instance, self.ex.runs)

    def close(self) -> None:
        pass
