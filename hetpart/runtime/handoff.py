"""Handoff between partitions: which tensors cross CPU<->GPU, how, and the buffers that hold them.

A :class:`Route` says, for one tensor, where it is produced (its *home* side), which
sides read it, and, when it crosses, the transfer *mode*:

* ``"copy"``: one asynchronous copy on the session stream between the pinned host
  buffer and a device buffer;
* ``"mapped"``: no copy at all; the GPU kernel reads (or writes) the pinned buffer
  through its mapped device pointer.

A small ``"copy"`` crossing CPU->GPU may be copied by a kernel rather than the copy
engine (:mod:`.small_copy`, off by default): the slot then holds its prepared
:class:`~.small_copy.KernelCopy` (``Slot.kernel_copies``).

:func:`choose_mode` picks between them from :class:`TransferCosts` (the transfer
model): mapped access skips the copy's fixed cost but every kernel read crosses the
bus, so it wins for small tensors only; under ``"auto"`` only GPU->CPU crossings are
mapped (:data:`COPY_TO_GPU`: a kernel may read its input many times).

A :class:`Slot` is one complete set of per-run buffers, allocated once.  A session
keeps two (or more) so that consecutive runs (micro-batches) never write a buffer a
previous run still reads: double buffering.

Invariant: for every tensor of static shape crossing CPU<->GPU,
``slot.buffers[(name, "cpu")]`` is a pinned Buffer, and it is the *same memory* the
producing CPU partition writes (it is that partition's output tensor) or the GPU->CPU
copy lands in.

Data-dependent shapes (:attr:`Route.dynamic`: a string dim in the TensorSpec, e.g.
NonMaxSuppression's output) have no buffers in a slot: the producing partition's VM
allocates the value (through ``main``, never ``main_dps``), and a crossing is always
``"copy"``: one copy per run into a buffer of the actual size made for that run
(:meth:`~.memory.Memory.transient`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..compiler.artifact import CompiledModel, TensorSpec
from ..errors import HetpartError
from . import small_copy
from .memory import ALIGNMENT, Buffer, Memory, host_buffer, is_static, nbytes_of, view_of

MODES = ("auto", "copy", "mapped")

# Under "auto", a CPU->GPU crossing is always one copy, whatever its size (off: small ones
# are mapped, as GPU->CPU ones still are).  A mapped tensor is read through PCIe by
# every read of every kernel, and a GEMV's thread blocks each read the whole input
# vector: issue 19's H100 trace of llama_decode (bench/results/runtime-handoff-2core.md)
# has a streamed 46 MB GEMV whose input was mapped run ~200 us on the device (profiled
# 17.5 us), launched long before its weights landed, so not the host's launch.  A copy
# costs one cudaMemcpyAsync (~10 us); the partitioner prices every h2d crossing as one.
COPY_TO_GPU = True

# Under "auto", a GPU->CPU crossing that a contraction kernel on the GPU reads (its own
# partition's, after its producer wrote it, or another CUDA partition's: the artifact's
# ``contraction_reads``) is copied, not mapped (off: mapped by choose_mode, as before).  A
# mapped GPU->CPU crossing lives in pinned host memory: its producer writes it there, and
# every GPU kernel that reads it reads it through PCIe.  llama_decode's layer partitions at
# 1/2 end ``rms norm -> gate GEMV`` and the norm's 8 KB output also goes to the CPU, so the
# 46 MB gate GEMV read its input vector over PCIe once per thread block (352 x 8 KB): the
# streamed ~84 MB partitions spanned 230-390 us on the H100 against 94 us predicted, the
# ~38 MB ones without that GEMV 126-135 against 84 (bench/results/stream-gpu-partitions-2core.md;
# the same read COPY_TO_GPU removed from a GEMV's CPU->GPU input, capped-copy-to-gpu-nvidia-h100.md:
# 292 -> 61 us).  Cost: one d2h copy (cudaMemcpyAsync, ~5-10 us) per such tensor a run.  Read
# when a session opens (plan_routes).  On since device step 125 (session 49, H100,
# bench/results/stream-gpu-partitions-nvidia-h100.md): llama_decode at 1/2 0.982x (faster in
# all three paired rounds), the ~84 MB partitions' spans 155 -> 135 us.
COPY_GPU_CONTRACTION_READS = True

# Issue 19: a CPU partition's outputs that a CUDA partition reads (copy mode, static shape,
# no bound state) share one pinned block and one device block per slot, each tensor at its
# own 64-byte-aligned offset, so the producer's handoff is ONE cudaMemcpyAsync (padding
# included) instead of one per tensor (executor: the copy after the partition's call,
# before any of them is published).  llama_decode at 1/2 copies two 8 KB activations per
# CPU->CUDA turn: capped-decode-gap-s47.md saw the second wait ~1.6 ms behind an in-flight
# weight refill while the first slipped in; one copy also saves a CUDA call a turn.  The
# stats still count one h2d copy and edge per tensor.  Read when a session allocates its
# slots (Session opens).  On since device step 122 (session 48, H100,
# bench/results/turn-cost-nvidia-h100.md): host time a turn unchanged (98.5 vs 98.6 us), one copy
# a turn where there were two, its cuda test bit for bit; the traced llama_decode's grouped input
# copies take 17-39 us, none waiting for the refill in flight.
GROUPED_H2D = True


@dataclass(frozen=True)
class TransferCosts:
    """A PCIe transfer model: a copy costs latency + bytes/bandwidth; a mapped read
    costs ``mapped_reads`` passes over the bus at ``mapped_bandwidth`` (kernels may
    touch a value more than once) but no fixed cost.  Defaults: PCIe 4/5 x16 class."""

    copy_latency_s: float = 10e-6
    copy_bandwidth: float = 20e9
    mapped_latency_s: float = 1e-6
    mapped_bandwidth: float = 15e9
    mapped_reads: float = 4.0

    def copy_seconds(self, nbytes: int) -> float:
        return self.copy_latency_s + nbytes / self.copy_bandwidth

    def mapped_seconds(self, nbytes: int) -> float:
        return self.mapped_latency_s + self.mapped_reads * nbytes / self.mapped_bandwidth


def choose_mode(nbytes: int, costs: TransferCosts | None = None) -> str:
    """``"mapped"`` when zero-copy access is predicted faster than one copy, else ``"copy"``."""
    costs = costs or TransferCosts()
    return "mapped" if costs.mapped_seconds(nbytes) < costs.copy_seconds(nbytes) else "copy"


@dataclass(frozen=True)
class Route:
    """How one tensor gets from its producer to every side that reads it.

    ``producer`` is a partition name, or None for a model input (home ``"cpu"``:
    feeds arrive as host arrays unless the caller passes a device tensor).
    ``sides`` are the sides that need the value (``"cpu"`` for a model output; the
    home side too, except for a feed read only by the GPU).  ``mode`` is None when the tensor stays on its home side.
    """

    spec: TensorSpec
    producer: str | None
    home: str
    sides: frozenset
    is_output: bool
    mode: str | None

    # cached: a run asks these of every tensor it moves (the fields never change)
    @cached_property
    def crosses(self) -> bool:
        return bool(self.sides - {self.home})

    @cached_property
    def dynamic(self) -> bool:
        """True when the shape is data-dependent: no preallocated buffer, copied per run."""
        return not is_static(self.spec.shape)

    def others(self, side: str) -> frozenset:
        """The sides other than ``side`` that read the value."""
        return self._others[side]

    @cached_property
    def _others(self) -> dict[str, frozenset]:
        return {s: self.sides - {s} for s in ("cpu", "cuda")}

    def label(self, kind: str) -> str:
        """The stream span's name of a ``kind`` operation (h2d/d2h/d2d/mapped) on this tensor."""
        return self._labels[kind]

    @cached_property
    def _labels(self) -> dict[str, str]:
        return {k: f"{k} {self.spec.name}" for k in ("h2d", "d2h", "d2d", "mapped")}

    @property
    def nbytes(self) -> int | None:
        """Bytes of the value; None for a data-dependent shape (known per run only)."""
        return None if self.dynamic else nbytes_of(self.spec.shape, self.spec.dtype)


def plan_routes(compiled: CompiledModel, mode: str = "auto", costs: TransferCosts | None = None) -> dict[str, Route]:
    """A :class:`Route` for every model input, model output and partition output."""
    if mode not in MODES:
        raise HetpartError(f"handoff mode must be one of {', '.join(MODES)}, got '{mode}'")
    home: dict[str, tuple[str | None, str, TensorSpec]] = {t.name: (None, "cpu", t) for t in compiled.inputs}
    for p in compiled.partitions:
        for t in p.outputs:
            home[t.name] = (p.name, p.device, t)
    # a feed needs no side of its own: the caller hands it over on whichever side it lives
    sides: dict[str, set] = {name: (set() if h[0] is None else {h[1]}) for name, h in home.items()}
    for p in compiled.partitions:
        for t in p.inputs:
            sides[t.name].add(p.device)
    outputs = {t.name for t in compiled.outputs}
    for name in outputs:
        sides[name].add("cpu")
    gpu_reread = gpu_contraction_reads(compiled) if COPY_GPU_CONTRACTION_READS else frozenset()
    routes = {}
    for name, (producer, side, spec) in home.items():
        crossing = bool(sides[name] - {side})
        r = Route(spec, producer, side, frozenset(sides[name]), name in outputs, None)
        if crossing and r.dynamic:
            r = Route(spec, producer, side, r.sides, r.is_output, "copy")  # nothing to map
        elif crossing:
            if mode != "auto":
                picked = mode
            elif COPY_TO_GPU and side == "cpu":  # read by GPU kernels: copied
                picked = "copy"
            elif side != "cpu" and name in gpu_reread:  # a GPU contraction reads it: not through PCIe
                picked = "copy"
            else:
                picked = choose_mode(r.nbytes, costs)
            r = Route(spec, producer, side, r.sides, r.is_output, picked)
        routes[name] = r
    return routes


def gpu_contraction_reads(compiled: CompiledModel) -> frozenset:
    """Tensors a contraction kernel of a GPU partition reads (its ``contraction_reads``,
    inputs or outputs; none for an artifact built before they were recorded)."""
    return frozenset(t for p in compiled.partitions if p.device != "cpu" for t in p.contraction_reads)


@dataclass(frozen=True)
class CopyGroup:
    """One CPU partition's outputs read on the GPU, in one pinned and one device block
    (:data:`GROUPED_H2D`): ``names`` in block order, ``host`` / ``device`` the blocks
    (copied whole: one copy), ``label`` the copy's stream span."""

    producer: str
    names: tuple[str, ...]
    host: Buffer
    device: Buffer
    label: str

    @cached_property
    def members(self) -> frozenset:
        return frozenset(self.names)


def grouped_outputs(routes: dict[str, Route], elsewhere: frozenset = frozenset()) -> dict[str, tuple[str, ...]]:
    """Producer -> its outputs that :data:`GROUPED_H2D` copies as one block: CPU-produced,
    read on the GPU through a copy, of static shape, not bound state; only producers with
    two or more (one tensor is one copy already), names in route order."""
    by_producer: dict[str, list[str]] = {}
    for name, r in routes.items():
        if (r.producer is not None and r.home == "cpu" and r.mode == "copy" and "cuda" in r.sides
                and not r.dynamic and name not in elsewhere):
            by_producer.setdefault(r.producer, []).append(name)
    return {p: tuple(names) for p, names in by_producer.items() if len(names) >= 2}


@dataclass
class Slot:
    """One run's buffers: ``buffers[(tensor, side)]``, allocated once and reused.

    ``fresh_outputs`` are model outputs produced on the CPU and read by nobody on the
    GPU: each run writes them into a new array handed to the caller (no copy).
    Tensors of data-dependent shape get nothing here (see the module docstring).
    """

    index: int
    buffers: dict[tuple[str, str], Buffer] = field(default_factory=dict)
    fresh_outputs: frozenset = frozenset()
    # GROUPED_H2D: producing CPU partition -> its outputs' shared blocks (one copy each run)
    groups: dict[str, CopyGroup] = field(default_factory=dict)
    # aligned copies of the caller's unaligned feeds, by input name, reused run after run
    staging: dict = field(default_factory=dict)
    # small CPU->GPU crossings copied by a kernel (.small_copy), by tensor name
    kernel_copies: dict = field(default_factory=dict)

    @classmethod
    def allocate(cls, index: int, routes: dict[str, Route], memory: Memory,
                 elsewhere: frozenset = frozenset(), grouped: bool = False) -> "Slot":
        """``elsewhere``: tensors whose producer writes into buffers held outside the
        slot (bound state, :mod:`.state`): they get slot buffers only to cross.
        ``grouped`` (:data:`GROUPED_H2D`): :func:`grouped_outputs` get views of one block
        per producer on each side (``groups``)."""
        slot = cls(index)
        fresh = set()
        if grouped:
            for producer, names in grouped_outputs(routes, elsewhere).items():
                slot.groups[producer] = slot._group(producer, names, routes, memory)
        for name, r in routes.items():
            if (name, "cpu") in slot.buffers:
                continue  # a view of its producer's block (grouped)
            if r.dynamic or (name in elsewhere and not r.crosses):
                continue  # allocated per run, at its actual size; or held by the session's state
            if r.crosses:
                host = memory.pinned(r.spec)
                slot.buffers[(name, "cpu")] = host
                gpu = memory.mapped(host) if r.mode == "mapped" else memory.device(r.spec)
                slot.buffers[(name, "cuda")] = gpu
                if "cuda" in r.sides and small_copy.uses_kernel(r.nbytes, r.home, r.mode, r.dynamic):
                    slot.kernel_copies[name] = small_copy.prepare(
                        gpu, memory.mapped(host), "cpu" if memory.simulated else "cuda")
            elif r.producer is None:
                continue  # a feed read on the CPU only: the caller's own array, no buffer
            elif r.home == "cuda":
                slot.buffers[(name, "cuda")] = memory.device(r.spec)
            elif r.is_output:
                fresh.add(name)
            else:
                slot.buffers[(name, "cpu")] = host_buffer(r.spec)
        slot.fresh_outputs = frozenset(fresh)
        return slot

    def _group(self, producer: str, names: tuple[str, ...], routes: dict[str, Route], memory: Memory) -> CopyGroup:
        """One block per side for ``names``, each at a 64-byte-aligned offset; the views
        go into ``buffers`` as any tensor's would."""
        offsets, end = [], 0
        for name in names:
            offsets.append(end)
            end = -(-(end + routes[name].nbytes) // ALIGNMENT) * ALIGNMENT
        last = offsets[-1] + routes[names[-1]].nbytes  # the copy stops at the last byte used
        spec = TensorSpec(f"{producer} outputs to cuda", (last,), "uint8")
        host, device = memory.pinned(spec), memory.device(spec)
        for name, offset in zip(names, offsets):
            self.buffers[(name, "cpu")] = view_of(host, offset, routes[name].spec)
            self.buffers[(name, "cuda")] = view_of(device, offset, routes[name].spec)
        return CopyGroup(producer, names, host, device, "h2d " + "+".join(names))

    def release(self) -> None:
        self.buffers.clear()
        self.groups.clear()
        self.staging.clear()
        for k in self.kernel_copies.values():
            k.release()
        self.kernel_copies.clear()
