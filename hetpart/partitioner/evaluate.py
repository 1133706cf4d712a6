"""Every predicted number of one placement, computed in one place.

:func:`evaluate` lays the placement out and predicts its sequential latency, its
parallel makespan, its pipelined period and its GPU memory.  Objectives compare
candidates by one of these; the plan reports them all.

A placement that streams weights (:data:`~.problem.STREAM`) also gets its ring: slots
of the size of its largest streamed kernel's weights (consecutive streamed kernels
share a partition while they fit one), and the number of slots in
:data:`SLOT_CHOICES` that fits the cap with the lowest sequential latency (fewest
slots on ties).  A placement without streamed weights is evaluated as before
streaming existed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .layout import Layout, lay_out
from .gpu_memory import GpuMemory, gpu_memory
from .problem import STREAM, Assignment, Problem, split
from .timeline import finish, pipeline_period, simulate

SLOT_CHOICES = (1, 2, 3, 4)
"""Ring sizes tried: 2 is double buffering; a third or fourth slot lets the copy stream
run further ahead of short calls, at one more slot of GPU memory each."""


@dataclass(frozen=True)
class Evaluation:
    layout: Layout
    sequential_s: float  # partitions one after another (the latency objective)
    makespan_s: float  # independent partitions overlap (the makespan objective)
    period_s: float  # pipelined micro-batches: seconds per micro-batch
    memory: GpuMemory
    fits: bool  # under the GPU memory cap (True when there is none)
    streamed: frozenset = frozenset()  # kernels placed STREAM (weights streamed into the ring)

    @property
    def placement(self) -> Assignment:
        """The placement evaluated: the layout's devices, STREAM for streamed kernels."""
        a = self.layout.assignment
        return {k: STREAM if k in self.streamed else d for k, d in a.items()} if self.streamed else a


def evaluate(problem: Problem, placement: Assignment, overlap: bool = False) -> Evaluation:
    """All predictions of ``placement``, on maximal partitions; with ``overlap``, on whichever
    of maximal and level-split partitions (:func:`~.grouping.group_kernels`) overlaps better."""
    a, streamed = split(placement)
    kernels = problem.graph.kernels
    slot = max((kernels[k].param_bytes for k in streamed), default=0)
    if not slot:  # nothing to stream: resident weights, as without streaming
        return _resident(problem, a, overlap, streamed)
    layouts = [lay_out(problem, a, False, streamed, slot)]
    if overlap:
        layouts.append(lay_out(problem, a, True, streamed, slot))
    base = gpu_memory(problem, a, streamed)
    best = None
    for layout in layouts:
        n = len(layout.streamed_groups)
        for slots in [s for s in SLOT_CHOICES if s <= max(n, 1)]:
            ringed = replace(layout, stream_slots=slots, stream_slot_bytes=slot)
            mem = replace(base, stream_buffers=slots * slot)
            fits = problem.gpu_memory is None or mem.total <= problem.gpu_memory
            seq = finish(simulate(ringed, "sequential"))
            span = finish(simulate(ringed, "parallel")) if overlap else None
            key = (not fits, span if overlap else seq, seq, slots)
            if best is None or key < best[0]:
                best = (key, ringed, seq, span, mem, fits)
    _, ringed, seq, span, mem, fits = best
    span = finish(simulate(ringed, "parallel")) if span is None else span
    return Evaluation(ringed, seq, span, pipeline_period(ringed), mem, fits, streamed)


def _resident(problem: Problem, a: Assignment, overlap: bool, streamed: frozenset) -> Evaluation:
    layout = lay_out(problem, a)
    makespan = finish(simulate(layout, "parallel"))
    if overlap:
        split_layout = lay_out(problem, a, by_level=True)
        split_makespan = finish(simulate(split_layout, "parallel"))
        if len(split_layout.groups) > len(layout.groups) and split_makespan < makespan:
            layout, makespan = split_layout, split_makespan
    mem = gpu_memory(problem, a)
    return Evaluation(
        layout=layout,
        sequential_s=finish(simulate(layout, "sequential")),
        makespan_s=makespan,
        period_s=pipeline_period(layout),
        memory=mem,
        fits=problem.gpu_memory is None or mem.total <= problem.gpu_memory,
        streamed=streamed,
    )
