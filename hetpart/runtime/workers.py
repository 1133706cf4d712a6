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

Deadlock freedom: a run's tasks are posted atomically, in topological order, and a
task waits only for tasks posted before it, so the oldest unfinished task is always
at the head of its queue and can proceed.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

from .threads import unpin_current_thread


class Worker:
    """One named thread executing posted callables one at a time, in posting order.

    ``setup`` (optional) runs first on the thread, e.g. to size its TVM pool; it must
    not raise (an error there would kill the thread)."""

    def __init__(self, name: str, setup: Callable[[], None] | None = None):
        self.name = name
        self._setup = setup
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"hetpart {name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        unpin_current_thread()
        if self._setup is not None:
            self._setup()
        while (task := self._queue.get()) is not None:
            task()  # tasks catch their own errors and report them to their run

    def post(self, task: Callable[[], None]) -> None:
        self._queue.put(task)

    def close(self) -> None:
        """Finish the queued tasks, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
