"""The few CUDA runtime calls TVM's Python API lacks: events, async copies, mapped pinned memory.

TVM 0.27 exposes streams but no events, no stream-ordered copies and no mapped host
allocations to Python, so the runtime calls CUDA through NVIDIA's ``cuda-bindings``
(``pip install hetpart[cuda]``).  It is imported only when a real GPU session starts;
without it a GPU session raises :class:`~hetpart.errors.NoGPUError` saying what to
install.  Every call checks its status and raises :class:`CudaCallError` (out of
memory: :class:`~hetpart.errors.RuntimeFailure` with sizes and advice).

Handles are plain ints (``cudaStream_t``/``cudaEvent_t`` values) so callers never
depend on the bindings' wrapper types.
"""

from __future__ import annotations

import ctypes
import threading
from functools import lru_cache

from ..errors import NoGPUError, RuntimeFailure

H2D, D2H, D2D, ANY = "h2d", "d2h", "d2d", "default"  # ANY: let UVA decide (mapped memory)

DRIVER_CALLS = True
"""Make the four calls of every stream operation -- :func:`event_record`,
:func:`stream_wait_event`, :func:`event_synchronize` and a stream's pinned/device
:func:`memcpy_async` -- through the CUDA driver (libcuda's ``cuEventRecord``,
``cuStreamWaitEvent``, ``cuEventSynchronize``, ``cuMemcpyAsync``) with ctypes instead of
cuda-bindings' runtime wrappers (each builds handle objects and checks an enum in Python).
Issue 19: a streaming plan's CPU->CUDA->CPU turn makes ~15-18 of them on its critical
path (tools/turn_cost.py counts them), and the H100 trace's host turn (~550 us) is far
above its Python (~50 us on the dev box).  The handles are the same (a ``cudaStream_t``
is a ``CUstream``, a ``cudaEvent_t`` a ``CUevent``) in the device's primary context,
which the runtime makes current on a thread at its first call; a thread without a
current context (or no libcuda) keeps the bindings.  Read when a stream is made
(:func:`stream_driver`, by :class:`~.streams.CudaStream`: a session's streams keep the
switch as it was when the session opened).  On since device step 122 (session 48, H100,
bench/results/turn-cost-nvidia-h100.md): a turn's host time 130.8 -> 98.6 us with it (the
'lean' and 'ungrouped' sides of tools/turn_cost.py; record 3.6 -> 2.9 us, sync 3.2 -> 2.6,
wait 2.3 -> 1.7 a call), its cuda tests bit for bit with it on and off."""


class CudaCallError(RuntimeFailure):
    """A CUDA runtime call failed; the message names the call and CUDA's reason."""


@lru_cache(maxsize=None)
def cudart():
    """The ``cuda.bindings.runtime`` module, or NoGPUError saying how to get it."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6 layout
        except ImportError:
            raise NoGPUError(
                "running on a real CUDA GPU needs NVIDIA's cuda-bindings package for "
                "events and pinned-memory copies: pip install 'hetpart[cuda]' "
                "(or pip install cuda-bindings)"
            ) from None
    return runtime


def _failure(call: str, text: str, code: int, out_of_memory: bool) -> RuntimeFailure:
    """The error a failed CUDA call raises (runtime or driver): out of memory is a
    :class:`RuntimeFailure` the user can act on, anything else a :class:`CudaCallError`."""
    if out_of_memory:
        return RuntimeFailure(f"the GPU ran out of memory in {call} ({text})")
    return CudaCallError(f"CUDA call {call} failed: {text} ({code})")


def _check(call: str, result):
    """Unpack ``(err, *values)`` from a bindings call; raise on any error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    rt = cudart()
    if err != rt.cudaError_t.cudaSuccess:
        _, msg = rt.cudaGetErrorString(err)
        text = msg.decode() if isinstance(msg, bytes) else str(msg)
        raise _failure(call, text, int(err), err == rt.cudaError_t.cudaErrorMemoryAllocation)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _handle(value) -> int:
    """The handle's value.  (``getPtr()`` would be the address of the wrapper's
    storage, not the handle: passing that as an event crashes inside the driver.)"""
    return int(value)


def event_create(timing: bool = True, blocking: bool = False) -> int:
    """A CUDA event; ``blocking`` makes a host waiting on it sleep instead of spinning."""
    rt = cudart()
    flags = int(rt.cudaEventDefault if timing else rt.cudaEventDisableTiming)
    if blocking:
        flags |= int(rt.cudaEventBlockingSync)
    return _handle(_check("cudaEventCreateWithFlags", rt.cudaEventCreateWithFlags(flags)))


def event_destroy(event: int) -> None:
    _check("cudaEventDestroy", cudart().cudaEventDestroy(cudart().cudaEvent_t(event)))


class _Driver:
    """The driver entry points of :data:`DRIVER_CALLS` (ctypes, GIL released during a call)."""

    def __init__(self, lib=None):
        lib = lib if lib is not None else ctypes.CDLL("libcuda.so.1")
        vp, c_int = ctypes.c_void_p, ctypes.c_int

        def fn(name, *args):
            f = getattr(lib, name)
            f.argtypes, f.restype = list(args), c_int
            return f

        self.event_record = fn("cuEventRecord", vp, vp)
        self.stream_wait_event = fn("cuStreamWaitEvent", vp, vp, ctypes.c_uint)
        self.event_synchronize = fn("cuEventSynchronize", vp)
        self.memcpy_async = fn("cuMemcpyAsync", ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t, vp)
        self._ctx_get_current = fn("cuCtxGetCurrent", ctypes.POINTER(vp))
        self._error_string = fn("cuGetErrorString", c_int, ctypes.POINTER(ctypes.c_char_p))
        self._local = threading.local()

    def ready(self) -> bool:
        """Whether this thread has a current context (made once by a runtime call if not)."""
        ok = getattr(self._local, "ok", None)
        if ok is None:
            ok = self._current()
            if not ok:
                try:
                    cudart().cudaFree(0)  # the runtime makes the primary context current here
                except Exception:  # noqa: BLE001 - then the bindings stay in use on this thread
                    pass
                ok = self._current()
            self._local.ok = ok
        return ok

    def _current(self) -> bool:
        ctx = ctypes.c_void_p()
        return self._ctx_get_current(ctypes.byref(ctx)) == 0 and bool(ctx.value)

    def check(self, call: str, code: int) -> None:
        """Raise as :func:`_check` does for a driver status other than CUDA_SUCCESS."""
        if code == 0:
            return
        text = ctypes.c_char_p()
        self._error_string(code, ctypes.byref(text))
        msg = text.value.decode() if text.value else "unknown error"
        raise _failure(call, msg, code, code == 2)  # 2: CUDA_ERROR_OUT_OF_MEMORY


@lru_cache(maxsize=None)
def _driver() -> _Driver | None:
    try:
        return _Driver()
    except (OSError, AttributeError):
        return None


def stream_driver() -> _Driver | None:
    """What a stream made now passes as ``driver`` to the calls below: the libcuda entry
    points if :data:`DRIVER_CALLS` is on and libcuda loads, else None (the bindings)."""
    return _driver() if DRIVER_CALLS else None


def _fast(driver: _Driver | None) -> _Driver | None:
    """``driver`` if given and usable on this thread (a current context), else None."""
    return driver if driver is not None and driver.ready() else None


def event_record(event: int, stream: int, driver: _Driver | None = None) -> None:
    """Record ``event`` on ``stream`` (through ``driver``, :func:`stream_driver`, where usable)."""
    d = _fast(driver)
    if d is not None:
        return d.check("cuEventRecord", d.event_record(event, stream))
    rt = cudart()
    _check("cudaEventRecord", rt.cudaEventRecord(rt.cudaEvent_t(event), rt.cudaStream_t(stream)))


def event_synchronize(event: int, driver: _Driver | None = None) -> None:
    """Block the calling host thread (only it) until ``event`` has completed."""
    d = _fast(driver)
    if d is not None:
        return d.check("cuEventSynchronize", d.event_synchronize(event))
    rt = cudart()
    _check("cudaEventSynchronize", rt.cudaEventSynchronize(rt.cudaEvent_t(event)))


def event_elapsed_s(start: int, end: int) -> float:
    rt = cudart()
    fn = getattr(rt, "cudaEventElapsedTime", None) or rt.cudaEventElapsedTime_v2
    return _check("cudaEventElapsedTime", fn(rt.cudaEvent_t(start), rt.cudaEvent_t(end))) / 1e3


def stream_synchronize(stream: int) -> None:
    """Block the calling host thread until everything on ``stream`` (0: the default stream) has run."""
    rt = cudart()
    _check("cudaStreamSynchronize", rt.cudaStreamSynchronize(rt.cudaStream_t(stream)))


def stream_wait_event(stream: int, event: int, driver: _Driver | None = None) -> None:
    """Make ``stream`` wait (on the device, host not blocked) for ``event``."""
    d = _fast(driver)
    if d is not None:
        return d.check("cuStreamWaitEvent", d.stream_wait_event(stream, event, 0))
    rt = cudart()
    _check("cudaStreamWaitEvent", rt.cudaStreamWaitEvent(rt.cudaStream_t(stream), rt.cudaEvent_t(event), 0))


def memcpy_async(dst: int, src: int, nbytes: int, kind: str, stream: int, driver: _Driver | None = None) -> None:
    """Enqueue one copy of ``nbytes`` on ``stream``; ``kind`` is :data:`H2D`, :data:`D2H`, :data:`D2D` or :data:`ANY`.
    ``driver`` (:func:`stream_driver`): only for a copy whose both ends are device or
    page-locked memory (a stream's handoff and ring buffers), copied with ``cuMemcpyAsync``
    (the addresses say the kind: unified addressing)."""
    d = _fast(driver)
    if d is not None:
        return d.check("cuMemcpyAsync", d.memcpy_async(dst, src, nbytes, stream))
    rt = cudart()
    kinds = rt.cudaMemcpyKind
    k = {H2D: kinds.cudaMemcpyHostToDevice, D2H: kinds.cudaMemcpyDeviceToHost,
         D2D: kinds.cudaMemcpyDeviceToDevice, ANY: kinds.cudaMemcpyDefault}[kind]
    _check("cudaMemcpyAsync", rt.cudaMemcpyAsync(dst, src, nbytes, k, rt.cudaStream_t(stream)))


def host_alloc(nbytes: int, mapped: bool = True, write_combined: bool = False) -> int:
    """Page-locked host memory (``cudaHostAlloc``), mapped into the device address space;
    ``write_combined``: not cached on the host (fast for the GPU to read over PCIe, very slow
    for the CPU to read: tools/gpu_mapped_weights_probe.py's ``mapped_wc``)."""
    rt = cudart()
    flags = rt.cudaHostAllocPortable | (rt.cudaHostAllocMapped if mapped else 0)
    if write_combined:
        flags |= rt.cudaHostAllocWriteCombined
    return _handle(_check(f"cudaHostAlloc({nbytes} bytes)", rt.cudaHostAlloc(max(nbytes, 1), flags)))


def host_free(ptr: int) -> None:
    _check("cudaFreeHost", cudart().cudaFreeHost(ptr))


def host_device_pointer(ptr: int) -> int:
    """The device address of mapped pinned memory (equal to ``ptr`` under UVA)."""
    return _handle(_check("cudaHostGetDevicePointer", cudart().cudaHostGetDevicePointer(ptr, 0)))


def mem_get_info() -> tuple[int, int]:
    """``(free, total)`` bytes of GPU memory."""
    free, total = _check("cudaMemGetInfo", cudart().cudaMemGetInfo())
    return int(free), int(total)


def stream_priority_range() -> tuple[int, int]:
    """``(least, greatest)`` CUDA stream priorities of the device (e.g. ``(0, -5)``: a
    lower number is a higher priority)."""
    least, greatest = _check("cudaDeviceGetStreamPriorityRange", cudart().cudaDeviceGetStreamPriorityRange())
    return int(least), int(greatest)


def stream_create_with_priority(priority: int) -> int:
    """A non-blocking stream (``cudaStreamCreateWithPriority``) at CUDA ``priority``
    (clamped by CUDA into :func:`stream_priority_range`)."""
    rt = cudart()
    flags = int(rt.cudaStreamNonBlocking)
    return _handle(_check("cudaStreamCreateWithPriority", rt.cudaStreamCreateWithPriority(flags, int(priority))))


def stream_get_priority(stream: int) -> int:
    """The CUDA priority ``stream`` was created with."""
    rt = cudart()
    return int(_check("cudaStreamGetPriority", rt.cudaStreamGetPriority(rt.cudaStream_t(stream))))


def stream_destroy(stream: int) -> None:
    rt = cudart()
    _check("cudaStreamDestroy", rt.cudaStreamDestroy(rt.cudaStream_t(stream)))
