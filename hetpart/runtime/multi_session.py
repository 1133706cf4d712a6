"""Several compiled models served at once, each with its own stream, workers and buffers.

``MultiSession([detector, classifier])`` opens one :class:`Session` per model.  Their
runs overlap freely: while one model's GPU partition runs, another's CPU partition
can.  :meth:`MultiSession.benchmark` reports each model's latency when run together
and the combined throughput against running the models one after another.

Models sharing one GPU under quotas (issue 20): ``MultiSession(joint_model)`` opens
the models of :func:`hetpart.compile_together` each with its quota (one pooled
device arena, :mod:`.pool`) and its priority (its CUDA stream's); or pass
``quotas=`` / ``priorities=`` (lists in model order) beside plain compiled models.
``multi.session(name)`` finds a model's session; ``Server(multi)`` serves them all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import RuntimeFailure
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

    def __init__(self, compiled_models, *, quotas=None, priorities=None, **session_options):
        self.sessions: list[Session] = []
        opened = _opened(compiled_models, quotas, priorities)
        self.names: list[str] = [name for name, *_ in opened]
        if len(set(self.names)) != len(self.names):
            raise RuntimeFailure(f"the models of a MultiSession need distinct names, got {self.names}")
        self.priorities: dict[str, int] = {name: priority or 0 for name, _, _, priority in opened}
        if session_options.get("cpu_threads") is None:
            # sessions that run at once share the cores through one gate (runtime.cpu_share)
            session_options.setdefault("cpu_sharing", "gate")
        try:
            for name, compiled, quota, priority in opened:
                extra = {k: v for k, v in (("quota", quota), ("priority", priority)) if v is not None}
                self.sessions.append(Session(compiled, **session_options, **extra))
        except BaseException:
            self.close()
            raise

    def session(self, name: str) -> Session:
        """The session of the model named ``name``."""
        if name not in self.names:
            raise RuntimeFailure(f"no model named '{name}' here (models: {', '.join(self.names)})")
        return self.sessions[self.names.index(name)]

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
        return MultiReport(list(self.names), [float(np.median(v)) for v in con_lat], [float(np.median(v)) for v in seq_lat],
                           rounds / concurrent, rounds / sequential)

    def close(self) -> None:
        for s in self.sessions:
            s.close()

    def __enter__(self) -> "MultiSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _opened(models, quotas, priorities) -> list[tuple]:
    """``(name, compiled, quota, priority)`` per model: from a JointModel's shares, or
    plain compiled models (named by their plans) with ``quotas``/``priorities`` lists."""
    shares = getattr(models, "models", None)
    if shares is not None and not isinstance(models, (list, tuple)):
        if quotas is not None or priorities is not None:
            raise RuntimeFailure("a joint model brings its own quotas and priorities; do not pass them again")
        return [(m.name, m.compiled, m.quota_bytes, m.priority) for m in shares]
    models = list(models)
    quotas = [None] * len(models) if quotas is None else list(quotas)
    priorities = [None] * len(models) if priorities is None else list(priorities)
    if not len(quotas) == len(priorities) == len(models):
        raise RuntimeFailure(f"{len(models)} models, {len(quotas)} quotas and {len(priorities)} priorities: "
                             "give one each (None for none)")
    for c, q in zip(models, quotas):
        if q is not None and getattr(c, "is_bucketed", False):
            raise RuntimeFailure("a model compiled per shape bucket opens one session per bucket; a memory quota "
                                 "is per compiled model: give it none (None), or serve one bucket's artifact")
    names = [getattr(getattr(c, "plan", None), "model", None) or f"model{i}" for i, c in enumerate(models)]
    if len(set(names)) != len(names):  # the same model twice: number them
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return list(zip(names, models, quotas, priorities))
