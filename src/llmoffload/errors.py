"""The one exception type the command line turns into a one-line error, and the one rule
for a command whose optional extra is not installed."""

from __future__ import annotations

import importlib

# Each extra of pyproject.toml a command may need: what it gives, and the modules it brings.
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "learn": ("the learners", ("torch", "pettingzoo", "gymnasium", "tqdm", "filelock")),
    "runtime": ("the runtime", ("httpx", "fastapi", "uvicorn", "PIL")),
    "local": (
        "llama.cpp's server",
        ("llama_cpp", "gguf", "sse_starlette", "starlette_context", "pydantic_settings"),
    ),
    "study": ("rliable", ("rliable", "pandas")),
    "ray": ("Ray", ("ray",)),
}
HINTS = {"learn": " (PyTorch CPU: pip install torch==2.13.0 first)"}  # else pip pulls CUDA


class OffloadError(Exception):
    """Bad input or an impossible request, with a message fit for one line."""


def require(extra: str, user: str) -> None:
    """Import the extra's modules now, or raise one line naming the extra ``user`` (a
    command or an option) needs: before any work, not as an ImportError halfway through."""
    for module in EXTRAS[extra][1]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise needs(extra, user) from None


def needs(extra: str, user: str) -> OffloadError:
    """The one line for a missing extra."""
    hint = HINTS.get(extra, "")
    return OffloadError(f"{user} needs {EXTRAS[extra][0]}: pip install 'llmoffload[{extra}]'{hint}")


def extra_of(exc: ModuleNotFoundError) -> str | None:
    """The extra that brings the module an import missed, if an extra does."""
    top = (exc.name or "").partition(".")[0]
    return next((extra for extra, (_, modules) in EXTRAS.items() if top in modules), None)
