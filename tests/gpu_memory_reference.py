"""The GPU memory model of ``hetpart.partitioner.gpu_memory``, written again the slow,
obvious way (every tensor at every step) for the partitioner's tests to check against."""

from __future__ import annotations


def activation_peak(graph, devices) -> int:
    """Peak live GPU tensor bytes, step by step (the documented activation model)."""
    order = graph.topological_order()
    step = {k: i for i, k in enumerate(order)}
    peak = 0
    for i in range(len(order)):
        live = 0
        for t in graph.tensors.values():
            start = 0 if t.producer is None else step[t.producer]
            reads = [step[c] for c in t.consumers if devices[c] == "cuda"]
            end = max(reads) if reads else (start if t.producer and devices[t.producer] == "cuda" else -1)
            live += t.nbytes if start <= i <= end else 0
        peak = max(peak, live)
    return peak


def gpu_bytes(graph, a) -> int:
    """Parameters of CUDA kernels + peak of live GPU tensors (every weight resident)."""
    return sum(k.param_bytes for kid, k in graph.kernels.items() if a[kid] == "cuda") + activation_peak(graph, a)


def plan_gpu_bytes(graph, plan) -> int:
    """What ``plan`` keeps on the GPU: weights of resident CUDA partitions, the ring its
    streamed partitions' weights are copied into, and the activations' peak."""
    resident = sum(graph.kernels[k].param_bytes for p in plan.partitions
                   if p.device == "cuda" and p.weights == "resident" for k in p.kernels)
    return resident + plan.stream_slots * plan.stream_slot_bytes + activation_peak(graph, plan.assignment)
