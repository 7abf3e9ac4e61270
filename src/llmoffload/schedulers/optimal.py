"""The true optimum: CP-SAT over placement and the order on each server.

Each subtask gets one start and, for every server that runs its modality, an optional
interval of its duration there (upload plus compute) whose presence literal is "placed
here". A predecessor's output reaches it at its end plus the transfer its placement
implies, written as one conditional precedence per pair of placements (0 on the same
server, the edge-edge or edge-cloud rate otherwise). Capacity: a NoOverlap over the
intervals of a one-slot server, a Cumulative of capacity K over a K-slot one, nothing
on an unlimited cloud; work queued before t = 0 (``busy_s``) is a fixed interval.

The execution model never idles on purpose: a subtask starts when its data is ready or
when its slot frees, whichever is later. When latency counts from arrival, that costs
nothing to drop: from any schedule the model allows, re-timing the same order as early
as possible moves no start later (with K slots: fewer than K of the schedule's
intervals hold the moment each starts, so a slot is free by then), and every T_i only
grows with the ends. So there starts are free (>=), which is exact. When latency is the
paper's ``max EN - min ST``, a later first start can shorten T_i, so each start is
pinned: it must equal one of the times that could have released it, its arrival (a
source), a predecessor's end plus the transfer (that placement pair), the end of
another subtask on its server (adjacent there), or when a slot frees. With the
NoOverlap this is exactly ``start = max(data ready, end of the previous subtask on its
server)``. With K slots and span latency the execution model takes the slot that frees
first, which pins do not capture: there a solution is replayed and not called proven.

Times are integers of ``resolution_s`` (1 us by default) and the weights gamma, 1 - gamma
are rounded to 1/1000; the returned schedule is always the exact replay of the solver's
dispatch sequence (its subtasks by start) through the execution model, so only CP-SAT's
bound carries that rounding. CP-SAT starts from the local search's schedule
(``search.anneal``: best classic improved by 2000 evaluations, seeded, so the same on any
machine) as a hint, and that is what comes back if the solver finds nothing better within
its time limit. The lower bound is the best of CP-SAT's (at scale often 0) and
``bound.lower_bound`` (the LP's, at 1.5 x the best schedule's makespan, or the relaxed
one). No symmetry is broken between servers: every task's link rates differ per server
(its distance to each), so no two servers are interchangeable.

CP-SAT runs a portfolio of 8 subsolvers (its default search, LNS neighbourhoods and
others) interleaved in batches on a fixed schedule (``interleave_search``): its path
is then fixed, so the same instance gives the same schedule, byte for byte, whenever
the search ends before the time limit. Racing parallel workers would not (of equally
good schedules the first found wins), and a single search, the earlier choice, finds
far worse schedules in the same time: measured on 4 dear-cloud instances at 2 s, 0.954
of the best classic's objective on average against 0.994 for one worker. Where the time
limit cuts the search, what it found by then still depends on the machine's speed.

OR-Tools is imported when a model is solved, not with the module: it pulls in
pandas, a third of a second that a training run, which never solves, need not pay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmoffload.model.execution import Dispatch, Schedule, Tables, evaluate
from llmoffload.model.instance import Instance
from llmoffload.schedulers.bound import lower_bound
from llmoffload.schedulers.search import Budget, anneal

if TYPE_CHECKING:
    from ortools.sat.python import cp_model

WEIGHT_SCALE = 1000
PORTFOLIO = 8  # CP-SAT subsolvers, interleaved deterministically
HINT = Budget(evaluations=2000)  # the local search that gives CP-SAT its start
REACH = 1.5  # the LP bound's horizon: this many times the best schedule's makespan

Subtask = tuple[int, int]


@dataclass(frozen=True)
class Solution:
    """The best schedule found, a proven lower bound, and whether it is optimal."""

    schedule: Schedule
    bound: float
    proven: bool
    wall_s: float

    @property
    def gap(self) -> float:
        """Relative distance between the schedule and the bound (0 when proven)."""
        obj = self.schedule.objective
        return 0.0 if self.proven else max(0.0, (obj - self.bound) / obj)


def ancestors(preds: list[list[int]]) -> list[set[int]]:
    """Transitive predecessors of every subtask of one task."""
    anc: list[set[int]] = []
    for pj in preds:
        anc.append(set(pj).union(*(anc[p] for p in pj)))
    return anc


class Model:
    """The CP-SAT model of one instance (see the module's doc): ``x`` places, ``start``
    and ``end`` time, in integer ticks."""

    def __init__(self, t: Tables, resolution_s: float) -> None:
        from ortools.sat.python import cp_model

        self.t = t
        self.ticks = 1.0 / resolution_s
        self.m = m = cp_model.CpModel()
        self.subtasks = [(i, j) for i, preds in enumerate(t.preds) for j in range(len(preds))]
        where = {k: [s for s in t.servers if t.supports(*k, s)] for k in self.subtasks}
        self.dur = {
            ((i, j), s): max(1, self.tick(t.upload[i][j][s] + t.compute[i][j][s]))
            for i, j in self.subtasks
            for s in where[i, j]
        }
        self.arrival = [self.tick(a) for a in t.arrival]
        self.busy = [[self.tick(b) for b in times] for times in t.busy]
        horizon = (
            max(self.arrival + [b for times in self.busy for b in times])
            + sum(max(self.dur[k, s] for s in where[k]) for k in self.subtasks)
            + sum(self.tick(b * t.sec_per_bit_ec) + 1 for out in t.out_bits for b in out)
        )
        self.x = {(k, s): m.new_bool_var(f"x{k}{s}") for k in self.subtasks for s in where[k]}
        self.start = {
            k: m.new_int_var(self.arrival[k[0]], horizon, f"st{k}") for k in self.subtasks
        }
        self.end = {k: m.new_int_var(0, horizon, f"en{k}") for k in self.subtasks}
        # the times that may release each subtask (pinned starts: one must hold)
        self.releases: dict[Subtask, list[cp_model.IntVar]] = {k: [] for k in self.subtasks}
        self.pinned = not t.from_arrival
        for k in self.subtasks:
            m.add_exactly_one(self.x[k, s] for s in where[k])
            m.add(
                self.end[k] == self.start[k] + sum(self.x[k, s] * self.dur[k, s] for s in where[k])
            )
            if not t.preds[k[0]][k[1]]:
                self.release(k, self.arrival[k[0]])
        self.precedence(where)
        self.capacity(where)
        if self.pinned:
            for lits in self.releases.values():
                m.add_bool_or(lits)
        self.objective(where, horizon)

    def tick(self, seconds: float) -> int:
        return round(seconds * self.ticks)

    def release(self, k: Subtask, at: cp_model.LinearExprT, *given: cp_model.IntVar) -> None:
        """Where starts are pinned: ``k`` may start exactly at ``at`` when ``given`` hold."""
        if not self.pinned:
            return
        lit = self.m.new_bool_var("")
        for g in given:
            self.m.add_implication(lit, g)
        self.m.add(self.start[k] == at).only_enforce_if(lit)
        self.releases[k].append(lit)

    def precedence(self, where: dict[Subtask, list[int]]) -> None:
        """Data ready: a predecessor's end plus the transfer between their two servers."""
        t, x, start, end = self.t, self.x, self.start, self.end
        for i, j in self.subtasks:
            for p in t.preds[i][j]:
                self.m.add(start[i, j] >= end[i, p])
                for a in where[i, p]:
                    for b in where[i, j]:
                        at = end[i, p] + self.tick(t.transfer(i, p, a, b))
                        both = x[(i, p), a], x[(i, j), b]
                        self.m.add(start[i, j] >= at).only_enforce_if(*both)
                        self.release((i, j), at, *both)

    def capacity(self, where: dict[Subtask, list[int]]) -> None:
        """At most K subtasks at once on a K-slot server; a pinned start may follow the end
        of another subtask there (not one of its descendants) or a slot's queued work."""
        t, m = self.t, self.m
        anc = [ancestors(preds) for preds in t.preds]
        for s in t.servers:
            here = [k for k in self.subtasks if s in where[k]]
            slots = t.slots[s]
            if slots is None or not here:
                continue
            intervals = [
                m.new_optional_fixed_size_interval_var(
                    self.start[k], self.dur[k, s], self.x[k, s], f"on{k}{s}"
                )
                for k in here
            ]
            intervals += [m.new_fixed_size_interval_var(0, b, "") for b in self.busy[s] if b > 0]
            if slots == 1:
                m.add_no_overlap(intervals)
            else:
                m.add_cumulative(intervals, [1] * len(intervals), slots)
            for k in here:
                on = self.x[k, s]
                for b in self.busy[s]:
                    if b > 0:
                        self.release(k, b, on)
                for e in here:
                    if e != k and not (e[0] == k[0] and k[1] in anc[k[0]][e[1]]):
                        self.release(k, self.end[e], on, self.x[e, s])

    def objective(self, where: dict[Subtask, list[int]], horizon: int) -> None:
        """sum_i gamma T_i + (1 - gamma) Cost_i, T_i = max EN - min ST (or arrival) + download."""
        t, m, x = self.t, self.m, self.x
        gw = round(t.gamma * WEIGHT_SCALE)
        terms = []
        for i, preds in enumerate(t.preds):
            last = len(preds) - 1
            first: cp_model.LinearExprT = self.arrival[i]
            if not t.from_arrival:
                first = m.new_int_var(0, horizon, f"first{i}")
                m.add_min_equality(
                    first, [self.start[i, j] for j, pj in enumerate(preds) if not pj]
                )
            downlink = sum(x[(i, last), s] * self.tick(t.downlink[i][s]) for s in where[i, last])
            terms.append(gw * (self.end[i, last] - first + downlink))
        cost = sum(var * round(t.cost[i][j][s] * self.ticks) for ((i, j), s), var in x.items())
        m.minimize(sum(terms) + (WEIGHT_SCALE - gw) * cost)

    def order(self, solver: cp_model.CpSolver) -> list[Dispatch]:
        """The solution as a dispatch sequence: by start (then end), which keeps each
        server's order and every precedence."""
        placed = sorted(
            (solver.value(self.start[i, j]), solver.value(self.end[i, j]), Dispatch(i, j, s))
            for ((i, j), s), var in self.x.items()
            if solver.value(var)
        )
        return [d for *_, d in placed]


def solve(
    instance: Instance,
    time_limit_s: float = 10.0,
    resolution_s: float = 1e-6,
) -> Solution:
    """Minimise sum_i gamma T_i + (1 - gamma) Cost_i over all dispatch sequences."""
    from ortools.sat.python import cp_model

    began = time.perf_counter()
    t = Tables(instance)
    model = Model(t, resolution_s)
    hint = anneal(instance, np.random.default_rng(0), HINT).order
    placed = {((d.task, d.subtask), d.server) for d in hint}
    for key, var in model.x.items():
        model.m.add_hint(var, key in placed)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    # a portfolio of subsolvers (LNS among them) interleaved on a fixed schedule: the same
    # path every time (see the module's doc), and far better schedules than one search
    solver.parameters.num_workers = PORTFOLIO
    solver.parameters.interleave_search = True
    status = solver.solve(model.m)
    schedule = evaluate(t, hint)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        schedule = min(evaluate(t, model.order(solver)), schedule, key=lambda sch: sch.objective)
    cp_sat = solver.best_objective_bound / (model.ticks * WEIGHT_SCALE)
    horizon = REACH * max(r.end for r in schedule.runs)
    bound = max(lower_bound(instance, horizon), cp_sat)
    exact = t.from_arrival or all(k is None or k == 1 for k in t.slots)
    proven = status == cp_model.OPTIMAL and exact
    return Solution(schedule, bound, proven, time.perf_counter() - began)


def optimal(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """The registry's entry: the best sequence CP-SAT finds in its default time."""
    return solve(instance).schedule.order
