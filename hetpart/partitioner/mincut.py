"""Exact two-device assignment as a minimum s-t cut (Stone's two-processor problem).

The flow network has a CPU terminal ``s`` and a CUDA terminal ``t``; a kernel left on
the ``s`` side of the cut runs on the CPU.  Cutting ``s -> k`` costs k's CUDA time,
cutting ``k -> t`` its CPU time, so every kernel pays for the device it lands on.

Transfers are hyperedges (a tensor read on the other device is copied once, however
many kernels read it there), each built from one auxiliary node per direction:

* copy to CUDA of tensor x made by p: ``p -> w`` (copy cost), ``w -> c`` (infinite)
  for every reader c.  If p is on the CPU and any reader on CUDA, w must sit on the
  CUDA side and ``p -> w`` is cut exactly once;
* copy to the CPU: ``c -> w'`` (infinite) for every reader, and ``s -> w'`` if x is a
  model output, ``w' -> p`` (copy cost).

Model inputs are made by ``s`` (they start in host memory); an input bound as state
by the kernel writing its paired output (``Flow.origin``).  Kernels that must share a
device (a state pair's writer and readers, :mod:`.same_device`) are joined by infinite
edges both ways, so no finite cut separates them.  Capacities are scaled to
integers (picoseconds) so networkx's flow algorithms are exact.  The cut value equals
:meth:`Problem.linear_cost` of the assignment it returns, under ``Weights``.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .problem import Assignment, Problem

PICO = 1e12
SOURCE, SINK = "__cpu__", "__cuda__"


@dataclass(frozen=True)
class Weights:
    """Multipliers on the cut's terms: minimise ``cpu*CPU time + cuda*CUDA time +
    link*transfer time + memory_penalty * (bytes charged to the GPU)``.

    ``memory_penalty`` (seconds per byte) is the Lagrange multiplier of the GPU
    memory cap; each CUDA kernel is charged its parameters plus its outputs.
    """

    cpu: float = 1.0
    cuda: float = 1.0
    link: float = 1.0
    memory_penalty: float = 0.0


def solve_min_cut(problem: Problem, weights: Weights = Weights()) -> Assignment:
    """The assignment minimising the weighted cost; pins and capabilities hold."""
    g = _network(problem, weights)
    _, (cpu_side, _) = nx.minimum_cut(g, SOURCE, SINK, flow_func=nx.algorithms.flow.boykov_kolmogorov)
    return {k: ("cpu" if k in cpu_side else "cuda") for k in problem.order}


def gpu_charge(problem: Problem, k: str) -> int:
    """Bytes the Lagrangian charges kernel ``k`` for sitting on the GPU."""
    kernel = problem.graph.kernels[k]
    return kernel.param_bytes + sum(problem.flows[i].nbytes for i in problem.writes[k])


def _cap(x: float) -> int:
    return int(round(x * PICO))


def _network(problem: Problem, w: Weights) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from((SOURCE, SINK))
    for k in problem.order:
        g.add_node(k)
        sec = problem.seconds[k]
        if "cuda" in sec:  # no capacity attribute = infinite: the kernel cannot leave the CPU
            penalty = w.memory_penalty * gpu_charge(problem, k) if w.memory_penalty else 0.0
            g.add_edge(SOURCE, k, capacity=_cap(w.cuda * sec["cuda"] + penalty))
        else:
            g.add_edge(SOURCE, k)
        if "cpu" in sec:
            g.add_edge(k, SINK, capacity=_cap(w.cpu * sec["cpu"]))
        else:
            g.add_edge(k, SINK)
    for i, f in enumerate(problem.flows):
        src = SOURCE if f.origin is None else f.origin
        to_cuda, to_cpu = ("h2d", i), ("d2h", i)
        if f.consumers:
            g.add_edge(src, to_cuda, capacity=_cap(w.link * f.copy_s["cuda"]))
            g.add_edges_from((to_cuda, c) for c in f.consumers)
        if f.origin is not None and (f.consumers or f.is_output):
            g.add_edges_from((c, to_cpu) for c in f.consumers)
            if f.is_output:
                g.add_edge(SOURCE, to_cpu)
            g.add_edge(to_cpu, f.origin, capacity=_cap(w.link * f.copy_s["cpu"]))
    for group in problem.same_device:  # no capacity attribute = infinite: one side for all
        first = group.kernels[0]
        for k in group.kernels[1:]:
            g.add_edge(first, k)
            g.add_edge(k, first)
    return g
