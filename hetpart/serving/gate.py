"""A priority gate: at most ``slots`` batches run at once across the server's models.

Models that share one device compete for it; with a gate, a batch waits for a slot,
and a freed slot goes to the waiting batch of the highest model priority, then the
one whose oldest request arrived first.  ``slots=1`` runs one batch at a time in
arrival order across models (the "one model after another" baseline).
"""

from __future__ import annotations

import heapq
import itertools
import threading


class Gate:
    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"a gate needs at least one slot, got {slots}")
        self._free = slots
        self._cond = threading.Condition()
        self._waiting: list = []  # heap of (-priority, arrival, ticket)
        self._tickets = itertools.count()

    def acquire(self, priority: int, arrival: float) -> None:
        """Block until this batch holds a slot (highest ``priority`` first, then earliest ``arrival``)."""
        with self._cond:
            me = (-priority, arrival, next(self._tickets))
            heapq.heappush(self._waiting, me)
            while not (self._free and self._waiting[0] == me):
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()  # the next waiter may take another free slot

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()
