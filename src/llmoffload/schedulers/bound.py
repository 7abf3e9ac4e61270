"""A lower bound on any schedule's objective that stays cheap at scale: a linear programme.

CP-SAT's own bound barely moves past a few tasks, and ``optimal.relaxed_bound`` ignores
queueing, which is most of the objective when servers are contended. This LP keeps the
assignment, the precedence and the servers' capacity, relaxing only integrality:

- ``x[g, m]``: the share of subtask g placed on machine m; each subtask is placed once.
  A machine is a group of servers that serve the same modalities with a slot limit
  (their slots pooled, each subtask at its fastest and cheapest there), or one server.
- ``S[g]``: its start, after each predecessor's start plus duration plus a transfer
  when the two are apart (``tau``, at least the cheapest hop times the share placed
  apart), and never before its head (its task's arrival plus the shortest path to it).
- ``T[i]``: its task's latency, at least the exit's start plus duration plus download,
  less the arrival (or, for a span, less each source's start).
- The time-indexed mean-busy-time relaxation (Goemans 1997; Schulz and Skutella 2002)
  on every machine with a slot limit: time is cut into bins; ``y[g, m, b]`` is how much
  of g runs on m in bin b (at most the bin, at most the slots' capacity summed over
  subtasks; none before g's head); the mean of g's run time is at least that of its
  bins' lower edges weighted by ``y`` and equals S + duration / 2 in any schedule.
  The last bin is open-ended. This is what makes a queue cost time in the bound.

Every schedule gives a feasible point (x its placement, y its runs, S its starts), so
the LP's optimum, minimised by HiGHS (via SciPy), is a lower bound; it is reported
less 1e-6 of itself, what the solver's tolerances could have cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_array

from llmoffload.errors import OffloadError
from llmoffload.model.execution import Flat, Tables, evaluate
from llmoffload.model.instance import Instance
from llmoffload.schedulers.heuristics import heft

BINS = 200  # time bins over [first arrival, horizon]
REACH = 1.5  # the default horizon: this many times HEFT's makespan
SAFETY = 1e-6  # the bound is reported this fraction below the LP's optimum


@dataclass(frozen=True)
class Machine:
    """Servers pooled for the bound: their slots (None: no limit) and when each frees."""

    servers: tuple[int, ...]
    slots: int | None
    busy: tuple[float, ...]


def machines(t: Tables) -> list[Machine]:
    """Limited servers serving the same modalities pooled; each unlimited one alone."""
    modalities = [frozenset(s.modalities) for s in t.instance.scenario.servers]
    groups: dict[object, list[int]] = {}
    for s in t.servers:
        key = modalities[s] if t.slots[s] is not None else ("alone", s)
        groups.setdefault(key, []).append(s)
    out = []
    for members in groups.values():
        limits = [t.slots[s] for s in members]
        slots = None if None in limits else sum(k or 0 for k in limits)
        busy = tuple(float(b) for s in members for b in t.busy[s])
        out.append(Machine(tuple(members), slots, busy))
    return out


def relaxed_bound(t: Tables) -> float:
    """A lower bound on any schedule's objective that needs no search: per task, gamma
    times its critical path with every subtask on its fastest server (upload + compute;
    the exit's download included; no transfers, no queueing) plus (1 - gamma) times the
    sum of each subtask's cheapest cost. Each part bounds its term, so their sum bounds
    the objective; the LP's is at least as strong wherever queueing counts."""
    total = 0.0
    for i, preds in enumerate(t.preds):
        exit_ = len(preds) - 1
        finish: list[float] = []
        for j, pj in enumerate(preds):
            where = [s for s in t.servers if t.supports(i, j, s)]
            fastest = min(
                t.upload[i][j][s] + t.compute[i][j][s] + (t.downlink[i][s] if j == exit_ else 0.0)
                for s in where
            )
            finish.append(max((finish[p] for p in pj), default=0.0) + fastest)
        cheapest = sum(
            min(c for s, c in enumerate(row) if t.supports(i, j, s))
            for j, row in enumerate(t.cost[i])
        )
        total += t.gamma * max(finish) + (1.0 - t.gamma) * cheapest
    return total


def lower_bound(instance: Instance, horizon: float | None = None) -> float:
    """The best bound this module certifies: the LP's, or the relaxed one where that is
    higher (only by the LP's rounding)."""
    return max(relaxed_bound(Tables(instance)), lp_bound(instance, horizon))


class Rows:
    """A sparse constraint matrix built a row at a time: A x <= b."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.rhs: list[float] = []

    def add(self, terms: list[tuple[int, float]], rhs: float) -> None:
        r = len(self.rhs)
        for c, v in terms:
            self.rows.append(r)
            self.cols.append(c)
            self.vals.append(v)
        self.rhs.append(rhs)

    def matrix(self, columns: int) -> coo_array:
        return coo_array((self.vals, (self.rows, self.cols)), shape=(len(self.rhs), columns))


def heads(f: Flat) -> list[float]:
    """The earliest any subtask can start: its task's arrival plus the shortest chain of
    its ancestors' fastest durations."""
    head = [0.0] * len(f)
    for g in range(len(f)):  # global order is topological within each task
        head[g] = max(
            (head[p] + min(f.duration[p][s] for s in f.options[p]) for p in f.preds[g]),
            default=f.arrival[g],
        )
    return head


def lp_bound(instance: Instance, horizon: float | None = None, bins: int = BINS) -> float:
    """The LP's lower bound on the objective (module doc). ``horizon``: where the last,
    open-ended bin begins; any is valid, one past a good schedule's end tightest (default:
    ``REACH`` times HEFT's makespan, measured best of 1, 1.5 times at 64-256 bins)."""
    t = Tables(instance)
    f = Flat(t)
    n = len(f)
    ms = machines(t)
    head = heads(f)
    on = [
        {m: [s for s in mach.servers if s in f.options[g]] for m, mach in enumerate(ms)}
        for g in range(n)
    ]
    on = [{m: ss for m, ss in where.items() if ss} for where in on]
    duration = [{m: min(f.duration[g][s] for s in ss) for m, ss in on[g].items()} for g in range(n)]
    cost = [{m: min(f.cost[g][s] for s in ss) for m, ss in on[g].items()} for g in range(n)]
    limited = [m for m, mach in enumerate(ms) if mach.slots is not None]
    t0 = min(t.arrival, default=0.0)
    if horizon is None:
        horizon = REACH * max(
            r.end for r in evaluate(t, heft(instance, np.random.default_rng(0))).runs
        )
    edges = np.linspace(t0, max(horizon, t0 + 1e-9), bins + 1)

    # columns: x, then S, then T, then tau (one per precedence pair), then y
    col: dict[tuple, int] = {}

    def var(key: tuple) -> int:
        return col.setdefault(key, len(col))

    for g in range(n):
        for m in on[g]:
            var(("x", g, m))
    for g in range(n):
        var(("S", g))
    for i in range(len(t.preds)):
        var(("T", i))
    pairs = [(p, g) for g in range(n) for p in f.preds[g]]
    for p, g in pairs:
        var(("tau", p, g))
    upper: dict[int, float] = {}
    for m in limited:
        for g in range(n):
            if m not in on[g]:
                continue
            for b in range(bins + 1):
                hi = edges[b + 1] if b < bins else math.inf
                if hi <= head[g]:
                    continue
                upper[var(("y", g, m, b))] = min(hi - max(edges[b], head[g]), duration[g][m])

    eq, ub = Rows(), Rows()
    for g in range(n):
        eq.add([(col["x", g, m], 1.0) for m in on[g]], 1.0)
    for m in limited:
        for g in range(n):
            if m in on[g]:
                ys = [
                    (c, 1.0) for b in range(bins + 1) if (c := col.get(("y", g, m, b))) is not None
                ]
                eq.add([*ys, (col["x", g, m], -duration[g][m])], 0.0)
        mach = ms[m]
        for b in range(bins):
            lo, hi = edges[b], edges[b + 1]
            busy = sum(min(max(free - lo, 0.0), hi - lo) for free in mach.busy)
            ys = [(c, 1.0) for g in range(n) if (c := col.get(("y", g, m, b))) is not None]
            if ys:
                ub.add(ys, (mach.slots or 0) * (hi - lo) - busy)
    # mean busy time: sum_b lower edge * y / duration <= S + duration / 2, per subtask
    for g in range(n):
        terms = [
            (col["y", g, m, b], max(edges[b], head[g]) / duration[g][m])
            for m in limited
            if m in on[g]
            for b in range(bins + 1)
            if ("y", g, m, b) in col
        ]
        if terms:
            halves = [(col["x", g, m], -duration[g][m] / 2) for m in limited if m in on[g]]
            ub.add([*terms, (col["S", g], -1.0), *halves], 0.0)
    # precedence: S_p + duration_p + tau_pg <= S_g; tau >= hop * (share of p on m, not g)
    cloud = t.cloud
    for p, g in pairs:
        ub.add(
            [
                (col["S", p], 1.0),
                *((col["x", p, m], duration[p][m]) for m in on[p]),
                (col["tau", p, g], 1.0),
                (col["S", g], -1.0),
            ],
            0.0,
        )
        for m in on[p]:
            hop = (
                f.edge_cloud[p] if cloud in ms[m].servers else min(f.edge_edge[p], f.edge_cloud[p])
            )
            terms = [(col["x", p, m], hop), (col["tau", p, g], -1.0)]
            if m in on[g]:
                terms.append((col["x", g, m], -hop))
            ub.add(terms, 0.0)
    # latency: T_i >= S_exit + duration + download - (arrival, or each source's start)
    for i in range(len(t.preds)):
        e = f.exit(i)
        finish = [
            (col["x", e, m], duration[e][m] + min(t.downlink[i][s] for s in on[e][m]))
            for m in on[e]
        ]
        if t.from_arrival:
            ub.add([(col["S", e], 1.0), *finish, (col["T", i], -1.0)], t.arrival[i])
        else:
            for src in f.sources[i]:
                ub.add(
                    [(col["S", e], 1.0), *finish, (col["S", src], -1.0), (col["T", i], -1.0)], 0.0
                )

    size = len(col)
    c = np.zeros(size)
    for g in range(n):
        for m in on[g]:
            c[col["x", g, m]] = (1.0 - t.gamma) * cost[g][m]
    for i in range(len(t.preds)):
        c[col["T", i]] = t.gamma
    low = np.zeros(size)
    high = np.full(size, np.inf)
    for g in range(n):
        low[col["S", g]] = head[g]
    for k, v in upper.items():
        high[k] = v
    res = linprog(
        c,
        A_ub=ub.matrix(size),
        b_ub=ub.rhs,
        A_eq=eq.matrix(size),
        b_eq=eq.rhs,
        bounds=np.column_stack([low, high]),
        method="highs",
    )
    if res.status != 0:
        raise OffloadError(f"the LP bound could not be solved: {res.message}")
    return float(res.fun) * (1.0 - SAFETY)
