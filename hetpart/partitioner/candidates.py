"""Candidate plans besides the chosen one, each as a real :class:`~hetpart.partitioner.Plan`
(what a benchmark measures, and its oracle check).

* :func:`plan_for_assignment`: the Plan of a *given* device-per-kernel assignment
  (all-CPU, all-CUDA, greedy, an oracle candidate), predicted by the same cost model
  and timeline as the partitioner's own plans, so predicted-vs-measured compares
  like with like.
* :func:`single_device_assignments`: the partitioner's baselines (all-CPU, all-CUDA,
  greedy) -- or why one is infeasible under the GPU memory cap.
* :func:`oracle_candidates`: the assignments the oracle check measures: the plans of
  every objective, the baselines, minimum cuts under rescaled GPU costs, every
  single move (a whole partition or a boundary kernel) from the chosen plan, then a
  seeded sample of random valid plans: a comparable set to the candidates the
  partitioner's search considers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import PlanError
from ..importer.summary import human_bytes
from .baselines import BASELINES
from .capacity import least_gpu, repair
from .evaluate import evaluate
from .mincut import Weights, solve_min_cut
from .objectives import OBJECTIVES
from .planning import make_plan
from .problem import Assignment, Problem, build_problem, other
from .search import moves
from .same_device import refuse_split, tie

GPU_COST_SCALES = (0.5, 0.75, 1.5, 2.0)
"""Min cuts under CUDA costs this many times the model's: plans a slightly wrong cost model would pick."""


def assignment_key(a: Assignment) -> tuple:
    """A hashable, order-free key: plans with equal keys compile to the same build."""
    return tuple(sorted(a.items()))


def build_key(plan) -> tuple:
    """Plans with equal keys compile to the same libraries: the same assignment, the
    same partitions (an overlapping plan may split one device's kernels into more
    partitions than the sequential plan of the same assignment) *and* the same number
    formats (``plan.precision``: a bf16 plan of one placement stores other weights)."""
    return assignment_key(plan.assignment), tuple(tuple(p.kernels) for p in plan.partitions), plan.precision


def plan_for_assignment(problem: Problem, a: Assignment, objective: str = "latency"):
    """The Plan of assignment ``a`` (predictions under ``objective``'s timeline).

    Raises PlanError when ``a`` breaks the problem's GPU memory cap or splits a state
    pair's writer and readers across devices (the runtime would refuse to bind it).
    """
    refuse_split(problem.same_device, a, "the assignment")
    if not evaluate(problem, a).fits:
        raise PlanError(infeasible_reason(problem, a))
    return make_plan(problem, OBJECTIVES[objective], a)


def infeasible_reason(problem: Problem, a: Assignment) -> str:
    need = evaluate(problem, a).memory.total
    return f"exceeds --gpu-memory: needs {human_bytes(need)} of GPU memory, cap {human_bytes(problem.gpu_memory)}"


@dataclass(frozen=True)
class Baseline:
    """A baseline assignment, or why it cannot run (``assignment`` is then None)."""

    name: str
    assignment: Assignment | None
    note: str = ""


def single_device_assignments(problem: Problem) -> list[Baseline]:
    """Every registered baseline of the partitioner, checked against the cap."""
    out = []
    for name, fn in BASELINES.items():
        a = fn(problem)
        held = _held_elsewhere(name, a)
        if evaluate(problem, a).fits:
            out.append(Baseline(name, a, held))
        else:
            out.append(Baseline(name, None, f"{_label(name)} infeasible: {infeasible_reason(problem, a)}"))
    return out


def _label(name: str) -> str:
    return {"all_cpu": "all-CPU", "all_cuda": "all-CUDA"}.get(name, name)


def _held_elsewhere(name: str, a: Assignment) -> str:
    device = {"all_cpu": "cpu", "all_cuda": "cuda"}.get(name)
    held = [k for k, d in a.items() if device and d != device]
    return f"{len(held)} kernel(s) held on the other device by pins or capability" if held else ""


# --- the oracle check --------------------------------------------------------------
def oracle_candidates(problem: Problem, chosen: list[Assignment], top: int, n_random: int,
                      seed: int = 0, pins=()) -> tuple[list[Assignment], list[Assignment]]:
    """(top candidates by predicted latency, random valid plans), distinct and under the cap.

    ``chosen`` (the plans the partitioner returned) always head the top list, so the
    check measures them even when the ranking would drop them.  ``pins`` are the
    pins ``problem`` was built with (re-applied to the rescaled cuts).
    """
    pool = [*chosen, *(b.assignment for b in single_device_assignments(problem) if b.assignment)]
    pool += _rescaled_cuts(problem, pins)
    if chosen:
        e = evaluate(problem, chosen[0])
        for kernels in moves(problem, e):
            b = dict(chosen[0])
            b.update({k: other(b[k]) for k in kernels})
            pool.append(b)
    feasible = _distinct([a for a in pool if evaluate(problem, a).fits])
    head = _distinct(chosen)
    rest = sorted((a for a in feasible if assignment_key(a) not in {assignment_key(c) for c in head}),
                  key=lambda a: evaluate(problem, a).sequential_s)
    ranked = (head + rest)[:max(top, len(head))]
    taken = {assignment_key(a) for a in ranked}
    randoms = [a for a in random_valid_assignments(problem, n_random * 4, seed) if assignment_key(a) not in taken]
    return ranked, _distinct(randoms)[:n_random]


def _rescaled_cuts(problem: Problem, pins) -> list[Assignment]:
    scaled = getattr(problem.costs, "scaled", None)
    if scaled is None:
        return []
    out = []
    for s in GPU_COST_SCALES:
        p = build_problem(problem.graph, scaled(gpu=s), pins, problem.gpu_memory, state=problem.state)
        out.append(solve_min_cut(p, Weights()))
    return out


def random_valid_assignments(problem: Problem, n: int, seed: int = 0) -> list[Assignment]:
    """``n`` seeded random assignments that honour pins, capabilities and the cap.

    Kernels are walked in topological order and the device flips with a small
    probability, so a random plan has a few partitions (as real plans do) instead of
    one per kernel; a state pair's kernels are tied (:func:`~.same_device.tie`); a plan over
    the cap is repaired by moving kernels to the CPU.  Empty when no assignment meets the cap.
    """
    if not evaluate(problem, least_gpu(problem)).fits:
        return []
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        flip = rng.choice((0.05, 0.1, 0.2))
        device = rng.choice(("cpu", "cuda"))
        a = {}
        for k in problem.order:
            if rng.random() < flip:
                device = other(device)
            allowed = problem.allowed[k]
            a[k] = device if device in allowed else allowed[0]
        out.append(repair(problem, tie(problem, a)))
    return out


def _distinct(assignments: list[Assignment]) -> list[Assignment]:
    seen, out = set(), []
    for a in assignments:
        key = assignment_key(a)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out
