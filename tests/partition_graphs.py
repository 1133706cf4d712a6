"""Small hand-built OpGraphs and table costs for the partitioner's unit tests (no TVM;
``from partition_graphs import ...``):

* ``US``: one microsecond in seconds;
* ``make_graph(spec, sizes, params, outputs, name)``: an OpGraph of ``spec[kernel] = (ops,
  input tensors)``, kernel i writing ``t_<kernel>`` (the last one "out"), "x" the model input;
* ``table(graph, cpu_us, cuda_us, **kw)``: TableCosts of per-kernel microseconds on each device;
* ``DIAMOND``: node_0 -> (node_1, node_2) -> node_3, a ``make_graph`` spec;
* ``mlp_favouring_gpu(graph)``: TableCosts where CUDA wins GEMMs and lookups and ties on glue;
* ``TOGETHER_SHAPE`` / ``models_of(seed, n)`` / ``plannable(graphs, costs)``: random tiny models
  and costs (hetpart.partitioner.random_cases) for planning several models together; whether
  every kernel of them runs somewhere.
"""

from __future__ import annotations

from hetpart.importer.op_graph import Kernel, OpGraph, Tensor
from hetpart.partitioner import TableCosts
from hetpart.partitioner.random_cases import CaseShape, random_case

US = 1e-6


def make_graph(spec: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], sizes=None, params=None,
               outputs=("out",), name="g") -> OpGraph:
    """``spec[kernel] = (ops, input tensors)``; kernel i writes tensor ``t_<kernel>``, the last one "out".

    Tensor "x" is the model input.  ``sizes`` gives element counts (float32), default 1000.
    """
    sizes, params = sizes or {}, params or {}
    ids = list(spec)
    out_of = {k: ("out" if k == ids[-1] else f"t_{k}") for k in ids}
    readers: dict[str, list[str]] = {"x": []}
    for k in ids:
        readers[out_of[k]] = []
    for k, (_, ins) in spec.items():
        for t in ins:
            readers[t].append(k)
    producer = {out_of[k]: k for k in ids}
    tensors = {t: Tensor(t, (sizes.get(t, 1000),), "float32", producer.get(t), tuple(r), t == "x", t in outputs)
               for t, r in readers.items()}
    kernels = {k: Kernel(k, f"fused_{k}", ops, "injective", tuple(ins), (out_of[k],), 0, 0, 0,
                         params.get(k, 0), f"sig_{k}", i)
               for i, (k, (ops, ins)) in enumerate(spec.items())}
    return OpGraph(name, kernels, tensors, ("x",), tuple(outputs))


def table(graph, cpu_us, cuda_us, **kw) -> TableCosts:
    """TableCosts of ``graph``'s kernels: ``cpu_us[k]`` / ``cuda_us[k]`` microseconds (``kw`` to TableCosts)."""
    return TableCosts({k: {"cpu": cpu_us[k] * US, "cuda": cuda_us[k] * US} for k in graph.kernels}, **kw)


DIAMOND = {"node_0": (("conv2d", "relu"), ("x",)), "node_1": (("take",), ("t_node_0",)),
           "node_2": (("matmul", "add"), ("t_node_0",)), "node_3": (("add",), ("t_node_1", "t_node_2"))}
"""A diamond: node_0 -> (node_1, node_2) -> node_3 (a :func:`make_graph` spec)."""


def mlp_favouring_gpu(graph):
    """Costs where CUDA wins GEMMs (10x) and lookups (2x) and ties on glue kernels."""
    us = {"matmul": (50, 5), "gather": (8, 4)}
    seconds = {k.id: dict(zip(("cpu", "cuda"), (s * 1e-6 for s in us.get(k.op_class, (3, 3)))))
               for k in graph.nodes}
    return TableCosts(seconds, link_bytes_per_s=12e9, link_latency_s=2e-6)


TOGETHER_SHAPE = CaseShape(kernels=5, max_elements=1 << 12, max_param_bytes=1 << 14, unsupported_share=0.15)
"""The random tiny models' shape for planning together (5 kernels, some unsupported on a device)."""


def models_of(seed: int, n: int):
    """``n`` random tiny models: ({name: graph}, {name: costs})."""
    cases = {f"m{i}": random_case(seed + 7919 * i, TOGETHER_SHAPE) for i in range(n)}
    return {k: g for k, (g, _) in cases.items()}, {k: c for k, (_, c) in cases.items()}


def plannable(graphs, costs) -> bool:
    """Whether every kernel of every graph is supported on the CPU or on CUDA by its costs."""
    for g, c in zip(graphs.values(), costs.values()):
        if any(not any(c.supports(k, d)[0] for d in ("cpu", "cuda")) for k in g.kernels.values()):
            return False
    return True
