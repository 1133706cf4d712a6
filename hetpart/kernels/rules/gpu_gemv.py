"""dlight's GPU ``GEMV`` rule, refused where its stages would disagree on threads.

dlight's GEMV reduces in three stages: each thread accumulates a partial sum into
``local`` (per-thread) registers, a second and a third stage combine the partial sums
across threads.  The first stage walks the spatial axes in the order of the dominant
read (axes every buffer uses, the "batch" axes, first); the later two walk them in the
block's own order.  When those orders differ, ``threadIdx.y`` means a different output
in the first stage than in the others, and a thread reads registers it never wrote.
ONNX's decode-step ``CausalConvWithState`` (a depthwise conv1d over ``[N, C, W]`` whose
channel axis is the one every buffer uses) came out wrong in 6 of 8 outputs on the H200
(TVM 0.27).  The CPU cannot show it: there every "thread" shares one buffer.

This rule declines such functions, so the next rule (``LowBatchGEMV``, ``Reduction``, …)
schedules them; everything else is dlight's schedule under dlight's name (``GEMV``),
which profiles record.

It also declines, at batch 1 (:data:`UNIT_VECTOR_MAX_BATCH`), contractions whose
vector operand ends in a unit dimension (:func:`stages_vector_serially`) -- a 1x1
convolution of a 1x1 image, squeeze-excite's first FC reading the pooled
``[1, C, 1, 1]``: dlight stages that vector into shared memory along its last
dimension, so one thread of the block loads all C elements in a serial loop while
the others wait (EfficientNet-B0's 1152 -> 48 FC: 1153 serial loads per thread on 3
blocks; ``bench/results/gpu-b1-static.md``).  dlight's ``Reduction`` then gives each
output a block whose threads share the C terms.
"""

from __future__ import annotations

import tvm_ffi
from tvm import s_tir, sym, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.analysis.gemv import (collect_block_iter_vars_used_in_access_region, detect_dominant_read)
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial


UNIT_VECTOR_MAX_BATCH = 1
"""Largest leading extent at which :func:`stages_vector_serially` functions are declined:
batch 32's schedules stay as measured."""


class GEMV(dl.gpu.GEMV):
    """dlight's ``GEMV``; see the module docstring for what it declines."""

    def apply(self, func, target, tunable):
        if isinstance(func, tirx.PrimFunc) and (reorders_spatial_axes(func) or stages_vector_serially(func)):
            return None
        return super().apply(func, target, tunable)


def stages_vector_serially(func: tirx.PrimFunc) -> bool:
    """True for a function whose one reduction block has a leading extent of at most
    :data:`UNIT_VECTOR_MAX_BATCH` and reads a buffer of 2+ dims whose last dim is 1 at
    an index that moves with a reduction iterator in another dim (the ``[1, C, 1, 1]``
    vector of a 1x1 convolution of a 1x1 image): dlight's GEMV would load it into
    shared memory with one thread, serially (module docstring)."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [sch.get(b) for b in blocks
                  if any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return False
    block = reductions[0]
    ivs = block.iter_vars
    if not ivs or ivs[0].iter_type != tirx.IterVar.DataPar or not isinstance(ivs[0].dom.extent, tirx.IntImm):
        return False
    if int(ivs[0].dom.extent) > UNIT_VECTOR_MAX_BATCH:
        return False
    reduce_vars = [iv.var for iv in ivs if iv.iter_type == tirx.IterVar.CommReduce]
    for read in block.reads:
        shape = read.source.shape
        if len(shape) < 2 or not _is_one(shape[-1]):
            continue
        for rng in list(read.region)[:-1]:
            used = []
            tvm_ffi.structural_walk(rng.min, (tirx.Var, used.append), order="post")
            if any(u.same_as(r) for u in used for r in reduce_vars):
                return True
    return False


def reorders_spatial_axes(func: tirx.PrimFunc) -> bool:
    """True when dlight's GEMV would walk ``func``'s non-unit spatial axes out of order.

    Mirrors how dlight's ``normalize`` orders them (axes that every accessed buffer
    uses first, then the others, each group in the dominant read's order) and compares
    with the reduction block's own order.  False when dlight would not take ``func``.
    """
    sch = s_tir.Schedule(func)
    infos = try_inline_contiguous_spatial(sch, normalize_prim_func(sch))
    if not infos or not any(i.kind == "R" for i in infos[0].iters):
        return False
    block = sch.get(infos[0].block_rv)
    try:
        access = sym.normalize_to_iter_sum(detect_dominant_read(block),
                                       input_iters={v.var: v.dom for v in block.iter_vars})
    except Exception:  # noqa: BLE001 - dlight's own analysis declines these too
        return False
    kinds = {i.var: (i.kind, i.dom) for i in infos[0].iters}
    used = [collect_block_iter_vars_used_in_access_region(block, r.region) for r in (*block.writes, *block.reads)]
    spatial = [a.source.source for a in access.args if kinds.get(a.source.source, ("R",))[0] == "S"]
    dlight_order = [v for v in spatial if all(v in u for u in used)] + [v for v in spatial if not all(v in u for u in used)]
    own_order = [i.var for i in infos[0].iters if i.kind == "S"]

    def non_unit(order):
        return [v for v in order if not _is_one(kinds[v][1])]

    return non_unit(dlight_order) != [v for v in non_unit(own_order) if v in dlight_order]


def _is_one(extent) -> bool:
    return isinstance(extent, (int, tirx.IntImm)) and int(extent) == 1
