"""The session's GPU stream: kernels and copies run in the order they are enqueued.

A :class:`Stream` is what a CUDA partition's work goes onto.  Host threads *enqueue*
(``launch`` a partition, ``copy`` a handoff buffer, ``record`` a :class:`Marker`) and
carry on; the device runs the work in FIFO order.  A host thread that needs a result
waits on a marker (an event), never on the whole device.

* :class:`CudaStream`: the session's own non-blocking CUDA stream (not the default
  stream); kernels are launched with it as the thread's TVM env stream, copies are
  ``cudaMemcpyAsync`` on it, markers are CUDA events (which also time spans).
  With a ``priority`` (issue 20: models sharing one GPU) the stream is made by
  ``cudaStreamCreateWithPriority`` (:func:`cuda_priority` maps hetpart's "higher
  first" onto CUDA's range), so the GPU's scheduler runs its kernels first.
* :class:`SimulatedStream`: one thread and a FIFO queue standing in for the stream
  (CI has no GPU); "copies" are memcpys and markers are threading events stamped
  with the host clock.  The orchestration above it is identical.

Invariant: work enqueued on one stream runs in enqueue order, and a marker completes
only after everything enqueued before it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from . import cuda_api
from .threads import lease


class Marker:
    """A point in a stream's order; ``synchronize`` blocks the calling thread until it is reached."""

    def synchronize(self) -> None:
        raise NotImplementedError

    def seconds_since(self, earlier: "Marker") -> float:
        """Device time from ``earlier`` to this marker (both must have completed)."""
        raise NotImplementedError

    def release(self) -> None:
        """Free what the marker holds (a CUDA event); idempotent."""


class Stream:
    simulated: bool

    def launch(self, fn: Callable[[], None], reads=()) -> None:
        """Enqueue ``fn``'s kernels (``fn`` calls a partition's VM) on this stream.
        ``reads``: Buffers written by another stream that those kernels read (a
        streamed partition's ring slot); a checking stream verifies their ordering."""
        raise NotImplementedError

    def wait(self, marker: "Marker") -> None:
        """Make work enqueued on this stream from now on wait (on the device; the host
        does not block) until ``marker``, recorded on another stream, is reached."""
        raise NotImplementedError

    def launch_in_order(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (a partition whose VM sizes its outputs from tensor values it reads
        on the host) after everything enqueued on this stream so far, and return once
        its kernels have run.  TVM makes those reads with copies outside this stream,
        which do not wait for this stream's kernels."""
        raise NotImplementedError

    def copy(self, dst, src, kind: str) -> None:
        """Enqueue one copy between a pinned host Buffer and a device Buffer (``kind`` h2d/d2h/d2d)."""
        raise NotImplementedError

    def record(self) -> Marker:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# --- simulation ----------------------------------------------------------------------
class _SimMarker(Marker):
    def __init__(self):
        self.reached = threading.Event()
        self.time = 0.0

    def synchronize(self) -> None:
        self.reached.wait()

    def seconds_since(self, earlier: "Marker") -> float:
        return self.time - earlier.time


class SimulatedStream(Stream):
    """A worker thread executing enqueued closures one at a time, in order."""

    simulated = True

    def __init__(self, name: str = "simulated cuda stream", priority: int | None = None):
        self.priority = priority  # recorded only: one simulated stream has nothing to preempt
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # a leased thread, like the session's workers (see .workers): the kernels it
        # runs make it a TVM pool that would outlive a thread of its own
        self._lease = lease(name, self._loop, role="simulated stream")

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            item()

    def launch(self, fn: Callable[[], None], reads=()) -> None:
        # A real launch returns once enqueued; here the caller waits so that errors
        # surface on the launching thread, as TVM's argument checks do on a GPU.
        self._await(self._enqueue_call(fn))

    def _enqueue_call(self, fn: Callable[[], None]):
        done = threading.Event()
        box: list[BaseException] = []

        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised on the launching thread
                box.append(e)
            finally:
                done.set()

        self._queue.put(run)
        return done, box

    @staticmethod
    def _await(pending) -> None:
        done, box = pending
        done.wait()
        if box:
            raise box[0]

    def wait(self, marker: Marker) -> None:
        self._queue.put(marker.synchronize)  # the stream's thread blocks: later items wait

    def launch_in_order(self, fn: Callable[[], None]) -> None:
        self.launch(fn)  # the queue already orders it, and launch waits for it

    def copy(self, dst, src, kind: str) -> None:
        self._queue.put(lambda: np.copyto(dst.array, src.array))

    def record(self) -> Marker:
        m = _SimMarker()

        def reach():
            m.time = time.perf_counter()
            m.reached.set()

        self._queue.put(reach)
        return m

    def close(self) -> None:
        if self._lease.is_alive():
            self._queue.put(None)
            self._lease.join()


# --- CUDA ------------------------------------------------------------------------------
class EventPool:
    """A stream's CUDA events, reused: a marker's event goes back here when the marker is
    released, and the next :meth:`CudaStream.record` takes it again.

    Every stream operation of every run records a marker, so creating and destroying
    an event each time cost two more runtime calls per operation (a few microseconds
    each through cuda-bindings).  Reuse is safe because a marker is released only when
    nothing will wait on its event again: at the end of its run, after the run's last
    stream operation completed, or after a ``cudaStreamWaitEvent`` on it was enqueued
    (which captures the event's state when called; re-recording it later does not move
    that wait).  After :meth:`close` (the stream's end) events given back are destroyed.

    ``api`` is :mod:`.cuda_api` (a stand-in in tests)."""

    MAX_FREE = 256  # more free events than runs ever hold at once: destroy the rest

    def __init__(self, timing: bool, blocking: bool, api=None):
        self._api = api if api is not None else cuda_api
        self._timing = timing
        self._blocking = blocking
        self._free: deque[int] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> int:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._api.event_create(timing=self._timing, blocking=self._blocking)

    def give(self, event: int) -> None:
        with self._lock:
            if not self._closed and len(self._free) < self.MAX_FREE:
                self._free.append(event)
                return
        self._api.event_destroy(event)

    def close(self) -> None:
        """Destroy the free events; any given back later is destroyed then."""
        with self._lock:
            self._closed = True
            free, self._free = list(self._free), deque()
        for event in free:
            self._api.event_destroy(event)


class _CudaMarker(Marker):
    def __init__(self, event: int, pool: EventPool, driver=None):
        self.event = event
        self._pool = pool
        self._driver = driver  # the stream's (cuda_api.stream_driver)

    def synchronize(self) -> None:
        cuda_api.event_synchronize(self.event, self._driver)

    def seconds_since(self, earlier: "Marker") -> float:
        return cuda_api.event_elapsed_s(earlier.event, self.event)

    def release(self) -> None:
        if self.event:
            event, self.event = self.event, 0
            self._pool.give(event)


class CudaStream(Stream):
    """The session's own non-blocking stream on ``cuda:0``."""

    simulated = False

    def __init__(self, spin_wait: bool = True, priority: int | None = None):
        import tvm
        import tvm_ffi

        # A host thread waiting for the GPU spins on a core (CUDA's default); the CPU
        # partitions use every core, so a spinning waiter may stall a slice of their
        # parallel loops.  Blocking waits free the core but cost a wake-up.
        self.spin_wait = spin_wait
        cuda_api.cudart()  # fail early, with install advice, if cuda-bindings is missing
        self._events = EventPool(timing=True, blocking=not spin_wait)
        self._driver = cuda_api.stream_driver()  # cuda_api.DRIVER_CALLS as the stream is made
        self._ffi = tvm_ffi
        self.device = tvm.cuda(0)
        # priority None: TVM's own (non-blocking) stream; else one at that priority (issue 20)
        self.cuda_priority: int | None = None
        if priority is None:
            self.handle = int(self.device.create_raw_stream())
        else:
            self.cuda_priority = cuda_priority(priority, *cuda_api.stream_priority_range())
            self.handle = cuda_api.stream_create_with_priority(self.cuda_priority)

    def launch(self, fn: Callable[[], None], reads=()) -> None:
        with self._ffi.use_raw_stream(self.device, self.handle):
            fn()

    def wait(self, marker: Marker) -> None:
        cuda_api.stream_wait_event(self.handle, marker.event, self._driver)

    def launch_in_order(self, fn: Callable[[], None]) -> None:
        # Everything on the device's default stream, where TVM's own copies run (a value
        # read there while its kernel still ran on this non-blocking stream came back as
        # zeros -- found on the H200: NMS's selected indices (0, 0) with the GPU shared).
        self._drain()
        fn()
        cuda_api.stream_synchronize(0)

    def _drain(self) -> None:
        """Block until everything enqueued on this stream has run (not the whole device)."""
        last = self.record()
        last.synchronize()
        last.release()

    def copy(self, dst, src, kind: str) -> None:
        # pageable host memory (a data-dependent shape's per-run buffer) keeps the runtime's call
        pinned = (dst.side == "cuda" or dst.pinned) and (src.side == "cuda" or src.pinned)
        cuda_api.memcpy_async(dst.ptr, src.ptr, src.nbytes, kind, self.handle, self._driver if pinned else None)

    def record(self) -> Marker:
        event = self._events.take()
        cuda_api.event_record(event, self.handle, self._driver)
        return _CudaMarker(event, self._events, self._driver)

    def close(self) -> None:
        if self.handle:
            self._drain()
            if self.cuda_priority is None:
                self.device.free_raw_stream(self.handle)
            else:
                cuda_api.stream_destroy(self.handle)
            self.handle = 0
            self._events.close()


def cuda_priority(priority: int, least: int, greatest: int) -> int:
    """The CUDA stream priority of hetpart's ``priority`` (higher runs first, 0 the
    default): CUDA's least priority for 0 or below, one step more urgent per level,
    clamped at CUDA's greatest (CUDA counts down: ``greatest <= least``)."""
    return max(greatest, least - max(int(priority), 0))
