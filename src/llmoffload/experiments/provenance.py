"""Which code a result came from: a digest of the llmoffload modules it imports.

Found statically: from the entry modules (or scripts), every ``import`` and ``from ...
import`` of an llmoffload module, at the top level or inside a function, is followed,
and so are the packages above each module (their ``__init__`` runs on import). Each
module is hashed as its syntax tree with docstrings and function annotations removed,
written back out by ``ast.unparse``: a comment, a docstring, formatting or a type hint
leaves the digest as it was, any code change moves it. (Class-level and variable
annotations stay: dataclasses and pydantic read them.) ``ast.unparse`` rather than
``ast.dump``: its text does not change with Python's AST classes between versions.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from llmoffload.errors import OffloadError

PACKAGE = "llmoffload"
SRC = Path(__file__).resolve().parents[2]  # the folder that holds the package


@dataclass(frozen=True)
class CodeDigest:
    """The combined digest, and each module's (module name -> 12 hex digits)."""

    digest: str
    modules: dict[str, str]

    @classmethod
    def of(cls, files: dict[str, Path]) -> CodeDigest:
        """The digest of modules given by name and file."""
        modules = {name: digest(files[name].read_bytes()) for name in sorted(files)}
        text = json.dumps(modules, sort_keys=True)
        return cls(hashlib.sha256(text.encode()).hexdigest()[:12], modules)


def code_digest(
    entries: Iterable[str] = (),
    src: Path = SRC,
    scripts: Iterable[Path] = (),
    skip: Callable[[str], bool] = lambda module: False,
) -> CodeDigest:
    """The digest of ``entries`` (module names), ``scripts`` (files outside the package,
    named ``folder.stem``) and every llmoffload module they import, read under ``src``.
    A module ``skip`` names is not followed, unless it is an entry."""
    return CodeDigest.of(closure(entries, src, scripts, skip))


def closure(
    entries: Iterable[str],
    src: Path,
    scripts: Iterable[Path] = (),
    skip: Callable[[str], bool] = lambda module: False,
) -> dict[str, Path]:
    """Every module reached from ``entries`` and ``scripts``, by name, with its file."""
    found: dict[str, Path] = {}
    todo = [(f"{path.parent.name}.{path.stem}", path) for path in scripts]
    todo += [(name, source_of(name, src)) for name in entries]
    while todo:
        name, path = todo.pop()
        if name in found:
            continue
        found[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in imports(path.read_bytes(), package):
            for module in (*parents(imported), imported):
                file = locate(module, src)
                if file is not None and module not in found and not skip(module):
                    todo.append((module, file))
    return found


@cache  # by content: a sweep asks again for every run it plans
def imports(source: bytes, package: str) -> tuple[str, ...]:
    """The llmoffload modules a module of ``package`` imports, anywhere in it; ``from a
    import b`` names both ``a`` and ``a.b`` (``locate`` keeps only a module's file)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: ``from .x import y`` within ``package``
                above = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*above, *([base] if base else [])])
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return tuple(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def parents(module: str) -> list[str]:
    """The packages above ``module``, outermost first: importing it runs their __init__."""
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def locate(module: str, src: Path) -> Path | None:
    """The file of an llmoffload module under ``src``, or None (a name, not a module)."""
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def source_of(module: str, src: Path) -> Path:
    path = locate(module, src)
    if path is None:
        raise OffloadError(f"no module {module} under {src}")
    return path


@cache  # by content, as ``imports``
def digest(source: bytes) -> str:
    """A module's digest: its normalised source's (see the module's docstring)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        bodied = isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        if bodied and node.body and is_docstring(node.body[0]):
            del node.body[0]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
        if isinstance(node, ast.arg):
            node.annotation = None
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()[:12]


def is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def changed(made: dict[str, str], now: dict[str, str]) -> list[str]:
    """The modules whose digest differs between two ``CodeDigest.modules``, or that only
    one of them has, as short names (``marl.nets``)."""
    names = sorted(m for m in made.keys() | now.keys() if made.get(m) != now.get(m))
    return [m.removeprefix(PACKAGE + ".") for m in names]
