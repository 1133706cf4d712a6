"""View a raw pointer as a TVM tensor, without copying, through DLPack.

The runtime owns memory TVM did not allocate: page-locked host buffers and their
mapped device addresses (``cudaHostAlloc``/``cudaHostGetDevicePointer``).  A TVM
kernel only accepts a tensor whose *device* matches its target, so the same bytes
must be presented as a ``cpu:0`` tensor to a CPU partition and as a ``cuda:0``
tensor to a GPU partition reading the mapped pointer.  :func:`tensor_view` builds
the DLPack descriptor for that by hand (ctypes), hands it to ``tvm_ffi.from_dlpack``
and keeps ``owner`` alive until TVM releases the view.

Invariant: the returned tensor's ``data_ptr()`` is ``ptr``; no byte is copied.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import tvm_ffi

DEVICE_TYPES = {"cpu": 1, "cuda": 2, "cuda_host": 3}
_DTYPE_CODES = {"i": 0, "u": 1, "f": 2, "b": 6}
_BFLOAT = 4  # kDLBfloat: numpy has no bfloat16 kind (ml_dtypes' is "V")


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [
    ("dl_tensor", _DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", _DELETER),
]

# Views TVM still holds, by address of their descriptor: the descriptor, its shape
# array and the owner must outlive the view, and nothing else references them.
_LIVE: dict[int, tuple] = {}
_LIVE_LOCK = threading.RLock()


@_DELETER
def _release(managed_ptr):
    with _LIVE_LOCK:
        entry = _LIVE.pop(ctypes.addressof(managed_ptr.contents), None)
    # Dropping the owner may free other views, whose deleters re-enter here: do it
    # with the lock released (holding it deadlocked the first real-GPU session).
    del entry


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class _Exporter:
    """The minimal ``__dlpack__`` producer ``tvm_ffi.from_dlpack`` consumes once."""

    def __init__(self, ptr: int, shape: tuple, dtype: np.dtype, device: tuple[int, int], owner):
        self._device = device
        managed = _DLManagedTensor()
        shape_arr = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        managed.dl_tensor.data = ptr
        managed.dl_tensor.device = _DLDevice(*device)
        managed.dl_tensor.ndim = len(shape)
        code = 6 if dtype == np.bool_ else _BFLOAT if dtype.name == "bfloat16" else _DTYPE_CODES[dtype.kind]
        managed.dl_tensor.dtype = _DLDataType(code, dtype.itemsize * 8, 1)
        managed.dl_tensor.shape = ctypes.cast(shape_arr, ctypes.POINTER(ctypes.c_int64))
        managed.dl_tensor.strides = None  # compact row-major
        managed.dl_tensor.byte_offset = 0
        managed.deleter = _release
        with _LIVE_LOCK:
            _LIVE[ctypes.addressof(managed)] = (managed, shape_arr, owner)
        self._managed = managed

    def __dlpack_device__(self):
        return self._device

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        return _capsule_new(ctypes.addressof(self._managed), b"dltensor", None)


def tensor_view(ptr: int, shape, dtype, device: str = "cpu", owner=None, device_id: int = 0):
    """A TVM tensor on ``device`` whose data is the ``ptr`` bytes (compact, row-major).

    ``owner`` is any object that keeps the memory valid; it is kept alive while the
    view is.  ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda_host"``.
    """
    exporter = _Exporter(int(ptr), tuple(int(d) for d in shape), _np_dtype(dtype),
                         (DEVICE_TYPES[device], device_id), owner)
    return tvm_ffi.from_dlpack(exporter, require_alignment=0)


def _np_dtype(dtype) -> np.dtype:
    """numpy's dtype for ``dtype`` (a name or dtype); ``bfloat16`` through ml_dtypes."""
    if str(dtype) == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def live_views() -> int:
    """How many views TVM still holds (0 once every session is closed: the leak check)."""
    with _LIVE_LOCK:
        return len(_LIVE)
