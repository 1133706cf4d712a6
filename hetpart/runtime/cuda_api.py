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

from functools import lru_cache

from ..errors import NoGPUError, RuntimeFailure

H2D, D2H, D2D, ANY = "h2d", "d2h", "d2d", "default"  # ANY: let UVA decide (mapped memory)


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


def _check(call: str, result):
    """Unpack ``(err, *values)`` from a bindings call; raise on any error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    rt = cudart()
    if err != rt.cudaError_t.cudaSuccess:
        _, msg = rt.cudaGetErrorString(err)
        text = msg.decode() if isinstance(msg, bytes) else str(msg)
        if err == rt.cudaError_t.cudaErrorMemoryAllocation:
            raise RuntimeFailure(f"the GPU ran out of memory in {call} ({text})")
        raise CudaCallError(f"CUDA call {call} failed: {text} ({int(err)})")
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


def event_record(event: int, stream: int) -> None:
    rt = cudart()
    _check("cudaEventRecord", rt.cudaEventRecord(rt.cudaEvent_t(event), rt.cudaStream_t(stream)))


def event_synchronize(event: int) -> None:
    """Block the calling host thread (only it) until ``event`` has completed."""
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


def stream_wait_event(stream: int, event: int) -> None:
    """Make ``stream`` wait (on the device, host not blocked) for ``event``."""
    rt = cudart()
    _check("cudaStreamWaitEvent", rt.cudaStreamWaitEvent(rt.cudaStream_t(stream), rt.cudaEvent_t(event), 0))


def memcpy_async(dst: int, src: int, nbytes: int, kind: str, stream: int) -> None:
    """Enqueue one copy of ``nbytes`` on ``stream``; ``kind`` is :data:`H2D`, :data:`D2H`, :data:`D2D` or :data:`ANY`."""
    rt = cudart()
    kinds = rt.cudaMemcpyKind
    k = {H2D: kinds.cudaMemcpyHostToDevice, D2H: kinds.cudaMemcpyDeviceToHost,
         D2D: kinds.cudaMemcpyDeviceToDevice, ANY: kinds.cudaMemcpyDefault}[kind]
    _check("cudaMemcpyAsync", rt.cudaMemcpyAsync(dst, src, nbytes, k, rt.cudaStream_t(stream)))


def host_alloc(nbytes: int, mapped: bool = True) -> int:
    """Page-locked host memory (``cudaHostAlloc``), mapped into the device address space."""
    rt = cudart()
    flags = rt.cudaHostAllocPortable | (rt.cudaHostAllocMapped if mapped else 0)
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
