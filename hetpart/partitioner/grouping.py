"""From a device per kernel to partitions: maximal connected same-device groups.

Invariants of :func:`group_kernels`' result: every kernel is in exactly one group;
a group's kernels share a device and are listed in topological order; the graph of
groups (an edge where a kernel of one feeds a kernel of another) is acyclic, and the
groups come in a topological order of it.

Connected same-device groups can depend on each other in a cycle (CPU group A feeds
CUDA group B, which feeds A again).  Groups on such a cycle are split by *switch
level* (the most device switches on any path from a graph input to the kernel);
levels never decrease along an edge and grow at every switch, so the split groups are
acyclic.  Then adjacent same-device groups are merged back wherever that closes no
cycle, so no group is split more than it must be.

Kernels whose weights are streamed (:mod:`.streaming`) are grouped apart from CUDA
kernels whose weights are resident (as if on a third device), and a streamed group is
cut, in topological order, into partitions whose weights fit one slot of the stream
ring (``slot_bytes``).  Cutting a group into runs of a topological order closes no
cycle: every edge between the runs points forward.  Kernels whose weights are mapped
(:data:`~.choice.MAPPED`) are grouped apart likewise (a partition's weights are all of one
kind), and never cut: they need no slot.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import networkx as nx

from .problem import Assignment, Problem


STREAM_LABEL = "cuda-streamed"
"""The grouping label of a CUDA kernel whose weights are streamed."""
MAPPED_LABEL = "cuda-mapped"
"""The grouping label of a CUDA kernel whose weights are mapped."""


@dataclass(frozen=True)
class Group:
    device: str
    kernels: tuple[str, ...]
    streamed: bool = False  # a CUDA group whose weights are streamed into the ring
    mapped: bool = False  # a CUDA group whose weights stay in pinned host memory, read in place


def group_kernels(problem: Problem, a: Assignment, by_level: bool = False, streamed=frozenset(),
                  slot_bytes: int = 0, parts: dict[str, int] | None = None, mapped=frozenset()) -> list[Group]:
    """The partitions of ``a`` (see module docstring for the invariants); the kernels in
    ``streamed`` (CUDA ones) form streamed groups of at most ``slot_bytes`` of weights.

    ``by_level`` makes more, smaller partitions so CPU and CUDA work can overlap (the
    makespan objective weighs this against overheads): groups are split by switch
    level, and a group also ends at each kernel that feeds the other device, so that
    copy can start before the rest of the group runs.  Nothing is merged back.

    ``parts``: :func:`group_parts` of the same ``a``, ``by_level`` and ``streamed``, computed
    once by a caller that lays one placement out at several slot sizes (they cut only the
    streamed parts; the same groups as without it).  ``mapped``: CUDA kernels whose weights
    are mapped, grouped apart (``Group.mapped``); pass the same to :func:`group_parts`.
    """
    labels = _labels(a, streamed, mapped)
    if parts is None:
        parts = group_parts(problem, a, by_level, streamed, mapped)
    groups = _ordered_groups(problem, labels, _fit_slots(problem, labels, parts, slot_bytes if streamed else 0))
    if streamed or mapped:
        return [Group("cuda", g.kernels, True) if g.device == STREAM_LABEL
                else Group("cuda", g.kernels, mapped=True) if g.device == MAPPED_LABEL else g for g in groups]
    return groups


def group_parts(problem: Problem, a: Assignment, by_level: bool = False, streamed=frozenset(),
                mapped=frozenset()) -> dict[str, int]:
    """Kernel -> part id of :func:`group_kernels` before streamed parts are cut to slots
    (independent of the slot size)."""
    return _parts(problem, _labels(a, streamed, mapped), by_level)


def _labels(a: Assignment, streamed, mapped=frozenset()) -> Assignment:
    if not streamed and not mapped:
        return a
    return {k: STREAM_LABEL if k in streamed else MAPPED_LABEL if k in mapped else d for k, d in a.items()}


def _parts(problem: Problem, a: Assignment, by_level: bool) -> dict[str, int]:
    if by_level:
        level = _switch_levels(problem, a)
        feeds = {u for u, v in problem.edges if a[u] != a[v]}
        part = _components(problem, a, lambda u, v: level[u] == level[v] and u not in feeds)
        if _has_cycle(problem, part):  # cutting at the feeders can close a cycle; levels alone cannot
            part = _components(problem, a, lambda u, v: level[u] == level[v])
        return part
    part = _components(problem, a)
    if _has_cycle(problem, part):
        level = _switch_levels(problem, a)
        cyclic = _cyclic_parts(problem, part)
        split = _components(problem, a, lambda u, v: part[u] not in cyclic or level[u] == level[v])
        part = _merge_back(problem, a, split)
    return part


def _fit_slots(problem: Problem, a: Assignment, part: dict[str, int], slot_bytes: int) -> dict[str, int]:
    """Streamed groups cut, in topological order, into runs whose weights fit ``slot_bytes``
    (a kernel larger than a slot alone in its run; the caller sizes slots to prevent it)."""
    kernels = problem.graph.kernels
    used: dict[int, tuple[int, int]] = {}  # group -> (current run id, its bytes)
    out = dict(part)
    for k in problem.order:
        if a[k] != STREAM_LABEL:
            continue
        w = kernels[k].param_bytes
        run, size = used.get(part[k], (part[k], 0))
        if size and size + w > slot_bytes:
            run, size = problem.step[k], 0
        used[part[k]] = (run, size + w)
        out[k] = run
    return out


def _components(problem: Problem, a: Assignment, joinable=None) -> dict[str, int]:
    """Union-find over same-device edges for which ``joinable(u, v)`` (None: every one);
    kernel -> root step (the least step of its component: the root kept is always the
    earlier one), on step indices."""
    parent = list(range(len(problem.order)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    step = problem.step
    for u, v in problem.edges:
        if a[u] == a[v] and (joinable is None or joinable(u, v)):
            ru, rv = find(step[u]), find(step[v])
            if ru < rv:
                parent[rv] = ru
            elif rv < ru:
                parent[ru] = rv
    return {k: find(i) for i, k in enumerate(problem.order)}


def _quotient(problem: Problem, part: dict[str, int]) -> nx.DiGraph:
    """:func:`_successors` as a networkx graph (what the cycle split and merge-back edit)."""
    succ = _successors(problem, part)
    q = nx.DiGraph()
    q.add_nodes_from(succ)
    q.add_edges_from((p, r) for p, rs in succ.items() for r in rs)
    return q


def _successors(problem: Problem, part: dict[str, int]) -> dict[int, set[int]]:
    """The quotient graph of :func:`_quotient` as plain sets (part -> parts it feeds): what
    the hot paths need, without building a networkx graph per layout."""
    succ: dict[int, set[int]] = {p: set() for p in part.values()}
    for u, v in problem.edges:
        pu, pv = part[u], part[v]
        if pu != pv:
            succ[pu].add(pv)
    return succ


def _topological_parts(succ: dict[int, set[int]]) -> list[int]:
    """The parts of ``succ`` (part -> parts it feeds) in Kahn's order, the smallest ready part
    first (a heap: the order pushed does not change the order popped); a part on or behind a
    cycle never becomes ready, so the list is shorter than ``succ`` exactly when there is one."""
    indeg = dict.fromkeys(succ, 0)
    for rs in succ.values():
        for r in rs:
            indeg[r] += 1
    ready = [p for p, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        p = heapq.heappop(ready)
        order.append(p)
        for r in succ[p]:
            indeg[r] -= 1
            if indeg[r] == 0:
                heapq.heappush(ready, r)
    return order


def _has_cycle(problem: Problem, part: dict[str, int]) -> bool:
    """Whether the quotient graph has a cycle (Kahn's algorithm leaves a part unvisited)."""
    succ = _successors(problem, part)
    return len(_topological_parts(succ)) < len(succ)


def _cyclic_parts(problem: Problem, part: dict[str, int]) -> set[int]:
    sccs = nx.strongly_connected_components(_quotient(problem, part))
    return {p for scc in sccs if len(scc) > 1 for p in scc}


def _switch_levels(problem: Problem, a: Assignment) -> dict[str, int]:
    level = {k: 0 for k in problem.order}
    for u, v in problem.edges:  # sorted by producer step: a topological sweep
        level[v] = max(level[v], level[u] + (a[u] != a[v]))
    return level


def _merge_back(problem: Problem, a: Assignment, part: dict[str, int]) -> dict[str, int]:
    """Merge same-device neighbour groups whenever no other path joins them."""
    q = _quotient(problem, part)
    device = {part[k]: a[k] for k in problem.order}
    merged = True
    while merged:
        merged = False
        for p, r in sorted(q.edges):
            if device[p] != device[r]:
                continue
            q.remove_edge(p, r)
            if nx.has_path(q, p, r):
                q.add_edge(p, r)
                continue
            keep, gone = min(p, r), max(p, r)
            nx.contracted_nodes(q, keep, gone, self_loops=False, copy=False)
            part = {k: keep if g == gone else g for k, g in part.items()}
            merged = True
            break
    return part


def _ordered_groups(problem: Problem, a: Assignment, part: dict[str, int]) -> list[Group]:
    """Groups in a topological order of their graph, earliest first kernel first."""
    members: dict[int, list[str]] = {}
    for k in problem.order:
        members.setdefault(part[k], []).append(k)
    return [Group(a[members[p][0]], tuple(members[p])) for p in _topological_parts(_successors(problem, part))]
