"""Bad input to the learning entry points, through the installed command in a real process.

Each case must end in exit 2 and exactly one stderr line ``error: ...`` naming the
problem, with no traceback, and must leave its output path exactly as it was:
learner settings out of range, negative seeds, a failure probability of 1, run
directories that are not empty, links and FIFOs as outputs, damaged, foreign or
code-carrying checkpoints, and runs applied to instances of another shape.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from llmoffload.experiments.training import make_config, train
from llmoffload.model.instance import sample_instance
from llmoffload.model.scenario import Scenario, load_scenario, parse_scenario

PAPER = load_scenario("paper")


class Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def llmoffload(*args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "llmoffload", *(str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def state(path: Path) -> object:
    """What is at ``path``: nothing, a link (and what it points at), a FIFO, a file's
    bytes, or a directory's entries; equal before and after means untouched."""
    if path.is_symlink():
        return ("link", os.readlink(path), state(path.resolve()))
    if not path.exists():
        return None
    if path.is_fifo():
        return "fifo"
    if path.is_dir():
        return {p.name: state(p) for p in sorted(path.iterdir())}
    return path.read_bytes()


def assert_refused(
    result: subprocess.CompletedProcess[str], fragment: str, path: Path, before: object
) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert state(path) == before


# --- what the cases refuse, and what they run against ------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardening")


@pytest.fixture(scope="module")
def good_run(work: Path) -> Path:
    run = work / "good-run"
    train("ucb-coma", PAPER, 1, 0, run, make_config("ucb-coma", {}), progress=False, plot=False)
    return run


@pytest.fixture(scope="module")
def instance(work: Path) -> Path:
    path = work / "paper.json"
    path.write_text(sample_instance(PAPER, np.random.default_rng(0)).dumps())
    return path


def corrupt(name: str, good: Path, path: Path, marker: Path) -> None:
    """Write a bad ``checkpoint.pt`` of the kind ``name`` at ``path``."""
    data = (good / "checkpoint.pt").read_bytes()
    if name == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif name == "empty":
        path.write_bytes(b"")
    elif name == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 20)
    elif name == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif name == "pickle payload":
        torch.save({"format": "llmoffload-checkpoint/1", "x": Payload(marker)}, path)
    elif name == "raw pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:  # "damaged": our format, but a learner part of the wrong shape
        ckpt = torch.load(good / "checkpoint.pt", weights_only=True)
        ckpt["learner"]["counts"] = torch.zeros(3)
        torch.save(ckpt, path)


CORRUPTIONS = {
    "truncated": "not a readable checkpoint",
    "empty": "not a readable checkpoint",
    "garbage": "not a readable checkpoint",
    "foreign": "not a checkpoint of 'llmoffload train'",
    "pickle payload": "not a readable checkpoint",
    "raw pickle": "not a readable checkpoint",
    "damaged": "damaged (ValueError: 'counts'",
}
# evaluate meets every kind; schedule and run load runs the same way (training.load_run)
SOME_CORRUPTIONS = ["empty", "foreign", "pickle payload"]


@pytest.fixture
def bad_run(
    request: pytest.FixtureRequest, good_run: Path, tmp_path: Path
) -> Iterator[tuple[Path, str]]:
    """A copy of the good run with the checkpoint ``request.param`` names; after the test
    the payload's marker must not exist (it never ran)."""
    run, marker = tmp_path / "run", tmp_path / "PAYLOAD-RAN"
    run.mkdir()
    (run / "config.json").write_bytes((good_run / "config.json").read_bytes())
    corrupt(request.param, good_run, run / "checkpoint.pt", marker)
    yield run, f"{run / 'checkpoint.pt'}: {CORRUPTIONS[request.param]}"
    assert not marker.exists()


# --- train -------------------------------------------------------------------------------


def make_dir_with(*names: str) -> Callable[[Path], None]:
    def make(out: Path) -> None:
        out.mkdir()
        for name in names:
            (out / name).write_text("from an earlier run\n")

    return make


def make_link(out: Path) -> None:
    make_dir_with("episodes.csv")(out.with_name("elsewhere"))
    out.symlink_to(out.with_name("elsewhere"))


TRAIN_CASES = [
    *[
        ([*algo, "--set", setting], f"{setting}: must be {bound}", None)
        for algo, setting, bound in [
            ([], "lr=-1", "> 0"),
            ([], "lr=nan", "> 0"),
            ([], "hidden=-3", ">= 1"),
            ([], "hidden=0", ">= 1"),
            ([], "update_every=0", ">= 1"),
            ([], "target_every=0", ">= 1"),
            ([], "buffer_size=0", ">= 1"),
            ([], "batch_size=-5", ">= 1"),
            ([], "batch_size=0", ">= 1"),
            ([], "psi=5", "in [0, 1]"),
            ([], "eps_start=2", "in [0, 1]"),
            ([], "grad_clip=-1", "> 0"),
            (["--algo", "coma"], "actor_lr=0", "> 0"),
            (["--algo", "mappo"], "gae_lambda=1.5", "in [0, 1]"),
            (["--algo", "maddpg"], "temperature=0", "> 0"),
            (["--algo", "cs-ucb"], "delta=-1", ">= 0"),
        ]
    ],
    (["--seed", "-1"], "'--seed'", None),
    (["--failure-prob", "1.0"], "failure_prob=1: must be in [0, 1)", None),
    (["--failure-prob", "-0.5"], "failure_prob=-0.5: must be in [0, 1)", None),
    ([], "not empty", make_dir_with("evaluation.csv", "episodes.csv")),
    (["--force"], "holds files no run writes (notes.txt)", make_dir_with("notes.txt")),
    ([], "is a symbolic link", make_link),
    ([], "not a directory", os.mkfifo),
    (
        ["--algo", "gnn-sched", "--init", "none", "--set", "init=bc"],
        "--init none and --set init=bc disagree",
        None,
    ),
    (["--algo", "cs-ucb", "--init", "bc"], "--init: cs-ucb has no warm start", None),
]


@pytest.mark.parametrize(
    ("args", "fragment", "setup"), TRAIN_CASES, ids=[c[1] for c in TRAIN_CASES]
)
def test_train(
    tmp_path: Path, args: list[str], fragment: str, setup: Callable[[Path], None] | None
) -> None:
    out = tmp_path / "run"
    if setup:
        setup(out)
    before = state(out)
    result = llmoffload("train", *args, "--episodes", 1, "--out", out)
    assert_refused(result, fragment, out, before)


def test_force_clears_an_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    make_dir_with("evaluation.csv", "config.json")(out)
    result = llmoffload("train", "--algo", "random", "--episodes", 1, "--out", out, "--force")
    assert result.returncode == 0, result.stderr
    assert not (out / "evaluation.csv").exists()
    assert (out / "checkpoint.pt").is_file()


def test_reproduce_refuses_a_failure_prob_of_1_as_train_does(tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = llmoffload("reproduce", "--failure-prob", 1.0, "--out", out)
    assert_refused(result, "failure_prob=1: must be in [0, 1)", out, None)


# --- instance ----------------------------------------------------------------------------


def make_file_link(out: Path) -> None:
    out.with_name("target.json").write_text("kept\n")
    out.symlink_to(out.with_name("target.json"))


@pytest.mark.parametrize(
    ("args", "fragment", "setup"),
    [
        (["--seed", "-1"], "'--seed'", None),
        ([], "is a symbolic link", make_file_link),
        ([], "not a regular file", os.mkfifo),
    ],
    ids=["negative seed", "link", "fifo"],
)
def test_instance(
    tmp_path: Path, args: list[str], fragment: str, setup: Callable[[Path], None] | None
) -> None:
    out = tmp_path / "inst.json"
    if setup:
        setup(out)
    before = state(out)
    assert_refused(llmoffload("instance", *args, "--out", out), fragment, out, before)


# --- schedule ----------------------------------------------------------------------------


def five_servers() -> dict[str, object]:
    data = PAPER.model_dump(mode="json")
    data["servers"].insert(0, {**data["servers"][0], "name": "edge-text-2"})
    return data


@pytest.mark.parametrize(
    ("args", "fragment", "setup"),
    [
        (["--policy", "heft", "--seed", "-1"], "'--seed'", None),
        (["--policy", "heft"], "is a symbolic link", make_file_link),
        (["--policy", "heft"], "not a regular file", os.mkfifo),
    ],
    ids=["negative seed", "link", "fifo"],
)
def test_schedule(
    tmp_path: Path,
    instance: Path,
    args: list[str],
    fragment: str,
    setup: Callable[[Path], None] | None,
) -> None:
    gantt = tmp_path / "gantt.png"
    if setup:
        setup(gantt)
    before = state(gantt)
    result = llmoffload("schedule", instance, *args, "--gantt", gantt)
    assert_refused(result, fragment, gantt, before)


@pytest.mark.parametrize("bad_run", SOME_CORRUPTIONS, indirect=True)
def test_schedule_with_a_bad_run(tmp_path: Path, instance: Path, bad_run: tuple[Path, str]) -> None:
    run, fragment = bad_run
    gantt = tmp_path / "gantt.png"
    result = llmoffload("schedule", instance, "--policy", run, "--gantt", gantt)
    assert_refused(result, fragment, gantt, None)


@pytest.mark.parametrize(
    ("scenario", "tasks", "fragment"),
    [
        (parse_scenario(five_servers(), "five"), None, "this instance has 5 servers"),
        (PAPER, 2, "this instance has 2 tasks"),
    ],
    ids=["servers", "tasks"],
)
def test_schedule_with_a_run_of_another_shape(
    tmp_path: Path, good_run: Path, scenario: Scenario, tasks: int | None, fragment: str
) -> None:
    path = tmp_path / "inst.json"
    path.write_text(sample_instance(scenario, np.random.default_rng(0), tasks).dumps())
    gantt = tmp_path / "gantt.png"
    result = llmoffload("schedule", path, "--policy", good_run, "--gantt", gantt)
    assert_refused(result, "the run was trained for 5 tasks, 4 servers", gantt, None)
    assert fragment in result.stderr


# --- evaluate ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad_run", list(CORRUPTIONS), indirect=True)
def test_evaluate(bad_run: tuple[Path, str]) -> None:
    run, fragment = bad_run
    before = state(run)
    assert_refused(llmoffload("evaluate", run, "--episodes", 1), fragment, run, before)


def test_evaluate_says_what_its_defaults_cost_before_it_starts(
    tmp_path: Path, good_run: Path
) -> None:
    """20 held-out instances and Optimal at 2 s by default (the study's), and a line saying
    how long Optimal alone may take, before the bar."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    result = llmoffload("evaluate", run, "--episodes", 3, "--time-limit", 0.5)
    assert result.returncode == 0, result.stderr
    assert "3 held-out instances" in result.stderr and "up to 0.5 s" in result.stderr
    assert "Optimal alone up to 2 s" in result.stderr  # 3 x 0.5 s
    shown = llmoffload("evaluate", "--help").stdout
    assert re.search(r"--episodes.*default: 20", shown) and re.search(r"default: 2\.0", shown)


def test_evaluate_checks_where_it_writes_before_any_work(tmp_path: Path, good_run: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / "evaluation.csv").mkdir()
    before = state(run)
    result = llmoffload("evaluate", run, "--episodes", 50, "--time-limit", 60)  # 50 min of it
    assert_refused(result, "evaluation.csv: exists and is not a regular file", run, before)


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path: Path, good_run: Path) -> None:
    run, marker = tmp_path / "run", tmp_path / "PAYLOAD-RAN"
    run.mkdir()
    corrupt("pickle payload", good_run, run / "checkpoint.pt", marker)
    before = state(run)
    result = llmoffload("evaluate", run, "--episodes", 1)
    assert_refused(result, "which are never unpickled", run, before)
    assert not marker.exists()
    torch.load(run / "checkpoint.pt", weights_only=False)  # the old loading: it runs
    assert marker.exists()


# --- run (the runtime, planning with a trained run) --------------------------------------


@pytest.mark.parametrize("bad_run", SOME_CORRUPTIONS, indirect=True)
def test_run(tmp_path: Path, bad_run: tuple[Path, str]) -> None:
    """Refused while planning, before any endpoint (none listens here) is called."""
    run, fragment = bad_run
    endpoint = {"base_url": "http://127.0.0.1:9", "model": "m"}
    deployment = tmp_path / "deployment.yaml"
    endpoints = {s.name: endpoint for s in PAPER.servers}
    deployment.write_text(yaml.safe_dump({"scenario": "paper", "endpoints": endpoints}))
    gantt = tmp_path / "gantt.png"
    args = ("--deployment", deployment, "--workflow", "vqa", "--text", "Is it open?")
    result = llmoffload("run", *args, "--policy", run, "--gantt", gantt)
    assert_refused(result, fragment, gantt, None)
