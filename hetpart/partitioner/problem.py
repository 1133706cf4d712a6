"""The partitioning problem: an op graph with every cost looked up once.

:func:`build_problem` asks the cost model for each kernel on each device and each
tensor's transfer, applies capability limits and user pins, and returns a
:class:`Problem` that every algorithm works on.  An *assignment* is a plain
``dict[kernel id, device]``.  A *placement* is an assignment that may also say
:data:`STREAM` for a kernel: on CUDA, its weights streamed from pinned host memory
(:mod:`.streaming`), or :data:`MAPPED`: on CUDA, its weights read in place from pinned host
memory; :func:`split` turns it into an assignment and the streamed set, :func:`mapped_of`
gives the mapped set.

The host is the CPU: model inputs start in host memory and model outputs must end
there, so an input read on CUDA costs a host-to-device copy and an output made on
CUDA a device-to-host copy.  A tensor read on the other device is copied once, however
many kernels read it there.

State pairs (:mod:`.state`, ``build_problem(state=)``) change where a tensor starts
and ends: a bound input starts on the device of the kernel that writes its paired
output (``Flow.home``), and that output stays there (``Flow.kept``, no model output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InternalError, PlanError
from ..importer.op_graph import OpGraph
from ..targets import DEVICES
from .choice import MAPPED, STREAM, device_of
from .costs import Costs
from .pins import resolve_pins
from .state import NONE as NO_STATE, BoundState, resolve_state
from .same_device import SameDevice, check_tied, groups as same_device_groups, hold

HOST = "cpu"
"""Where model inputs come from and model outputs go."""

Assignment = dict[str, str]


def split(a: Assignment) -> tuple[Assignment, frozenset]:
    """(device per kernel, the kernels whose weights are streamed) of placement ``a``;
    ``a`` itself where it holds neither :data:`STREAM` nor :data:`MAPPED`."""
    streamed = frozenset(k for k, d in a.items() if d == STREAM)
    if not streamed and MAPPED not in a.values():
        return a, streamed
    return {k: device_of(d) for k, d in a.items()}, streamed


def mapped_of(a: Assignment) -> frozenset:
    """The kernels placement ``a`` runs on CUDA with their weights mapped (:data:`MAPPED`)."""
    return frozenset(k for k, d in a.items() if d == MAPPED)


def other(device: str) -> str:
    """The other of the two devices."""
    return DEVICES[1] if device == DEVICES[0] else DEVICES[0]


@dataclass(frozen=True)
class Flow:
    """A tensor as the partitioner sees it: who makes it, who reads it, what a copy costs.

    ``producer`` is None for a model input (it starts on the host).  ``copy_s[dst]``
    is the seconds to copy it to device ``dst`` from the other one.  ``home``: for an
    input bound as state, the kernel writing its paired output (the input starts on
    that kernel's device; None otherwise).  ``kept``: an output bound as state (it stays
    on its producer's device; ``is_output`` is then False).
    """

    name: str
    producer: str | None
    consumers: tuple[str, ...]
    nbytes: int
    is_output: bool
    copy_s: dict[str, float]
    home: str | None = None
    kept: bool = False

    @property
    def origin(self) -> str | None:
        """The kernel whose device the tensor starts on (None: host memory)."""
        return self.producer if self.producer is not None else self.home


@dataclass
class Problem:
    """Everything the algorithms need, looked up once.

    ``seconds[k][d]`` exists only for devices ``d`` in ``allowed[k]``; ``reasons[k]``
    says why a kernel is held to one device (a pin, a capability, or a state pair's
    kernel held where its group must run).  ``overhead[d]`` is what every partition on
    ``d`` adds; ``wake[d]`` what one adds besides when it starts after a partition on
    the other device (:func:`.layout.partition_overheads` charges both, in one place).
    ``same_device``: the groups of kernels that must share a device (:mod:`.same_device`;
    a group's kernels share ``allowed``); ``mates[k]``: the kernels of ``k``'s group
    (``k`` included; absent: none).
    """

    graph: OpGraph
    costs: Costs
    order: tuple[str, ...]
    seconds: dict[str, dict[str, float]]
    allowed: dict[str, tuple[str, ...]]
    reasons: dict[str, str]
    flows: tuple[Flow, ...]
    overhead: dict[str, float]
    gpu_memory: int | None = None
    stream_weights: bool = False  # under a binding cap, CUDA kernels may stream their weights
    state: dict[str, str] = field(default_factory=dict)  # model output -> model input kept on device
    wake: dict[str, float] = field(default_factory=dict)  # device -> seconds a partition there pays after
    # one on the other device (the CPU pool's wake-up; :func:`.layout.partition_overheads`); missing: 0
    same_device: tuple[SameDevice, ...] = ()
    contention: tuple[float, float] | None = None  # (cpu read, h2d copy) rates kept while both run
    # (:meth:`~hetpart.costmodel.CostModel.copy_contention`); None: not measured, no slowdown
    read_s: dict[str, float] = field(default_factory=dict)  # CPU kernel -> seconds of its cold weight
    # reads (its weight floor, at most its cost; only where ``contention`` is set)
    graphless: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (call, launch, handoff) seconds of a CUDA
    # partition run without CUDA graphs (:meth:`~hetpart.costmodel.CostModel.graphless_cuda`; :func:`.layout.graphless_overheads`)
    views: frozenset = frozenset()  # kernels that launch nothing (:meth:`~hetpart.costmodel.CostModel.launches` 0)
    step: dict[str, int] = field(init=False, repr=False)
    mates: dict[str, tuple[str, ...]] = field(init=False, repr=False)
    reads: dict[str, list[int]] = field(init=False, repr=False)
    writes: dict[str, list[int]] = field(init=False, repr=False)
    edges: list[tuple[str, str]] = field(init=False, repr=False)
    _mapped_extra: dict[str, float] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self):
        self.step = {k: i for i, k in enumerate(self.order)}
        pairs = {(f.producer, c) for f in self.flows if f.producer is not None for c in f.consumers}
        self.edges = sorted(pairs, key=lambda e: (self.step[e[0]], self.step[e[1]]))
        self.reads = {k: [] for k in self.order}
        self.writes = {k: [] for k in self.order}
        for i, f in enumerate(self.flows):
            if f.producer is not None:
                self.writes[f.producer].append(i)
            for c in dict.fromkeys(f.consumers):
                self.reads[c].append(i)
        self.mates = {k: g.kernels for g in self.same_device for k in g.kernels}

    # --- what an assignment costs, without partition overheads ----------------------
    def check(self, a: Assignment) -> None:
        """InternalError if ``a`` misses a kernel, breaks a pin/capability or splits a
        state pair's kernels (:mod:`.same_device`)."""
        for k in self.order:
            if a.get(k) not in self.allowed[k]:
                raise InternalError(f"assignment puts {k} on {a.get(k)}; allowed: {self.allowed[k]}")
        check_tied(self.same_device, a)

    def closure(self, kernels) -> tuple[str, ...]:
        """``kernels`` and every kernel that must share their device (their groups'), in
        the order given, then group order: what a move must move together."""
        out = dict.fromkeys(kernels)
        for k in list(out):
            out.update(dict.fromkeys(self.mates.get(k, ())))
        return tuple(out)

    def source_device(self, f: Flow, a: Assignment) -> str:
        return HOST if f.origin is None else a[f.origin]

    def copies(self, f: Flow, a: Assignment) -> list[str]:
        """Devices ``f`` must be copied to under ``a`` (at most one: the other device)."""
        src = self.source_device(f, a)
        needed = {a[c] for c in f.consumers} | ({HOST} if f.is_output else set())
        return [d for d in DEVICES if d in needed and d != src]

    def compute_s(self, a: Assignment, kernels=None) -> float:
        return sum(self.seconds[k][a[k]] for k in (self.order if kernels is None else kernels))

    def transfer_s(self, a: Assignment, flows=None) -> float:
        idx = range(len(self.flows)) if flows is None else flows
        return sum(self.flows[i].copy_s[d] for i in idx for d in self.copies(self.flows[i], a))

    def linear_cost(self, a: Assignment) -> float:
        """Compute plus transfer seconds: the quantity the minimum cut minimises exactly."""
        return self.compute_s(a) + self.transfer_s(a)

    def move_delta(self, a: Assignment, kernels, device: str) -> float:
        """Change of :meth:`linear_cost` when ``kernels`` all move to ``device``."""
        kernels = list(kernels)
        touched = sorted({i for k in kernels for i in self.reads[k] + self.writes[k]})
        b = dict(a)
        b.update({k: device for k in kernels})
        before = self.compute_s(a, kernels) + self.transfer_s(a, touched)
        return self.compute_s(b, kernels) + self.transfer_s(b, touched) - before

    def movable(self, k: str, device: str) -> bool:
        return device in self.allowed[k]

    def mapped_extra_s(self, k: str) -> float:
        """Seconds kernel ``k`` adds on CUDA with its weights mapped (:data:`MAPPED`) over its
        resident cost ``seconds[k]["cuda"]``: :meth:`.costs.Costs.mapped_cost` (the cost model's: the
        bytes a call reads at the pinned host-to-device rate; a table's: all its weights over
        the link); never negative.  Cached per kernel."""
        extra = self._mapped_extra.get(k)
        if extra is None:
            resident = self.seconds[k]["cuda"]
            extra = self._mapped_extra[k] = max(0.0, float(self.costs.mapped_cost(self.graph.kernels[k])) - resident)
        return extra

    def weight_copy_s(self, nbytes: int) -> float:
        """Seconds to copy ``nbytes`` of weights from (pinned) host memory to the GPU
        (one copy's latency: a refill in chunks, ``runtime.weight_stream.CHUNKED_REFILLS``,
        is priced the same; its extra per-chunk cost is below noise, see there)."""
        return float(self.costs.transfer_cost(nbytes, HOST, "cuda")) if nbytes else 0.0


def build_problem(graph, costs, pins=(), gpu_memory: int | None = None, stream_weights: bool = False,
                  state=None) -> Problem:
    """Look every cost up once (a cost model that takes graphs is given ``graph`` first:
    it bounds whether a kernel's weights stay cached by its graph's,
    ``CostModel.weights_stay_cached``); PlanError for a kernel no device can run, a bad
    pin, a bad state pair (``state``: ``{model output: model input}``, :mod:`.state`) or
    a pair whose writer and readers pins and capabilities hold on different devices."""
    bound = resolve_state(graph, state)
    costs.add_graph(graph)
    order = tuple(graph.topological_order())
    pinned = resolve_pins(graph, pins)
    seconds, allowed, reasons = {}, {}, {}
    for kid in order:
        kernel = graph.kernels[kid]
        support = {d: costs.supports(kernel, d) for d in DEVICES}
        can = tuple(d for d in DEVICES if support[d][0])
        if not can:
            whys = "; ".join(f"{d}: {support[d][1]}" for d in DEVICES)
            raise PlanError(f"{kid} ({'+'.join(kernel.ops)}) can run on no device ({whys})")
        if len(can) == 1:
            missing = other(can[0])
            reasons[kid] = f"cannot run on {missing}: {support[missing][1]}"
        if kid in pinned:
            device, why = pinned[kid]
            if device not in can:
                raise PlanError(f"{kid} ({'+'.join(kernel.ops)}) is {why} but cannot run on {device}: "
                                f"{support[device][1]}")
            can, reasons[kid] = (device,), why
        seconds[kid] = {d: float(costs.kernel_cost(kernel, d)) for d in can}
        if not all(math.isfinite(s) and s >= 0 for s in seconds[kid].values()):
            raise PlanError(f"the cost model gives {kid} ({'+'.join(kernel.ops)}) the cost {seconds[kid]} "
                            "seconds; re-profile the model (`partition profile MODEL`)")
        allowed[kid] = can
    same_device = same_device_groups(bound.pairs, {k: i for i, k in enumerate(order)})
    allowed, reasons = hold(same_device, allowed, reasons)
    seconds = {k: {d: s for d, s in row.items() if d in allowed[k]} for k, row in seconds.items()}
    contention, read_s = _contention(graph, costs, seconds)
    return Problem(graph, costs, order, seconds, allowed, reasons, _flows(graph, costs, bound),
                   {d: float(costs.partition_overhead(d)) for d in DEVICES}, gpu_memory, stream_weights,
                   dict(state or {}), wake_costs(costs), same_device, contention, read_s,
                   graphless_cuda(costs), _views(graph, costs, allowed))


def _contention(graph, costs, seconds) -> tuple[tuple[float, float] | None, dict[str, float]]:
    """``costs.copy_contention()`` (None where ``costs`` has no such method or its profile
    did not measure it) and, where set, each CPU-able kernel's cold weight-read seconds:
    its ``weight_floor`` on the CPU, at most its CPU cost (0 where its weights stay cached)."""
    fn = getattr(costs, "copy_contention", None)
    contention = fn() if fn is not None else None
    if contention is None:
        return None, {}
    if not all(math.isfinite(r) and 0 < r <= 1 for r in contention):
        raise PlanError(f"the cost model gives the copy contention {contention}; each must be in (0, 1]")
    floor = getattr(costs, "weight_floor", None)
    read_s = {}
    for k, row in seconds.items():
        if "cpu" in row and floor is not None:
            read_s[k] = min(row["cpu"], float(floor(graph.kernels[k], "cpu")))
    return contention, read_s


def graphless_cuda(costs) -> tuple[float, float, float]:
    """``costs.graphless_cuda()``: (call, launch, handoff) seconds of a CUDA partition run
    without CUDA graphs; (0, 0, 0) where ``costs`` has no such method (then such a partition
    costs what a graph-captured one does)."""
    fn = getattr(costs, "graphless_cuda", None)
    out = tuple(float(x) for x in fn()) if fn is not None else (0.0, 0.0, 0.0)
    if len(out) != 3 or not all(math.isfinite(x) and x >= 0 for x in out):
        raise PlanError(f"the cost model gives the graph-less CUDA costs {out}; they must be three numbers >= 0")
    return out


def _views(graph, costs, allowed) -> frozenset:
    """The CUDA-able kernels ``costs.launches`` says launch nothing (views); empty where
    ``costs`` has no such method."""
    fn = getattr(costs, "launches", None)
    if fn is None:
        return frozenset()
    return frozenset(k for k, can in allowed.items() if "cuda" in can and fn(graph.kernels[k]) == 0)


def wake_costs(costs) -> dict[str, float]:
    """``costs.wake_cost(d)`` for every device; 0.0 where ``costs`` has no such method
    (a :class:`~.costs.Costs` written before the wake cost existed)."""
    wake = getattr(costs, "wake_cost", None)
    out = {d: float(wake(d)) if wake is not None else 0.0 for d in DEVICES}
    bad = {d: v for d, v in out.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise PlanError(f"the cost model gives the wake cost {bad} seconds; it must be a finite number >= 0")
    return out


def _flows(graph, costs, bound: BoundState = NO_STATE) -> tuple[Flow, ...]:
    flows = []
    for t in graph.tensors.values():
        kept = t.name in bound.kept
        if not t.consumers and not t.is_output:
            continue
        copy_s = {d: float(costs.transfer_cost(t.nbytes, other(d), d)) for d in DEVICES}
        flows.append(Flow(t.name, t.producer, tuple(t.consumers), t.nbytes, t.is_output and not kept, copy_s,
                          bound.homes.get(t.name), kept))
    return tuple(flows)
