"""What one run did: copies per kind, handoffs per cut edge, spans for the trace.

:class:`RunStats` is filled by the workers of one run (thread-safe) and published as
``session.last_run_stats`` when the run completes, so a test can assert e.g. "the
CPU->GPU edge: 0 staging copies, 1 h2d copy".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..contracts.trace import PARTITION, Span  # measured spans: a CPU worker's or the GPU stream's, host seconds

# The track of a CUDA partition's host time in traced runs (executor.HOST_LAUNCH_SPANS):
# inside a CPU worker's or the caller's time, so never a partition's or a stage's own.
HOST_TRACK = "host: cuda calls"


@dataclass
class EdgeHandoff:
    """How one tensor crossed between CPU and GPU in one run."""

    tensor: str
    direction: str  # "h2d" | "d2h"
    mode: str  # "copy" (one async copy) | "mapped" (zero-copy through the mapped pointer) | "kernel" (.small_copy)
    nbytes: int
    copies: int
    staging_copies: int = 0


@dataclass
class RunStats:
    """Counters of one run.  ``staging`` counts host copies at partition outputs (a
    partition without destination-passing); ``feed_copies``/``output_copies`` count
    copies of the caller's inputs into pinned memory and of results out of reused
    buffers; ``weight_copies``/``bytes_weights`` the streamed partitions' weights
    copied into the ring for this run's calls; ``transient_buffers`` counts buffers made for this run only, the copy
    targets of tensors of data-dependent shape (which cannot be preallocated)."""

    h2d: int = 0
    d2h: int = 0
    d2d: int = 0
    staging: int = 0
    mapped: int = 0
    feed_copies: int = 0
    output_copies: int = 0
    transient_buffers: int = 0
    weight_copies: int = 0  # streamed partitions' weight copies into the ring (copy stream)
    bytes_h2d: int = 0
    bytes_d2h: int = 0
    bytes_weights: int = 0
    edges: list[EdgeHandoff] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    latency_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, kind: str, nbytes: int = 0) -> None:
        with self._lock:
            self._counted(kind, nbytes)

    def crossed(self, kind: str, nbytes: int, handoff: EdgeHandoff) -> None:
        """``count(kind, nbytes)`` and ``edge(handoff)`` under one lock (a handoff's two records)."""
        with self._lock:
            self._counted(kind, nbytes)
            self.edges.append(handoff)

    def _counted(self, kind: str, nbytes: int) -> None:
        """One more ``kind`` and its bytes (the caller holds the lock)."""
        setattr(self, kind, getattr(self, kind) + 1)
        if kind == "h2d":
            self.bytes_h2d += nbytes
        elif kind == "d2h":
            self.bytes_d2h += nbytes
        elif kind == "weight_copies":
            self.bytes_weights += nbytes

    def edge(self, handoff: EdgeHandoff) -> None:
        with self._lock:
            self.edges.append(handoff)

    def span(self, span: Span) -> None:
        with self._lock:
            self.spans.append(span)

    def edge_for(self, tensor: str) -> EdgeHandoff:
        """The handoff record of ``tensor`` (KeyError if it did not cross devices)."""
        for e in self.edges:
            if e.tensor == tensor:
                return e
        raise KeyError(f"tensor '{tensor}' did not cross between CPU and GPU in this run")

    def partition_seconds(self) -> dict[str, float]:
        return {s.name: s.seconds for s in self.spans if s.kind == PARTITION and s.track != HOST_TRACK}
