"""The lean core: without the learn extra (no PyTorch, PettingZoo, Gymnasium) the model,
the classic schedulers, Optimal and the command line work, and a command that needs the
learners says so in one line.

Each command runs in a fresh interpreter whose imports of the learn extra's modules fail
as they would on a machine where ``pip install llmoffload`` put none of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmoffload.model.execution import evaluate
from llmoffload.model.instance import load_instance
from llmoffload.schedulers.heuristics import heft
from llmoffload.schedulers.optimal import solve

# what `pip install llmoffload` does not install and `[learn]` does (pyproject.toml)
ABSENT = ("torch", "pettingzoo", "gymnasium", "tqdm", "filelock")
BLOCK = f"""
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""
CLI = """
sys.argv[0] = "llmoffload"
from llmoffload.cli.app import main
main()
"""
LEARN = (
    "needs the learners: pip install 'llmoffload[learn]' "
    "(PyTorch CPU: pip install torch==2.13.0 first)"
)


def lean(*args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", BLOCK + CLI, *(str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    return line


@pytest.fixture(scope="module")
def instance_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lean") / "i.json"
    made = lean("instance", "--scenario", "paper", "--seed", 4, "--tasks", 3, "--out", out)
    assert made.returncode == 0, made.stderr
    return out


def test_the_blocker_blocks() -> None:
    """The stand-in for a lean machine really refuses the learners' modules."""
    command = [sys.executable, "-c", BLOCK + "import torch"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert "ModuleNotFoundError: No module named 'torch'" in result.stderr


def test_the_search_schedules_without_the_learners(instance_file: Path) -> None:
    result = lean("schedule", instance_file, "--policy", "search", "--budget", 300, "--json")
    assert result.returncode == 0, result.stderr
    assert 0 < json.loads(result.stdout)["evaluations"] <= 300


def test_optimal_schedules_without_the_learners(instance_file: Path) -> None:
    result = lean("schedule", instance_file, "--policy", "optimal", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    solution = solve(load_instance(instance_file), time_limit_s=10.0)  # in this process
    assert data["proven"] and solution.proven
    assert data["objective"] == pytest.approx(solution.schedule.objective, abs=1e-9)


def test_heft_draws_its_gantt_without_the_learners(instance_file: Path, tmp_path: Path) -> None:
    gantt = tmp_path / "heft.png"
    result = lean("schedule", instance_file, "--policy", "heft", "--seed", 1, "--gantt", gantt)
    assert result.returncode == 0, result.stderr
    assert gantt.read_bytes().startswith(b"\x89PNG")
    inst = load_instance(instance_file)
    expected = evaluate(inst, heft(inst, np.random.default_rng(1))).objective  # in this process
    assert f"objective {expected:.6f} (sum of" in result.stdout


@pytest.mark.parametrize(
    ("args", "who"),
    [
        (("train", "--out", "{tmp}/run"), "train"),
        (("evaluate", "{tmp}"), "evaluate"),
        (("reproduce", "--quick", "--out", "{tmp}/sweep"), "reproduce"),  # by the app's net
        (("schedule", "{instance}", "--policy", "{tmp}"), "the trained run {tmp}"),
    ],
)
def test_a_command_that_needs_the_learners_says_so_in_one_line(
    args: tuple[str, ...], who: str, instance_file: Path, tmp_path: Path
) -> None:
    fill = {"tmp": tmp_path, "instance": instance_file}
    line = one_line(lean(*(a.format(**fill) for a in args)))
    assert line == f"error: {who.format(**fill)} {LEARN}"
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "sweep").exists()


def test_train_help_points_to_the_extra() -> None:
    result = lean("train", "--help")
    assert result.returncode == 0, result.stderr
    assert "pip install 'llmoffload[learn]'" in " ".join(result.stdout.split())
