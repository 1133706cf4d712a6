"""Streamed weights: held once in pinned host memory, copied into a ring of device slots ahead of use.

A partition whose weights are ``"streamed"`` (``PartitionArtifact.weights``) takes
them as parameters after its inputs.  The session opens a :class:`WeightRing`:

* every streamed partition's packed weights are read ONCE from the artifact (size and
  sha256 checked) into pinned host memory;
* ``stream_slots`` device buffers of ``stream_slot_bytes`` (the plan's ring; a slot
  is widened to the largest packed buffer, whose 64-byte alignment padding the plan
  may not count);
* a dedicated *copy stream* fills the ring in use order.  Every call of a streamed
  partition is one *use*; the runs' uses are numbered consecutively (run after run,
  plan order inside a run: :meth:`WeightRing.reserve`), and use ``u`` reads slot
  ``u % slots``.  Uses ``0 .. slots-1`` are copied when the session opens; the copy
  for use ``u + slots`` is enqueued right after the call of use ``u`` (:meth:`retire`),
  so the copy stream runs ``slots`` uses ahead of the compute stream.

Two events per use keep the device honest, and the host only ever makes a stream wait
for an event already recorded (so no stream waits for work that is not enqueued yet):

* the call of use ``u`` waits (``cudaStreamWaitEvent``) for the event recorded after
  its copy landed (:meth:`CopyEngine.before_read`);
* the copy of use ``u + slots`` into the same slot waits for the event recorded after
  the call of use ``u``, the slot's last reader (:meth:`CopyEngine.fill`).

On the host, the thread calling use ``u`` first waits until the copy for ``u`` is
enqueued (the thread that retired use ``u - slots`` enqueues it).  Since every use
waits only for smaller ones and every worker takes its runs in order, this never
deadlocks.  A use whose call fails or is skipped is still retired (the slot's next
copy is enqueued after a marker on the compute stream), so later runs proceed.

With :data:`CHUNKED_REFILLS` on, a refill is several copies of at most
:data:`REFILL_CHUNK_BYTES` each, enqueued back to back on the copy stream
(:func:`chunk_pairs`), its "landed" marker after the last: the same bytes land in the
same place.  It was meant to let a small host-to-device copy on another stream (a
partition's input) wait for one chunk, not the whole refill
(bench/results/capped-decode-gap-s47.md: 8 KB inputs ended 4-6 us after the in-flight
46-92 MB refill landed); on the H100 it waits for every chunk submitted before it (device
step 120), so it is off.

With :data:`THROTTLED_REFILLS` on, a refill is cut the same way but submitted by the
engine's own *copier thread* with at most :data:`THROTTLE_IN_FLIGHT` chunks in flight:
chunk ``i`` is submitted only after chunk ``i - K`` has landed (the thread waits on that
chunk's event), so a small copy submitted on another stream meanwhile waits for at most
``K`` chunks.  Chunking alone does not do it (device step 120, H100: the copy engine
serves submitted H2D copies in submission order across streams; a copy submitted after
all the chunks waits for all of them).  The "landed" marker is recorded after the last
chunk; the copy of use ``u + slots`` still waits (on the device) for the slot's last
reader, through a marker the retiring thread records on the compute stream when it
hands the refill over (the run's own marker may be released before the thread gets to
it).  A reader's host thread waits until its refill's last chunk is submitted
(:meth:`WeightRing.acquire`), i.e. until all but ``K`` chunks have landed: its
launch then overlaps the last ``K`` chunks, not the whole refill.

The copy engine is the same code for the GPU and simulation; only the streams differ.
In simulation (``simulate=True``) both streams are :class:`CheckedStream`: simulated
streams that share a :class:`HazardChecker`, which tracks happens-before between the
two streams (vector clocks over their FIFO order and the event waits) and raises
:class:`StreamHazard` when a kernel reads a slot its copy is not ordered before, or a
copy overwrites a slot a read is not ordered before.  The checker looks at what the
streams are asked to do, not at timing, so a missing wait is caught on every run.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..compiler.artifact import CompiledModel, PartitionArtifact, TensorSpec
from ..contracts.trace import COPY, Span
from ..errors import CompileError, InternalError, RuntimeFailure
from .dlpack import tensor_view
from .external_weights import read_exactly
from .memory import Buffer, Memory
from .streams import Marker, SimulatedStream, Stream
from .workers import Worker


CHUNKED_REFILLS = False
"""Issue each ring refill as copies of at most :data:`REFILL_CHUNK_BYTES` (read when a
session opens, :class:`CopyEngine`).  Off: device step 120's probe (session 48, H100,
bench/results/copy-chunks-2core.md) found a small copy on another stream still waits for
every chunk submitted before it, so chunks enqueued at once change nothing.  A refill
of n bytes costs ceil(n / chunk) ``cudaMemcpyAsync`` calls on the host's turn
(~11 for llama_decode's 92 MB layer) instead of one.  Not priced apart: the planner
prices a refill as one copy (``Problem.weight_copy_s``: the h2d fit's latency + bytes at
link bandwidth), and the refill's enqueue is inside the profile's measured ``call_s``;
the extra calls (~10 x a few us uncontended) and the chunks' back-to-back gaps on the
device are below the turn's run-to-run spread (~550 us, 572-960), and step 120's probe
times both (``enqueue_us``, ``big_ms``) in case they are not."""

THROTTLED_REFILLS = False
"""Submit each ring refill in chunks of :data:`REFILL_CHUNK_BYTES` from the engine's copier
thread, at most :data:`THROTTLE_IN_FLIGHT` in flight (read when a session opens,
:class:`CopyEngine`; see the module docstring).  Off: device step 123 (session 48, H100,
bench/results/copy-queue-nvidia-h100.md): with K = 1 a small copy no longer waits but the
refill takes 1.26x as long (2.10 vs 1.67 ms for 92 MB); with K = 2 (8 or 4 MiB) it still
waits for the whole refill (20 of 20), and llama_decode 1/2 measured 1.08x slower with it.
Host cost: one thread wake a chunk (a blocking event wait: the copy stream of a session
with it on is made with blocking events) and the reader's host thread waiting for the
refill's submission instead of only the device waiting for its landing."""

THROTTLE_IN_FLIGHT = 2
"""K: chunks of a throttled refill in flight at once.  1: a small copy waits at most one
chunk, but the copy engine idles between chunks for the copier's wake-up and the next
``cudaMemcpyAsync``; 2: the next chunk is queued while the thread wakes (no gap when a
wake takes less than a chunk's ~170 us), a small copy waits up to two."""

REFILL_CHUNK_BYTES = 8 << 20
"""The largest copy of a chunked refill: at ~50 GB/s an 8 MiB chunk takes ~170 us,
the most a small copy queued behind it waits."""


class StreamHazard(InternalError):
    """A ring slot was read before its copy was ordered before the read, or overwritten
    before every read of it was ordered before the copy: an ordering bug in the runtime."""


# --- the checker (simulation) ----------------------------------------------------------
@dataclass
class _Access:
    stream: str
    seq: int
    what: str


@dataclass
class _Region:
    last_write: _Access | None = None
    reads: list[_Access] = field(default_factory=list)


class HazardChecker:
    """Happens-before between streams, and the read/write hazards on ring slots.

    Each stream's operations are numbered in enqueue order; a stream's *clock* says,
    per stream, the last operation known to precede whatever it runs next (its own
    previous ones, and through :meth:`wait`, what preceded the marker it waited for).
    ``regions`` are the ring slots, by base address."""

    def __init__(self):
        self.lock = threading.RLock()
        self._clock: dict[str, dict[str, int]] = {}
        self._regions: dict[int, _Region] = {}
        self._sizes: dict[int, int] = {}

    def add_region(self, ptr: int, nbytes: int = 1) -> None:
        """Track ``nbytes`` from ``ptr`` (a ring slot); an access anywhere inside
        (a chunk of a refill) counts as one on the slot."""
        with self.lock:
            self._regions[int(ptr)] = _Region()
            self._sizes[int(ptr)] = max(1, int(nbytes))

    def _region(self, ptr: int) -> _Region | None:
        ptr = int(ptr)
        if ptr in self._regions:
            return self._regions[ptr]
        for base, size in self._sizes.items():  # a handful of slots: a scan is enough
            if base <= ptr < base + size:
                return self._regions[base]
        return None

    def _tick(self, stream: str) -> dict[str, int]:
        clock = self._clock.setdefault(stream, {})
        clock[stream] = clock.get(stream, 0) + 1
        return clock

    def _ordered(self, access: _Access, stream: str) -> bool:
        return self._clock.get(stream, {}).get(access.stream, 0) >= access.seq

    def record(self, stream: str) -> dict[str, int]:
        """The clock a marker recorded now on ``stream`` carries."""
        return dict(self._clock.get(stream, {}))

    def wait(self, stream: str, clock: dict[str, int]) -> None:
        mine = self._clock.setdefault(stream, {})
        for s, seq in clock.items():
            mine[s] = max(mine.get(s, 0), seq)

    def write(self, stream: str, ptr: int, what: str) -> None:
        region = self._region(ptr)
        clock = self._tick(stream)
        if region is None:
            return
        for r in region.reads:
            if not self._ordered(r, stream):
                raise StreamHazard(f"{what} on the {stream} stream overwrites a ring slot that {r.what} on the "
                                   f"{r.stream} stream may still read (no event orders that read before it)")
        w = region.last_write
        if w is not None and not self._ordered(w, stream):
            raise StreamHazard(f"{what} on the {stream} stream may overlap {w.what} on the {w.stream} stream")
        region.last_write, region.reads = _Access(stream, clock[stream], what), []

    def read(self, stream: str, ptrs, what: str) -> None:
        clock = self._tick(stream)
        for ptr in ptrs:
            region = self._region(ptr)
            if region is None:
                continue
            w = region.last_write
            if w is None or not self._ordered(w, stream):
                landed = "was never filled" if w is None else f"is filled by {w.what}, not ordered before it"
                raise StreamHazard(f"{what} on the {stream} stream reads a ring slot that {landed} "
                                   "(no event wait between the copy and the read)")
            region.reads.append(_Access(stream, clock[stream], what))


class CheckedStream(SimulatedStream):
    """A simulated stream that reports what it is asked to do to a :class:`HazardChecker`.

    The bookkeeping and the enqueue happen under the checker's lock, so the checker
    sees every stream's operations in their FIFO order."""

    def __init__(self, name: str, checker: HazardChecker):
        super().__init__(f"simulated {name} stream")
        self.name = name
        self.checker = checker

    def launch(self, fn, reads=()) -> None:
        with self.checker.lock:
            self.checker.read(self.name, [b.ptr for b in reads], "a partition's kernels")
            pending = self._enqueue_call(fn)
        self._await(pending)

    def launch_in_order(self, fn) -> None:
        self.launch(fn)

    def copy(self, dst, src, kind: str) -> None:
        with self.checker.lock:
            self.checker.write(self.name, dst.ptr, f"an {kind} copy")
            super().copy(dst, src, kind)

    def wait(self, marker: Marker) -> None:
        with self.checker.lock:
            self.checker.wait(self.name, getattr(marker, "clock", {}))
            super().wait(marker)

    def record(self) -> Marker:
        with self.checker.lock:
            m = super().record()
            m.clock = self.checker.record(self.name)  # what precedes the marker, for a wait on it
        return m


# --- the copy engine ------------------------------------------------------------------
_SWITCH = object()  # CopyEngine's chunk size: the module switches' when the engine is made


class CopyEngine:
    """The two orderings streaming needs, on a compute stream and a copy stream.

    The same code drives CUDA streams (events, ``cudaStreamWaitEvent``,
    ``cudaMemcpyAsync`` on the copy stream) and the simulated, checked ones.
    ``chunk_bytes``: the largest single copy of a fill (None: one copy); by default
    :data:`REFILL_CHUNK_BYTES` if :data:`CHUNKED_REFILLS` or :data:`THROTTLED_REFILLS` is
    on when the engine is made.  ``throttle``: at most this many chunks of a fill in
    flight, submitted by the engine's copier thread (None: every chunk at once, on the
    caller's thread); by default :data:`THROTTLE_IN_FLIGHT` if :data:`THROTTLED_REFILLS`
    is on.  Invariant either way: a fill's chunks are copied in address order on the
    copy stream, after its ``after`` marker, and its "landed" marker follows the last."""

    def __init__(self, compute: Stream, copier: Stream, chunk_bytes: int | None | object = _SWITCH,
                 throttle: int | None | object = _SWITCH):
        self.compute = compute
        self.copier = copier
        if throttle is _SWITCH:
            throttle = THROTTLE_IN_FLIGHT if THROTTLED_REFILLS else None
        if chunk_bytes is _SWITCH:
            chunk_bytes = REFILL_CHUNK_BYTES if (CHUNKED_REFILLS or throttle is not None) else None
        if chunk_bytes is not None and int(chunk_bytes) <= 0:
            raise InternalError(f"a refill chunk must be at least one byte, not {chunk_bytes}")
        if throttle is not None and int(throttle) <= 0:
            raise InternalError(f"a throttled refill needs at least one chunk in flight, not {throttle}")
        self.chunk_bytes = None if chunk_bytes is None else int(chunk_bytes)
        self.throttle = None if throttle is None else int(throttle)
        # (dst ptr, src ptr, bytes) -> its chunks: a ring refills the same (slot, partition)
        # pairs run after run, and cutting them anew cost ~3 us of host time a chunk
        self._chunks: dict[tuple[int, int, int], list[tuple[Buffer, Buffer]]] = {}
        self._thread = None
        self.chunk_waits = 0  # host waits of the copier thread for a chunk to land (throttled)
        self.copier_cpu_s = 0.0  # the copier thread's CPU time in its fills (throttled; host cost)
        if self.throttle is not None:  # a leased thread, like the session's workers
            self._thread = Worker("copier")

    def fill(self, dst: Buffer, src: Buffer, after: Marker | None) -> tuple[Marker, Marker]:
        """Enqueue on the copy stream: wait for ``after`` (the marker after the slot's
        last reader), then copy ``src`` into ``dst`` (in chunks of at most
        ``chunk_bytes``, in order); returns the markers before the first copy and
        after the last (the second: "landed").  Throttled: the copier thread submits
        it and this waits until it has (see :meth:`submit`)."""
        if self._thread is None:
            return self._fill_now(dst, src, after, None)
        box: list = []
        got = threading.Event()
        self.submit(dst, src, after, lambda markers, error: (box.append((markers, error)), got.set()))
        got.wait()
        markers, error = box[0]
        if error is not None:
            raise error
        return markers

    def submit(self, dst: Buffer, src: Buffer, after: Marker | None, done) -> None:
        """:meth:`fill` handed over: ``done(markers, None)`` once every copy of it is
        enqueued (``markers``: before the first copy, after the last), ``done(None,
        error)`` if that failed.  Unthrottled: enqueued now and ``done`` called before
        this returns (an error also raised).  Throttled: queued for the copier thread,
        which calls ``done``; fills are submitted in the order of the calls.  ``after``
        need only be valid until this returns: the throttled path waits on a marker of
        its own, recorded now on the compute stream (after ``after``, in its order)."""
        if self._thread is None:
            try:
                markers = self._fill_now(dst, src, after, None)
            except BaseException as e:
                done(None, e)
                raise
            done(markers, None)
            return
        own = self.compute.record() if after is not None else None

        def job():
            cpu = time.thread_time()
            try:
                markers = self._fill_now(dst, src, own, self.throttle)
            except BaseException as e:  # noqa: BLE001 - reported to whoever waits for the fill
                done(None, e)
                return
            finally:
                if own is not None:
                    own.release()  # its wait is enqueued (or never will be)
                self.copier_cpu_s += time.thread_time() - cpu
            done(markers, None)

        self._thread.post(job)

    def _fill_now(self, dst: Buffer, src: Buffer, after: Marker | None, in_flight: int | None):
        """Enqueue the fill on this thread; ``in_flight``: submit chunk ``i`` only once chunk
        ``i - in_flight`` has landed (this thread waits on its marker), None: all at once."""
        if after is not None:
            self.copier.wait(after)
        start = self.copier.record()
        pairs = self._pairs(dst, src)
        if in_flight is None or len(pairs) <= in_flight:
            for d, s in pairs:
                self.copier.copy(d, s, "h2d")
            return start, self.copier.record()
        pending: deque = deque()  # (chunk, the marker after it) for chunks a later one waits for
        try:
            for i, (d, s) in enumerate(pairs):
                if pending and pending[0][0] <= i - in_flight:
                    m = pending.popleft()[1]
                    m.synchronize()  # chunk i - in_flight landed: with this one, in_flight in flight
                    m.release()
                    self.chunk_waits += 1
                self.copier.copy(d, s, "h2d")
                if i + in_flight < len(pairs):  # chunk i + in_flight waits for this one
                    pending.append((i, self.copier.record()))
        finally:
            for _, m in pending:
                m.release()
        return start, self.copier.record()

    def _pairs(self, dst: Buffer, src: Buffer) -> list[tuple[Buffer, Buffer]]:
        if self.chunk_bytes is None or src.nbytes <= self.chunk_bytes:
            return [(dst, src)]
        key = (dst.ptr, src.ptr, src.nbytes)
        pairs = self._chunks.get(key)
        if pairs is None:
            pairs = self._chunks[key] = chunk_pairs(dst, src, self.chunk_bytes)
        return pairs

    def drain(self) -> None:
        """Return once every fill handed over so far is submitted (throttled: the copier
        thread is idle; nothing to wait for otherwise).  The session calls it before each
        task of a CUDA-graph capture run: a capture forbids CUDA calls from other threads."""
        if self._thread is None:
            return
        idle = threading.Event()
        self._thread.post(idle.set)
        idle.wait()

    def before_read(self, landed: Marker) -> None:
        """Make the compute stream's next call wait until the copy behind ``landed`` has landed."""
        self.compute.wait(landed)

    def close(self) -> None:
        """Submit what was handed over, stop the copier thread, drain and close the copy stream."""
        if self._thread is not None:
            self._thread.close()
        self.copier.close()
        self._chunks.clear()


def chunk_pairs(dst: Buffer, src: Buffer, chunk_bytes: int | None) -> list[tuple[Buffer, Buffer]]:
    """``(dst, src)`` cut into consecutive byte ranges of at most ``chunk_bytes`` (the
    last one shorter; None or a copy that fits: the pair itself).  Each piece is a
    uint8 Buffer at the same offset of both: its ``ptr`` moved by the offset and, where
    the Buffer has an array, a view of those bytes of it.  Invariant: the pieces cover
    ``src.nbytes`` bytes exactly once, in address order."""
    nbytes = src.nbytes
    if dst.nbytes < nbytes:
        raise InternalError(f"a copy of {nbytes} bytes into a buffer of {dst.nbytes}")
    if chunk_bytes is None or nbytes <= chunk_bytes:
        return [(dst, src)]
    if any(b.array is not None and not b.array.flags.c_contiguous for b in (dst, src)):
        raise InternalError("a chunked copy needs contiguous buffers (a view of a copy would be written)")
    flat = [None if b.array is None else b.array.reshape(-1).view(np.uint8) for b in (dst, src)]
    pairs = []
    for lo in range(0, nbytes, chunk_bytes):
        hi = min(lo + chunk_bytes, nbytes)
        pairs.append(tuple(
            Buffer(TensorSpec(f"{b.spec.name} [{lo}:{hi}]", (hi - lo,), "uint8"), b.side, None, b.ptr + lo,
                   None if a is None else a[lo:hi], b.pinned)
            for b, a in zip((dst, src), flat)))
    return pairs


@dataclass
class _Streamed:
    """One streamed partition: its packed weights in pinned memory and their views per slot."""

    artifact: PartitionArtifact
    pinned: Buffer
    views: dict[int, list] = field(default_factory=dict)  # ring slot -> weight tensors


class WeightRing:
    """The ring of device slots streamed partitions' weights are copied into; see the module docstring."""

    def __init__(self, compiled: CompiledModel, memory: Memory, engine: CopyEngine, device: str):
        self.engine = engine
        self._device = device  # "cuda" (a real GPU) or "cpu" (simulation): where the views live
        self.parts = [_Streamed(a, _load_pinned(compiled, a, memory)) for a in compiled.partitions
                      if a.weights is not None]
        self.index = {s.artifact.name: i for i, s in enumerate(self.parts)}
        plan = compiled.plan
        self.n_slots = max(1, int(plan.stream_slots))
        slot_bytes = max([int(plan.stream_slot_bytes)] + [s.artifact.weights.nbytes for s in self.parts])
        self.slots = [memory.device(TensorSpec(f"weight ring slot {i}", (slot_bytes,), "uint8"))
                      for i in range(self.n_slots)]
        for slot in self.slots:
            checker = getattr(engine.copier, "checker", None)
            if checker is not None:
                checker.add_region(slot.ptr, slot_bytes)
        self._cond = threading.Condition()
        self._landed: dict[int, tuple[Marker, Marker]] = {}  # use -> (copy start, landed)
        self._extra: dict[int, Marker] = {}  # use -> marker recorded for a use that made no call
        self._reserved = 0
        self._error: BaseException | None = None
        # (partition index, slot index) -> the Buffer its copy writes: the same pairs
        # refill run after run (a Buffer and a slice of the slot per fill cost ~2 us)
        self._dsts: dict[tuple[int, int], Buffer] = {}
        for use in range(self.n_slots):
            self._fill(use, None)

    @property
    def per_run(self) -> int:
        return len(self.parts)

    def reserve(self) -> int:
        """The first of ``per_run`` consecutive use numbers for a new run (call under
        the lock that orders the run's tasks into the worker queues)."""
        base = self._reserved
        self._reserved += self.per_run
        return base

    def use_of(self, base: int, partition: str) -> int:
        return base + self.index[partition]

    def slot_index(self, use: int) -> int:
        """The ring slot use ``use`` reads (its copy lands in)."""
        return use % self.n_slots

    def slot_of(self, use: int) -> Buffer:
        return self.slots[self.slot_index(use)]

    def capture_runs(self) -> int:
        """Runs after which every streamed partition has been called with every slot it
        will ever read: a partition's slot repeats after ``slots / gcd(per_run, slots)`` runs."""
        return self.n_slots // math.gcd(self.per_run, self.n_slots) if self.per_run else 1

    def acquire(self, use: int) -> list:
        """Before the call of ``use``: wait (host) until its copy is enqueued (throttled:
        its last chunk submitted), make the compute stream wait for it to land; returns
        the weight tensors (views of the slot)."""
        _, landed = self._wait_enqueued(use)
        self.engine.before_read(landed)
        return self._views(use)

    def retire(self, use: int, done: Marker | None) -> None:
        """After the call of ``use`` was enqueued (``done``: the marker after it), or
        failed or was skipped (``done`` None): enqueue the copy that refills its slot."""
        self._wait_enqueued(use)
        if done is None:
            done = self._extra[use] = self.engine.compute.record()
        self._fill(use + self.n_slots, done)

    def _wait_enqueued(self, use: int) -> tuple[Marker, Marker]:
        with self._cond:
            while use not in self._landed and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise RuntimeFailure(f"streaming weights into the GPU failed earlier ({self._error}); "
                                     "open a new Session") from self._error
            return self._landed[use]

    def _fill(self, use: int, after: Marker | None) -> None:
        part = self.parts[use % self.per_run]
        key = (use % self.per_run, use % self.n_slots)
        dst = self._dsts.get(key)
        if dst is None:
            dst = self._dsts[key] = self._destination(part, self.slot_of(use))

        def done(markers, error) -> None:  # on this thread, or the engine's copier thread (throttled)
            with self._cond:
                if error is not None:
                    self._error = self._error or error
                else:
                    self._landed[use] = markers
                self._cond.notify_all()

        self.engine.submit(dst, part.pinned, after, done)

    @staticmethod
    def _destination(part: _Streamed, slot: Buffer) -> Buffer:
        """Where ``part``'s weights land in ``slot``: its first bytes, typed as the pinned source."""
        nbytes = part.pinned.nbytes
        return Buffer(part.pinned.spec, slot.side, None, slot.ptr,
                      slot.array[:nbytes] if slot.array is not None else None)

    def _views(self, use: int) -> list:
        part = self.parts[use % self.per_run]
        slot_index = use % self.n_slots
        views = part.views.get(slot_index)
        if views is None:
            slot = self.slots[slot_index]
            views = part.views[slot_index] = [
                tensor_view(slot.ptr + w.offset, w.shape, w.dtype, device=self._device, owner=slot)
                for w in part.artifact.weights.tensors]
        return views

    def finish_run(self, base: int, run_id: int, track: str | None, to_host, stats) -> None:
        """A run's uses are done: put its copies on ``track`` of ``stats`` (when
        ``track``), then release their markers."""
        for use in range(base, base + self.per_run):
            with self._cond:
                markers = self._landed.pop(use, None)
            extra = self._extra.pop(use, None)
            if markers is None:
                continue
            start, landed = markers
            if track is not None:
                name = f"weights {self.parts[use % self.per_run].artifact.name}"
                stats.span(Span(track, name, to_host(start), to_host(landed), COPY, run_id))
            for m in (start, landed, extra):
                if m is not None:
                    m.release()

    def close(self) -> None:
        """Drain the copy stream and release every marker left (prefetches for runs never made)."""
        self.engine.close()
        with self._cond:
            left, self._landed = list(self._landed.values()), {}
            extra, self._extra = list(self._extra.values()), {}
            if self._error is None:
                self._error = RuntimeFailure("the session is closed")
            self._cond.notify_all()
        for start, landed in left:
            start.release()
            landed.release()
        for m in extra:
            m.release()
        for part in self.parts:
            part.views.clear()
        self._dsts.clear()
        self.parts, self.slots = [], []  # their buffers' views go with them (Memory frees the bytes)


def _load_pinned(compiled: CompiledModel, art: PartitionArtifact, memory: Memory) -> Buffer:
    """Partition ``art``'s packed weights read once from the artifact into pinned memory,
    checked against the manifest's size and sha256."""
    path = compiled.weights_path(art)
    nbytes = art.weights.nbytes
    buf = memory.pinned(TensorSpec(f"{art.name} weights", (nbytes,), "uint8"))
    read_exactly(path, memoryview(buf.array).cast("B"), art.name)  # its size checked there
    if hashlib.sha256(np.ascontiguousarray(buf.array)).hexdigest() != art.weights.sha256:
        raise CompileError(f"weights file {path} of partition '{art.name}' is corrupt or was modified (its "
                           f"sha256 differs from the manifest's); recompile the model")
    return buf
