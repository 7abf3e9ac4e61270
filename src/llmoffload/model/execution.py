"""The execution model (paper §3.2-§3.3, docs/model.md §3), one dispatch at a time.

A schedule is a dispatch sequence of (task, subtask, server). A server with K
slots (an edge: one) runs at most K subtasks at once, in dispatch order: each
dispatch takes the slot that frees first and starts when both that slot and
its data are ready, without preemption and without idling while work waits; a
server without a slot limit (the paper's cloud) runs everything at once. No
subtask starts before its task arrives. Times are computed when a subtask is
dispatched, so a learning environment can step the model and a scheduler can
ask "when would this finish?" before committing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from llmoffload.errors import OffloadError
from llmoffload.model.instance import Instance, Subtask
from llmoffload.model.scenario import Scenario, Server


class Dispatch(NamedTuple):
    """Send subtask ``subtask`` of task ``task`` to server ``server``."""

    task: int
    subtask: int
    server: int


class InvalidDispatch(OffloadError):
    """A dispatch that breaks precedence, modality, or repeats a subtask."""


class Breach(NamedTuple):
    """One constraint a dispatch breaks, ``times`` times: precedence once per waiting
    predecessor. Kinds: ``no-subtask``, ``no-server``, ``repeat`` (the dispatch names no
    pending subtask and server), ``precedence``, ``modality``."""

    kind: str
    times: int = 1


@dataclass(frozen=True, slots=True)
class Run:
    """When and where one subtask ran, and what it cost."""

    task: int
    subtask: int
    server: int
    start: float
    upload: float
    compute: float
    end: float
    cost: float


@dataclass(frozen=True, slots=True)
class TaskResult:
    """T_i, Cost_i, T_max - T_i, and gamma T_i + (1 - gamma) Cost_i."""

    latency: float
    cost: float
    slack: float
    objective: float


@dataclass(frozen=True)
class Schedule:
    """A finished schedule: every run in dispatch order and the per-task results."""

    runs: list[Run]
    tasks: list[TaskResult]
    objective: float

    @property
    def order(self) -> list[Dispatch]:
        return [Dispatch(r.task, r.subtask, r.server) for r in self.runs]

    @property
    def deadline_misses(self) -> int:
        return sum(t.slack < 0 for t in self.tasks)


Table = list[list[float]]  # per subtask and server; infinite where it cannot run


def per_server(amounts: list[float], factors: list[float], serves: list[list[bool]]) -> Table:
    """amount * factor[s] for every subtask and server, infinite where s cannot serve it."""
    return [
        [amount * f if ok else math.inf for f, ok in zip(factors, row, strict=True)]
        for amount, row in zip(amounts, serves, strict=True)
    ]


def work_tables(
    sc: Scenario, subtasks: list[Subtask], serves: list[list[bool]]
) -> tuple[Table, Table]:
    """Compute seconds and cost of each subtask on each server (docs/model.md §3): its
    cycles over the server's clock, at its price per 10^9 cycles; or, with ``compute:
    tokens``, the server's call, prefill and decode time, at its price per GHz-second."""
    if sc.compute == "tokens":
        seconds = [
            [
                token_seconds(s, sub) if ok else math.inf
                for s, ok in zip(sc.servers, row, strict=True)
            ]
            for sub, row in zip(subtasks, serves, strict=True)
        ]
        usd_per_second = [s.ghz * s.usd_per_ghz for s in sc.servers]
        cost = [
            [
                t * f if ok else math.inf
                for t, f, ok in zip(row, usd_per_second, ok_row, strict=True)
            ]
            for row, ok_row in zip(seconds, serves, strict=True)
        ]
        return seconds, cost
    cycles = [sub.cycles for sub in subtasks]
    sec_per_cycle = [1 / (s.ghz * 1e9) for s in sc.servers]
    usd_per_cycle = [s.usd_per_ghz / 1e9 for s in sc.servers]
    return per_server(cycles, sec_per_cycle, serves), per_server(cycles, usd_per_cycle, serves)


def token_seconds(server: Server, sub: Subtask) -> float:
    """One LLM call's time: the server's overhead, prefill and decode (ms) over the
    subtask's prompt and output tokens."""
    call_ms, prefill_ms, decode_ms = server.token_timings()
    prompt, output = sub.token_counts()
    return (call_ms + prefill_ms * prompt + decode_ms * output) / 1000


class Tables:
    """Per-instance constants, computed once: durations, costs, transfer rates."""

    def __init__(self, instance: Instance) -> None:
        sc = instance.scenario
        self.instance = instance
        self.gamma = sc.gamma
        self.t_max = sc.t_max_s
        self.from_arrival = sc.latency == "arrival"
        self.cloud = sc.cloud
        self.slots = [s.slots for s in sc.servers]  # None: no limit
        # when each slot is first free: work queued before t = 0, or 0
        self.busy = instance.busy_s or [[0.0] * (k or 0) for k in self.slots]
        self.arrival = [task.arrival_s for task in instance.tasks]
        self.servers = range(len(sc.servers))
        self.sec_per_bit_ee = 1.0 / (sc.network.edge_edge_mbps * 1e6)
        self.sec_per_bit_ec = 1.0 / (sc.network.edge_cloud_mbps * 1e6)
        serving = {m: [m in s.modalities for s in sc.servers] for m in sc.modalities}
        self.preds: list[list[list[int]]] = []
        self.succs: list[list[list[int]]] = []
        self.serves: list[list[list[bool]]] = []  # [task][subtask][server]: runs its modality
        self.out_bits: list[list[float]] = []
        self.upload: list[Table] = []
        self.compute: list[Table] = []
        self.cost: list[Table] = []
        self.downlink: list[list[float]] = []
        self.uplink_bps: list[list[float]] = []  # device -> each server, for observations
        for task in instance.tasks:
            up, down = sc.link_rates(task.distances_m)
            self.uplink_bps.append(up)

            self.preds.append([sub.preds for sub in task.subtasks])
            self.succs.append([[] for _ in task.subtasks])
            for j, sub in enumerate(task.subtasks):
                for p in sub.preds:  # once per listing, as ``waiting`` counts them
                    self.succs[-1][p].append(j)
            self.out_bits.append([sub.output_bits for sub in task.subtasks])
            bits = [sub.input_bits for sub in task.subtasks]
            serves = [serving[sub.modality] for sub in task.subtasks]
            self.serves.append(serves)
            self.upload.append(per_server(bits, [1 / r for r in up], serves))
            compute, cost = work_tables(sc, task.subtasks, serves)
            self.compute.append(compute)
            self.cost.append(cost)
            self.downlink.append([task.subtasks[-1].output_bits / down[s] for s in self.servers])
        # ``serves`` and "has no predecessor" as arrays padded with False to the longest
        # task: where Execution.valid starts from
        shape = (len(self.preds), max(map(len, self.preds), default=0))
        self.serves_array = np.zeros((*shape, len(self.servers)), bool)
        self.sources = np.zeros(shape, bool)
        for i, preds in enumerate(self.preds):
            self.serves_array[i, : len(preds)] = self.serves[i]
            self.sources[i, : len(preds)] = [not p for p in preds]

    def supports(self, task: int, subtask: int, server: int) -> bool:
        """Whether the server runs the subtask's modality."""
        return self.serves[task][subtask][server]

    def transfer(self, task: int, pred: int, src: int, dst: int) -> float:
        """Time to move a predecessor's output from server ``src`` to ``dst``."""
        if src == dst:
            return 0.0
        per_bit = (
            self.sec_per_bit_ec if src == self.cloud or dst == self.cloud else self.sec_per_bit_ee
        )
        return self.out_bits[task][pred] * per_bit


class Flat:
    """An instance's subtasks by one global index g (task i's are ``first[i]`` to
    ``first[i + 1] - 1``, its exit last), in flat lists: what code that walks every
    subtask many times reads (the local search, the LP bound), where ``Tables``'s nested
    lists would cost an index per level."""

    def __init__(self, t: Tables) -> None:
        first = [0]
        for preds in t.preds:
            first.append(first[-1] + len(preds))
        self.first = first
        self.task = [i for i, preds in enumerate(t.preds) for _ in preds]
        self.preds = [[first[i] + p for p in ps] for i, preds in enumerate(t.preds) for ps in preds]
        self.succs = [[first[i] + c for c in cs] for i, succs in enumerate(t.succs) for cs in succs]
        self.sources = [
            [first[i] + j for j, ps in enumerate(preds) if not ps]
            for i, preds in enumerate(t.preds)
        ]
        self.options = [
            [s for s in t.servers if t.supports(i, j, s)]
            for i, preds in enumerate(t.preds)
            for j in range(len(preds))
        ]
        # upload + compute: how long the subtask holds a slot of each server
        self.duration = [
            [up + comp for up, comp in zip(u, c, strict=True)]
            for ups, comps in zip(t.upload, t.compute, strict=True)
            for u, c in zip(ups, comps, strict=True)
        ]
        self.cost = [row for rows in t.cost for row in rows]
        # moving a subtask's output between two edges, and between an edge and the cloud
        self.edge_edge = [b * t.sec_per_bit_ee for bits in t.out_bits for b in bits]
        self.edge_cloud = [b * t.sec_per_bit_ec for bits in t.out_bits for b in bits]
        self.arrival = [t.arrival[i] for i in self.task]

    def __len__(self) -> int:
        return len(self.task)

    def exit(self, task: int) -> int:
        return self.first[task + 1] - 1


class Execution:
    """The system's state as subtasks are dispatched one by one, and the one statement of
    which dispatches are valid (``breaches``, ``violation``, ``valid``): the environment's
    masks and penalties and the schedulers ask it; only validate.py re-derives the rules,
    on purpose, to check it."""

    def __init__(self, instance: Instance | Tables) -> None:
        self.tables = instance if isinstance(instance, Tables) else Tables(instance)
        sizes = [len(p) for p in self.tables.preds]
        self.placed = [[-1] * n for n in sizes]
        self.start = [[0.0] * n for n in sizes]
        self.end = [[0.0] * n for n in sizes]
        self.left = list(sizes)
        # each subtask's undispatched predecessors, and which pending subtasks have none
        self.waiting = [[len(p) for p in preds] for preds in self.tables.preds]
        self.ready = self.tables.sources.copy()
        # when each slot of each limited server frees up, and the first of them per server
        self.slot_free = [list(times) for times in self.tables.busy]
        self.free = [min(times, default=0.0) for times in self.slot_free]
        self.runs: list[Run] = []

    @property
    def done(self) -> bool:
        return not any(self.left)

    def breaches(self, task: int, subtask: int, server: int) -> list[Breach]:
        """Every constraint this dispatch would break now; empty if it is valid. One that
        names no pending subtask and server breaks only that."""
        t = self.tables
        if not (0 <= task < len(t.preds) and 0 <= subtask < len(t.preds[task])):
            return [Breach("no-subtask")]
        if server not in t.servers:
            return [Breach("no-server")]
        if self.placed[task][subtask] >= 0:
            return [Breach("repeat")]
        waiting = self.waiting[task][subtask]
        found = [Breach("precedence", waiting)] if waiting else []
        if not t.supports(task, subtask, server):
            found.append(Breach("modality"))
        return found

    def violation(self, task: int, subtask: int, server: int) -> str | None:
        """Why this dispatch is not allowed now (its first breach), or None if it is."""
        found = self.breaches(task, subtask, server)
        if not found:
            return None
        match found[0].kind:
            case "no-subtask":
                return f"no subtask {subtask} in task {task}"
            case "no-server":
                return f"no server {server}"
            case "repeat":
                return f"task {task} subtask {subtask} was already dispatched"
            case "precedence":
                waiting = [p for p in self.tables.preds[task][subtask] if self.placed[task][p] < 0]
                return f"task {task} subtask {subtask} waits for predecessors {waiting}"
        return f"server {server} cannot serve the modality of task {task} subtask {subtask}"

    def valid(self) -> np.ndarray:
        """(task, subtask, server) -> True where a dispatch breaks nothing now (``breaches``
        is empty), padded with False to the longest task: what masks and schedulers read."""
        return self.ready[..., None] & self.tables.serves_array

    def ready_time(self, task: int, subtask: int, server: int) -> float:
        """WT: when every predecessor's output has reached ``server``, and not before
        the task arrives."""
        t = self.tables
        placed, end = self.placed[task], self.end[task]
        return max(
            (end[p] + t.transfer(task, p, placed[p], server) for p in t.preds[task][subtask]),
            default=t.arrival[task],
        )

    def timing(
        self, task: int, subtask: int, server: int, ready: float | None = None
    ) -> tuple[float, float]:
        """(start, end) this subtask would get if dispatched now; must be valid. ``ready``:
        its ``ready_time`` there, if the caller has it already."""
        t = self.tables
        ready = self.ready_time(task, subtask, server) if ready is None else ready
        start = max(ready, self.free[server])
        up = t.upload[task][subtask][server]
        return start, start + up + t.compute[task][subtask][server]

    def dispatch(self, task: int, subtask: int, server: int) -> Run:
        """Commit one dispatch; raises InvalidDispatch if it breaks a constraint."""
        reason = self.violation(task, subtask, server)
        if reason is not None:
            raise InvalidDispatch(reason)
        t = self.tables
        start, end = self.timing(task, subtask, server)
        slots = self.slot_free[server]
        if slots:
            slots[slots.index(min(slots))] = end
            self.free[server] = min(slots)
        self.placed[task][subtask] = server
        self.ready[task, subtask] = False
        waiting = self.waiting[task]
        for succ in t.succs[task][subtask]:
            waiting[succ] -= 1
            self.ready[task, succ] = not waiting[succ]
        self.start[task][subtask] = start
        self.end[task][subtask] = end
        self.left[task] -= 1
        run = Run(
            task,
            subtask,
            server,
            start,
            t.upload[task][subtask][server],
            t.compute[task][subtask][server],
            end,
            t.cost[task][subtask][server],
        )
        self.runs.append(run)
        return run

    def latency_so_far(
        self, task: int, extra: tuple[int, int, float, float] | None = None
    ) -> float:
        """The task's latency over its dispatched subtasks (plus ``extra`` = (subtask,
        server, start, end) if given): latest end minus first start (or its arrival), plus
        the result's download once the exit is among them; T_i when all are dispatched."""
        t = self.tables
        runs = [
            (j, s, self.start[task][j], self.end[task][j])
            for j, s in enumerate(self.placed[task])
            if s >= 0
        ]
        runs += [extra] if extra else []
        if not runs:
            return 0.0
        first = t.arrival[task] if t.from_arrival else min(r[2] for r in runs)
        exit_ = len(self.placed[task]) - 1
        down = sum(t.downlink[task][s] for j, s, *_ in runs if j == exit_)
        return max(r[3] for r in runs) - first + down

    def objective_increase(self, task: int, subtask: int, server: int) -> float:
        """What dispatching now would add to the task's weighted objective so far,
        gamma * latency_so_far + (1 - gamma) * cost so far (queue waiting included):
        summed over a schedule's dispatches, it is the schedule's objective."""
        start, end = self.timing(task, subtask, server)
        return self.increase(task, subtask, server, start, end, self.latency_so_far(task))

    def increase(
        self, task: int, subtask: int, server: int, start: float, end: float, before: float
    ) -> float:
        """``objective_increase`` of a dispatch over [start, end], the task's latency so far
        being ``before`` (a caller that keeps it need not recompute it)."""
        t = self.tables
        latency = self.latency_so_far(task, (subtask, server, start, end)) - before
        return t.gamma * latency + (1.0 - t.gamma) * t.cost[task][subtask][server]

    def task_result(self, task: int) -> TaskResult:
        """T_i and Cost_i of a task whose subtasks are all dispatched (docs/model.md §3)."""
        t = self.tables
        if self.left[task]:
            raise InvalidDispatch(f"task {task} still has {self.left[task]} subtasks to dispatch")
        latency = self.latency_so_far(task)
        cost = sum(t.cost[task][j][s] for j, s in enumerate(self.placed[task]))
        objective = t.gamma * latency + (1.0 - t.gamma) * cost
        return TaskResult(latency, cost, t.t_max - latency, objective)

    def schedule(self) -> Schedule:
        tasks = [self.task_result(i) for i in range(len(self.left))]
        return Schedule(list(self.runs), tasks, sum(r.objective for r in tasks))


def evaluate(instance: Instance | Tables, order: Iterable[tuple[int, int, int]]) -> Schedule:
    """Run a whole dispatch sequence through the execution model."""
    ex = Execution(instance)
    for task, subtask, server in order:
        ex.dispatch(task, subtask, server)
    return ex.schedule()
