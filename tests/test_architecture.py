"""The package's layers (docs/architecture.md): every import points down, no circles, and
the README's Python runs as written."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "llmoffload"

# Lowest first. A module may import its own layer and those below, never one above.
LAYERS = {
    "errors": 0,
    "files": 0,
    "display": 0,
    "model": 1,
    "schedulers": 2,
    "marl": 3,
    "experiments": 4,
    "runtime": 5,
    "cli": 6,
}
ENTRY_POINTS = {"llmoffload", "llmoffload.__main__"}  # the public API and `python -m`


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every llmoffload module ``path`` imports, at the top or inside a function, type-only
    imports included: a layer that needs another's types depends on it too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("llmoffload")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmoffload"):
            for alias in node.names:  # `from llmoffload.cli import app` names a module
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                found.add(sub if is_module else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a module that is not there, upward imports and imports of the command
    line, one line each."""
    found = []
    for module, targets in sorted(graph.items()):
        if module in ENTRY_POINTS:
            continue
        for target in sorted(targets):
            mine, theirs = layer(module), layer(target)
            if target not in graph:
                found.append(f"{module} -> {target}: no such module")
            elif mine is None or theirs is None:
                found.append(f"{module} -> {target}: not in a layer")
            elif theirs > mine:
                found.append(f"{module} -> {target}: imports upward")
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module imports folded to their subpackages (a circle between layers shows here)."""
    fold = {m: ".".join(m.split(".")[:2]) for m in graph}
    folded: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module in ENTRY_POINTS:
            continue
        folded.setdefault(fold[module], set()).update(
            fold.get(t, t) for t in targets if fold.get(t, t) != fold[module]
        )
    return folded


def test_every_module_sits_in_a_layer_and_imports_only_downward() -> None:
    assert violations(import_graph()) == []


def test_no_import_circles_between_modules_or_subpackages() -> None:
    graph = import_graph()
    TopologicalSorter(graph).prepare()  # raises CycleError on a circle
    TopologicalSorter(package_graph(graph)).prepare()


def test_the_checks_catch_what_they_are_for() -> None:
    """A missing module, an upward import, an import of the command line and a circle are
    all reported."""
    graph = {
        "llmoffload.model.execution": {"llmoffload.marl.env"},
        "llmoffload.runtime.executor": {"llmoffload.cli.app", "llmoffload.model.gone"},
        "llmoffload.marl.env": {"llmoffload.model.execution"},
        "llmoffload.cli.app": set(),
        "llmoffload.stray": set(),
    }
    assert violations(graph) == [
        "llmoffload.model.execution -> llmoffload.marl.env: imports upward",
        "llmoffload.runtime.executor -> llmoffload.cli.app: imports upward",
        "llmoffload.runtime.executor -> llmoffload.model.gone: no such module",
    ]
    with pytest.raises(CycleError):
        TopologicalSorter(graph).prepare()
    assert layer("llmoffload.stray") is None


def test_the_top_level_holds_only_what_every_layer_shares() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "display", "errors", "files"]
    subpackages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert subpackages == sorted(name for name in LAYERS if LAYERS[name] > 0)


def test_the_readme_python_blocks_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert len(blocks) >= 2  # the model's and the environment's
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, f"README block failed:\n{block}\n{done.stderr}"
