"""Where the runtime's buffers come from: host, page-locked host, and device memory.

Every buffer is allocated once, when a session starts, and freed by ``close()``.
A :class:`Buffer` is one tensor's bytes as a kernel on one *side* takes them
(``side="cpu"``: a ``cpu:0`` TVM tensor; ``side="cuda"``: a ``cuda:0`` tensor).

Two implementations of the same :class:`Memory` interface:

* :class:`CudaMemory` (a real GPU): host buffers come from ``cudaHostAlloc`` with the
  mapped flag, device buffers from TVM on ``cuda:0``, and :meth:`Memory.mapped` gives
  a ``cuda:0`` view of a pinned buffer through its mapped device pointer.
* :class:`SimulatedMemory` (CI, no GPU): "pinned" and "device" buffers are separate
  64-byte-aligned host arrays, and a mapped view shares the host buffer's pointer, so
  pointer identity and copy counts behave exactly as on the GPU.

Invariant: ``buffer.ptr`` is the address the kernel sees, and ``buffer.array`` (when
not None) is a numpy array over exactly those bytes.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..compiler.artifact import TensorSpec
from ..errors import RuntimeFailure
from . import cuda_api
from .dlpack import tensor_view

ALIGNMENT = 64  # TVM kernels assume 64-byte aligned data


@dataclass
class Buffer:
    """One tensor's bytes, shaped and typed, as the kernels of ``side`` take them."""

    spec: TensorSpec
    side: str
    tensor: Any = field(repr=False)
    ptr: int
    array: np.ndarray | None = field(default=None, repr=False)
    pinned: bool = False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.spec.shape, dtype=np.int64)) * np.dtype(self.spec.dtype).itemsize


def aligned_array(spec: TensorSpec) -> np.ndarray:
    """A zeroed C-contiguous numpy array for ``spec`` whose data is 64-byte aligned."""
    dtype = np.dtype(spec.dtype)
    nbytes = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(nbytes + ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(spec.shape)


def host_buffer(spec: TensorSpec) -> Buffer:
    """Ordinary (pageable) host memory, for tensors that never cross to the GPU."""
    arr = aligned_array(spec)
    return Buffer(spec, "cpu", tensor_view(arr.ctypes.data, spec.shape, spec.dtype, owner=arr),
                  arr.ctypes.data, arr)


def wrap_host_array(arr: np.ndarray, spec: TensorSpec) -> Buffer:
    """A cpu-side Buffer over the caller's own array (zero copy; ``arr`` is kept alive)."""
    return Buffer(spec, "cpu", tensor_view(arr.ctypes.data, spec.shape, spec.dtype, owner=arr),
                  arr.ctypes.data, arr)


class Memory:
    """Allocates pinned host buffers, device buffers and mapped views, and frees them all."""

    simulated: bool

    def pinned(self, spec: TensorSpec) -> Buffer:
        raise NotImplementedError

    def device(self, spec: TensorSpec) -> Buffer:
        raise NotImplementedError

    def mapped(self, host: Buffer) -> Buffer:
        """A ``cuda``-side Buffer reading and writing ``host``'s pinned bytes in place."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def live_bytes(self) -> int:
        """Bytes still allocated (0 after ``close()``: the leak check)."""
        raise NotImplementedError


class SimulatedMemory(Memory):
    """The GPU's memory kinds, imitated with separate aligned host arrays."""

    simulated = True

    def __init__(self):
        self._arrays: list[np.ndarray] = []

    def _take(self, spec: TensorSpec, side: str, pinned: bool) -> Buffer:
        arr = aligned_array(spec)
        self._arrays.append(arr)
        view = tensor_view(arr.ctypes.data, spec.shape, spec.dtype, owner=arr)
        return Buffer(spec, side, view, arr.ctypes.data, arr, pinned=pinned)

    def pinned(self, spec: TensorSpec) -> Buffer:
        return self._take(spec, "cpu", pinned=True)

    def device(self, spec: TensorSpec) -> Buffer:
        return self._take(spec, "cuda", pinned=False)

    def mapped(self, host: Buffer) -> Buffer:
        return Buffer(host.spec, "cuda", host.tensor, host.ptr, host.array, pinned=True)

    def close(self) -> None:
        self._arrays.clear()

    @property
    def live_bytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)


class CudaMemory(Memory):
    """Pinned (``cudaHostAlloc``, mapped) host memory and TVM device tensors on ``cuda:0``."""

    simulated = False

    def __init__(self):
        import tvm

        self._tvm = tvm
        self._pinned: dict[int, int] = {}  # ptr -> nbytes
        self._device: list[Any] = []
        self._lock = threading.Lock()

    def pinned(self, spec: TensorSpec) -> Buffer:
        nbytes = max(int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize, 1)
        ptr = cuda_api.host_alloc(nbytes, mapped=True)
        with self._lock:
            self._pinned[ptr] = nbytes
        count = int(np.prod(spec.shape, dtype=np.int64))
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        buf = np.frombuffer(raw, dtype=spec.dtype, count=count).reshape(spec.shape)
        return Buffer(spec, "cpu", tensor_view(ptr, spec.shape, spec.dtype, owner=buf), ptr, buf, pinned=True)

    def device(self, spec: TensorSpec) -> Buffer:
        try:
            t = self._tvm.runtime.empty(tuple(spec.shape), spec.dtype, self._tvm.cuda(0))
        except Exception as e:  # noqa: BLE001 - TVM reports OOM as a generic error
            raise _oom_or_raise(e, f"allocating the device buffer for tensor '{spec.name}'", spec)
        self._device.append(t)
        return Buffer(spec, "cuda", t, int(t.data_ptr()))

    def mapped(self, host: Buffer) -> Buffer:
        dptr = cuda_api.host_device_pointer(host.ptr)
        view = tensor_view(dptr, host.spec.shape, host.spec.dtype, device="cuda", owner=host)
        return Buffer(host.spec, "cuda", view, dptr, host.array, pinned=True)

    def close(self) -> None:
        with self._lock:
            ptrs, self._pinned = list(self._pinned), {}
        for ptr in ptrs:
            cuda_api.host_free(ptr)
        self._device.clear()

    @property
    def live_bytes(self) -> int:
        return sum(self._pinned.values()) + sum(
            int(np.prod(t.shape, dtype=np.int64)) * np.dtype(str(t.dtype)).itemsize for t in self._device)


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return "out of memory" in text or "memoryallocation" in text or "cudaerrormemoryallocation" in text


def _oom_or_raise(error: Exception, doing: str, spec: TensorSpec) -> Exception:
    """A RuntimeFailure with sizes and advice if ``error`` is a GPU out-of-memory, else ``error``."""
    if not is_out_of_memory(error):
        return error
    nbytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
    try:
        free, total = cuda_api.mem_get_info()
        have = f"; {free / 2**20:.0f} MiB of {total / 2**20:.0f} MiB free"
    except Exception:  # noqa: BLE001 - the report must not fail while reporting
        have = ""
    return RuntimeFailure(
        f"the GPU ran out of memory {doing} ({nbytes / 2**20:.1f} MiB{have}); "
        "use fewer session slots, a smaller batch, or re-plan with --gpu-memory"
    )
