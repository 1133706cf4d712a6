"""One run in flight: the values published so far, the tasks that produce them, the collection.

A :class:`RunContext` holds one run's state.  Every value is published per *side*
(``(tensor, "cpu")`` / ``(tensor, "cuda")``) with a threading event; a task that needs
a value waits for its event, and, for a host read of something the GPU produced, for
the stream marker behind it (an event sync: only that run's work, never the device).

Task order per run (posted by the session): feeds (:func:`publish_feeds`, on the
caller's thread), one :func:`run_stage` per partition (on that partition's worker),
then :func:`finish` (on the collector), which waits for the run's last stream
operation, hands the outputs out and frees the slot.

Handoff happens where a value is produced (:func:`publish`): a CPU partition's output
*is* the pinned buffer, so it only enqueues one h2d copy (or nothing, mapped); a GPU
partition's output is copied d2h into the pinned buffer on the stream (or written
there directly, mapped) and a marker tells the host when it has landed.

A tensor of data-dependent shape (:attr:`Route.dynamic`) has no slot buffer: its
producer runs ``main`` and publishes the tensor its VM returned, and each crossing
copies it into a buffer of the actual size made for this run (counted as an h2d/d2h
copy and in ``transient_buffers``).  Static tensors keep the zero-copy path.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from ..compiler.artifact import PartitionArtifact
from ..errors import RuntimeFailure
from .handoff import Route, Slot
from .memory import Buffer, Memory, SimulatedMemory, aligned_empty, is_out_of_memory, wrap_host_array
from .partition_runner import PartitionRunner
from .stats import HOST_TRACK, EdgeHandoff, RunStats, Span
from .streams import Marker, Stream
from .workers import Worker

# Traced runs also record, per CUDA partition, the host's own time on the track
# HOST_TRACK: "host pX" (run_stage of that partition: its inputs, the ring's acquire,
# the launch, the refill copy's enqueue, the output handoff) and, nested in it,
# "launch pX" (the VM call that enqueues its kernels, between the two stream markers
# that time the GPU span).  Off: traced runs record what they did before.  Issue 19:
# a streaming plan's CUDA partition spans ~200 us on the H100 however small its
# kernels, and these say how much of that the host spends launching it.
HOST_LAUNCH_SPANS = True

# Untimed runs record a stream marker only where something waits on it (issue 19: each is
# a CUDA runtime call, several microseconds, on a CPU->CUDA->CPU turn's critical path):
# none after a CPU->GPU input copy (its reader is on the same stream) or a non-streamed
# partition's launch, and a mapped output's host read waits on the marker after the
# launch that wrote it rather than on one recorded right after it.  The run's last
# stream operation is still waited for at its end: a marker is recorded then if that
# operation had none (RunContext.wait_device_idle).  Traced runs record every marker,
# as before, so their traces are unchanged.  Off: every stream operation gets its own.
# Read when a session opens (Session passes it to each run's RunContext).
LEAN_MARKERS = True


class _Aborted(Exception):
    """Another task of this run failed; this one stops without reporting."""


@dataclass
class Stage:
    """A partition as the session runs it: its artifact, its runner, its worker thread."""

    artifact: PartitionArtifact
    runner: PartitionRunner
    worker: Worker

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def side(self) -> str:
        return self.artifact.device

    @property
    def track(self) -> str:
        return f"cpu: {self.name}" if self.side == "cpu" else ""

    # computed once (run_stage asks for them on every call; the artifact never changes)
    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.artifact.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.artifact.outputs)

    @cached_property
    def launches_in_order(self) -> bool:
        """A CUDA partition whose VM sizes outputs from values it reads on the host
        (``Stream.launch_in_order``)."""
        return any(self.runner.dynamic_outputs)

    @cached_property
    def launch_label(self) -> str:
        return f"launch {self.name}"

    @cached_property
    def host_label(self) -> str:
        return f"host {self.name}"


class RunContext:
    """The state of one run; filled by the tasks of that run only."""

    def __init__(self, run_id: int, routes: dict[str, Route], slot: Slot, stream: Stream | None,
                 stages: int, timed: bool, memory: Memory | None = None, lean: bool | None = None):
        self.run_id = run_id
        # untimed and lean: markers only where something waits (LEAN_MARKERS, None: the switch now)
        self.lean = (LEAN_MARKERS if lean is None else lean) and not timed
        self.routes = routes
        self.slot = slot
        self.stream = stream
        self.memory = memory if memory is not None else SimulatedMemory()  # for per-run (dynamic) buffers
        self.timed = timed
        self.stats = RunStats()
        self.feeds: dict[str, Buffer] = {}  # the run's validated feeds (set by the session)
        # bound state (.state): tensor -> the state buffer its producer writes this run
        self.state_outputs: dict[str, Buffer] = {}
        self.holds_state = False
        # streamed weights: the session's ring and this run's first use number (.weight_stream)
        self.ring = None
        self.stream_base = 0
        self.error: tuple[str, BaseException] | None = None
        self.started = time.perf_counter()
        # fresh result arrays: every byte is written by the producing kernel, so no zeroing
        self.fresh = {name: aligned_empty(routes[name].spec) for name in slot.fresh_outputs}
        self._fresh_buffers: dict[str, Buffer] = {}
        self._values: dict[tuple[str, str], Buffer] = {}
        self._markers: dict[tuple[str, str], Marker] = {}
        # Events are made only for a value some task waits for before it is there
        # (never on the synchronous path, where every value precedes its reader).
        self._events: dict[tuple[str, str], threading.Event] = {}
        self._stream_spans: list[tuple[str, str, Marker, Marker]] = []
        self._all_markers: list[Marker] = []
        self._fence: Marker | None = None
        self._unmarked = False  # a stream operation without a marker was enqueued after the fence
        self._lock = threading.Lock()
        self._pending = stages
        self._stages_done: threading.Event | None = None

    # --- values ----------------------------------------------------------------
    def put(self, name: str, side: str, buf: Buffer, marker: Marker | None = None) -> None:
        key = (name, side)
        if marker is not None:
            self._markers[key] = marker
        with self._lock:  # value and wake-up together: a waiter either sees it or gets woken
            self._values[key] = buf
            event = self._events.get(key)
        if event is not None:
            event.set()

    def get(self, name: str, side: str) -> Buffer:
        """The value of ``name`` on ``side``, waiting until it is there (and landed)."""
        key = (name, side)
        buf = self._values.get(key)
        if buf is None and self.error is None:
            with self._lock:
                buf = self._values.get(key)
                event = None
                if buf is None and self.error is None:
                    event = self._events.get(key)
                    if event is None:
                        event = self._events[key] = threading.Event()
            if event is not None:
                event.wait()
        if self.error is not None:
            raise _Aborted()
        marker = self._markers.get(key)
        if marker is not None and side == "cpu":
            marker.synchronize()
        return self._values[key]

    def output_buffer(self, name: str, side: str) -> Buffer | None:
        """Where the producer of ``name`` writes it: a fresh result array or the slot's
        buffer; None for a data-dependent shape (the producer's VM allocates it)."""
        route = self.routes[name]
        if route.dynamic:
            return None
        state = self.state_outputs.get(name)
        if state is not None:
            return state
        fresh = self.fresh.get(name)
        if fresh is not None:
            buf = self._fresh_buffers.get(name)
            if buf is None:
                buf = self._fresh_buffers[name] = wrap_host_array(fresh, route.spec)
            return buf
        return self.slot.buffers[(name, side)]

    def transient(self, like: Buffer, side: str) -> Buffer:
        """A buffer on ``side`` for this run only, of ``like``'s actual shape."""
        self.stats.count("transient_buffers")
        return self.memory.transient(like.spec, side)

    # --- stream operations of this run ----------------------------------------
    def enqueue(self, op: Callable[[], None], label: str, category: str, mark: bool = True) -> Marker | None:
        """Enqueue ``op`` on the stream and return a marker placed right after it;
        ``mark=False`` (nothing waits on that marker): None and no marker in an untimed
        run under :data:`LEAN_MARKERS` (the run's end still waits for ``op``)."""
        if not mark and self.lean:
            op()
            with self._lock:  # after op: a fence recorded later is behind it in stream order
                self._unmarked = True
            return None
        start = self.stream.record() if self.timed else None
        op()
        with self._lock:  # record+assign together: the fence is the latest in stream order
            end = self.stream.record()
            self._fence = end
            self._unmarked = False
            if start is None:
                self._all_markers.append(end)
            else:
                self._all_markers.append(start)
                self._all_markers.append(end)
                self._stream_spans.append((label, category, start, end))
        return end

    def host_span(self, track: str, name: str, start: float, end: float) -> None:
        self.stats.span(Span(track, name, start, end, "partition", self.run_id))

    # --- completion ----------------------------------------------------------------
    def fail(self, partition: str, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = (partition, error)
            events = list(self._events.values())
        for event in events:
            event.set()  # wake every waiting task; each sees the error and stops

    def stage_done(self) -> None:
        with self._lock:
            self._pending -= 1
            done = self._stages_done if self._pending == 0 else None
        if done is not None:
            done.set()

    def wait_device_idle(self) -> None:
        """Wait for every task, then for this run's last stream operation."""
        with self._lock:
            done = None
            if self._pending > 0:
                done = self._stages_done = self._stages_done or threading.Event()
        if done is not None:
            done.wait()
        with self._lock:
            if self._unmarked:  # the run's last stream operation has no marker: one now
                self._fence = self.stream.record()
                self._all_markers.append(self._fence)
                self._unmarked = False
            fence = self._fence
        if fence is not None:
            fence.synchronize()

    def resolve_stream_spans(self, track: str, to_host: Callable[[Marker], float]) -> None:
        for label, category, start, end in self._stream_spans:
            self.stats.span(Span(track, label, to_host(start), to_host(end), category, self.run_id))

    def release_markers(self) -> None:
        for m in self._all_markers:
            m.release()
        self._all_markers.clear()


# --- handoff -------------------------------------------------------------------------
def publish(ctx: RunContext, name: str, side: str, buf: Buffer, written: Marker | None = None,
            copied: frozenset = frozenset()) -> None:
    """Make ``name`` (just produced on ``side`` into ``buf``) available on every side that reads it.
    ``written``: a stream marker after the GPU work that wrote ``buf`` (a partition's launch),
    which a mapped output's host read may wait on instead of a marker of its own.
    ``copied``: tensors whose h2d copy is already enqueued (their producer's block,
    :func:`_copy_group`)."""
    route = ctx.routes[name]
    ctx.put(name, side, buf)
    for other in route.others(side):
        if side == "cpu":
            _to_gpu(ctx, route, buf, name in copied)
        else:
            _to_host(ctx, route, buf, written)


def _copy_group(ctx: RunContext, stage: Stage, outputs: list[Buffer]) -> frozenset:
    """Enqueue the one h2d copy of a CPU partition's grouped outputs (:data:`.handoff.GROUPED_H2D`)
    and return their names; nothing (empty) if the partition has no group or an output is not
    in its slot view (a stand-in runner's own buffer: each is then copied alone, as before)."""
    group = ctx.slot.groups.get(stage.name)
    if group is None:
        return frozenset()
    held = dict(zip(stage.output_names, outputs))
    buffers = ctx.slot.buffers
    for name in group.names:
        buf = held.get(name)
        if buf is None or buf.ptr != buffers[(name, "cpu")].ptr:
            return frozenset()
    host, dev = group.host, group.device
    ctx.enqueue(lambda: ctx.stream.copy(dev, host, "h2d"), group.label, "copy", mark=False)
    return group.members


def _to_gpu(ctx: RunContext, route: Route, host: Buffer, copied: bool = False) -> None:
    """``copied``: the copy is enqueued already (a grouped block); counted as before."""
    name = route.spec.name
    dst = ctx.transient(host, "cuda") if route.dynamic else ctx.slot.buffers[(name, "cuda")]
    kernel = None if route.dynamic else ctx.slot.kernel_copies.get(name)
    if route.mode == "mapped":
        ctx.stats.crossed("mapped", 0, EdgeHandoff(name, "h2d", "mapped", host.nbytes, copies=0))
    elif not copied and kernel is not None and host.ptr == ctx.slot.buffers[(name, "cpu")].ptr:
        # a small crossing: a kernel reads the pinned buffer through its mapped pointer
        # (.small_copy), on the stream, not queued behind the copy engine's refills; its
        # readers are on the same stream: no marker needed
        ctx.enqueue(lambda: ctx.stream.launch(kernel), route.label("h2d"), "copy", mark=False)
        ctx.stats.crossed("h2d", host.nbytes, EdgeHandoff(name, "h2d", "kernel", host.nbytes, copies=1))
    else:  # its readers are on the same stream: no marker needed
        if not copied:
            ctx.enqueue(lambda: ctx.stream.copy(dst, host, "h2d"), route.label("h2d"), "copy", mark=False)
        ctx.stats.crossed("h2d", host.nbytes, EdgeHandoff(name, "h2d", "copy", host.nbytes, copies=1))
    ctx.put(name, "cuda", dst)


def _to_host(ctx: RunContext, route: Route, device: Buffer, written: Marker | None = None) -> None:
    name = route.spec.name
    if route.dynamic:  # no slot buffers: one copy into host memory of the actual size
        dst = ctx.transient(device, "cpu")
        marker = ctx.enqueue(lambda: ctx.stream.copy(dst, device, "d2h"), route.label("d2h"), "copy")
        ctx.stats.crossed("d2h", device.nbytes, EdgeHandoff(name, "d2h", "copy", device.nbytes, copies=1))
        ctx.put(name, "cpu", dst, marker)
        return
    dst = ctx.slot.buffers[(name, "cpu")]
    if route.mode == "mapped" and device.ptr != ctx.slot.buffers[(name, "cuda")].ptr:
        # a caller's device tensor is not our mapped buffer: it still needs one copy
        route = Route(route.spec, route.producer, route.home, route.sides, route.is_output, "copy")
    if route.mode == "mapped":
        if written is not None and ctx.lean:
            marker = written  # the kernels wrote the mapped buffer before it: nothing to add
        else:
            marker = ctx.enqueue(lambda: None, route.label("mapped"), "copy")
        ctx.stats.crossed("mapped", 0, EdgeHandoff(name, "d2h", "mapped", device.nbytes, copies=0))
    else:
        marker = ctx.enqueue(lambda: ctx.stream.copy(dst, device, "d2h"), route.label("d2h"), "copy")
        ctx.stats.crossed("d2h", device.nbytes, EdgeHandoff(name, "d2h", "copy", device.nbytes, copies=1))
    ctx.put(name, "cpu", dst, marker)


def publish_feeds(ctx: RunContext, feeds: dict[str, Buffer], fixed: bool = False) -> None:
    """Publish validated feeds (Buffers on "cpu" or "cuda"); host feeds read by the GPU
    are first copied into their pinned buffer (one ``feed_copies`` each), except those
    of data-dependent shape, which have none and are copied to the GPU directly.
    ``fixed`` (partitions with CUDA graphs over their inputs, ``static_io``): a caller's
    device tensor is first copied (on the stream) into the slot's device buffer, so the
    partitions read only buffers their graphs captured (PyTorch's static inputs)."""
    for name, given in feeds.items():
        route = ctx.routes[name]
        if given.side == "cpu" and route.crosses and not route.dynamic:
            pinned = ctx.slot.buffers[(name, "cpu")]
            np.copyto(pinned.array, given.array)
            ctx.stats.count("feed_copies")
            given = pinned
        elif fixed and given.side == "cuda" and (name, "cuda") in ctx.slot.buffers:
            dst = ctx.slot.buffers[(name, "cuda")]
            if dst.ptr != given.ptr:
                src = given
                ctx.enqueue(lambda dst=dst, src=src: ctx.stream.copy(dst, src, "d2d"), route.label("d2d"), "copy",
                            mark=False)  # read on the same stream
                ctx.stats.count("feed_copies")
                given = dst
        publish(ctx, name, given.side, given)


# --- tasks ---------------------------------------------------------------------------
def run_stage(ctx: RunContext, stage: Stage) -> None:
    """Run one partition of one run on its worker: wait inputs, compute, hand off outputs.

    A streamed partition's call waits for its weights' copy and gets them as extra
    arguments; its use of the ring is retired exactly once, called or not, so the
    slot's next copy is enqueued (:mod:`.weight_stream`)."""
    art = stage.artifact
    side = stage.side
    begun = time.perf_counter() if ctx.timed and HOST_LAUNCH_SPANS and side != "cpu" else None
    use = ctx.ring.use_of(ctx.stream_base, art.name) if ctx.ring is not None and art.weights is not None else None
    try:
        if ctx.error is not None:
            raise _Aborted()
        get, output_buffer = ctx.get, ctx.output_buffer
        inputs = [get(n, side).tensor for n in stage.input_names]
        outputs = [output_buffer(n, side) for n in stage.output_names]
        done = None
        copied: frozenset = frozenset()
        if side == "cpu":
            start = time.perf_counter()
            outputs = _held(stage.runner.call(inputs, outputs, ctx.stats), outputs)
            ctx.host_span(stage.track, stage.name, start, time.perf_counter())
            if ctx.slot.groups:
                copied = _copy_group(ctx, stage, outputs)
        else:
            held: list = []
            reads: tuple = ()
            weights: dict = {}
            if use is not None:  # weights: views of the ring slot their copy lands in
                weights = {"streamed": ctx.ring.acquire(use), "slot": ctx.ring.slot_index(use)}
                reads = (ctx.ring.slot_of(use),)
                ctx.stats.count("weight_copies", art.weights.nbytes)
            runner = stage.runner
            in_order = stage.launches_in_order
            if in_order:
                # Its output shapes come from tensor values (e.g. NMS's selected count)
                # that the VM reads on the host with copies outside our stream: it runs
                # after our stream's work and on the default stream (handle 0), where
                # those copies wait for its kernels (Stream.launch_in_order).
                launch, handle = ctx.stream.launch_in_order, 0
            else:
                launch, handle = (lambda fn: ctx.stream.launch(fn, reads)), getattr(ctx.stream, "handle", 0)
            # launch runs ``call`` on this thread (enqueueing kernels) before returning
            call = lambda: held.append(runner.call(inputs, outputs, ctx.stats, handle, **weights))  # noqa: E731
            if begun is not None:  # the launch alone, on the host's clock
                call = _host_timed(ctx, stage.launch_label, call)
            # a marker after the launch only where something waits on it: the ring's refill
            # of this slot, or a host read of an output through mapped memory
            routes = ctx.routes
            mark = use is not None or in_order or any(routes[n].mode == "mapped" for n in stage.output_names)
            try:
                done = ctx.enqueue(lambda: launch(call), stage.name, "partition", mark)
            finally:
                if use is not None:  # refill the slot now: that copy overlaps what follows
                    retiring, use = use, None
                    ctx.ring.retire(retiring, done)
            outputs = _held(held[0] if held else None, outputs)
        for name, buf in zip(stage.output_names, outputs):
            publish(ctx, name, side, buf, done, copied)
        if begun is not None:
            ctx.stats.span(Span(HOST_TRACK, stage.host_label, begun, time.perf_counter(), "partition", ctx.run_id))
    except _Aborted:
        pass
    except BaseException as e:  # noqa: BLE001 - every failure goes to the caller, named
        ctx.fail(stage.name, e)
    finally:
        if use is not None:  # not called: the slot is refilled all the same
            try:
                ctx.ring.retire(use, None)
            except BaseException as e:  # noqa: BLE001
                ctx.fail(stage.name, e)
        ctx.stage_done()


def _host_timed(ctx: RunContext, name: str, fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` recording its host time as span ``name`` on :data:`HOST_TRACK` of ``ctx``."""
    def timed() -> None:
        start = time.perf_counter()
        try:
            fn()
        finally:
            ctx.stats.span(Span(HOST_TRACK, name, start, time.perf_counter(), "partition", ctx.run_id))
    return timed


def _held(returned, passed: list) -> list[Buffer]:
    """The Buffers holding a partition's outputs: what ``runner.call`` returned, or the
    buffers it was given (a stand-in runner may return nothing)."""
    held = list(returned) if returned is not None else list(passed)
    if len(held) != len(passed) or any(b is None for b in held):
        raise RuntimeFailure("the partition did not return a tensor for every output of data-dependent shape")
    return held


def collect_outputs(ctx: RunContext, output_names: list[str]) -> dict[str, np.ndarray]:
    """The run's results as arrays the caller owns (fresh outputs without a copy; so is
    a data-dependent output, made for this run by its producer or its d2h copy)."""
    results = {}
    for name in output_names:
        buf = ctx.get(name, "cpu")
        route = ctx.routes[name]
        if name in ctx.fresh or (route.dynamic and route.producer is not None):
            results[name] = ctx.fresh[name] if name in ctx.fresh else buf.array
        else:
            results[name] = np.array(buf.array, copy=True)
            ctx.stats.count("output_copies")
    return results


def failure(ctx: RunContext, devices: dict[str, str]) -> RuntimeFailure:
    """The error a failed run raises: the partition's name, device and cause, in the user's words."""
    partition, error = ctx.error
    where = f"partition '{partition}' ({devices.get(partition, '?')})"
    if isinstance(error, RuntimeFailure) and error.partition is None:
        out = RuntimeFailure(f"{where}: {error}", partition=partition)
    elif is_out_of_memory(error):
        out = RuntimeFailure(
            f"{where} ran out of GPU memory: {error}. Use fewer session slots, a smaller "
            "batch, or re-plan with --gpu-memory", partition=partition)
    else:
        out = RuntimeFailure(f"{where} failed: {type(error).__name__}: {error}", partition=partition)
    out.__cause__ = error
    return out
