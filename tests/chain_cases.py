"""Chain graphs and table costs for the partitioner's overlap / wake tests and the cost model's
(``from chain_cases import ...``; no TVM):

* ``MiB``; ``LAYER``: one LLaMA-shaped decoder layer's kernels' weight bytes, in chain order;
* ``decode_chain(layers)`` / ``decode_costs(graph, wake_s)`` / ``half_cap(graph)``: a decode step as
  a chain of ``layers`` such layers; its table costs (an H200-like link and a CPU wake cost);
  half its weight bytes (a GPU memory cap);
* ``plan(graph, costs, cap, monkeypatch, seeds)``: the streaming partition at that cap (with
  ``monkeypatch``, the overlap seeds switched to ``seeds``);
* ``alternating_chain(n)``: a chain of ``n`` kernels alternately faster on the CPU and on CUDA,
  and its TableCosts.
"""

from __future__ import annotations

from hetpart.importer.op_graph import Kernel, OpGraph, Tensor
from hetpart.partitioner import TableCosts, overlap, partition

from streaming_plans import chain

US = 1e-6
MiB = 2**20
# one decoder layer as a chain: norm, q, k, v, attention (no weights), o, norm, gate, up, down
LAYER = [8192, 16 * MiB, 2 * MiB, 2 * MiB, 0, 16 * MiB, 8192, 44 * MiB, 44 * MiB, 44 * MiB]


def decode_chain(layers: int = 6) -> OpGraph:
    """A decode step as a chain of ``layers`` LLaMA-shaped layers (float32 weights, an
    8 KiB activation between kernels)."""
    return chain(LAYER * layers, act=2048, name="decode-chain", period=len(LAYER))


def decode_costs(graph: OpGraph, wake_s: float = 200e-6) -> TableCosts:
    """Table costs of ``graph``'s kernels: a fixed cost plus their weights read at 95.5 GB/s on the
    CPU, 3 TB/s on CUDA; a 55 GB/s link; partition overheads and a CPU wake of ``wake_s``."""
    seconds = {k.id: {"cpu": 3e-6 + k.param_bytes / 95.5e9, "cuda": 5e-6 + k.param_bytes / 3e12}
               for k in graph.nodes}
    return TableCosts(seconds, link_bytes_per_s=55e9, link_latency_s=5e-6,
                      overhead_s={"cpu": 2e-6, "cuda": 7e-6}, wake_s={"cpu": wake_s})


def half_cap(graph: OpGraph) -> int:
    """Half of ``graph``'s weight bytes (a GPU memory cap that makes it stream)."""
    return sum(k.param_bytes for k in graph.nodes) // 2


def plan(graph, costs, cap, monkeypatch=None, seeds: bool = True):
    """``graph`` partitioned with streamed weights under ``cap`` bytes of GPU memory; with
    ``monkeypatch``, ``overlap.OVERLAP_SEEDS`` set to ``seeds`` first."""
    if monkeypatch is not None:
        monkeypatch.setattr(overlap, "OVERLAP_SEEDS", seeds)
    return partition(graph, cost_model=costs, gpu_memory=cap, progress=False, stream_weights=True)


def alternating_chain(n: int = 8) -> tuple[OpGraph, TableCosts]:
    """x -> node_0 -> ... -> node_{n-1} -> out; even kernels 100 us on the CPU and 150 on
    CUDA, odd ones the other way round; tensors of 1000 floats (a copy ~10 us)."""
    ids = [f"node_{i}" for i in range(n)]
    names = ["x"] + [f"t_{k}" for k in ids[:-1]] + ["out"]
    tensors = {t: Tensor(t, (1000,), "float32", None if i == 0 else ids[i - 1],
                         (ids[i],) if i < n else (), i == 0, i == n)
               for i, t in enumerate(names)}
    kernels = {k: Kernel(k, f"fused_{k}", ("add",), "injective", (names[i],), (names[i + 1],), 0, 0, 0, 0,
                         f"sig_{k}", i) for i, k in enumerate(ids)}
    graph = OpGraph("alternating", kernels, tensors, ("x",), ("out",))
    seconds = {k: ({"cpu": 100 * US, "cuda": 150 * US} if i % 2 == 0 else {"cpu": 150 * US, "cuda": 100 * US})
               for i, k in enumerate(ids)}
    return graph, TableCosts(seconds)
