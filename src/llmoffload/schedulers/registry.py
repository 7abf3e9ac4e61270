"""The classic schedulers by name: what ``--policy`` chooses from."""

from __future__ import annotations

from llmoffload.schedulers.heuristics import CLASSIC, Scheduler, best_classic, random_valid
from llmoffload.schedulers.optimal import optimal

SCHEDULERS: dict[str, Scheduler] = {
    "random-valid": random_valid,
    **CLASSIC,
    "best-classic": best_classic,
    "optimal": optimal,
}
