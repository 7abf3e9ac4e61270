"""The study beyond the paper: its plan, its statistics by hand, and one tiny study end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from llmoffload.cli.app import app
from llmoffload.errors import OffloadError
from llmoffload.experiments.study import (
    Estimate,
    Study,
    held,
    iqm_intervals,
    plan,
    profiles,
    ratios,
    scenario_of,
)
from llmoffload.experiments.study_report import Row, equal_time, verdict
from llmoffload.experiments.training import held_out, make_config
from llmoffload.marl.learner import ProtocolMask
from llmoffload.marl.registry import LEARNERS as REGISTERED
from llmoffload.model.scenario import load_scenario, with_reward

# every registered learner but Random, which learns nothing (a learner added to the
# registry joins the study without a test edit)
LEARNERS = tuple(m for m in REGISTERED if m != "random")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli(*args: object) -> Result:
    return CliRunner().invoke(app, ["reproduce", "--study", *map(str, args)])


def test_the_plan_trains_every_learner_masked_on_the_objective_beside_the_references() -> None:
    study = Study(seeds=(0, 1))
    specs = plan(study)
    assert study.methods == LEARNERS
    assert "random" not in study.methods and "gnn-sched" in study.methods
    # scenarios x seeds x (learners + references)
    assert len(specs) == 3 * 2 * (len(LEARNERS) + 3)
    for spec in specs:
        name = scenario_of(spec)
        scenario = with_reward(load_scenario(name), "objective")
        assert spec.scenario == json.dumps(scenario.model_dump(mode="json"))  # key order kept
        assert (spec.bandwidth_mhz, spec.deadline_s) == (
            scenario.network.bandwidth_mhz,
            scenario.t_max_s,
        )
        if spec.method in LEARNERS:  # CS-UCB and gnn-sched always mask: protocol "any"
            assert spec.config() == make_config(spec.method, {}, "masked")
            masks = not issubclass(REGISTERED[spec.method].config, ProtocolMask)
            assert spec.protocol == ("any" if masks else "masked")
            want = 190 if name == "contended" else 700  # about 17,500 decisions each
            assert (spec.episodes, spec.time_limit_s) == (want, 0.0)
        else:
            assert (spec.episodes, spec.time_limit_s) == (0, 10.0)
    assert {scenario_of(s) for s in specs} == {"dear-cloud", "slow-uplink", "contended"}
    # the references of a seed score exactly the instances its learners are evaluated on
    by = {(scenario_of(s), s.seed, s.method): s for s in specs}
    for (name, seed, _), spec in by.items():
        for ref in ("heft", "best-classic", "optimal"):
            other = by[name, seed, ref]
            assert spec.eval_episodes == other.eval_episodes == 50
            mine = held_out(spec.resolved_scenario(), spec.seed, 2)
            theirs = held_out(other.resolved_scenario(), other.seed, 2)
            assert [i.tasks for *_, i in mine] == [i.tasks for *_, i in theirs]


def test_a_bad_study_is_one_clear_error() -> None:
    with pytest.raises(OffloadError, match="unknown method 'dqn'"):
        plan(Study(methods=("dqn",)))
    with pytest.raises(OffloadError, match="scenario file not found: nowhere"):
        plan(Study(scenarios=("nowhere",)))


def results(method: str, by_seed: dict[int, list[float]]) -> list[dict[str, Any]]:
    """Result dicts as ``sweep.run_one`` writes them, with only what the study reads."""
    return [
        {"spec": {"method": method, "seed": s}, "held_out": {"objective": o}}
        for s, o in by_seed.items()
    ]


def test_the_iqm_is_the_mean_of_the_middle_half_and_its_interval_holds_it() -> None:
    fake = [
        *results("optimal", {0: [2.0] * 4, 1: [4.0] * 4}),
        *results("best-classic", {0: [4.0] * 4, 1: [8.0] * 4}),
        # seed 2 has no Optimal beside it: it is left out of the ratios
        *results("coma", {0: [2.0, 2.2, 2.4, 2.6], 1: [5.6, 6.0, 6.4, 20.0], 2: [1.0] * 4}),
    ]
    objs = held(fake)
    to_optimal = ratios(objs, "optimal")
    expected = [[1.0, 1.1, 1.2, 1.3], [1.4, 1.5, 1.6, 5.0]]
    np.testing.assert_allclose(to_optimal["coma"], expected)
    np.testing.assert_allclose(ratios(objs, "best-classic")["coma"], np.divide(expected, 2))
    # 8 ratios: drop the 2 lowest (1.0, 1.1) and the 2 highest (1.6, 5.0)
    iqm = (1.2 + 1.3 + 1.4 + 1.5) / 4
    np.random.seed(7)
    untouched = np.random.random()
    np.random.seed(7)
    got = iqm_intervals(to_optimal, reps=500)
    assert np.random.random() == untouched  # the bootstrap leaves numpy's global draws alone
    assert got["coma"].iqm == pytest.approx(iqm)
    assert got["coma"].low < iqm < got["coma"].high < 5.0
    assert got["optimal"] == Estimate(1.0, 1.0, 1.0)
    assert iqm_intervals(to_optimal, reps=500) == got  # the same results, the same report

    taus = np.array([0.99, 1.3, 10.0])
    fractions, bands = profiles({"coma": to_optimal["coma"]}, taus, reps=200)
    np.testing.assert_allclose(fractions["coma"], [0.0, 4 / 8, 1.0])
    assert bands["coma"].shape == (2, 3) and bands["coma"][0, 1] <= 0.5 <= bands["coma"][1, 1]


def test_the_target_needs_both_bars_and_is_stated_either_way() -> None:
    def row(method: str, to_optimal: float, classic_high: float) -> Row:
        to = {
            "optimal": Estimate(to_optimal, 1.0, 1.1),
            "classic": Estimate(0.9, 0.8, classic_high),
        }
        return Row(method, to, 5.0, 3, 0.0, 0.1, None)

    learners = ("coma", "mappo")
    rows = [row("coma", 1.05, 0.9), row("mappo", 1.02, 0.97), row("heft", 1.0, 0.5)]
    assert "**holds** on x. The best learner, mappo, is at 1.02 [1, 1.1]" in verdict(
        "x", rows, learners
    )
    rows[1] = row("mappo", 1.02, 1.01)  # the interval reaches 1: not surely better
    assert "**does not hold** on x. The best learner, mappo" in verdict("x", rows, learners)
    rows[1] = row("mappo", 1.04, 0.9)  # surely better than the classic, too far from Optimal
    assert "**does not hold** on x" in verdict("x", rows, learners)
    assert "**not tested**" in verdict("x", rows[2:], learners)


def test_a_learner_beats_search_at_equal_time_only_where_its_interval_is_below_1() -> None:
    def row(method: str, low: float, high: float) -> Row:
        to = {"search": Estimate((low + high) / 2, low, high), "bound": Estimate(1.2, 1.1, 1.3)}
        return Row(method, to, 5.0, 3, 0.0, 0.25, 0.3)

    learners = ("coma", "gnn-sched")
    rows = [row("coma", 0.9, 0.99), row("gnn-sched", 0.95, 1.02), row("heft", 0.5, 0.6)]
    said = equal_time("x", rows, learners)
    assert "coma (planning 0.25 s per instance), **beats** the search given its time" in said
    assert "0.9450 [0.9000, 0.9900]" in said and "lower bound by 1.2000 [1.1000, 1.3000]" in said
    rows[0] = row("coma", 0.97, 1.01)  # the interval reaches 1: not surely better
    assert "**does not beat**" in equal_time("x", rows, learners)
    rows[0], rows[1] = row("coma", 1.02, 1.1), row("gnn-sched", 1.01, 1.05)
    assert "gnn-sched (planning" in equal_time("x", rows, learners)  # the lower IQM
    assert "**loses to**" in equal_time("x", rows, learners)
    assert "**not tested**" in equal_time("x", rows[2:], learners)


def test_a_tiny_study_writes_its_report_and_figures_and_a_rerun_uses_the_cache(
    tmp_path: Path,
) -> None:
    args = ["beyond", "--quick", "--out", tmp_path, "--seeds", 1, "--method", "cs-ucb",
            "--episodes", 2, "--eval-episodes", 2, "--time-limit", 0.5, "--workers", 2]  # fmt: skip
    runs = 3 * (1 + 3)  # scenarios x (learners + references), one seed
    first = cli(*args)
    assert first.exit_code == 0, first.output
    assert f"{runs} runs: {runs} ran, 0 cached, 0 failed" in first.stdout
    report = (tmp_path / "REPORT.md").read_text()
    assert f"Runs: {runs} of {runs} finished." in report
    for name in ("dear-cloud", "slow-uplink", "contended"):
        part = report.split(f"## {name} (W = 6 MHz, T_max = 3 s)\n")[1].split("\n## ")[0]
        assert "Target (the best learner's IQM ratio to Optimal at most 1.03" in part
        assert ("**holds**" in part) != ("**does not hold**" in part)
        assert "Optimal is proven optimal on " in part and " of 2 held-out instances" in part
        for method in ("cs-ucb", "heft", "best-classic"):
            assert f"\n| {method} | " in part and part.count(f"| {method} |") == 1
        optimal = next(line for line in part.splitlines() if line.startswith("| optimal |"))
        assert optimal.split(" | ")[5] == "1 [1, 1]"  # the x Optimal column
        assert "Equal time: the best learner against the search, cs-ucb (planning" in part
        for stem in ("profile", "training"):
            assert f"]({name}_{stem}.png)" in part
            assert (tmp_path / f"{name}_{stem}.png").read_bytes().startswith(PNG_MAGIC)
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert f"{runs} runs: 0 ran, {runs} cached, 0 failed" in again.stdout
    assert (tmp_path / "REPORT.md").read_text() == report  # seeded: the same report


def test_a_study_of_a_chosen_scenario(tmp_path: Path) -> None:
    tiny = ["--seeds", 1, "--method", "cs-ucb", "--episodes", 2, "--eval-episodes", 2]
    result = cli("beyond", "--quick", "--out", tmp_path, "--scenario", "paper", *tiny)
    assert result.exit_code == 0, result.output
    assert "4 runs: 4 ran" in result.stdout  # cs-ucb and the three references
    report = (tmp_path / "REPORT.md").read_text()
    assert "\n## paper (W = 6 MHz, T_max = 3 s)\n" in report and "## dear-cloud" not in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "error: unknown study 'nope' (choose from paper, beyond)"),
        (["beyond", "--protocol", "masked", "--bandwidth", "5"], "error: --bandwidth, --protocol:"),
        (["beyond", "--method", "dqn"], "error: unknown method 'dqn'"),
        (["beyond", "--scenario", "nope.yaml"], "error: scenario file not found: nope.yaml"),
        (["paper", "--scenario", "paper", "--scenario", "x"], "error: --study paper sweeps one"),
    ],
)
def test_bad_study_options_are_one_clear_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli(*args, "--out", tmp_path / "bad")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "bad").exists()


def test_without_rliable_the_study_stops_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rliable", None)  # as if not installed
    result = cli("beyond", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: --study needs rliable: pip install 'llmoffload[study]'\n"
    assert not (tmp_path / "out").exists()
