"""zoo:moe:small with its expert Gather fused (``importer.expert_matmul.FUSE_EXPERT_GATHER``),
the model of the fused-expert placement tests (``from moe_cases import ...``:
test_capped_fused_expert, test_runtime_mapped_weights):

* ``fused_moe()``: the model at one token and its graph imported with the switch on;
* ``fused_experts(graph)``: the fused expert kernels' ids (2 layers x 3 projections);
* ``TABLE``: the bytes of one fused projection's expert table.
"""

from __future__ import annotations

from hetpart import importer, models
from hetpart.bench.switches import switched
from hetpart.importer.expert_matmul import OP

SWITCH = "hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER=1"
TABLE = 8 * 32 * 48 * 4  # zoo:moe:small: 8 experts of [hidden 32, 48] float32


def fused_moe():
    """Output: ``(model, graph)``: zoo:moe:small at one token (top-2 of 8: a step reads a quarter
    of each table) and its import with the expert Gather fused."""
    model = models.build("moe", small=True, seq_len=1)
    with switched([SWITCH]):
        graph = importer.load(model)
    return model, graph


def fused_experts(graph) -> list[str]:
    """Input: a graph of :func:`fused_moe`.  Output: the ids of its kernels that run the fused
    expert op, in the graph's order (the callers check how many)."""
    return [k for k, kern in graph.kernels.items() if OP in kern.func]
