"""HEFT list scheduling at kernel granularity: a starting point for the makespan search.

Kernels are taken in order of upward rank (mean cost over their devices plus the
longest mean-cost path below them) and each goes to the device where it would
*finish* earliest, counting the copies its inputs need (one copy engine per
direction, taken in order).  Partition overheads are ignored here; the search that
follows evaluates the real partitions.  Kernels that must share a device (a state pair's,
:mod:`.same_device`) are placed one by one here and tied at the end (:func:`~.same_device.tie`).
"""

from __future__ import annotations

from .problem import HOST, Assignment, Problem, other
from .same_device import tie


def heft(problem: Problem) -> Assignment:
    """A kernel-to-device assignment built by earliest-finish-time list scheduling (state
    pairs' groups tied)."""
    rank = _upward_rank(problem)
    order = sorted(problem.order, key=lambda k: (-rank[k], problem.step[k]))
    device_free = {"cpu": 0.0, "cuda": 0.0}
    link_free = {"cpu": 0.0, "cuda": 0.0}  # keyed by destination device
    ready: dict[tuple[int, str], float] = {}  # (flow, device) -> when it is there
    for i, f in enumerate(problem.flows):
        if f.home is not None:  # state: on its writer's device, not placed yet; a seed only
            ready[(i, "cpu")] = ready[(i, "cuda")] = 0.0
        elif f.producer is None:
            ready[(i, HOST)] = 0.0
    a: Assignment = {}
    for k in order:
        options = [(_finish(problem, k, d, device_free, link_free, ready)[0], problem.step[k], d)
                   for d in problem.allowed[k]]
        _, _, d = min(options)
        end, copies = _finish(problem, k, d, device_free, link_free, ready)
        for i, arrival in copies.items():
            ready[(i, d)] = arrival
            link_free[d] = max(link_free[d], arrival)
        device_free[d] = end
        a[k] = d
        for i in problem.writes[k]:
            ready[(i, d)] = end
    return tie(problem, a)


def _finish(problem, k, d, device_free, link_free, ready) -> tuple[float, dict[int, float]]:
    """When ``k`` would finish on ``d``, and the copies it would need (flow -> arrival)."""
    link = link_free[d]
    copies = {}
    start = device_free[d]
    for i in problem.reads[k]:
        if (i, d) in ready:
            start = max(start, ready[(i, d)])
            continue
        src_ready = ready[(i, other(d))]
        link = max(link, src_ready) + problem.flows[i].copy_s[d]
        copies[i] = link
        start = max(start, link)
    return start + problem.seconds[k][d], copies


def _upward_rank(problem: Problem) -> dict[str, float]:
    mean = {k: sum(s.values()) / len(s) for k, s in problem.seconds.items()}
    rank = dict(mean)
    for k in reversed(problem.order):
        for i in problem.writes[k]:
            f = problem.flows[i]
            copy = sum(f.copy_s.values()) / 2
            for c in f.consumers:
                rank[k] = max(rank[k], mean[k] + copy + rank[c])
    return rank
