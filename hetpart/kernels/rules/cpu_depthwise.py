"""CPU schedule of the convolutions the register tile cannot pay for: depthwise (and
grouped ones with a strided window), with their padding and element-wise epilogue.

In: a schedule whose one reduction block is the convolution (:class:`MacBlock`),
its padding blocks named in ``keep`` (not inlined), the other producers inlined.
Out: the same schedule with one loop nest per *channel*::

    parallel  fused(n, c)                      # a channel per iteration
      pad     the channel's padded image       # while it is in cache
      serial  oh                               # an output row
        init  acc[c, oh, :] = 0
        serial window (ry, rx)                 # unrolled by LLVM
          ow: acc[c, oh, ow] += pad[c, oh*s + ry, ow*s + rx] * w[c, ry, rx]
        (stride 1, rows of whole 8+-lane vectors: per group of up to 8 row vectors,
         the window unrolled around them, the accumulators in registers: REGISTER_ROWS;
         stride 2, 3x3, rows of whole 4+-lane vectors: per vector, the window unrolled
         around its serial lane loop, which LLVM vectorises: STRIDE2_VECTOR_STEPS)
      write   acc[c] -> out[n, c] with the fused epilogue (bias, SiLU, ...),
              the plane's oh x ow loops fused into one vector loop

Why: the nest as it was (padding, convolution and every epilogue block each a pass
over the whole tensor, all on one thread) ran EfficientNet-B0's depthwise layers at
1.3-3.7x ONNX Runtime's time on 2 threads (the SiLU pass alone as long as the
convolution).  Here the channels run in parallel and the padded channel and its
output plane stay in L1/L2 from the padding to the epilogue.  The rows' ``ow`` loop
is left to LLVM's vectoriser, which handles the strided window loads with shuffles
(see :mod:`.cpu_conv2d`); the write-back runs over the whole plane (a 14x14 plane is
one loop of 196, not 14 rows of 14, mostly vector tail), or in explicit ``lanes``-wide
vectors along rows that they divide (:func:`_vectorize_plane`).  Measured (2-core EPYC, 2 threads, one kernel with its
SiLU, least of 300 calls, main then this): 144x56x56 3x3 0.43 -> 0.17 ms (ORT
0.20-0.23), 5x5 stride 2 0.46 -> 0.10 (ORT 0.07-0.14), 672x14x14 5x5 0.34 -> 0.21
(ORT 0.08-0.11), 1152x7x7 3x3 0.17 -> 0.04 (ORT 0.036): 14x14 planes stay behind ONNX
Runtime's channel-vectorised NCHWc kernels.

Invariant: loops only are restructured; every output is the same sum over the window
in the same order (ry, rx), so results are bit-identical to the unscheduled function
(the ``exp`` of a SiLU epilogue aside: :mod:`hetpart.kernels.fast_exp`).
"""

from __future__ import annotations

import math

import tvm.sym
from tvm import s_tir, tirx

from ..analysis import MacBlock, const_extent, fitting_lanes, fuse_epilogue, largest_divisor, parallel_vectorize
from ..register_tile import LAYOUT_REWRITE_PREPROC, PARALLEL_MIN_MACS, mac_count, read_index


def channel_rows(sch: s_tir.Schedule, mac: MacBlock, lanes: int) -> bool:
    """Apply the channel-row schedule (module docstring) to ``mac`` in ``sch``.

    Needs the normal form's loop order: the block's loops are its spatial iterators
    (the output's dims in order, unit ones dropped: c, oh, ow for batch 1) then its
    reduction ones, the last two spatial ones indexing the output's last two dims.
    Returns False, with ``sch`` possibly half-changed (the caller then starts again
    from the function), when the nest is not of that shape.
    """
    main = mac.block
    loops = sch.get_loops(main)
    ns, nr = len(mac.spatial), len(mac.reduce)
    if ns < 3 or nr < 1 or len(loops) != ns + nr or not _rows_last(mac):
        return False
    chans, (oh, ow), reds = loops[: ns - 2], loops[ns - 2: ns], loops[ns:]
    pads = list(sch.get_producers(main))
    wb = sch.cache_write(main, 0, "global")
    fuse_epilogue(sch, wb)
    stride = _row_stride(mac)
    steps = 1
    for lp in reds:
        steps *= const_extent(sch, lp) or REGISTER_ROW_MAX_STEPS + 1
    groups = None
    if steps <= REGISTER_ROW_MAX_STEPS:
        groups = _register_row_groups(const_extent(sch, ow) or 0, lanes, stride)
    s2_lanes = None
    if groups is None:
        s2_lanes = _stride2_lanes(const_extent(sch, ow) or 0, lanes, stride, steps)
    if s2_lanes is not None:  # stride 2: a vector of the row at a time, the window unrolled around it
        ow_o, ow_l = sch.split(ow, factors=[None, s2_lanes])
        sch.reorder(*chans, oh, ow_o, *reds, ow_l)
    elif groups is None:
        sch.reorder(*chans, oh, *reds, ow)
    else:  # the row as accumulator vectors held in registers over the window
        ow_o, ow_v, ow_l = sch.split(ow, factors=[None, *groups])
        sch.reorder(*chans, oh, ow_o, *reds, ow_v, ow_l)
    outer = sch.fuse(*chans) if len(chans) > 1 else chans[0]
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(outer)  # before decompose_reduction: it needs a complete reduction
    if groups is not None or s2_lanes is not None:
        for lp in reds:
            sch.unroll(lp)
    if groups is not None:
        sch.unroll(ow_v)
        sch.vectorize(ow_l)
    sch.reverse_compute_at(wb, outer, preserve_unit_loops=True)
    _vectorize_plane(sch, wb, lanes)
    for pad in pads:
        sch.compute_at(pad, outer, preserve_unit_loops=True)
    sch.decompose_reduction(main, reds[0])
    # Whatever else remains at the root (an epilogue that could not be fused).
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(blk)
        loops_blk = sch.get_loops(blk)
        if loops_blk and sch.get(loops_blk[0]).same_as(sch.get(outer)):
            continue
        if all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars):
            parallel_vectorize(sch, blk, lanes)
    return True


REGISTER_ROWS = True
"""Whether a depthwise conv's output rows of whole vectors are summed as vectors held in
registers over the window (:func:`_register_row_groups`; False: the row summed in
memory, one pass of the row per window step, kept for A/B runs).

Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, each kernel alone before and
after in one process in turns, least of 20 calls x 5 rounds, ms; outputs bit-identical;
bench/results/cpu-convnets2-2core.md): mobilenet_v2's 32x112x112 3x3 + ReLU6 0.360 ->
0.233, 144x56x56 0.344 -> 0.264 (ONNX Runtime 0.217, 0.240); EfficientNet's 3x3 +
SiLU on 112 and 56 0.69 -> 0.56, 0.69 -> 0.60; MobileNetV3's 0.172 -> 0.105, 0.158 ->
0.114; convnext's 96x56x56 7x7 0.572 -> 0.561.  Not taken: 4-lane vectors (28-wide
rows: 192x28x28 3x3 0.098 -> 0.114, 120x28x28 5x5 0.110 -> 0.130), stride 2 here
(:data:`STRIDE2_VECTOR_STEPS` instead; the window's explicit stride-2 vector is a
gather: 96x112x112 0.54 -> 0.73; with the padded copy's columns de-interleaved 0.53 ->
0.56-0.62, 144x56x56 0.19 -> 0.25-0.28: the copy's scattered stores))."""

STRIDE2_VECTOR_STEPS = True
"""Whether a stride-2 depthwise conv's output row is summed a vector's width at a time
with the window unrolled around it (:func:`_stride2_lanes`; False: the whole row per
window step, kept for A/B runs).

The vector's lanes are left a serial loop for LLVM: its loop vectoriser loads the
window's stride-2 lanes as two contiguous vectors and a shuffle and, the window being
unrolled around one vector, keeps the sum in a register; TVM's explicit vector of a
stride-2 load is a gather (0.48 -> 0.57 ms on 96x112x112), and two to eight vectors
per window step measured no better than one (0.98-1.03x).

Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, tools/kernel_switch_ab.py, least
of 20 calls x 7 rounds, ms; outputs bit-identical; bench/results/cpu-dw-s2-2core.md):
mobilenet_v2's 96x112x112 3x3 stride 2 + ReLU6 0.525 -> 0.474, 144x56x56 0.194 -> 0.182
(4-lane vectors on its 28-wide rows); EfficientNet's 96x112x112 + SiLU 0.749 -> 0.696;
MobileNetV3's 64x112x112 0.336 -> 0.300."""


STRIDE2_MIN_LANES = 4
"""The narrowest vector :func:`_stride2_lanes` sums a stride-2 row in: a 28-wide row
(144x56x56 stride 2) in 4-lane vectors, 0.196 -> 0.180 ms (stride 1 keeps 8:
:data:`REGISTER_ROW_MIN_LANES`)."""


STRIDE2_MAX_STEPS = 9
"""The most window steps of a stride-2 depthwise conv summed a vector at a time: a 3x3
window's.  5x5 windows measured slower that way (EfficientNet's 144x56x56 5x5 stride 2
+ SiLU 0.517 -> 0.691 ms, MobileNetV3's 72x56x56 0.211 -> 0.296: 28-wide rows in 4-lane
vectors, 25 unrolled steps), and no model here has a 5x5 stride 2 on 8-lane rows."""


def _stride2_lanes(width: int, lanes: int, stride: int | None, steps: int) -> int | None:
    """Lanes of the vector a stride-2 output row ``width`` wide is summed in (the widest
    up to ``lanes``, at least :data:`STRIDE2_MIN_LANES`, that divides it) over a window
    of ``steps`` steps; None (the whole row per window step) for another stride, a
    window of more than :data:`STRIDE2_MAX_STEPS` steps, no such vector, or the switch off."""
    if not STRIDE2_VECTOR_STEPS or stride != 2 or not width or steps > STRIDE2_MAX_STEPS:
        return None
    return fitting_lanes(width, lanes, STRIDE2_MIN_LANES)


REGISTER_ROW_VECTORS = 8
"""The most accumulator vectors of one row held over the window."""

REGISTER_ROW_MAX_STEPS = 64
"""The most window steps (all unrolled) of a depthwise conv whose rows are held in
registers: a 7x7 window's 49 (grouped convs' longer sums keep the row in memory)."""

REGISTER_ROW_MIN_LANES = 8
"""The narrowest vector :func:`_register_row_groups` holds a row in."""


def _register_row_groups(width: int, lanes: int, stride: int | None) -> tuple[int, int] | None:
    """``(vectors, vector lanes)`` of one group of accumulators for a stride-1 output row
    ``width`` wide: the widest vector up to ``lanes`` (at least
    :data:`REGISTER_ROW_MIN_LANES`) that divides the row, as many of them as divide its
    vectors up to :data:`REGISTER_ROW_VECTORS`; None (the row summed in memory) where
    no such vector divides it, the stride is not 1, or the switch is off.

    Before, ``acc[oh, :] += pad[.., oh*s + ry, ow*s + rx] * w[ry, rx]`` ran the whole
    row per window step: 9 loads and stores of every output for a 3x3 window."""
    width_lanes = fitting_lanes(width, lanes, REGISTER_ROW_MIN_LANES) if width else None
    if not REGISTER_ROWS or stride != 1 or width_lanes is None:
        return None
    return largest_divisor(width // width_lanes, REGISTER_ROW_VECTORS), width_lanes


def _row_stride(mac: MacBlock) -> int | None:
    """The window's stride along the output rows: the coefficient of the last spatial
    iterator in the image operand's last index (None where it is not linear in it)."""
    image = _image_operand(mac)
    if image is None:
        return None
    idx = mac.operands[image][1][-1]
    coef = tvm.sym.detect_linear_equation(idx, [mac.spatial[-1]])
    return int(coef[0]) if len(coef) == 2 and isinstance(coef[0], tirx.IntImm) else None


def _vectorize_plane(sch: s_tir.Schedule, wb, lanes: int) -> None:
    """The write-back's loops under the channel loop (the output plane, ``oh x ow``):
    where full ``lanes``-wide vectors divide a row (112 wide), ``ow`` split into explicit
    vectors; else the plane's loops fused into one loop that LLVM's vectoriser takes
    (a 14x14 plane is one loop of 196, not 14 rows of 14, mostly vector tail).

    Never an explicit vector over the *fused* plane: its indices are ``f // ow`` and
    ``f % ow`` of the fused iterator, which TVM does not fold back into ``f``, so each
    vector load and store became an AVX-512 gather and scatter (mobilenet_v2's 32x112x112
    depthwise + ReLU6: 0.59-1.05 ms, 0.10 ms without; 2-core EPYC, 2 threads)."""
    loops = sch.get_loops(wb)[1:]
    if not loops:
        return
    if fitting_lanes(const_extent(sch, loops[-1]) or 0, lanes) == lanes:
        sch.vectorize(sch.split(loops[-1], factors=[None, lanes])[1])
    elif len(loops) > 1:
        sch.fuse(*loops)


def _rows_last(mac: MacBlock) -> bool:
    """Whether the last two spatial iterators are the output's last two indices."""
    tail = mac.out_indices[-2:]
    return all(isinstance(e, tirx.Var) and e.same_as(v) for e, v in zip(tail, mac.spatial[-2:]))




def channel_vectors(sch: s_tir.Schedule, mac: MacBlock, lanes: int, weight_free: bool) -> bool:
    """Channel-vector schedule of a depthwise NCHW convolution (:func:`vectorizes_channels`):
    ``lanes`` channels per parallel iteration, each output pixel of those channels one
    vector::

        parallel  fused(n, c // L)                  # L = lanes channels per iteration
          pad     pad'[c // L, ph, pw, c % L]       # the L channels' padded planes, channel-inner
          serial  oh, ow
            init  acc[c // L, oh, ow, :] = 0
            serial window (ry, rx)
              vector c % L: acc[.., :] += pad'[.., oh*s + ry, ow*s + rx, :] * w'[c // L, ry, rx, :]
          write   acc -> out[n, c, oh, ow] with the fused epilogue

    ``w'`` is the weight in the same channel-inner panels, packed once at compile time
    where it is a model constant (``weight_free``).  Stride-agnostic (the window moves
    along pixels, the vector along channels), and every FMA a full vector, where the
    channel rows' inner loop is the row: 7 or 14 wide, mostly vector tail.

    Needs: output ``[n, c, oh, ow]`` indexed by the block's spatial iterators in order,
    the window's two reduction iterators, ``c`` a multiple of ``lanes``.  Returns False
    (``sch`` possibly half-changed: the caller starts again from the function) where
    the nest is not of that shape."""
    main = mac.block
    loops = sch.get_loops(main)
    ns = len(mac.spatial)
    if ns not in (3, 4) or len(mac.reduce) != 2 or len(loops) != ns + 2 or not _chw_last(mac):
        return False
    chans, (c, oh, ow), (ry, rx) = loops[: ns - 3], loops[ns - 3: ns], loops[ns:]
    if (const_extent(sch, c) or 0) % lanes:
        return False
    image = _image_operand(mac)
    if image is None:
        return False
    pads = list(sch.get_producers(main))
    if len(pads) > 1:
        return False

    def chan_inner(*ax):  # [.., c, h, w] -> [.., c // L, h, w, c % L]
        return [*ax[:-3], ax[-3] // lanes, ax[-2], ax[-1], ax[-3] % lanes]

    wb = sch.cache_write(main, 0, "global")
    fuse_epilogue(sch, wb)
    sch.transform_layout(main, ("write", 0), chan_inner)
    if pads:
        sch.transform_layout(pads[0], ("write", 0), chan_inner)
    else:
        src = sch.cache_read(main, read_index(sch, main, mac.operands[image][0]), "global")
        sch.transform_layout(src, ("write", 0), chan_inner)
        pads = [src]
    wbuf = mac.operands[1 - image][0]
    wk = sch.cache_read(main, read_index(sch, main, wbuf), "global")
    sch.transform_layout(wk, ("write", 0), lambda o, i, y, x: [o // lanes, i, y, x, o % lanes])
    if weight_free:
        sch.annotate(wk, LAYOUT_REWRITE_PREPROC, 1)
    c0, c1 = sch.split(c, factors=[None, lanes])
    sch.reorder(*chans, c0, oh, ow, ry, rx, c1)
    outer = sch.fuse(*chans, c0) if chans else c0
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(outer)
    sch.vectorize(c1)
    sch.reverse_compute_at(wb, outer, preserve_unit_loops=True)
    wb_loops = sch.get_loops(wb)[1:]
    if len(wb_loops) > 2:
        sch.fuse(*wb_loops[-2:])  # the plane: one contiguous loop per channel
    sch.compute_at(pads[0], outer, preserve_unit_loops=True)
    # The padded copy along its channel vectors: one 16-lane gather from the image's
    # planes and one contiguous store per padded pixel (scalar copies, 1.5x as long).
    pad_loops = sch.get_loops(pads[0])[1:]
    if len(pad_loops) >= 3:
        sch.reorder(*pad_loops[:-3], pad_loops[-2], pad_loops[-1], pad_loops[-3])
        sch.vectorize(pad_loops[-3])
    sch.decompose_reduction(main, ry)
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        bl = sch.get_loops(blk)
        if bl and sch.get(bl[0]).same_as(sch.get(outer)):
            continue
        if sch.get(blk).name_hint == sch.get(wk).name_hint:
            continue
        if all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
            parallel_vectorize(sch, blk, lanes)
    return True


def _chw_last(mac: MacBlock) -> bool:
    """Whether the last three spatial iterators are the output's last three indices."""
    tail = mac.out_indices[-3:]
    return len(tail) == 3 and all(isinstance(e, tirx.Var) and e.same_as(v) for e, v in zip(tail, mac.spatial[-3:]))


def _image_operand(mac: MacBlock) -> int | None:
    """The operand read through the window (an index with a reduction iterator in a
    spatial dim), when the other is a ``[c, 1, kh, kw]`` depthwise weight."""
    for o in (0, 1):
        buf, idx = mac.operands[o]
        wbuf = mac.operands[1 - o][0]
        if len(idx) == 4 and mac.uses(o, mac.reduce[0]) and len(wbuf.shape) == 4 and int(wbuf.shape[1]) == 1:
            return o
    return None


def vectorizes_channels(mac: MacBlock, lanes: int, cores: int = 1) -> bool:
    """Whether a depthwise conv gets :func:`channel_vectors` rather than channel rows:
    its channels are whole ``lanes`` vectors and its output rows narrower than one
    (7 and 14 wide: mobilenet_v2's 960x7x7, 576x14x14 stride 2 and 384x14x14,
    EfficientNet's and MobileNetV3's 5x5 on 14x14 and 7x7), where the rows' inner loop
    is mostly vector tail.  Measured (2-core EPYC shared with other jobs, 2 threads, one
    process, both builds in turns, least of 200 calls, ms, rows -> channel vectors, a
    run each): 960x7x7 3x3 + ReLU6 0.056/0.056/0.059/0.052 -> 0.039/0.039/0.045/0.030,
    576x14x14 stride 2 0.020/0.052/0.027/0.039 -> 0.016/0.037/0.019/0.032, 960x7x7 5x5
    0.102/0.062 -> 0.036/0.020, 672x14x14 5x5 stride 2 0.105/0.064 -> 0.039/0.022,
    672x14x14 5x5 0.188/0.182/0.206/0.087/0.089 -> 0.151/0.105/0.124/0.050/0.055,
    3x3 on 14x14 a tie (384 channels 0.067/0.057/0.057/0.022/0.030 ->
    0.038/0.057/0.056/0.022/0.029).  On rows of 28 and more the transposed copies
    outweigh the window: 240x28x28 5x5 0.111/0.207 -> 0.188/0.159, 120x28x28 5x5 a tie,
    convnext's 96x56x56 7x7 0.271/0.499 -> 0.275/0.523; bench/results/cpu-mnv2-2core.md.
    A stride-2 conv takes them at any row width where its channel groups cover ``cores``
    (:data:`STRIDE2_CHANNEL_VECTORS`); a 5x5 or wider window on rows up to 14 wide too
    (:data:`WIDE_WINDOW_ROWS`)."""
    if len(mac.out_indices) != 4 or len(mac.spatial) < 3 or not _chw_last(mac) or _image_operand(mac) is None:
        return False
    c, ow = mac.extents[mac.spatial[-3]], mac.extents[mac.spatial[-1]]
    if not (c and ow and c % lanes == 0):
        return False
    if ow < lanes or _wide_window_row(mac, ow, lanes):
        return True
    return STRIDE2_CHANNEL_VECTORS and _row_stride(mac) == 2 and _channel_groups(mac, lanes) >= cores


def _channel_groups(mac: MacBlock, lanes: int) -> int:
    """The parallel iterations of :func:`channel_vectors`: batch x channels / ``lanes``."""
    return math.prod(mac.extents[v] for v in mac.spatial[:-2]) // lanes


WIDE_WINDOW_ROWS = True
"""Whether a stride-1 depthwise conv with a 5x5 or wider window on rows of at most
:data:`WIDE_WINDOW_MAX_WIDTH` pixels that are no whole vector (14 wide with 8 lanes, AVX2) runs
as :func:`channel_vectors` (:func:`_wide_window_row`; False: the channel rows, as before; kept for
A/B runs).  With 16 lanes (AVX-512) those rows are narrower than a vector and took the channel
vectors already.

On the channel rows a 14-wide row is one 8-lane vector and a 6-lane tail per window step, summed
in memory (:func:`_register_row_groups` needs rows of whole vectors): 25 or 49 passes of each
row.  The channel vectors' transposed copies in and out cost the same whatever the window, so
they pay on long windows only (3x3 on 14x14 measured a tie or slower at batch 8: EfficientNet's
480x14x14 + SiLU 1.43 -> 1.71 ms).  Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time,
tools/cpu_rule_ab.py, least of 3 calls x 3 rounds, ms, ORT with its NCHWc reorders in brackets;
outputs bit-identical; bench/results/cpu-dw-batch-2core.md): EfficientNet's 672x14x14 5x5 + SiLU
b1 0.489 -> 0.373 (0.450), b8 4.01 -> 3.14 (3.21), b32 15.9 -> 12.9 (14.9); its 480x14x14 5x5
b8 2.83 -> 2.22 (2.45); a 672x14x14 5x5 with no epilogue b8 2.98 -> 2.36 (3.14); convnext's 384x14x14
7x7 b1 0.341 -> 0.294 (0.334), b8 2.66 -> 2.46 (2.50)."""

WIDE_WINDOW_MIN_STEPS = 25
"""The least window steps (a 5x5 window's) for :data:`WIDE_WINDOW_ROWS`."""

WIDE_WINDOW_MAX_WIDTH = 14
"""The widest output row for :data:`WIDE_WINDOW_ROWS`: 28-wide rows keep the channel rows (the
copies outweigh the window there: 240x28x28 5x5, bench/results/cpu-mnv2-2core.md)."""


def _wide_window_row(mac: MacBlock, ow: int, lanes: int) -> bool:
    """Whether a depthwise conv with output rows ``ow`` wide takes :func:`channel_vectors` for
    its long window (:data:`WIDE_WINDOW_ROWS`): stride 1, rows of at most
    :data:`WIDE_WINDOW_MAX_WIDTH` pixels and no whole number of ``lanes`` vectors, a window of
    :data:`WIDE_WINDOW_MIN_STEPS` steps or more."""
    if not WIDE_WINDOW_ROWS or ow > WIDE_WINDOW_MAX_WIDTH or ow % lanes == 0 or _row_stride(mac) != 1:
        return False
    return math.prod(mac.extents[v] for v in mac.reduce) >= WIDE_WINDOW_MIN_STEPS


STRIDE2_CHANNEL_VECTORS = True
"""Whether a stride-2 depthwise conv whose channels are whole vectors runs as
:func:`channel_vectors` whatever its row width, where its ``batch x channels / lanes``
parallel iterations are at least the target's cores (else the channel rows, one parallel
iteration per channel: mobilenet_v3's 64x112x112 at batch 1 has 4 groups of 16 lanes on the
16-core Xeon).  Rows of 8+ lanes had kept the channel rows (the stride-2 lanes loaded as two
vectors and a shuffle, :data:`STRIDE2_VECTOR_STEPS`); the channel-inner copy of the padded
planes that measured slower on stride-1 rows of 28+ (:func:`vectorizes_channels`) reads a
stride-2 window 4x the output, every FMA a full vector with no shuffle.

Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, tools/cpu_rule_ab.py, least [of
rounds]; outputs bit-identical; bench/results/cpu-b32-nets-2core.md), batch 8 (3 calls x 3
rounds), ms: MobileNetV3's 64x112x112 3x3 3.67 -> 2.79 (ORT alone 5.07), its 72x56x56 5x5
2.00 -> 1.07 (1.11); mobilenet_v2's 96x112x112 3x3 + ReLU6 5.13 -> 4.01, 144x56x56 2.01 ->
1.36; batch 1 (20 calls x 4 rounds): 0.303 -> 0.292 (0.255), 0.212 -> 0.120 (0.119), 0.480
-> 0.436, 0.183 -> 0.146, MobileNetV3's 240x28x28 0.078 -> 0.063, EfficientNet's 144x56x56
5x5 0.419 -> 0.233 (0.217)."""

__all__ = ["channel_rows", "channel_vectors", "vectorizes_channels"]
