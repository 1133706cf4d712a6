"""How a batch is split between the GPU and the CPU, and when the split is worth it.

In: the batch ``B`` and ``side_seconds(device, rows)``: the predicted seconds of the
model at batch ``rows`` on one device (``"cuda"``: every kernel on the GPU that can
run there; ``"cpu"``: every kernel on the CPU), None where that side is infeasible
(e.g. over the GPU memory cap).  Out: the best :class:`Candidate` split and every
split priced.  Pure arithmetic: :mod:`hetpart.data_parallel` feeds it the cost
model's numbers, tests feed it stubs.

The rule (:func:`choose_split`):

1. throughput at the whole batch, ``r_d = B / side_seconds(d, B)``, gives the
   proportional split ``b_cpu* = B * r_cpu / (r_cpu + r_gpu)`` (each device gets rows
   in proportion to its rate, so both finish together if time is linear in rows);
2. kernel times are not linear in rows (a GPU is under-occupied at small batches), so
   the cost model prices the grid points (multiples of ``step``, default ``B // 8``)
   within ``window`` steps of ``b_cpu*``, plus both ends (``b_cpu = 0``: all on the
   GPU; ``b_cpu = B``: all on the CPU): ``latency = max(gpu_s, cpu_s * cpu_slowdown)
   + merge_s`` (:class:`SplitCosts`); the cheapest wins (ties: the unsplit one, then
   fewer CPU rows).

A GPU busy with another model is priced by :class:`SharedGpu` (this model's share of
it), for the per-kernel plan and both sides alike.

The split is offered instead of the per-kernel plan only when :func:`beats` says it
is predicted faster than that plan at batch ``B`` by more than ``min_gain``
(:data:`RULE`): the cost model knows nothing of the two sides competing for memory
bandwidth and host threads, and the margin keeps a predicted tie on one device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

from ..errors import PlanError

SideSeconds = Callable[[str, int], "float | None"]

MIN_GAIN = 0.05
"""The least predicted gain (5%) for which the split replaces the per-kernel plan."""

RULE = ("split chosen when its predicted seconds per batch, max(GPU side, CPU side) + merge, beat the best "
        "per-kernel plan's at the same batch by more than {gain:.0%}")


@dataclass(frozen=True)
class SplitCosts:
    """What a split costs beyond its two sides (defaults: estimates, not measured).

    ``fixed_s``: handing one side to another thread and joining it; ``copy_bytes_per_s``:
    host memory copies of the outputs concatenated (``merge_bytes`` of them per batch);
    ``cpu_slowdown``: how much slower the CPU side runs beside a busy GPU side than
    alone (1.0: the GPU side's threads sleep while they wait, so the CPU keeps its cores).
    """

    fixed_s: float = 50e-6
    copy_bytes_per_s: float = 5e9
    cpu_slowdown: float = 1.0

    def merge_s(self, b_gpu: int, b_cpu: int, merge_bytes: int) -> float:
        """Seconds a split adds; 0 when one side is empty (nothing to split or merge)."""
        if b_gpu == 0 or b_cpu == 0:
            return 0.0
        return self.fixed_s + merge_bytes / self.copy_bytes_per_s


@dataclass(frozen=True)
class Candidate:
    """One split priced; ``latency_s`` None when a side with rows is infeasible."""

    b_gpu: int
    b_cpu: int
    gpu_s: float | None
    cpu_s: float | None
    merge_s: float
    latency_s: float | None

    def to_json(self) -> dict:
        return asdict(self)


class SharedGpu:
    """``costs`` with every CUDA kernel ``1 / share`` times as slow: the GPU busy with
    another model, of which this one gets ``share`` (0 < share <= 1).  Everything else
    (copies, the profile, ``add_graph``) is ``costs``' own."""

    def __init__(self, costs, share: float):
        if not 0.0 < share <= 1.0:
            raise PlanError(f"the GPU share must be in (0, 1], got {share}")
        self.costs, self.share = costs, float(share)

    def kernel_cost(self, kernel, device: str) -> float:
        seconds = self.costs.kernel_cost(kernel, device)
        return seconds / self.share if device == "cuda" else seconds

    def __getattr__(self, name):  # the Costs protocol's other methods and the profile behind it
        if name == "costs":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.costs, name)


def proportional_rows(batch: int, gpu_s: float | None, cpu_s: float | None) -> float:
    """``b_cpu*``: the CPU's share of ``batch`` in proportion to the two devices'
    throughput at the whole batch (all on the feasible side when one is not)."""
    if gpu_s is None and cpu_s is None:
        raise PlanError("neither an all-GPU nor an all-CPU build of the model is feasible at this batch")
    if gpu_s is None:
        return float(batch)
    if cpu_s is None:
        return 0.0
    if gpu_s + cpu_s <= 0:
        return 0.0
    return batch * gpu_s / (gpu_s + cpu_s)  # = B * r_cpu / (r_cpu + r_gpu) with r = B / seconds


def candidate_rows(batch: int, estimate: float, step: int, window: int = 1) -> list[int]:
    """The CPU row counts to price: 0, ``batch``, and the multiples of ``step`` from
    ``window`` steps below ``estimate`` to ``window`` above, ascending."""
    if step < 1:
        raise PlanError(f"the split's step must be at least 1 row, got {step}")
    low = max(0, (math.floor(estimate / step) - window + 1) * step)
    high = min(batch, (math.ceil(estimate / step) + window - 1) * step)
    rows = {0, batch, *range(low, high + 1, step)}
    if step > 1 and 0 < estimate < batch:
        rows.add(min(batch - 1, max(1, round(estimate))))  # the proportional split itself
    return sorted(r for r in rows if 0 <= r <= batch)


def price(batch: int, b_cpu: int, side_seconds: SideSeconds, costs: SplitCosts, merge_bytes: int) -> Candidate:
    """``b_cpu`` rows on the CPU, the rest on the GPU, priced."""
    b_gpu = batch - b_cpu
    gpu_s = side_seconds("cuda", b_gpu) if b_gpu else 0.0
    cpu_s = side_seconds("cpu", b_cpu) if b_cpu else 0.0
    merge = costs.merge_s(b_gpu, b_cpu, merge_bytes)
    latency = None if gpu_s is None or cpu_s is None else max(gpu_s, cpu_s * costs.cpu_slowdown) + merge
    return Candidate(b_gpu, b_cpu, gpu_s, cpu_s, merge, latency)


def choose_split(batch: int, side_seconds: SideSeconds, *, costs: SplitCosts = SplitCosts(), merge_bytes: int = 0,
                 step: int | None = None, window: int = 1,
                 require_split: bool = False) -> tuple[Candidate, list[Candidate]]:
    """(the cheapest split, every split priced in ascending ``b_cpu``); see the module
    docstring.  ``require_split``: the cheapest that gives both devices rows, where one
    is feasible (to measure a split the rule would not take).  PlanError when
    ``batch < 1`` or no split is feasible."""
    if batch < 1:
        raise PlanError(f"a data-parallel split needs a batch of at least 1 row, got {batch}")
    step = step or max(1, batch // 8)
    estimate = proportional_rows(batch, side_seconds("cuda", batch), side_seconds("cpu", batch))
    priced = [price(batch, r, side_seconds, costs, merge_bytes) for r in candidate_rows(batch, estimate, step, window)]
    feasible = [c for c in priced if c.latency_s is not None]
    if not feasible:
        raise PlanError("no split of the batch between the GPU and the CPU is feasible")
    if require_split and any(c.b_gpu and c.b_cpu for c in feasible):
        feasible = [c for c in feasible if c.b_gpu and c.b_cpu]
    best = min(feasible, key=lambda c: (c.latency_s, c.b_gpu > 0 and c.b_cpu > 0, c.b_cpu))
    return best, priced


def beats(split_s: float, per_kernel_s: float | None, min_gain: float = MIN_GAIN) -> bool:
    """Whether a split predicted at ``split_s`` seconds per batch replaces a per-kernel
    plan predicted at ``per_kernel_s``: faster by more than ``min_gain`` (a fraction)."""
    if per_kernel_s is None:  # no per-kernel plan fits: any feasible split is better
        return True
    return split_s * (1.0 + min_gain) < per_kernel_s
