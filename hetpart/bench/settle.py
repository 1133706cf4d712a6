"""Wait for the other runtime's thread pool to stop spinning before timing one side.

Both CPU runtimes a benchmark compares keep their pool threads busy for a while after
a call, so that the next call finds them awake:

* ONNX Runtime's intra-op workers spin ``2**20`` rounds of ``SpinPause`` after each
  parallel section (``session.intra_op.allow_spinning``, on by default;
  ``EigenNonBlockingThreadPool.h``, ``WorkerLoop``) -- ``_mm_pause``, or ``tpause`` of
  1000 TSC cycles on CPUs with WAITPKG (Sapphire/Emerald Rapids): ~80 ms measured on
  this 2-core VM, several hundred ms where ``tpause`` waits.  They never yield the core.
* TVM's pool workers spin ``TVM_THREAD_POOL_SPIN_COUNT`` (300000) ``sched_yield``
  rounds before they sleep on a condition variable (``thread_pool.cc``).

TVM's fork-join kernels have one task per pinned worker and wait for the slowest, so
a TVM worker sharing its core with a spinning ORT worker waits for the scheduler's
time slice: at 16 threads on 16 cores, layers of 0.05-0.4 ms took 2-7 ms when timed
right after ORT's turn (``bench/results``, device round 32), at 8 threads they did not.
That measured the neighbour, not the kernel.  So each side of a comparison is timed
only after the process's other threads have gone quiet: :func:`settle` polls their CPU
time (``/proc/self/task/*/schedstat``) until a window passes in which they used less
than ``quiet_cores`` of a core, up to ``cap_s``; it returns what it waited, which the
benchmarks print and record.  The peer keeps its spinning (turning it off would slow
the peer); only the *other* side's leftover spin is waited out.

In: nothing but the process's own threads.  Out: :class:`Settled`.  Invariant: the
calling thread's own CPU time is never counted (it is the one that waits).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

#: poll window: the other threads' CPU time is compared across this many seconds
WINDOW_S = 0.02
#: quiet: the other threads together used at most this share of one core over a window
QUIET_CORES = 0.05
#: the longest wait; a run that reaches it is recorded as not quiet
CAP_S = 3.0

_TASKS = "/proc/self/task"


@dataclass(frozen=True)
class Settled:
    """One wait: ``waited_s`` seconds; ``quiet`` False when ``cap_s`` was reached with the
    other threads still busy (``busy_cores`` in the last window), or when the platform
    cannot tell (no ``/proc``: ``busy_cores`` is then NaN and nothing was waited)."""

    waited_s: float
    quiet: bool
    busy_cores: float


def others_cpu_s(exclude_tid: int | None = None, tasks: str = _TASKS) -> float | None:
    """CPU seconds the process's threads other than ``exclude_tid`` (default: the caller)
    have run so far: ``schedstat``'s run time (ns), else ``stat``'s utime + stime
    (clock ticks, 10 ms grain).  None where ``/proc`` has no task list (not Linux)."""
    exclude = threading.get_native_id() if exclude_tid is None else exclude_tid
    try:
        tids = [int(t) for t in os.listdir(tasks)]
    except OSError:
        return None
    total = 0.0
    for tid in tids:
        if tid != exclude:
            total += _thread_cpu_s(f"{tasks}/{tid}")
    return total


def _thread_cpu_s(task: str) -> float:
    try:
        with open(f"{task}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"{task}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0  # the thread exited meanwhile


def settle(window_s: float = WINDOW_S, quiet_cores: float = QUIET_CORES, cap_s: float = CAP_S, *,
           probe: Callable[[], float | None] | None = None, clock: Callable[[], float] = time.perf_counter,
           sleep: Callable[[float], None] = time.sleep) -> Settled:
    """Sleep until the process's other threads used at most ``quiet_cores`` of a core over
    one ``window_s`` window, or ``cap_s`` passed.  ``probe`` (default
    :func:`others_cpu_s` of the calling thread) returns their CPU seconds so far."""
    if probe is None:
        me = threading.get_native_id()
        probe = lambda: others_cpu_s(me)  # noqa: E731
    start = clock()
    before, at = probe(), start
    if before is None:
        return Settled(0.0, False, float("nan"))
    while True:
        sleep(window_s)
        now, t = probe(), clock()
        busy = (now - before) / max(t - at, 1e-9)
        if busy <= quiet_cores:
            return Settled(t - start, True, busy)
        if t - start >= cap_s:
            return Settled(t - start, False, busy)
        before, at = now, t


class SettleLog:
    """The waits of one benchmark run, for its output: count, total and longest wait,
    and how many reached the cap still busy."""

    def __init__(self):
        self.waits: list[Settled] = []

    def __call__(self, **kwargs) -> Settled:
        """:func:`settle` with ``kwargs``, remembered."""
        s = settle(**kwargs)
        self.waits.append(s)
        return s

    @property
    def total_s(self) -> float:
        return sum(w.waited_s for w in self.waits)

    @property
    def max_s(self) -> float:
        return max((w.waited_s for w in self.waits), default=0.0)

    @property
    def not_quiet(self) -> int:
        return sum(not w.quiet for w in self.waits)

    def to_json(self) -> dict:
        """``{"settles", "settle_total_ms", "settle_max_ms", "settle_not_quiet"}``."""
        return {"settles": len(self.waits), "settle_total_ms": round(self.total_s * 1e3, 1),
                "settle_max_ms": round(self.max_s * 1e3, 1), "settle_not_quiet": self.not_quiet}

    def summary(self) -> str:
        """One line: how the sides were separated."""
        s = (f"settled {len(self.waits)}x before a side's turn (others under {QUIET_CORES} core for "
             f"{WINDOW_S * 1e3:.0f} ms): longest {self.max_s * 1e3:.0f} ms, total {self.total_s:.1f} s")
        return s + (f", {self.not_quiet} still busy at the {CAP_S:.0f} s cap" if self.not_quiet else "")
