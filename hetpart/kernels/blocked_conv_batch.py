"""The batch (``n > 1``) side of :mod:`.rules.cpu_blocked_conv`'s tile: where a batched channel-blocked
convolution's padding runs (per image, in groups of images, or the whole batch in one pass) and how its
tile loop spreads the batch over the cores (the block groups in parts outside the batch), plus the
padding pass's row schedule.

In: the schedule of a blocked conv's PrimFunc, its :class:`~.analysis.MacBlock`, its
:class:`~.blocked_conv_match.BlockedConv` / :class:`~.blocked_conv_match.BlockedPlan` and the
target's :class:`~.analysis.CpuShape`.  Out: decisions (:func:`pad_group_images`,
:func:`_per_image_padding`, :func:`pad_per_image_pays`, :func:`group_split`) and schedule steps on the
padding block (:func:`_pad_per_image`, :func:`padding_rows`) that
:func:`.rules.cpu_blocked_conv.blocked_tile` composes.

Invariant: every switch these read (``BATCH_PADDING_PER_IMAGE``, ``PLAIN_PADDING_PER_IMAGE``,
``BATCH_IMAGES_PARALLEL``, ``BATCH_PAD_SHARE_BY_CORES``, ``PAD_SHARE_BYTES``, ``PAD_SHARE_MIN_CORES``,
``BATCH_PAD_IMAGE_GROUPS``, ``BATCH_GROUP_SPLIT``, ``GROUP_SPLIT_*``, ``PADDING_ROWS``) lives in
:mod:`.rules.cpu_blocked_conv` only, where tools and tests set it, and is read from there at call time
(``cb.NAME``): this module holds no copy.  The steps only place, fuse, split and vectorise loops: the
padded values are unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tvm
from tvm import s_tir, tirx
from tvm.sym.analyzer import Analyzer

from .analysis import CpuShape, MacBlock, buffer_bytes, const_extent
from .blocked_conv_match import cb  # the switches' module, read at call time

if TYPE_CHECKING:
    from .blocked_conv_match import BlockedConv, BlockedPlan


def pad_group_images(sch: s_tir.Schedule, pad, shape: CpuShape, n: int) -> int:
    """Images a padding pass of a batch of ``n`` covers where :func:`_per_image_padding` gave ``pad``
    (:data:`BATCH_PAD_IMAGE_GROUPS`): the largest divisor ``k < n`` of ``n`` whose ``k`` padded images
    are :data:`PAD_SHARE_BYTES` or less a core of ``shape.cores``; 1 (per image) where none is over 1,
    the switch is off, the target has fewer than :data:`PAD_SHARE_MIN_CORES` cores or
    :data:`BATCH_IMAGES_PARALLEL` runs the images in parallel (``n >= shape.cores``)."""
    if not cb.BATCH_PAD_IMAGE_GROUPS or not cb.BATCH_PAD_SHARE_BY_CORES or shape.cores < cb.PAD_SHARE_MIN_CORES:
        return 1
    if cb.BATCH_IMAGES_PARALLEL and n >= shape.cores:
        return 1
    image = buffer_bytes(sch.get(pad).writes[0].source) / max(1, n)
    fits = [k for k in cb._divisors(n, n - 1) if k * image <= cb.PAD_SHARE_BYTES * shape.cores]
    return fits[-1] if fits else 1


def _per_image_padding(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedConv, shape: CpuShape):
    """The padding block :func:`blocked_tile` computes one image at a time
    (:data:`BATCH_PADDING_PER_IMAGE`, where :func:`pad_per_image_pays`), or None: no batch, no
    padding, or the whole batch padded in one pass (the tiles' loop then fused over the batch)."""
    pad = _padding_of(sch, mac, conv) if cb.BATCH_PADDING_PER_IMAGE and conv.n is not None else None
    return pad if pad is not None and pad_per_image_pays(sch, pad, shape) else None


def pad_per_image_pays(sch: s_tir.Schedule, pad, shape: CpuShape) -> bool:
    """Whether ``pad`` (the conv's padding block, :func:`_padding_of`) is computed per image
    under :data:`BATCH_PADDING_PER_IMAGE`: always where :data:`BATCH_PAD_SHARE_BY_CORES` is off,
    or on a target of fewer than :data:`PAD_SHARE_MIN_CORES` cores, else where its buffer's bytes
    / ``shape.cores`` exceed :data:`PAD_SHARE_BYTES`."""
    if not cb.BATCH_PAD_SHARE_BY_CORES or shape.cores < cb.PAD_SHARE_MIN_CORES:
        return True
    return buffer_bytes(sch.get(pad).writes[0].source) > cb.PAD_SHARE_BYTES * max(1, shape.cores)


def _thread_bytes(n: int, groups: int, tiles: int, group_bytes: float, image_bytes: float, cores: int,
                  parts: int, cache: int) -> float:
    """Modelled bytes read into the busiest core's L2 by the tile loop ``(parts, n, groups /
    parts, tiles)`` split into ``cores`` contiguous equal chunks (TVM's static schedule): each
    ``(image, group)`` unit it touches reads that group's weights and that image's data unless
    they are still in an LRU cache of ``cache`` bytes."""
    from collections import OrderedDict

    inner = groups // parts
    total = parts * n * inner * tiles
    chunk = -(-total // cores)
    worst = 0.0
    for t in range(cores):
        lo, hi = t * chunk, min(total, (t + 1) * chunk)
        if lo >= hi:
            continue
        lru: OrderedDict = OrderedDict()
        held = miss = 0.0
        for u in range(lo // tiles, (hi - 1) // tiles + 1):
            outer, rest = divmod(u, n * inner)
            image, g = divmod(rest, inner)
            for key, size in ((("w", outer * inner + g), group_bytes), (("d", image), image_bytes)):
                if key in lru:
                    lru.move_to_end(key)
                    continue
                miss += size
                lru[key] = size
                held += size
                while held > cache and len(lru) > 1:
                    held -= lru.popitem(last=False)[1]
        worst = max(worst, miss)
    return worst


def group_split(mac: MacBlock, conv: BlockedConv, plan: BlockedPlan, shape: CpuShape, tiles: int) -> int:
    """The block-group parts ``p`` of :data:`BATCH_GROUP_SPLIT` for ``conv``'s tile loop (``tiles``
    tiles an image and block group), 1 for the batch-outer loop: switch off, no batch or one
    image, no output-channel chunks, fewer than :data:`GROUP_SPLIT_MIN_CORES` target cores, a
    group's weights plus an image over :data:`GROUP_SPLIT_L2_BYTES`, or no divisor of the group
    count whose :func:`_thread_bytes` is :data:`GROUP_SPLIT_MAX_RATIO` of the batch-outer loop's
    or less (else the least such, the fewest parts among equals)."""
    if not cb.BATCH_GROUP_SPLIT or conv.n is None or conv.oc_chunk is None or shape.cores < cb.GROUP_SPLIT_MIN_CORES:
        return 1
    n = mac.extents[conv.n]
    groups = mac.extents[conv.oc_chunk] // plan.blocks
    if n < 2 or groups < 2 or tiles < 1:
        return 1
    group_bytes = buffer_bytes(mac.operands[1 - conv.data][0]) / groups
    image_bytes = buffer_bytes(mac.operands[conv.data][0]) / n
    if group_bytes + image_bytes > cb.GROUP_SPLIT_L2_BYTES:
        return 1
    cost = [(_thread_bytes(n, groups, tiles, group_bytes, image_bytes, shape.cores, p, cb.GROUP_SPLIT_L2_BYTES), p)
            for p in cb._divisors(groups, groups)]
    base = cost[0][0]
    best = min(cost)
    return best[1] if best[0] <= cb.GROUP_SPLIT_MAX_RATIO * base else 1


def _padding_of(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedConv):
    """The root block that writes the conv's data operand (its padding: 5 loops; or a plain
    ``NCHW`` image's, a 4-d buffer, with :data:`PLAIN_PADDING_PER_IMAGE`), or None."""
    buf = mac.operands[conv.data][0]
    plain = cb.PLAIN_PADDING_PER_IMAGE and len(buf.shape) == 4
    for blk in sch.get_producers(mac.block):
        b = sch.get(blk)
        if any(w.source.same_as(buf) for w in b.writes) and all(
                iv.iter_type == tirx.IterVar.DataPar for iv in b.iter_vars) and len(sch.get_loops(blk)) == (
                4 if plain else 5):
            return blk
    return None


def _pad_per_image(sch: s_tir.Schedule, pad, image, plan: BlockedPlan, parallel: bool, images: int = 1) -> None:
    """``pad`` computed under the batch loop ``image``: its channel-chunk and row loops fused
    (parallel where the tile is), its channel block (the input's: 8 or 16) vectorised.  ``images``
    > 1 (:data:`BATCH_PAD_IMAGE_GROUPS`: ``image`` the outer loop of a group of that many): the
    group's image, row and channel-chunk loops fused in that order, the parallel loop, so a core's
    contiguous chunk of it is whole padded rows of its images -- the rows its tiles read where a
    thread's tiles are part of an image (rows outside the block groups)."""
    sch.compute_at(pad, image, preserve_unit_loops=True)
    loops = sch.get_loops(pad)[1:]
    inner, width = loops[-1], const_extent(sch, loops[-1])
    if width is not None and width % plan.lanes == 0:
        if width > plan.lanes:
            _, inner = sch.split(inner, factors=[width // plan.lanes, plan.lanes])
        sch.vectorize(inner)
    elif width is not None and width < plan.lanes:
        sch.vectorize(inner)
    if images > 1:
        sch.reorder(loops[0], loops[2], loops[1])
        rows = sch.fuse(loops[0], loops[2], loops[1])
    else:
        rows = sch.fuse(*loops[:2])
    if parallel:
        sch.parallel(rows)


def _padding_block(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedConv):
    """The root block that writes ``conv``'s data operand from another buffer under a bound check
    (a padding: ``if_then_else`` in its value), or None."""
    buf = mac.operands[conv.data][0]
    for blk in sch.get_producers(mac.block):
        b = sch.get(blk)
        if (any(w.source.same_as(buf) for w in b.writes) and isinstance(b.body, tirx.BufferStore)
                and isinstance(b.body.value, tvm.ir.Call)
                and str(getattr(b.body.value.op, "name", "")).endswith("if_then_else")):
            return blk
    return None


def padding_rows(sch: s_tir.Schedule, pad, parallel: bool) -> bool:
    """Schedule the padding block ``pad`` (:data:`PADDING_ROWS`): ``[n,] chunk, row`` fused (parallel
    when ``parallel``), the column loop partitioned into left padding / interior / right padding,
    the block's innermost loop (the channel block) vectorised.  In: a block whose loops are bound
    one-to-one, in order, to its iterators and whose store indexes its output by them; the input read
    at ``column - left``.  Out: True, or False with ``sch`` untouched (any other shape)."""
    blk = sch.get(pad)
    loops = sch.get_loops(pad)
    store = blk.body
    if len(loops) < 3 or len(loops) != len(blk.iter_vars):
        return False
    extents = [const_extent(sch, lp) for lp in loops]
    if None in extents or any(not isinstance(iv.dom.extent, tirx.IntImm) or int(iv.dom.extent) != e
                              for iv, e in zip(blk.iter_vars, extents)):
        return False
    ivs = [iv.var for iv in blk.iter_vars]
    # the store's non-constant indices are the iterators in order (a unit batch folded to 0)
    used = [e for e in store.indices if not (isinstance(e, tirx.IntImm) and int(e) == 0)]
    if len(used) != len(ivs) or not all(isinstance(e, tirx.Var) and e.same_as(v) for e, v in zip(used, ivs)):
        return False
    width, lanes = extents[-2], extents[-1]
    col = ivs[-2]
    reads = [r for r in blk.reads if not r.source.same_as(store.buffer)]
    if len(reads) != 1 or len(reads[0].region) != len(store.buffer.shape):
        return False
    src = reads[0].source
    ana = Analyzer()
    off = ana.simplify(reads[0].region[-2].min - col)
    if not isinstance(off, tirx.IntImm):
        return False
    left, inner = -int(off), int(src.shape[-2])
    right = width - left - inner
    if left < 0 or right < 0 or inner <= 0 or int(src.shape[-1]) != lanes:
        return False
    *outer, cols, lane = loops
    rows = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if parallel:
        sch.parallel(rows)
    sch.vectorize(lane)
    sizes = [n for n in (left, inner) if n > 0]
    if right > 0 or len(sizes) > 1:
        sch.loop_partition(cols, factors=(sizes + [None]) if right > 0 else (sizes[:-1] + [None]))
    return True
