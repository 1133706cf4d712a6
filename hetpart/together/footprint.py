"""What one model's session will hold on the GPU: the quota a plan needs.

The partitioner's memory model (:mod:`hetpart.partitioner.gpu_memory`) counts the
activations' *peak*: tensors that are never live together share bytes.  The runtime
does not reuse across tensors: a session allocates, once, per slot (``slots`` runs
in flight), a device buffer for every tensor a CUDA partition reads or writes across
its boundary, each 64-byte aligned, carved from the model's quota arena
(:mod:`hetpart.runtime.pool`), beside what TVM's VMs hold (resident weights and the
tensors made and read inside one CUDA partition, :func:`~hetpart.runtime.pool.tvm_bytes`)
and the ring of streamed weights.  So the quota a plan needs is the larger of the two::

    need = max(plan's predicted GPU memory,
               tvm_bytes + ring + slots * sum(align64(boundary tensor of a CUDA partition)))

The second term is an upper bound on what the model allocates (a tensor handed over
as mapped pinned memory takes none; TVM may reuse intermediates; tensors of
data-dependent shape are sized per run and not counted).
"""

from __future__ import annotations

from ..runtime.memory import ALIGNMENT
from ..runtime.pool import tvm_bytes

DEFAULT_SLOTS = 2
"""The session's default ``slots`` (:class:`hetpart.runtime.Session`)."""


def _aligned(n: int) -> int:
    return -(-max(n, 1) // ALIGNMENT) * ALIGNMENT


def session_bytes(plan, slots: int = DEFAULT_SLOTS) -> int:
    """The second term of the module docstring for ``plan`` (which carries its graph)."""
    graph = plan.graph
    cuda = [p for p in plan.partitions if p.device == "cuda"]
    if not cuda:
        return 0
    boundary = {t for p in cuda for t in (*p.inputs, *p.outputs)}
    buffers = sum(_aligned(graph.tensors[t].nbytes) for t in boundary)
    ring = plan.stream_slots * _aligned(plan.stream_slot_bytes) if plan.stream_slots else 0
    return tvm_bytes(plan) + ring + slots * buffers


def quota_need(plan, slots: int = DEFAULT_SLOTS) -> int:
    """The GPU memory quota ``plan`` needs (the module docstring's ``need``)."""
    return max(int(plan.predicted["gpu_memory_bytes"]), session_bytes(plan, slots))
