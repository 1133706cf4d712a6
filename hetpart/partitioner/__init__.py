"""Partitioner: op graph + costs -> :class:`Plan` (which device runs each kernel, and why).

Read in this order: :mod:`.problem` (the costs, looked up once) -> :mod:`.mincut`
(the exact latency solution) -> :mod:`.gpu_memory` and :mod:`.capacity` (the GPU memory
cap; :mod:`.streaming`: weights streamed from host memory when the cap binds) ->
:mod:`.grouping` and :mod:`.layout` (partitions and copies) ->
:mod:`.timeline` and :mod:`.evaluate` (predicted numbers) -> :mod:`.objectives` (the
registry; :mod:`.baselines`, :mod:`.heft` and :mod:`.search` serve it) ->
:mod:`.planning` (the entry point) -> :mod:`.plan` (the data) -> :mod:`.plan_report`, :mod:`.svg`, :mod:`.trace`
(what the user sees), :mod:`.candidates` (other plans worth measuring: baselines,
rescaled cuts, single moves, random valid plans -- the benchmark's oracle).
:mod:`.costs` is the cost protocol the algorithms rely on; :mod:`.random_cases` makes
random test cases; :mod:`.state` and :mod:`.same_device`: device-resident state pairs, whose
writer and readers every objective keeps on one device.
"""

from .candidates import (assignment_key, oracle_candidates, plan_for_assignment, random_valid_assignments,
                         single_device_assignments)
from .costs import Costs, TableCosts
from .data_parallel_plan import DataParallelPlan
from .objectives import OBJECTIVES, objective
from .pins import Pin, parse_pins
from .plan import Cut, Partition, Plan, Span
from .planning import cost_model_for, partition
from .plan_report import explain, render_plan
from .svg import write_svg
from .trace import write_trace

__all__ = [
    "OBJECTIVES", "Costs", "Cut", "DataParallelPlan", "Partition", "Pin", "Plan", "Span", "TableCosts", "cost_model_for",
    "explain",
    "objective", "parse_pins", "partition", "render_plan", "write_svg", "write_trace",
    "assignment_key", "oracle_candidates", "plan_for_assignment", "random_valid_assignments",
    "single_device_assignments",
]
