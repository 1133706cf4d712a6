"""Bounded, deterministic local search over assignments.

A *move* sends a set of kernels to the other device: a whole partition (so a small
partition can merge into its neighbours), or one kernel on a partition boundary.
:func:`improve` takes the first move that lowers ``key(evaluation)`` and starts
over, until no move helps or ``budget`` evaluations are spent.  Moves are tried in a
fixed order and nothing depends on the clock, so the same input gives the same plan.
Moves that break a pin or the GPU memory cap are never taken; a move takes the kernels
that must share a device with the ones it moves along (:meth:`~.problem.Problem.closure`).
"""

from __future__ import annotations

from typing import Iterator

from tqdm import tqdm

from .evaluate import Evaluation
from .problem import Assignment, Problem, other


def improve(problem: Problem, a: Assignment, objective, budget: int, progress: bool = False) -> Assignment:
    """Local optimum of ``objective.key`` (lower is better) reached from ``a`` within ``budget``
    evaluations (``objective.evaluate``)."""
    best = objective.evaluate(problem, a)
    best_key = objective.key(best)
    bar = tqdm(total=budget, desc=objective.name, disable=not progress or None, leave=False)
    spent, improved = 0, True
    while improved and spent < budget:
        improved = False
        for kernels in moves(problem, best):
            b = dict(best.placement)  # streamed weights stay streamed unless moved
            b.update({k: other(best.layout.assignment[k]) for k in kernels})
            e = objective.evaluate(problem, b)
            spent += 1
            bar.update(1)
            if e.fits and _better(objective.key(e), best_key):
                best, best_key, improved = e, objective.key(e), True
                break
            if spent >= budget:
                break
    bar.close()
    return dict(best.placement)


def moves(problem: Problem, e: Evaluation) -> Iterator[tuple[str, ...]]:
    """Whole partitions (smallest first), then boundary kernels, then the rest, in topological
    order; each with the kernels that must share its device (without state: as listed)."""
    a = e.layout.assignment
    groups = sorted(e.layout.groups, key=lambda g: (len(g.kernels), problem.step[g.kernels[0]]))
    for g in groups:
        movable = tuple(k for k in g.kernels if problem.movable(k, other(g.device)))
        if movable:
            yield problem.closure(movable)
    boundary = {k for u, v in problem.edges if a[u] != a[v] for k in (u, v)}
    inner = [k for k in problem.order if k not in boundary]
    for k in [k for k in problem.order if k in boundary] + inner:
        if problem.movable(k, other(a[k])):
            yield problem.closure((k,))


def _better(new: tuple, old: tuple) -> bool:
    """Lexicographically lower by more than rounding noise."""
    for x, y in zip(new, old):
        if x < y - 1e-12 * max(abs(y), 1e-9):
            return True
        if x > y + 1e-12 * max(abs(y), 1e-9):
            return False
    return False
