"""A newcomer's first minutes: help that reads in 80 columns, a quick run that judges every
claim and names its budget, and results that come from the code as it stands."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from llmoffload.cli.app import app
from llmoffload.experiments.provenance import changed
from llmoffload.experiments.report import Record, Unit, figures, normalise, summary, write_report
from llmoffload.experiments.sweep import QUICK, Grid, execute, plan
from llmoffload.marl.registry import PAPER

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"


def results_module():  # benchmarks/ is scripts, not a package
    spec = importlib.util.spec_from_file_location("results", ROOT / "benchmarks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- help -------------------------------------------------------------------------------------


def command_paths(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``group``, as the words that name it."""
    found = [path]
    for name, sub in getattr(group, "commands", {}).items():
        found += command_paths(sub, (*path, name))
    return found


@pytest.mark.parametrize("words", command_paths(typer.main.get_command(app)), ids=" ".join)
def test_help_reads_in_80_columns_without_boxes(words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout
    for line in result.stdout.splitlines():
        assert len(line) <= 80, line
        assert not set(line) & set("╭╮╰╯│─"), line


def test_the_command_list_gives_each_first_paragraph_whole() -> None:
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"}).stdout
    flat = " ".join(out.split())
    assert "Reproduce the paper's Figs. 4-9, or run the study beyond it" in flat
    commands = out[out.index("Commands:") :]
    assert "..." not in commands  # click's default cuts each summary short with "..."


# -- the quick run ----------------------------------------------------------------------------


def test_the_quick_grid_keeps_every_figure_two_points_and_every_claims_method() -> None:
    specs = plan(QUICK)
    assert len(specs) == 88  # 2 seeds x (35 learner runs + 9 references)
    _, lines, failure = figures(QUICK)
    for axis in [fig.axis for fig in lines] + [failure]:
        assert len(axis.xs) == 2
    assert QUICK.bandwidth_mhz in QUICK.bandwidths_mhz
    assert QUICK.deadline_s in QUICK.deadlines_s
    assert {s.method for s in specs} >= {"ucb-coma", "coma", "maddpg", "mappo", "cs-ucb"}
    assert set(QUICK.protocols) == {"paper", "masked"}


def test_a_report_judges_all_four_claims_and_names_its_budget(tmp_path: Path) -> None:
    grid = Grid(
        methods=PAPER,
        bandwidths_mhz=(5.0, 6.0),
        deadlines_s=(3.0,),
        failure_probs=(0.0,),
        protocols=("paper",),
        seeds=(0, 1),
        episodes=2,
        eval_episodes=1,
        time_limit_s=0.5,
    )
    specs = plan(grid)
    parts = write_report(grid, specs, execute(specs, tmp_path, 2, progress=False), tmp_path)
    assert [v.verdict in ("holds", "does not hold") for v in parts[0].verdicts] == [True] * 4
    text = (tmp_path / "REPORT.md").read_text()
    assert f"Budget: {len(specs)} runs from 2 seeds, 2 training episodes per learner run, " in text
    assert "(the paper's sweep: 3 seeds, 700 episodes, 3, 3 and 3 points)" in text
    assert "verdicts show the pipeline at work" in text  # a smaller budget says so


def test_seed_points_are_scaled_as_the_means_are() -> None:
    def run(method: str, seed: int, value: float) -> Record:
        return Record(method, 5.0, 3.0, 0.0, seed, 0.0, (), (value,))

    records = [run("a", 0, 2.0), run("a", 1, 4.0), run("b", 0, 6.0), run("b", 1, 8.0)]
    axis = figures(Grid())[1][1].axis  # Fig. 6's: bandwidth
    values = axis.values(records, ["a", "b"], lambda r: r.objective)
    np.testing.assert_array_equal(values["a"][0], [2.0, 4.0])
    assert values["a"][1].size == 0  # no run at W = 5.5
    series = summary(values)
    assert series["a"][0][0] == 3.0 and np.isnan(series["a"][0][1])
    unit = Unit.of(series)  # means 3 and 7 onto 0.1 and 1
    np.testing.assert_allclose(unit(values["b"][0]), [0.1 + 3 * 0.9 / 4, 1.0 + 0.9 / 4])
    np.testing.assert_allclose(normalise(series)["b"][0][0], unit(np.array(7.0)))


# -- the results are the code's own -----------------------------------------------------------


def test_readme_is_short_and_its_headline_is_results_md() -> None:
    results = results_module()
    readme = README.read_text()
    assert len(readme.splitlines()) <= 150
    block = results.block_of(RESULTS.read_text())
    assert block is not None and block.count("\n|") >= 4  # a table of findings
    assert results.block_of(readme) == block


def test_results_md_was_made_from_this_code() -> None:
    """The commit named exists and is HEAD or an ancestor of it, and the modules its numbers
    come from (the sweep's and the study's code and the benchmarks run, with what they
    import; per module in the record beside it) are as this checkout holds them, up to
    comments, docstrings and type hints: regenerating results.md keeps this true; an edit
    elsewhere (cli/, docs) leaves it true; a code change to those modules does not."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    results = results_module()
    text = RESULTS.read_text()
    found = re.search(
        r"at commit `([0-9a-f]{7,40})`.*?code digest `([0-9a-f]{12})` \(.*?: ([\w.]+)\)", text
    )
    assert found, "results.md names no commit and code digest"
    commit, digest, record = found.groups()

    def git(*args: str) -> int:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True).returncode

    assert git("cat-file", "-e", f"{commit}^{{commit}}") == 0, f"{commit} is not a commit here"
    assert git("merge-base", "--is-ancestor", commit, "HEAD") == 0, f"{commit} is not in HEAD"
    made = json.loads((RESULTS.parent / record).read_text())
    assert made["digest"] == digest and made["entries"] == list(results.NUMBERS)
    stale = changed(made["modules"], results.numbers_code(made["scripts"]).modules)
    assert not stale, (
        f"the code docs/results.md's numbers came from changed ({', '.join(stale)}): rerun "
        "`llmoffload reproduce` and the study it names, then python benchmarks/results.py"
    )


def test_the_headline_block_is_replaced_in_place() -> None:
    results = results_module()
    text = f"a\n{results.BEGIN}\nold\n{results.END}\nb\n"
    block = results.headline([["claim", "holds"]])
    assert results.replace_block(text, block) == f"a\n{block}\nb\n"
    assert "| claim | holds |" in block
    with pytest.raises(SystemExit):
        results.replace_block("no block here", block)


def test_results_reads_a_study_as_it_was_run(tmp_path: Path) -> None:
    """study.json plans the same runs again: results.py finds every one in the cache and
    reports the study's own budget and command."""
    tiny = ["--seeds", "1", "--method", "cs-ucb", "--episodes", "2", "--eval-episodes", "2"]
    args = ["reproduce", "--study", "beyond", "--quick", "--out", str(tmp_path)]
    done = CliRunner().invoke(app, [*args, "--scenario", "paper", "--time-limit", "0.5", *tiny])
    assert done.exit_code == 0, done.output
    runs = sorted((tmp_path / "runs").iterdir())
    made = [(p.name, (p / "result.json").read_bytes()) for p in runs]
    rows, lines = results_module().study("quick", tmp_path, 1, None)
    assert [(p.name, (p / "result.json").read_bytes()) for p in runs] == made  # none rerun
    assert sorted((tmp_path / "runs").iterdir()) == runs
    (finding, measured) = rows[0]
    assert finding == "Learners on `paper` (1 seeds x 2 held-out, 2 episodes)"
    assert measured.startswith("best cs-ucb: ") and "x best classic" in measured
    command = "llmoffload reproduce --study beyond --seeds 1 --scenario paper --method cs-ucb"
    assert lines[0].startswith(f"`{command} --eval-episodes 2 --time-limit 0.5 --episodes 2`")
