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
:attr:`hetpart.costmodel.Overheads.wake_s`).  In a plan that streams weights each CUDA
partition also pays ``problem.stream_handoff`` (switch :data:`STREAMED_CUDA_HANDOFF`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .grouping import Group, group_kernels
from .problem import Assignment, Problem


STREAMED_CUDA_HANDOFF = False
"""On: in a plan that streams weights, each CUDA partition pays ``problem.stream_handoff``'s
call and, entered from a CPU partition, its wake (:meth:`hetpart.costmodel.CostModel.streamed_cuda_handoff`:
what a traced llama_decode run measured; issue 19, bench/results/capped-decode-trace.md).
Off (the default): the profile's CUDA call + switch alone.  Off because the same term
reprices today's BERT-large streaming plans from 11.90 / 16.47 / 18.81 ms to 21.97 / 27.54 /
30.09 ms at 1/2, 1/3, 1/4 of its weights, where session 41 measured such plans at 13.74 /
16.53 / 20.67 ms (predicted 14.24 / 17.17 / 19.90 without it): the ~200 us seen on llama_decode's
one-GEMV CUDA partitions is not a cost every CUDA partition of a streaming plan pays.  Device
step 113 times llama_decode with it on and off to find its real form.  Costs without the
method (table costs) hand off for free either way."""


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


def streamed_handoffs(devices: list[str], overheads: list[float], call: float, wake: float) -> list[float]:
    """``overheads`` (one per partition, in run order) with ``call`` added to each CUDA
    partition's and ``wake`` besides to one whose predecessor in run order is a CPU partition
    (not cyclic: the first partition follows the previous run's last, a handoff the trace
    that measured these did not show).  Invariant: for ``call, wake >= 0`` no overhead
    shrinks; CPU partitions keep theirs."""
    return [o + (call + (wake if i and devices[i - 1] == "cpu" else 0.0) if d == "cuda" else 0.0)
            for i, (d, o) in enumerate(zip(devices, overheads))]


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


def lay_out(problem: Problem, a: Assignment, by_level: bool = False, streamed=frozenset(),
            slot_bytes: int = 0, parts: dict[str, int] | None = None, flows=None) -> Layout:
    """Partitions (see :func:`group_kernels`) and copies of ``a``; ``a`` must respect pins (checked).

    ``streamed``: CUDA kernels whose weights are streamed, in groups of at most
    ``slot_bytes``; the ring's slot count is set later (``stream_slots``, 0 here).
    ``parts``: :func:`~.grouping.group_parts` of the same ``a``, ``by_level`` and
    ``streamed`` where the caller has it (one placement at several slot sizes); ``flows``:
    :func:`flow_plan` of the same ``a``, likewise."""
    problem.check(a)
    groups = group_kernels(problem, a, by_level, streamed, slot_bytes, parts)
    kernels = problem.graph.kernels
    weights = [sum(kernels[k].param_bytes for k in g.kernels) for g in groups]
    # A streamed group without constants has nothing to copy: it runs as a resident one.
    groups = [replace(g, streamed=False) if g.streamed and not w else g for g, w in zip(groups, weights)]
    weight_s = [problem.weight_copy_s(w) if g.streamed else 0.0 for g, w in zip(groups, weights)]
    where = {k: i for i, g in enumerate(groups) for k in g.kernels}
    overheads = partition_overheads(problem, [g.device for g in groups])
    if STREAMED_CUDA_HANDOFF and any(g.streamed for g in groups):
        overheads = streamed_handoffs([g.device for g in groups], overheads, *problem.stream_handoff)
    seconds = [problem.compute_s(a, g.kernels) + o for g, o in zip(groups, overheads)]
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
