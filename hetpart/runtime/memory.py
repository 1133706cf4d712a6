"""Where the runtime's buffers come from: host, page-locked host, and device memory.

Every buffer of a tensor with a static shape is allocated once, when a session
starts, and freed by ``close()``.  A tensor whose shape is data-dependent (a
:class:`TensorSpec` dim that is a string, e.g. NonMaxSuppression's
``selected_indices`` of shape ``('s', 's')``) cannot be preallocated: its producer's
VM allocates it, and a copy across devices lands in a :meth:`Memory.transient`
buffer of the actual size, made for that run and dropped with it.
A :class:`Buffer` is one tensor's bytes as a kernel on one *side* takes them
(``side="cpu"``: a ``cpu:0`` TVM tensor; ``side="cuda"``: a ``cuda:0`` tensor); its
``spec`` always has the concrete shape of those bytes.

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
import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import tvm_ffi

from ..compiler.artifact import TensorSpec
from ..contracts.shapes import static_shape
from ..errors import InternalError, RuntimeFailure
from . import cuda_api
from .dlpack import tensor_view

ALIGNMENT = 64  # TVM kernels assume 64-byte aligned data


def is_static(shape) -> bool:
    """True when every dim of ``shape`` is an integer: :func:`hetpart.contracts.shapes.static_shape`
    (the compiler's test too; a string dim is symbolic, sized per call)."""
    return static_shape(shape)


_DTYPES: dict = {}


def np_dtype(dtype) -> np.dtype:
    """``np.dtype(dtype)``, cached (it is asked on every run)."""
    found = _DTYPES.get(dtype)
    if found is None:
        found = _DTYPES[dtype] = np.dtype(dtype)
    return found


def itemsize_of(dtype) -> int:
    """``np.dtype(dtype).itemsize``, cached (it is asked on every run)."""
    return np_dtype(dtype).itemsize


def nbytes_of(shape, dtype) -> int:
    """Bytes of a compact tensor of a static ``shape``."""
    return int(math.prod(shape)) * itemsize_of(dtype)


def concrete(spec: TensorSpec, shape) -> TensorSpec:
    """``spec`` with the actual ``shape`` of one value (``spec`` itself when it is static)."""
    shape = tuple(int(d) for d in shape)
    return spec if tuple(spec.shape) == shape else replace(spec, shape=shape)


def _require_static(spec: TensorSpec, doing: str) -> None:
    if not is_static(spec.shape):
        raise InternalError(
            f"cannot {doing} for tensor '{spec.name}': its shape {list(spec.shape)} is data-dependent "
            "(pass the concrete spec of one value)")


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
        if self.array is not None:
            return self.array.nbytes
        return nbytes_of(self.spec.shape, self.spec.dtype)


def aligned_array(spec: TensorSpec) -> np.ndarray:
    """A zeroed C-contiguous numpy array for ``spec`` (static shape) whose data is 64-byte aligned."""
    return _aligned(spec, np.zeros)


def aligned_empty(spec: TensorSpec) -> np.ndarray:
    """Like :func:`aligned_array` but not zeroed: for arrays every byte of which is
    written before it is read (a kernel's output, a copy of a feed)."""
    return _aligned(spec, np.empty)


def _aligned(spec: TensorSpec, make) -> np.ndarray:
    # Each run allocates its fresh outputs (and unaligned feeds' copies) here, so the
    # cheap spellings: the address through ctypes, the view built in one constructor
    # (``__array_interface__`` and slice/view/reshape cost ~5 us together).
    _require_static(spec, "allocate an array")
    dtype = np_dtype(spec.dtype)
    nbytes = nbytes_of(spec.shape, spec.dtype)
    raw = make(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(raw)) % ALIGNMENT
    return np.ndarray(tuple(spec.shape), dtype, raw, start)


def data_ptr(arr: np.ndarray) -> int:
    """The address of ``arr``'s first byte (cheaper than ``arr.ctypes.data``)."""
    return arr.__array_interface__["data"][0]


_ROW_MAJOR: dict = {}


def _compact(arr: np.ndarray) -> bool:
    """True when ``arr``'s strides are exactly the row-major ones of its shape (C-contiguous
    numpy arrays may carry any stride on a dim of size 1, which a kernel could reject)."""
    key = (arr.shape, arr.itemsize)
    strides = _ROW_MAJOR.get(key)
    if strides is None:
        strides, step = [], arr.itemsize
        for d in reversed(arr.shape):
            strides.append(step)
            step *= d
        strides = tuple(reversed(strides))
        if len(_ROW_MAJOR) < 4096:  # a run's shapes repeat; bucketed or dynamic ones stay few
            _ROW_MAJOR[key] = strides
    return arr.strides == strides


def host_tensor(arr: np.ndarray, spec: TensorSpec):
    """A ``cpu:0`` TVM tensor over ``arr``'s bytes (zero copy; keeps ``arr`` alive).

    numpy's own DLPack export is an order of magnitude cheaper than the hand-built
    :func:`~.dlpack.tensor_view`; the latter stays for what numpy cannot export
    (read-only arrays) or would export with unusual strides."""
    if arr.flags.writeable and _compact(arr):
        try:
            return tvm_ffi.from_dlpack(arr, require_alignment=0)
        except (BufferError, TypeError, ValueError, RuntimeError):
            pass
    return tensor_view(data_ptr(arr), spec.shape, spec.dtype, owner=arr)


_DTYPE_NAMES: dict = {}


def dtype_name(dtype: np.dtype) -> str:
    """``str(dtype)``, cached (numpy's ``__str__`` costs microseconds per call)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


def view_of(block: Buffer, offset: int, spec: TensorSpec) -> Buffer:
    """``spec``'s bytes at ``offset`` of ``block`` (a pinned or device Buffer of uint8), as a
    Buffer of ``block``'s side and kind: its tensor on ``block``'s tensor's device, its array a
    view where ``block`` has one.  ``block`` is kept alive by the view's tensor."""
    _require_static(spec, "view a block")
    nbytes = nbytes_of(spec.shape, spec.dtype)
    if offset < 0 or offset + nbytes > block.nbytes:
        raise InternalError(f"tensor '{spec.name}' ({nbytes} bytes at {offset}) outside a block of {block.nbytes}")
    ptr = block.ptr + offset
    on_gpu = block.tensor is not None and block.tensor.device.dlpack_device_type() == 2  # kDLCUDA
    array = None
    if block.array is not None:
        array = block.array.reshape(-1).view(np.uint8)[offset:offset + nbytes].view(np_dtype(spec.dtype)).reshape(
            tuple(spec.shape))
    tensor = tensor_view(ptr, spec.shape, spec.dtype, device="cuda" if on_gpu else "cpu", owner=block)
    return Buffer(spec, block.side, tensor, ptr, array, block.pinned)


def host_buffer(spec: TensorSpec) -> Buffer:
    """Ordinary (pageable) host memory, for tensors that never cross to the GPU."""
    arr = aligned_array(spec)
    return Buffer(spec, "cpu", tensor_view(arr.ctypes.data, spec.shape, spec.dtype, owner=arr),
                  arr.ctypes.data, arr)


def wrap_host_array(arr: np.ndarray, spec: TensorSpec) -> Buffer:
    """A cpu-side Buffer over the caller's own array (zero copy; ``arr`` is kept alive).
    ``spec`` may have data-dependent dims: the Buffer gets ``arr``'s actual shape."""
    if tuple(spec.shape) != arr.shape:
        spec = concrete(spec, arr.shape)
    tensor = host_tensor(arr, spec)
    return Buffer(spec, "cpu", tensor, int(tensor.data_ptr()), arr)


def wrap_result(tensor, spec: TensorSpec, side: str) -> Buffer:
    """A Buffer over a tensor a partition's VM allocated and returned (zero copy).

    How a data-dependent output leaves its producer: ``spec`` gets the tensor's actual
    shape; a host-resident tensor (a CPU partition, or a simulated CUDA one) also gets
    ``array``, a numpy view of the same bytes.
    """
    spec = concrete(spec, tuple(tensor.shape))
    array = None
    if tensor.device.dlpack_device_type() in (1, 3):  # kDLCPU, kDLCUDAHost
        array = np.from_dlpack(tensor)
    return Buffer(spec, side, tensor, int(tensor.data_ptr()), array)


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

    def transient(self, spec: TensorSpec, side: str) -> Buffer:
        """A buffer for one run only (a data-dependent shape; ``spec`` is concrete):
        ordinary host memory for ``"cpu"``, device memory for ``"cuda"``.  It is freed
        when the last reference goes, is not held by the session and does not count in
        :attr:`live_bytes`."""
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

    def _take(self, spec: TensorSpec, side: str, pinned: bool, keep: bool = True) -> Buffer:
        arr = aligned_array(spec)
        if keep:
            self._arrays.append(arr)
        view = tensor_view(arr.ctypes.data, spec.shape, spec.dtype, owner=arr)
        return Buffer(spec, side, view, arr.ctypes.data, arr, pinned=pinned)

    def pinned(self, spec: TensorSpec) -> Buffer:
        return self._take(spec, "cpu", pinned=True)

    def device(self, spec: TensorSpec) -> Buffer:
        return self._take(spec, "cuda", pinned=False)

    def mapped(self, host: Buffer) -> Buffer:
        return Buffer(host.spec, "cuda", host.tensor, host.ptr, host.array, pinned=True)

    def transient(self, spec: TensorSpec, side: str) -> Buffer:
        return self._take(spec, side, pinned=False, keep=False)

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
        _require_static(spec, "preallocate a pinned buffer")
        nbytes = max(nbytes_of(spec.shape, spec.dtype), 1)
        ptr = cuda_api.host_alloc(nbytes, mapped=True)
        with self._lock:
            self._pinned[ptr] = nbytes
        count = int(np.prod(spec.shape, dtype=np.int64))
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        buf = np.frombuffer(raw, dtype=spec.dtype, count=count).reshape(spec.shape)
        return Buffer(spec, "cpu", tensor_view(ptr, spec.shape, spec.dtype, owner=buf), ptr, buf, pinned=True)

    def device(self, spec: TensorSpec) -> Buffer:
        buf = self._device_tensor(spec)
        self._device.append(buf.tensor)
        return buf

    def _device_tensor(self, spec: TensorSpec) -> Buffer:
        _require_static(spec, "allocate a device buffer")
        try:
            t = self._tvm.runtime.empty(tuple(int(d) for d in spec.shape), spec.dtype, self._tvm.cuda(0))
        except Exception as e:  # noqa: BLE001 - TVM reports OOM as a generic error
            raise _oom_or_raise(e, f"allocating the device buffer for tensor '{spec.name}'", spec)
        return Buffer(spec, "cuda", t, int(t.data_ptr()))

    def transient(self, spec: TensorSpec, side: str) -> Buffer:
        # Host side: ordinary aligned memory (a d2h copy into it is synchronous, which a
        # per-run buffer can afford; cudaHostAlloc per run would cost more).
        return host_buffer(spec) if side == "cpu" else self._device_tensor(spec)

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
    nbytes = nbytes_of(spec.shape, spec.dtype)
    try:
        free, total = cuda_api.mem_get_info()
        have = f"; {free / 2**20:.0f} MiB of {total / 2**20:.0f} MiB free"
    except Exception:  # noqa: BLE001 - the report must not fail while reporting
        have = ""
    return RuntimeFailure(
        f"the GPU ran out of memory {doing} ({nbytes / 2**20:.1f} MiB{have}); "
        "use fewer session slots, a smaller batch, or re-plan with --gpu-memory"
    )
