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
same place, and a small host-to-device copy on another stream (a partition's input)
that the GPU's copy engine serves in issue order waits for one chunk, not the whole
refill (bench/results/capped-decode-gap-s47.md: 8 KB inputs ended 4-6 us after the
in-flight 46-92 MB refill landed, ~1.6 ms a token on llama_decode at 1/2).

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
from dataclasses import dataclass, field

import numpy as np

from ..compiler.artifact import CompiledModel, PartitionArtifact, TensorSpec
from ..contracts.trace import COPY, Span
from ..errors import CompileError, InternalError, RuntimeFailure
from .dlpack import tensor_view
from .external_weights import read_exactly
from .memory import Buffer, Memory
from .streams import Marker, SimulatedStream, Stream


CHUNKED_REFILLS = False
"""Issue each ring refill as copies of at most :data:`REFILL_CHUNK_BYTES` (read when a
session opens, :class:`CopyEngine`).  Off until device step 120 measures it: a refill
of n bytes then costs ceil(n / chunk) ``cudaMemcpyAsync`` calls on the host's turn
(~11 for llama_decode's 92 MB layer) instead of one.  Not priced apart: the planner
prices a refill as one copy (``Problem.weight_copy_s``: the h2d fit's latency + bytes at
link bandwidth), and the refill's enqueue is inside the profile's measured ``call_s``;
the extra calls (~10 x a few us uncontended) and the chunks' back-to-back gaps on the
device are below the turn's run-to-run spread (~550 us, 572-960), and step 120's probe
times both (``enqueue_us``, ``big_ms``) in case they are not."""

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
    :data:`REFILL_CHUNK_BYTES` if :data:`CHUNKED_REFILLS` is on when the engine is made."""

    def __init__(self, compute: Stream, copier: Stream, chunk_bytes: int | None | object = _SWITCH):
        self.compute = compute
        self.copier = copier
        if chunk_bytes is _SWITCH:
            chunk_bytes = REFILL_CHUNK_BYTES if CHUNKED_REFILLS else None
        if chunk_bytes is not None and int(chunk_bytes) <= 0:
            raise InternalError(f"a refill chunk must be at least one byte, not {chunk_bytes}")
        self.chunk_bytes = None if chunk_bytes is None else int(chunk_bytes)
        # (dst ptr, src ptr, bytes) -> its chunks: a ring refills the same (slot, partition)
        # pairs run after run, and cutting them anew cost ~3 us of host time a chunk
        self._chunks: dict[tuple[int, int, int], list[tuple[Buffer, Buffer]]] = {}

    def fill(self, dst: Buffer, src: Buffer, after: Marker | None) -> tuple[Marker, Marker]:
        """Enqueue on the copy stream: wait for ``after`` (the marker after the slot's
        last reader), then copy ``src`` into ``dst`` (in chunks of at most
        ``chunk_bytes``, in order); returns the markers before the first copy and
        after the last (the second: "landed")."""
        if after is not None:
            self.copier.wait(after)
        start = self.copier.record()
        if self.chunk_bytes is None or src.nbytes <= self.chunk_bytes:
            self.copier.copy(dst, src, "h2d")
        else:
            key = (dst.ptr, src.ptr, src.nbytes)
            pairs = self._chunks.get(key)
            if pairs is None:
                pairs = self._chunks[key] = chunk_pairs(dst, src, self.chunk_bytes)
            for d, s in pairs:
                self.copier.copy(d, s, "h2d")
        return start, self.copier.record()

    def before_read(self, landed: Marker) -> None:
        """Make the compute stream's next call wait until the copy behind ``landed`` has landed."""
        self.compute.wait(landed)

    def close(self) -> None:
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
        """Before the call of ``use``: wait (host) until its copy is enqueued, make the
        compute stream wait for it to land; returns the weight tensors (views of the slot)."""
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
        dst = self._dsts.get((use % self.per_run, use % self.n_slots))
        if dst is None:
            dst = self._dsts[(use % self.per_run, use % self.n_slots)] = self._destination(part, self.slot_of(use))
        try:
            markers = self.engine.fill(dst, part.pinned, after)
        except BaseException as e:
            with self._cond:
                self._error = self._error or e
                self._cond.notify_all()
            raise
        with self._cond:
            self._landed[use] = markers
            self._cond.notify_all()

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
