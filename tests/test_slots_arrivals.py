"""Cloud slots and task arrivals, against schedules worked out by hand and brute force.

Three one-subtask text tasks on the paper's cloud (10 GHz, device->cloud 3 Mbps,
cloud->device 12 Mbps, 0.03 $/GHz). A text subtask of D bits takes
D / 3e6 + 1900 D / 1e10 = 5.2333...e-7 D seconds there:

    A  D = 300 kbit  ->  0.157 s        B  D = 600 kbit  ->  0.314 s
    C  D = 150 kbit  ->  0.0785 s       every result 1200 bit -> 1e-4 s back
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import approx, sub
from hypothesis import given, settings
from hypothesis import strategies as st
from test_optimal import TICK_SLOP, TINY_FLOWS, exhaustive

from llmoffload.errors import OffloadError
from llmoffload.marl.env import OffloadEnv
from llmoffload.model.execution import Execution, evaluate
from llmoffload.model.instance import Instance, Task, sample_instance
from llmoffload.model.scenario import Scenario, load_scenario, parse_scenario
from llmoffload.model.validate import violations
from llmoffload.schedulers.heuristics import CLASSIC, best_classic
from llmoffload.schedulers.optimal import solve

PAPER = load_scenario("paper")
CLOUD = 3
DOWN = 1e-4
A, B, C = 0.157, 0.314, 0.0785


def scenario(slots: int | None, latency: str = "arrival") -> Scenario:
    data = PAPER.model_dump(mode="json")
    data["servers"][CLOUD]["slots"] = slots
    data["latency"] = latency
    return parse_scenario(data, "test")


def one(bits: float, arrival: float = 0.0) -> Task:
    return Task(
        workflow="one",
        arrival_s=arrival,
        distances_m=[80.0, 80.0, 80.0],
        subtasks=[sub("x", "text", bits, 1200, [])],
    )


def three(slots: int | None, arrival_c: float = 0.0) -> Instance:
    tasks = [one(300e3), one(600e3), one(150e3, arrival_c)]
    return Instance(scenario=scenario(slots), tasks=tasks)


ALL_ON_CLOUD = [(0, 0, CLOUD), (1, 0, CLOUD), (2, 0, CLOUD)]


@pytest.mark.parametrize(
    ("slots", "starts"),
    [
        (None, [0.0, 0.0, 0.0]),  # the paper's cloud: no waiting
        (2, [0.0, 0.0, A]),  # C takes the slot A frees at 0.157
        (1, [0.0, A, A + B]),  # one queue, in dispatch order
    ],
)
def test_cloud_slots_by_hand(slots: int | None, starts: list[float]) -> None:
    schedule = evaluate(three(slots), ALL_ON_CLOUD)
    assert [r.start for r in schedule.runs] == [approx(s) for s in starts]
    assert [r.end for r in schedule.runs] == [
        approx(s + d) for s, d in zip(starts, [A, B, C], strict=True)
    ]
    # latency from arrival (t = 0): end + download
    assert schedule.tasks[2].latency == approx(starts[2] + C + DOWN)
    assert violations(three(slots), schedule) == []


def test_a_late_arrival_waits_and_counts_from_arrival() -> None:
    """C arrives at 0.3 s, after A's slot freed (0.157): it starts on arrival, and its
    latency is its own duration plus the download; on one slot it queues after B."""
    two = evaluate(three(2, arrival_c=0.3), ALL_ON_CLOUD)
    assert two.runs[2].start == approx(0.3)
    assert two.tasks[2].latency == approx(C + DOWN)
    single = evaluate(three(1, arrival_c=0.3), ALL_ON_CLOUD)
    assert single.runs[2].start == approx(A + B)
    assert single.tasks[2].latency == approx(A + B + C - 0.3 + DOWN)
    for slots, schedule in ((2, two), (1, single)):
        assert violations(three(slots, arrival_c=0.3), schedule) == []


def test_the_validator_rejects_an_overfilled_cloud_and_an_early_start() -> None:
    instance = three(2, arrival_c=0.1)
    schedule = evaluate(instance, ALL_ON_CLOUD)
    c = schedule.runs[2]
    assert c.start == approx(A)
    at_zero = dataclasses.replace(c, start=0.0, end=C)  # three at once on two slots
    runs = [*schedule.runs[:2], at_zero]
    problems = violations(instance, dataclasses.replace(schedule, runs=runs))
    assert any("runs 3 subtasks" in p and "2 slot(s)" in p for p in problems)
    assert any("before its task arrives" in p for p in problems)


def test_edges_default_to_one_slot_and_must_have_some() -> None:
    assert [s.slots for s in PAPER.servers] == [1, 1, 1, None]
    data = PAPER.model_dump(mode="json")
    data["servers"][0]["slots"] = None
    with pytest.raises(OffloadError, match="edge 'edge-text' needs a number of slots"):
        parse_scenario(data, "test")


def test_arrivals_are_a_poisson_process_from_zero() -> None:
    sc = load_scenario("contended")
    rng = np.random.default_rng(0)
    arrivals = [t.arrival_s for t in sample_instance(sc, rng, 2000).tasks]
    gaps = np.diff(arrivals)
    assert arrivals[0] == 0.0 and (gaps >= 0).all()
    rate = sc.workload.arrivals_per_s
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.05)  # exponential: mean 1/rate
    assert gaps.std() == pytest.approx(1 / rate, rel=0.1)  # and sd 1/rate
    # without a rate, nothing is drawn for arrivals: the paper's instances are unchanged
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    sample_instance(PAPER, a)
    assert [t.arrival_s for t in sample_instance(PAPER, b).tasks] == [0.0] * 5
    assert a.random() == b.random()


@st.composite
def tiny_loaded(draw: st.DrawFn) -> Instance:
    """One to three tiny tasks arriving over time on a cloud with one or two slots."""
    base = PAPER.model_dump(mode="json")
    base["workflows"] = TINY_FLOWS
    base["workload"]["workflows"] = list(TINY_FLOWS)
    base["workload"]["arrivals_per_s"] = draw(st.sampled_from([2.0, 20.0]))
    base["gamma"] = draw(st.sampled_from([0.2, 0.5, 0.9]))
    base["latency"] = draw(st.sampled_from(["span", "arrival"]))
    base["servers"][CLOUD]["slots"] = draw(st.sampled_from([1, 2]))
    base["network"]["device_cloud_up_mbps"] = draw(st.sampled_from([0.5, 3.0]))
    sc = Scenario.model_validate(base)
    tasks = draw(st.integers(1, 2))
    return sample_instance(sc, np.random.default_rng(draw(st.integers(0, 2**32))), tasks)


@settings(max_examples=12, deadline=None)
@given(tiny_loaded())
def test_optimal_equals_exhaustive_with_slots_and_arrivals(instance: Instance) -> None:
    """CP-SAT's schedule is the brute-force optimum; proven except where a two-slot
    cloud meets span latency (its slot choice can then differ from the model's)."""
    solution = solve(instance, time_limit_s=30)
    best = exhaustive(instance)
    sc = instance.scenario
    assert solution.proven == (sc.latency == "arrival" or sc.servers[CLOUD].slots == 1)
    assert solution.schedule.objective >= best - 1e-12
    assert solution.bound <= best + TICK_SLOP
    if solution.proven:
        assert solution.schedule.objective == pytest.approx(best, abs=TICK_SLOP)
    assert violations(instance, solution.schedule) == []


def test_contended_env_acts_on_arrival_and_returns_bonuses_minus_objective() -> None:
    """Tasks act one arrival at a time, each dispatching all its subtasks on arrival.
    Replaying best classic's placements in that order, the aligned reward's return is
    the bonuses minus lateness (deadlines count from arrival) minus the objective, and
    the queue-delay feature is each server's free time after the agent's arrival."""
    sc = load_scenario("contended")
    sc = sc.model_copy(update={"reward": sc.reward.model_copy(update={"form": "objective"})})
    env = OffloadEnv(sc)
    servers = len(sc.servers)
    assert env.max_steps == 4 * 5 * 20  # 4 J steps per arrival
    for seed in range(2):
        inst = sample_instance(sc, np.random.default_rng(seed))
        order = sorted(best_classic(inst, np.random.default_rng(0)), key=lambda d: d.task)
        schedule = evaluate(inst, order)
        env.reset(seed=0, options={"instance": inst})
        ex = Execution(inst)
        for d in order:
            assert env.agents == [env.possible_agents[d.task]]  # only the arrived task acts
            env.step({env.possible_agents[d.task]: d.subtask * servers + d.server})
            ex.dispatch(*d)
            _, feats, _, _ = env.layout.split(env.observations())
            want = [[max(0.0, f - t.arrival_s) for f in ex.free] for t in inst.tasks]
            assert feats[..., -2] == pytest.approx(np.array(want, np.float32))
        summary = env.summary()
        assert summary["undone"] == 0 and env.agents == []
        assert summary["objective"] == approx(schedule.objective)
        late = sum(max(0.0, r.end - inst.tasks[r.task].arrival_s - sc.t_max_s) for r in ex.runs)
        bonus = sum(r.end - inst.tasks[r.task].arrival_s <= sc.t_max_s for r in ex.runs)
        assert summary["reward"] == approx(2.0 * bonus - late - schedule.objective)


def test_best_classic_takes_each_instance_s_least_classic_schedule() -> None:
    """On contended, HEFT's arrival-aware order usually wins; on dear-cloud,
    objective-greedy: best classic is whichever is least on each instance."""
    for name in ("contended", "dear-cloud"):
        sc = load_scenario(name)
        for seed in range(3):
            inst = sample_instance(sc, np.random.default_rng(seed))
            each = [
                evaluate(inst, rule(inst, np.random.default_rng(0))) for rule in CLASSIC.values()
            ]
            best = evaluate(inst, best_classic(inst, np.random.default_rng(0)))
            assert best.objective == min(s.objective for s in each)
