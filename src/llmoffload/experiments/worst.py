"""Worst cases: the instance of a scenario where one policy is furthest above another.

An adversarial search in the manner of PISA (Coleman and Krishnamachari, SAGA): simulated
annealing over an instance's numbers, maximising log(objective of A / objective of B).
A move nudges one number within the range the scenario draws it from, so every instance
visited is one the scenario could produce: a subtask's input size (its cycles follow,
at the workload's cycles per bit) or output size, a task's distance to one edge (its
link rate), or, where tasks arrive over time, one task's arrival. Each policy plans
each instance with a generator seeded 0, so the ratio of the instance written is the
ratio ``schedule --policy A`` and ``--policy B`` give on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmoffload.model.instance import Instance
from llmoffload.schedulers.registry import Policy

NUDGE = 0.2  # a move's spread, as a share of the number's range
HOT, COLD = 0.05, 0.002  # the temperature's ends, on the log-ratio scale


@dataclass(frozen=True)
class Worst:
    """The worst instance found, A's objective over B's on it and on the start, and the
    instances tried."""

    instance: Instance
    ratio: float
    start: float
    tried: int


def ratio(a: Policy, b: Policy, instance: Instance) -> float:
    """A's objective over B's on ``instance``, each planning with a generator seeded 0."""
    ours = a(instance, np.random.default_rng(0)).schedule.objective
    theirs = b(instance, np.random.default_rng(0)).schedule.objective
    return ours / theirs


def nudge(instance: Instance, rng: np.random.Generator) -> Instance:
    """The instance with one number moved within its range (module doc)."""
    sc = instance.scenario
    data = instance.model_dump(mode="json")
    tasks = data["tasks"]
    task = tasks[int(rng.integers(len(tasks)))]
    kinds = ["input", "output", "distance"] + (["arrival"] if sc.workload.arrivals_per_s else [])
    kind = kinds[int(rng.integers(len(kinds)))]

    def moved(value: float, low: float, high: float) -> float:
        return float(np.clip(value + rng.normal(0.0, NUDGE * (high - low)), low, high))

    if kind == "distance":
        edge = int(rng.integers(len(task["distances_m"])))
        span = sc.network.channel.distance_m
        task["distances_m"][edge] = moved(task["distances_m"][edge], span.low, span.high)
    elif kind == "arrival":
        latest = max(t["arrival_s"] for t in tasks)
        task["arrival_s"] = moved(task["arrival_s"], 0.0, latest)
        tasks.sort(key=lambda t: t["arrival_s"])  # tasks stay in order of arrival
    else:
        sub = task["subtasks"][int(rng.integers(len(task["subtasks"])))]
        size = sc.workload.sizes[sub["modality"]]
        r = size.input_kbit if kind == "input" else size.output_kbit
        bits = moved(sub[f"{kind}_bits"] / 1e3, r.low, r.high) * 1e3
        sub[f"{kind}_bits"] = bits
        if kind == "input":
            sub["cycles"] = sc.workload.cycles_per_bit * bits
    return Instance.model_validate(data)


def worst_case(
    start: Instance,
    a: Policy,
    b: Policy,
    rng: np.random.Generator,
    steps: int,
    tick: Callable[[], None] = lambda: None,
) -> Worst:
    """Anneal ``steps`` nudges from ``start``, keeping the instance where A is furthest
    above B; ``tick`` is called once a step (a progress bar's)."""
    current, score = start, math.log(ratio(a, b, start))
    first = score
    best, best_score = current, score
    for step in range(steps):
        temperature = HOT * (COLD / HOT) ** (step / max(1, steps - 1))
        candidate = nudge(current, rng)
        moved = math.log(ratio(a, b, candidate))
        if moved >= score or rng.random() < math.exp((moved - score) / temperature):
            current, score = candidate, moved
            if score > best_score:
                best, best_score = current, score
        tick()
    return Worst(best, math.exp(best_score), math.exp(first), steps + 1)
