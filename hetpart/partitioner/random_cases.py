"""Random op graphs with random costs: the test bench of the partitioner.

:func:`random_case` builds a valid :class:`~hetpart.importer.OpGraph` straight from
``Kernel``/``Tensor`` dataclasses (no TVM) and a :class:`TableCosts` for it.  Property
tests run the algorithms on hundreds of these; notebooks use them to show how a
plan reacts to a faster GPU or a slower link.  Costs are whole microseconds so the
exact (integer) minimum cut and a brute-force search agree to the last bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..importer.op_graph import Kernel, OpGraph, Tensor
from .costs import TableCosts

_OPS = (("conv2d", "add", "relu"), ("matmul", "add"), ("take",), ("softmax",), ("add",), ("layer_norm",))
_CLASSES = {"conv2d": "conv2d", "matmul": "matmul", "take": "gather", "softmax": "softmax",
            "add": "injective", "layer_norm": "norm"}


@dataclass(frozen=True)
class CaseShape:
    """Knobs of a random case."""

    kernels: int = 10
    max_fanout: int = 3
    max_elements: int = 1 << 20
    max_param_bytes: int = 1 << 24
    unsupported_share: float = 0.1
    overhead_s: float = 0.0


def random_case(seed: int, shape: CaseShape = CaseShape()) -> tuple[OpGraph, TableCosts]:
    """A random DAG of ``shape.kernels`` kernels and a cost table for it, from ``seed``."""
    rng = random.Random(seed)
    n = shape.kernels
    producers: list[tuple[str, str | None]] = [("x0", None)]
    reads: dict[str, list[str]] = {f"node_{i}": [] for i in range(n)}
    readers: dict[str, list[str]] = {"x0": []}
    outputs: dict[str, list[str]] = {}
    for i in range(n):
        kid = f"node_{i}"
        for tname, _ in rng.sample(producers, k=min(len(producers), rng.randint(1, shape.max_fanout))):
            reads[kid].append(tname)
            readers[tname].append(kid)
        outs = [f"t{i}_{j}" for j in range(rng.choice((1, 1, 1, 2)))]
        outputs[kid] = outs
        for t in outs:
            producers.append((t, kid))
            readers[t] = []
    sizes = {t: rng.randint(1, shape.max_elements) for t, _ in producers}
    tensors = {}
    for t, prod in producers:
        is_out = prod is not None and (not readers[t] or rng.random() < 0.1)
        tensors[t] = Tensor(t, (sizes[t],), "float32", prod, tuple(readers[t]), prod is None, is_out)
    kernels = {}
    for i in range(n):
        kid = f"node_{i}"
        ops = rng.choice(_OPS)
        kernels[kid] = Kernel(
            id=kid, func=f"fused_{'_'.join(ops)}_{i}", ops=ops, op_class=_CLASSES[ops[0]],
            inputs=tuple(reads[kid]), outputs=tuple(outputs[kid]), flops=rng.randint(0, 10**9),
            bytes_read=sum(4 * sizes[t] for t in reads[kid]),
            bytes_written=sum(4 * sizes[t] for t in outputs[kid]),
            param_bytes=rng.choice((0, rng.randint(1, shape.max_param_bytes))),
            signature=f"sig{i}", index=i)
    outs = tuple(t for t, v in tensors.items() if v.is_output)
    graph = OpGraph(f"random{seed}", kernels, tensors, ("x0",), outs)
    return graph, _random_costs(rng, kernels, shape)


def _random_costs(rng: random.Random, kernels, shape: CaseShape) -> TableCosts:
    seconds, unsupported = {}, {}
    for kid in kernels:
        seconds[kid] = {"cpu": rng.randint(1, 2000) * 1e-6, "cuda": rng.randint(1, 2000) * 1e-6}
        if rng.random() < shape.unsupported_share:
            device = rng.choice(("cpu", "cuda"))
            unsupported[(kid, device)] = f"synthetic: {kid} has no {device} kernel"
    return TableCosts(seconds, link_bytes_per_s=4e9, link_latency_s=10e-6,
                      overhead_s={"cpu": shape.overhead_s, "cuda": shape.overhead_s},
                      unsupported=unsupported)


@dataclass(frozen=True)
class Machine:
    """A roofline machine: peak FLOP/s and memory bandwidth per device, launch costs, link."""

    cpu_flops: float = 200e9
    cpu_bytes_per_s: float = 40e9
    cpu_launch_s: float = 2e-6
    gpu_flops: float = 20e12
    gpu_bytes_per_s: float = 1.5e12
    gpu_launch_s: float = 6e-6
    link_bytes_per_s: float = 12e9
    link_latency_s: float = 10e-6
    overhead_s: float = 0.0


def roofline_costs(graph: OpGraph, machine: Machine = Machine()) -> TableCosts:
    """Costs of every kernel of ``graph`` on a roofline ``machine``: launch + max(compute, memory).

    Not a measurement: a stand-in with the right shape (big GEMMs favour the GPU,
    tiny kernels the CPU) for tests and what-if questions without a profile.
    """
    seconds = {}
    for k in graph.kernels.values():
        moved = k.bytes_read + k.bytes_written + k.param_bytes
        seconds[k.id] = {
            "cpu": machine.cpu_launch_s + max(k.flops / machine.cpu_flops, moved / machine.cpu_bytes_per_s),
            "cuda": machine.gpu_launch_s + max(k.flops / machine.gpu_flops, moved / machine.gpu_bytes_per_s),
        }
    return TableCosts(seconds, machine.link_bytes_per_s, machine.link_latency_s,
                      {"cpu": machine.overhead_s, "cuda": machine.overhead_s},
                      origin="roofline estimate (no measurements)")
