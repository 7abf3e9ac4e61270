"""The classic schedulers by name: what ``--policy`` chooses from."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmoffload.execution import Dispatch
from llmoffload.heuristics import all_cloud, greedy, heft, objective_greedy, random_valid
from llmoffload.instance import Instance
from llmoffload.optimal import optimal

Scheduler = Callable[[Instance, np.random.Generator], list[Dispatch]]

SCHEDULERS: dict[str, Scheduler] = {
    "random-valid": random_valid,
    "all-cloud": all_cloud,
    "greedy": greedy,
    "heft": heft,
    "objective-greedy": objective_greedy,
    "optimal": optimal,
}
