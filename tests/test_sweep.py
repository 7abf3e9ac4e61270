"""The reproduction sweep: every file, both protocols, the cache, resuming after a kill,
failures, Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import scenario_with

from llmoffload.experiments.claims import Verdict, check_claims
from llmoffload.experiments.report import Record, normalise, ratio_to
from llmoffload.experiments.stats import ci95, trend
from llmoffload.experiments.sweep import Grid, execute, plan
from llmoffload.experiments.training import EVAL, episode_seed, evaluate_scheduler
from llmoffload.marl.env import OffloadEnv
from llmoffload.model.execution import evaluate
from llmoffload.model.instance import sample_instance
from llmoffload.model.scenario import load_scenario
from llmoffload.runtime.local import free_port
from llmoffload.schedulers.heuristics import heft

TINY = [
    "--seeds", "2", "--episodes", "3", "--eval-episodes", "2", "--time-limit", "60",
    "--method", "ucb-coma", "--method", "random", "--bandwidth", "5", "--bandwidth", "6",
    "--deadline", "3", "--failure-prob", "0", "--failure-prob", "0.2",
]  # fmt: skip
# seeds x (protocols x (learners x W + one failure run) + references x W)
RUNS = 2 * (2 * (2 * 2 + 1) + 3 * 2)
MASKED_RUNS = 2 * (2 * 2 + 1 + 3 * 2)  # --protocol masked alone: the same, one protocol
FILES = [
    *(f"fig{k}_{name}{tag}.{ext}" for k, name in [(4, "reward_curves"), (5, "bandwidth_reward"),
      (6, "bandwidth_weighted_sum"), (7, "deadline_reward"), (8, "deadline_weighted_sum"),
      (9, "failures")] for tag in ("", "_masked") for ext in ("png", "csv")),
    "REPORT.md",
]  # fmt: skip


def reproduce(out: Path, *extra: str) -> subprocess.Popen:
    """The installed command line, in its own process group so a test can kill it whole."""
    args = [sys.executable, "-m", "llmoffload", "reproduce", "--out", str(out), *TINY, *extra]
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    return stdout


# the report's columns that time something, so move with the machine's load: planning
# seconds, and the search given a planning time
TIMED = ("x search, same time", "x search, 10x time", "plan s")


def untimed(report: str) -> str:
    """The report with the timed columns of its tables left out."""
    lines, drop = [], set()
    for line in report.splitlines():
        if not line.startswith("|"):
            lines.append(line)
            continue
        cells = line.strip("|").split("|")
        if line.startswith("| method |"):
            drop = {k for k, c in enumerate(cells) if c.strip() in TIMED}
        lines.append("|".join(c for k, c in enumerate(cells) if k not in drop))
    return "\n".join(lines)


def numbers(out: Path) -> dict[str, str]:
    """Everything a sweep concludes: the figures' CSVs and the report, less what it times."""
    return {name: untimed((out / name).read_text()) for name in FILES if not name.endswith(".png")}


def results(out: Path) -> dict[Path, int]:
    """Each cached result and when it was written (nanoseconds)."""
    return {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    assert f"{RUNS} runs: {RUNS} ran, 0 cached, 0 failed" in finish(reproduce(out))
    return out


def test_tiny_sweep_writes_every_file_and_a_second_run_reruns_nothing(swept: Path) -> None:
    for name in FILES:
        assert (swept / name).stat().st_size > 0, name
    report = (swept / "REPORT.md").read_text()
    for protocol, tag in [("paper", ""), ("masked", "_masked")]:
        part = report.split(f"## The {protocol} protocol\n")[1].split("\n## ")[0]
        assert f"### The paper's claims ({protocol} protocol)" in part
        assert "| UCB-COMA is best on every figure |" in part
        missing = "coma, maddpg, mappo, cs-ucb not in the sweep"
        assert f"| UCB-COMA is best on every figure | **not tested** |  | {missing} |" in part
        assert f"| COMA is second on reward | **not tested** |  | {missing} |" in part
        assert f"### Fig. 4: training reward at the base setting ({protocol} protocol)" in part
        assert f"![fig9_failures{tag}](fig9_failures{tag}.png)" in part
        assert all(f"| {m} |" in part for m in ("heft", "best-classic", "optimal"))
    assert "Optimal is proven optimal on 8 of 8 held-out instances" in report
    before = results(swept)
    assert len(before) == RUNS
    assert f"{RUNS} runs: 0 ran, {RUNS} cached" in finish(reproduce(swept))
    assert results(swept) == before  # not one result rewritten


def test_a_changed_setting_reruns_only_the_runs_it_touches(swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "grown"
    shutil.copytree(swept, out)
    before = results(out)
    stdout = finish(reproduce(out, "--bandwidth", "5.5"))
    new = 2 * (2 * 2 + 3)  # seeds x (protocols x learners + references) at the new bandwidth
    assert f"{RUNS + new} runs: {new} ran, {RUNS} cached" in stdout
    after = results(out)
    assert {p: after[p] for p in before} == before


def test_one_protocol_plans_only_its_runs_and_shares_the_cache(swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "masked"
    shutil.copytree(swept, out)
    (out / "REPORT.md").unlink()
    stdout = finish(reproduce(out, "--protocol", "masked"))
    assert f"{MASKED_RUNS} runs: 0 ran, {MASKED_RUNS} cached" in stdout
    report = (out / "REPORT.md").read_text()
    assert "## The masked protocol" in report and "(paper protocol)" not in report


def test_the_plan_runs_each_learner_per_protocol_and_the_rest_once() -> None:
    """CS-UCB masks under both protocols and the references do not learn: one run each."""
    grid = Grid(methods=("ucb-coma", "cs-ucb", "random"), bandwidths_mhz=(6.0,),
                deadlines_s=(3.0,), failure_probs=(0.0,), seeds=(0,))  # fmt: skip
    both = plan(grid)
    assert Counter((s.method, s.protocol) for s in both) == {
        **{(m, p): 1 for m in ("ucb-coma", "random") for p in ("paper", "masked")},
        **{(m, "any"): 1 for m in ("cs-ucb", "heft", "best-classic", "optimal")},
    }
    masked = plan(replace(grid, protocols=("masked",)))
    assert {s.protocol for s in masked} == {"masked", "any"}
    assert {s.key for s in masked} < {s.key for s in both}


def test_a_killed_sweep_resumes_to_identical_numbers(swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = reproduce(out, "--workers", "1")
    while len(results(out)) < 3:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(results(out))
    assert 3 <= done < RUNS and not (out / "REPORT.md").exists()
    assert f"{RUNS - done} ran, {done} cached" in finish(reproduce(out))
    assert numbers(out) == numbers(swept)


def test_a_failing_run_is_reported_and_the_others_are_kept(tmp_path: Path) -> None:
    grid = Grid(methods=("random",), bandwidths_mhz=(6.0,), deadlines_s=(3.0,),
                failure_probs=(0.0,), failure_method="random", seeds=(0,), episodes=2,
                eval_episodes=1)  # fmt: skip
    good = [s for s in plan(grid) if s.method == "random"]
    bad = replace(good[0], method="no-such-method")
    outcome = execute([bad, *good], tmp_path, workers=1, progress=False)
    assert list(outcome.failures) == [bad.key]
    assert "unknown algorithm 'no-such-method'" in outcome.failures[bad.key]
    assert set(outcome.results) == {s.key for s in good}


@pytest.fixture(scope="module")
def ray_head() -> str:
    port = free_port()
    ray = [Path(sys.executable).with_name("ray")]
    start = [*ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--disable-usage-stats",
             "--include-dashboard=false"]  # fmt: skip
    subprocess.run(start, check=True, capture_output=True, timeout=180)
    yield f"127.0.0.1:{port}"
    subprocess.run([*ray, "stop", "--force"], capture_output=True, timeout=120)


def test_ray_tasks_give_the_numbers_of_the_local_pool(
    swept: Path, ray_head: str, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    assert f"{RUNS} ran, 0 cached" in finish(reproduce(out, "--ray", ray_head))
    assert numbers(out) == numbers(swept)


def test_an_unreachable_ray_cluster_is_one_clear_error(tmp_path: Path) -> None:
    for address, message in [
        (f"127.0.0.1:{free_port()}", "error: cannot reach the Ray cluster at 127.0.0.1:"),
        ("nohost", "error: --ray nohost: expected host:port of the Ray head"),
    ]:
        proc = reproduce(tmp_path / "x", "--ray", address)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2 and stderr.startswith(message), stderr


def test_bad_grids_are_one_clear_error(tmp_path: Path) -> None:
    for extra, message in [
        (["--method", "dqn"], "error: unknown method 'dqn'"),
        (["--failure-prob", "1.5"], "error: failure_prob=1.5: must be in [0, 1)"),
        (["--bandwidth", "-1"], "error: W=-1 MHz"),
        (["--protocol", "fair"], "error: unknown protocol 'fair' (choose from paper, masked)"),
    ]:
        proc = reproduce(tmp_path / "bad", *extra)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2 and stderr.startswith(message), stderr
        assert stderr.count("\n") == 1, stderr
    assert not (tmp_path / "bad" / "REPORT.md").exists()


# -- the numbers behind the figures ---------------------------------------------------------


def test_ci95_is_students_t_interval_by_hand() -> None:
    mean, half = ci95([1.0, 2.0, 3.0])  # sd 1, n 3, t(0.975, 2) = 4.302653
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert ci95([5.0])[1] == 0.0
    assert np.isnan(ci95([1.0, np.nan])[0])


def test_weighted_sums_are_scaled_onto_the_papers_range() -> None:
    series = {
        "a": (np.array([2.0, 4.0]), np.array([0.2, 0.0])),
        "b": (np.array([3.0, np.nan]), np.zeros(2)),
    }
    scaled = normalise(series)
    np.testing.assert_allclose(scaled["a"][0], [0.1, 1.0])
    np.testing.assert_allclose(scaled["a"][1], [0.2 * 0.9 / 2, 0.0])
    assert scaled["b"][0][0] == pytest.approx(0.55) and np.isnan(scaled["b"][0][1])


def test_ratio_to_optimal_pairs_the_same_instances() -> None:
    def run(method: str, seed: int, objectives: tuple[float, ...]) -> Record:
        return Record(method, 6.0, 3.0, 0.0, seed, 0.0, (), objectives)

    ratio = ratio_to([run("optimal", 0, (1.0, 2.0)), run("optimal", 1, (4.0, 4.0))])
    assert ratio(run("coma", 0, (1.5, 2.0))) == pytest.approx((1.5 / 1 + 2 / 2) / 2)
    assert ratio(run("coma", 1, (5.0, 4.0))) == pytest.approx((5 / 4 + 1) / 2)
    assert np.isnan(ratio(run("coma", 2, (1.0, 1.0))))  # no Optimal for that seed


def test_claims_are_judged_at_every_point() -> None:
    methods = ["ucb-coma", "coma", "cs-ucb", "maddpg", "mappo", "random"]

    def series(*rows: list[float]) -> dict:
        return {
            m: (np.array(v, float), np.zeros(len(v))) for m, v in zip(methods, rows, strict=True)
        }

    rewards = [("Fig. 5", ["W=5", "W=6"], series([9, 9], [8, 7], [7, 8], [5, 5], [4, 4], [1, 1]))]
    costs = [
        ("Fig. 6", ["W=5", "W=6"], series([1, 1], [2, 2], [3, 3], [2, 2], [2, 2], [np.nan] * 2))
    ]
    ucb, coma, cs, low = check_claims(methods, rewards, costs, random_trend=(0.5, 1.0))
    assert ucb.verdict == "holds" and cs.verdict == "holds" and low.verdict == "holds"
    assert coma == Verdict(
        "COMA is second on reward",
        "does not hold",
        "fails at 1 of 2 points, e.g. Fig. 5 W=6, best first: ucb-coma 9, cs-ucb 8, coma 7, "
        "maddpg 5, mappo 4, random 1",
        among="holds",  # without CS-UCB, COMA is second at both points
        broken_by=("cs-ucb",),
    )
    assert coma.parts == "holds among the MARL learners; would hold without cs-ucb"
    alone = {"cs-ucb": (np.array([3.0]), np.zeros(1))}
    one = check_claims(["cs-ucb"], [], [("Fig. 6", ["W=5"], alone)], random_trend=None)
    assert {v.verdict for v in one} == {"not tested"}  # CS-UCB alone is not "the highest"
    low = check_claims(methods, rewards, costs, random_trend=(3.0, 1.0))[3]
    assert low.verdict == "does not hold" and low.evidence.endswith("change over training: 3 ± 1")


def test_a_verdict_says_what_part_holds_and_what_breaks_it_with_intervals() -> None:
    """CS-UCB above UCB-COMA at one point of two: the claim holds among the MARL learners and
    CS-UCB alone breaks it; Random above MAPPO as well: then "Random is lowest" fails even
    among the MARL learners, and only MAPPO's absence would mend it."""
    methods = ["ucb-coma", "coma", "cs-ucb", "maddpg", "mappo", "random"]

    def series(*rows: tuple[list[float], list[float]]) -> dict:
        return {
            m: (np.array(v, float), np.array(h, float))
            for m, (v, h) in zip(methods, rows, strict=True)
        }

    rewards = series(
        ([9, 9], [1, 0.5]), ([8, 8], [0, 0]), ([7, 10], [0.25, 2]), ([5, 5], [0, 0]),
        ([4, 0], [0, 0]), ([1, 1], [0, 0]),
    )  # fmt: skip
    costs = series(*[([1.0 + k], [0.0]) for k in range(5)], ([np.nan], [0.0]))
    ucb, coma, _, low = check_claims(
        methods, [("Fig. 5", ["W=5", "W=6"], rewards)], [("Fig. 6", ["W=5"], costs)], None
    )
    assert ucb.verdict == "does not hold" and ucb.among == "holds"
    assert ucb.broken_by == ("cs-ucb",)
    assert ucb.evidence.startswith(
        "reward figures: fails at 1 of 2 points, e.g. Fig. 5 W=6, best first: cs-ucb 10 ± 2, "
        "ucb-coma 9 ± 0.5, coma 8, maddpg 5, random 1, mappo 0; weighted-sum figures: at all "
        "1 points, e.g. Fig. 6 W=5, best first: ucb-coma 1, coma 2"
    )
    assert coma.verdict == "does not hold" and coma.broken_by == ("cs-ucb",)
    assert (low.verdict, low.among, low.broken_by) == ("does not hold", "does not hold", ("mappo",))
    assert low.parts == "does not hold among the MARL learners; would hold without mappo"
    alone = check_claims(methods, [("Fig. 5", ["W=5"], rewards)], [], None)[0]
    assert (alone.verdict, alone.parts) == ("holds", "")
    want = "reward figures: at all 1 points, e.g. Fig. 5 W=5, best first: ucb-coma 9 ± 1, coma 8"
    assert alone.evidence.startswith(want)


def test_trend_is_the_least_squares_change_with_its_t_interval() -> None:
    # y = 1, 3, 1, 3 at x = 0..3: slope 2 / 5, residual SSE 3.2, Sxx 5, t(0.975, 2) = 4.302653
    change, half = trend(np.array([1.0, 3.0, 1.0, 3.0]))
    assert change == pytest.approx(0.4 * 4)
    assert half == pytest.approx(4.302653 * np.sqrt(3.2 / 2 / 5) * 4, rel=1e-6)
    change, half = trend(np.array([[0.0, 2.0, 4.0], [0.0, 2.0, 4.0]]))  # two seeds, slope 2
    assert change == pytest.approx(6.0) and half == pytest.approx(0.0, abs=1e-9)


def test_reference_reward_is_what_the_environment_pays_for_the_same_schedule() -> None:
    # With one task the environment executes dispatches exactly in the order given.
    sc = scenario_with(1)
    env = OffloadEnv(sc)
    for e, row in enumerate(evaluate_scheduler("heft", sc, seed=3, episodes=4)):
        seed = episode_seed(3, EVAL, e)
        inst = sample_instance(sc, np.random.default_rng(seed))
        order = evaluate(inst, heft(inst, np.random.default_rng(seed))).order
        env.reset(seed=0, options={"instance": inst})
        for d in order:
            env.step({env.possible_agents[0]: d.subtask * env.layout.servers + d.server})
        assert env.summary()["violations_precedence"] == 0
        assert row["reward"] == pytest.approx(env.summary()["reward"], rel=1e-12)
        assert row["objective"] == pytest.approx(env.summary()["objective"], rel=1e-12)


def test_a_run_draws_the_instances_train_draws() -> None:
    """The sweep keeps the scenario's own order (a workflow's node order decides the draws):
    at the paper's W and T_max, a run's seed gives the instances ``train`` gives."""
    grid = Grid(methods=("random",), failure_method="random", seeds=(0,), protocols=("paper",))
    spec = next(s for s in plan(grid) if (s.bandwidth_mhz, s.deadline_s) == (6.0, 3.0))
    for seed in range(5):
        swept = sample_instance(spec.resolved_scenario(), np.random.default_rng(seed))
        direct = sample_instance(load_scenario("paper"), np.random.default_rng(seed))
        assert swept.tasks == direct.tasks


def test_a_two_part_claim_says_which_part_holds_among_the_marl_learners() -> None:
    """UCB-COMA first on reward (CS-UCB aside) but COMA lower on the weighted sum: among the
    MARL learners the reward part holds and the weighted-sum part does not, and both are
    said; no one method's absence mends both parts."""
    methods = ["ucb-coma", "coma", "cs-ucb", "maddpg", "mappo", "random"]

    def series(*values: float) -> dict:
        return {m: (np.array([v]), np.zeros(1)) for m, v in zip(methods, values, strict=True)}

    rewards, costs = series(9, 8, 10, 5, 4, 1), series(2, 1, 3, 4, 5, 6)
    ucb = check_claims(
        methods, [("Fig. 4", ["base"], rewards)], [("Fig. 6", ["W=6"], costs)], None
    )[0]
    assert ucb.verdict == "does not hold"
    assert ucb.among == "holds on the reward figures, does not hold on the weighted-sum figures"
    assert ucb.parts == (
        "among the MARL learners: holds on the reward figures, does not hold on the "
        "weighted-sum figures; no one method's absence would mend it"
    )
