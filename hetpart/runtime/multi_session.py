"""Several compiled models served at once, each with its own stream, workers and buffers.

``MultiSession([detector, classifier])`` opens one :class:`Session` per model.  Their
runs overlap freely: while one model's GPU partition runs, another's CPU partition
can.  :meth:`MultiSession.benchmark` reports each model's latency when run together
and the combined throughput against running the models one after another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..compiler.artifact import CompiledModel
from .session import Session


@dataclass
class MultiReport:
    """Per-model latency when concurrent, and combined throughput vs sequential (rounds/s)."""

    models: list[str]
    concurrent_latency_s: list[float]
    sequential_latency_s: list[float]
    concurrent_rounds_per_s: float
    sequential_rounds_per_s: float

    @property
    def speedup(self) -> float:
        return self.concurrent_rounds_per_s / self.sequential_rounds_per_s

    def render(self) -> str:
        lines = [f"{'model':<24}{'alone ms':>10}{'together ms':>13}"]
        for name, seq, con in zip(self.models, self.sequential_latency_s, self.concurrent_latency_s):
            lines.append(f"{name:<24}{seq * 1e3:>10.2f}{con * 1e3:>13.2f}")
        lines.append(f"combined: {self.concurrent_rounds_per_s:.1f} rounds/s together vs "
                     f"{self.sequential_rounds_per_s:.1f} one after another ({self.speedup:.2f}x)")
        return "\n".join(lines)


class MultiSession:
    """One :class:`Session` per compiled model; ``run`` serves all of them at once."""

    def __init__(self, compiled_models: list[CompiledModel], **session_options):
        self.sessions: list[Session] = []
        try:
            for compiled in compiled_models:
                self.sessions.append(Session(compiled, **session_options))
        except BaseException:
            self.close()
            raise

    def run(self, feeds: list[dict]) -> list[dict[str, np.ndarray]]:
        """Run every model on its feeds concurrently; results in model order."""
        futures = [s.submit(f) for s, f in zip(self.sessions, feeds, strict=True)]
        return [f.result() for f in futures]

    def run_sequential(self, feeds: list[dict]) -> list[dict[str, np.ndarray]]:
        """The baseline: one model after another."""
        return [s.run(f) for s, f in zip(self.sessions, feeds, strict=True)]

    def benchmark(self, feeds: list[dict], rounds: int = 20, warmup: int = 3) -> MultiReport:
        """Time ``rounds`` of every model concurrently (pipelined) and one after another."""
        for _ in range(warmup):
            self.run(feeds)
        seq_lat = [[] for _ in self.sessions]
        start = time.perf_counter()
        for _ in range(rounds):
            for i, (s, f) in enumerate(zip(self.sessions, feeds)):
                t = time.perf_counter()
                s.run(f)
                seq_lat[i].append(time.perf_counter() - t)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        futures = [[s.submit(f) for s, f in zip(self.sessions, feeds)] for _ in range(rounds)]
        con_lat = [[] for _ in self.sessions]
        for round_futures in futures:
            for i, fut in enumerate(round_futures):
                fut.result()
                con_lat[i].append(fut.stats.latency_s)
        concurrent = time.perf_counter() - start
        names = [s.compiled.plan.model or f"model{i}" for i, s in enumerate(self.sessions)]
        return MultiReport(names, [float(np.median(v)) for v in con_lat], [float(np.median(v)) for v in seq_lat],
                           rounds / concurrent, rounds / sequential)

    def close(self) -> None:
        for s in self.sessions:
            s.close()

    def __enter__(self) -> "MultiSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
