"""The command line's numeric options, bounded at both ends in one table: past the upper
end a value only crashes a run or keeps it going for ever (``calibrate --rounds 1e20``),
so it is refused in one line before any work. The learners' settings have their own,
``marl/ranges.py``."""

from __future__ import annotations

from typing import Any

MAX_SEED = 2**64 - 1  # torch.manual_seed's largest

LIMITS: dict[str, tuple[float, float]] = {
    "seed": (0, MAX_SEED),
    "episodes": (1, 10**6),  # training or held-out episodes of a run
    "seeds": (1, 1000),
    "workers": (1, 1024),
    "lockstep": (1, 4096),
    "rounds": (1, 1000),  # calibration calls per endpoint and length
    "capacity": (1, 10**5),  # requests in flight
    "time_limit": (0.001, 86400.0),  # CP-SAT seconds per instance
    "timeout": (0.001, 86400.0),  # seconds a served request may run
}


def bounds(name: str) -> dict[str, Any]:
    """``typer.Option`` keywords for the option ``name``: its two ends."""
    low, high = LIMITS[name]
    return {"min": low, "max": high}
