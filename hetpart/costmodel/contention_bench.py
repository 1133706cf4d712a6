"""How fast the CPU reads cold weights while a host-to-GPU copy runs, and that copy meanwhile (issue 19).

In: a CPU target and device (CUDA device 0 for the copy).  Out: :class:`ContentionSample`
(bytes per second of each, alone and together).  Raises :class:`~hetpart.errors.NoGPUError`
where no CUDA GPU is usable and :class:`~hetpart.errors.ProfileError` without cuda-bindings:
a machine without them has nothing to measure (``tools/contention_check.py`` skips).

A streamed weight copy (:mod:`hetpart.partitioner.streaming`) reads pinned host memory by
DMA, as a CPU partition's GEMVs read their weights from host memory; the timeline ran them
side by side as if each had the host's bandwidth to itself, and the H100 host measured the
plan interleaving them 37% slower than predicted (bench/results/capped-decode-overlap.md).

What is measured: the GEMV chain of :mod:`.weight_read_bench` (the compiler's ``[1, K] @
[K, N]``, 1 GiB of distinct weights per sweep) and a chain of pinned ``cudaMemcpyAsync``
host-to-device copies of :data:`CHUNK_BYTES` on a private stream.  No thread is needed:
the copies are enqueued at once (the copy engine runs them without the host) and the GEMV
calls run on the calling thread until the last copy's event completes.

* alone: :func:`.weight_read_bench.measure_weight_read`'s GEMV bandwidth; the copy chain's
  bytes over its event-timed span with the host idle;
* together: the copy chain's bytes over its span with GEMV calls running from before its
  first copy to after its last (``h2d_contended``), and the weight bytes of the GEMV calls
  that ended before the last copy did, over their time (``read_contended``).

The copy window is sized to :data:`WINDOW_S` from the copy's alone rate; ``rounds`` windows,
the median of each kept.  Invariant: every rate is positive; nothing here writes a profile.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import numpy as np

from ..errors import NoGPUError
from .weight_read_bench import GEMV_K, GEMV_N, SWEEP_BYTES, build_gemv, gemv_operands, measure_weight_read

CHUNK_BYTES = 64 << 20
"""One copy of the chain: a streamed decode layer's size class (46-64 MB slots)."""
WINDOW_S = 0.5
"""Seconds one contended window's copies take alone."""
MAX_COPIES = 1024
"""Most copies in one window (64 GiB: two minutes even at 0.5 GB/s)."""


@dataclass(frozen=True)
class ContentionSample:
    """Bytes per second, medians over the rounds: the GEMV's weight reads and the pinned
    host-to-GPU copy, each alone and while the other runs."""

    read_alone: float
    read_contended: float
    h2d_alone: float
    h2d_contended: float
    rounds: int

    def describe(self) -> str:
        g = 1e9
        return (f"GEMV weight read {self.read_alone / g:.1f} GB/s alone, {self.read_contended / g:.1f} beside the "
                f"copy ({self.read_contended / self.read_alone:.2f}x); pinned h2d {self.h2d_alone / g:.1f} GB/s "
                f"alone, {self.h2d_contended / g:.1f} beside the GEMV ({self.h2d_contended / self.h2d_alone:.2f}x); "
                f"medians of {self.rounds} rounds")


class _CopyChain:
    """A pinned host buffer and a device buffer of :data:`CHUNK_BYTES`, a stream, and an
    event after each copy of a chain (``cudaEventElapsedTime`` spans them)."""

    def __init__(self, cudart, check, chunk: int, max_copies: int):
        self.cudart, self.check, self.chunk = cudart, check, chunk
        self.device = check(cudart.cudaMalloc(chunk))
        self.pinned = check(cudart.cudaMallocHost(chunk))
        ctypes.memset(int(self.pinned), 1, chunk)  # pages touched
        self.stream = check(cudart.cudaStreamCreate())
        self.events = [check(cudart.cudaEventCreate()) for _ in range(max_copies + 1)]
        self.h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice

    def enqueue(self, copies: int) -> None:
        c = self.cudart
        self.check(c.cudaEventRecord(self.events[0], self.stream))
        for i in range(copies):
            self.check(c.cudaMemcpyAsync(self.device, int(self.pinned), self.chunk, self.h2d, self.stream))
            self.check(c.cudaEventRecord(self.events[i + 1], self.stream))

    def done(self, copies: int) -> bool:
        err = self.cudart.cudaEventQuery(self.events[copies])
        err = err[0] if isinstance(err, tuple) else err
        return int(err) == 0

    def rate(self, copies: int) -> float:
        """Bytes per second of the chain just run (waits for it)."""
        self.check(self.cudart.cudaEventSynchronize(self.events[copies]))
        ms = float(self.check(self.cudart.cudaEventElapsedTime(self.events[0], self.events[copies])))
        return copies * self.chunk / (ms / 1e3)

    def free(self) -> None:
        c = self.cudart
        for e in self.events:
            c.cudaEventDestroy(e)
        c.cudaStreamDestroy(self.stream)
        c.cudaFree(self.device)
        c.cudaFreeHost(self.pinned)


def measure_contention(target, dev, rounds: int = 3, sweep_bytes: int = SWEEP_BYTES, chunk: int = CHUNK_BYTES,
                       window_s: float = WINDOW_S, executable=None) -> ContentionSample:
    """See the module docstring.  ``dev``: the CPU device the GEMV runs on."""
    from ..targets import cuda_available
    from .transfer_bench import _check, _cudart

    if not cuda_available():
        raise NoGPUError("measuring copy contention needs a CUDA GPU; none is usable on this machine")
    cudart = _cudart()
    ex = executable if executable is not None else build_gemv(target)
    alone = measure_weight_read(target, dev, sweep_bytes=sweep_bytes, executable=ex)
    f, x, weights = gemv_operands(ex, dev, sweep_bytes)
    copies_w, weight_bytes = len(weights), GEMV_K * GEMV_N * 4
    probe = 4
    chain = _CopyChain(cudart, _check, chunk, MAX_COPIES)
    try:
        chain.enqueue(probe)
        h2d_alone = [chain.rate(probe)]
        copies = max(probe, min(MAX_COPIES, int(window_s * h2d_alone[0] / chunk) + 1))
        reads, h2ds = [], []
        for _ in range(max(1, rounds)):
            chain.enqueue(copies)
            h2d_alone.append(chain.rate(copies))
            read_bytes, read_s, i = 0, 0.0, 0
            f(x, *weights[-1])  # the GEMV already running when the first copy starts
            dev.sync()
            chain.enqueue(copies)
            while True:
                t0 = time.perf_counter()
                f(x, *weights[i % copies_w])
                dev.sync()
                t1 = time.perf_counter()
                i += 1
                if chain.done(copies):
                    break  # this call ended after the copies did: not counted
                read_bytes += weight_bytes
                read_s += t1 - t0
            f(x, *weights[i % copies_w])  # and still running after the last
            dev.sync()
            h2ds.append(chain.rate(copies))
            if read_bytes:
                reads.append(read_bytes / read_s)
    finally:
        chain.free()
    if not reads:
        raise NoGPUError("the copy chain ended before one GEMV call did; raise window_s")
    return ContentionSample(alone.bytes_per_s, float(np.median(reads)), float(np.median(h2d_alone)),
                            float(np.median(h2ds)), len(h2ds))
