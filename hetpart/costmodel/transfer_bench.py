"""Measure host<->GPU copies: pinned and pageable, both directions, 4 KiB .. 256 MiB.

In: nothing (device 0 of this machine).  Out: a :class:`TransferModel` (raw points
plus fits).  Uses cuda-bindings directly: ``cudaMemcpyAsync`` on a private stream,
bracketed by CUDA events, so the times are the copies' own (pageable copies are
staged by the driver and effectively synchronous -- that is their real cost).
Each size is copied ``repeats`` times after one warm-up copy; the median is kept.
"""

from __future__ import annotations

import numpy as np

from ..errors import NoGPUError, ProfileError
from .transfer_model import DIRECTIONS, KINDS, TransferModel, TransferPoint

SIZES = tuple(4096 * 4**i for i in range(9))  # 4 KiB, 16 KiB, ..., 256 MiB
QUICK_SIZES = tuple(4096 * 16**i for i in range(5))  # 4 KiB, 64 KiB, 1 MiB, 16 MiB, 256 MiB


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise ProfileError("measuring transfers needs cuda-bindings: pip install 'hetpart[cuda]'") from None
    return cudart


def _check(result):
    """cuda-bindings returns ``(err, *values)``; raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise NoGPUError(f"CUDA call failed with error {int(err)} ({err}) while measuring transfers")
    return values[0] if len(values) == 1 else values


class _Buffers:
    """One device buffer, one pinned and one pageable host buffer of ``nbytes``."""

    def __init__(self, cudart, nbytes: int):
        self.cudart = cudart
        self.device = _check(cudart.cudaMalloc(nbytes))
        self.pinned = _check(cudart.cudaMallocHost(nbytes))
        self.pageable = np.ones(nbytes, dtype=np.uint8)  # touched: pages are resident

    def host(self, kind: str) -> int:
        return int(self.pinned) if kind == "pinned" else int(self.pageable.ctypes.data)

    def free(self):
        _check(self.cudart.cudaFree(self.device))
        _check(self.cudart.cudaFreeHost(self.pinned))


def _time_copy(cudart, stream, events, dst, src, nbytes, kind_enum, repeats) -> list[float]:
    start, stop = events
    _check(cudart.cudaMemcpyAsync(dst, src, nbytes, kind_enum, stream))  # warm-up
    _check(cudart.cudaStreamSynchronize(stream))
    out = []
    for _ in range(repeats):
        _check(cudart.cudaEventRecord(start, stream))
        _check(cudart.cudaMemcpyAsync(dst, src, nbytes, kind_enum, stream))
        _check(cudart.cudaEventRecord(stop, stream))
        _check(cudart.cudaEventSynchronize(stop))
        out.append(float(_check(cudart.cudaEventElapsedTime(start, stop))) / 1e3)
    return out


def _repeats_for(nbytes: int, repeats: int) -> int:
    # Big copies are stable and slow: fewer repeats keep the whole sweep short.
    return max(3, repeats // (1 + nbytes // (16 << 20)))


def measure_transfers(sizes=SIZES, repeats: int = 20, progress: bool | None = None) -> TransferModel:
    """Measure every (direction, kind, size) and fit ``latency + bytes/bandwidth``."""
    from tqdm import tqdm

    from ..targets import cuda_available

    if not cuda_available():
        raise NoGPUError("measuring transfers needs a CUDA GPU; none is usable on this machine")
    cudart = _cudart()
    stream = _check(cudart.cudaStreamCreate())
    events = (_check(cudart.cudaEventCreate()), _check(cudart.cudaEventCreate()))
    h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    points = []
    bufs = _Buffers(cudart, max(sizes))
    try:
        jobs = [(d, k, n) for n in sizes for d in DIRECTIONS for k in KINDS]
        for direction, kind, n in tqdm(jobs, desc="transfers", disable=(None if progress is None else not progress)):
            host = bufs.host(kind)
            dst, src, enum = (bufs.device, host, h2d) if direction == "h2d" else (host, bufs.device, d2h)
            t = _time_copy(cudart, stream, events, dst, src, n, enum, _repeats_for(n, repeats))
            points.append(TransferPoint(direction, kind, n, float(np.median(t)), min(t), max(t), len(t)))
    finally:
        bufs.free()
        for e in events:
            cudart.cudaEventDestroy(e)
        cudart.cudaStreamDestroy(stream)
    return TransferModel.from_points(points)
