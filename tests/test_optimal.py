"""Optimal (CP-SAT) against exhaustive enumeration and against every heuristic."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmoffload.model.execution import Dispatch, Execution, Tables, evaluate
from llmoffload.model.instance import Instance, sample_instance
from llmoffload.model.scenario import Scenario, load_scenario
from llmoffload.schedulers.bound import lp_bound, relaxed_bound
from llmoffload.schedulers.optimal import REACH, solve
from llmoffload.schedulers.registry import SCHEDULERS

# CP-SAT works in 1 us ticks; a schedule's objective sums at most a few dozen
# rounded durations per task, so 1e-5 bounds the rounding it can hide.
TICK_SLOP = 1e-5

TINY_FLOWS = {
    "chain": {"nodes": {"a": "text", "b": "image", "c": "text"}, "edges": [["a", "b"], ["b", "c"]]},
    "fork": {
        "nodes": {"a": "text", "b": "image", "c": "text", "d": "text"},
        "edges": [["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"]],
    },
    "fuse": {
        "nodes": {"a": "text", "b": "image+text", "c": "text"},
        "edges": [["a", "b"], ["b", "c"]],
    },
}


def all_sequences(ex: Execution, prefix: list[Dispatch]) -> Iterator[list[Dispatch]]:
    """Every valid dispatch sequence: all interleavings times all placements."""
    t = ex.tables
    if ex.done:
        yield prefix
        return
    for i, preds in enumerate(t.preds):
        for j, pj in enumerate(preds):
            if ex.placed[i][j] >= 0 or any(ex.placed[i][p] < 0 for p in pj):
                continue
            for s in t.servers:
                if t.supports(i, j, s):
                    step = Execution(t)
                    for d in (*prefix, Dispatch(i, j, s)):
                        step.dispatch(*d)
                    yield from all_sequences(step, [*prefix, Dispatch(i, j, s)])


def exhaustive(instance: Instance) -> float:
    """The least objective over every dispatch sequence, by brute force."""
    ex = Execution(instance)
    return min(evaluate(ex.tables, seq).objective for seq in all_sequences(ex, []))


@st.composite
def tiny_instances(draw: st.DrawFn, limited: bool = False) -> Instance:
    """One or two tiny tasks on the paper's servers, in regimes where edges can win;
    ``limited``: the cloud has one slot, or two and latency from arrival (where the
    model is exact)."""
    base = load_scenario("paper").model_dump()
    base["workflows"] = TINY_FLOWS
    base["workload"]["workflows"] = list(TINY_FLOWS)
    base["gamma"] = draw(st.sampled_from([0.2, 0.5, 0.9]))
    base["latency"] = draw(st.sampled_from(["span", "arrival"]))
    base["servers"][3]["usd_per_ghz"] = draw(st.sampled_from([0.03, 0.3, 3.0]))
    base["network"]["device_cloud_up_mbps"] = draw(st.sampled_from([0.5, 3.0, 30.0]))
    if limited:
        base["servers"][3]["slots"] = draw(st.sampled_from([1, 2]))
        if base["servers"][3]["slots"] == 2:
            base["latency"] = "arrival"
    scenario = Scenario.model_validate(base)
    tasks = draw(st.integers(1, 2))
    return sample_instance(scenario, np.random.default_rng(draw(st.integers(0, 2**32))), tasks)


@settings(max_examples=25, deadline=None)
@given(st.one_of(tiny_instances(), tiny_instances(limited=True)))
def test_optimal_equals_exhaustive(instance: Instance) -> None:
    solution = solve(instance, time_limit_s=30)
    best = exhaustive(instance)
    assert solution.proven
    assert solution.schedule.objective >= best - 1e-12
    assert solution.schedule.objective == pytest.approx(best, abs=TICK_SLOP)
    assert solution.bound <= best + TICK_SLOP


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 3), st.sampled_from(["span", "arrival"]))
def test_optimal_beats_every_heuristic(seed: int, tasks: int, latency: str) -> None:
    scenario = load_scenario("paper").model_copy(update={"latency": latency})
    instance = sample_instance(scenario, np.random.default_rng(seed), tasks)
    solution = solve(instance, time_limit_s=30)
    assert solution.proven
    assert lp_bound(instance) <= solution.schedule.objective + 1e-12  # each bound, alone
    assert relaxed_bound(Tables(instance)) <= solution.schedule.objective + 1e-12
    for name in (name for name in SCHEDULERS if name != "optimal"):
        order = SCHEDULERS[name](instance, np.random.default_rng(seed))
        assert solution.schedule.objective <= evaluate(instance, order).objective + TICK_SLOP


@pytest.mark.parametrize(("scenario", "seed"), [("paper", 0), ("paper", 1), ("contended", 2)])
def test_both_formulations_prove_the_same_optimum_under_arrival_latency(
    scenario: str, seed: int
) -> None:
    """Intervals with free starts (the default there) and circuits with pinned starts (the
    default under span latency, and the only model before issue 29) agree where both are
    exact: the paper's servers and contended's two-slot cloud."""
    sc = load_scenario(scenario).model_copy(update={"latency": "arrival"})
    instance = sample_instance(sc, np.random.default_rng(seed), 3)
    free, pinned = (solve(instance, 30, formulation=f) for f in ("intervals", "circuits"))
    assert free.proven and pinned.proven
    assert free.schedule.objective == pytest.approx(pinned.schedule.objective, abs=TICK_SLOP)


def test_free_starts_are_a_relaxation_under_span_latency() -> None:
    """Under span latency the interval model may start a task's first subtask late: its
    optimum is a bound on the circuits' (never above it), and it never claims a proof."""
    for seed in range(3):
        instance = sample_instance(load_scenario("dear-cloud"), np.random.default_rng(seed), 2)
        free, pinned = (solve(instance, 30, formulation=f) for f in ("intervals", "circuits"))
        assert pinned.proven and not free.proven
        assert free.bound <= pinned.schedule.objective + TICK_SLOP


def test_optimal_uses_the_edge_when_it_pays() -> None:
    """With a dear, slow cloud, optimal keeps single-modality work on the edges."""
    base = load_scenario("paper").model_dump()
    base["servers"][3]["usd_per_ghz"] = 10.0
    instance = sample_instance(Scenario.model_validate(base), np.random.default_rng(3), 2)
    solution = solve(instance, time_limit_s=30)
    cloud = instance.scenario.cloud
    multimodal = {"image+text", "audio+text"}
    for run in solution.schedule.runs:
        modality = instance.tasks[run.task].subtasks[run.subtask].modality
        assert (run.server == cloud) == (modality in multimodal)


def test_time_limit_keeps_the_best_schedule_and_a_valid_bound() -> None:
    instance = sample_instance(load_scenario("paper"), np.random.default_rng(0), 20)
    solution = solve(instance, time_limit_s=0.05)
    proven = solve(sample_instance(load_scenario("paper"), np.random.default_rng(0), 2))
    heft = evaluate(instance, SCHEDULERS["heft"](instance, np.random.default_rng(0)))
    assert solution.schedule.objective <= heft.objective
    assert solution.bound <= solution.schedule.objective + TICK_SLOP
    assert 0.0 <= solution.gap <= 1.0
    assert proven.proven and proven.gap == 0.0


@settings(max_examples=12, deadline=None)
@given(tiny_instances())
def test_relaxed_bound_never_exceeds_the_exhaustive_optimum(instance: Instance) -> None:
    assert relaxed_bound(Tables(instance)) <= exhaustive(instance) + 1e-12


def test_relaxed_bound_of_a_chain_by_hand() -> None:
    """One linear text task: the critical path is every subtask's fastest duration in
    turn (the exit's download added on its server), the cost every subtask's cheapest."""
    base = load_scenario("paper").model_dump()
    base["workload"]["workflows"] = ["text-analysis"]  # a chain of four text subtasks
    sc = Scenario.model_validate(base)
    servers = [0, sc.cloud]  # the text edge and the cloud serve text
    for seed in range(5):
        t = Tables(sample_instance(sc, np.random.default_rng(seed), 1))
        up = [[t.upload[0][j][s] + t.compute[0][j][s] for s in servers] for j in range(4)]
        path = sum(min(row) for row in up[:3])
        path += min(d + t.downlink[0][s] for d, s in zip(up[3], servers, strict=True))
        cost = sum(min(t.cost[0][j][s] for s in servers) for j in range(4))
        assert relaxed_bound(t) == pytest.approx(sc.gamma * path + (1 - sc.gamma) * cost)


def test_an_unproven_solve_reports_a_bound_with_a_real_gap() -> None:
    """100 tasks on 20 edges in a tenth of a second: CP-SAT proves nothing, and its own
    bound is 0; the LP's, at the best schedule's reach, is the bound, above the relaxed
    one, with a gap well below 100%."""
    base = load_scenario("paper").model_dump()
    edges = [s for s in base["servers"] if s["kind"] == "edge"]
    base["servers"] = [
        {**edges[k % 3], "name": f"{edges[k % 3]['name']}-{k}"} for k in range(20)
    ] + [base["servers"][3]]
    instance = sample_instance(Scenario.model_validate(base), np.random.default_rng(1), 100)
    solution = solve(instance, time_limit_s=0.1)
    assert not solution.proven
    reach = REACH * max(r.end for r in solution.schedule.runs)
    assert solution.bound == pytest.approx(lp_bound(instance, reach))
    assert solution.bound > relaxed_bound(Tables(instance))
    assert 0.0 < solution.bound <= solution.schedule.objective
    assert solution.gap < 0.5
