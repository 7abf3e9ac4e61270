"""The local-search scheduler: its incremental timing against the execution model, its
guarantees (valid, never worse than its start, repeatable), its budget and its command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmoffload.cli.app import app
from llmoffload.errors import OffloadError
from llmoffload.model.execution import Tables, evaluate
from llmoffload.model.instance import sample_instance
from llmoffload.model.scenario import BUILTIN, Scenario, load_scenario
from llmoffload.model.validate import check
from llmoffload.schedulers.heuristics import best_classic
from llmoffload.schedulers.search import Budget, Sequence, anneal, propose


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(BUILTIN), st.integers(0, 2**32), st.integers(1, 6))
def test_incremental_timing_agrees_with_the_execution_model(
    scenario: str, seed: int, tasks: int
) -> None:
    """After every accepted move, the re-timed objective is the full evaluation's."""
    inst = sample_instance(load_scenario(scenario), np.random.default_rng(seed), tasks)
    sq = Sequence(Tables(inst), best_classic(inst, np.random.default_rng(seed)))
    draw = random.Random(seed)
    for _ in range(40):
        move = propose(sq, draw)
        if move is None:
            continue
        sq.accept(sq.time(move))
        assert [sq.pos[g] for g in sq.seq] == list(range(len(sq.seq)))
        full = evaluate(inst, sq.order())
        assert sq.objective == pytest.approx(full.objective, rel=1e-12, abs=1e-12)
        ends = {(r.task, r.subtask): r.end for r in full.runs}
        flat = sq.flat
        for g, i in enumerate(flat.task):
            assert sq.end[g] == pytest.approx(ends[i, g - flat.first[i]], rel=1e-12, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(BUILTIN), st.integers(0, 2**32), st.integers(1, 8))
def test_the_search_is_valid_and_never_worse_than_its_start(
    scenario: str, seed: int, tasks: int
) -> None:
    inst = sample_instance(load_scenario(scenario), np.random.default_rng(seed), tasks)
    found = anneal(inst, np.random.default_rng(seed), Budget(evaluations=300))
    schedule = evaluate(inst, found.order)
    check(inst, schedule)  # the validator re-derives every number by separate code
    start = evaluate(inst, best_classic(inst, np.random.default_rng(seed))).objective
    assert schedule.objective == pytest.approx(found.objective, rel=1e-12)
    assert schedule.objective <= start + 1e-12
    assert 0 < found.evaluations <= 300


def test_the_same_seed_and_evaluations_give_the_same_schedule() -> None:
    inst = sample_instance(load_scenario("contended"), np.random.default_rng(3))
    runs = [anneal(inst, np.random.default_rng(s), Budget(evaluations=2000)) for s in (1, 1, 2)]
    assert runs[0].order == runs[1].order and runs[0].evaluations == runs[1].evaluations
    assert runs[0].order != runs[2].order  # another seed, another path


def test_on_contended_it_improves_on_best_classic() -> None:
    """Where queues are long, a few thousand moves find a clearly better schedule."""
    inst = sample_instance(load_scenario("contended"), np.random.default_rng(5))
    start = evaluate(inst, best_classic(inst, np.random.default_rng(0))).objective
    found = anneal(inst, np.random.default_rng(0), Budget(evaluations=5000))
    assert found.objective < 0.97 * start


def test_the_search_runs_where_its_start_costs_nothing() -> None:
    base = load_scenario("paper").model_dump()
    base["gamma"] = 0.0
    base["servers"][3]["usd_per_ghz"] = 0.0
    inst = sample_instance(Scenario.model_validate(base), np.random.default_rng(0), 2)
    assert evaluate(inst, best_classic(inst, np.random.default_rng(0))).objective == 0
    found = anneal(inst, np.random.default_rng(0), Budget(evaluations=200))
    assert found.objective == 0


def test_a_time_budget_stops_on_time_and_keeps_the_start() -> None:
    inst = sample_instance(load_scenario("contended"), np.random.default_rng(4))
    found = anneal(inst, np.random.default_rng(0), Budget(seconds=0.2))
    assert found.seconds < 1.0 and found.evaluations > 0
    tiny = anneal(inst, np.random.default_rng(0), Budget(seconds=1e-9))  # less than its start
    start = evaluate(inst, best_classic(inst, np.random.default_rng(0)))
    assert tiny.order == start.order and tiny.evaluations == 0


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("2000", Budget(evaluations=2000)),
        ("0.5s", Budget(seconds=0.5)),
        (" 3 s ", Budget(seconds=3)),
    ],
)
def test_a_budget_reads_evaluations_or_seconds(text: str, budget: Budget) -> None:
    assert Budget.parse(text) == budget
    assert Budget.parse(str(budget)) == budget


@pytest.mark.parametrize("text", ["0", "0s", "-5", "abc", "1.5", "2 ms", ""])
def test_a_bad_budget_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(OffloadError, match="a search budget is a positive number"):
        Budget.parse(text)


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_schedule_policy_search_reports_its_evaluations(tmp_path: Path) -> None:
    path = tmp_path / "inst.json"
    assert cli("instance", "--scenario", "contended", "--seed", 2, "--out", path).exit_code == 0
    done = cli("schedule", path, "--policy", "search", "--budget", "500", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["evaluations"] == 500 or 0 < result["evaluations"] < 500
    seconds = cli("schedule", path, "--policy", "search", "--budget", "0.1s")
    assert seconds.exit_code == 0 and "search: " in seconds.stdout
    bad = cli("schedule", path, "--policy", "search", "--budget", "soon")
    assert bad.exit_code != 0 and "a search budget is a positive number" in bad.output
    assert "Traceback" not in bad.output
