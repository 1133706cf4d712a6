"""How one thing is timed: warm-up calls, then repeats until a count or a time budget.

:func:`time_calls` times ``fn()`` (one inference, returning when its results are on
the host) and returns :class:`Stats` (median, p10, p90 of the per-call wall time).
:func:`time_throughput` times one call that processes ``items`` inferences (a
pipelined burst) and returns items per second.  Nothing else runs while timing: the
caller compiles and loads everything first.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Settings:
    """How hard to measure.

    ``warmup`` untimed calls first; then at least ``min_repeats`` and at most
    ``max_repeats`` timed calls, stopping early once ``budget_s`` of timed calls
    have passed (and ``min_repeats`` are done).  ``pipeline_depth`` micro-batches
    per throughput burst, ``throughput_bursts`` bursts (the median is reported).
    """

    warmup: int = 3
    min_repeats: int = 10
    max_repeats: int = 200
    budget_s: float = 2.0
    pipeline_depth: int = 16
    throughput_bursts: int = 3

    @classmethod
    def quick(cls) -> "Settings":
        """Few repeats: a smoke test or a tight time budget, not a publishable number."""
        return cls(warmup=1, min_repeats=3, max_repeats=20, budget_s=0.5, pipeline_depth=4, throughput_bursts=1)

    @classmethod
    def tiny(cls) -> "Settings":
        """The least that still exercises every code path (tests)."""
        return cls(warmup=1, min_repeats=2, max_repeats=2, budget_s=0.0, pipeline_depth=2, throughput_bursts=1)


@dataclass(frozen=True)
class Stats:
    """Per-call wall seconds over ``n`` timed calls."""

    median_s: float
    p10_s: float
    p90_s: float
    mean_s: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> "Stats":
        if not samples:
            raise ValueError("no timing samples")
        a = np.asarray(samples, dtype=float)
        return cls(float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90)),
                   float(a.mean()), len(samples))

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how noisy the measurement was."""
        return (self.p90_s - self.p10_s) / self.median_s if self.median_s > 0 else 0.0

    def to_json(self) -> dict:
        return asdict(self)


def time_calls(fn: Callable[[], object], settings: Settings) -> Stats:
    """Warm up, then time ``fn()`` per call (see :class:`Settings` for when it stops)."""
    for _ in range(settings.warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < settings.max_repeats:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        samples.append(dt)
        spent += dt
        if len(samples) >= settings.min_repeats and spent >= settings.budget_s:
            break
    return Stats.of(samples)


def time_throughput(burst: Callable[[], object], items: int, settings: Settings) -> float:
    """Items per second of ``burst()``, which processes ``items`` items; median over bursts.

    The first burst is a warm-up (pipelines allocate their buffers on first use).
    """
    burst()
    rates = []
    for _ in range(max(1, settings.throughput_bursts)):
        t0 = time.perf_counter()
        burst()
        rates.append(items / (time.perf_counter() - t0))
    return float(np.median(rates))
