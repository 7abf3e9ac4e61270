"""The true optimum: CP-SAT over placement and the order on each server.

Both formulations share the placement (a literal per subtask and server that runs its
modality, exactly one true), one start and end per subtask (its duration there: upload
plus compute), and the objective. They differ in how a server's order and the start
rule are written, and each is used where it was measured strongest (docs/yardsticks.md):

- ``intervals``, when latency counts from arrival: an optional interval per subtask and
  server, a NoOverlap over a one-slot server's, a Cumulative of capacity K over a K-slot
  one's, nothing on an unlimited cloud; work queued before t = 0 (``busy_s``) a fixed
  interval; the transfer a conditional precedence per pair of placements (0 on the same
  server, the edge-edge or edge-cloud rate otherwise). Starts are free (>=). That is
  exact here though the execution model never idles on purpose: from any solution,
  re-timing the same order as early as possible moves no end later (with K slots, fewer
  than K of the solution's intervals hold the instant each subtask starts, so a slot is
  free by then), and T_i = max EN - arrival only grows with the ends.
- ``circuits``, under the paper's span latency (max EN - min ST), where a later first
  start could shorten T_i, so every start is pinned exactly::

      start = max(data-ready time WT (never before the task arrives),
                  end of the previous subtask in its slot, or when the slot
                  frees (the instance's ``busy_s``, else 0) for its first)

  with each slot's order given by a circuit (AddCircuit) over the subtasks placed there
  (an edge has one slot; a cloud with K slots K circuits, each subtask in one; an
  unlimited cloud none) and NoOverlap as a redundant constraint. With K > 1 slots the
  model picks each subtask's slot, the execution model the one that frees first: the
  solution replayed only gets earlier, which is no worse under arrival latency but may
  lengthen a span, so there it is not called proven.

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
    """What both formulations share (see the module's doc): ``x`` places, ``start`` and
    ``end`` time, in integer ticks; ``constrain`` writes the order and the start rule."""

    exact: bool  # whether its optimum is the execution model's, on this instance

    def __init__(self, t: Tables, resolution_s: float) -> None:
        from ortools.sat.python import cp_model

        self.t = t
        self.ticks = 1.0 / resolution_s
        self.m = m = cp_model.CpModel()
        self.subtasks = [(i, j) for i, preds in enumerate(t.preds) for j in range(len(preds))]
        self.where = where = {k: [s for s in t.servers if t.supports(*k, s)] for k in self.subtasks}
        self.dur = {
            ((i, j), s): max(1, self.tick(t.upload[i][j][s] + t.compute[i][j][s]))
            for i, j in self.subtasks
            for s in where[i, j]
        }
        self.arrival = [self.tick(a) for a in t.arrival]
        self.busy = [[self.tick(b) for b in times] for times in t.busy]
        self.horizon = horizon = (
            max(self.arrival + [b for times in self.busy for b in times])
            + sum(max(self.dur[k, s] for s in where[k]) for k in self.subtasks)
            + sum(self.tick(b * t.sec_per_bit_ec) + 1 for out in t.out_bits for b in out)
        )
        self.x = {(k, s): m.new_bool_var(f"x{k}{s}") for k in self.subtasks for s in where[k]}
        self.start = {
            k: m.new_int_var(self.arrival[k[0]], horizon, f"st{k}") for k in self.subtasks
        }
        self.end = {k: m.new_int_var(0, horizon, f"en{k}") for k in self.subtasks}
        for k in self.subtasks:
            m.add_exactly_one(self.x[k, s] for s in where[k])
            m.add(
                self.end[k] == self.start[k] + sum(self.x[k, s] * self.dur[k, s] for s in where[k])
            )
        self.constrain()
        self.objective()

    def tick(self, seconds: float) -> int:
        return round(seconds * self.ticks)

    def constrain(self) -> None:
        raise NotImplementedError

    def interval(self, k: Subtask, s: int) -> cp_model.IntervalVar:
        """``k``'s run on ``s``, present when it is placed there."""
        return self.m.new_optional_fixed_size_interval_var(
            self.start[k], self.dur[k, s], self.x[k, s], f"on{k}{s}"
        )

    def objective(self) -> None:
        """sum_i gamma T_i + (1 - gamma) Cost_i, T_i = max EN - min ST (or arrival) + download."""
        t, m, x = self.t, self.m, self.x
        gw = round(t.gamma * WEIGHT_SCALE)
        terms = []
        for i, preds in enumerate(t.preds):
            last = len(preds) - 1
            first: cp_model.LinearExprT = self.arrival[i]
            if not t.from_arrival:
                first = m.new_int_var(0, self.horizon, f"first{i}")
                m.add_min_equality(
                    first, [self.start[i, j] for j, pj in enumerate(preds) if not pj]
                )
            tail = self.where[i, last]
            downlink = sum(x[(i, last), s] * self.tick(t.downlink[i][s]) for s in tail)
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


class Intervals(Model):
    """Free starts, conditional precedence, NoOverlap or Cumulative: exact under arrival
    latency, a relaxation (a lower bound) under span latency."""

    def constrain(self) -> None:
        t, m, x, start, end = self.t, self.m, self.x, self.start, self.end
        self.exact = t.from_arrival
        for i, j in self.subtasks:
            for p in t.preds[i][j]:
                m.add(start[i, j] >= end[i, p])
                for a in self.where[i, p]:
                    for b in self.where[i, j]:
                        at = end[i, p] + self.tick(t.transfer(i, p, a, b))
                        m.add(start[i, j] >= at).only_enforce_if(x[(i, p), a], x[(i, j), b])
        for s in t.servers:
            here = [k for k in self.subtasks if s in self.where[k]]
            slots = t.slots[s]
            if slots is None or not here:
                continue
            intervals = [self.interval(k, s) for k in here]
            intervals += [m.new_fixed_size_interval_var(0, b, "") for b in self.busy[s] if b > 0]
            if slots == 1:
                m.add_no_overlap(intervals)
            else:
                m.add_cumulative(intervals, [1] * len(intervals), slots)


class Circuits(Model):
    """Pinned starts, start = max(WT, prev), each slot's order a circuit: exact under
    either latency with one-slot servers, and under arrival latency with any."""

    def constrain(self) -> None:
        t, m, x, start = self.t, self.m, self.x, self.start
        self.exact = t.from_arrival or all(k is None or k == 1 for k in t.slots)
        horizon, where = self.horizon, self.where
        self.prev = prev = {k: m.new_int_var(0, horizon, f"prev{k}") for k in self.subtasks}
        for i, j in self.subtasks:
            # Data-ready time WT: predecessor's end plus the transfer its placement implies.
            ready = []
            for p in t.preds[i][j]:
                both = {
                    s: together(m, x[(i, p), s], x[(i, j), s])
                    for s in where[i, p]
                    if s in where[i, j]
                }
                t_ee = self.tick(t.out_bits[i][p] * t.sec_per_bit_ee)
                t_ec = self.tick(t.out_bits[i][p] * t.sec_per_bit_ec)
                # 0 on the same server, t_ec when exactly one end is the cloud, else t_ee.
                on_cloud = [x.get(((i, q), t.cloud), 0) for q in (p, j)]
                cloud_hop = sum(on_cloud) - 2 * both.get(t.cloud, 0)
                ready.append(
                    self.end[i, p] + t_ee - t_ee * sum(both.values()) + (t_ec - t_ee) * cloud_hop
                )
            wt = m.new_int_var(0, horizon, f"wt{i}_{j}")
            m.add_max_equality(wt, ready or [self.arrival[i]])
            m.add_max_equality(start[i, j], [wt, prev[i, j]])
            for s in where[i, j]:
                if t.slots[s] is None:
                    m.add(prev[i, j] == 0).only_enforce_if(x[(i, j), s])
        # Each slot of a limited server runs its subtasks in one order: a circuit through a
        # depot node 0. A server with K slots gets K circuits; each subtask placed there
        # takes exactly one of them.
        anc = [ancestors(preds) for preds in t.preds]
        for s in t.servers:
            here = [k for k in self.subtasks if s in where[k]]
            slots = t.slots[s]
            if slots is None or not here:
                continue
            lit = {(k, 0): x[k, s] for k in here}
            if slots > 1:
                lit = {(k, q): m.new_bool_var(f"y{k}{s}{q}") for k in here for q in range(slots)}
                for k in here:
                    m.add(sum(lit[k, q] for q in range(slots)) == x[k, s])
            for q in range(slots):
                self.circuit([(k, lit[k, q]) for k in here], s, self.busy[s][q], anc)

    def circuit(
        self,
        members: list[tuple[Subtask, cp_model.IntVar]],
        server: int,
        free: int,
        anc: list[list[set[int]]],
    ) -> None:
        """One slot's order: a circuit through a depot over the subtasks whose literal is
        true; each starts no earlier than the end of the one before it (``prev``), the
        first no earlier than the slot frees (``free``: work queued before t = 0)."""
        m, prev = self.m, self.prev
        empty = m.new_bool_var("")
        arcs: list[tuple[int, int, cp_model.BoolVarT]] = [(0, 0, empty)]
        intervals = []
        for a, ((i, j), here) in enumerate(members, start=1):
            m.add_implication(here, empty.Not())
            arcs.append((a, a, here.Not()))
            first = m.new_bool_var("")
            arcs += [(0, a, first), (a, 0, m.new_bool_var(""))]
            m.add(prev[i, j] == free).only_enforce_if(first)
            intervals.append(
                m.new_optional_fixed_size_interval_var(
                    self.start[i, j], self.dur[(i, j), server], here, ""
                )
            )
            for b, ((i2, j2), _) in enumerate(members, start=1):
                if a == b or (i == i2 and j2 in anc[i][j]):
                    continue
                follows = m.new_bool_var("")
                arcs.append((a, b, follows))
                m.add(prev[i2, j2] == self.end[i, j]).only_enforce_if(follows)
        m.add_circuit(arcs)
        m.add_no_overlap(intervals)


FORMULATIONS: dict[str, type[Model]] = {"intervals": Intervals, "circuits": Circuits}


def together(m: cp_model.CpModel, a: cp_model.IntVar, b: cp_model.IntVar) -> cp_model.IntVar:
    """A literal equal to a AND b: both subtasks on the same server."""
    both = m.new_bool_var("")
    m.add_implication(both, a)
    m.add_implication(both, b)
    m.add_bool_or([a.Not(), b.Not(), both])
    return both


def solve(
    instance: Instance,
    time_limit_s: float = 10.0,
    resolution_s: float = 1e-6,
    formulation: str | None = None,
) -> Solution:
    """Minimise sum_i gamma T_i + (1 - gamma) Cost_i over all dispatch sequences, with
    ``formulation`` (default: intervals under arrival latency, circuits under span)."""
    from ortools.sat.python import cp_model

    began = time.perf_counter()
    t = Tables(instance)
    chosen = formulation or ("intervals" if t.from_arrival else "circuits")
    model = FORMULATIONS[chosen](t, resolution_s)
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
    proven = status == cp_model.OPTIMAL and model.exact
    return Solution(schedule, bound, proven, time.perf_counter() - began)


def optimal(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """The registry's entry: the best sequence CP-SAT finds in its default time."""
    return solve(instance).schedule.order
