"""Plans with streamed weights, made by hand for the runtime's and compiler's tests.

The partitioner decides residency itself (issue 19's placement); these tests need
plans they control: partitions on given devices, and the CUDA partitions' weights
marked ``"streamed"`` into a ring of ``slots`` slots.
"""

from __future__ import annotations

from hetpart.partitioner import Partition, Plan


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
