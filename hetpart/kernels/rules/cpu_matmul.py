"""CPU rule for matmul, dense and batch_matmul kernels, with any fused element-wise
epilogue (bias add, relu, gelu, residual add).

Matches a function whose one reduction block is a *plain* contraction: every operand
index is a bare iterator (``A[b,i,k] * B[b,k,j]``, also ``B[b,j,k]`` as in Q @ K^T).
Schedules it with :func:`hetpart.kernels.register_tile.register_tile`: vectorise the
iterator only the right-hand operand uses (``j``), preferring one that already is that
operand's innermost dim; when it is not (``B[j,k]``), the operand is packed first.
A vector operand that is a model weight is preferred, and packed once, at compile
time (:mod:`hetpart.kernels.weight_prepack`) -- except where the other operand is
full SIMD width along the output's rows and the weight would need packing (a 1x1
NCHW convolution, :func:`_activation_rows`).
Where no dim is a whole number of vectors (attention scores over ViT's 197 tokens),
the vector dim is padded to whole vectors first (:func:`_pad_ragged_vector`) and the
epilogue computed with the copy-back, in the tile, over the unpadded domain.
Element-wise producers (a fused transpose or cast) are inlined into the loads.  A
float32 ``exp``/``sigmoid``/``tanh`` epilogue (SiLU after a 1x1 conv) is computed by
:func:`hetpart.kernels.fast_exp.replace_exp`: LLVM makes each a scalar libm call.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import block_infos, cpu_shape, find_mac, fuse_epilogue, is_cpu, is_layout_free, try_inline_spatial
from ..fast_exp import replace_exp
from ..register_tile import make_plan, register_tile, vec_candidates


class CpuMatmul(ScheduleRule):
    """Register-tiled, parallel, vectorised matmul (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        sch = s_tir.Schedule(replace_exp(func))  # exp/sigmoid epilogues as vector code
        try_inline_spatial(sch)
        infos = block_infos(sch)
        if infos is None:
            return None
        mac = find_mac(sch, infos)
        if mac is None:
            return None
        if not (mac.is_plain(0) and mac.is_plain(1)):
            return None  # a convolution window or a gather: not a matmul
        shape = cpu_shape(target)
        lanes = shape.lanes(str(mac.out.dtype))
        cands = vec_candidates(mac, lanes)
        padded = False
        if not cands or max(c.lanes for c in cands) * NARROW_VECTORS <= lanes:
            wide = _pad_ragged_vector(sch, mac, lanes, lambda b: is_layout_free(func, b))
            if wide is None and not cands:
                return None
        else:
            wide = None
        if wide is not None:
            mac, padded = wide, True
            # The epilogue joins the copy-back (same, unpadded, domain), not the tile.
            copy_back = sch.get_consumers(mac.block)
            if len(copy_back) == 1:
                fuse_epilogue(sch, copy_back[0])
            cands = vec_candidates(mac, lanes)
            if not cands:
                return None
        # Prefer vectors of a model weight (packed once at compile time into contiguous
        # panels, whatever its row stride), then a dim that needs no packing, then
        # full-width vectors, then the innermost iterator.
        def weight(c):
            return is_layout_free(func, mac.operands[c.operand][0])

        best = _activation_rows(mac, cands, weight, lanes) or max(
            cands, key=lambda c: (weight(c), c.last, c.lanes, mac.spatial.index(c.var)))
        prepack = weight(best)
        plan = make_plan(mac, best, shape, best.lanes, pack=not best.last, prepack=prepack)
        register_tile(sch, mac, plan, shape, epilogue=not padded)
        return sch


MIN_RAGGED_VECTORS = 2
"""Whole vectors a ragged dim must hold before it is padded to vectors (below that
the padding would be a third of the work or more)."""


NARROW_VECTORS = 4
"""A matmul whose widest vector dim holds only ``lanes / NARROW_VECTORS`` lanes (whisper's
attention scores over 1500 frames: 4 of 16) is padded to full vectors where it can
(:func:`_pad_ragged_vector`).  Half-width vectors are kept: on 56-wide rows neither
tile won clearly (:func:`_activation_rows`)."""


def _pad_ragged_vector(sch: s_tir.Schedule, mac, lanes: int, is_weight):
    """Where no dim is a whole number of vectors (ViT's attention scores
    ``[12,197,64] @ [12,64,197]``: 197 = 12 vectors and 5) or only narrow ones are
    (:data:`NARROW_VECTORS`), pad the iteration domain of the innermost-stored dim one
    operand alone uses up to whole ``lanes`` vectors (``pad_einsum``: that operand
    copied into a zero-padded buffer, the padded output copied back), and return the
    padded block's :class:`MacBlock`; None when no dim qualifies or the padding is
    refused.  Never a model weight's dim (``is_weight(buffer)``): its copy would be
    made on every call instead of packed once at compile time.

    A vector loop with a per-lane bound check instead is scalarised by TVM's
    VectorizeLoop: the attention-score kernel took 26 ms that way (the reduction
    rule's 10.6 ms before; ONNX Runtime 0.46 ms; 2 threads).  The padded copy is one
    pass over the operand (here 12 x 64 x 208 floats)."""
    best = None
    for var in mac.spatial:
        ext = mac.extents[var]
        users = [o for o in (0, 1) if mac.uses(o, var)]
        if ext % lanes == 0 or ext < MIN_RAGGED_VECTORS * lanes or len(users) != 1:
            continue
        dim = mac.plain_dim(users[0], var)
        if dim is None or is_weight(mac.operands[users[0]][0]):
            continue
        key = dim == len(mac.operands[users[0]][1]) - 1  # contiguous in its operand
        if best is None or key > best[0]:
            best = (key, var)
    if best is None:
        return None
    var = best[1]
    padding = [lanes if iv.var.same_as(var) else 1 for iv in sch.get(mac.block).iter_vars]
    try:
        sch.pad_einsum(mac.block, padding)
    except Exception:  # noqa: BLE001 - not an einsum TVM can pad: decline
        return None
    infos = block_infos(sch)
    return find_mac(sch, infos) if infos is not None else None


def _activation_rows(mac, cands, weight, lanes: int):
    """The candidate along the output's innermost dim of a non-weight operand where it
    is full SIMD width and the weight's own candidates all need packing (a 1x1 NCHW
    convolution ``W[oc, ic] @ X[ic, h*w]``, EfficientNet's pointwise convs), else None.

    Then the tile is ``oc`` rows of ``w`` vectors: the weight broadcast, the output
    written along its rows as the tile holds them.  The weight-vector tile
    (``w`` rows of ``oc`` vectors) writes back transposed, a gather per vector, which
    its epilogue repeats.  Measured (2-core EPYC, 2 threads, least of 300 calls):
    16->96 on 112x112 0.24 -> 0.10 ms, with a SiLU 1.0 -> 0.24 ms (ORT 0.16-0.29);
    at 56 wide (8 of 16 lanes) neither tile won clearly, so half-width vectors keep
    the weight tile."""
    if any(weight(c) and c.last for c in cands):
        return None
    inner = mac.out_indices[-1]
    for c in cands:
        if (not weight(c) and c.last and c.lanes == lanes and isinstance(inner, tirx.Var)
                and inner.same_as(c.var)):
            return c
    return None
