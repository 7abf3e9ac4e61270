"""Every policy by name: the classic schedulers and trained runs, as the command line,
the experiments and the runtime all choose them."""

from __future__ import annotations

from pathlib import Path

from llmoffload.errors import OffloadError, require
from llmoffload.schedulers.registry import SCHEDULERS, Outcome, Policy, classic
from llmoffload.schedulers.search import DEFAULT, Budget


def resolve_policy(policy: str, time_limit_s: float, budget: Budget = DEFAULT) -> Policy:
    """The scheduler ``policy`` names, or the trained run in that directory, checked (and a
    run's checkpoint loaded) before any work is done."""
    if policy != "optimal" and Path(policy).is_dir():
        require("learn", f"the trained run {policy}")
        from llmoffload.experiments.training import trained_policy  # torch only when asked

        schedule = trained_policy(Path(policy))  # a damaged or unsafe checkpoint fails now
        return lambda inst, rng: Outcome(schedule(inst))
    if policy not in SCHEDULERS:
        raise OffloadError(
            f"unknown policy '{policy}' (choose from {', '.join(SCHEDULERS)}, or a run directory)"
        )
    return classic(policy, time_limit_s, budget)
