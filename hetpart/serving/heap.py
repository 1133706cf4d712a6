"""The Python heap while serving: freeze what setup made, and record the GC's pauses.

Why freeze.  CPython's cyclic garbage collector stops every Python thread while it
runs (it holds the GIL), and a full (generation-2) collection walks *every* tracked
object in the heap.  A serving process holds a big, long-lived heap by the end of
setup: the ONNX and TVM wrappers of every model, the payloads, and, where PyTorch or
transformers are imported (the serving bench's twins), several hundred thousand
module, function and class objects.  A full collection then takes tens of ms, and it
fires whenever the objects that survived younger collections reach a quarter of the
old heap, i.e. at a rate set by the traffic's allocations: each such pause lands on
every request in flight (the batchers, the runners' Python side and the answer
delivery all wait for the GIL).  :func:`freeze` (``gc.freeze()``, Python >= 3.7) moves
everything alive into a permanent generation that collections skip, so a later full
collection walks only what serving itself allocated since.  Freezing keeps cyclic
garbage alive that exists at that moment (it is never collected); ``collect=True``
collects first, at the price of one full pause, which belongs to setup, never to a
request.  A :class:`~.server.Server` freezes (without collecting: cheap, O(1)) when it
takes its first request, once, since by then its models are added and warmed up
(``Server(freeze_heap=False)`` leaves the GC alone).  The thresholds are left as they
are: freezing takes the cost out of each full collection, while raising them would
only make collections rarer and each one longer (more to walk when it comes).

:class:`GcPauses` records each collection (generation, start, end: ``gc.callbacks``)
while it is active, for a benchmark's load window: count, max and total pause per
generation (:meth:`GcPauses.record`) and the pauses themselves (to match against slow
requests).
"""

from __future__ import annotations

import gc
import threading
import time

GENERATIONS = (0, 1, 2)


def freeze(collect: bool = False) -> int:
    """Move every object alive now into the GC's permanent generation (collections skip
    it; see the module docstring); ``collect``: a full collection first.  Returns how
    many objects are frozen now (``gc.get_freeze_count()``)."""
    if collect:
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def state() -> dict:
    """The GC's settings and counts now (JSON-ready): enabled, thresholds, per-generation
    counts, frozen objects."""
    return {"enabled": gc.isenabled(), "thresholds": list(gc.get_threshold()), "counts": list(gc.get_count()),
            "frozen": gc.get_freeze_count()}


class GcPauses:
    """Records every cyclic-GC pause while active (``with GcPauses() as pauses:`` or
    :meth:`start`/:meth:`stop`); ``pauses``: (generation, start, end) in
    ``time.perf_counter()`` seconds, in order.  Collections are serialised by the GIL,
    so a start and its stop always pair up."""

    def __init__(self):
        self.pauses: list[tuple[int, float, float]] = []
        self._started: float | None = None
        self._active = False
        self._lock = threading.Lock()

    def _callback(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        elif self._started is not None:
            self.pauses.append((int(info.get("generation", -1)), self._started, now))
            self._started = None

    def start(self) -> "GcPauses":
        with self._lock:
            if not self._active:
                gc.callbacks.append(self._callback)
                self._active = True
        return self

    def stop(self) -> None:
        with self._lock:
            if self._active:
                gc.callbacks.remove(self._callback)
                self._active = False

    def __enter__(self) -> "GcPauses":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def record(self) -> dict:
        """Per generation (``gen0``..``gen2``): ``count``, ``max_ms``, ``total_ms`` of its pauses."""
        out = {}
        for g in GENERATIONS:
            ms = [(end - start) * 1e3 for gen, start, end in self.pauses if gen == g]
            out[f"gen{g}"] = {"count": len(ms), "max_ms": max(ms) if ms else 0.0, "total_ms": sum(ms)}
        return out

    def overlap_ms(self, start: float, end: float) -> float:
        """How long (ms) the pauses recorded cover of the interval [start, end] (perf_counter s)."""
        return sum(max(0.0, min(end, e) - max(start, s)) for _, s, e in self.pauses) * 1e3


__all__ = ["GENERATIONS", "GcPauses", "freeze", "state"]
