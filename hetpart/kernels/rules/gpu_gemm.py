"""The normal form every GPU GEMM rule starts from: ``C[b, I, J] += A[b, I, K] * B[b, J, K]``.

In: a fused PrimFunc.  Out (:func:`as_normal_gemm`): a schedule of it in which the
multiply-accumulate block is that contraction -- a matmul's operands (any order of
their dims, a transposed B) through ``reindex`` copies, a regular convolution's
windowed operand first ``reindex``-ed into a buffer indexed by the conv block's own
iterators with the padding inlined into that copy (:func:`~.gpu_conv2d.reindex_window`)
-- and its static extents ``(batch, M, N, K)``; None for anything else (dynamic
shapes, non-float32, depthwise or grouped convolutions).  The split-K and the
tensor-core rules tile that block their own ways; both stage operand slices in shared
memory through :func:`inline_producers`, so no im2col matrix is ever stored.

Invariant: only copies and layouts change; the block computes the same sums.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from tvm import s_tir, tirx
from tvm.s_tir.dlight.gpu.matmul import get_index_map

from ..analysis import MacBlock, schedule_mac
from ..register_tile import LAYOUT_REWRITE_PREPROC
from .gpu_conv2d import reindex_window


class NormalGemm(NamedTuple):
    """A function scheduled into normal form: ``sch`` and its MAC ``block``; ``plain``:
    a matmul (no windowed operand); ``shape``: the static ``(batch, M, N, K)``;
    ``k_run``: how many consecutive K share one window offset (a convolution's
    channel count with K ordered ``(ky, kx, channel)``; K itself otherwise)."""

    sch: s_tir.Schedule
    block: object
    plain: bool
    shape: tuple[int, int, int, int]
    k_run: int


def as_normal_gemm(func: tirx.PrimFunc, *, plain: bool = True, channels_last: bool = False) -> NormalGemm | None:
    """``func`` in normal form (see the module docstring), or None.  ``plain=False``
    declines plain contractions (matmuls), keeping convolutions only;
    ``channels_last`` orders a convolution's K as ``(ky, kx, channel)``
    (:func:`_channels_last`) rather than the input's order."""
    found = schedule_mac(func)
    if found is None or not _all_float32(*found):
        return None
    sch, mac = found
    is_plain = mac.is_plain(0) and mac.is_plain(1)
    if is_plain and not plain:
        return None
    if not is_plain and not reindex_window(sch, mac):
        return None
    channels = _channels_last(sch, mac) if not is_plain and channels_last else None
    shape = _normalise(sch, mac.block)
    if shape is None:
        return None
    return NormalGemm(sch, mac.block, is_plain, shape, channels or shape[3])


def _channels_last(sch: s_tir.Schedule, mac: MacBlock) -> int | None:
    """Order a convolution's reduction iterators window first, channels last, so that
    K = (ky, kx, ic): a K slice of whole channels has one window offset, so its bounds
    test and address are one add per row instead of a division of K per element.
    The channel iterators are those indexing a dim of the windowed operand alone.
    Returns their extents' product (the channels per window offset), None if unknown."""
    win = 0 if not mac.is_plain(0) else 1
    block = sch.get(mac.block)
    ivs = [iv.var for iv in block.iter_vars]
    channel = [v for v in mac.reduce if mac.plain_dim(win, v) is not None]
    window = [v for v in mac.reduce if mac.plain_dim(win, v) is None]
    extents = [iv.dom.extent for iv in block.iter_vars for v in channel if iv.var.same_as(v)]
    count = math.prod(int(e) for e in extents) if all(isinstance(e, tirx.IntImm) for e in extents) else None
    order = list(mac.spatial) + window + channel
    if len(order) != len(ivs) or all(a.same_as(b) for a, b in zip(order, ivs)):
        return count
    position = [next(i for i, v in enumerate(ivs) if v.same_as(o)) for o in order]
    index_map = tirx.IndexMap.from_func(lambda *vs: [vs[p] for p in position], ndim=len(ivs),
                                        index_dtype=str(block.iter_vars[0].dom.extent.ty))
    sch.transform_block_layout(mac.block, index_map)
    return count


def _all_float32(sch: s_tir.Schedule, mac: MacBlock) -> bool:
    """float32 operands and accumulator: fp16/int8 GEMMs belong to dlight's tensor-core
    rules, which hetpart's GEMM rules must not pre-empt."""
    return all(str(buf.dtype) == "float32" for buf in (mac.out, mac.operands[0][0], mac.operands[1][0]))


def _normalise(sch: s_tir.Schedule, main) -> tuple[int, int, int, int] | None:
    """Rewrite ``main`` (the MAC block) to ``C[b, I, J] += A[b, I, K] * B[b, J, K]``
    through reindex copies (later inlined), with dlight's own analysis of which
    iterator is which.  Returns the static extents (batch, M, N, K), or None when the
    block is not a GEMM in that sense."""
    if get_index_map(sch.get(main)) is None:
        return None
    copies = [sch.reindex(main, ("read", 0)), sch.reindex(main, ("read", 1)), sch.reindex(main, ("write", 0))]
    maps = get_index_map(sch.get(main))
    if maps is None:
        return None
    block_map, a_map, b_map, c_map = maps
    sch.transform_layout(copies[0], ("write", 0), a_map)
    sch.transform_layout(copies[1], ("write", 0), b_map)
    sch.transform_layout(copies[2], ("read", 0), c_map)
    sch.transform_block_layout(main, block_map)
    extents = [iv.dom.extent for iv in sch.get(main).iter_vars]
    if len(extents) != 4 or not all(isinstance(e, tirx.IntImm) for e in extents):
        return None
    return tuple(int(e) for e in extents)


def inline_producers(sch: s_tir.Schedule, block) -> None:
    """Inline every producer chain of ``block`` (reindex copies, tile padding, conv
    padding) into it, so it loads straight from the function's inputs and no im2col
    matrix is ever stored."""
    todo = list(sch.get_producers(block))
    while todo:
        producer = todo.pop()
        if LAYOUT_REWRITE_PREPROC in sch.get(producer).annotations:
            continue  # a weight packed at compile time: read, not recomputed
        more = list(sch.get_producers(producer))
        sch.compute_inline(producer)
        todo.extend(more)
