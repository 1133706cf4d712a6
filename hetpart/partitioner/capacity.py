"""Meeting a GPU memory cap: a Lagrangian penalty over the minimum cut, then repair.

1. Charge each CUDA kernel ``lambda`` seconds per byte of its parameters and outputs
   (:func:`mincut.gpu_charge`), and bisect ``lambda`` (on a log scale) for the
   smallest penalty whose minimum cut fits the cap (:mod:`.gpu_memory`).
2. Repair: if even the largest penalty does not fit (the activation peak is not
   linear), move CUDA kernels to the CPU, most bytes saved per second lost first,
   until it fits.
3. Refill: the penalty is coarse, so move back to CUDA any CPU kernel that lowers
   the cost and still fits.

If the cap cannot be met with every movable kernel on the CPU, say so with numbers.

Without an explicit cap, the GPU's own memory (recorded in the profile,
:func:`default_cap`) is the cap: a plan never puts more on the GPU than it holds.
"""

from __future__ import annotations

import math

from tqdm import tqdm

from ..errors import PlanError, option
from ..importer.summary import human_bytes
from .gpu_memory import fits, gpu_memory
from .mincut import Weights, gpu_charge, solve_min_cut
from .problem import Assignment, Problem

BISECTION_STEPS = 24
REFILL_PASSES = 3


def default_cap(costs) -> int | None:
    """The GPU memory (bytes) of the machine ``costs``' profile measured, or None
    where unknown (costs without a profile, profiles older than the record)."""
    size = getattr(getattr(costs, "profile", None), "gpu_memory_bytes", None)
    return int(size) if isinstance(size, int) and size > 0 else None


def solve_under_cap(problem: Problem, weights: Weights = Weights(), progress: bool = False) -> Assignment:
    """The weighted minimum cut, forced under ``problem.gpu_memory`` (if any)."""
    best = solve_min_cut(problem, weights)
    if fits(problem, best):
        return best
    floor = least_gpu(problem)
    if not fits(problem, floor):
        raise PlanError(infeasible_message(problem, floor))
    high = _largest_penalty(problem)
    a_high = solve_min_cut(problem, _with_penalty(weights, high))
    if fits(problem, a_high):
        a_high = _bisect(problem, weights, high, a_high, progress)
    return refill(problem, repair(problem, a_high))


def least_gpu(problem: Problem) -> Assignment:
    """Every kernel that may run on the CPU, there: the least GPU memory possible."""
    return {k: "cpu" if "cpu" in problem.allowed[k] else "cuda" for k in problem.order}


def repair(problem: Problem, a: Assignment) -> Assignment:
    """Move CUDA kernels to the CPU (most bytes per second lost first) until ``a`` fits;
    a kernel that must share its device (:meth:`Problem.closure`) moves with its group.
    Where even every movable kernel on the CPU does not fit (kernels held on CUDA; only
    streamed weights could fit), the assignment with all of them moved: callers check
    ``fits``."""
    a = dict(a)
    while not fits(problem, a):
        movable = [k for k in problem.order if a[k] == "cuda" and "cpu" in problem.allowed[k]]
        if not movable:
            break
        k = max(movable, key=lambda k: _charge(problem, k) / max(problem.move_delta(a, problem.closure((k,)), "cpu"),
                                                                 1e-12))
        a.update(dict.fromkeys(problem.closure((k,)), "cpu"))
    return a


def _charge(problem: Problem, k: str) -> int:
    return sum(gpu_charge(problem, m) for m in problem.closure((k,)))


def refill(problem: Problem, a: Assignment) -> Assignment:
    """Move CPU kernels back to CUDA (with their groups) while that lowers the cost and still fits."""
    a = dict(a)
    for _ in range(REFILL_PASSES):
        gains = [(problem.move_delta(a, problem.closure((k,)), "cuda"), k) for k in problem.order
                 if a[k] == "cpu" and "cuda" in problem.allowed[k]]
        changed = False
        for delta, k in sorted(g for g in gains if g[0] < 0):
            group = problem.closure((k,))
            if problem.move_delta(a, group, "cuda") < 0:
                a.update(dict.fromkeys(group, "cuda"))
                if fits(problem, a):
                    changed = True
                else:
                    a.update(dict.fromkeys(group, "cpu"))
        if not changed:
            break
    return a


def infeasible_message(problem: Problem, floor: Assignment) -> str:
    mem = gpu_memory(problem, floor)
    held = [k for k in problem.order if floor[k] == "cuda"]
    why = ", ".join(f"{k} ({problem.reasons.get(k, 'held on cuda')})" for k in held[:5])
    more = f" and {len(held) - 5} more" if len(held) > 5 else ""
    return (f"GPU memory cap {human_bytes(problem.gpu_memory)} cannot be met: with every kernel that may "
            f"run on the CPU moved there, the GPU still needs {human_bytes(mem.total)} "
            f"(parameters {human_bytes(mem.params)} + peak activations {human_bytes(mem.peak_activations)}) "
            f"for the kernels held on CUDA: {why}{more}. Raise {option('gpu_memory')} to at least "
            f"{human_bytes(mem.total)}, or drop the pins that hold kernels on CUDA")


def _with_penalty(w: Weights, penalty: float) -> Weights:
    return Weights(w.cpu, w.cuda, w.link, penalty)


def _largest_penalty(problem: Problem) -> float:
    """A multiplier large enough that no kernel with a GPU charge stays on CUDA by choice."""
    total = sum(max(s.values()) for s in problem.seconds.values())
    total += sum(sum(f.copy_s.values()) for f in problem.flows)
    charges = [c for c in (gpu_charge(problem, k) for k in problem.order) if c > 0]
    return 2.0 * total / min(charges, default=1) + 1e-30


def _bisect(problem, weights, high, a_high, progress) -> Assignment:
    """Smallest penalty (log-scale bisection) whose cut fits; its assignment."""
    lo, hi = math.log(high) - 40.0, math.log(high)
    for _ in tqdm(range(BISECTION_STEPS), desc="memory cap", disable=not progress or None, leave=False):
        mid = (lo + hi) / 2
        a = solve_min_cut(problem, _with_penalty(weights, math.exp(mid)))
        if fits(problem, a):
            hi, a_high = mid, a
        else:
            lo = mid
    return a_high
