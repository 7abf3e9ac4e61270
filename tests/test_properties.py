"""Property tests: random valid scenarios, instances and dispatch sequences.

The execution model and the heuristics must produce schedules that the
independent validator (``validate.py``) accepts, and the validator must
reject schedules that have been tampered with.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llmoffload.errors import OffloadError
from llmoffload.model.execution import Execution, Schedule, evaluate
from llmoffload.model.instance import Instance, Subtask, Task
from llmoffload.model.scenario import Scenario
from llmoffload.model.validate import check, violations
from llmoffload.schedulers.heuristics import all_cloud, greedy, heft, random_valid, valid_dispatches

MODALITIES = ["text", "image", "audio", "image+text", "audio+text"]
SIZES = {m: {"input_kbit": [1, 2], "output_kbit": [1, 2]} for m in MODALITIES}


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """1-3 edges serving random modalities, a cloud serving all, anywhere in the list."""
    edges = draw(st.integers(1, 3))
    servers = [
        {
            "name": f"edge-{n}",
            "kind": "edge",
            "ghz": draw(floats(0.5, 5.0)),
            "usd_per_ghz": draw(floats(0.0, 0.1)),
            "modalities": draw(st.lists(st.sampled_from(MODALITIES), min_size=1, unique=True)),
            "slots": draw(st.sampled_from([1, 1, 2])),
        }
        for n in range(edges)
    ]
    cloud = {
        "name": "cloud",
        "kind": "cloud",
        "ghz": draw(floats(1.0, 20.0)),
        "usd_per_ghz": draw(floats(0.0, 0.1)),
        "modalities": MODALITIES,
        "slots": draw(st.sampled_from([None, None, 1, 2, 3])),
    }
    servers.insert(draw(st.integers(0, edges)), cloud)
    network = {
        "bandwidth_mhz": draw(floats(0.5, 10.0)),
        "device_power_w": draw(floats(0.05, 1.0)),
        "edge_power_w": draw(floats(0.05, 2.0)),
        "noise_dbm": draw(floats(-80.0, -30.0)),
        "channel": {"exponent": draw(floats(2.0, 4.0)), "reference_gain_db": 0.0},
        "device_cloud_up_mbps": draw(floats(0.5, 50.0)),
        "device_cloud_down_mbps": draw(floats(0.5, 50.0)),
        "edge_edge_mbps": draw(floats(0.5, 50.0)),
        "edge_cloud_mbps": draw(floats(0.5, 50.0)),
    }
    return Scenario.model_validate(
        {
            "gamma": draw(floats(0.0, 1.0)),
            "t_max_s": draw(floats(0.1, 5.0)),
            "latency": draw(st.sampled_from(["span", "arrival"])),
            "servers": servers,
            "network": network,
            "workload": {"workflows": ["one"], "sizes": SIZES},
            "workflows": {"one": {"nodes": {"a": "text"}}},
        }
    )


@st.composite
def tasks(draw: st.DrawFn, edges: int) -> Task:
    """A random DAG of 1-6 subtasks in topological order whose only sink is the last."""
    n = draw(st.integers(1, 6))
    preds: list[set[int]] = [set()]
    for j in range(1, n):
        preds.append(set(draw(st.lists(st.integers(0, j - 1), max_size=j, unique=True))))
    for j in range(n - 1):
        if not any(j in p for p in preds[j + 1 :]):
            preds[-1].add(j)
    subtasks = [
        Subtask(
            name=f"s{j}",
            modality=draw(st.sampled_from(MODALITIES)),
            input_bits=draw(floats(1.0, 1e6)),
            output_bits=draw(floats(1.0, 1e5)),
            cycles=draw(floats(1e3, 1e10)),
            preds=sorted(preds[j]),
        )
        for j in range(n)
    ]
    distances = draw(st.lists(floats(10.0, 200.0), min_size=edges, max_size=edges))
    arrival = draw(st.one_of(st.just(0.0), floats(0.0, 2.0)))
    return Task(workflow="random", arrival_s=arrival, distances_m=distances, subtasks=subtasks)


@st.composite
def instances(draw: st.DrawFn) -> Instance:
    scenario = draw(scenarios())
    edges = sum(s.kind == "edge" for s in scenario.servers)
    drawn = draw(st.lists(tasks(edges), min_size=1, max_size=3))
    return Instance(scenario=scenario, tasks=drawn)


@st.composite
def scheduled(draw: st.DrawFn) -> tuple[Instance, Schedule]:
    """An instance and a schedule from uniformly chosen valid dispatches."""
    instance = draw(instances())
    ex = Execution(instance)
    while not ex.done:
        options = valid_dispatches(ex)
        ex.dispatch(*options[draw(st.integers(0, len(options) - 1))])
    return instance, ex.schedule()


@settings(max_examples=150, deadline=None)
@given(scheduled())
def test_random_valid_sequences_pass_the_validator(case: tuple[Instance, Schedule]) -> None:
    instance, schedule = case
    assert violations(instance, schedule) == []
    check(instance, schedule)


@settings(max_examples=80, deadline=None)
@given(instances(), st.integers(0, 2**32 - 1))
def test_heuristic_schedules_pass_the_validator(instance: Instance, seed: int) -> None:
    for scheduler in (random_valid, all_cloud, greedy, heft):
        order = scheduler(instance, np.random.default_rng(seed))
        schedule = evaluate(instance, order)
        assert violations(instance, schedule) == [], scheduler.__name__


@settings(max_examples=150, deadline=None)
@given(scheduled(), st.data())
def test_validator_catches_corruptions(
    case: tuple[Instance, Schedule], data: st.DataObject
) -> None:
    instance, schedule = case
    runs = schedule.runs
    k = data.draw(st.integers(0, len(runs) - 1))
    run = runs[k]
    shift = 1e-3 + 1e-6 * abs(run.end)  # well beyond the validator's 1e-9 tolerance

    def with_run(changed: object) -> Schedule:
        return dataclasses.replace(schedule, runs=[*runs[:k], changed, *runs[k + 1 :]])

    # A start shifted alone breaks end = start + upload + compute.
    assert violations(instance, with_run(dataclasses.replace(run, start=run.start + shift)))
    # Shifted with its end it is self-consistent, but idles (or starts before WT/queue).
    shifted = dataclasses.replace(run, start=run.start + shift, end=run.end + shift)
    assert violations(instance, with_run(shifted))
    shifted = dataclasses.replace(run, start=run.start - shift, end=run.end - shift)
    assert violations(instance, with_run(shifted))
    # A wrong cost, a dropped run, a repeated run, a wrong total.
    assert violations(instance, with_run(dataclasses.replace(run, cost=run.cost * 1.01 + 1e-6)))
    assert violations(instance, dataclasses.replace(schedule, runs=runs[:k] + runs[k + 1 :]))
    assert violations(instance, dataclasses.replace(schedule, runs=[*runs, run]))
    assert violations(
        instance, dataclasses.replace(schedule, objective=schedule.objective * (1 + 1e-6) + 1e-3)
    )
    # A server that cannot serve the subtask's modality, if there is one.
    modality = instance.tasks[run.task].subtasks[run.subtask].modality
    wrong = [n for n, s in enumerate(instance.scenario.servers) if modality not in s.modalities]
    if wrong:
        moved = dataclasses.replace(run, server=data.draw(st.sampled_from(wrong)))
        problems = violations(instance, with_run(moved))
        assert any("cannot serve" in p for p in problems)
    with pytest.raises(OffloadError, match="invalid schedule"):
        check(instance, with_run(dataclasses.replace(run, start=run.start + shift)))


@settings(max_examples=80, deadline=None)
@given(scheduled(), st.data())
def test_validator_catches_precedence_swaps(
    case: tuple[Instance, Schedule], data: st.DataObject
) -> None:
    """Moving a run ahead of one of its predecessors in the dispatch order is caught."""
    instance, schedule = case
    runs = schedule.runs
    where = {(r.task, r.subtask): k for k, r in enumerate(runs)}
    pairs = [
        (where[(r.task, p)], k)
        for k, r in enumerate(runs)
        for p in instance.tasks[r.task].subtasks[r.subtask].preds
    ]
    assume(pairs)
    before, after = data.draw(st.sampled_from(pairs))
    swapped = list(runs)
    swapped[before], swapped[after] = swapped[after], swapped[before]
    problems = violations(instance, dataclasses.replace(schedule, runs=swapped))
    assert any("not dispatched before" in p for p in problems)


@settings(max_examples=100, deadline=None)
@given(instances(), st.data())
def test_breaches_and_valid_set_follow_the_rules(instance: Instance, data: st.DataObject) -> None:
    """In any state reached by valid dispatches, ``Execution.breaches`` of every dispatch,
    out-of-range ones included, is what the rules give from the instance's own fields;
    ``valid()`` and ``valid_dispatches`` hold exactly those that break nothing."""
    ex = Execution(instance)
    for _ in range(data.draw(st.integers(0, sum(len(t.subtasks) for t in instance.tasks)))):
        options = valid_dispatches(ex)
        ex.dispatch(*options[data.draw(st.integers(0, len(options) - 1))])
    servers = instance.scenario.servers
    valid = ex.valid()
    clean = []
    for i in range(len(instance.tasks) + 1):
        for j in range(7):
            for s in range(len(servers) + 1):
                subs = instance.tasks[i].subtasks if i < len(instance.tasks) else []
                if j >= len(subs):
                    want = [("no-subtask", 1)]
                elif s >= len(servers):
                    want = [("no-server", 1)]
                elif ex.placed[i][j] >= 0:
                    want = [("repeat", 1)]
                else:
                    waiting = sum(ex.placed[i][p] < 0 for p in subs[j].preds)
                    want = [("precedence", waiting)] if waiting else []
                    want += [] if subs[j].modality in servers[s].modalities else [("modality", 1)]
                assert [tuple(b) for b in ex.breaches(i, j, s)] == want
                assert (ex.violation(i, j, s) is None) == (not want)
                inside = i < valid.shape[0] and j < valid.shape[1] and s < valid.shape[2]
                assert (inside and bool(valid[i, j, s])) == (not want)
                clean += [(i, j, s)] if not want else []
    assert valid_dispatches(ex) == clean
