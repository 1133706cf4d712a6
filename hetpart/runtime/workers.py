"""Worker threads: each partition gets one host thread that runs its tasks in order.

A :class:`Worker` is a thread and a FIFO queue.  The session gives every partition
its own worker, so the partitions form a pipeline: while the GPU partition's worker
waits for micro-batch i on the stream, the CPU partition's worker already runs
micro-batch i+1.  A CPU partition's kernels run on its worker; a CUDA partition's
worker only *enqueues* onto the session stream.

Each worker thread starts with the whole process's CPU mask (:mod:`.threads`): a
thread inherits its creator's mask, and TVM pins a thread that has run a parallel
kernel, so without this a session made on such a thread would crowd every worker onto
that thread's cores.

The thread is leased (:func:`.threads.lease`): it outlives the worker, parked for
the next session's, since the TVM pool it may have made can never be freed.

Deadlock freedom: a run's tasks are posted atomically, in topological order, and a
task waits only for tasks posted before it, so the oldest unfinished task is always
at the head of its queue and can proceed.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

from ..errors import InternalError
from .threads import lease


class Worker:
    """One named thread executing posted callables one at a time, in posting order.

    ``pool`` sizes the thread's TVM pool (None: TVM's default); ``pool_size`` is what
    TVM reports for it, None if left alone (known once the first task runs).  ``role``
    (e.g. ``"cpu"`` for a thread running CPU kernels) picks which parked threads it may reuse."""

    def __init__(self, name: str, pool: int | None = None, role: str = ""):
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self._lease = lease(f"hetpart {name}", self._loop, pool, role)
        self._thread = self._lease.thread

    def _loop(self) -> None:
        while (task := self._queue.get()) is not None:
            task()  # tasks catch their own errors and report them to their run

    def post(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._stopped:  # the session admits no run once closing: a bug if reached
                raise InternalError(f"a task was posted to the stopped worker '{self.name}'")
            self._queue.put(task)

    def close(self) -> None:
        """Finish the queued tasks, then give the thread back (parked for reuse)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._queue.put(None)
        if threading.current_thread() is not self._thread:  # e.g. a finaliser run by a task
            self._lease.join()

    @property
    def pool_size(self) -> int | None:
        return self._lease.pool_size

    @property
    def alive(self) -> bool:
        return self._lease.is_alive()
