"""Which batch sizes a served model runs: batch only where a bucket build pays.

A bucket build of ``b`` rows pays when one of its runs costs each request clearly less
than a batch-1 run: ``latency(b) / b <= threshold * latency(1)`` (:data:`PAYS`, 0.8:
at least 20 % cheaper per request; a build within measuring noise of batch 1 is no
reason to hold requests back or to serialise them into one run).  A model whose
builds cost about the same per row at every size (e.g. the zoo detector,
whose NonMaxSuppression and TopK are serial CPU kernels run per image) keeps only batch 1 and is served
unbatched, with no ``max_delay`` wait; its requests run side by side on the runner's
instances.

In: per bucket size its measured latency (:func:`measure` times a runner on a real
request row stacked to each size, after a warm-up run; :func:`measure_latencies` any
``run(b)``; or the caller's own timings).  Out: a
:class:`BatchingPolicy` (:func:`decide`), the value a :class:`~.server.Server` takes
per model (``add_model(..., batching=policy)``) and shows in its stats.  A user's
explicit bucket list wins: :func:`explicit` makes a policy of it, no timing taken.
Invariant: a policy's ``sizes`` are distinct, ascending and start with 1; a measured
policy's are among the sizes it timed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..errors import ServingError

PAYS = 0.8  # a bucket is kept where latency(b) / b <= PAYS * latency(1)
MEASURED, EXPLICIT = "measured", "explicit"


@dataclass(frozen=True)
class BatchingPolicy:
    """The batch sizes one model is served at, and why.

    ``sizes``: the batch sizes a batch may run at (sorted, 1 first); ``(1,)``: served
    unbatched, no ``max_delay`` wait.  ``source``: :data:`MEASURED` (from
    ``latencies_ms``, one per bucket build timed, at ``threshold``) or
    :data:`EXPLICIT` (the user's list; no timings)."""

    sizes: tuple[int, ...]
    source: str = EXPLICIT
    threshold: float | None = None
    latencies_ms: dict[int, float] = field(default_factory=dict)

    def __post_init__(self):
        if not self.sizes or self.sizes[0] != 1 or list(self.sizes) != sorted(set(self.sizes)):
            raise ServingError(f"a batching policy's sizes must be distinct, ascending and start at 1; "
                               f"got {list(self.sizes)}")

    @property
    def max_batch(self) -> int:
        return self.sizes[-1]

    @property
    def batches(self) -> bool:
        """False: every request runs alone (the model is served unbatched)."""
        return self.max_batch > 1

    def runs(self, rows: int) -> bool:
        """Whether a batch of ``rows`` rows may run: the build it lands on (the smallest
        timed size holding it, as a bucketed runner pads) is one the policy keeps.  An
        explicit policy runs any rows up to its largest size."""
        timed = sorted(self.latencies_ms) or list(self.sizes)
        build = next((b for b in timed if b >= rows), None)
        return build is None or build in self.sizes

    def per_request_ratio(self, b: int) -> float | None:
        """latency(b) / b over latency(1) (what ``threshold`` bounds), or None where not timed."""
        lat = self.latencies_ms
        return lat[b] / b / lat[1] if b in lat and lat.get(1) else None

    def record(self) -> dict:
        """JSON-ready: sizes, source, threshold, latency per build (ms) and its per-request ratio."""
        return {"sizes": list(self.sizes), "source": self.source, "threshold": self.threshold,
                "latency_ms": {str(b): v for b, v in sorted(self.latencies_ms.items())},
                "per_request_ratio": {str(b): self.per_request_ratio(b) for b in sorted(self.latencies_ms)}}

    def describe(self) -> str:
        """One line for a report, e.g. ``batches 1,2,4,8 (measured: b2 0.61x, ...; keep <= 0.8x)``."""
        what = f"batches {','.join(map(str, self.sizes))}" if self.batches else "unbatched"
        if self.source != MEASURED:
            return f"{what} ({self.source})"
        ratios = ", ".join(f"b{b} {self.per_request_ratio(b):.2f}x" for b in sorted(self.latencies_ms) if b > 1)
        return f"{what} (measured per-request time vs b1: {ratios}; kept <= {self.threshold:g}x)"


def decide(latencies_s: Mapping[int, float], threshold: float = PAYS) -> BatchingPolicy:
    """The policy the latencies call for: batch 1 and every ``b`` with
    ``latencies_s[b] / b <= threshold * latencies_s[1]``.  ``latencies_s`` must time batch 1."""
    if 1 not in latencies_s:
        raise ServingError(f"deciding which buckets pay needs batch 1's latency; got sizes {sorted(latencies_s)}")
    if not 0 < threshold <= 1:
        raise ServingError(f"the threshold is a per-request time ratio in (0, 1], got {threshold}")
    one = latencies_s[1]
    kept = [b for b in sorted(latencies_s) if b == 1 or latencies_s[b] / b <= threshold * one]
    return BatchingPolicy(tuple(kept), MEASURED, threshold, {int(b): s * 1e3 for b, s in latencies_s.items()})


def explicit(sizes) -> BatchingPolicy:
    """The user's bucket list as a policy (1 added if missing); it wins over any measurement."""
    return BatchingPolicy(tuple(sorted({1, *(int(b) for b in sizes)})), EXPLICIT)


def measure_latencies(run: Callable[[int], object], sizes, repeats: int = 10) -> dict[int, float]:
    """``{b: median seconds of run(b)}`` for each size, after one untimed run of each
    (``run(b)`` runs the model on ``b`` real rows, e.g. a bucketed session on stacked
    payloads).  The sizes take turns, round after round, so a drifting clock or a
    machine warming up weighs on every size alike."""
    sizes = sorted(set(sizes))
    for b in sizes:
        run(b)
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(repeats):
        for b in sizes:
            start = time.perf_counter()
            run(b)
            times[b].append(time.perf_counter() - start)
    return {b: statistics.median(t) for b, t in times.items()}


def measure(runner, row: Mapping[str, object], threshold: float = PAYS, repeats: int = 10) -> BatchingPolicy:
    """Time ``runner`` at each of its batch sizes (:func:`runner_sizes`) on ``row`` (one
    real request row, batch dim first) stacked to that size, and :func:`decide`."""
    import numpy as np

    def run(b: int):
        return runner.run({n: np.concatenate([np.asarray(a)] * b) for n, a in row.items()})

    return decide(measure_latencies(run, runner_sizes(runner), repeats), threshold)


def runner_sizes(runner) -> list[int]:
    """The batch sizes ``runner`` has builds for: a bucketed session's batch buckets,
    else every size 1..max_batch (a runner that pads to one build: timing them all is
    what tells)."""
    spec, buckets = getattr(runner, "spec", None), getattr(runner, "buckets", None)
    dim = getattr(spec, "batch", None)
    if dim is not None and buckets:
        return sorted({b[dim] for b in buckets if dim in b} | {1})
    return list(range(1, int(runner.max_batch) + 1))


__all__ = ["EXPLICIT", "MEASURED", "PAYS", "BatchingPolicy", "decide", "explicit", "measure", "measure_latencies",
           "runner_sizes"]
