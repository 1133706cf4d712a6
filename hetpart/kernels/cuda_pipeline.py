"""The TIR pipeline hetpart compiles CUDA kernels with: TVM's default one, with every
warp-scope buffer lowered to registers.

TVM 0.27's ``LowerWarpMemory`` lowers only the *first* warp-scope allocation of a
statement sequence: it hands the rest of the sequence to the rewriter of that one
buffer and stops looking.  A tensor-core kernel holds three warp buffers (the A and
B operand registers and the accumulators), allocated side by side, so two of them
stayed 32 times too large in local memory.  This pipeline is TVM's (``"s_tir"``)
with that pass repeated until no warp buffer is left.

Keeps: every pass of the default pipeline, in order.  Changes: only warp-scope
allocations the default pipeline would have left unlowered.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from .analysis import contains

NAME = "hetpart_cuda"
"""Name under which the pipeline is registered (``tvm.compile(..., tir_pipeline=NAME)``)."""

MAX_ROUNDS = 16
"""Lowering rounds at most (one per warp buffer in a sequence; kernels hold 1-3)."""


def _has_warp_alloc(func) -> bool:
    return contains(func.body, tirx.AllocBuffer, lambda node: node.buffer.scope() == "warp")


def has_warp_buffers(mod: tvm.IRModule) -> bool:
    """True when a scheduled PrimFunc of ``mod`` stages data in warp-scope buffers (the
    tensor-core rule's operand and accumulator registers): the modules built with
    this pipeline; every other module keeps TVM's default one."""
    return any(isinstance(func, tirx.PrimFunc)
               and contains(func.body, s_tir.SBlock, lambda b: any(buf.scope() == "warp" for buf in b.alloc_buffers))
               for _, func in mod.functions_items())


@tvm.transform.module_pass(opt_level=0, name="hetpart.LowerAllWarpMemory")
def lower_all_warp_memory(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """``LowerWarpMemory`` until no function of ``mod`` has a warp-scope allocation."""
    lower = tirx.transform.LowerWarpMemory()
    for _ in range(MAX_ROUNDS):
        if not any(isinstance(f, tirx.PrimFunc) and _has_warp_alloc(f) for _, f in mod.functions_items()):
            break
        mod = lower(mod)
    return mod


def _pipeline():
    pipeline, finalize_host, _ = tvm.tirx.get_tir_pipeline("s_tir")

    def finalize_device():
        return tvm.transform.Sequential(
            [lower_all_warp_memory, tirx.transform.StmtSimplify(), tirx.transform.LowerIntrin()]
        )

    return pipeline, finalize_host, finalize_device


def register() -> str:
    """Register the pipeline with TVM (idempotent); returns :data:`NAME`."""
    tvm.tirx.compilation_pipeline.register_tir_pipeline(NAME, _pipeline)
    return NAME
