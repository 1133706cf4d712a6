"""Every predicted number of one assignment, computed in one place.

:func:`evaluate` lays the assignment out and predicts its sequential latency, its
parallel makespan, its pipelined period and its GPU memory.  Objectives compare
candidates by one of these; the plan reports them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import Layout, lay_out
from .gpu_memory import GpuMemory, gpu_memory
from .problem import Assignment, Problem
from .timeline import finish, pipeline_period, simulate


@dataclass(frozen=True)
class Evaluation:
    layout: Layout
    sequential_s: float  # partitions one after another (the latency objective)
    makespan_s: float  # independent partitions overlap (the makespan objective)
    period_s: float  # pipelined micro-batches: seconds per micro-batch
    memory: GpuMemory
    fits: bool  # under the GPU memory cap (True when there is none)


def evaluate(problem: Problem, a: Assignment, overlap: bool = False) -> Evaluation:
    """All predictions of ``a``, on maximal partitions; with ``overlap``, on whichever of
    maximal and level-split partitions (:func:`~.grouping.group_kernels`) overlaps better."""
    layout = lay_out(problem, a)
    makespan = finish(simulate(layout, "parallel"))
    if overlap:
        split = lay_out(problem, a, by_level=True)
        split_makespan = finish(simulate(split, "parallel"))
        if len(split.groups) > len(layout.groups) and split_makespan < makespan:
            layout, makespan = split, split_makespan
    mem = gpu_memory(problem, a)
    return Evaluation(
        layout=layout,
        sequential_s=finish(simulate(layout, "sequential")),
        makespan_s=makespan,
        period_s=pipeline_period(layout),
        memory=mem,
        fits=problem.gpu_memory is None or mem.total <= problem.gpu_memory,
    )
