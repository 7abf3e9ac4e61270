"""The classic schedulers by name, what ``--policy`` chooses from, and each as a policy:
one path from a name to a schedule for the command line, the experiments and the runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmoffload.model.execution import Schedule, evaluate
from llmoffload.model.instance import Instance
from llmoffload.schedulers.heuristics import CLASSIC, Scheduler, best_classic, random_valid
from llmoffload.schedulers.optimal import Solution, optimal, solve
from llmoffload.schedulers.search import DEFAULT, Budget, anneal, search

SCHEDULERS: dict[str, Scheduler] = {
    "random-valid": random_valid,
    **CLASSIC,
    "best-classic": best_classic,
    "search": search,
    "optimal": optimal,
}


@dataclass(frozen=True)
class Outcome:
    """What a policy produced; the CP-SAT solution too when the policy is 'optimal', the
    evaluations made when it is 'search'."""

    schedule: Schedule
    solution: Solution | None = None
    evaluations: int | None = None

    @property
    def proven(self) -> bool:
        """Whether the schedule is proven optimal (only Optimal's can be)."""
        return self.solution is not None and self.solution.proven


Policy = Callable[[Instance, np.random.Generator], Outcome]


def classic(name: str, time_limit_s: float, budget: Budget = DEFAULT) -> Policy:
    """The scheduler ``name`` of SCHEDULERS as a policy; Optimal within ``time_limit_s``
    seconds (an unproven one is the best found, and may vary with load), the search
    within ``budget``."""
    if name == "optimal":

        def solved(inst: Instance, rng: np.random.Generator) -> Outcome:
            solution = solve(inst, time_limit_s=time_limit_s)
            return Outcome(solution.schedule, solution)

        return solved
    if name == "search":

        def searched(inst: Instance, rng: np.random.Generator) -> Outcome:
            found = anneal(inst, rng, budget)
            return Outcome(evaluate(inst, found.order), evaluations=found.evaluations)

        return searched
    scheduler = SCHEDULERS[name]
    return lambda inst, rng: Outcome(evaluate(inst, scheduler(inst, rng)))
