"""Classic schedulers to measure learned policies against.

Each takes an instance and the run's one random generator and returns a
dispatch sequence that the execution model accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import fmean

import numpy as np

from llmoffload.model.execution import Dispatch, Execution, Tables, evaluate
from llmoffload.model.instance import Instance

Scheduler = Callable[[Instance, np.random.Generator], list[Dispatch]]


def valid_dispatches(ex: Execution) -> list[Dispatch]:
    """Every (task, subtask, server) the execution model accepts now, in index order."""
    return [Dispatch(*d) for d in np.argwhere(ex.valid()).tolist()]


def random_valid(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """Uniform over the valid dispatches at every step."""
    ex = Execution(instance)
    while not ex.done:
        options = valid_dispatches(ex)
        ex.dispatch(*options[int(rng.integers(len(options)))])
    return ex.schedule().order


def all_cloud(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """Everything on the cloud, task by task in topological order."""
    cloud = instance.scenario.cloud
    return [
        Dispatch(i, j, cloud)
        for i, task in enumerate(instance.tasks)
        for j in range(len(task.subtasks))
    ]


def greedy(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """Min-min: dispatch the ready (subtask, server) pair that finishes earliest."""
    ex = Execution(instance)
    while not ex.done:
        best = min(valid_dispatches(ex), key=lambda d: (ex.timing(*d)[1], d))
        ex.dispatch(*best)
    return ex.schedule().order


def upward_ranks(tables: Tables) -> list[list[float]]:
    """HEFT's rank_u: mean duration plus the costliest mean-transfer path to the exit.

    A server that cannot serve a subtask's modality is left out of its means
    (its cost is infinite). The exit's rank includes the mean downlink time,
    since the result must return to the device.
    """
    ranks = []
    for i, succs in enumerate(tables.succs):
        where = [[s for s in tables.servers if tables.supports(i, j, s)] for j in range(len(succs))]
        mean_dur = [
            fmean(tables.upload[i][j][s] + tables.compute[i][j][s] for s in where[j])
            for j in range(len(succs))
        ]
        rank = [0.0] * len(succs)
        last = len(succs) - 1
        rank[last] = mean_dur[last] + fmean(tables.downlink[i][s] for s in where[last])
        for j in reversed(range(last)):
            rank[j] = mean_dur[j] + max(
                fmean(tables.transfer(i, j, a, b) for a in where[j] for b in where[k]) + rank[k]
                for k in succs[j]
            )
        ranks.append(rank)
    return ranks


def list_schedule(
    instance: Instance, cost: Callable[[Execution, int, int, int], float]
) -> list[Dispatch]:
    """List scheduling: subtasks of all tasks by decreasing upward rank less their task's
    arrival time (the rank alone when all arrive at once, as HEFT), each appended to the
    queue of the server where ``cost(ex, task, subtask, server)`` is least (ties: the
    lowest server index; the model has no insertion into idle gaps)."""
    ex = Execution(instance)
    t = ex.tables
    ranks = upward_ranks(t)
    order = sorted(
        ((i, j) for i, rank in enumerate(ranks) for j in range(len(rank))),
        key=lambda ij: (t.arrival[ij[0]] - ranks[ij[0]][ij[1]], ij),
    )
    for i, j in order:
        server = min((s for s in t.servers if t.supports(i, j, s)), key=lambda s: cost(ex, i, j, s))
        ex.dispatch(i, j, server)
    return ex.schedule().order


def heft(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """HEFT (Topcuoglu et al., TPDS 2002), modality-aware, on the FIFO edge model: each
    subtask where it finishes earliest. It minimises time and ignores cost."""
    return list_schedule(instance, lambda ex, i, j, s: ex.timing(i, j, s)[1])


def objective_greedy(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """HEFT's order, each subtask where it adds least to its task's weighted objective
    gamma * latency + (1 - gamma) * cost so far (``Execution.objective_increase``, queue
    waiting included): the cost-aware list scheduler."""
    return list_schedule(instance, lambda ex, i, j, s: ex.objective_increase(i, j, s))


CLASSIC: dict[str, Scheduler] = {
    "all-cloud": all_cloud,
    "greedy": greedy,
    "heft": heft,
    "objective-greedy": objective_greedy,
}


def best_classic(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """On each instance, the best schedule of every deterministic classic scheduler:
    the bar a learned policy must clear (random-valid is left out, it is no rule)."""
    tables = Tables(instance)
    orders = [rule(instance, rng) for rule in CLASSIC.values()]
    return min(orders, key=lambda order: evaluate(tables, order).objective)
