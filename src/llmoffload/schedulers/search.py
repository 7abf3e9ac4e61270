"""A local-search scheduler: simulated annealing over the dispatch sequence, started from
the best classic schedule, the reference a learned policy must beat at equal time.

A solution is a dispatch sequence: every subtask once, each task's precedence kept, each
on a server that runs its modality. Two moves change it: send one subtask to another
server, or move it to another place in the sequence between its last predecessor and
its first successor. The execution model times a dispatch from the state the earlier
ones left, so a move that first changes position k needs only positions k.. re-timed:
``Sequence`` keeps, per position, when each server frees up before it (an incremental
restatement of ``Execution``'s timing, checked against it by the tests).

Annealing (Kirkpatrick et al., Science 1983) accepts a worse sequence with probability
exp(-delta / T), T cooling geometrically from ``HOT`` to ``COLD`` times the mean task's
objective over the budget. The budget is a number of moves tried (a drawn subtask with
nowhere to go counts without being timed; the same seed gives the same schedule on any
machine) or seconds (what planning at equal time means; the best classic start counts
in it, and is returned whatever the budget). The moves are drawn by Python's
``random.Random``, seeded from the run's one generator: a numpy draw per move would
cost more than re-timing it. docs/yardsticks.md has the measurements.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from llmoffload.errors import OffloadError
from llmoffload.model.execution import Dispatch, Flat, Tables
from llmoffload.model.instance import Instance
from llmoffload.schedulers.heuristics import best_classic

HOT, COLD = 0.02, 0.0005  # the temperature's ends, times the mean task's objective
REASSIGN = 0.5  # the share of moves that change a server (the rest move in the sequence)
CHECK_EVERY = 64  # evaluations between looks at the clock under a time budget


@dataclass(frozen=True)
class Budget:
    """How long the search runs: ``evaluations`` (deterministic) or ``seconds``."""

    evaluations: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        """'2000' evaluations or '0.5s' seconds, refused in one line otherwise."""
        match = re.fullmatch(r"\s*(\d+)\s*|\s*(\d*\.?\d+)\s*s\s*", text)
        if match is None or (match[1] and int(match[1]) < 1) or (match[2] and not float(match[2])):
            raise OffloadError(
                f"a search budget is a positive number of evaluations ('2000') or seconds "
                f"('0.5s'), not '{text}'"
            )
        return cls(evaluations=int(match[1])) if match[1] else cls(seconds=float(match[2]))

    def __str__(self) -> str:
        return f"{self.evaluations}" if self.evaluations is not None else f"{self.seconds:g}s"


DEFAULT = Budget(evaluations=20_000)


@dataclass(frozen=True)
class Result:
    """The best sequence found, its objective, and the evaluations and seconds it took."""

    order: list[Dispatch]
    objective: float
    evaluations: int
    seconds: float


class Move(NamedTuple):
    """A neighbour: the sequence, the servers, the first position it changes, the total cost."""

    seq: list[int]
    place: list[int]
    first: int
    spent: float


@dataclass(frozen=True)
class Timed:
    """A move re-timed: its objective and the starts, ends and states it gives."""

    move: Move
    objective: float
    start: list[float]
    end: list[float]
    state: list[tuple]


class Sequence:
    """A dispatch sequence, timed incrementally: per position, the servers' state before
    it (a float per one-slot server, a sorted tuple per multi-slot one, None for a server
    without a limit), so a change at position k re-times only k.."""

    def __init__(self, tables: Tables, order: list[Dispatch]) -> None:
        self.flat = f = Flat(tables)
        self.tables = tables
        self.movable = [g for g, opts in enumerate(f.options) if len(opts) > 1]
        initial = tuple(
            None if k is None else (float(busy[0]) if k == 1 else tuple(sorted(map(float, busy))))
            for k, busy in zip(tables.slots, tables.busy, strict=True)
        )
        n = len(f)
        self.seq = [f.first[d.task] + d.subtask for d in order]
        self.place = [0] * n
        for d in order:
            self.place[f.first[d.task] + d.subtask] = d.server
        self.pos = [0] * n
        for q, g in enumerate(self.seq):
            self.pos[g] = q
        self.start = [0.0] * n
        self.end = [0.0] * n
        self.state: list[tuple] = [initial] * (n + 1)
        self.spent = sum(f.cost[g][self.place[g]] for g in range(n))
        self.objective = self.retime(
            self.seq, self.place, self.spent, 0, self.start, self.end, self.state
        )

    def retime(
        self,
        seq: list[int],
        place: list[int],
        spent: float,
        k: int,
        start: list[float],
        end: list[float],
        state: list[tuple],
    ) -> float:
        """Time positions k.. of ``seq`` into ``start``, ``end`` and ``state`` (positions
        before k as they are) and return the objective, ``spent`` the total cost."""
        f = self.flat
        cloud, ee, ec, preds, duration = (
            self.tables.cloud,
            f.edge_edge,
            f.edge_cloud,
            f.preds,
            f.duration,
        )
        arrival = f.arrival
        free = list(state[k])
        for q in range(k, len(seq)):
            g = seq[q]
            s = place[g]
            ready = arrival[g]
            for p in preds[g]:
                ps = place[p]
                at = end[p] if ps == s else end[p] + (ec[p] if ps == cloud or s == cloud else ee[p])
                if at > ready:
                    ready = at
            slots = free[s]
            if slots is None:
                begin = ready
                done = begin + duration[g][s]
            elif isinstance(slots, float):
                begin = ready if ready > slots else slots
                done = free[s] = begin + duration[g][s]
            else:  # the slot that frees first takes it
                begin = ready if ready > slots[0] else slots[0]
                done = begin + duration[g][s]
                free[s] = tuple(sorted((*slots[1:], done)))
            start[g], end[g] = begin, done
            state[q + 1] = tuple(free)
        return self.score(place, spent, start, end)

    def score(self, place: list[int], spent: float, start: list[float], end: list[float]) -> float:
        """sum_i gamma T_i + (1 - gamma) Cost_i: the exit ends last (every subtask leads to
        it), and a task's first start is one of its sources'."""
        f, t = self.flat, self.tables
        latency = 0.0
        for i, sources in enumerate(f.sources):
            exit_ = f.exit(i)
            begun = t.arrival[i] if t.from_arrival else min(start[g] for g in sources)
            latency += end[exit_] - begun + t.downlink[i][place[exit_]]
        return t.gamma * latency + (1.0 - t.gamma) * spent

    def time(self, move: Move) -> Timed:
        """The move re-timed from its first changed position, this sequence unchanged."""
        start, end, state = self.start[:], self.end[:], self.state[:]
        objective = self.retime(move.seq, move.place, move.spent, move.first, start, end, state)
        return Timed(move, objective, start, end, state)

    def accept(self, timed: Timed) -> None:
        """Make a re-timed move this sequence."""
        move = timed.move
        self.seq, self.place, self.spent = move.seq, move.place, move.spent
        self.objective, self.start, self.end, self.state = (
            timed.objective,
            timed.start,
            timed.end,
            timed.state,
        )
        for q in range(move.first, len(move.seq)):
            self.pos[move.seq[q]] = q

    def order(self) -> list[Dispatch]:
        f = self.flat
        return [Dispatch(f.task[g], g - f.first[f.task[g]], self.place[g]) for g in self.seq]


def anneal(instance: Instance, rng: np.random.Generator, budget: Budget = DEFAULT) -> Result:
    """Simulated annealing from best classic within ``budget``; never worse than its start."""
    began = time.perf_counter()
    tables = Tables(instance)
    sq = Sequence(tables, best_classic(instance, rng))
    draw = random.Random(int(rng.integers(2**63)))
    best, best_order = sq.objective, sq.order()
    scale = sq.objective / max(1, len(tables.preds))
    tries = evaluations = 0
    progress = 0.0
    while True:
        if budget.evaluations is not None:
            if tries >= budget.evaluations:
                break
            progress = tries / budget.evaluations
        elif tries % CHECK_EVERY == 0:
            progress = (time.perf_counter() - began) / (budget.seconds or 0.0)
            if progress >= 1.0:
                break
        tries += 1
        temperature = scale * HOT * (COLD / HOT) ** progress
        move = propose(sq, draw)
        if move is None:
            continue
        evaluations += 1
        timed = sq.time(move)
        delta = timed.objective - sq.objective
        # uphill with probability exp(-delta / T); never at T = 0 (a start that costs 0)
        if delta <= 0 or (temperature > 0 and draw.random() < math.exp(-delta / temperature)):
            sq.accept(timed)
            if timed.objective < best - 1e-12:
                best, best_order = timed.objective, sq.order()
    return Result(best_order, best, evaluations, time.perf_counter() - began)


def propose(sq: Sequence, draw: random.Random) -> Move | None:
    """A neighbour, or None when the drawn subtask has nowhere else to go."""
    if sq.movable and draw.random() < REASSIGN:
        g = sq.movable[draw.randrange(len(sq.movable))]
        old = sq.place[g]
        new = draw.choice([s for s in sq.flat.options[g] if s != old])
        place = sq.place[:]
        place[g] = new
        cost = sq.flat.cost[g]
        return Move(sq.seq, place, sq.pos[g], sq.spent - cost[old] + cost[new])
    f = sq.flat
    g = draw.randrange(len(sq.seq))
    i = sq.pos[g]
    low = max((sq.pos[p] + 1 for p in f.preds[g]), default=0)
    high = min((sq.pos[c] - 1 for c in f.succs[g]), default=len(sq.seq) - 1)
    if high - low < 1:
        return None
    q = draw.randrange(low, high)
    q += q >= i  # any place in [low, high] but its own
    seq = sq.seq[:]
    del seq[i]
    seq.insert(q, g)
    return Move(seq, sq.place, min(i, q), sq.spent)


def search(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """The registry's entry: annealing within the default budget of evaluations."""
    return anneal(instance, rng).order
