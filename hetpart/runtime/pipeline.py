"""Pipelined execution: micro-batches flow through the partitions overlapped.

Each partition has its own worker thread and each run its own slot of handoff
buffers, so submitting batch i+1 while batch i is still on the GPU lets the CPU
partitions work on i+1 meanwhile.  At most ``slots`` batches are in flight (the
submit blocks for a free slot): with two slots the handoff buffers are double-
buffered and no batch overwrites data another batch still reads.

:func:`ideal_throughput` is the bound a perfect pipeline reaches, 1 / max(stage time),
where the GPU stream (kernels and copies together) counts as one stage.  A slot is
held from submit until the run's outputs are collected, so with ``slots`` = k the
pipeline also needs (slot-held time of one batch) / k <= max(stage time): with two
slots, everything after the slowest stage (copies, GPU, collection, the next submit)
must fit in one slowest-stage time.

:func:`measure_pipeline` interleaves rounds of stage-alone runs and pipelined passes
and reports medians with the per-round spread (a single timing swings on a busy VM).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import RuntimeFailure
from .stats import HOST_TRACK, RunStats


def run_pipelined(session, batches: Iterable, *, trace: str | Path | None = None) -> list[dict[str, np.ndarray]]:
    """Submit every batch as soon as a slot is free; return the outputs in batch order."""
    futures = [session.submit(feeds, timed=trace is not None) for feeds in batches]
    results = [f.result() for f in futures]
    if trace is not None:
        from .trace import write_trace

        write_trace(session, [f.stats for f in futures], trace)
    return results


@dataclass
class PipelineTiming:
    """``batches`` pipelined in ``seconds`` (first submit to last result), against the
    ``stage_seconds`` each stage took alone: one round of :func:`measure_pipeline`."""

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


@dataclass
class PipelineReport(PipelineTiming):
    """Measured pipelined throughput against the ideal 1/max(stage).

    ``seconds`` is the median pipelined pass and ``stage_seconds`` the median of every
    stage's time alone over all rounds; ``rounds`` keeps each round, whose own
    efficiency (against the stage times measured next to it) gives the spread."""

    rounds: list[PipelineTiming] = field(default_factory=list)

    @property
    def efficiency_range(self) -> tuple[float, float]:
        """(lowest, highest) per-round efficiency; the overall one twice without rounds."""
        per_round = [r.efficiency for r in self.rounds] or [self.efficiency]
        return min(per_round), max(per_round)


def stage_seconds(stats: list[RunStats], stream_track: str) -> dict[str, float]:
    """Median busy time per stage (a CPU worker track, or the whole GPU stream) per batch."""
    return {t: float(np.median(v)) for t, v in _stage_samples(stats, stream_track).items()}


def _stage_samples(stats: list[RunStats], stream_track: str) -> dict[str, list[float]]:
    """Each stage's busy time in each run: {track: [seconds per run]}."""
    per_track: dict[str, list[float]] = {}
    for s in stats:
        busy: dict[str, float] = {}
        for span in s.spans:
            if span.track == HOST_TRACK:  # a CUDA call's host time, inside a stage's: not a stage
                continue
            track = span.track if span.track.startswith("cpu") else stream_track
            busy[track] = busy.get(track, 0.0) + span.seconds
        for track, secs in busy.items():
            per_track.setdefault(track, []).append(secs)
    return per_track


def ideal_throughput(stage_secs: dict[str, float]) -> float:
    slowest = max(stage_secs.values(), default=0.0)
    return 1.0 / slowest if slowest > 0 else 0.0


def measure_pipeline(session, feeds: dict, batches: int = 32, warmup: int = 4, rounds: int = 5,
                     alone: int = 5) -> PipelineReport:
    """Pipelined throughput of ``feeds`` against the ideal, over ``rounds`` interleaved rounds.

    Each round times ``alone`` runs one at a time (each stage's own time, no overlap:
    the ideal's input) and then ``batches`` pipelined runs, so both see the same machine
    state; the report takes medians and keeps the rounds for the spread.  Every run,
    warm-up included, goes through the session's workers (``submit``): an inline run
    would run CPU partitions on the caller's thread, which TVM then makes a thread
    pool of its own, pinned to the same cores as the worker's."""
    if rounds < 1 or alone < 1 or batches < 1:
        raise RuntimeFailure(f"measure_pipeline needs rounds, alone and batches >= 1, got {rounds}, {alone}, {batches}")
    for _ in range(warmup):
        session.submit(feeds).result()
    measured: list[PipelineTiming] = []
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        profiled = []
        for _ in range(alone):
            f = session.submit(feeds, timed=True)
            f.result()
            profiled.append(f.stats)
        for track, secs in _stage_samples(profiled, session.stream_track).items():
            samples.setdefault(track, []).extend(secs)
        measured.append(PipelineTiming(batches, _pipelined_seconds(session, feeds, batches),
                                      stage_seconds(profiled, session.stream_track)))
    return PipelineReport(batches, float(np.median([r.seconds for r in measured])),
                          {t: float(np.median(v)) for t, v in samples.items()}, measured)


def _pipelined_seconds(session, feeds: dict, batches: int) -> float:
    """Wall time of ``batches`` untimed runs submitted back to back."""
    start = time.perf_counter()
    futures = [session.submit(feeds) for _ in range(batches)]
    for f in futures:
        f.result()
    return time.perf_counter() - start
