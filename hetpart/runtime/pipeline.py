"""Pipelined execution: micro-batches flow through the partitions overlapped.

Each partition has its own worker thread and each run its own slot of handoff
buffers, so submitting batch i+1 while batch i is still on the GPU lets the CPU
partitions work on i+1 meanwhile.  At most ``slots`` batches are in flight (the
submit blocks for a free slot): with two slots the handoff buffers are double-
buffered and no batch overwrites data another batch still reads.

:func:`ideal_throughput` is the bound a perfect pipeline reaches, 1 / max(stage time),
where the GPU stream (kernels and copies together) counts as one stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .stats import RunStats


def run_pipelined(session, batches: Iterable, *, trace: str | Path | None = None) -> list[dict[str, np.ndarray]]:
    """Submit every batch as soon as a slot is free; return the outputs in batch order."""
    futures = [session.submit(feeds, timed=trace is not None) for feeds in batches]
    results = [f.result() for f in futures]
    if trace is not None:
        from .trace import write_trace

        write_trace(trace, [f.stats for f in futures], session)
    return results


@dataclass
class PipelineReport:
    """Measured pipelined throughput against the ideal 1/max(stage)."""

    batches: int
    seconds: float
    stage_seconds: dict[str, float]

    @property
    def throughput(self) -> float:
        return self.batches / self.seconds

    @property
    def ideal(self) -> float:
        return ideal_throughput(self.stage_seconds)

    @property
    def efficiency(self) -> float:
        return self.throughput / self.ideal if self.ideal else 0.0


def stage_seconds(stats: list[RunStats], stream_track: str) -> dict[str, float]:
    """Median busy time per stage (a CPU worker track, or the whole GPU stream) per batch."""
    per_track: dict[str, list[float]] = {}
    for s in stats:
        busy: dict[str, float] = {}
        for span in s.spans:
            track = span.track if span.track.startswith("cpu") else stream_track
            busy[track] = busy.get(track, 0.0) + span.seconds
        for track, secs in busy.items():
            per_track.setdefault(track, []).append(secs)
    return {t: float(np.median(v)) for t, v in per_track.items()}


def ideal_throughput(stage_secs: dict[str, float]) -> float:
    slowest = max(stage_secs.values(), default=0.0)
    return 1.0 / slowest if slowest > 0 else 0.0


def measure_pipeline(session, feeds: dict, batches: int = 32, warmup: int = 4) -> PipelineReport:
    """Time ``batches`` pipelined runs of ``feeds``; stage times come from a profiled sequential pass."""
    for _ in range(warmup):
        session.run(feeds)
    profiled = []
    for _ in range(3):  # one batch at a time: each stage's own time, without contention
        f = session.submit(feeds, timed=True)
        f.result()
        profiled.append(f.stats)
    start = time.perf_counter()
    futures = [session.submit(feeds) for _ in range(batches)]
    for f in futures:
        f.result()
    seconds = time.perf_counter() - start
    return PipelineReport(batches, seconds, stage_seconds(profiled, session.stream_track))
