"""An independent check that a schedule obeys the system model (docs/model.md §3).

Written apart from ``execution.py`` on purpose: it recomputes every time and
cost straight from the instance's raw fields, so a bug in the execution
model (or in a scheduler that builds ``Run`` records itself) shows up as a
disagreement instead of being checked against itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llmoffload.errors import OffloadError
from llmoffload.model.execution import Run, Schedule
from llmoffload.model.instance import Instance, Subtask
from llmoffload.model.scenario import Scenario, Server


def work(sc: Scenario, sub: Subtask, server: Server) -> tuple[float, float]:
    """(compute seconds, cost) of ``sub`` on ``server``, from the raw fields
    (docs/model.md §3): cycles over the clock, or the call's overhead, prefill and decode
    in ms with ``compute: tokens``; the price is per 10^9 cycles, or per GHz-second."""
    if sc.compute == "tokens":
        call_ms, prefill_ms, decode_ms = server.token_timings()
        prompt, output = sub.token_counts()
        ms = call_ms + prompt * prefill_ms + output * decode_ms
        return ms / 1000, ms / 1000 * server.ghz * server.usd_per_ghz
    return sub.cycles / (server.ghz * 1e9), sub.cycles / 1e9 * server.usd_per_ghz


def violations(instance: Instance, schedule: Schedule, tol: float = 1e-9) -> list[str]:
    """Every way ``schedule`` breaks the model, in words; empty if it is valid.

    ``schedule.runs`` must be in dispatch order: the edge queues and the
    precedence check depend on it. Equalities and inequalities hold to
    ``tol``, relative or absolute (``math.isclose``), so long schedules with
    large times are not failed for rounding.
    """
    sc = instance.scenario
    net = sc.network
    tasks = instance.tasks
    runs = schedule.runs

    def close(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)

    def early(a: float, b: float) -> bool:
        """a < b by more than rounding: the same tolerance as ``close``."""
        return a < b and not close(a, b)

    problems: list[str] = []

    # Coverage: each (task, subtask) exactly once; remember where it was dispatched.
    position: dict[tuple[int, int], int] = {}
    for k, r in enumerate(runs):
        if not (0 <= r.task < len(tasks) and 0 <= r.subtask < len(tasks[r.task].subtasks)):
            problems.append(f"run {k}: task {r.task} has no subtask {r.subtask}")
        elif (r.task, r.subtask) in position:
            problems.append(f"run {k}: task {r.task} subtask {r.subtask} dispatched again")
        else:
            position[(r.task, r.subtask)] = k
    for i, task in enumerate(tasks):
        for j in range(len(task.subtasks)):
            if (i, j) not in position:
                problems.append(f"task {i} subtask {j} is never dispatched")

    rates = [sc.link_rates(task.distances_m) for task in tasks]

    def transfer(bits: float, src: int, dst: int) -> float:
        """Moving a predecessor's output between servers (docs/model.md §3)."""
        if src == dst:
            return 0.0
        if "cloud" in (sc.servers[src].kind, sc.servers[dst].kind):
            return bits / (net.edge_cloud_mbps * 1e6)
        return bits / (net.edge_edge_mbps * 1e6)

    # Each run on its own, then against its predecessors and its server's queue.
    # server -> ends of the runs dispatched to it so far; work queued before t = 0
    # (``busy_s``) counts as runs that end when their slots free
    ends = {k: list(times) for k, times in enumerate(instance.busy_s or [])}
    for k, r in enumerate(runs):
        if position.get((r.task, r.subtask)) != k:
            continue  # out of range or a repeat: reported above
        where = f"run {k} (task {r.task} subtask {r.subtask})"
        if not 0 <= r.server < len(sc.servers):
            problems.append(f"{where}: no server {r.server}")
            continue
        server = sc.servers[r.server]
        sub = tasks[r.task].subtasks[r.subtask]
        if sub.modality not in server.modalities:
            problems.append(f"{where}: server '{server.name}' cannot serve '{sub.modality}'")
        upload = sub.input_bits / rates[r.task][0][r.server]
        compute, cost = work(sc, sub, server)
        for field, got, want in (
            ("upload", r.upload, upload),
            ("compute", r.compute, compute),
            ("end", r.end, r.start + upload + compute),
            ("cost", r.cost, cost),
        ):
            if not close(got, want):
                problems.append(f"{where}: {field} {got!r}, expected {want!r}")

        arrival = tasks[r.task].arrival_s
        if early(r.start, arrival):
            problems.append(f"{where}: starts at {r.start!r}, before its task arrives ({arrival})")
        ready = arrival
        complete = True
        for p in sub.preds:
            kp = position.get((r.task, p))
            if kp is None or kp > k:
                problems.append(f"{where}: predecessor {p} is not dispatched before it")
                complete = False
                continue
            pred: Run = runs[kp]
            if not 0 <= pred.server < len(sc.servers):
                complete = False
                continue
            arrives = pred.end + transfer(
                tasks[r.task].subtasks[p].output_bits, pred.server, r.server
            )
            if early(r.start, arrives):
                problems.append(
                    f"{where}: starts at {r.start!r}, before predecessor {p}'s output "
                    f"arrives at {arrives!r}"
                )
            ready = max(ready, arrives)

        expected_start = ready  # a server without a slot limit has no queue
        if server.slots is not None:
            # Slots taken in dispatch order, each by the first to free up: the K-th
            # latest end among the runs dispatched here before (0 while fewer than K).
            before = sorted(ends.setdefault(r.server, []), reverse=True)
            free = before[server.slots - 1] if len(before) >= server.slots else 0.0
            if early(r.start, free):
                problems.append(
                    f"{where}: starts at {r.start!r} while all {server.slots} slot(s) of "
                    f"'{server.name}' are busy until {free!r}"
                )
            expected_start = max(ready, free)  # no idling while work waits
            ends[r.server].append(r.end)
        if complete and not close(r.start, expected_start):
            problems.append(f"{where}: starts at {r.start!r}, expected {expected_start!r}")

    problems.extend(_overfilled(instance, schedule, early))
    problems.extend(_task_problems(instance, schedule, position, close))
    return problems


def _overfilled(
    instance: Instance, schedule: Schedule, early: Callable[[float, float], bool]
) -> list[str]:
    """Servers that run more subtasks at some instant than they have slots: at the
    start of each run, count the runs there that have started and not yet ended."""
    problems = []
    for k, server in enumerate(instance.scenario.servers):
        here = [r for r in schedule.runs if r.server == k]
        for r in here:
            busy = sum(not early(r.start, o.start) and early(r.start, o.end) for o in here)
            if server.slots is not None and busy > server.slots:
                problems.append(
                    f"'{server.name}' runs {busy} subtasks at {r.start!r}, "
                    f"more than its {server.slots} slot(s)"
                )
                break
    return problems


def _task_problems(
    instance: Instance,
    schedule: Schedule,
    position: dict[tuple[int, int], int],
    close: Callable[[float, float], bool],
) -> list[str]:
    """Latency, cost, slack and objective per task, and the total (docs/model.md §3)."""
    sc = instance.scenario
    if len(schedule.tasks) != len(instance.tasks):
        return [f"{len(schedule.tasks)} task results for {len(instance.tasks)} tasks"]
    problems: list[str] = []
    total = 0.0
    for i, (task, result) in enumerate(zip(instance.tasks, schedule.tasks, strict=True)):
        keys = [(i, j) for j in range(len(task.subtasks))]
        if any(key not in position for key in keys):
            return problems  # coverage already reported; totals would mislead
        mine = [schedule.runs[position[key]] for key in keys]
        last = mine[-1]
        if not 0 <= last.server < len(sc.servers):
            return problems
        first = task.arrival_s if sc.latency == "arrival" else min(r.start for r in mine)
        _, down = sc.link_rates(task.distances_m)
        latency = (
            max(r.end for r in mine) - first + task.subtasks[-1].output_bits / down[last.server]
        )
        cost = sum(
            work(sc, sub, sc.servers[r.server])[1]
            for sub, r in zip(task.subtasks, mine, strict=True)
            if 0 <= r.server < len(sc.servers)
        )
        objective = sc.gamma * latency + (1.0 - sc.gamma) * cost
        total += objective
        for field, got, want in (
            ("latency", result.latency, latency),
            ("cost", result.cost, cost),
            ("slack", result.slack, sc.t_max_s - latency),
            ("objective", result.objective, objective),
        ):
            if not close(got, want):
                problems.append(f"task {i}: {field} {got!r}, expected {want!r}")
    if not close(schedule.objective, total):
        problems.append(f"objective {schedule.objective!r}, expected {total!r}")
    return problems


def check(instance: Instance, schedule: Schedule) -> None:
    """Raise OffloadError naming the first problems if ``schedule`` is invalid."""
    problems = violations(instance, schedule)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise OffloadError("invalid schedule: " + "; ".join(problems[:3]) + more)
