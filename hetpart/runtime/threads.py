"""Where the session's host threads run: CPU affinity and TVM thread-pool size.

Two facts about TVM 0.27's CPU thread pool (``libtvm_runtime``; checked here on
Linux) decide this module:

* The pool is per *calling thread*: the first parallel kernel a thread runs (or
  ``tvm.runtime.num_threads()``) makes that thread a pool of ``TVM_NUM_THREADS``
  (TVM's default, half the logical CPUs on x86, is replaced by one per physical core
  on ``import hetpart``: :mod:`hetpart.cpu_cores`) and **pins** it: each pool worker to one
  core, the calling thread itself to the first ``n`` cores.  A thread created
  afterwards by a pinned thread inherits its mask: e.g. on a 2-CPU machine, after
  ``num_threads()`` on the main thread, every session thread was confined to CPU 0.
  :func:`unpin_current_thread` undoes that inheritance: each session thread starts
  with the mask the process had when this module was imported.
* ``runtime.config_threadpool(mode, n)`` resizes the *calling thread's* pool (fork-join
  over ``n`` tasks, never more than its ``MaxConcurrency``).  :func:`pool_threads`
  is the policy: a session with GPU partitions keeps ``reserve`` CPUs free of CPU
  partition work for its orchestration threads (GPU worker, collector, submitter,
  spin-waits on CUDA events), since a fork-join kernel whose one pool thread shares
  its core with a busy thread waits for that thread's time slice.

Nothing here changes a pool that is already as small as the policy asks, so a
serial kernel, or a machine where TVM already uses half the CPUs, is left alone.
"""

from __future__ import annotations

import os
import threading

from ..cpu_cores import pool_size
from ..errors import RuntimeFailure

#: the CPUs this process could use when the runtime was imported (before TVM pinned anything)
PROCESS_CPUS: frozenset[int] = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()

#: CPUs a session with GPU partitions leaves to its orchestration threads
DEFAULT_RESERVE = 2

_KBIG = 1  # TVM ThreadGroup::AffinityMode kBig: TVM's own default mode


def unpin_current_thread() -> bool:
    """Give the calling thread the whole process mask again (see the module docstring);
    False where the platform has no affinity API or the mask cannot be set."""
    if not PROCESS_CPUS or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, PROCESS_CPUS)
    except OSError:  # e.g. a cpuset shrank since import: keep what the OS gave us
        return False
    return True


def pool_threads(requested: int | None, *, has_gpu: bool, default: int | None = None,
                 cpus: int | None = None, reserve: int = DEFAULT_RESERVE) -> int | None:
    """How many threads a CPU partition's pool should use; None: leave TVM's default.

    ``requested`` (the session's ``cpu_threads``) wins when given (>= 1).  Otherwise a
    session with GPU partitions gets ``min(default, cpus - reserve)`` (at least 1),
    and None when that is not smaller than ``default`` (nothing to change)."""
    default = pool_size() if default is None else default
    if requested is not None:
        if requested < 1:
            raise RuntimeFailure(f"cpu_threads must be at least 1, got {requested}")
        return None if requested == default else requested
    if not has_gpu:
        return None
    if cpus is None:
        cpus = len(PROCESS_CPUS) or os.cpu_count() or 1
    wanted = max(min(default, cpus - reserve), 1)
    return wanted if wanted < default else None


def configure_current_pool(threads: int) -> int:
    """Size the calling thread's TVM pool to ``threads`` (capped by TVM at its
    MaxConcurrency); returns the size TVM reports.  Call it on the thread that will run
    the kernels: the pool is that thread's own."""
    import tvm
    import tvm_ffi

    tvm_ffi.get_global_func("runtime.config_threadpool")(_KBIG, int(threads))
    return int(tvm.runtime.num_threads())


def thread_affinities() -> dict[str, list[int]]:
    """``{"<thread name> (<tid>)": sorted CPUs}`` for this process's threads (Linux), for
    benchmarks that report where things ran; {} elsewhere."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, list[int]] = {}
    try:
        tids = sorted(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:
        return out
    for tid in tids:
        try:
            cpus = sorted(os.sched_getaffinity(tid))
        except OSError:
            continue
        out[f"{names.get(tid, 'tvm pool / native')} ({tid})"] = cpus
    return out
