"""The LP lower bound: never above an optimum proven by brute force or CP-SAT, never above
any schedule, exact where nothing competes, and stronger than the relaxed bound where
queues form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_optimal import exhaustive, tiny_instances

from llmoffload.model.execution import Tables, evaluate
from llmoffload.model.instance import Instance, sample_instance
from llmoffload.model.scenario import BUILTIN, Scenario, load_scenario
from llmoffload.schedulers.bound import SAFETY, lower_bound, lp_bound, relaxed_bound
from llmoffload.schedulers.search import Budget, anneal


@settings(max_examples=25, deadline=None)
@given(tiny_instances())
def test_the_bound_never_exceeds_the_exhaustive_optimum(instance: Instance) -> None:
    assert lower_bound(instance) <= exhaustive(instance) + 1e-12


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(BUILTIN), st.integers(0, 2**32), st.integers(1, 8))
def test_the_bound_never_exceeds_any_schedule(scenario: str, seed: int, tasks: int) -> None:
    inst = sample_instance(load_scenario(scenario), np.random.default_rng(seed), tasks)
    found = anneal(inst, np.random.default_rng(seed), Budget(evaluations=2000))
    bound = lower_bound(inst)
    assert bound >= relaxed_bound(Tables(inst))
    assert bound <= found.objective + 1e-12


def single() -> Instance:
    """One task of one text subtask, on the text edge or the cloud."""
    base = load_scenario("paper").model_dump()
    base["workflows"] = {"one": {"nodes": {"a": "text"}, "edges": []}}
    base["workload"]["workflows"] = ["one"]
    return sample_instance(Scenario.model_validate(base), np.random.default_rng(0), 1)


def test_alone_the_bound_is_the_best_placement() -> None:
    """Nothing to wait for: the least over its two servers of gamma (upload + compute +
    download) + (1 - gamma) cost, by hand from the tables, less only the safety margin."""
    inst = single()
    t = Tables(inst)
    by_hand = {
        s: t.gamma * (t.upload[0][0][s] + t.compute[0][0][s] + t.downlink[0][s])
        + (1 - t.gamma) * t.cost[0][0][s]
        for s in (0, t.cloud)
    }
    assert lp_bound(inst) == pytest.approx(min(by_hand.values()) * (1 - SAFETY), rel=1e-9)
    for s, objective in by_hand.items():
        assert evaluate(inst, [(0, 0, s)]).objective == pytest.approx(objective, rel=1e-12)


def test_where_queues_form_the_lp_is_far_above_the_relaxed_bound() -> None:
    """On contended (20 tasks on one-slot edges and a two-slot cloud), the relaxed bound
    ignores every queue; the LP's capacity rows close most of that gap."""
    inst = sample_instance(load_scenario("contended"), np.random.default_rng(1))
    relaxed = relaxed_bound(Tables(inst))
    found = anneal(inst, np.random.default_rng(0), Budget(evaluations=5000)).objective
    bound = lp_bound(inst)
    assert relaxed < bound <= found
    assert (found - bound) / found < 0.6 * (found - relaxed) / found
