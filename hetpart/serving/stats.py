"""Per-model serving statistics: counts, batch sizes, queue wait and run time percentiles.

Cheap on the hot path: a counter bump and a ``deque.append`` under the model's lock;
percentiles are computed only when asked (:meth:`ModelStats.snapshot`) over the last
``window`` samples.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class ModelStats:
    """Live counters of one served model (updated by its lane; read with :meth:`snapshot`).

    ``submitted``: accepted at submit; ``rejected``: refused at submit (bad feeds);
    ``completed``/``failed``: answered with a result / with an error from its batch;
    ``shut_down``: rejected unanswered by ``close``; ``cancelled``: cancelled by the
    caller before its batch formed.  ``batch_rows`` counts batches by rows run;
    ``batch_requests`` by requests merged.
    """

    window: int = 10_000
    submitted: int = 0
    rejected: int = 0
    completed: int = 0
    failed: int = 0
    shut_down: int = 0
    cancelled: int = 0
    batches: int = 0
    batch_rows: Counter = field(default_factory=Counter)
    batch_requests: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self._wait_s: deque = deque(maxlen=self.window)
        self._run_s: deque = deque(maxlen=self.window)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + n)

    def batch(self, rows: int, requests: int, waits_s: list[float], run_s: float) -> None:
        with self._lock:
            self.batches += 1
            self.batch_rows[rows] += 1
            self.batch_requests[requests] += 1
            self._wait_s.extend(waits_s)
            self._run_s.append(run_s)

    def snapshot(self) -> dict:
        """A JSON-ready copy: counts, histograms, and p50/p90/p99 of queue wait and run time (ms)."""
        with self._lock:
            waits, runs = list(self._wait_s), list(self._run_s)
            out = {k: getattr(self, k) for k in
                   ("submitted", "rejected", "completed", "failed", "shut_down", "cancelled", "batches")}
            out["batch_rows"] = {int(k): v for k, v in sorted(self.batch_rows.items())}
            out["batch_requests"] = {int(k): v for k, v in sorted(self.batch_requests.items())}
        out["mean_batch_rows"] = (sum(k * v for k, v in out["batch_rows"].items()) / out["batches"]
                                  if out["batches"] else 0.0)
        out["queue_wait_ms"] = _percentiles(waits)
        out["run_ms"] = _percentiles(runs)
        return out


def _percentiles(samples: list[float]) -> dict:
    if not samples:
        return {f"p{p}": None for p in PERCENTILES}
    values = np.percentile(np.asarray(samples) * 1e3, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, values)}


class RunCount:
    """How many batches a server is running right now, across its models (thread-safe).

    :meth:`enter` at a batch's start returns the count with it included (1: it started
    alone); :meth:`leave` at its end.  Recorded per request as
    :attr:`~.request.RequestTiming.concurrent`: a run slowed by others running beside it
    (a CPU thread pool or the GPU shared) shows there."""

    def __init__(self):
        self._lock = threading.Lock()
        self._n = 0

    def enter(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def leave(self) -> None:
        with self._lock:
            self._n -= 1

    @property
    def now(self) -> int:
        return self._n
