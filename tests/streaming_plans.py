"""Plans with streamed weights, made by hand for the runtime's and compiler's tests, and the
chain graphs the partitioner's streaming tests place.

The partitioner decides residency itself (issue 19's placement); these tests need
plans they control: partitions on given devices, and the CUDA partitions' weights
marked ``"streamed"`` into a ring of ``slots`` slots.
"""

from __future__ import annotations

from hetpart.importer.op_graph import Kernel, OpGraph, Tensor
from hetpart.partitioner import Partition, Plan


def chain(params: list[int], act: int = 1000, name: str = "chain", period: int | None = None) -> OpGraph:
    """Kernels node_0 -> node_1 -> ... each a matmul with ``params[i]`` bytes of weights; float32
    activations of ``act`` elements; input x, output the last tensor.  Kernel ``i``'s signature
    is ``sig{i}``, or ``sig{i % period}`` (kernels ``period`` apart the same kernel: layers)."""
    tensors = {"x": Tensor("x", (act,), "float32", None, ("node_0",), True, False)}
    kernels = {}
    for i, w in enumerate(params):
        k, out = f"node_{i}", f"t{i}"
        last = i == len(params) - 1
        tensors[out] = Tensor(out, (act,), "float32", k, () if last else (f"node_{i + 1}",), False, last)
        kernels[k] = Kernel(k, f"fused_{k}", ("matmul",), "matmul", ("x" if i == 0 else f"t{i - 1}",), (out,),
                            0, 0, 0, w, f"sig{i % period if period else i}", i)
    return OpGraph(name, kernels, tensors, ("x",), (f"t{len(params) - 1}",))


def plan_with_devices(graph, devices: list[str], *, streamed: bool, slots: int = 2, name: str = "streaming"):
    """A Plan of ``graph`` cut into ``len(devices)`` partitions of consecutive kernels
    (topological order, as even as can be; one per kernel when there are as many
    devices as kernels), partition ``i`` on ``devices[i]``; with ``streamed`` every
    CUDA partition's weights are streamed through ``slots`` ring slots sized to the
    largest of them."""
    order = graph.topological_order()
    n, k = len(order), len(devices)
    assert 1 <= k <= n, f"{n} kernels cannot make {k} partitions"
    parts = []
    for i, device in enumerate(devices):
        kernels = order[i * n // k:(i + 1) * n // k]
        p = Partition(f"p{i}_{device}", device, kernels,
                      weight_bytes=sum(graph.kernels[kid].param_bytes for kid in kernels))
        if streamed and device == "cuda":
            p.weights = "streamed"
        parts.append(p)
    biggest = max((p.weight_bytes for p in parts if p.weights == "streamed"), default=0)
    return Plan(model=graph.name, objective=name,
                assignment={kid: p.device for p in parts for kid in p.kernels}, partitions=parts,
                cuts=[], timeline=[], predicted={}, profile_origin="test", graph=graph,
                stream_slots=slots if streamed else 0, stream_slot_bytes=biggest if streamed else 0)
