"""An assignment laid out as the runtime will run it: partitions and the copies between.

:func:`lay_out` groups kernels into partitions (:mod:`.grouping`) and lists every copy:
one per tensor whose readers (or, for a model output, the host) sit on the device
its producer does not.  A copy serves every partition on the destination device that
reads the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grouping import Group, group_kernels
from .problem import Assignment, Problem


@dataclass(frozen=True)
class Transfer:
    """One copy of ``problem.flows[flow]`` to ``device``.

    ``src`` is the index of the producing group (None: a model input, on the host);
    ``readers`` the indices of the groups on ``device`` that read it, in order
    (empty when only the model output needs it).
    """

    flow: int
    src: int | None
    device: str
    readers: tuple[int, ...]
    seconds: float


@dataclass(frozen=True)
class Layout:
    """Groups in topological order, their run time (kernels + partition overhead),
    the copies, and ``deps[i]``: the groups whose outputs group ``i`` reads directly
    (same device)."""

    assignment: dict[str, str]
    groups: list[Group]
    group_seconds: list[float]
    transfers: list[Transfer]
    deps: list[tuple[int, ...]]


def lay_out(problem: Problem, a: Assignment, by_level: bool = False) -> Layout:
    """Partitions (see :func:`group_kernels`) and copies of ``a``; ``a`` must respect pins (checked)."""
    problem.check(a)
    groups = group_kernels(problem, a, by_level)
    where = {k: i for i, g in enumerate(groups) for k in g.kernels}
    seconds = [problem.compute_s(a, g.kernels) + problem.overhead[g.device] for g in groups]
    transfers, deps = [], [set() for _ in groups]
    for fi, f in enumerate(problem.flows):
        src = None if f.producer is None else where[f.producer]
        for c in f.consumers:
            if src is not None and a[c] == a[f.producer] and where[c] != src:
                deps[where[c]].add(src)
        for device in problem.copies(f, a):
            readers = sorted({where[c] for c in f.consumers if a[c] == device})
            transfers.append(Transfer(fi, src, device, tuple(readers), f.copy_s[device]))
    return Layout(dict(a), groups, seconds, transfers, [tuple(sorted(d)) for d in deps])
