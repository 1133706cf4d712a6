"""An assignment laid out as the runtime will run it: partitions and the copies between.

:func:`lay_out` groups kernels into partitions (:mod:`.grouping`) and lists every copy:
one per tensor whose readers (or, for a model output, the host) sit on the device
its producer does not.  A copy serves every partition on the destination device that
reads the tensor.  A partition whose weights are streamed also has a weight copy
(host to GPU, ``weight_seconds``), which :mod:`.timeline` runs on its own track.

A partition's run time is its kernels plus :func:`partition_overheads` -- the one
place that prices a partition besides its kernels: every partition pays its device's
``problem.overhead``, and one that starts after a partition on the other device also
pays that device's ``problem.wake`` (the CPU thread pool asleep after the GPU's turn:
:attr:`hetpart.costmodel.Overheads.wake_s`).  In a plan built without CUDA graphs
(:func:`cuda_graphs_off`) a CUDA partition lasts at least its host's kernel-by-kernel
launch, and one entered from a CPU partition pays a handoff besides
(:func:`graphless_overheads`, ``problem.graphless``; switch :data:`GRAPHLESS_CUDA_LAUNCH`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .grouping import Group, group_kernels
from .problem import Assignment, Problem


GRAPHLESS_CUDA_LAUNCH = False
"""On: in a plan built without CUDA graphs (:func:`cuda_graphs_off`) each CUDA partition lasts
``max(kernels + overhead, call + launches * launch)`` and, entered from a CPU partition, a
handoff more (:func:`graphless_overheads`; ``problem.graphless`` =
:meth:`hetpart.costmodel.CostModel.graphless_cuda`, fitted on device step 115's trace of
llama_decode, bench/results/capped-launch-price.md).  Off (before): the profile's CUDA call +
switch alone, as for a graph-captured partition.  Costs without the method (table costs)
price such a partition as before either way.

Off by default: on brings step 115's traced llama_decode run from -24% to -3% of its
prediction (CPU spans calibrated; 14.9% -> 9.9% mean error over its rounds, calibrated by
the rule's plan), but reprices today's BERT-large streaming plans (22 one-kernel CPU
partitions at 1/3 and 1/4) 17.54 / 27.70 / 30.29 ms at 1/2, 1/3, 1/4, where session 41
measured 13.74 / 16.53 / 20.67 (11.90 / 16.47 / 18.81 off).  Replaces session 46's flat
``STREAMED_CUDA_HANDOFF`` (200 us a CUDA call + 130 us after a CPU partition: 21.97 / 27.54 /
30.09 there).  Device step 119 (bench/results/capped-stream-graphs-nvidia-h100.md): the plan
llama_decode gets with it on (20 partitions) measured 1.06x the plan made without it (25.85
against 24.32 ms), which it had priced 22.98 against 26.85: it stays off."""


def cuda_graphs_off(groups) -> bool:
    """Whether the compiled plan of these partitions runs its CUDA partitions without CUDA
    graphs -- the one place the partitioner decides it, and it must say what
    :func:`hetpart.compiler.extract.extract` does.  A plan that streams any weights: its
    streamed partitions have no graph (``extract.STREAMED_CUDA_GRAPHS`` off), and since
    ``extract.STREAMING_CUDA_GRAPHS`` its resident ones capture only the kernels that read no
    partition input and write no output (TVM's rule), the rest launched one by one; priced
    here as graph-less, as step 115's fit saw them (every partition without a graph), a
    bound for the resident ones.  ``groups``: :class:`~.grouping.Group` s
    after :func:`lay_out`'s clean-up (a streamed group without weights runs resident)."""
    return any(g.streamed for g in groups)


@dataclass(frozen=True)
class Transfer:
    """One copy of ``problem.flows[flow]`` to ``device``.

    ``src`` is the index of the producing group (None: a model input, on the host, or
    an input bound as state, on its writer's device since the previous step);
    ``readers`` the indices of the groups on ``device`` that read it, in order
    (empty when only the model output needs it).
    """

    flow: int
    src: int | None
    device: str
    readers: tuple[int, ...]
    seconds: float


@dataclass(frozen=True)
class Layout:
    """Groups in topological order, their run time (kernels + :func:`partition_overheads`),
    the copies, and ``deps[i]``: the groups whose outputs group ``i`` reads directly
    (same device)."""

    assignment: dict[str, str]
    groups: list[Group]
    group_seconds: list[float]
    transfers: list[Transfer]
    deps: list[tuple[int, ...]]
    weight_bytes: list[int] = field(default_factory=list)  # per group: its kernels' constants
    weight_seconds: list[float] = field(default_factory=list)  # per group: its weight copy (0: resident)
    stream_slots: int = 0  # the ring streamed groups' weights are copied into (0: nothing streamed)
    stream_slot_bytes: int = 0
    group_overhead: list[float] = field(default_factory=list)  # per group: partition_overheads (in group_seconds)
    contention: tuple[float, float] | None = None  # Problem.contention: (cpu read, h2d copy) rates kept
    read_seconds: list[float] = field(default_factory=list)  # per group: its CPU weight reads (in group_seconds)

    @property
    def streamed_groups(self) -> list[int]:
        """Indices of the streamed groups, in order (the order of their weight copies)."""
        return [i for i, g in enumerate(self.groups) if g.streamed]


def partition_overheads(problem: Problem, devices: list[str]) -> list[float]:
    """Seconds each partition adds besides its kernels, for partitions on ``devices`` in run order.

    Each pays ``problem.overhead[device]``; one whose predecessor in run order is on
    another device also pays ``problem.wake[device]``.  Run order is cyclic: the first
    partition follows the previous inference's last (a decode loop, a benchmark, a
    server run step after step), so a plan of one device never wakes and a plan
    CPU -> CUDA wakes the CPU once per inference, as CUDA -> CPU does.  Invariant: with
    a positive wake cost the sum grows by it with every boundary into that device."""
    return [problem.overhead[d] + (problem.wake.get(d, 0.0) if woke else 0.0)
            for d, woke in zip(devices, _wakes(devices))]


def graphless_overheads(devices: list[str], compute: list[float], overheads: list[float],
                        launches: list[int], call: float, launch: float, handoff: float) -> list[float]:
    """``overheads`` (one per partition, in run order) of a plan without CUDA graphs: a CUDA
    partition's becomes what makes ``compute + overhead`` equal to ``max(compute + overhead,
    call + launches * launch)`` (its host launching ``launches`` kernels one by one, which
    the GPU cannot outrun), plus ``handoff`` when its predecessor in run order is a CPU
    partition (not cyclic: the first partition follows the previous run's last, which the
    trace that measured these did not show).  Invariant: for ``call, launch, handoff >= 0``
    no overhead shrinks; CPU partitions keep theirs."""
    out = []
    for i, (d, c, o, n) in enumerate(zip(devices, compute, overheads, launches)):
        if d == "cuda":
            o = max(o, call + n * launch - c) + (handoff if i and devices[i - 1] == "cpu" else 0.0)
        out.append(o)
    return out


def wake_count(devices: list[str], device: str = "cpu") -> int:
    """How many partitions on ``device`` pay the wake cost (see :func:`partition_overheads`)."""
    return sum(woke for d, woke in zip(devices, _wakes(devices)) if d == device)


def _wakes(devices: list[str]) -> list[bool]:
    """Per partition in run order: whether its (cyclic) predecessor runs on another device."""
    return [len(devices) > 1 and devices[i - 1] != d for i, d in enumerate(devices)]


def flow_plan(problem: Problem, a: Assignment) -> tuple[list[tuple[str, str]], list[tuple]]:
    """What :func:`lay_out` needs of ``problem.flows`` under ``a``, whatever the partitions:
    ``(same, copies)``, the (producer, consumer) pairs on one device (a partition depends on
    another where they fall in two), and per copy (:meth:`Problem.copies`, in flow order)
    ``(flow index, producer or None, device, its readers there, seconds)``."""
    same, copies = [], []
    for fi, f in enumerate(problem.flows):
        producer, consumers = f.producer, f.consumers
        if producer is not None:
            here = a[producer]
            same += [(producer, c) for c in consumers if a[c] == here]
        copies += [(fi, producer, device, tuple(c for c in consumers if a[c] == device), f.copy_s[device])
                   for device in problem.copies(f, a)]
    return same, copies


def mapped_extra_s(problem: Problem, group: Group) -> float:
    """Seconds a mapped group's kernels add over their resident cost (0 for any other group)."""
    return sum(problem.mapped_extra_s(k) for k in group.kernels) if group.mapped else 0.0


def lay_out(problem: Problem, a: Assignment, by_level: bool = False, streamed=frozenset(),
            slot_bytes: int = 0, parts: dict[str, int] | None = None, flows=None, mapped=frozenset()) -> Layout:
    """Partitions (see :func:`group_kernels`) and copies of ``a``; ``a`` must respect pins (checked).

    ``streamed``: CUDA kernels whose weights are streamed, in groups of at most
    ``slot_bytes``; the ring's slot count is set later (``stream_slots``, 0 here).
    ``parts``: :func:`~.grouping.group_parts` of the same ``a``, ``by_level`` and
    ``streamed`` where the caller has it (one placement at several slot sizes); ``flows``:
    :func:`flow_plan` of the same ``a``, likewise.  ``mapped``: CUDA kernels whose weights
    are mapped (:data:`~.choice.MAPPED`): in groups of their own, no weight copy, each
    costing :meth:`Problem.mapped_extra_s` more than resident (in the group's compute)."""
    problem.check(a)
    groups = group_kernels(problem, a, by_level, streamed, slot_bytes, parts, mapped)
    kernels = problem.graph.kernels
    weights = [sum(kernels[k].param_bytes for k in g.kernels) for g in groups]
    # A streamed group without constants has nothing to copy: it runs as a resident one.
    groups = [replace(g, streamed=False) if g.streamed and not w else g for g, w in zip(groups, weights)]
    weight_s = [problem.weight_copy_s(w) if g.streamed else 0.0 for g, w in zip(groups, weights)]
    where = {k: i for i, g in enumerate(groups) for k in g.kernels}
    overheads = partition_overheads(problem, [g.device for g in groups])
    compute = [problem.compute_s(a, g.kernels) for g in groups]
    if mapped:
        compute = [c + mapped_extra_s(problem, g) for c, g in zip(compute, groups)]
    if GRAPHLESS_CUDA_LAUNCH and any(problem.graphless) and cuda_graphs_off(groups):
        launches = [sum(k not in problem.views for k in g.kernels) if g.device == "cuda" else 0 for g in groups]
        overheads = graphless_overheads([g.device for g in groups], compute, overheads, launches,
                                        *problem.graphless)
    seconds = [c + o for c, o in zip(compute, overheads)]
    same, copies = flow_plan(problem, a) if flows is None else flows
    deps = [set() for _ in groups]
    for producer, consumer in same:
        src, dst = where[producer], where[consumer]
        if dst != src:
            deps[dst].add(src)
    transfers = [Transfer(fi, None if producer is None else where[producer], device,
                          tuple(sorted({where[c] for c in readers})), seconds_)
                 for fi, producer, device, readers, seconds_ in copies]
    read = ([sum(problem.read_s.get(k, 0.0) for k in g.kernels) if g.device == "cpu" else 0.0 for g in groups]
            if problem.contention is not None else [])
    return Layout(dict(a), groups, seconds, transfers, [tuple(sorted(d)) for d in deps], weights, weight_s,
                  group_overhead=overheads, contention=problem.contention, read_seconds=read)
