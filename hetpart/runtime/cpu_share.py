"""CPU sharing: how the CPU partitions of sessions running at once share the cores.

Why (issue 20, the detector+ResNet-50 tail on the H200's 16-core host): TVM's CPU
pool is per *calling thread* (:mod:`.threads`), ``TVM_NUM_THREADS`` workers, fork-join,
every pool's worker ``i`` pinned to the same core ``i``, and idle workers spin (300000
yields) after each job.  Each thread that ran a CPU partition has such a pool: a
serving lane's thread (inline runs), each CPU worker of each bucket session.  Two runs
whose CPU partitions overlap put two pinned workers on every core, and a fork-join
kernel waits for its slowest worker: the detector's run p99 went from 13 ms alone to
26-48 ms beside another run.  So CPU partitions no longer run on whichever thread calls
them; they run on a few *lanes*, process-wide, one lane = one long-lived thread with
its one pool on its own cores:

* ``gate`` (:class:`~.multi_session.MultiSession`'s default, and what a server's sessions
  running at once are given): one lane over the
  process's cores, its pool :func:`~hetpart.cpu_cores.pool_size` threads (what an
  inline run on the caller's own pool had, so a lone caller's kernels are as fast).  At most one CPU partition runs at
  a time in the process (a caller waits for the lane, in arrival order); GPU work of
  every session still overlaps it.  No other pool ever runs, so none spins beside it.
* ``split`` / ``split:N`` (N ways, default 2): N lanes, the process's CPUs cut into N
  disjoint contiguous sets, each lane's pool sized to its set and every thread of it
  (the lane and its TVM workers) pinned to it.  N CPU partitions run at once, each
  on its own cores, each with fewer threads; a call takes whichever lane is free
  (the one it used last first: warm caches), else waits.
* ``none``: what the runtime did before: each calling thread's own pool (the old
  behaviour; the default of a session opened alone, whose lone caller would only pay the
  hand-off below (:func:`resolve`); and what ``Session(cpu_threads=N)`` implies: the size
  asked for, on the session's own CPU workers).


The policy is a value (:class:`CpuSharing`, parsed by :func:`parse` from ``"gate"``,
``"split:2"``, ``"none"``) given to ``Session(cpu_sharing=)`` (and through it to
``MultiSession``, ``BucketedSession``, ``DataParallelSession``); sessions given the same
policy share the same lanes (:func:`share_for`, one :class:`CpuShare` per policy per
process).  Sessions under *different* policies do not coordinate.

Cost: a call is handed to the lane's thread and its result handed back (a queue put
and a lock the lane releases), per CPU partition per run: about 30 us on the 2-core CI
machine (a one-kernel all-CPU session: 30 -> 65 us a run), which is why an all-CPU
session opened alone (a lone caller's latency) keeps ``none`` unless asked.

Deadlock freedom: a lane runs only partition calls, which wait for nothing (their
inputs are ready before the call); a caller holds no lane while waiting for anything
but its own call.  So every call ends, and every waiting caller gets a lane.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..cpu_cores import pool_size
from ..errors import RuntimeFailure
from .threads import PROCESS_CPUS, configure_current_pool, name_current_os_thread, pin_named_threads, unpin_current_thread

T = TypeVar("T")

POLICIES = ("gate", "split", "none")
DEFAULT_SPLIT_WAYS = 2


@dataclass(frozen=True)
class CpuSharing:
    """A CPU-sharing policy (see the module docstring): ``policy`` one of
    :data:`POLICIES`; ``ways`` the lanes (1 for ``gate``, >= 2 for ``split``, 0 for
    ``none``)."""

    policy: str = "gate"
    ways: int = 1

    def __post_init__(self):
        expected = {"gate": lambda w: w == 1, "none": lambda w: w == 0, "split": lambda w: w >= 2}
        if self.policy not in expected:
            raise RuntimeFailure(f"cpu_sharing policy '{self.policy}' is not one of {', '.join(POLICIES)}")
        if not expected[self.policy](self.ways):
            raise RuntimeFailure(f"cpu_sharing '{self.policy}' cannot have {self.ways} ways "
                                 "(gate: 1, split: 2 or more, none: 0); write e.g. 'split:3'")

    @property
    def name(self) -> str:
        """``gate``, ``none``, ``split:N``: what :func:`parse` reads back."""
        return f"split:{self.ways}" if self.policy == "split" else self.policy

    def __str__(self) -> str:
        return self.name


GATE = CpuSharing("gate", 1)
NONE = CpuSharing("none", 0)


def parse(value: "str | CpuSharing") -> CpuSharing:
    """``"gate"``, ``"none"``, ``"split"`` (2 ways) or ``"split:N"`` as a :class:`CpuSharing`;
    a CpuSharing as it is.  RuntimeFailure naming the valid forms otherwise."""
    if isinstance(value, CpuSharing):
        return value
    if not isinstance(value, str):
        raise RuntimeFailure(f"cpu_sharing must be 'gate', 'split', 'split:N' or 'none', got {value!r}")
    text = value.strip().lower()
    if text in ("gate", "none"):
        return GATE if text == "gate" else NONE
    if text == "split":
        return CpuSharing("split", DEFAULT_SPLIT_WAYS)
    head, _, ways = text.partition(":")
    if head == "split" and ways.isdigit():
        return CpuSharing("split", int(ways))
    raise RuntimeFailure(f"cpu_sharing '{value}' is not one of: gate, split, split:N (N >= 2), none")


def resolve(cpu_sharing, cpu_threads: int | None) -> CpuSharing:
    """A session's policy: the one given; else ``none``.  A session alone in its process
    gains nothing from a lane but pays its hand-off (~30-35 us per CPU partition call);
    the sessions that run at once -- a :class:`~.multi_session.MultiSession`, a server's
    instances -- are given ``gate`` by whoever opens them together.  ``cpu_threads``
    (a pool size of the session's own) and a sharing policy cannot both size the pool."""
    if cpu_sharing is None:
        return NONE
    sharing = parse(cpu_sharing)
    if cpu_threads is not None and sharing.policy != "none":
        raise RuntimeFailure(f"cpu_threads={cpu_threads} sizes the session's own CPU pools, cpu_sharing="
                             f"'{sharing}' runs CPU partitions on shared lanes: give one of them "
                             "(or cpu_sharing='none' with cpu_threads)")
    return sharing


def core_sets(cpus, ways: int) -> list[tuple[int, ...]]:
    """``cpus`` (sorted) cut into ``ways`` disjoint contiguous sets whose sizes differ by at
    most one, the larger first; RuntimeFailure where there are fewer CPUs than ways."""
    cpus = sorted(cpus)
    if ways < 1 or ways > len(cpus):
        raise RuntimeFailure(f"cpu_sharing split:{ways} needs at least {ways} CPUs; this process may use "
                             f"{len(cpus)} ({cpus}): use fewer ways or 'gate'")
    base, extra = divmod(len(cpus), ways)
    out, start = [], 0
    for k in range(ways):
        size = base + (1 if k < extra else 0)
        out.append(tuple(cpus[start:start + size]))
        start += size
    return out


# --- lanes -----------------------------------------------------------------------------
class _Lane:
    """One long-lived thread with its one TVM pool; runs handed-over calls one at a time.

    ``cpus`` None: the whole process, the pool as TVM pins it (``gate``); a tuple: the
    pool sized to it and the lane with all its TVM workers pinned to it (``split``)."""

    def __init__(self, index: int, label: str, cpus: tuple[int, ...] | None, threads: int):
        self.index, self.cpus, self.threads = index, cpus, threads
        self.os_name = f"hp-cpu-{label}-{index}"[:15]  # Linux thread names: 15 bytes
        self.pool_size: int | None = None
        self.pinned: int = 0  # OS threads pinned to ``cpus`` (the lane and its pool's workers)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"hetpart cpu lane {label}/{index}", daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise RuntimeFailure(f"the CPU lane {label}/{index} could not start: {self._failed}") from self._failed

    def _main(self) -> None:
        try:
            unpin_current_thread()
            name_current_os_thread(self.os_name)  # TVM's workers, made next, inherit it
            self.pool_size = configure_current_pool(self.threads)
            if self.cpus is not None:
                self.pinned = pin_named_threads(self.os_name, self.cpus)
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor
            self._failed = exc
        self._ready.set()
        if self._failed is not None:
            return
        while True:
            fn, done, box = self._inbox.get()
            try:
                box.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
                box.append((False, exc))
            done.release()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the lane's thread; its result, or its exception raised here.
        (A held lock the lane releases is the cheapest wake-up: one futex, no Condition.)"""
        done, box = threading.Lock(), []
        done.acquire()
        self._inbox.put((fn, done, box))
        done.acquire()
        ok, value = box[0]
        if ok:
            return value
        raise value

    def describe(self) -> dict:
        return {"lane": self.index, "cpus": list(self.cpus) if self.cpus is not None else "TVM's pinning",
                "pool_size": self.pool_size, "pinned_threads": self.pinned}


class CpuShare:
    """The lanes of one :class:`CpuSharing` in this process, and who holds them.

    :meth:`run` runs a call on a free lane (waiting for one in arrival order); counts
    ``calls``, ``waited`` (calls that found no lane free) and ``max_busy`` (most lanes
    held at once, never above ``ways``) for tests and benchmark records, and sums
    ``busy_s`` (seconds lanes were held, from a call taking its lane to giving it back:
    over a window of load, busy_s / (window x ways) is how saturated the lanes were) and
    ``wait_s`` (seconds callers waited for a lane)."""

    def __init__(self, sharing: CpuSharing, cpus=None):
        if sharing.policy == "none":
            raise RuntimeFailure("cpu_sharing 'none' has no lanes")
        self.sharing = sharing
        cpus = sorted(cpus if cpus is not None else (PROCESS_CPUS or range(pool_size())))
        if sharing.policy == "gate":
            self.lanes = [_Lane(0, "gate", None, pool_size())]
        else:
            sets = core_sets(cpus, sharing.ways)
            self.lanes = [_Lane(k, f"s{sharing.ways}", s, len(s)) for k, s in enumerate(sets)]
        self._cond = threading.Condition()
        self._free = set(range(len(self.lanes)))
        self._waiting: deque = deque()  # tickets in arrival order
        self._last: dict[int, int] = {}  # caller thread id -> the lane it used last
        self.calls = self.waited = self.max_busy = 0
        self.busy_s = self.wait_s = 0.0
        self._held_since: dict[int, float] = {}  # lane index -> when its call took it

    @property
    def threads_per_lane(self) -> int:
        """The smallest lane's pool size (what a CPU partition gets at worst)."""
        return min(lane.pool_size or lane.threads for lane in self.lanes)

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a lane of this share; blocks while every lane is busy."""
        lane = self._acquire()
        try:
            return lane.call(fn)
        finally:
            self._release(lane)

    def _acquire(self) -> _Lane:
        me = threading.get_ident()
        asked = time.perf_counter()
        with self._cond:
            ticket = object()
            self._waiting.append(ticket)
            if not (self._free and self._waiting[0] is ticket):
                self.waited += 1
            try:
                while not (self._free and self._waiting[0] is ticket):
                    self._cond.wait()
            except BaseException:  # e.g. KeyboardInterrupt: out of the line, or it would block everyone behind
                self._waiting.remove(ticket)
                self._cond.notify_all()
                raise
            self._waiting.popleft()
            last = self._last.get(me)
            index = last if last in self._free else min(self._free)
            self._free.discard(index)
            self._last[me] = index
            self.calls += 1
            self.max_busy = max(self.max_busy, len(self.lanes) - len(self._free))
            now = time.perf_counter()
            self.wait_s += now - asked
            self._held_since[index] = now
            self._cond.notify_all()  # the next in line may take another free lane
            return self.lanes[index]

    def _release(self, lane: _Lane) -> None:
        with self._cond:
            self.busy_s += time.perf_counter() - self._held_since.pop(lane.index, time.perf_counter())
            self._free.add(lane.index)
            self._cond.notify_all()

    def record(self) -> dict:
        """What a benchmark records: the policy, each lane's CPUs and pool, the counters."""
        return {"policy": self.sharing.name, "lanes": [lane.describe() for lane in self.lanes],
                "calls": self.calls, "waited": self.waited, "max_busy": self.max_busy,
                "busy_s": self.busy_s, "wait_s": self.wait_s}


_SHARES: dict[CpuSharing, CpuShare] = {}
_SHARES_LOCK = threading.Lock()


def share_for(sharing: CpuSharing) -> CpuShare | None:
    """The process's :class:`CpuShare` for ``sharing`` (made at first use, then shared by
    every session given that policy); None for ``none``."""
    if sharing.policy == "none":
        return None
    with _SHARES_LOCK:
        share = _SHARES.get(sharing)
        if share is None:
            share = _SHARES[sharing] = CpuShare(sharing)
        return share


def records() -> dict[str, dict]:
    """Every share made in this process so far, by policy name (:meth:`CpuShare.record`)."""
    with _SHARES_LOCK:
        return {s.name: share.record() for s, share in _SHARES.items()}


class SharedRunner:
    """A CPU partition's :class:`~.partition_runner.PartitionRunner` whose calls run on
    ``share``'s lanes; everything else is the runner's."""

    def __init__(self, runner, share: CpuShare):
        self._runner, self._share = runner, share

    def call(self, *args, **kwargs):
        return self._share.run(lambda: self._runner.call(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self._runner, name)
