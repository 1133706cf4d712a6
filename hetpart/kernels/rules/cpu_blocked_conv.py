"""CPU register tile for channel-blocked convolutions (``NCHW{c}c`` data, ``OIHW{c}i{c}o``
weights, as ``topi.nn.conv2d_NCHWc`` computes them); a path of :class:`.cpu_conv2d.CpuConv2d`.

The block (:func:`blocked_conv` recognises it)::

    out[n, oc_chunk, oh, ow, oc_block] += data[n, ic // c, oh*s + kh, ow*s + kw, ic % c]
                                          * weight[oc_chunk, ic // c, kh, kw, ic % c, oc_block]

Both operands already are the panels a register tile wants: ``oc_block`` is the weight's
and the output's innermost dim (a SIMD vector, or two), and the input's ``ic % c`` is the
data's innermost dim (consecutive reduction steps broadcast consecutive floats).  So
nothing is packed or copied; the tile (:func:`blocked_tile`) is

    parallel  fused(n, oc_chunk / B, oh, ow / R)               # one tile each
      init    acc[B, R, c] = 0                                   # B*V*R vector registers
      serial  ic // c, kh, kw, ic % c                            # the reduction
        unroll B, R, V; vectorise lanes: acc += bcast(data) * vload(weight)
      write-back acc -> out, with the fused epilogue (bias, relu, residual add)

with ``B`` output-channel blocks by ``R`` output columns (:func:`blocked_plan`): each step
loads ``B*V`` weight vectors and broadcasts ``R`` data scalars for ``B*V*R`` FMAs.  Before,
the generic output-channel-vector tile of :func:`~..register_tile.make_plan` took one
block (``vecs`` = c / lanes) by 7-8 columns: with ``c`` = 8 on AVX2 one vector of
accumulators by 7-8 columns, half the register file, each weight vector reused 7-8 times.

A 1x1 convolution (``kh = kw = 1``) is this same contraction over ``ic`` alone: the matmul
rule's tile (rows of output pixels broadcast, vectors of output channels loaded), on the
layout's own panels -- a strided 1x1 (resnet50's downsamples) too, whose consecutive
reduction steps still read consecutive floats.

A depthwise convolution in the blocked layout (:func:`blocked_depthwise`; the import's
:func:`hetpart.importer.blocked_sink.depthwise_nchwc`) has no channel reduction: its tile
(:func:`depthwise_tile`, ONNX Runtime's MLAS NCHWc depthwise kernel) keeps ``R`` output columns
of one channel block in registers and streams the window's taps, each a vector load of the
image and of the weight and ``R`` vector FMAs.

Switches: :data:`BLOCKED_TILE` (False: the generic tile, kept for A/B runs),
:data:`BLOCKED_DEPTHWISE_TILE`, :data:`DEPTHWISE_PADDING_IN_ROWS`.  Invariant: only
reorders, splits and caches -- every output is the same sum in the same order over the
reduction as the unscheduled block, up to FMA contraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

from ..analysis import CpuShape, MacBlock, PARALLEL_MIN_ELEMENTS, const_extent, fuse_epilogue, parallel_vectorize
from .. import ragged_rows
from ..register_tile import PARALLEL_MIN_MACS, mac_count

BLOCKED_TILE = True
"""Whether a channel-blocked convolution gets :func:`blocked_tile` (False: the generic
output-channel-vector tile of :mod:`.cpu_conv2d`; kept for A/B runs,
``tools/nchwc_ab.py --before hetpart.kernels.rules.cpu_blocked_conv.BLOCKED_TILE=0``)."""

PLAIN_ONE_BLOCK = True
"""Whether a blocked 1x1 conv of a single input-channel block (``ic // c`` folds to 0, so both
operands read as plain tensors) whose epilogue computes an exponential (swish, sigmoid) takes
:func:`blocked_tile` rather than the matmul rule's tile (False).  Measured (1 AVX-512 thread,
CPU time, the kernel alone, least of 10 x 3, NCHW16c): efficientnet's 16 -> 96 + swish on
112x112 1.159 ms against 1.990 (0.58x); mobilenet_v2's 16 -> 96 + ReLU6 0.513 against 0.464
(1.10x: hence exponential epilogues only)."""

RAGGED_SPLIT = True
"""Whether a tile whose columns do not divide the output width gets its ragged last tile as
a branch of its own (:func:`~..ragged_rows.split_ragged_rows`)."""

SPARE_REGISTERS = 3
"""Vector registers a tile's :func:`pressure` leaves free (LLVM's own temporaries).
Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, each kernel alone in one process in
turns, least of 5 calls x 3 rounds, ms; resnet50's 64->64 3x3 on 56x56 / 1024->256 1x1 on
14x14 / 512->512 3x3 on 7x7 / 256->64 1x1 on 56x56, batch 1, NCHW8c): 2 blocks x 7 columns
(pressure 17) 15.1 / 1.88 / 4.28 / 2.01 (spilled: the generic tile took 2.67 / 1.90 / 3.32
/ 2.43); 2 x 4 (11) 2.42 / 1.25 / 2.93 / 1.16; 4 x 2 (11) 2.56 / 1.19 / 4.19 / 1.12; 2 x 5
(13) 2.63 / 1.07 / 3.19 / 1.30; 2 x 6 with blocks outside columns (19) 15.8 / 1.55 / 4.28 /
1.80, with columns outside (15) 2.54 / 1.20 / 3.47 / 1.22."""

MIN_CHAINS = 8
"""Independent accumulators a tile needs to keep two FMA pipes of four cycles' latency busy
(:func:`blocked_plan`).  On a 7-wide image (AVX2) the model ties 1 x 7 exact, 2 x 4 and 4 x 2
ragged; measured (as :data:`SPARE_REGISTERS`, 512->512 3x3 on 7x7) 3.22, 2.93 and 4.19 ms:
hence the most columns among equals."""

MAX_BLOCKS = 2
"""The most output-channel blocks of one tile: each block's weights are a stream of their own
(a block's panel is ``ic * kh * kw * c`` floats from the next one's).  Measured (as
:data:`SPARE_REGISTERS`; resnet50's 512->512 3x3 on 7x7, 2048->512 1x1 on 7x7, 256->256 3x3
on 14x14): 8 blocks x 1 column 8.45 / 2.55 / 5.91 ms, 4 x 2 4.05 / 1.44 / 2.67, 2 x 4 2.99 /
1.27 / 2.73, 2 x 5 3.13 / 1.34 / 2.37 (NCHW's tiles 2.86 / 1.51 / 2.36)."""

MAX_BLOCKS_WIDE = 3
""":data:`MAX_BLOCKS` on a CPU of 32 vector registers (AVX-512): 3, so an output of 9 or 15
channel blocks (efficientnet's 24 -> 144 and 40 -> 240 expansions in NCHW16c) is no longer tiled
one block at a time.  Measured (1 AVX-512 thread, CPU time, the kernel alone, least of 10 x 3):
24 -> 144 + swish on 56x56 (NCHW8c in, NCHW16c out) 0.418 ms against 0.754 with 2 (1 x 14),
40 -> 240 on 28x28 0.207 against 0.350; resnet50's block counts (powers of two) never take 3.
2: as before (A/B)."""

MAX_COLUMNS = 16
"""The most output columns of one tile."""


@dataclass(frozen=True)
class BlockedConv:
    """The iterators of a channel-blocked convolution block (:func:`blocked_conv`).

    ``n, oc_chunk, oh, ow, oc_block``: the output's five dims in order; ``ic``: the
    reduction iterator read as ``ic // c`` and ``ic % c`` (``c`` = ``ic_block``); ``window``:
    the other reduction iterators (``kh``, ``kw``); ``data``: the operand index (0/1) of the
    windowed image, the weight the other."""

    n: tirx.Var | None
    oc_chunk: tirx.Var | None
    oh: tirx.Var | None
    ow: tirx.Var
    oc_block: tirx.Var
    ic: tirx.Var
    ic_block: int
    window: tuple
    data: int


@dataclass(frozen=True)
class BlockedPlan:
    """The tile of a :class:`BlockedConv`: ``blocks`` output-channel blocks (of ``vectors``
    SIMD vectors of ``lanes`` each) by ``columns`` output columns."""

    blocks: int
    columns: int
    vectors: int
    lanes: int
    plane: bool = False  # the columns run along the fused plane oh * ow (:data:`PLANE_1X1`)

    @property
    def accumulators(self) -> int:
        return self.blocks * self.vectors * self.columns

    def describe(self) -> str:
        return (f"{self.blocks} oc blocks x {self.vectors}x{self.lanes} lanes x {self.columns} "
                + ("plane pixels" if self.plane else "columns"))


def _is(e, var) -> bool:
    return isinstance(e, tirx.Var) and e.same_as(var)


def _div_mod(e, kind) -> tuple | None:
    """``(var, divisor)`` where ``e`` is ``var // divisor`` (``kind`` FloorDiv) or ``var %
    divisor`` (FloorMod) of a constant divisor, else None."""
    if isinstance(e, kind) and isinstance(e.a, tirx.Var) and isinstance(e.b, tirx.IntImm):
        return e.a, int(e.b)
    return None


def _same(found, var, divisor: int) -> bool:
    return found is not None and found[0].same_as(var) and found[1] == divisor


def _unit(e) -> bool:
    """An index the block's import folded to 0 (a dim of extent 1: batch 1, a 1x1 window)."""
    return isinstance(e, tirx.IntImm) and int(e) == 0


def _at(e, var) -> bool:
    """Index ``e`` is ``var``, or 0 where ``var`` is None (a unit dim)."""
    return _unit(e) if var is None else _is(e, var)


def _channel_split(div, mod, mac: MacBlock) -> tuple | None:
    """``(ic, c)`` where indices ``div``, ``mod`` are ``ic // c``, ``ic % c`` -- or ``0``,
    ``ic`` (one block of input channels: ``c`` is ``ic``'s extent) -- else None."""
    d, m = _div_mod(div, tirx.FloorDiv), _div_mod(mod, tirx.FloorMod)
    if d is not None and m is not None and d[0].same_as(m[0]) and d[1] == m[1]:
        return d
    if _unit(div) and isinstance(mod, tirx.Var) and any(mod.same_as(r) for r in mac.reduce):
        return mod, mac.extents[mod]
    return None


def _blocked_out(mac):
    """``(n, chunk, oh, ow, lane)`` of a block whose output is ``[n, c // b, oh, ow, c % b]``
    indexed by bare spatial iterators (``n``, ``chunk``, ``oh`` may be unit: None), else None
    (``ow`` and ``lane`` must be iterators)."""
    out = mac.out_indices
    if len(out) != 5 or not all(isinstance(e, tirx.Var) or _unit(e) for e in out):
        return None
    its = tuple(e if isinstance(e, tirx.Var) else None for e in out)
    return None if its[3] is None or its[4] is None else its


def blocked_conv(mac: MacBlock) -> BlockedConv | None:
    """The block as a channel-blocked convolution, or None (another block).  In: a
    :class:`MacBlock`.  Out: its iterators, when its output is ``[n, oc_chunk, oh, ow,
    oc_block]`` of bare spatial iterators (``n``, ``oc_chunk``, ``oh`` may be 0: a unit
    dim, None in the result), one operand (the weight) ``[oc_chunk, ic // c, kh, kw, ic % c,
    oc_block]`` and the other (the data) ``[n, ic // c, ., ., ic % c]`` whose two middle
    indices read ``oh`` and ``ow``."""
    out = _blocked_out(mac)
    if out is None:
        return None
    n, occ, oh, ow, ocb = out
    for data in (0, 1):
        w_idx, d_idx = mac.operands[1 - data][1], mac.operands[data][1]
        if PLAIN_INPUT and len(w_idx) == 5 and len(d_idx) == 4:
            stem = _plain_input(mac, out, w_idx, d_idx, data)
            if stem is not None:
                return stem
        if len(w_idx) != 6 or len(d_idx) != 5:
            continue
        split = _channel_split(w_idx[1], w_idx[4], mac)
        if split is None or _channel_split(d_idx[1], d_idx[4], mac) is None:
            continue
        ic, c = split
        d_split = _channel_split(d_idx[1], d_idx[4], mac)
        if not (d_split[0].same_as(ic) and d_split[1] == c):
            continue
        if not (_at(w_idx[0], occ) and _is(w_idx[5], ocb) and _at(d_idx[0], n)):
            continue
        window = [e for e in w_idx[2:4] if not _unit(e)]
        if not all(isinstance(e, tirx.Var) and any(e.same_as(r) for r in mac.reduce) for e in window):
            continue
        if not ((oh is None or _reads(d_idx[2], oh)) and _reads(d_idx[3], ow)):
            continue
        if mac.extents[ic] % c or len(mac.reduce) != 1 + len(window):
            continue
        return BlockedConv(n, occ, oh, ow, ocb, ic, c, tuple(window), data)
    return None


PLAIN_INPUT = True
"""Whether a convolution from a plain ``NCHW`` image to a blocked output (``conv2d_NCHW_to_NCHWc``:
the import's first conv of a 3-channel image, :mod:`hetpart.importer.conv_layout`) is read as a
blocked one of one-channel input blocks (:func:`_plain_input`) and gets :func:`blocked_tile`,
rather than the generic tile (False; kept for A/B runs)."""


def _plain_input(mac: MacBlock, out, w_idx, d_idx, data: int) -> BlockedConv | None:
    """The :class:`BlockedConv` of a block whose weight is ``[oc_chunk, ic, kh, kw, oc_block]``
    and data ``[n, ic, ., .]`` (plain input channels: blocks of one, ``ic_block`` 1) with the
    same conditions on the rest as :func:`blocked_conv`, else None."""
    n, occ, oh, ow, ocb = out
    ic = w_idx[1]
    if not (isinstance(ic, tirx.Var) and any(ic.same_as(r) for r in mac.reduce) and _is(d_idx[1], ic)):
        return None
    if not (_at(w_idx[0], occ) and _is(w_idx[4], ocb) and _at(d_idx[0], n)):
        return None
    window = [e for e in w_idx[2:4] if not _unit(e)]
    if not all(isinstance(e, tirx.Var) and any(e.same_as(r) for r in mac.reduce) for e in window):
        return None
    if not ((oh is None or _reads(d_idx[2], oh)) and _reads(d_idx[3], ow)) or len(mac.reduce) != 1 + len(window):
        return None
    return BlockedConv(n, occ, oh, ow, ocb, ic, 1, tuple(window), data)


def _reads(e, var) -> bool:
    """Whether index ``e`` uses ``var`` (``oh``, ``oh*s``, ``oh*s + kh``)."""
    return any(u.same_as(var) for u in collect_vars_used_in_prim_expr(e))


def _divisors(n: int, at_most: int) -> list[int]:
    return [d for d in range(1, min(n, at_most) + 1) if n % d == 0]


def pressure(blocks: int, vectors: int, columns: int) -> int:
    """Vector registers a tile holds live in its reduction step: the accumulators, the
    operand reused across the inner unrolled loop (the ``columns`` broadcasts where blocks
    run outside columns, the ``blocks * vectors`` weight vectors where columns run
    outside: :func:`columns_outer` takes the smaller) and the one loaded per FMA."""
    return blocks * vectors * columns + min(blocks * vectors, columns) + 1


def columns_outer(plan: BlockedPlan) -> bool:
    """Whether the tile's unrolled loops run columns outside blocks (the weight vectors held
    across the columns) -- where there are fewer weight vectors than columns."""
    return plan.blocks * plan.vectors < plan.columns


def blocked_plan(mac: MacBlock, conv: BlockedConv, shape: CpuShape, lanes: int) -> BlockedPlan | None:
    """The tile for ``conv`` on ``shape``: ``blocks`` dividing the output-channel chunks
    (up to :data:`MAX_BLOCKS`) by ``columns`` (up to :data:`MAX_COLUMNS`) whose
    :func:`pressure` fits ``shape.registers`` less :data:`SPARE_REGISTERS`, of the least
    modelled time per useful output: a reduction step issues ``acc`` FMAs and ``blocks *
    vectors + columns`` loads, two of each a cycle, and needs :data:`MIN_CHAINS` independent
    accumulators to hide the FMA latency, so ``max(acc, loads, MIN_CHAINS) / useful`` --
    ``useful`` the accumulators less the share of a ragged last tile's padding (a width the
    columns do not divide).  Among equals: the most accumulators, then the most columns
    (each weight vector reused more).  None where the channel block is not a whole number
    of vectors."""
    c = mac.extents[conv.oc_block]
    width = min(lanes, c)
    if c % width:
        return None
    vectors = c // width
    budget = shape.registers - SPARE_REGISTERS
    chunks = mac.extents[conv.oc_chunk] if conv.oc_chunk is not None else 1

    def best(ow: int, plane: bool):
        top = None
        for b in _divisors(chunks, MAX_BLOCKS_WIDE if shape.registers >= 32 else MAX_BLOCKS):
            for r in range(1, min(MAX_COLUMNS, ow) + 1):
                if pressure(b, vectors, r) > budget:
                    continue
                acc = b * vectors * r
                useful = acc * ow / (-(-ow // r) * r)
                key = (-max(acc, b * vectors + r, MIN_CHAINS) / useful, acc, r)
                if top is None or key > top[0]:
                    top = (key, BlockedPlan(b, r, vectors, width, plane))
        return top

    ow = mac.extents[conv.ow]
    top = best(ow, False)
    if top is not None and ow % top[1].columns and plane_1x1(mac, conv):
        fused = best(ow * mac.extents[conv.oh], True)
        if fused is not None and fused[0] > top[0]:
            top = fused
    return top[1] if top is not None else None


PLANE_1X1 = True
"""Whether a blocked 1x1 stride-1 conv whose row tile is ragged (inception_v3's 17x17 and 73x73
planes: 768 -> 192 took 2 blocks x 9 columns, a 9 + 8 row) runs its columns along the fused plane
``oh * ow`` (contiguous pixels of the blocked image: one ragged tile per plane, not per row) where
:func:`blocked_plan`'s model prefers that tile (768 -> 192: 3 blocks x 8 pixels).  False: row tiles
only (A/B)."""


PLANE_1X1_MAX_PIXELS = 1024
"""The largest plane :data:`PLANE_1X1` fuses: its write-back runs as a pass after the tile (a tile's
pixels cross image rows, no box of the output to compute it at), cheap while the output stays in
the caches.  Measured (1 AVX-512 thread, CPU time, each conv alone, least of 20 runs):
inception_v3's 1x1s on 17x17 768 -> 192 0.489 -> 0.469 ms, 768 -> 160 0.451 -> 0.408; on 73x73
64 -> 80 0.435 -> 0.491 (hence the bound)."""


def plane_1x1(mac: MacBlock, conv: BlockedConv) -> bool:
    """Whether ``conv`` is a 1x1 stride-1 conv whose data reads ``oh``, ``ow`` bare (its plane's
    pixels contiguous, so the two fuse into one column iterator), with :data:`PLANE_1X1` on."""
    if not PLANE_1X1 or conv.window or conv.oh is None:
        return False
    if mac.extents[conv.oh] * mac.extents[conv.ow] > PLANE_1X1_MAX_PIXELS:
        return False
    d_idx = mac.operands[conv.data][1]
    return _is(d_idx[2], conv.oh) and _is(d_idx[3], conv.ow)


def blocked_tile(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedConv, plan: BlockedPlan, shape: CpuShape) -> None:
    """Apply ``plan`` to ``conv``'s block in ``sch`` (the nest of the module docstring);
    other root blocks (the padding, an epilogue that did not fuse) get the injective
    schedule."""
    main = mac.block
    wb = sch.cache_write(main, 0, "global")
    fuse_epilogue(sch, wb)
    loops = dict(zip([iv.var for iv in sch.get(main).iter_vars], sch.get_loops(main)))

    def by(v):
        return next(lp for var, lp in loops.items() if var.same_as(v))

    occ_o, occ_i = (sch.split(by(conv.oc_chunk), factors=[None, plan.blocks]) if conv.oc_chunk is not None
                    else (None, None))
    width = mac.extents[conv.ow]
    if plan.plane:  # one column iterator over the plane's pixels (plane_1x1)
        width *= mac.extents[conv.oh]
        fused = sch.fuse(by(conv.oh), by(conv.ow))
        loops = {v: lp for v, lp in loops.items() if not v.same_as(conv.oh) and not v.same_as(conv.ow)}
        loops[conv.ow] = fused
        conv = BlockedConv(conv.n, conv.oc_chunk, None, conv.ow, conv.oc_block, conv.ic, conv.ic_block, conv.window,
                           conv.data)
    ow_o, ow_i = sch.split(by(conv.ow), factors=[None, plan.columns])
    vec_o, vec_i = sch.split(by(conv.oc_block), factors=[plan.vectors, plan.lanes])
    chunks = mac.extents[conv.ic] // conv.ic_block
    ic_o, ic_i = (sch.split(by(conv.ic), factors=[chunks, conv.ic_block]) if chunks > 1 else (None, by(conv.ic)))
    rows = [lp for lp in (by(conv.n) if conv.n is not None else None, occ_o,
                          by(conv.oh) if conv.oh is not None else None) if lp is not None]
    group = ic_group(mac, conv, plan) if rows else None
    inner = [lp for lp in ((ow_i, occ_i, vec_o) if columns_outer(plan) else (occ_i, ow_i, vec_o)) if lp is not None]
    if group is not None:  # row-major: input-channel groups outside the row's column tiles
        ic_oo, ic_oi = sch.split(ic_o, factors=[None, group])
        reds = [ic_oo, ic_oi, *(by(v) for v in conv.window), ic_i]
        sch.reorder(*rows, ic_oo, ow_o, *reds[1:], *inner, vec_i)
        tile = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    else:
        outer = rows + [ow_o]
        reds = [lp for lp in (ic_o, *(by(v) for v in conv.window), ic_i) if lp is not None]
        sch.reorder(*outer, *reds, *inner, vec_i)
        tile = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(tile)
    if not plan.plane:  # a plane tile's pixels cross rows: no box of the output; its write-back a pass after
        sch.reverse_compute_at(wb, tile, preserve_unit_loops=True)
    for lp in inner:
        sch.unroll(lp)
    sch.vectorize(vec_i)
    init = sch.decompose_reduction(main, reds[0])
    if not plan.plane:
        _write_back(sch, wb, plan)
    names = {sch.get(b).name_hint for b in ((main, init) if plan.plane else (main, wb, init))}
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(blk).name_hint not in names and all(
                iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
            parallel_vectorize(sch, blk, plan.lanes, min_parallel=PARALLEL_MIN_ELEMENTS)
    if RAGGED_SPLIT and group is None and width % plan.columns:
        # Last: the split leaves the tile's body in two branches (blocks renamed) no primitive may move.
        ragged_rows.split_ragged_rows(sch, tile, (main, init) if plan.plane else (main, init, wb), plan.columns, width)


IC_GROUPS = False
"""Whether a tile whose weights overrun the L1 budget (:data:`L1_WEIGHT_BYTES`) runs as ONNX
Runtime's MLAS NCHWc kernel does (:func:`ic_group`): per output row, the input channels in groups
whose weights fit, each group over every column tile of the row, the row's accumulators kept
in a row buffer (in L1) between groups -- rather than the whole reduction per column tile,
streaming all of the tile's weights from L2 once per tile.  Off: measured (1 AVX-512 thread,
CPU time, each conv alone, least of 20 runs) googlenet's 96 -> 128 3x3 on 28x28 1.047 -> 1.004 ms,
64 -> 192 on 56x56 4.076 -> 4.067, inception_v3's 448 -> 384 3x3 on 8x8 1.153 -> 1.175: no clear
gain alone, and no whole-model A/B yet (kept for one)."""

L1_WEIGHT_BYTES = 24 * 1024
"""The weights one input-channel group of a tile may read (:func:`ic_group`): half an
AVX-512 Xeon's 48 KiB L1 data cache, the other half for the image rows and the row buffer."""


def ic_group(mac: MacBlock, conv: BlockedConv, plan: BlockedPlan) -> int | None:
    """Input-channel chunks (of ``conv.ic_block``) per group of :data:`IC_GROUPS`' row-major
    tile: the most dividing the chunk count whose weights for the tile's blocks fit
    :data:`L1_WEIGHT_BYTES` (at least one), or None -- the tile as before -- where the switch
    is off, the tile's whole weights fit, the row is one column tile (nothing to reuse the
    weights across) or the columns do not divide the width."""
    if not IC_GROUPS or plan.plane:
        return None
    chunks = mac.extents[conv.ic] // conv.ic_block
    ow = mac.extents[conv.ow]
    if chunks <= 1 or ow <= plan.columns or ow % plan.columns:
        return None
    window = 1
    for v in conv.window:
        window *= mac.extents[v]
    per_chunk = conv.ic_block * window * plan.blocks * plan.vectors * plan.lanes * tvm.DataType(str(mac.out.dtype)).bits // 8
    if chunks * per_chunk <= L1_WEIGHT_BYTES:
        return None
    fits = [d for d in _divisors(chunks, chunks) if d * per_chunk <= L1_WEIGHT_BYTES]
    return fits[-1] if fits else 1


def _write_back(sch: s_tir.Schedule, wb, plan: BlockedPlan, under: int = 1) -> None:
    """The write-back's loops under the tile (``1, B, 1, R, c``; ``under``: the loops above
    them): the channel block split into vectors, the innermost vectorised, the others unrolled."""
    loops = [lp for lp in sch.get_loops(wb)[under:] if const_extent(sch, lp) != 1]
    if not loops:
        return
    last = loops[-1]
    if plan.vectors > 1 and const_extent(sch, last) == plan.vectors * plan.lanes:
        outer, last = sch.split(last, factors=[plan.vectors, plan.lanes])
        loops = loops[:-1] + [outer, last]
    sch.vectorize(last)
    for lp in loops[:-1]:
        sch.unroll(lp)


def plan_of(func: tirx.PrimFunc, target) -> BlockedPlan | None:
    """The tile :class:`.cpu_conv2d.CpuConv2d` gives ``func`` on ``target`` where it is a
    channel-blocked convolution (:func:`blocked_conv`), else None: its padding kept, its
    other producers inlined, as the rule reads it.  For tools and tests."""
    from ..analysis import cpu_shape, mac_of, tests_bounds, try_inline_spatial

    sch = s_tir.Schedule(func)
    keep = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root")) if tests_bounds(sch.get(b))}
    try_inline_spatial(sch, keep=keep)
    mac = mac_of(sch)
    conv = blocked_conv(mac) if mac is not None else None
    if conv is None:
        return None
    shape = cpu_shape(target)
    return blocked_plan(mac, conv, shape, shape.lanes(str(mac.out.dtype)))


BLOCKED_DEPTHWISE_TILE = True
"""Whether a channel-blocked depthwise convolution (:func:`blocked_depthwise`, the block
:func:`hetpart.importer.blocked_sink.depthwise_nchwc` computes) gets
:func:`depthwise_tile` -- the channel block is the vector, each output column an
accumulator, the window's taps a stream of vector FMAs (ONNX Runtime's MLAS NCHWc
depthwise kernel) -- rather than the generic tile (False; kept for A/B runs)."""

MAX_DEPTHWISE_COLUMNS = 16
"""The most output columns of one depthwise tile (:func:`depthwise_plan`)."""


@dataclass(frozen=True)
class BlockedDepthwise:
    """The iterators of a channel-blocked depthwise convolution block
    (:func:`blocked_depthwise`): ``n, chunk, oh, ow, lane`` the output's five dims in order
    (``n``, ``chunk``, ``oh`` None where a unit dim); ``window`` the reduction iterators
    (``kh``, ``kw``); ``data`` the operand index of the windowed image."""

    n: tirx.Var | None
    chunk: tirx.Var | None
    oh: tirx.Var | None
    ow: tirx.Var
    lane: tirx.Var
    window: tuple
    data: int


def blocked_depthwise(mac: MacBlock) -> BlockedDepthwise | None:
    """The block as a channel-blocked depthwise convolution, or None.  In: a
    :class:`MacBlock`.  Out: its iterators, when its output is ``[n, chunk, oh, ow, lane]``
    of bare spatial iterators (the first three may be 0), the weight ``[chunk, kh, kw,
    lane]`` and the data ``[n, chunk, ., ., lane]`` whose middle indices read ``oh``, ``ow``,
    and every reduction iterator is the window's."""
    out = _blocked_out(mac)
    if out is None:
        return None
    n, chunk, oh, ow, lane = out
    for data in (0, 1):
        w_idx, d_idx = mac.operands[1 - data][1], mac.operands[data][1]
        if len(w_idx) != 4 or len(d_idx) != 5:
            continue
        if not (_at(w_idx[0], chunk) and _is(w_idx[3], lane) and _at(d_idx[0], n) and _at(d_idx[1], chunk)
                and _is(d_idx[4], lane)):
            continue
        window = [e for e in w_idx[1:3] if not _unit(e)]
        if not all(isinstance(e, tirx.Var) and any(e.same_as(r) for r in mac.reduce) for e in window):
            continue
        if len(mac.reduce) != len(window) or not ((oh is None or _reads(d_idx[2], oh)) and _reads(d_idx[3], ow)):
            continue
        return BlockedDepthwise(n, chunk, oh, ow, lane, tuple(window), data)
    return None


def depthwise_plan(mac: MacBlock, conv: BlockedDepthwise, shape: CpuShape, lanes: int) -> BlockedPlan | None:
    """The tile for ``conv``: one channel block (``vectors`` vectors of ``lanes``) by the
    most ``columns`` dividing the output width (up to :data:`MAX_DEPTHWISE_COLUMNS`) whose
    accumulators, the tap's weight vectors and one loaded input vector fit the registers
    less :data:`SPARE_REGISTERS`.  None where the block is not a whole number of vectors."""
    c = mac.extents[conv.lane]
    width = min(lanes, c)
    if c % width:
        return None
    vectors = c // width
    cap = (shape.registers - SPARE_REGISTERS - vectors - 1) // vectors
    cols = _divisors(mac.extents[conv.ow], max(1, min(cap, MAX_DEPTHWISE_COLUMNS)))
    return BlockedPlan(1, cols[-1], vectors, width)


def depthwise_tile(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedDepthwise, plan: BlockedPlan) -> None:
    """Apply ``plan`` to ``conv``'s block in ``sch``::

        parallel fused(n, chunk, oh)
          serial ow / R
            init   acc[R, c] = 0
            serial kh, kw                                  # the window's taps
              unroll R, V; vectorise lanes: acc[r] += vload(data) * vload(weight)
            write-back acc -> out, with the fused epilogue

    other root blocks (the padding) get the injective schedule."""
    main = mac.block
    wb = sch.cache_write(main, 0, "global")
    fuse_epilogue(sch, wb)
    loops = dict(zip([iv.var for iv in sch.get(main).iter_vars], sch.get_loops(main)))

    def by(v):
        return next(lp for var, lp in loops.items() if var.same_as(v))

    ow_o, ow_i = sch.split(by(conv.ow), factors=[None, plan.columns])
    vec_o, vec_i = sch.split(by(conv.lane), factors=[plan.vectors, plan.lanes])
    rows = [by(v) for v in (conv.n, conv.chunk, conv.oh) if v is not None]
    reds = [by(v) for v in conv.window]
    sch.reorder(*rows, ow_o, *reds, ow_i, vec_o, vec_i)
    tile = (sch.fuse(*rows) if len(rows) > 1 else rows[0]) if rows else None
    if tile is not None and mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(tile)
    sch.reverse_compute_at(wb, ow_o, preserve_unit_loops=True)
    for lp in (ow_i, vec_o):
        sch.unroll(lp)
    if DEPTHWISE_UNROLL_TAPS and reds:
        sch.unroll(reds[-1])
    sch.vectorize(vec_i)
    init = sch.decompose_reduction(main, reds[0] if reds else ow_i)
    above = [sch.get(lp) for lp in sch.get_loops(wb)]
    _write_back(sch, wb, plan, under=1 + next(i for i, lp in enumerate(above) if lp.same_as(sch.get(ow_o))))
    names = {sch.get(b).name_hint for b in (main, wb, init)}
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(blk).name_hint not in names and all(
                iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
            if DEPTHWISE_PADDING_IN_ROWS and tile is not None and _pad_in_rows(sch, blk, tile, plan):
                continue
            parallel_vectorize(sch, blk, plan.lanes, min_parallel=PARALLEL_MIN_ELEMENTS)


DEPTHWISE_PADDING_IN_ROWS = True
"""Whether a depthwise tile computes the padded input rows each output row reads under its
own row loop (a few rows, in cache) rather than the whole padded image in a pass before it."""


def _pad_in_rows(sch: s_tir.Schedule, blk, tile, plan: BlockedPlan) -> bool:
    """``blk`` (the padding, the main block's producer) computed at ``tile``, its lanes
    vectorised; False (nothing changed) where TVM refuses."""
    try:
        sch.compute_at(blk, tile, preserve_unit_loops=True)
    except Exception:  # noqa: BLE001 - not a producer there
        return False
    loops = sch.get_loops(blk)
    inner = loops[-1]
    if const_extent(sch, inner) == plan.vectors * plan.lanes:
        if plan.vectors > 1:
            _, inner = sch.split(inner, factors=[plan.vectors, plan.lanes])
        sch.vectorize(inner)
    return True


DEPTHWISE_UNROLL_TAPS = True
"""Whether the depthwise tile unrolls the window's inner (``kw``) loop."""
