"""The MDP environment (docs/model.md §4): API, masks, rewards, observations, episodes.

Rewards are checked against numbers worked out by hand from the paper's
setting (the same round-rate trick as tests/test_execution.py):

    servers  0 edge-text 2.0 GHz, 1 edge-image 2.3 GHz, 2 edge-audio 2.5 GHz,
             3 cloud 10 GHz; 0.01 $/GHz on edges, 0.03 $/GHz on the cloud
    uplink   r = 6e6 log2(1 + SNR); the distances make SNR 7 (text), 3 (image),
             15 (audio), so 18, 12 and 24 Mbps; device->cloud 3 Mbps
    reward   v = 1, theta = 2, gamma = 0.5:
             r = -v #missing preds - v [modality or down] + q theta
                 - v max(0, EN - T_max) - gamma (upload + compute) - (1 - gamma) cost
"""

from __future__ import annotations

import copy
import math
from itertools import product

import numpy as np
import pytest
from helpers import approx, distance_for_snr, sub
from pettingzoo.test import parallel_api_test

from llmoffload.marl.env import VIOLATIONS, OffloadEnv, schedule_reward
from llmoffload.model.execution import evaluate
from llmoffload.model.instance import Instance, Task, sample_instance
from llmoffload.model.scenario import Scenario, load_scenario
from llmoffload.model.validate import violations
from llmoffload.schedulers.heuristics import heft
from llmoffload.schedulers.optimal import solve

PAPER = load_scenario("paper")
TEXT, IMAGE, AUDIO, CLOUD = 0, 1, 2, 3
S = 4  # servers; action a = j * S + k
V, THETA, GAMMA = 1.0, 2.0, 0.5


# Uplink rates of VQA's device, by hand: 6e6 log2(8), 6e6 log2(4), 6e6 log2(16), 3 Mbps.
UP = [18e6, 12e6, 24e6, 3e6]
GHZ = [2.0, 2.3, 2.5, 10.0]
USD_PER_GHZ = [0.01, 0.01, 0.01, 0.03]
VQA = Task(
    workflow="vqa",
    distances_m=[distance_for_snr(7), distance_for_snr(3), distance_for_snr(15)],
    subtasks=[
        sub("analyse", "text", 1800, 1100, []),
        sub("perceive", "image", 240_000, 3300, [0]),
        sub("question", "text", 1500, 2400, [0]),
        sub("answer", "image+text", 450_000, 4800, [1, 2]),
        sub("aggregate", "text", 2600, 2000, [3]),
    ],
)
CHAIN = Task(
    workflow="chain",  # not the scenario's text-analysis: two subtasks, not four
    distances_m=[distance_for_snr(1), distance_for_snr(3), distance_for_snr(15)],
    subtasks=[sub("a", "text", 1200, 1000, []), sub("b", "text", 2400, 1500, [0])],
)


def hand_terms(d_bits: float, server: int) -> tuple[float, float, float]:
    """(upload, compute, cost) of a VQA subtask with input D on a server, from raw numbers."""
    cycles = 1900 * d_bits
    return d_bits / UP[server], cycles / (GHZ[server] * 1e9), cycles / 1e9 * USD_PER_GHZ[server]


def with_tasks(scenario: Scenario, n: int, **update: object) -> Scenario:
    workload = scenario.workload.model_copy(update={"tasks": n})
    return scenario.model_copy(update={"workload": workload, **update})


def hand_env(failure_prob: float = 0.0, **update: object) -> OffloadEnv:
    """task_0 = VQA, task_1 = CHAIN on the paper's scenario (with ``update`` applied)."""
    sc = with_tasks(PAPER, 2, **update)
    env = OffloadEnv(sc, failure_prob=failure_prob)
    env.reset(seed=0, options={"instance": Instance(scenario=sc, tasks=[VQA, CHAIN])})
    return env


def act(env: OffloadEnv, agent: str, j: int, k: int) -> tuple[float, list[str]]:
    """One step in which only ``agent`` acts; its reward and violations."""
    _, rewards, _, _, infos = env.step({agent: j * S + k})
    assert all(r == 0.0 for a, r in rewards.items() if a != agent)
    return rewards[agent], infos[agent]["violations"]


def random_walk(
    env: OffloadEnv, obs: dict, rng: np.random.Generator, p_valid: float = 1.0
) -> dict[str, int]:
    """Each live agent picks a valid action with probability ``p_valid``, else any action."""
    actions = {}
    for a in env.agents:
        valid = np.flatnonzero(obs[a]["action_mask"])
        pool = valid if rng.random() < p_valid else np.arange(env.layout.actions)
        actions[a] = int(rng.choice(pool))
    return actions


# -- API ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["paper", "contended"])  # contended: agents join on arrival
def test_parallel_api(name: str) -> None:
    parallel_api_test(OffloadEnv(load_scenario(name), failure_prob=0.2), num_cycles=200)


# -- masks ----------------------------------------------------------------------------


@pytest.mark.parametrize("failure_prob", [0.0, 0.3])
def test_mask_is_exactly_the_executable_actions(failure_prob: float) -> None:
    """Stepping a copy with each single action: executed cleanly iff the mask allows it."""
    env = OffloadEnv(PAPER, failure_prob=failure_prob)
    rng = np.random.default_rng(7)
    checked = allowed = 0
    for seed in range(1):
        obs, _ = env.reset(seed=seed)
        while env.agents:
            for agent in env.agents:
                i = env.possible_agents.index(agent)
                size = len(env.instance.tasks[i].subtasks)
                mask = obs[agent]["action_mask"]
                assert mask.dtype == np.int8 and mask.shape == (env.layout.actions,)
                for a in range(env.layout.actions):
                    j, k = divmod(a, S)
                    trial = copy.deepcopy(env)
                    _, _, _, _, infos = trial.step({agent: a})
                    kinds = infos[agent]["violations"]
                    placed = j < size and trial.ex.placed[i][j] == k
                    clean = set(kinds) <= {"deadline"}
                    assert bool(mask[a]) == (clean and placed), (seed, agent, j, k, kinds)
                    grew = len(trial.runs) - len(env.runs)
                    assert grew == (1 if mask[a] else 0)  # masked out -> never executed
                    checked += 1
                    allowed += int(mask[a])
            obs, *_ = env.step(random_walk(env, obs, rng, p_valid=0.5))
    assert allowed > 20 and checked - allowed > 200


@pytest.mark.parametrize("name", ["paper", "contended"])
def test_masks_and_refusals_are_the_execution_models(name: str) -> None:
    """Validity is stated once, in Execution: in random states the mask is its valid set
    less the down edges, and a refused action breaks what it says, plus ``failure`` on a
    down edge that could run the subtask; the penalty is v per breach and per waiting
    predecessor."""
    env = OffloadEnv(load_scenario(name), failure_prob=0.5)
    v = env.scenario.reward.penalty
    rng = np.random.default_rng(11)
    refused: set[str] = set()
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        while env.agents:
            ex, down = env.ex, env.down.copy()
            valid = {d for d in product(*map(range, ex.valid().shape)) if ex.valid()[d]}
            actions = random_walk(env, obs, rng, p_valid=0.5)
            expected = {}
            for i, task in enumerate(env.instance.tasks):
                for j, k in product(range(env.layout.subtasks), range(S)):
                    breaches = ex.breaches(i, j, k)
                    assert ((i, j, k) in valid) == (not breaches)
                    assert env.masks()[i, j * S + k] == ((i, j, k) in valid and not down[k])
                    if actions.get(f"task_{i}") != j * S + k:
                        continue
                    kinds = [b.kind for b in breaches]
                    count = sum(b.times for b in breaches)
                    if j >= len(task.subtasks) or kinds == ["repeat"]:
                        kinds, count = ["repeat"], 1
                    elif down[k] and "modality" not in kinds:
                        kinds, count = [*kinds, "failure"], count + 1
                    expected[f"task_{i}"] = (kinds, -v * count)
            obs, rewards, _, _, infos = env.step(actions)
            for agent, (kinds, reward) in expected.items():
                if kinds:
                    assert infos[agent]["violations"] == kinds
                    assert rewards[agent] == approx(reward)
                    refused.update(kinds)
                else:
                    assert infos[agent]["run"] is not None
    assert refused == {"repeat", "precedence", "modality", "failure"}


@pytest.mark.parametrize("failure_prob", [0.0, 0.2, 0.5])
def test_masked_random_policy_always_finishes(failure_prob: float) -> None:
    env = OffloadEnv(PAPER, failure_prob=failure_prob)
    rng = np.random.default_rng(1)
    for seed in range(15):
        obs, _ = env.reset(seed=seed)
        while env.agents:
            assert all(obs[a]["action_mask"].any() for a in env.agents)  # the cloud is never down
            obs, *_ = env.step(random_walk(env, obs, rng))
        summary = env.summary()
        assert summary["undone"] == 0
        # One valid dispatch per agent per step: done after the longest task's size.
        assert summary["steps"] == max(len(t.subtasks) for t in env.instance.tasks)
        for kind in ("repeat", "precedence", "modality", "failure"):
            assert summary[f"violations_{kind}"] == 0


def test_agents_act_in_a_random_order() -> None:
    """Two agents racing for edge-text: each wins on some steps (no fixed priority)."""
    sc = with_tasks(PAPER, 2)
    env = OffloadEnv(sc)
    first = set()
    for seed in range(20):
        env.reset(seed=seed, options={"instance": Instance(scenario=sc, tasks=[CHAIN, CHAIN])})
        env.step({"task_0": 0 * S + TEXT, "task_1": 0 * S + TEXT})
        winner = [r.task for r in env.runs if r.start == 0.0]
        assert len(winner) == 1 and len(env.runs) == 2  # FIFO: the other one waits
        first.add(winner[0])
    assert first == {0, 1}


# -- reward arithmetic on a hand-built instance ------------------------------------------


def test_reward_clean_dispatches() -> None:
    env = hand_env()
    expected_total = 0.0
    for j, k, d_bits in [(0, TEXT, 1800), (1, IMAGE, 240_000), (2, CLOUD, 1500)]:
        upload, compute, cost = hand_terms(d_bits, k)
        want = THETA - GAMMA * (upload + compute) - (1 - GAMMA) * cost
        reward, kinds = act(env, "task_0", j, k)
        assert reward == approx(want)
        assert kinds == []
        run = env.runs[-1]
        assert (run.task, run.subtask, run.server) == (0, j, k)
        assert (run.upload, run.compute, run.cost) == (
            approx(upload),
            approx(compute),
            approx(cost),
        )
        expected_total += want
    # analyse by hand: 1800 / 18e6 + 3.42e6 / 2e9 = 1e-4 + 1.71e-3; cost 3.42e-5
    assert env.runs[0].end == approx(1.81e-3)
    assert env.runs[0].cost == approx(3.42e-5)
    summary = env.summary()
    assert summary["reward"] == approx(expected_total)
    assert summary["undone"] == 5 + 2 - 3
    assert all(summary[f"violations_{k}"] == 0 for k in VIOLATIONS)
    for field in ("objective", "latency", "cost", "deadline_misses"):
        assert math.isnan(summary[field])


def objective_form(scenario: Scenario) -> dict[str, object]:
    """The scenario update that selects the objective-aligned reward."""
    return {"reward": scenario.reward.model_copy(update={"form": "objective"})}


def test_objective_reward_by_hand() -> None:
    """The objective form pays theta minus what the dispatch adds to its task's weighted
    objective: the first subtask adds its whole span and cost; a subtask queued behind
    another on the same edge adds its waiting too."""
    env = hand_env(**objective_form(PAPER))
    upload, compute, cost = hand_terms(1800, TEXT)  # VQA's analyse on the text edge
    reward, _ = act(env, "task_0", 0, TEXT)
    assert reward == approx(THETA - GAMMA * (upload + compute) - (1 - GAMMA) * cost)
    # CHAIN's a on the same edge waits for VQA's analyse to end (1.81e-3 s), then runs:
    # its latency so far (span from its own first start) is only its own duration.
    up_a, comp_a = 1200 / (6e6 * math.log2(2)), 1900 * 1200 / 2e9  # SNR 1: 6 Mbps
    reward, _ = act(env, "task_1", 0, TEXT)
    assert env.runs[-1].start == approx(1.81e-3)
    assert reward == approx(THETA - GAMMA * (up_a + comp_a) - (1 - GAMMA) * 1900 * 1200 * 1e-11)
    # CHAIN's b, the exit, on the cloud: the task's latency grows to b's end minus a's
    # start plus the result's download from the cloud; b adds that growth and its cost.
    ex = env.ex
    before = ex.latency_so_far(1)
    added = ex.objective_increase(1, 1, CLOUD)
    reward, _ = act(env, "task_1", 1, CLOUD)
    run = env.runs[-1]
    after = run.end - ex.start[1][0] + ex.tables.downlink[1][CLOUD]
    assert ex.latency_so_far(1) == approx(after)
    assert added == approx(GAMMA * (after - before) + (1 - GAMMA) * run.cost)
    assert reward == approx(THETA - added)


@pytest.mark.parametrize("latency", ["span", "arrival"])
def test_objective_return_is_bonuses_minus_objective(latency: str) -> None:
    """Replaying HEFT's and Optimal's schedules one dispatch per step: the return is
    exactly theta x on-time dispatches - lateness penalties - the objective (here every
    dispatch is on time), which is what ``schedule_reward`` pays a classic scheduler."""
    sc = with_tasks(PAPER, 3, latency=latency, **objective_form(PAPER))
    env = OffloadEnv(sc, max_steps=100)
    for seed in range(4):
        inst = sample_instance(sc, np.random.default_rng(seed))
        for schedule in (
            evaluate(inst, heft(inst, np.random.default_rng(0))),
            solve(inst, time_limit_s=10).schedule,
        ):
            env.reset(seed=0, options={"instance": inst})
            for d in schedule.order:
                env.step({env.possible_agents[d.task]: d.subtask * S + d.server})
            summary = env.summary()
            assert summary["violations_precedence"] == 0 and summary["undone"] == 0
            assert summary["objective"] == approx(schedule.objective)
            want = THETA * len(schedule.runs) - schedule.objective
            assert summary["reward"] == approx(want)
            assert schedule_reward(inst, schedule) == approx(want)


def test_reward_precedence() -> None:
    env = hand_env()
    reward, kinds = act(env, "task_0", 3, CLOUD)  # answer waits for perceive and question
    assert reward == -2 * V
    assert kinds == ["precedence"]
    reward, kinds = act(env, "task_0", 1, IMAGE)  # perceive waits for analyse
    assert reward == -1 * V
    assert kinds == ["precedence"]
    assert env.runs == []
    assert env.ex.placed[0] == [-1] * 5
    assert env.violations["precedence"] == 2
    assert env.summary()["violations_precedence"] == 2
    assert env.summary()["undone"] == 7


def test_reward_modality() -> None:
    env = hand_env()
    reward, kinds = act(env, "task_0", 0, IMAGE)  # text on edge-image
    assert reward == -V
    assert kinds == ["modality"]
    reward, kinds = act(env, "task_1", 0, AUDIO)  # text on edge-audio
    assert reward == -V
    assert env.runs == []
    assert env.violations["modality"] == 2
    assert env.summary()["violations_modality"] == 2


def test_reward_precedence_and_modality_at_once() -> None:
    env = hand_env()
    reward, kinds = act(env, "task_0", 3, TEXT)  # image+text on edge-text, 2 preds missing
    assert reward == -(2 * V + V)
    assert sorted(kinds) == ["modality", "precedence"]
    assert env.runs == []
    summary = env.summary()
    assert summary["violations_precedence"] == 1
    assert summary["violations_modality"] == 1


def test_reward_repeat_and_padding() -> None:
    env = hand_env()
    act(env, "task_0", 0, TEXT)
    reward, kinds = act(env, "task_0", 0, CLOUD)  # analyse again
    assert reward == -V
    assert kinds == ["repeat"]
    for j in (2, 4):  # CHAIN has 2 subtasks: j = 2 .. 4 are padding
        reward, kinds = act(env, "task_1", j, CLOUD)
        assert reward == -V
        assert kinds == ["repeat"]
    assert len(env.runs) == 1
    assert env.violations["repeat"] == 3
    assert env.summary()["violations_repeat"] == 3


def test_reward_failure() -> None:
    env = hand_env(failure_prob=1.0)  # every edge is down at every step
    assert list(env.down) == [True, True, True, False]
    reward, kinds = act(env, "task_0", 0, TEXT)
    assert reward == -V
    assert kinds == ["failure"]
    assert env.runs == []
    reward, kinds = act(env, "task_0", 1, IMAGE)  # down and its predecessor missing
    assert reward == -2 * V
    assert sorted(kinds) == ["failure", "precedence"]
    upload, compute, cost = hand_terms(1800, CLOUD)
    reward, kinds = act(env, "task_0", 0, CLOUD)  # the cloud never fails
    assert kinds == []
    assert reward == approx(THETA - GAMMA * (upload + compute) - (1 - GAMMA) * cost)
    assert [(r.task, r.subtask, r.server) for r in env.runs] == [(0, 0, CLOUD)]
    assert env.violations["failure"] == 2
    assert env.summary()["violations_failure"] == 2
    obs = env.observe("task_0")
    _, servers, _, _ = env.layout.split(obs["observation"])
    assert list(servers[:, -1]) == [0.0, 0.0, 0.0, 1.0]
    mask = obs["action_mask"].reshape(-1, S)
    assert mask[:, :CLOUD].sum() == 0  # nothing may go to an edge
    assert list(mask[:, CLOUD]) == [0, 1, 1, 0, 0]  # perceive and question are ready


def test_reward_deadline() -> None:
    t_max = 0.001
    env = hand_env(t_max_s=t_max)
    upload, compute, cost = hand_terms(1800, TEXT)
    end = upload + compute  # starts at 0 on the idle edge: 1.81e-3 > T_max
    reward, kinds = act(env, "task_0", 0, TEXT)
    assert kinds == ["deadline"]
    want = -V * (end - t_max) - GAMMA * (upload + compute) - (1 - GAMMA) * cost  # no theta
    assert reward == approx(want)
    assert env.runs[0].end == approx(1.81e-3)  # executed all the same
    # question on the cloud starts once analyse's 1100 bits crossed edge->cloud (12 Mbps);
    # the wait adds to EN (eta3) but not to the latency terms.
    upload2, compute2, cost2 = hand_terms(1500, CLOUD)
    end2 = end + 1100 / 12e6 + upload2 + compute2
    reward, kinds = act(env, "task_0", 2, CLOUD)
    assert kinds == ["deadline"]
    assert reward == approx(
        -V * (end2 - t_max) - GAMMA * (upload2 + compute2) - (1 - GAMMA) * cost2
    )
    assert env.violations["deadline"] == 2
    assert env.summary()["violations_deadline"] == 2


def test_reward_deadline_met_exactly_pays_theta() -> None:
    """EN <= T_max keeps the bonus; the default 3 s deadline is far off here."""
    env = hand_env(t_max_s=0.00181 + 1e-9)
    reward, kinds = act(env, "task_0", 0, TEXT)
    upload, compute, cost = hand_terms(1800, TEXT)
    assert kinds == []
    assert reward == approx(THETA - GAMMA * (upload + compute) - (1 - GAMMA) * cost)


def test_summary_after_a_finished_hand_episode() -> None:
    env = hand_env()
    order = [(0, 0, TEXT), (1, 0, TEXT), (0, 1, IMAGE), (0, 2, CLOUD)]
    order += [(1, 1, TEXT), (0, 3, CLOUD), (0, 4, TEXT)]
    for i, j, k in order:
        _, kinds = act(env, f"task_{i}", j, k)
        assert kinds == []
    assert env.agents == []
    summary = env.summary()
    assert summary["undone"] == 0
    want = evaluate(env.instance, order)
    assert summary["objective"] == want.objective
    assert summary["cost"] == approx(sum(t.cost for t in want.tasks))
    assert summary["latency"] == approx(np.mean([t.latency for t in want.tasks]))
    assert summary["deadline_misses"] == 0


# -- finished episodes against the execution model and the validator --------------------


@pytest.mark.parametrize("failure_prob", [0.0, 0.2])
def test_finished_episodes_are_valid_schedules(failure_prob: float) -> None:
    env = OffloadEnv(PAPER, failure_prob=failure_prob)
    rng = np.random.default_rng(3)
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        while env.agents:
            obs, *_ = env.step(random_walk(env, obs, rng, p_valid=0.7))
        assert env.summary()["undone"] == 0, seed
        schedule = env.ex.schedule()
        assert violations(env.instance, schedule) == []
        replay = evaluate(env.instance, [(r.task, r.subtask, r.server) for r in env.runs])
        assert replay.runs == env.runs
        assert schedule.objective == replay.objective
        assert env.summary()["objective"] == replay.objective


# -- observations ------------------------------------------------------------------------


def test_observation_parts_match_the_state() -> None:
    env = OffloadEnv(PAPER, failure_prob=0.5)
    n = env.layout
    rng = np.random.default_rng(5)
    seen_down = set()
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        while True:
            # Edge free times from the runs themselves: FIFO, so the last end on each edge.
            free = [
                max((r.end for r in env.runs if r.server == k), default=0.0)
                if env.scenario.servers[k].kind == "edge"
                else 0.0
                for k in range(n.servers)
            ]
            for agent in env.agents:
                i = env.possible_agents.index(agent)
                task = env.instance.tasks[i]
                x = obs[agent]["observation"]
                assert x.dtype == np.float32 and x.shape == (n.size,)
                p, servers, nodes, adj = n.split(x)
                dispatched = {(r.subtask) for r in env.runs if r.task == i}
                want_p = [float(j in dispatched) for j in range(n.subtasks)]
                assert list(p) == want_p
                assert list(nodes[:, -1]) == want_p
                want_adj = np.zeros((n.subtasks, n.subtasks))
                for j, s in enumerate(task.subtasks):
                    want_adj[s.preds, j] = 1.0
                assert np.array_equal(adj, want_adj)
                assert list(nodes[:, 0]) == [float(j < len(task.subtasks)) for j in range(5)]
                assert np.array_equal(servers[:, -1], 1.0 - env.down)
                assert np.allclose(servers[:, -2], free, rtol=1e-6, atol=0)
            seen_down.add(tuple(env.down))
            state = env.state()
            assert state.shape == (len(env.possible_agents) * n.size,)
            parts = np.split(state, len(env.possible_agents))
            for a, part in zip(env.possible_agents, parts, strict=True):
                assert np.array_equal(part, env.observe(a)["observation"])
                if a in obs:
                    assert np.array_equal(part, obs[a]["observation"])
            if not env.agents:
                break
            obs, *_ = env.step(random_walk(env, obs, rng, p_valid=0.8))
    assert len(seen_down) > 3  # failures really are redrawn every step


def per_agent_observation(env: OffloadEnv, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Agent i's observation and mask built one agent at a time from the instance and the
    execution model's lists, as the env built them before it batched them: the reference."""
    ex, n, sc = env.ex, env.layout, env.scenario
    task = env.instance.tasks[i]
    nodes = np.zeros((n.subtasks, n.node_features), np.float32)
    adj = np.zeros((n.subtasks, n.subtasks), np.float32)
    serves = np.zeros((n.subtasks, n.servers), bool)
    for j, node in enumerate(task.subtasks):
        nodes[j, 0] = 1.0
        nodes[j, 1 + sc.modalities.index(node.modality)] = 1.0
        nodes[j, -4:-1] = node.input_bits / 1e6, node.output_bits / 1e4, node.cycles / 1e9
        adj[node.preds, j] = 1.0
        serves[j] = [node.modality in srv.modalities for srv in sc.servers]
    uplink = np.array(sc.link_rates(task.distances_m)[0], np.float32) / 1e8
    top_ghz = max(s.ghz for s in sc.servers)
    top_price = max(s.usd_per_ghz for s in sc.servers) or 1.0
    static = [
        [s.ghz / top_ghz, s.usd_per_ghz / top_price]
        + [float(m in s.modalities) for m in sc.modalities]
        for s in sc.servers
    ]
    dispatched = np.zeros(n.subtasks, np.float32)
    dispatched[: len(ex.placed[i])] = [s >= 0 for s in ex.placed[i]]
    nodes = nodes.copy()
    nodes[:, -1] = dispatched
    queue = np.array(ex.free, np.float32)
    servers = np.column_stack([np.array(static, np.float32), uplink, queue, 1.0 - env.down])
    obs = np.concatenate([dispatched, servers.ravel(), nodes.ravel(), adj.ravel()])
    placed, preds = ex.placed[i], ex.tables.preds[i]
    ready = np.zeros(n.subtasks, bool)
    ready[: len(placed)] = [
        s < 0 and all(placed[p] >= 0 for p in pj) for s, pj in zip(placed, preds, strict=True)
    ]
    mask = (ready[:, None] & serves & ~env.down).astype(np.int8).ravel()
    return obs.astype(np.float32), mask


def with_edges(scenario: Scenario, edges: int) -> Scenario:
    """The scenario's edges repeated in turn up to ``edges`` edges, then its cloud."""
    own = [s for s in scenario.servers if s.kind == "edge"]
    servers = [own[k % len(own)].model_copy(update={"name": f"edge-{k}"}) for k in range(edges)]
    return scenario.model_copy(update={"servers": [*servers, scenario.servers[scenario.cloud]]})


@pytest.mark.parametrize(
    ("tasks", "edges", "failure_prob"), [(5, 3, 0.0), (5, 3, 0.3), (2, 3, 0.5), (7, 8, 0.3)]
)
def test_batched_observations_equal_the_per_agent_ones(
    tasks: int, edges: int, failure_prob: float
) -> None:
    """Same floats, same order, on many random steps (valid and invalid actions)."""
    env = OffloadEnv(with_edges(with_tasks(PAPER, tasks), edges), failure_prob=failure_prob)
    rng = np.random.default_rng(9)
    steps = 0
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        while True:
            want = [per_agent_observation(env, i) for i in range(tasks)]
            state = env.state()
            assert state.dtype == np.float32
            assert np.array_equal(state, np.concatenate([o for o, _ in want]))
            for a in env.agents:
                o, m = want[env.possible_agents.index(a)]
                assert obs[a]["observation"].dtype == np.float32
                assert obs[a]["action_mask"].dtype == np.int8
                assert np.array_equal(obs[a]["observation"], o)
                assert np.array_equal(obs[a]["action_mask"], m)
            if not env.agents:
                break
            obs, *_ = env.step(random_walk(env, obs, rng, p_valid=0.6))
            steps += 1
    assert steps > 200


def trajectory(seed: int, steps: int = 8) -> list[tuple[list[np.ndarray], list[float]]]:
    env = OffloadEnv(PAPER, failure_prob=0.2)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(11)
    out = [([obs[a]["observation"] for a in env.agents], [])]
    for _ in range(steps):
        if not env.agents:
            break
        actions = {a: int(rng.integers(env.layout.actions)) for a in env.agents}
        obs, rewards, *_ = env.step(actions)
        out.append(([o["observation"] for o in obs.values()], list(rewards.values())))
    return out


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        len(xa) == len(xb)
        and all(np.array_equal(u, w) for u, w in zip(xa, xb, strict=True))
        and ra == rb
        for (xa, ra), (xb, rb) in zip(a, b, strict=True)
    )


def test_same_seed_same_episode_other_seed_differs() -> None:
    assert same(trajectory(4), trajectory(4))
    assert not same(trajectory(4), trajectory(5))


# -- truncation ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_steps", [None, 7])
def test_always_invalid_actions_truncate(max_steps: int | None) -> None:
    env = OffloadEnv(PAPER, max_steps=max_steps)
    env.reset(seed=2)
    limit = max_steps or 4 * env.layout.subtasks
    # The last subtask index: an aggregate whose predecessors never run, or padding.
    never = (env.layout.subtasks - 1) * S + CLOUD
    for step in range(1, limit + 1):
        live = list(env.agents)
        _, rewards, terms, truncs, _ = env.step({a: never for a in live})
        assert all(r < 0 for r in rewards.values())
        assert not any(terms.values())
        assert all(truncs.values()) == (step == limit)
    assert env.agents == []
    summary = env.summary()
    assert summary["steps"] == limit
    assert summary["undone"] == sum(len(t.subtasks) for t in env.instance.tasks)
    assert math.isnan(summary["objective"])
    total = summary["violations_repeat"] + summary["violations_precedence"]
    assert total == limit * len(env.possible_agents)


# -- render --------------------------------------------------------------------------------


def test_render_rgb_array() -> None:
    env = OffloadEnv(PAPER, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    obs, *_ = env.step(random_walk(env, obs, rng))
    frames = [env.render()]
    while env.agents:
        obs, *_ = env.step(random_walk(env, obs, rng))
    frames.append(env.render())
    for img in frames:
        assert isinstance(img, np.ndarray)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # bars, text, not a blank page
    assert not np.array_equal(frames[0], frames[1])
    assert OffloadEnv(PAPER).render() is None  # no render mode, no picture
