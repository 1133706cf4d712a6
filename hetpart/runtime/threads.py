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

* TVM pins a pool's worker ``i`` to core ``i`` whatever thread the pool belongs to, and
  an idle worker spins (300000 yields) before it sleeps: two threads' pools running at
  once share every core, pinned, and a fork-join kernel waits for its slowest worker.
  :mod:`.cpu_share` therefore runs CPU partitions on a few long-lived lanes, each with
  one pool; a ``split`` lane's pool is pinned to its own CPUs by OS thread name
  (:func:`name_current_os_thread`, :func:`pin_named_threads`), since TVM's
  ``config_threadpool`` with a CPU list also sets the *process-wide* MaxConcurrency
  that later pools are sized by.
* A thread's TVM pool is never freed: when the thread exits, its pool's workers stay
  (checked here: 2 more OS threads per exited thread that had a pool, for good).  So
  the session's host threads are *leased* (:func:`lease`) from long-lived threads
  parked between uses, keyed by the pool size they were given, and a new Session
  reuses the threads (and pools) an earlier one gave back: the process holds as many
  threads as were ever in use at once, not as many as sessions ever made.
"""

from __future__ import annotations

import numbers
import os
import queue
import sys
import threading
from typing import Callable, TypeVar

from ..cpu_cores import pool_size
from ..errors import RuntimeFailure

T = TypeVar("T")

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
        if isinstance(requested, bool) or not isinstance(requested, numbers.Integral):
            raise RuntimeFailure(f"cpu_threads is a number of threads (an int such as 4), got "
                                 f"{type(requested).__name__} {requested!r}")
        requested = int(requested)
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


def name_current_os_thread(name: str) -> bool:
    """Set the calling thread's OS name (Linux ``comm``, 15 bytes); threads it creates
    afterwards -- TVM's pool workers -- inherit it, which is how :func:`pin_named_threads`
    finds them.  False where the platform has no ``prctl``."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(15, name.encode()[:15], 0, 0, 0) == 0  # PR_SET_NAME
    except (OSError, AttributeError):
        return False


def os_thread_names() -> dict[int, str]:
    """``{tid: OS name}`` of this process's threads (Linux); {} elsewhere."""
    out: dict[int, str] = {}
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                out[tid] = f.read().strip()
        except OSError:
            continue
    return out


def pin_named_threads(name: str, cpus) -> int:
    """Confine every thread of this process whose OS name is ``name`` (a CPU lane and the
    pool workers it made, :mod:`.cpu_share`) to ``cpus``; how many were pinned."""
    if not hasattr(os, "sched_setaffinity"):
        return 0
    pinned = 0
    for tid, comm in os_thread_names().items():
        if comm == name:
            try:
                os.sched_setaffinity(tid, set(cpus))
                pinned += 1
            except OSError:  # the thread exited meanwhile
                continue
    return pinned


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


# --- long-lived host threads, leased one body at a time ------------------------------
class Lease:
    """One body running on a parked host thread; see :func:`lease`."""

    def __init__(self, host: "_HostThread"):
        self._host = host
        self._done = threading.Event()

    @property
    def thread(self) -> threading.Thread:
        return self._host.thread

    @property
    def pool_size(self) -> int | None:
        """What TVM reports for the thread's pool once sized; None if left as TVM made it."""
        return self._host.pool_size

    def is_alive(self) -> bool:
        """Whether the body is still running (the thread itself lives on, parked)."""
        return not self._done.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the body to end; True if it has.  While the interpreter shuts down
        (a Session left open in a module global, closed by its finaliser) daemon threads
        no longer run, so nothing is waited for: waiting would hang the exit."""
        if sys.is_finalizing():
            return self._done.is_set()
        return self._done.wait(timeout)


class _HostThread:
    """A daemon thread that runs leased bodies one after another and parks in between."""

    def __init__(self, pool: int | None, role: str):
        self.pool = pool
        self.key = (role, pool)
        self.pool_size: int | None = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._main, name="hetpart (parked)", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        unpin_current_thread()
        if self.pool is not None:
            try:
                self.pool_size = configure_current_pool(self.pool)
            except Exception:  # noqa: BLE001 - only speed is lost: TVM's default pool stays
                self.pool_size = None
        while True:
            name, body, done = self._inbox.get()
            self.thread.name = name
            try:
                body()
            finally:
                self.thread.name = "hetpart (parked)"
                _park(self)
                done.set()  # parked first: a lease taken after join() may reuse this thread


_PARKED: dict[tuple[str, int | None], list[_HostThread]] = {}
_PARKED_LOCK = threading.Lock()


def _park(host: _HostThread) -> None:
    with _PARKED_LOCK:
        _PARKED.setdefault(host.key, []).append(host)


def lease(name: str, body: Callable[[], None], pool: int | None = None, role: str = "") -> Lease:
    """Run ``body`` on a parked host thread of the same ``role`` whose TVM pool was sized
    ``pool`` threads (None: TVM's default), or on a new one; the thread is renamed
    ``name`` meanwhile and parks again when ``body`` returns.  ``body`` must catch its
    own errors.  ``role`` keeps threads that run kernels (which TVM pins) apart from
    those that only orchestrate, so a thread is reused only as what it was."""
    with _PARKED_LOCK:
        idle = _PARKED.get((role, pool))
        host = idle.pop() if idle else None
    if host is None:
        host = _HostThread(pool, role)
    held = Lease(host)
    host._inbox.put((name, body, held._done))
    return held


def call_leased(name: str, fn: Callable[[], T], pool: int | None = None, role: str = "") -> T:
    """``fn()`` run on a leased host thread (:func:`lease`: TVM pool of ``pool`` threads,
    ``role``), waited for; returns its value, or raises on this thread what it raised."""
    result: dict = {}

    def body():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            result["error"] = exc

    lease(name, body, pool=pool, role=role).join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def parked_threads() -> int:
    """Host threads parked now, waiting for a lease (for tests and leak checks)."""
    with _PARKED_LOCK:
        return sum(len(v) for v in _PARKED.values())
