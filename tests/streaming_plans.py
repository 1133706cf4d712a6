"""Plans with streamed weights, made by hand for the runtime's and compiler's tests.

The partitioner decides residency itself (issue 19's placement); these tests need
plans they control: one partition per run of equal devices given per kernel, and
the CUDA partitions' weights marked ``"streamed"`` into a ring of ``slots`` slots.
"""

from __future__ import annotations

from hetpart.partitioner import Partition, Plan


def plan_with_devices(graph, devices: list[str], *, streamed: bool, slots: int = 2, name: str = "streaming"):
    """A Plan of ``graph``: kernel ``i`` (topological order) on ``devices[i]``, one
    partition per kernel; with ``streamed`` every CUDA partition's weights are
    streamed through ``slots`` ring slots sized to the largest of them."""
    order = graph.topological_order()
    assert len(order) == len(devices), f"{len(order)} kernels, {len(devices)} devices"
    parts = []
    for i, (kid, device) in enumerate(zip(order, devices)):
        p = Partition(f"p{i}_{device}", device, [kid], weight_bytes=graph.kernels[kid].param_bytes)
        if streamed and device == "cuda":
            p.weights = "streamed"
        parts.append(p)
    biggest = max((p.weight_bytes for p in parts if p.weights == "streamed"), default=0)
    return Plan(model=graph.name, objective=name, assignment=dict(zip(order, devices)), partitions=parts,
                cuts=[], timeline=[], predicted={}, profile_origin="test", graph=graph,
                stream_slots=slots if streamed else 0, stream_slot_bytes=biggest if streamed else 0)
