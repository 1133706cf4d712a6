"""Session: run a compiled model on the CPU and the GPU, many times, from many threads.

``Session(compiled)`` sets everything up once: a worker thread per partition, the
session's own CUDA stream (or its simulation), and ``slots`` sets of handoff buffers
(pinned host memory for every CPU<->GPU cut).  Then::

    with hetpart.Session(compiled) as s:
        outputs = s.run({"x": x})                 # dict: model output name -> numpy array
        s.last_run_stats.h2d                      # copies made by that run
        s.run({"x": x}, trace="run.trace.json")   # plus a Chrome/Perfetto trace
        results = s.run_pipelined(batches)        # micro-batches overlapped

A run takes a free slot (or waits for one), so concurrent callers never share buffers,
and runs in flight at once overlap stage by stage.

Partitions whose weights are streamed (``PartitionArtifact.weights``) get them from
a :class:`~.weight_stream.WeightRing`: read once into pinned memory when the session
opens, copied on a copy stream of its own into the plan's ring of device slots ahead
of each call (in simulation, checked streams raise on any ordering hazard).

Two ways a run is executed, with the same tasks (:mod:`.executor`), buffers, copies
and stats:

* *threaded* (:meth:`Session.submit`, :meth:`Session.run_pipelined`, and ``run``
  while another run is in flight): each partition's task goes to that partition's
  worker thread and a collector thread finishes the run, so runs overlap;
* *inline* (``run`` on an idle session, unless ``Session(..., inline=False)``; on a
  real GPU only after one threaded run, which captures the CUDA graphs on the
  session's long-lived worker threads -- see ``_captured``): the
  calling thread runs the partitions itself in topological order (a CUDA partition
  is still only enqueued on the session stream, with the stream made current for the
  calling thread; host reads of GPU results still wait on that run's events) and
  finishes the run, saving the thread hand-offs.  A run submitted meanwhile goes the
  threaded way.  Each partition's VM is entered by one thread at a time whatever the
  way (:class:`~.partition_runner.PartitionRunner` holds a lock while inside it).  Any failure is raised to the
caller as :class:`~hetpart.errors.RuntimeFailure` naming the partition; the session
stays usable.  ``close()`` (or leaving the ``with``) joins every thread and frees
every buffer.

``Session(bucketed)`` for a model compiled per shape bucket
(:class:`~hetpart.compiler.bucketed.BucketedModel`) returns a
:class:`~.bucketed_session.BucketedSession` (pads to the smallest bucket that fits);
``Session(data_parallel)`` for a data-parallel split
(:class:`~hetpart.compiler.data_parallel.DataParallelModel`) a
:class:`~.data_parallel_session.DataParallelSession`.  ``Session(directory)`` loads
the artifact saved there first (:func:`~hetpart.compiler.load_compiled`), whichever
kind; anything else is a RuntimeFailure.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..compiler.artifact import CompiledModel, check_order
from ..compiler.loader import artifact_kind, load_compiled
from ..errors import NoGPUError, RuntimeFailure
from ..targets import cuda_available
from . import executor
from . import handoff as handoff_rules
from .executor import RunContext, Stage
from .handoff import Slot, TransferCosts, plan_routes
from .memory import CudaMemory, Memory, SimulatedMemory
from .pool import PooledMemory, check_quota, reserved_bytes
from .partition_runner import PartitionRunner
from .stats import RunStats
from .streams import CudaStream, SimulatedStream, Stream
from . import weight_stream
from .weight_stream import CheckedStream, CopyEngine, HazardChecker, WeightRing
from . import cpu_share
from .threads import pool_threads
from .workers import Worker
from .feeds import check_feeds, check_indices, stage_feeds
from .state import DeviceState, check_single
from .memory import aligned_array, aligned_empty, dtype_name, is_static


class Session:
    """A compiled model ready to run; see the module docstring.

    ``slots`` is how many runs may be in flight at once (2 = double-buffered
    handoff); ``handoff`` is ``"auto"`` (per cut, from ``transfer_costs``), ``"copy"``
    or ``"mapped"``; ``profile=True`` records spans for every run, not only traced ones;
    ``inline=False`` sends every run through the worker threads (no inline runs);
    ``spin_wait=False`` makes host threads sleep while they wait for the GPU instead
    of spinning (CUDA's default): it frees a core for the CPU partitions but costs a
    wake-up; on the H200 machine it made no consistent difference to pipelined
    throughput over three runs (``bench/runtime.py``), so spinning stays the default.
    ``cpu_threads`` sizes the TVM thread pool of each CPU partition's worker (and
    implies ``cpu_sharing="none"``); None, under ``cpu_sharing="none"``, applies
    :func:`~.threads.pool_threads`: with GPU partitions, a couple of CPUs stay free for
    the threads that feed the GPU; under a sharing policy the partitions run on its
    lanes' pools instead (``pool_threads_used`` says what each got).
    A session given a ``cpu_threads`` other than TVM's default pool runs no run inline:
    an inline run would use the calling thread's own pool, not the size asked for.  (The
    smaller pools of GPU sessions are for pipelined runs; inline runs keep the caller's.)
    ``quota`` (bytes; issue 20, models sharing one GPU) allocates the model's GPU
    memory quota up front as one arena and carves every device buffer of the session
    from it (:mod:`.pool`; a buffer past it raises QuotaExceededError); ``priority``
    (higher first) makes the session's CUDA streams with that priority
    (:func:`~.streams.cuda_priority`; recorded only in simulation).
    ``cpu_sharing`` (issue 20: sessions' CPU partitions running at once must not
    oversubscribe the cores; :mod:`.cpu_share`): ``"gate"`` (MultiSession's default;
    a session opened alone defaults to ``"none"``) runs every CPU
    partition on the process's one gate lane (one pool over every core, one partition
    at a time, GPU work still overlapping), ``"split:N"`` on N lanes with disjoint
    cores, ``"none"`` on the calling thread's or the CPU worker's own pool (the old
    way; implied by ``cpu_threads``, which cannot be combined with a sharing policy).
    ``state`` (``{model output: model input}``) keeps those outputs on the device of
    the partition that makes them as the next run's inputs, never copied through the
    host (:mod:`.state`); ``initial_state`` (``{name: array}``) sets them first (zeros
    otherwise); :meth:`read_state` / :meth:`write_state` copy them out or in.
    """

    def __new__(cls, compiled=None, **kwargs):
        # A model compiled per shape bucket opens as a BucketedSession, a data-parallel
        # split as a DataParallelSession, so hetpart.Session(hetpart.load_compiled(dir))
        # and hetpart.Session(dir) work for every kind of artifact.
        if cls is Session and _is_path(compiled) and artifact_kind(compiled) != "compiled":
            compiled = load_compiled(compiled)  # a plain artifact is loaded by __init__
        if cls is Session and kwargs.get("state") is not None:
            check_single(compiled)  # one step's state lives in one session
        if cls is Session and getattr(compiled, "is_bucketed", False):
            from .bucketed_session import BucketedSession

            return BucketedSession(compiled, **kwargs)
        if cls is Session and getattr(compiled, "is_data_parallel", False):
            from .data_parallel_session import DataParallelSession

            return DataParallelSession(compiled, **kwargs)
        return super().__new__(cls)

    def __init__(self, compiled: CompiledModel, *, slots: int = 2, handoff: str = "auto",
                 transfer_costs: TransferCosts | None = None, profile: bool = False,
                 inline: bool = True, spin_wait: bool = True, cpu_threads: int | None = None,
                 quota: int | None = None, priority: int | None = None, cpu_sharing=None,
                 state: Mapping[str, str] | None = None, initial_state: Mapping[str, np.ndarray] | None = None):
        if _is_path(compiled):
            compiled = load_compiled(compiled)
        if not isinstance(compiled, CompiledModel):
            raise RuntimeFailure(f"a Session opens a compiled model (hetpart.compile, hetpart.load_compiled) or "
                                 f"the directory one was saved to; got {type(compiled).__name__}")
        if slots < 1:
            raise RuntimeFailure(f"a session needs at least one slot, got {slots}")
        self.compiled = compiled
        self.profile = profile
        self.inline = inline
        self.spin_wait = spin_wait
        self.cpu_threads = cpu_threads
        # how this session's CPU partitions share the cores with other runs (.cpu_share)
        self.cpu_sharing = cpu_share.resolve(cpu_sharing, cpu_threads)
        self.priority = priority
        # CPU partition -> its worker's pool size once set (None: TVM's default kept)
        self.pool_threads_used: dict[str, int | None] = {}
        self.inline_runs = 0  # runs executed inline so far (for tests and benchmarks)
        self.last_run_stats: RunStats | None = None
        self._closed = False
        # _in_flight counts runs admitted (under _state_lock, while open) and not yet
        # finished; close() waits on _idle until it is 0, so no run posts a task to a
        # worker that has already stopped.
        self._state_lock = threading.Lock()
        self._idle = threading.Condition(self._state_lock)
        self._in_flight = 0
        self._stages: list[Stage] = []
        self._slots: list[Slot] = []
        self._stream: Stream | None = None
        self._ring: WeightRing | None = None
        self._collector: Worker | None = None
        self._state: DeviceState | None = None  # bound state (.state), made by _start
        self._state_request = (state, initial_state)
        gpu_parts = [p for p in compiled.partitions if p.device == "cuda"]
        self.simulated = bool(gpu_parts) and all(p.device_type != "cuda" for p in gpu_parts)
        self.real_gpu = bool(gpu_parts) and not self.simulated
        if self.real_gpu and not cuda_available():
            raise NoGPUError(
                f"model '{self._model_name}' has CUDA partitions but no CUDA GPU is usable here; "
                "compile it with simulate=True (--simulate) to run them on the CPU")
        self._memory: Memory = CudaMemory() if self.real_gpu else SimulatedMemory()
        try:
            if quota is not None:  # the model's quota, allocated now; its device buffers come from it
                self._memory = PooledMemory(self._memory, self._model_name, check_quota(self._model_name, quota),
                                            reserved_bytes(compiled))
            self._start(slots, handoff, transfer_costs, bool(gpu_parts))
            if self._needs_capture_run():
                self._capture_graphs()
        except BaseException:
            self.close()
            raise

    def _start(self, slots: int, handoff: str, costs: TransferCosts | None, has_gpu: bool) -> None:
        streamed = any(a.weights is not None for a in self.compiled.partitions)
        checker = HazardChecker() if streamed and not self.real_gpu else None
        if has_gpu:
            if self.real_gpu:
                self._stream = CudaStream(self.spin_wait, self.priority)
            else:
                self._stream = CheckedStream("cuda", checker) if checker else SimulatedStream()
                self._stream.priority = self.priority
            self._epoch = self._stream.record()
            self._epoch.synchronize()
            # A simulated marker carries its host time: use it, since the stamp taken
            # after synchronize() can lag it (by 0.5 ms on a loaded CI machine, which put
            # the trace's GPU spans after the CPU work that waited for them).  A CUDA
            # event has none: the moment its wait returns is the best estimate.
            self._epoch_host = getattr(self._epoch, "time", None) or time.perf_counter()
        check_order(self.compiled, f"model '{self._model_name}'")  # a wrong order would hang a run
        if streamed:
            # throttled refills: the copier thread waits for each chunk on the host, asleep
            # (blocking events), not spinning a core the CPU partitions use
            # (the switch read once: the engine's throttle and the copier's waiting agree)
            throttle = weight_stream.THROTTLE_IN_FLIGHT if weight_stream.THROTTLED_REFILLS else None
            spin = self.spin_wait and throttle is None
            copier = CudaStream(spin, self.priority) if self.real_gpu else CheckedStream("copy", checker)
            engine = None
            try:
                engine = CopyEngine(self._stream, copier, throttle=throttle)
                self._ring = WeightRing(self.compiled, self._memory, engine, "cuda" if self.real_gpu else "cpu")
            except BaseException:
                if engine is not None:  # it owns the copy stream (and its copier thread)
                    engine.close()
                else:
                    copier.close()
                raise
        self.routes = plan_routes(self.compiled, handoff, costs)
        if self._state_request[0] is not None:  # outputs kept on their device as next run's inputs
            self._state = DeviceState(self.compiled, self.routes, self._memory, *self._state_request)
            self.routes = self._state.routes
        elsewhere = self._state.tensors if self._state is not None else frozenset()
        share = cpu_share.share_for(self.cpu_sharing)
        # under a sharing policy CPU workers only hand their calls to the lanes: no pool of their own
        pool = pool_threads(self.cpu_threads, has_gpu=has_gpu) if share is None else None
        # An inline run uses the caller's pool: none where cpu_threads asks the CPU workers for
        # another size (the GPU sessions' own smaller pools are for pipelined runs only).
        self._inline_pool_ok = (share is not None or self.cpu_threads is None or pool is None
                                or all(a.device != "cpu" for a in self.compiled.partitions))
        for art in self.compiled.partitions:
            runner = PartitionRunner(art, self.compiled.directory)
            if art.device == "cpu" and share is not None:  # its calls run on the share's lanes
                self.pool_threads_used[art.name] = share.threads_per_lane
                self._stages.append(Stage(art, cpu_share.SharedRunner(runner, share), Worker(art.name)))
                continue
            worker = Worker(art.name, pool, "cpu") if art.device == "cpu" else Worker(art.name)
            if art.device == "cpu":  # recorded on the worker, before its first run
                self.pool_threads_used[art.name] = None
                worker.post(lambda n=art.name, w=worker: self.pool_threads_used.__setitem__(n, w.pool_size))
            self._stages.append(Stage(art, runner, worker))
        grouped = handoff_rules.GROUPED_H2D  # as the session opens
        self._slots = [Slot.allocate(i, self.routes, self._memory, elsewhere, grouped) for i in range(slots)]
        self._warm_kernel_copies()
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for slot in self._slots:
            self._free.put(slot)
        self._collector = Worker("collector")
        self._submit_lock = threading.Lock()
        self._run_ids = itertools.count()
        self._devices = {a.name: a.device for a in self.compiled.partitions}
        # per-run bookkeeping computed once
        self._inputs_by_name = {t.name: t for t in self.compiled.inputs}
        self._output_names = [t.name for t in self.compiled.outputs]
        # results are keyed by the model's output names (ONNX's), not by graph tensors
        self._output_keys = list(zip(self.compiled.model_output_names, self._output_names))
        self._feed_specs = list(self.compiled.inputs)
        if self._state is not None:  # bound inputs come from the state, bound outputs stay in it
            self._feed_specs, self._inputs_by_name, self._output_names, self._output_keys = self._state.narrow(
                self._feed_specs, self._output_keys)
        # host feeds copied into their pinned buffer anyway: no alignment copy before
        self._direct_feeds = frozenset(n for n, r in self.routes.items()
                                       if r.producer is None and r.crosses and not r.dynamic)
        # A feed's aligned copy may be reused run after run (per slot) unless a partition
        # returns a tensor of data-dependent shape, which is handed out without a copy
        # and could be a view of that copy.
        self._reuse_feed_copies = not any(r.dynamic and r.producer is not None for r in self.routes.values())
        self._inline_lock = threading.Lock()  # held by the inline run, if any
        self._lean_markers = executor.LEAN_MARKERS  # the switch as the session opened
        # partitions with graphs over their inputs read device feeds from the slot's buffers
        self._fixed_feeds = any(a.static_io for a in self.compiled.partitions)
        # A CUDA partition's first call captures its CUDA graph, and the workspace TVM
        # hands a kernel during the capture comes from the *calling thread's* pool, baked
        # into the graph: captured on a caller's thread that later exits, a replay writes
        # freed memory (the serving benchmark's illegal address on the H200, 2026-12-03:
        # a server's lane threads captured, a later server's replayed).  So on a GPU the
        # first run goes through the workers, whose leased threads never exit; inline
        # runs follow once one threaded run has completed.
        self._captured = not self.real_gpu

    def _warm_kernel_copies(self) -> None:
        """Launch each kind of small-crossing copy kernel (:mod:`.small_copy`) once, now:
        its first launch loads the CUDA module, which must not happen while another thread
        captures a CUDA graph.  What it copies (a slot's unwritten buffers) is overwritten
        before any partition reads it."""
        seen = set()
        for slot in self._slots:
            for kernel in slot.kernel_copies.values():
                if kernel.dtype not in seen:
                    seen.add(kernel.dtype)
                    self._stream.launch(kernel)
        if seen:
            done = self._stream.record()
            done.synchronize()
            done.release()

    def _needs_capture_run(self) -> bool:
        """Whether the session opens with :meth:`_capture_graphs`: on a GPU, in a plan that
        streams weights, where some partition's library captures CUDA graphs
        (:data:`hetpart.compiler.extract.STREAMING_CUDA_GRAPHS` at compile time), and feeds of
        static shape (zeros can be made)."""
        return (self.real_gpu and self._ring is not None and any(a.cuda_graph for a in self.compiled.partitions)
                and all(is_static(s.shape) for s in self._feed_specs))

    @property
    def address_sets(self) -> dict[str, int]:
        """Partition -> how many sets of argument addresses (VMs) it has met, for those
        built with every parameter fixed (``static_io``)."""
        return {st.name: st.runner.address_sets for st in self._stages if st.runner.static_io}

    def _capture_graphs(self) -> None:
        """Runs on zero feeds that call the partitions one at a time, each on its own
        worker, so every CUDA graph is captured while no other thread makes a CUDA call.

        Why: TVM captures a graph at a function's first call, in CUDA's global capture
        mode, which forbids CUDA calls from any other thread meanwhile (the copy stream's
        refills, the handoff copies and event waits of the other workers); a threaded first
        run would make them.  Each task here starts only after the previous one returned;
        the collector's work is done on this thread afterwards.  On the workers' leased
        threads, as a first threaded run captured them (see ``_captured``).  A streamed
        partition with graphs has a VM per ring slot (``slot_graphs``), each capturing at
        its first call: as many runs as it takes every such partition to meet every slot
        it will read (:meth:`~.weight_stream.WeightRing.capture_runs`).  A partition with
        every parameter fixed (``static_io``) has a VM per set of argument addresses: the
        runs then cover every handoff slot x state parity x ring phase (:meth:`_capture_keys`),
        and its runner is sealed afterwards (a set of addresses never met raises).
        In: nothing (the feeds are zeros of the model's input specs).  Out: the graphs
        captured; the runs' outputs dropped, their state steps not applied (the state's
        values and orientation restored), the ring's uses numbered as any run's.  Raises
        RuntimeFailure if a partition failed."""
        static = any(a.static_io for a in self.compiled.partitions)
        slot_graphs = any(a.slot_graphs and a.cuda_graph for a in self.compiled.partitions) or static
        ring_runs = self._ring.capture_runs() if slot_graphs and self._ring is not None else 1
        if not static:
            for _ in range(ring_runs):
                self._serial_run(self._slots[0])
        else:
            saved = self._state.snapshot() if self._state is not None else None
            try:
                for slot, parity in self._capture_keys():
                    if self._state is not None:
                        self._state.orient(parity)
                    for _ in range(ring_runs):
                        self._serial_run(slot)
            finally:
                if saved is not None:
                    self._state.restore(saved)
            for stage in self._stages:
                if stage.runner.static_io:
                    stage.runner.seal()
        self.last_run_stats = None
        self._captured = True

    def _capture_keys(self) -> list:
        """(handoff slot, state parity) pairs a run may meet: every slot's buffers with
        each of the state's two orientations (a run's state buffers alternate, and a failed
        step or a pipelined run breaks any lockstep with the slots)."""
        parities = (0, 1) if self._state is not None else (0,)
        return [(slot, parity) for slot in self._slots for parity in parities]

    def _serial_run(self, slot: Slot) -> None:
        """One run of :meth:`_capture_graphs` on handoff slot ``slot``: zero feeds, one
        partition at a time."""
        feeds = {s.name: aligned_array(s) for s in self._feed_specs}  # zeros
        checked = self._checked(feeds)
        with self._state_lock:
            self._in_flight += 1
        taken = [self._free.get() for _ in self._slots]  # nothing runs yet: every slot is free
        for other in taken:
            if other is not slot:
                self._free.put(other)
        ctx = self._open_run(checked, slot, False)
        for stage in self._stages:  # topological order, one task at a time
            if self._ring is not None:  # throttled refills: no copier-thread CUDA call during a capture
                self._ring.engine.drain()
            returned = threading.Event()

            def task(stage=stage, returned=returned):
                try:
                    executor.run_stage(ctx, stage)
                finally:
                    returned.set()

            stage.worker.post(task)
            returned.wait()
        if self._state is not None:
            self._state.end(ctx, ok=False)  # zeros are no step: the state stays as it was
        self._complete(ctx)
        if ctx.error is not None:
            raise executor.failure(ctx, self._devices)

    @property
    def _model_name(self) -> str:
        return self.compiled.plan.model or "model"

    @property
    def quota(self) -> int | None:
        """The model's GPU memory quota (bytes) when the session was opened with one."""
        return self._memory.quota if isinstance(self._memory, PooledMemory) else None

    @property
    def pool(self) -> PooledMemory | None:
        """The quota's arena (:mod:`.pool`) the session's device buffers come from, or None."""
        return self._memory if isinstance(self._memory, PooledMemory) else None

    @property
    def stream_priority(self) -> int | None:
        """The CUDA priority of the session's stream on a real GPU; in simulation the
        priority it was asked for (recorded only); None when none was given."""
        if self._stream is None or self.priority is None:
            return None
        return getattr(self._stream, "cuda_priority", None) if self.real_gpu else self._stream.priority

    @property
    def stream_track(self) -> str:
        return "cuda stream (simulated)" if self.simulated else "cuda stream"

    @property
    def copy_track(self) -> str:
        """The trace track of the streamed weights' copy stream."""
        return "copy stream (simulated)" if self.simulated else "copy stream"

    # --- running -----------------------------------------------------------------
    def submit(self, feeds, *, timed: bool = False) -> Future:
        """Start one run; returns a Future of its outputs (its ``.stats`` is the run's
        RunStats once done).  Blocks only while no slot is free; ``timed`` records spans."""
        self._check_open()
        checked = self._checked(feeds)
        with self._state_lock:
            self._check_open()  # under the lock: close() waits for every run admitted here
            self._in_flight += 1
        try:
            slot = self._free.get()
        except BaseException:
            self._run_ended()
            raise
        if self._closed:  # closed while this run waited for a slot: it never starts
            self._abandon(None, slot)
            raise RuntimeFailure("this session was closed while the run waited to start; "
                                 "create a new Session to run again")
        future: Future = Future()
        ctx = None
        try:
            ctx = self._context(checked, slot, timed)
            with self._submit_lock:  # a run's tasks enter the queues together, in order
                self._reserve_weights(ctx)
                executor.publish_feeds(ctx, ctx.feeds, self._fixed_feeds)
                for stage in self._stages:
                    stage.worker.post(lambda st=stage: executor.run_stage(ctx, st))
                self._collector.post(lambda: self._finish(ctx, future))
        except BaseException:
            self._abandon(ctx, slot)
            raise
        return future

    def _reserve_weights(self, ctx: RunContext) -> None:
        """Number this run's uses of the weight ring; called under ``_submit_lock``, the
        lock that also orders runs' tasks, so uses and worker queues agree on run order."""
        if self._ring is not None:
            ctx.ring = self._ring
            ctx.stream_base = self._ring.reserve()

    def _checked(self, feeds) -> dict:
        """The feeds checked (names, shapes, dtypes, and indices in range), not yet copied."""
        if self._state is not None:
            self._state.check_feeds(feeds)
        checked = check_feeds(feeds, self._feed_specs, gpu=self.real_gpu, by_name=self._inputs_by_name)
        if self.compiled.index_limits:
            check_indices(checked, self.compiled.index_limits)
        return checked

    def _context(self, checked: dict, slot: Slot, timed: bool) -> RunContext:
        """A run's context on ``slot``, with its feeds made ready (``ctx.feeds``)."""
        staging = None
        if self._reuse_feed_copies:
            def staging(name, spec, slot=slot):  # the slot's own aligned copy of this feed
                arr = slot.staging.get(name)
                if arr is None or arr.shape != tuple(spec.shape) or dtype_name(arr.dtype) != spec.dtype:
                    arr = slot.staging[name] = aligned_empty(spec)
                return arr
        buffers, copies = stage_feeds(checked, self._inputs_by_name, staging=staging, direct=self._direct_feeds)
        ctx = RunContext(next(self._run_ids), self.routes, slot, self._stream, len(self._stages),
                         timed or self.profile, self._memory, self._lean_markers)
        for _ in range(copies):
            ctx.stats.count("feed_copies")
        ctx.feeds = buffers
        if self._state is not None:  # last: it waits for the previous step to complete
            self._state.begin(ctx)
        return ctx

    def _abandon(self, ctx: RunContext | None, slot: Slot) -> None:
        """Undo a run that failed before it was queued: its state step ended unapplied, its slot
        free, the run no longer in flight."""
        if ctx is not None and self._state is not None:
            self._state.end(ctx, ok=False)
        self._free.put(slot)
        self._run_ended()

    def _run_ended(self) -> None:
        with self._state_lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def _finish(self, ctx: RunContext, future: Future) -> None:
        """On the collector thread: wait for the run, hand out results, free the slot."""
        outputs = self._complete(ctx)
        if ctx.error is not None:
            future.set_exception(executor.failure(ctx, self._devices))
        else:
            future.stats = ctx.stats
            future.set_result(outputs)

    def _complete(self, ctx: RunContext):
        """Wait for the run's last stream operation, collect its outputs (None if it
        failed), free its slot and publish its stats."""
        outputs = None
        try:
            ctx.wait_device_idle()
            if ctx.error is None:
                outputs = self._by_model_name(executor.collect_outputs(ctx, self._output_names))
            ctx.stats.latency_s = time.perf_counter() - ctx.started
            if ctx.timed and self._stream is not None:
                ctx.resolve_stream_spans(self.stream_track, self._host_time)
            if ctx.ring is not None:
                # a failed run's copies may not all have landed: no spans to time then
                traced = ctx.timed and ctx.error is None
                ctx.ring.finish_run(ctx.stream_base, ctx.run_id, self.copy_track if traced else None,
                                    self._host_time, ctx.stats)
        except BaseException as e:  # noqa: BLE001 - reaches the caller through the future
            ctx.fail("collect", e)
        finally:
            if self._state is not None:  # the step is over: swap (if it succeeded), next step may begin
                self._state.end(ctx, ok=ctx.error is None)
            # the slot first: the next batch's submit waits for it; the events are ours alone
            self._free.put(ctx.slot)
            self._run_ended()
            ctx.release_markers()
        self.last_run_stats = ctx.stats
        return outputs

    def _by_model_name(self, results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``results`` (by tensor) keyed by the model's output names, in the model's
        order; two outputs held by one tensor get an array each."""
        out, seen = {}, set()
        for key, tensor in self._output_keys:
            out[key] = results[tensor].copy() if tensor in seen else results[tensor]
            seen.add(tensor)
        return out

    def _open_run(self, checked, slot: Slot, timed: bool) -> RunContext:
        """A run's context on ``slot`` with its streamed weights reserved and its feeds
        published, for a run whose tasks the caller then runs itself (inline, or the
        serial capture runs); on any failure the slot is given back (``_abandon``) and
        the error raised."""
        ctx = None
        try:
            ctx = self._context(checked, slot, timed)
            with self._submit_lock:
                self._reserve_weights(ctx)
            executor.publish_feeds(ctx, ctx.feeds, self._fixed_feeds)
        except BaseException:
            self._abandon(ctx, slot)
            raise
        return ctx

    def _run_inline(self, feeds, timed: bool) -> tuple[dict[str, np.ndarray], RunContext] | None:
        """Run on the calling thread if the session is idle; None (nothing done) if it is not.

        Idle means no run in flight: every slot is free and no worker is inside a
        partition.  Counting this run as in flight makes concurrent callers take the
        threaded way meanwhile, so at most one run is inline at a time."""
        checked = self._checked(feeds)
        with self._state_lock:
            self._check_open()  # under the lock: close() waits for a run that got past here
            if self._in_flight:
                return None
            try:
                slot = self._free.get_nowait()  # idle: every slot is free
            except queue.Empty:
                return None
            self._in_flight = 1
            self._inline_lock.acquire()  # free: only one run is ever inline
        try:
            ctx = self._open_run(checked, slot, timed)
            self.inline_runs += 1
            for stage in self._stages:  # topological order: each reads only what earlier ones made
                executor.run_stage(ctx, stage)
            outputs = self._complete(ctx)
        finally:
            self._inline_lock.release()
        if ctx.error is not None:
            raise executor.failure(ctx, self._devices)
        return outputs, ctx

    def _host_time(self, marker) -> float:
        return self._epoch_host + marker.seconds_since(self._epoch)

    def run(self, feeds, *, trace: str | Path | None = None) -> dict[str, np.ndarray]:
        """Run once; ``trace`` writes a Chrome/Perfetto trace of this run (with the predicted timeline).

        On an idle session the run executes on the calling thread (see the module docstring)."""
        self._check_open()
        timed = trace is not None
        inline = self.inline and self._captured and self._inline_pool_ok
        done = self._run_inline(feeds, timed) if inline else None
        if done is not None:
            outputs, ctx = done
            stats = ctx.stats
        else:
            future = self.submit(feeds, timed=timed)
            outputs = future.result()
            stats = future.stats
            self._captured = True
        if trace is not None:
            from .trace import write_trace

            write_trace(self, [stats], trace)
        return outputs

    def run_pipelined(self, batches: Iterable, *, trace: str | Path | None = None) -> list[dict[str, np.ndarray]]:
        """Run micro-batches overlapped across partitions; results in batch order."""
        from .pipeline import run_pipelined

        return run_pipelined(self, batches, trace=trace)

    # --- bound state (Session(state=...), .state) -------------------------------------
    def read_state(self, name: str) -> np.ndarray:
        """A host copy of the bound state ``name`` (its output or its input name), as the
        next run will read it; waits for a step in flight.  StateError if not bound."""
        return self._bound_state().read(name)

    def write_state(self, values: Mapping[str, np.ndarray]) -> None:
        """Set bound states from host arrays (``{output or input name: array}``), e.g. to
        start a new sequence; checked first, all or nothing."""
        self._bound_state().write(values)

    @property
    def state(self) -> DeviceState | None:
        """The session's bound state, or None (``Session(state=...)``)."""
        return self._state

    def _bound_state(self) -> DeviceState:
        self._check_open()
        if self._state is None:
            from ..errors import StateError

            raise StateError("this session has no bound state; open it with Session(compiled, state={output: input})")
        return self._state

    # --- lifetime ----------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeFailure("this session is closed; create a new Session to run again")

    def close(self) -> None:
        """Finish runs in flight, stop every thread, free every buffer; idempotent.

        A run that calls in meanwhile, or waits for a free slot, raises RuntimeFailure
        (the session is closed); close() returns once the runs that started are done."""
        idle = getattr(self, "_idle", None)
        if idle is None:  # __init__ failed before any state existed
            return
        with idle:
            if self._closed:
                return
            self._closed = True
            while self._in_flight:  # started runs finish, inline ones included
                idle.wait()
        for stage in self._stages:
            stage.worker.close()
        if self._collector is not None:
            self._collector.close()
        for stage in self._stages:
            stage.runner.close()
        if self._ring is not None:
            self._ring.close()
        for slot in self._slots:
            slot.release()
        if self._stream is not None:
            if hasattr(self, "_epoch"):
                self._epoch.release()
            self._stream.close()
        self._memory.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def threads_alive(self) -> int:
        """Worker threads still running (0 after close)."""
        workers = [s.worker for s in self._stages] + ([self._collector] if self._collector else [])
        return sum(w.alive for w in workers)

    @property
    def buffer_bytes(self) -> int:
        """Bytes of pinned and device buffers held (0 after close)."""
        return self._memory.live_bytes

    def __enter__(self) -> "Session":
        self._check_open()  # `with session:` after close() fails here, not at its first run
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


def _is_path(obj) -> bool:
    """Whether ``obj`` names an artifact directory (a str or a path) rather than a loaded model."""
    return isinstance(obj, (str, os.PathLike))
