"""Results keyed by the code they import: the digest, a run's key, and a cache of other code
refused by name."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from llmoffload.experiments import sweep
from llmoffload.experiments.provenance import changed, code_digest
from llmoffload.experiments.sweep import Grid, plan, result_path, run_code

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "llmoffload"

A = '''"""Module a."""
from dataclasses import dataclass


@dataclass
class Point:
    x: int


def double(value: int) -> int:
    """Twice the value."""
    from llmoffload.b import one  # imported inside a function, as the CLI does

    return 2 * value + one()
'''
B = """from . import c


def one():
    return c.ONE
"""


def tree(root: Path, a: str = A, b: str = B) -> Path:
    """A package ``llmoffload`` of four modules under ``root``: a imports b (in a function),
    b imports c (relatively), d is imported by none."""
    package = root / "llmoffload"
    package.mkdir(parents=True)
    files = {"__init__.py": '"""The package."""\n', "a.py": a, "b.py": b, "c.py": "ONE = 1\n"}
    for name, text in (files | {"d.py": "TWO = 2\n"}).items():
        (package / name).write_text(text)
    return root


def test_the_digest_follows_imports_and_ignores_what_does_not_run(tmp_path: Path) -> None:
    made = code_digest(["llmoffload.a"], tree(tmp_path / "made"))
    assert sorted(made.modules) == ["llmoffload", "llmoffload.a", "llmoffload.b", "llmoffload.c"]
    assert len(made.digest) == 12 and all(len(d) == 12 for d in made.modules.values())
    same = A.replace('"""Twice the value."""', '"""Two times."""')  # a docstring
    same = same.replace("value: int) -> int:", "value):  # untyped now")  # hints, a comment
    same = same.replace("2 * value + one()", "2*value+one( )")  # formatting
    again = code_digest(["llmoffload.a"], tree(tmp_path / "same", a=same))
    assert again == made
    for k, edit in enumerate(
        [A.replace("2 * value", "3 * value"), A.replace("x: int", "x: float")]  # code, field
    ):
        other = code_digest(["llmoffload.a"], tree(tmp_path / f"other{k}", a=edit))
        assert other.digest != made.digest
        assert changed(made.modules, other.modules) == ["a"]
    b = B.replace("c.ONE", "c.ONE + 0")
    assert changed(made.modules, code_digest(["llmoffload.a"], tree(tmp_path / "b", b=b)).modules)
    assert changed(made.modules, {**made.modules, "llmoffload.d": "0" * 12}) == ["d"]  # added


def copy_package(root: Path) -> Path:
    shutil.copytree(PACKAGE, root / "llmoffload", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_runs_key_moves_with_its_own_algorithm_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made, edited = copy_package(tmp_path / "made"), copy_package(tmp_path / "edited")
    gnn = edited / "llmoffload" / "marl" / "algorithms" / "gnn_sched.py"
    gnn.write_text(gnn.read_text() + "\nEDITED = True\n")
    before = {m: run_code(m, made) for m in ("gnn-sched", "coma", "heft")}
    after = {m: run_code(m, edited) for m in before}
    assert changed(before["gnn-sched"].modules, after["gnn-sched"].modules) == [
        "marl.algorithms.gnn_sched"
    ]
    assert after["coma"] == before["coma"] and after["heft"] == before["heft"]
    assert "llmoffload.marl.algorithms.coma" in before["coma"].modules
    assert not any(".algorithms." in m for m in before["heft"].modules)  # a reference's: none
    assert {"llmoffload.experiments.training", "llmoffload.marl.nets"} <= set(
        before["coma"].modules
    )

    grid = Grid(methods=("gnn-sched", "coma"), bandwidths_mhz=(6.0,), deadlines_s=(3.0,),
                failure_probs=(0.0,), failure_method="coma", protocols=("masked",),
                seeds=(0,))  # fmt: skip
    keys = {}
    for name, src in (("made", made), ("edited", edited)):
        monkeypatch.setattr(sweep, "SRC", src)
        keys[name] = {s.method: s.key for s in plan(grid)}
    moved = {m for m in keys["made"] if keys["made"][m] != keys["edited"][m]}
    assert moved == {"gnn-sched"}


def results_module():  # benchmarks/ is scripts, not a package
    spec = importlib.util.spec_from_file_location("results", ROOT / "benchmarks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_refuses_a_cache_of_other_code_and_names_what_changed(tmp_path: Path) -> None:
    """A result of the same run under another key whose code differs in marl.nets: results.py
    stops before running anything, naming it; the current result, or none, goes through."""
    grid = Grid(methods=("random",), bandwidths_mhz=(6.0,), deadlines_s=(3.0,),
                failure_probs=(0.0,), failure_method="random", protocols=("paper",),
                seeds=(0,))  # fmt: skip
    specs = plan(grid)
    spec = next(s for s in specs if s.method == "random")
    refuse = results_module().refuse_other_code
    refuse(specs, tmp_path, "llmoffload reproduce")  # an empty cache: nothing to refuse
    code = spec.code.modules | {"llmoffload.marl.nets": "0" * 12}
    old = {"format": sweep.RESULT_FORMAT, "spec": sweep.spec_fields(spec), "key": "0" * 12}
    path = tmp_path / "runs" / spec.name.replace(spec.key, "0" * 12) / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(old | {"code": code}))
    with pytest.raises(SystemExit) as refused:
        refuse(specs, tmp_path, "llmoffload reproduce --out X")
    assert str(refused.value) == (
        f"error: {tmp_path} holds results of other code (changed: marl.nets); "
        "rerun `llmoffload reproduce --out X` first"
    )
    path.write_text(json.dumps(old | {"format": "llmoffload-result/2"}))  # before code digests
    assert sweep.outdated(specs, tmp_path) == ["unknown, made as llmoffload-result/2"]
    current = result_path(tmp_path, spec)
    current.parent.mkdir(parents=True)
    current.write_text(json.dumps(old | {"key": spec.key, "code": spec.code.modules}))
    # the run is done under its current key: nothing to rerun, whatever else is there
    assert sweep.outdated(specs, tmp_path) == []
