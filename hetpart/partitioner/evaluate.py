"""Every predicted number of one placement, computed in one place.

:func:`evaluate` lays the placement out and predicts its sequential latency, its
parallel makespan, its pipelined period and its GPU memory.  Objectives compare
candidates by one of these; the plan reports them all.

A placement that streams weights (:data:`~.problem.STREAM`) also gets its ring: slots
of a multiple (:data:`SLOT_MULTIPLES`) of its largest streamed kernel's weights
(consecutive streamed kernels share a partition while they fit one slot), and the
number of slots in :data:`SLOT_CHOICES`, the pair that fits the cap with the lowest
sequential latency (least ring memory on ties).  A larger slot trades GPU memory for
fewer streamed partitions, each a call with its own overhead: BERT-large at a quarter
of its weights had ~230 partitions whose overheads were 39% of its predicted
latency.  A placement without streamed weights is evaluated as before streaming
existed.  Kernels placed :data:`~.choice.MAPPED` run in CUDA groups of their own at their
mapped cost (:meth:`~.problem.Problem.mapped_extra_s`), their weights neither resident
(out of the memory's ``params``) nor in the ring.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .grouping import group_parts
from .layout import Layout, flow_plan, lay_out
from .gpu_memory import GpuMemory, gpu_memory
from .problem import MAPPED, STREAM, Assignment, Problem, mapped_of, split
from .timeline import end_time, pipeline_period, sequential_end_times

SLOT_CHOICES = (1, 2, 3, 4)
"""Ring sizes tried: 2 is double buffering; a third or fourth slot lets the copy stream
run further ahead of short calls, at one more slot of GPU memory each."""
SLOT_MULTIPLES = (1, 2, 3)
"""Slot sizes tried, in multiples of the largest streamed kernel's weights: 3 holds a
transformer layer's four projections (the FFN's two the largest) in one slot."""


@dataclass(frozen=True)
class Evaluation:
    layout: Layout
    sequential_s: float  # partitions one after another (the latency objective)
    known_makespan_s: float | None = field(compare=False, repr=False)  # see makespan_s (None: not yet)
    period_s: float  # pipelined micro-batches: seconds per micro-batch
    memory: GpuMemory
    fits: bool  # under the GPU memory cap (True when there is none)
    streamed: frozenset = frozenset()  # kernels placed STREAM (weights streamed into the ring)
    mapped: frozenset = frozenset()  # kernels placed MAPPED (weights read in place from pinned host memory)

    @property
    def makespan_s(self) -> float:
        """Independent partitions overlap (the makespan objective): ``end_time(layout,
        "parallel")``, computed on first read where :func:`evaluate` did not need it (the
        latency search reads only ``sequential_s``; ~7% of the BERT twin's capped planning)."""
        if self.known_makespan_s is None:
            object.__setattr__(self, "known_makespan_s", end_time(self.layout, "parallel"))
        return self.known_makespan_s

    @property
    def placement(self) -> Assignment:
        """The placement evaluated: the layout's devices, STREAM for streamed kernels, MAPPED for
        mapped ones."""
        a = self.layout.assignment
        if self.mapped:
            return {k: STREAM if k in self.streamed else MAPPED if k in self.mapped else d for k, d in a.items()}
        return {k: STREAM if k in self.streamed else d for k, d in a.items()} if self.streamed else a


def evaluate(problem: Problem, placement: Assignment, overlap: bool = False) -> Evaluation:
    """All predictions of ``placement``, on maximal partitions; with ``overlap``, on whichever
    of maximal and level-split partitions (:func:`~.grouping.group_kernels`) overlaps better."""
    a, streamed = split(placement)
    mapped = mapped_of(placement) if a is not placement else frozenset()
    kernels = problem.graph.kernels
    slot = max((kernels[k].param_bytes for k in streamed), default=0)
    if not slot:  # nothing to stream: resident weights, as without streaming
        return _resident(problem, a, overlap, streamed, mapped)
    base = gpu_memory(problem, a, streamed | mapped)
    best = None
    for layout, size in _ring_layouts(problem, a, streamed, slot, overlap, mapped):
        n = len(layout.streamed_groups)
        counts = [s for s in SLOT_CHOICES if s <= max(n, 1)]
        for slots, seq in zip(counts, sequential_end_times(layout, counts)):
            ringed = replace(layout, stream_slots=slots, stream_slot_bytes=size)
            mem = replace(base, stream_buffers=slots * size)
            fits = problem.gpu_memory is None or mem.total <= problem.gpu_memory
            span = end_time(ringed, "parallel") if overlap else None
            key = (not fits, span if overlap else seq, seq, slots * size)
            if best is None or key < best[0]:
                best = (key, ringed, seq, span, mem, fits)
    _, ringed, seq, span, mem, fits = best
    return Evaluation(ringed, seq, span, pipeline_period(ringed), mem, fits, streamed, mapped)


def _ring_layouts(problem: Problem, a: Assignment, streamed: frozenset, largest: int, overlap: bool,
                  mapped: frozenset = frozenset()):
    """(layout, slot bytes) for each slot size of :data:`SLOT_MULTIPLES` (a multiple that
    merges no further streamed partitions than a smaller one is skipped), maximal
    partitions and, with ``overlap``, level-split ones too."""
    seen = set()
    levels = (False, True) if overlap else (False,)
    parts = {by_level: group_parts(problem, a, by_level, streamed, mapped) for by_level in levels}  # slot-size free
    flows = flow_plan(problem, a)  # partition free
    for mult in SLOT_MULTIPLES:
        size = largest * mult
        for by_level in levels:
            layout = lay_out(problem, a, by_level, streamed, size, parts[by_level], flows, mapped)
            shape = (by_level, len(layout.groups))
            if mult > 1 and shape in seen:
                continue
            seen.add(shape)
            yield layout, size


def _resident(problem: Problem, a: Assignment, overlap: bool, streamed: frozenset,
              mapped: frozenset = frozenset()) -> Evaluation:
    layout = lay_out(problem, a, mapped=mapped)
    makespan = end_time(layout, "parallel")
    if overlap:
        split_layout = lay_out(problem, a, by_level=True, mapped=mapped)
        split_makespan = end_time(split_layout, "parallel")
        if len(split_layout.groups) > len(layout.groups) and split_makespan < makespan:
            layout, makespan = split_layout, split_makespan
    mem = gpu_memory(problem, a, mapped)
    return Evaluation(
        layout=layout,
        sequential_s=end_time(layout, "sequential"),
        known_makespan_s=makespan,
        period_s=pipeline_period(layout),
        memory=mem,
        fits=problem.gpu_memory is None or mem.total <= problem.gpu_memory,
        streamed=streamed,
        mapped=mapped,
    )
