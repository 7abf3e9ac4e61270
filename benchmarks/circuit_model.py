"""The CP-SAT model Optimal used until issue 29's reformulation, kept so that
``bench_yardsticks.py --part exact`` and the tests can set today's model beside it.

Same variables for placement, but each start pinned by ``start = max(WT, prev)`` with
``prev`` fed by a circuit per slot (AddCircuit over the subtasks placed there, an arc per
ordered pair), WT a max over transfer expressions built from "both on one server"
literals, and NoOverlap added only as a redundant constraint. Hint, bound and replay as
in ``llmoffload.schedulers.optimal``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from llmoffload.model.execution import Dispatch, Tables, evaluate
from llmoffload.model.instance import Instance
from llmoffload.schedulers.bound import lower_bound
from llmoffload.schedulers.optimal import HINT, PORTFOLIO, REACH, WEIGHT_SCALE, Solution, ancestors
from llmoffload.schedulers.search import anneal

if TYPE_CHECKING:
    from ortools.sat.python import cp_model


def solve(
    instance: Instance,
    time_limit_s: float = 10.0,
    resolution_s: float = 1e-6,
) -> Solution:
    """Minimise sum_i gamma T_i + (1 - gamma) Cost_i over all dispatch sequences."""
    from ortools.sat.python import cp_model

    began = time.perf_counter()
    t = Tables(instance)
    ticks = 1.0 / resolution_s

    def tick(seconds: float) -> int:
        return round(seconds * ticks)

    m = cp_model.CpModel()
    subtasks = [(i, j) for i, preds in enumerate(t.preds) for j in range(len(preds))]
    where = {(i, j): [s for s in t.servers if t.supports(i, j, s)] for i, j in subtasks}
    dur = {
        (i, j, s): max(1, tick(t.upload[i][j][s] + t.compute[i][j][s]))
        for i, j in subtasks
        for s in where[i, j]
    }
    arrival = [tick(a) for a in t.arrival]
    busy = [[tick(b) for b in times] for times in t.busy]
    horizon = (
        max(arrival + [b for times in busy for b in times])
        + sum(max(dur[i, j, s] for s in where[i, j]) for i, j in subtasks)
        + sum(tick(b * t.sec_per_bit_ec) + 1 for out in t.out_bits for b in out)
    )

    x = {(i, j, s): m.new_bool_var(f"x{i}_{j}_{s}") for i, j in subtasks for s in where[i, j]}
    start = {k: m.new_int_var(0, horizon, f"st{k}") for k in subtasks}
    end = {k: m.new_int_var(0, horizon, f"en{k}") for k in subtasks}
    prev = {k: m.new_int_var(0, horizon, f"prev{k}") for k in subtasks}

    def on(i: int, j: int, s: int) -> cp_model.IntVar | int:
        return x.get((i, j, s), 0)

    for i, j in subtasks:
        m.add_exactly_one(x[i, j, s] for s in where[i, j])
        m.add(end[i, j] == start[i, j] + sum(x[i, j, s] * dur[i, j, s] for s in where[i, j]))
        # Data-ready time WT: predecessor's end plus the transfer its placement implies.
        ready = []
        for p in t.preds[i][j]:
            both = {
                s: together(m, x, (i, p, s), (i, j, s)) for s in where[i, p] if s in where[i, j]
            }
            t_ee = tick(t.out_bits[i][p] * t.sec_per_bit_ee)
            t_ec = tick(t.out_bits[i][p] * t.sec_per_bit_ec)
            # 0 on the same server, t_ec when exactly one end is the cloud, else t_ee.
            cloud_hop = on(i, p, t.cloud) + on(i, j, t.cloud) - 2 * both.get(t.cloud, 0)
            ready.append(end[i, p] + t_ee - t_ee * sum(both.values()) + (t_ec - t_ee) * cloud_hop)
        wt = m.new_int_var(0, horizon, f"wt{i}_{j}")
        m.add_max_equality(wt, ready or [arrival[i]])
        m.add_max_equality(start[i, j], [wt, prev[i, j]])
        for s in where[i, j]:
            if t.slots[s] is None:
                m.add(prev[i, j] == 0).only_enforce_if(x[i, j, s])

    # Each slot of a limited server runs its subtasks in one order: a circuit through a
    # depot node 0. A server with K slots gets K circuits; each subtask placed there
    # takes exactly one of them.
    anc = [ancestors(preds) for preds in t.preds]
    for s in t.servers:
        here = [k for k in subtasks if s in where[k]]
        slots = t.slots[s]
        if slots is None or not here:
            continue
        lit = {(k, 0): x[(*k, s)] for k in here}
        if slots > 1:
            lit = {(k, q): m.new_bool_var(f"y{k}_{s}_{q}") for k in here for q in range(slots)}
            for k in here:
                m.add(sum(lit[k, q] for q in range(slots)) == x[(*k, s)])
        for q in range(slots):
            members = [(k, lit[k, q]) for k in here]
            circuit(m, members, start, end, prev, dur, s, busy[s][q], anc)

    # Objective: gamma T_i + (1 - gamma) Cost_i, with T_i = max EN - min ST + downlink.
    gw = round(t.gamma * WEIGHT_SCALE)
    cw = WEIGHT_SCALE - gw
    terms = []
    for i, preds in enumerate(t.preds):
        last = len(preds) - 1
        first = arrival[i]
        if not t.from_arrival:
            first = m.new_int_var(0, horizon, f"first_start{i}")
            m.add_min_equality(first, [start[i, j] for j, pj in enumerate(preds) if not pj])
        downlink = sum(x[i, last, s] * tick(t.downlink[i][s]) for s in where[i, last])
        terms.append(gw * (end[i, last] - first + downlink))
    terms.append(cw * sum(x[i, j, s] * round(t.cost[i][j][s] * ticks) for i, j, s in x))
    m.minimize(sum(terms))

    hint = anneal(instance, np.random.default_rng(0), HINT).order
    for key, var in x.items():
        m.add_hint(var, key in hint)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    # a portfolio of subsolvers (LNS among them) interleaved on a fixed schedule: the same
    # path every time (see the module's doc), and far better schedules than one search
    solver.parameters.num_workers = PORTFOLIO
    solver.parameters.interleave_search = True
    status = solver.solve(m)
    schedule = evaluate(t, hint)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        # Dispatching in order of start time keeps each edge's order and precedence.
        order = sorted(
            (solver.value(start[i, j]), solver.value(end[i, j]), Dispatch(i, j, s))
            for (i, j, s), var in x.items()
            if solver.value(var)
        )
        found = evaluate(t, [d for *_, d in order])
        schedule = min(found, schedule, key=lambda sch: sch.objective)
    horizon = REACH * max(r.end for r in schedule.runs)
    cp_sat = solver.best_objective_bound / (ticks * WEIGHT_SCALE)
    bound = max(lower_bound(instance, horizon), cp_sat)
    # With several slots the model picks each subtask's slot, the execution model the one
    # that frees first; replayed, a solution only gets earlier, which is no worse when
    # latency counts from arrival, but may lengthen a span (max EN - min ST).
    exact = t.from_arrival or all(k is None or k == 1 for k in t.slots)
    proven = status == cp_model.OPTIMAL and exact
    return Solution(schedule, bound, proven, time.perf_counter() - began)


def circuit(
    m: cp_model.CpModel,
    members: list[tuple[tuple[int, int], cp_model.IntVar]],
    start: dict,
    end: dict,
    prev: dict,
    dur: dict,
    server: int,
    free: int,
    anc: list[list[set[int]]],
) -> None:
    """One slot's order: a circuit through a depot over the subtasks whose literal is
    true; each starts no earlier than the end of the one before it (``prev``), the first
    no earlier than the slot frees (``free``: work queued before t = 0)."""
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
            m.new_optional_fixed_size_interval_var(start[i, j], dur[i, j, server], here, "")
        )
        for b, ((i2, j2), _) in enumerate(members, start=1):
            if a == b or (i == i2 and j2 in anc[i][j]):
                continue
            follows = m.new_bool_var("")
            arcs.append((a, b, follows))
            m.add(prev[i2, j2] == end[i, j]).only_enforce_if(follows)
    m.add_circuit(arcs)
    m.add_no_overlap(intervals)


def together(m: cp_model.CpModel, x: dict, a: tuple, b: tuple) -> cp_model.IntVar:
    """A literal equal to x[a] AND x[b]: both subtasks on the same server."""
    both = m.new_bool_var(f"both{a}{b}")
    m.add_implication(both, x[a])
    m.add_implication(both, x[b])
    m.add_bool_or([x[a].Not(), x[b].Not(), both])
    return both
