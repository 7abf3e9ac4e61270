"""Bad input at every entry point of the installed command: exit 2, one line naming the
problem on stderr, no traceback, nothing written. And: SIGTERM ends a sweep with its
workers; Optimal gives the same bytes for the same instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

LLMOFFLOAD = Path(sys.executable).with_name("llmoffload")  # the installed script
PAPER = resources.files("llmoffload.model.scenarios").joinpath("paper.yaml").read_text()


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    command = [str(LLMOFFLOAD), *(str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and fragment in result.stderr, result.stderr


# --- scenarios (scenario validate, instance, reproduce) --------------------------------------

SCENARIOS = {  # file text -> what the one line must name
    "duplicate key": (
        f"{PAPER}\ngamma: 0.7\n",  # the first gamma is near the top
        f"not valid YAML: duplicate key 'gamma' (line {PAPER.count(chr(10)) + 2})",
    ),
    "bool as a number": (
        PAPER.replace("ghz: 2.0,", "ghz: true,"),
        "servers.0.ghz: Input should be a valid number",
    ),
    "string as a number": (
        PAPER.replace("bandwidth_mhz: 6.0", 'bandwidth_mhz: "6"'),
        "network.bandwidth_mhz: Input should be a valid number",
    ),
    "bool as a count": (PAPER.replace("tasks: 5 ", "tasks: true "), "workload.tasks"),
    "a billion tasks": (
        PAPER.replace("tasks: 5 ", "tasks: 1000000000 "),
        "workload.tasks: Input should be less than or equal to 10000",
    ),
}


@pytest.fixture(params=list(SCENARIOS))
def bad_scenario(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    text, fragment = SCENARIOS[request.param]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path, fragment


def test_scenario_validate(bad_scenario: tuple[Path, str]) -> None:
    path, fragment = bad_scenario
    assert_refused(cli("scenario", "validate", path), f"{path}: {fragment}")


def test_instance(bad_scenario: tuple[Path, str], tmp_path: Path) -> None:
    path, fragment = bad_scenario
    out = tmp_path / "i.json"
    assert_refused(cli("instance", "--scenario", path, "--out", out), fragment)
    assert not out.exists()


def test_instance_with_a_billion_tasks(tmp_path: Path) -> None:
    out = tmp_path / "i.json"
    result = cli("instance", "--tasks", 10**9, "--out", out)
    assert_refused(result, "tasks per instance must be from 1 to 10000, not 1000000000")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["calibrate", "--deployment", "x", "--out", "c", "--rounds", 10**20], "--rounds"),
        (["train", "--episodes", 10**7, "--out", "run"], "--episodes"),
        (["evaluate", "run", "--time-limit", 1e9], "--time-limit"),
        (["reproduce", "--seeds", 10**6, "--out", "sweep"], "--seeds"),
        (["serve", "--deployment", "x.yaml", "--capacity", 10**9], "--capacity"),
        (["schedule", "i.json", "--time-limit", 1e12], "--time-limit"),
    ],
    ids=["rounds", "episodes", "time-limit", "seeds", "capacity", "schedule time-limit"],
)
def test_every_count_has_an_upper_end(args: list[object], option: str, tmp_path: Path) -> None:
    """``cli/limits.py``: past its upper end an option is refused in one line, at once,
    before anything is read or written."""
    result = subprocess.run(
        [str(LLMOFFLOAD), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert_refused(result, f"'{option}'")
    assert "less than or equal to" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- instances (schedule) ---------------------------------------------------------------------


def set_in(path: list[Any], value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *inner, last = path
        for key in inner:
            data = data[key]
        data[last] = value

    return mutate


def drop_exit(data: dict[str, Any]) -> None:
    data["tasks"][0]["subtasks"].pop()


# Task 0 of paper seed 0 is audio-text: analyse (text), listen (audio, after 0),
# read-log (text, after 0), fuse (audio+text, after 1 and 2), aggregate (text, after 3).
SUB = ["tasks", 0, "subtasks", 1]
INSTANCES = {
    "unknown workflow": (
        set_in(["tasks", 0, "workflow"], "nope"),
        "task 0 names workflow 'nope', which its scenario lacks",
    ),
    "modality differs": (
        set_in([*SUB, "modality"], "text"),
        "task 0 (workflow 'audio-text'): subtask 1 'listen' has modality 'text' where the "
        "workflow has 'audio'",
    ),
    "predecessors differ": (
        set_in([*SUB, "preds"], []),
        "subtask 1 'listen' has predecessors [] where the workflow has [0]",
    ),
    "a node missing": (drop_exit, "4 subtasks, but the workflow has 5 nodes"),
    "name differs": (set_in([*SUB, "name"], "hear"), "subtask 1 is 'hear' where"),
    "bool as a number": (set_in([*SUB, "input_bits"], True), "input_bits: Input should be a"),
}


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("instance") / "paper0.json"
    assert cli("instance", "--seed", 0, "--out", out).returncode == 0
    return out


@pytest.mark.parametrize("case", list(INSTANCES))
def test_schedule(case: str, instance: Path, tmp_path: Path) -> None:
    mutate, fragment = INSTANCES[case]
    data = json.loads(instance.read_text())
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    gantt = tmp_path / "g.png"
    assert_refused(cli("schedule", path, "--policy", "heft", "--gantt", gantt), fragment)
    assert not gantt.exists()


# --- reproduce --------------------------------------------------------------------------------

REPRODUCE = {
    "Ray out of reach": (["--ray", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    "Ray address without a port": (["--ray", "head"], "--ray head: expected host:port"),
    "Ray port out of range": (["--ray", "head:99999"], "--ray head:99999: expected host:port"),
    "bad scenario": (["--scenario", "SCENARIO"], "duplicate key 'gamma'"),
}


@pytest.mark.parametrize("case", list(REPRODUCE))
def test_reproduce(case: str, tmp_path: Path) -> None:
    args, fragment = REPRODUCE[case]
    scenario = tmp_path / "dup.yaml"
    scenario.write_text(SCENARIOS["duplicate key"][0])
    args = [str(scenario) if a == "SCENARIO" else a for a in args]
    out = tmp_path / "out"
    assert_refused(cli("reproduce", "--quick", "--method", "random", "--out", out, *args), fragment)
    assert not out.exists()


def foreign_dir(out: Path) -> None:
    out.mkdir()
    (out / "thesis.tex").write_text("mine")


def link_to_dir(out: Path) -> None:
    (out.parent / "elsewhere").mkdir()
    out.symlink_to(out.parent / "elsewhere")


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (foreign_dir, "holds files no sweep wrote (thesis.tex)"),
        (link_to_dir, "is a symbolic link"),
        (lambda out: out.write_text("x"), "exists and is not a directory"),
    ],
    ids=["foreign files", "link", "file"],
)
def test_reproduce_out_follows_trains_rule(
    setup: Callable[[Path], None], fragment: str, tmp_path: Path
) -> None:
    """Before any run or bar: --out may be new, empty, or a sweep's own (it resumes)."""
    out = tmp_path / "out"
    setup(out)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert_refused(cli("reproduce", "--quick", "--method", "random", "--out", out), fragment)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# --- a sweep stopped by SIGTERM ---------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (Linux's /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:  # ended while we looked
            continue
        if int(ppid) == pid and state != "Z":
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_sigterm_ends_the_sweep_and_its_workers(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["--quick", "--seeds", 1, "--episodes", 5000, "--eval-episodes", 1, "--workers", 2]
    command = [str(LLMOFFLOAD), "reproduce", "--method", "random", "--out", str(out), *args]
    proc = subprocess.Popen(
        [str(a) for a in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    workers: list[int] = []  # and multiprocessing's resource tracker
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("runs/*")):  # a worker is training
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no run started"
            time.sleep(0.1)
        workers = children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)  # an orphan would hold stderr open
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in workers if alive(pid)]
    finally:  # whatever failed, leave no process of this test behind
        for pid in [proc.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert survivors == []
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    *bar, line = stderr.splitlines()  # the progress bar's states ('\r'-separated), one line
    assert all(state.startswith("sweep: ") for state in bar if state), stderr
    assert line.startswith("error: interrupted: 0 of ") and "the same command resumes" in line


# --- the same instance, the same schedule -----------------------------------------------------


def test_optimal_gives_the_same_bytes_twice(tmp_path: Path) -> None:
    """Paper seed 1: with two CP-SAT workers, tied subtasks once came back swapped."""
    inst = tmp_path / "i.json"
    assert cli("instance", "--seed", 1, "--out", inst).returncode == 0
    runs = [cli("schedule", inst, "--policy", "optimal", "--json", "--time-limit", 60)]
    runs.append(cli("schedule", inst, "--policy", "optimal", "--json", "--time-limit", 60))
    assert runs[0].returncode == 0, runs[0].stderr
    assert json.loads(runs[0].stdout)["proven"]
    assert runs[0].stdout == runs[1].stdout
