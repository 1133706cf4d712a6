"""The placements a plan is compared against, computed for every plan.

* ``all_cpu`` / ``all_cuda``: every kernel on one device, except kernels a pin or a
  missing capability holds on the other;
* ``greedy``: each kernel on its faster device, ignoring transfers (what
  capability-based partitioners do); a state pair's kernels (:mod:`.same_device`) then
  go together to the device where they cost less.

Baselines honour pins and capabilities like the plan does; one that breaks the
GPU memory cap is reported infeasible, with the reason.  To add a baseline, write
``fn(problem) -> assignment`` and decorate it with :func:`baseline`.
"""

from __future__ import annotations

from typing import Callable

from .problem import Assignment, Problem
from .same_device import tie

BASELINES: dict[str, Callable[[Problem], Assignment]] = {}


def baseline(name: str):
    def deco(fn):
        BASELINES[name] = fn
        return fn

    return deco


def _everything_on(problem: Problem, device: str) -> Assignment:
    return {k: device if device in problem.allowed[k] else problem.allowed[k][0] for k in problem.order}


@baseline("all_cpu")
def all_cpu(problem: Problem) -> Assignment:
    return _everything_on(problem, "cpu")


@baseline("all_cuda")
def all_cuda(problem: Problem) -> Assignment:
    return _everything_on(problem, "cuda")


@baseline("greedy")
def greedy(problem: Problem) -> Assignment:
    return tie(problem, {k: min(problem.allowed[k], key=lambda d: problem.seconds[k][d]) for k in problem.order})
