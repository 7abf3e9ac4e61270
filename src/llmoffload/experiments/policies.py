"""Every policy by name: the classic schedulers and trained runs, as the command line,
the experiments and the runtime all choose them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmoffload.errors import OffloadError
from llmoffload.model.execution import Schedule, evaluate
from llmoffload.model.instance import Instance
from llmoffload.schedulers import optimal
from llmoffload.schedulers.registry import SCHEDULERS


@dataclass(frozen=True)
class Outcome:
    """What a policy produced; the CP-SAT solution too when the policy is 'optimal'."""

    schedule: Schedule
    solution: optimal.Solution | None = None


Policy = Callable[[Instance, np.random.Generator], Outcome]


def resolve_policy(policy: str, time_limit_s: float) -> Policy:
    """The scheduler ``policy`` names, or the trained run in that directory, checked (and a
    run's checkpoint loaded) before any work is done."""
    if policy == "optimal":

        def solve(inst: Instance, rng: np.random.Generator) -> Outcome:
            solution = optimal.solve(inst, time_limit_s=time_limit_s)
            return Outcome(solution.schedule, solution)

        return solve
    if Path(policy).is_dir():
        from llmoffload.experiments.training import trained_policy  # torch only when asked

        schedule = trained_policy(Path(policy))  # a damaged or unsafe checkpoint fails now
        return lambda inst, rng: Outcome(schedule(inst))
    if policy not in SCHEDULERS:
        raise OffloadError(
            f"unknown policy '{policy}' (choose from {', '.join(SCHEDULERS)}, or a run directory)"
        )
    scheduler = SCHEDULERS[policy]
    return lambda inst, rng: Outcome(evaluate(inst, scheduler(inst, rng)))
