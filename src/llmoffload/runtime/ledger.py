"""The work planned on each server, in wall-clock time, corrected by what really ran.

Every server with a slot limit (an edge: one slot) keeps, per slot, a queue of the
subtasks planned on it, in the order they were planned, across requests. The queue is
both the prediction a new request is planned against (``busy_s``: when each slot will
free) and the order the slot runs in (a booking's ``first`` is set on its turn): the
model's FIFO (docs/model.md §3).
A server without a slot limit (the paper's cloud) has no queue and is never busy.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(eq=False)  # identity: two bookings with the same numbers are still two
class Booking:
    """One planned subtask on one slot; times are ``time.perf_counter()`` seconds."""

    server: int
    slot: int
    ready: float  # when its inputs are predicted to be in (the plan's WT)
    duration: float  # predicted upload + compute
    started: float | None = None  # when its call was really sent
    first: asyncio.Event = field(default_factory=asyncio.Event)  # first in its queue


class Ledger:
    """Per slot of each server with a slot limit, the bookings not yet finished."""

    def __init__(self, slots: list[int | None]) -> None:
        self.queues: list[list[list[Booking]]] = [[[] for _ in range(k or 0)] for k in slots]

    def free(self, server: int, slot: int, now: float) -> float:
        """When the slot frees: its queue replayed from ``now``. A running call ends at
        its real start plus its predicted duration (``now`` if overdue); each waiting one
        starts when the one before ends or its inputs are in, whichever is later."""
        t = now
        for b in self.queues[server][slot]:
            if b.started is None:
                t = max(t, b.ready) + b.duration
            else:
                t = max(t, b.started + b.duration)
        return t

    def busy_s(self, now: float) -> list[list[float]]:
        """``Instance.busy_s`` at ``now``: how long until each slot frees."""
        return [
            [self.free(s, q, now) - now for q in range(len(slots))]
            for s, slots in enumerate(self.queues)
        ]

    def book(self, server: int, ready: float, duration: float, now: float) -> Booking | None:
        """Queue a planned subtask on the slot that frees first, as the model does; None
        on a server without a slot limit."""
        slots = self.queues[server]
        if not slots:
            return None
        slot = min(range(len(slots)), key=lambda q: self.free(server, q, now))
        booking = Booking(server, slot, ready, duration)
        slots[slot].append(booking)
        if len(slots[slot]) == 1:
            booking.first.set()
        return booking

    def finish(self, booking: Booking) -> None:
        """Take a booking off its queue (done, failed, skipped or cancelled: its slot is
        free from now) and give the next one its turn; a second call does nothing."""
        queue = self.queues[booking.server][booking.slot]
        if booking in queue:
            queue.remove(booking)
            if queue:
                queue[0].first.set()
