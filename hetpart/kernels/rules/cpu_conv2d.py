"""CPU rule for NCHW convolutions (regular, 1x1, strided, grouped, depthwise) with a
fused padding producer and element-wise epilogue (bias, batch-norm, relu, add).

Matches a function whose one reduction block is a multiply-accumulate with a
*windowed* operand (an index like ``oh*stride + ry``).  Two tilings, chosen by
what the shapes allow:

* **output-channel vectors** (regular and 1x1 convolutions): the weight alone depends
  on ``oc``, so it is packed into ``[oc/L, ic, kh, kw, L]`` panels and ``oc`` is
  vectorised; ``ow`` is blocked across registers, its input scalar broadcast.  A
  weight that is a model constant is packed once, at compile time.  This
  works for any stride and any (small) output width -- the NCHWc idea without
  changing the layout the rest of the model sees.
* **output-width vectors** (grouped convolutions, where input and weight both depend
  on the channel): vectorise ``ow`` over the input's rows; the tile is as many
  vectors of one output row as the registers hold, accumulated over the group's
  input channels and the window.

**A strided 1x1 conv** (resnet50's downsamples) is a matmul on a subsampled image: its
strided read goes through a copy of the pixels it reads (:func:`subsampled_1x1`), and
the matmul rule tiles the contraction on it (:func:`.cpu_matmul.schedule_contraction`).

**Channel rows where a tile cannot pay.**  Where the register tile does not pay --
depthwise convolutions (a reduction of only the window's 9 steps does not amortise
the tile's zero-init and write-back; nor, measured, do 5x5 and 7x7 windows:
:func:`_one_channel_per_group`), a window strided along the vector dim (each
vector load becomes a gather), a width full SIMD vectors do not divide -- the
function gets :mod:`.cpu_depthwise`'s channel-row nest instead: channels in parallel,
each channel's padding, window sums (rows of ``ow``, left to LLVM's loop vectoriser,
which unrolls the window and de-interleaves strided loads with shuffles) and fused
epilogue in one pass while the channel is in cache.  (A row-of-vectors tile measured
0.8x of LLVM's plain nest on stride-1 depthwise convs, one thread; the plain nest left
as it was ran padding, window and each epilogue block as passes over the whole
tensor on one thread: EfficientNet-B0's depthwise layers at 1.3-3.7x ONNX Runtime's
time, 2 threads, now 0.8-2.6x, :mod:`.cpu_depthwise`.)  A depthwise conv whose output rows are narrower than a
vector (7x7 and 14x14 planes) gets :func:`.cpu_depthwise.channel_vectors` instead: the vector along
16 channels, not along a row that is all vector tail.  Should a primitive refuse, the function is left as
it was.  Claiming matters: the reduction rule would inline the padding into the
window (6x slower).

The padding block stays separate (inlining it would put a bounds test into the inner
loop): the tiles give it the injective schedule, in parallel rows also below that
schedule's size for parallel loops (:func:`_parallel_padding`), the channel rows
compute it per channel.  A float32 ``exp``/``sigmoid``/``tanh`` epilogue
(EfficientNet's SiLU, ``x * sigmoid(x)``) is computed by
:func:`hetpart.kernels.fast_exp.replace_exp` -- in the tile's or the channel's write-back -- since LLVM makes each a scalar libm call per element.
"""

from __future__ import annotations

import dataclasses
import math

import tvm
import tvm.sym
from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr
from tvm.target import Target

from ..analysis import const_extent, cpu_shape, is_cpu, is_layout_free, mac_at, mac_of, tests_bounds, try_inline_spatial
from ..fast_exp import has_exp, replace_exp
from ..register_tile import PARALLEL_MIN_MACS, mac_count, make_plan, read_index, register_tile, vec_candidates
from . import cpu_blocked_conv
from .cpu_depthwise import channel_rows, channel_vectors, vectorizes_channels
from .cpu_matmul import plane_rows_32, plane_tiled, schedule_contraction


def const_int(e) -> int | None:
    return int(e.value) if isinstance(e, tirx.IntImm) else (int(e) if isinstance(e, int) else None)


MIN_ROWLESS_STEPS = 16
"""Reduction steps per output below which a tile without row blocking is not used
(a 3x3 depthwise window has 9; a grouped conv with 4 channels per group, 36, measured
1.3-1.5x faster tiled).  Depthwise convs never use it (:func:`_one_channel_per_group`)."""


def _one_channel_per_group(mac, image_operand: int) -> bool:
    """Whether the weight (the operand other than the windowed image) has one input
    channel per group -- a depthwise conv, whose reduction is the window alone however
    large: its 5x5 (25 steps) and 7x7 (49) windows pass :data:`MIN_ROWLESS_STEPS` but
    ran faster as channel rows (2 threads, least of 200, tile -> rows: 120x28x28 5x5
    0.116 -> 0.056 ms (ORT 0.060), 240x28x28 5x5 0.448 -> 0.237, convnext's 96x56x56
    7x7 0.725 -> 0.507, 192x28x28 7x7 0.498 -> 0.321; bench/results/cpu-convnets-2core.md)."""
    weight = mac.operands[1 - image_operand][0]
    return len(weight.shape) == 4 and const_int(weight.shape[1]) == 1


def _outputs(mac) -> int:
    n = 1
    for v in mac.spatial:
        n *= mac.extents[v]
    return n


def window_stride(mac, cand) -> int | None:
    """The coefficient of ``cand.var`` in its operand's index (the convolution's
    stride along that dim), None when the index is not linear in it."""
    idx = mac.operands[cand.operand][1][cand.dim]
    coef = tvm.sym.detect_linear_equation(idx, [cand.var])
    if not coef or not isinstance(coef[0], tirx.IntImm):
        return None
    return int(coef[0])


PARALLEL_PADDING_MIN = 1 << 15
"""Padded elements from which a padding pass runs in parallel (:func:`_parallel_padding`):
~32 Ki floats take several microseconds on one core, more than a thread-pool wake-up."""


def _parallel_padding(sch: s_tir.Schedule, keep: set[str]) -> None:
    """The padding blocks ``keep`` names, where the injective schedule left them on one
    thread (fewer than :data:`~..analysis.PARALLEL_MIN_ELEMENTS` outputs) but they have
    at least :data:`PARALLEL_PADDING_MIN`, run with their rows in parallel: the
    convolution after them is parallel, so a serial padding pass is its serial
    fraction -- resnet50's 256x16x16 and 512x9x9, densenet121's 128x30x30 and
    128x16x16, about a tenth of those convs' time on 2 threads, more on 16.

    Out: each such block's serial loops outside its row (the innermost loop, or its
    vectorised part) fused and parallel; a block with a parallel loop already is left
    as it is."""
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(blk).name_hint not in keep:
            continue
        loops = sch.get_loops(blk)
        extents = [const_extent(sch, lp) for lp in loops]
        kinds = [sch.get(lp).kind for lp in loops]
        if len(loops) < 2 or None in extents or tirx.ForKind.PARALLEL in kinds:
            continue
        serial = len(kinds) if all(k == tirx.ForKind.SERIAL for k in kinds) else kinds.index(
            next(k for k in kinds if k != tirx.ForKind.SERIAL))
        outer = loops[: min(serial, len(loops) - 1)]  # a row (or its vectors) stays inside
        if outer and math.prod(extents) >= PARALLEL_PADDING_MIN:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


WIDTH_TILE_MAX_REDUCTION = 64
"""Reduction length (``ic * kh * kw``) up to which a stride-2 convolution whose output
rows are whole vectors is tiled as output channels x row vectors
(:func:`_strided_width_tile`) instead of output-channel vectors: over so short a sum
the write-back weighs most, and the channel-vector tile's is a scatter per vector
(the rows it holds are strided by the plane) with the epilogue repeated per lane.

A longer reduction takes the width tile too where its rows hold two vectors (``ow`` a
multiple of ``2 * lanes``: resnet50's stem, 3->64 7x7 stride 2 on 224x224, 147 steps,
112 = 7 x 16 with 8 lanes, AVX2): 4 output channels x 2 row vectors load 2 vectors
and broadcast 4 weights per 8 FMAs, where the channel-vector tile (2 x 8 channels x 4
columns) broadcast 4 strided image scalars and wrote back transposed.  Measured
(2-core EPYC znver3, AVX2, 2 threads, both builds in one process in settled turns,
least of 40 calls x 3 rounds): 3.56 -> 1.59 ms (ONNX Runtime 2.25);
bench/results/cpu-r50-2core.md.  With one vector a row (AVX-512: 112 = 7 x 16) the
width tile broadcasts one weight per FMA: not taken, unmeasured."""


def _strided_width_tile(sch: s_tir.Schedule, mac, lanes: int, keep: set[str]):
    """A stride-2 convolution with a short reduction (:data:`WIDTH_TILE_MAX_REDUCTION`:
    mobilenet_v2's, v3's and efficientnet_b0's stem, 3->32/16 channels 3x3 on 224x224,
    27 steps) whose output rows are whole ``lanes`` vectors (112 = 7 x 16): returns
    ``(sch, mac, cand)``, a copy of the schedule whose padding block writes its image
    with the columns de-interleaved (``pad[.., h, w] -> pad'[.., h, w % 2, w // 2]``, so
    the window's column ``2*ow + rx`` is ``pad'[.., rx % 2, ow + rx // 2]``: unit
    stride in ``ow``), with the block re-read (:class:`MacBlock`) and its ``ow``
    candidate; the tile is then rows of output channels x ``ow`` vectors, the weight
    broadcast, the output stored along its rows.  None where it does not apply (stride
    1 too: not measured).

    Before (output-channel vectors: 8 output columns x 2 vectors of 16 channels) the
    write-back stored each channel vector to 16 planes, a scatter, with the ReLU6 per
    lane.  Measured (2-core EPYC shared with other jobs, 2 threads, one process, both
    builds in turns, least of 200 calls, ms, a run each): mobilenet_v2's stem 3->32 +
    ReLU6 0.182/0.289/0.183/0.283/0.141/0.139/0.136 -> 0.120/0.190/0.120/0.131/0.095/
    0.100/0.093; mobilenet_v3's 3->16 (one channel vector) a tie, 0.068 -> 0.066-0.067;
    bench/results/cpu-mnv2-2core.md."""
    depth = 1
    for v in mac.reduce:
        depth *= mac.extents[v]
    width = [c for c in vec_candidates(mac, lanes) if c.last and c.lanes == lanes and not mac.is_plain(c.operand)]
    if not width or window_stride(mac, width[-1]) != 2:
        return None
    if depth > WIDTH_TILE_MAX_REDUCTION and mac.extents[width[-1].var] % (2 * lanes):
        return None  # a long sum and one vector a tile: see WIDTH_TILE_MAX_REDUCTION
    buf = mac.operands[width[-1].operand][0]
    pads = [p for p in sch.get_producers(mac.block)
            if sch.get(p).name_hint in keep and sch.get(p).writes[0].source.same_as(buf)]
    if len(pads) != 1 or const_int(buf.shape[-1]) is None or const_int(buf.shape[-1]) % 2:
        return None
    new = sch.copy()
    try:
        new.transform_layout(pads[0], ("write", 0), lambda *ax: [*ax[:-1], ax[-1] % 2, ax[-1] // 2])
    except Exception:  # noqa: BLE001 - TVM refused: keep the channel-vector tile
        return None
    remac = mac_of(new)
    if remac is None:
        return None
    cands = [c for c in vec_candidates(remac, lanes) if c.last and c.lanes == lanes and not remac.is_plain(c.operand)]
    if not cands or window_stride(remac, cands[-1]) != 1:
        return None
    return new, remac, cands[-1]


SUBSAMPLE_STRIDED_1X1 = True
"""Whether a strided 1x1 conv reads its image through a subsampled copy and is tiled as a
plain contraction (:func:`subsampled_1x1`; False: the output-channel tile on the strided
image, kept for A/B runs).  Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, both
builds and ONNX Runtime in one process in settled turns, least of calls x rounds, ms, ORT in
brackets; outputs bit-identical; bench/results/cpu-r50-ds-2core.md), resnet50's 512->1024
stride 2 on 28x28, 256->512 on 56x56, 1024->2048 on 14x14: batch 8 35.9 -> 21.6 (21.4),
25.9 -> 20.5 (23.6), 25.4 -> 23.5 (22.5); batch 32 142.9 -> 87.4 (86.4), 112.0 -> 86.3
(92.2), 159.8 -> 95.3 (93.8); batch 1 2.95 -> 2.91 (2.38), 2.89 -> 2.44 (2.55), 3.01 ->
2.86 (2.70); resnet18's 256->512 on 14x14 at batch 8 2.05 -> 1.40 (1.54), batch 1 0.187 ->
0.161 (0.180)."""


SUBSAMPLE_CHANNELS_INNER = True
"""Whether :func:`subsampled_1x1` lays its copy out channels innermost where no plane tile
follows (False: always as the image; kept for A/B runs).  Measured (as
:data:`SUBSAMPLE_STRIDED_1X1`, batch 8, image layout -> channels innermost, ms): resnet18's
256->512 stride 2 on 14x14 2.05 -> 1.49, resnet50's 1024->2048 on 14x14 25.5 -> 24.0, 256->512
on 56x56 22.2 -> 21.1; batch 1: 0.239 -> 0.160 (ORT 0.178) for the first; resnet50's
512->1024 on 28x28 at batch 8 (a padded plane tile) 24.5 channels inner -> 22.0 as the
image, hence the image's layout there."""


def subsampled_1x1(sch: s_tir.Schedule, mac, plane_tiled):
    """A 1x1 convolution of stride > 1 (``X[n, ic, oh*s, ow*s] * W[oc, ic]``: resnet50's
    downsamples; ``X`` the padded image where there is padding): returns ``(sch, mac,
    copy)``, a copy of the schedule whose image read goes through a subsampled copy of
    the image (``reindex`` of the strided read), the block re-read (:class:`MacBlock`, now a plain contraction) and the
    copy block; None where it does not apply (a window, another index, TVM refused).

    The copy is laid out as the image, ``X'[n, ic, oh, ow] = X[n, ic, oh*s, ow*s]``,
    where ``plane_tiled(sch, mac)`` says the contraction on it gets a tile along the
    plane (:func:`~.cpu_matmul.plane_tiled`: contiguous vectors of the plane); else
    channels innermost, ``X'[n, oh, ow, ic]``, for the output-channel tile, which
    broadcasts one image scalar per row and reduction step: consecutive steps then read
    consecutive floats (ORT's NCHWc blocks do the same).

    On the strided image that tile's next step read a plane further with every other
    column skipped: a new cache line per scalar, half of each line used, and no order a
    prefetcher follows.  The copy is one pass over a quarter of the image."""
    if not SUBSAMPLE_STRIDED_1X1:
        return None
    image = next((o for o in (0, 1) if not mac.is_plain(o)), None)
    if image is None or not mac.is_plain(1 - image):
        return None
    buf, idx = mac.operands[image]
    strided = 0
    for e in idx:
        if isinstance(e, (tirx.Var, tirx.IntImm)):
            continue
        if not (isinstance(e, tirx.Mul) and isinstance(e.a, tirx.Var) and isinstance(e.b, tirx.IntImm)
                and int(e.b) > 1 and any(e.a.same_as(v) for v in mac.spatial)):
            return None  # a window (oh*s + ry) or another index
        strided += 1
    if not strided:
        return None
    image_order = _subsampled(sch, mac, buf, idx, as_image=True)
    if image_order is not None and (not SUBSAMPLE_CHANNELS_INNER or plane_tiled(image_order[0], image_order[1])):
        return image_order
    return _subsampled(sch, mac, buf, idx, as_image=False)


def _subsampled(sch: s_tir.Schedule, mac, buf, idx, *, as_image: bool):
    """:func:`subsampled_1x1`'s copy of ``sch`` with the read of ``buf`` (indexed ``idx``)
    reindexed, the copy laid out and iterated as the image (``as_image``) or in the
    block's iterator order (``(n, oh, ow, ic)``): ``(sch, mac, copy)``, or None."""
    new = sch.copy()
    try:
        copy = new.reindex(mac.block, ("read", read_index(new, mac.block, buf)))
    except Exception:  # noqa: BLE001 - TVM refused: keep the strided tile
        return None
    if as_image:
        # reindex indexes the copy in the block's iterator order ((n, oh, ow, ic)); lay
        # it out, and iterate it, as the image ((n, ic, oh, ow)).
        block_vars = [iv.var for iv in new.get(mac.block).iter_vars]
        used = [v for v in block_vars if any(v.same_as(u) for e in idx for u in collect_vars_used_in_prim_expr(e))]
        order = [next(i for i, v in enumerate(used) if any(v.same_as(u) for u in collect_vars_used_in_prim_expr(e)))
                 for e in idx if not isinstance(e, tirx.IntImm)]
        if sorted(order) != list(range(len(used))):
            return None
        try:
            new.transform_layout(copy, ("write", 0), lambda *ax: [ax[d] for d in order])
            dtype = str(new.get(copy).iter_vars[0].dom.extent.ty)
            new.transform_block_layout(copy, tirx.IndexMap.from_func(
                lambda *ax: [ax[d] for d in order], ndim=len(order), index_dtype=dtype))
        except Exception:  # noqa: BLE001 - TVM refused: keep the strided tile
            return None
    remac = mac_of(new)
    if remac is None or not (remac.is_plain(0) and remac.is_plain(1)):
        return None
    return new, remac, copy


CHANNELS_INNER_WINDOW = True
"""Whether a stride-1 windowed convolution's padded image is laid out channels innermost
and its window summed channels innermost (:func:`channels_inner_window`; False: the
image's layout, the window inside each channel; kept for A/B runs)."""

CHANNELS_INNER_MAX_OUT = 128
"""Output channels up to which :func:`channels_inner_window` applies.  Measured (2-core EPYC
znver3, AVX2, 1 thread, CPU time, before / after / ORT in one process, least of 10 calls x 4
rounds, ms; bench/results/cpu-growth-3x3-2core.md): densenet121's 128->32 on 56x56 2.72 ->
2.59 (ORT 2.51), on 28x28 0.672 -> 0.645 (0.619); resnet50's 64->64 on 56x56 2.64 -> 2.45
(2.49), 128->128 on 28x28 2.66 -> 2.46 (2.43); batch 8 0.88-0.96x too; inception_v3's 64->96
and 96->96 on 35x35 a tie (1.41 / 1.42, 2.11 / 2.14).  Wider ones (resnet50's 256 and 512 on
14x14 and 7x7) fail the plane bound, unmeasured."""

CHANNELS_INNER_MIN_PLANE = 28 * 28
"""Output pixels of an image (rows x columns) from which :func:`channels_inner_window` applies:
on 14x14 the copy's transposition weighs more (densenet's 128->32 0.170 -> 0.223 ms), on 7x7
a tie (0.087 both); 1 thread, bench/results/cpu-growth-3x3-2core.md."""

CHANNELS_INNER_WIDE = True
"""Whether a stride-1 windowed conv of :data:`CHANNELS_INNER_WIDE_MIN_OUT` to
:data:`CHANNELS_INNER_WIDE_MAX_OUT` output channels takes :func:`channels_inner_window` on any
plane of :data:`CHANNELS_INNER_WIDE_MIN_PLANE`+ pixels (resnet50's 256->256 3x3 on 14x14, 512->512
on 7x7), not only on 28x28+ (False: the bounds before, kept for A/B runs).  With 256+ output
channels the transposing copy of the padded image is well under 1% of the work (its 16-channel
panels re-read the copy 16-32 times), and each column's broadcasts become one contiguous stream
where they stepped a padded plane (9x9 or 16x16 floats) per input channel.  Measured:
bench/results/cpu-r50-dn-b1-2core.md."""

CHANNELS_INNER_WIDE_MIN_OUT = 256
"""The least output channels of :data:`CHANNELS_INNER_WIDE` (densenet's 128->32 on 14x14 was 1.31x
slower channels-inner: :data:`CHANNELS_INNER_MIN_PLANE`)."""

CHANNELS_INNER_WIDE_MAX_OUT = 512
"""The most output channels of :data:`CHANNELS_INNER_WIDE` (resnet50's widest 3x3)."""

CHANNELS_INNER_WIDE_MIN_PLANE = 7 * 7
"""The least output pixels of an image for :data:`CHANNELS_INNER_WIDE`."""


def _channels_inner_bounds(out_channels: int, plane: int) -> bool:
    """Whether a conv of ``out_channels`` on a ``plane``-pixel image is within
    :func:`channels_inner_window`'s bounds: :data:`CHANNELS_INNER_MAX_OUT` and
    :data:`CHANNELS_INNER_MIN_PLANE`, or :data:`CHANNELS_INNER_WIDE`'s."""
    if out_channels <= CHANNELS_INNER_MAX_OUT and plane >= CHANNELS_INNER_MIN_PLANE:
        return True
    return (CHANNELS_INNER_WIDE and CHANNELS_INNER_WIDE_MIN_OUT <= out_channels <= CHANNELS_INNER_WIDE_MAX_OUT
            and plane >= CHANNELS_INNER_WIDE_MIN_PLANE)


CHANNELS_INNER_MIN_IN = 16
"""Input channels from which :func:`channels_inner_window` applies (a stem's 3 channels
would make the copy a transposition for a sum of 27 steps)."""


CHANNELS_INNER_LINE_WINDOWS = True
"""Whether :func:`channels_inner_window` also takes a one-dimensional window (inception_v3's 1x7 /
7x1 convs on 17x17 and 1x3 / 3x1 on 8x8: a reduction over the channels and the taps of one axis)
with up to :data:`CHANNELS_INNER_LINE_MAX_OUT` output channels, on any plane (False: the image's
layout, kept for A/B runs).  A line window sums 3-7 taps per channel where a 3x3 sums 9 in two
axes; in the image's layout its broadcasts stepped a padded plane per channel.  Measured (2-core EPYC
znver3, AVX2, 1 thread, CPU time, before / after / ORT in one process, least of 10 calls x 4
rounds, ms; bench/results/cpu-inception-2core.md): 1x7 192->192 2.07 -> 1.68 (ORT 1.75), 128->128
0.89 -> 0.70 (0.76); 7x1 192->192 1.65 -> 1.60 (1.57), 128->192 1.08 -> 1.04 (1.00); 1x3 384->384 on
8x8 0.68 -> 0.64 (0.71), 3x1 0.69 -> 0.61 (0.64).  (A 3x3 with 192 outputs on 73x73 measured slower
in that layout: :data:`CHANNELS_INNER_MAX_OUT` stays.)"""

CHANNELS_INNER_LINE_MAX_OUT = 384
"""Output channels up to which :data:`CHANNELS_INNER_LINE_WINDOWS` applies (inception's 1x3 / 3x1
have 384)."""


def channels_inner_window(sch: s_tir.Schedule, mac, keep: set[str], image: int):
    """A stride-1 convolution with a window (``X[n, ic, oh + ry, ow + rx] * W[oc, ic, ry,
    rx]``, ``X`` a padding block's output; ``image`` the operand index of ``X``) with
    :data:`CHANNELS_INNER_MAX_OUT` output channels or fewer, :data:`CHANNELS_INNER_MIN_IN`+
    input channels and a :data:`CHANNELS_INNER_MIN_PLANE`+ output plane -- or a line window
    (``X[n, ic, oh, ow + rx]`` or ``X[n, ic, oh + ry, ow]``, :data:`CHANNELS_INNER_LINE_WINDOWS`)
    with :data:`CHANNELS_INNER_LINE_MAX_OUT` output channels or fewer on any plane: returns ``(sch,
    mac)``, a copy of the schedule whose padding block writes ``X[n, h, w, ic]``
    (channels innermost, its channel loop innermost) and the block re-read with its
    reduction ordered ``(ry, rx, ic)``; None where it does not apply.  The caller then
    packs the weight in that order (:func:`_window_outside_channels`).

    The output-channel tile (4 columns x 2 channel vectors on AVX2) broadcasts one image
    scalar per column and reduction step: in the image's layout the next step read a
    plane further (densenet's 128 planes of 58x58 per tile), here the next float, each
    column a contiguous stream of the 3 rows' 6 x 128 floats (ORT/MLAS's NCHWc input
    blocks do the same).  The copy is one transposing pass over the padded image."""
    if not CHANNELS_INNER_WINDOW:
        return None
    buf, idx = mac.operands[image]
    line = CHANNELS_INNER_LINE_WINDOWS and len(mac.reduce) == 2
    if len(idx) != 4 or (len(mac.reduce) != 3 and not line):
        return None
    oc = [v for v in mac.spatial if mac.uses(1 - image, v)]
    if len(oc) != 1:
        return None
    ic = [v for v in mac.reduce if isinstance(idx[1], tirx.Var) and idx[1].same_as(v)]
    if len(ic) != 1 or mac.extents[ic[0]] < CHANNELS_INNER_MIN_IN:
        return None
    plane, windowed = 1, 0
    for e in idx[2:]:  # stride 1: out + r, out an output iterator, r a window iterator (a line: one bare out)
        if line and isinstance(e, tirx.Var) and any(v.same_as(e) for v in mac.spatial):
            plane *= mac.extents[[v for v in mac.spatial if v.same_as(e)][0]]
            continue
        if not (isinstance(e, tirx.Add) and isinstance(e.a, tirx.Var) and isinstance(e.b, tirx.Var)):
            return None
        out = [v for v in mac.spatial if v.same_as(e.a) or v.same_as(e.b)]
        if len(out) != 1:
            return None
        plane *= mac.extents[out[0]]
        windowed += 1
    if line:
        if windowed != 1 or mac.extents[oc[0]] > CHANNELS_INNER_LINE_MAX_OUT:
            return None
    elif not _channels_inner_bounds(mac.extents[oc[0]], plane):
        return None
    pads = [p for p in sch.get_producers(mac.block)
            if sch.get(p).name_hint in keep and sch.get(p).writes[0].source.same_as(buf)]
    if len(pads) != 1:
        return None
    new = sch.copy()
    try:
        new.transform_layout(pads[0], ("write", 0), lambda n, c, h, w: [n, h, w, c])
    except Exception:  # noqa: BLE001 - TVM refused: keep the image's layout
        return None
    remac = mac_of(new)
    if remac is None:
        return None
    try:
        loops = new.get_loops(pads[0])
        if len(loops) >= 3:  # write the copy in its order: the channel loop innermost
            new.reorder(loops[-2], loops[-1], loops[-3])
    except Exception:  # noqa: BLE001 - TVM refused: the copy written in the image's order
        pass
    channel = [v for v in remac.reduce if any(isinstance(e, tirx.Var) and e.same_as(v) for e in remac.operands[image][1])]
    if len(channel) != 1:
        return None
    return new, dataclasses.replace(remac, reduce=[v for v in remac.reduce if not v.same_as(channel[0])] + channel)


def _window_outside_channels(sch: s_tir.Schedule, mac, weight) -> None:
    """The packed weight panel ``[oc/L, ic, kh, kw, L]`` laid out ``[oc/L, kh, kw, ic, L]``:
    the order :func:`channels_inner_window`'s reduction reads it in."""
    for blk in sch.get_producers(mac.block):
        b = sch.get(blk)
        if any(r.source.same_as(weight) for r in b.reads) and len(b.writes[0].source.shape) == 5:
            try:
                sch.transform_layout(blk, ("write", 0), lambda a, i, h, w, lane: [a, h, w, i, lane])
            except Exception:  # noqa: BLE001 - TVM refused: the panel as packed
                pass


FUSED_WINDOW_PLANE = True
"""Whether a windowed conv under the output-channel tile whose output rows are at most
:data:`FUSED_WINDOW_MAX_WIDTH` wide and whose default row count does not divide them (resnet50's
3x3s on a 7x7 output: 7 columns tiled 4 + 3, 8 and 6 accumulators) iterates its output plane fused,
``q = oh * W + ow``, its window read at ``(q // W) * s + ry, (q % W) * s + rx``
(:func:`fused_window_plane`), under a tile of plane rows that need not divide the plane
(``make_plan(exact_wide=False)``: 5 rows x 2 vectors on AVX2, 49 = 9 x 5 + 4); False: the image's
own rows (kept for A/B runs).  Measured: bench/results/cpu-r50-3x3-2core.md."""

FUSED_WINDOW_ROWS_32 = False
"""Whether a 32-register target (AVX-512) also fuses such a plane where its 7 rows divide the
7 columns, to tile up to 13 plane rows x 2 vectors (26 accumulators, 49 = 3 x 13 + 10: 4 row
tiles, not 7; the weight panel read once per 13 pixels; the ragged tile split off:
:func:`.cpu_matmul.plane_rows_32`).  Off: it changes only AVX-512 code, which the 2-core AVX2
box cannot run; device step 89 A/Bs it (``--after ...FUSED_WINDOW_ROWS_32=1``)."""

FUSED_WINDOW_MAX_WIDTH = 7
"""The widest output rows :data:`FUSED_WINDOW_PLANE` fuses (a 14-wide row's 5 + 5 + 4 tiles
lose less to the ragged one)."""


def _fuses_plane(mac, plan, shape) -> bool:
    """Whether :data:`FUSED_WINDOW_PLANE` takes ``plan``: its row iterator the output's innermost
    index, at most :data:`FUSED_WINDOW_MAX_WIDTH` wide, and its row tile leaves a ragged last
    tile there (or, :data:`FUSED_WINDOW_ROWS_32`, the target has 32 vector registers)."""
    if not FUSED_WINDOW_PLANE or plan.row is None or not mac.out_indices:
        return False
    w = mac.out_indices[-1]
    if not (isinstance(w, tirx.Var) and w.same_as(plan.row) and mac.extents[plan.row] <= FUSED_WINDOW_MAX_WIDTH):
        return False
    return mac.extents[plan.row] % plan.rows != 0 or (FUSED_WINDOW_ROWS_32 and shape.registers >= 32)


def fused_window_plane(sch: s_tir.Schedule, mac):
    """The output plane of a windowed conv fused: returns ``(sch, mac)``, a copy of ``sch``
    whose block iterates ``(.., oh * W + ow, ..)`` (its window read at ``q // W``, ``q % W``)
    and writes through a ``[.., oc, oh * W + ow]`` buffer (the copy-back to the output joins
    the tile's write-back with the epilogue), or None where the output's two innermost indices
    are not the block's two adjacent iterators ``oh, ow`` or TVM refuses.  Invariant: the
    same sums in the same order per output pixel; only which pixels share a register tile
    changes."""
    if len(mac.out_indices) < 2:
        return None
    h, w = mac.out_indices[-2:]
    if not (isinstance(h, tirx.Var) and isinstance(w, tirx.Var)):
        return None
    block = sch.get(mac.block)
    ivs = [iv.var for iv in block.iter_vars]
    hi = next((i for i, v in enumerate(ivs) if v.same_as(h)), None)
    if hi is None or hi + 1 >= len(ivs) or not ivs[hi + 1].same_as(w):
        return None
    width = mac.extents[w]
    dtype = str(block.iter_vars[0].dom.extent.ty)
    fused = tirx.IndexMap.from_func(
        lambda *vs: list(vs[:hi]) + [vs[hi] * width + vs[hi + 1]] + list(vs[hi + 2:]),
        ndim=len(ivs), index_dtype=dtype)
    new = sch.copy()
    try:
        new.transform_block_layout(mac.block, fused)
        new.reindex(mac.block, ("write", 0))
    except Exception:  # noqa: BLE001 - TVM refused: the image's own rows
        return None
    remac = mac_at(new, mac.block)
    if remac is None:
        return None
    # the caller's reduction order (channels_inner_window's channels innermost), by position
    # among the block's reduction iterators (the transform renames them, in order)
    old = [v for v in ivs if any(v.same_as(r) for r in mac.reduce)]
    if len(old) != len(remac.reduce):
        return None
    order = [remac.reduce[next(i for i, v in enumerate(old) if v.same_as(r))] for r in mac.reduce]
    return new, dataclasses.replace(remac, reduce=order)


class CpuConv2d(ScheduleRule):
    """Register-tiled, parallel, vectorised direct convolution (see module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        exp_epilogue = has_exp(func)
        func = replace_exp(func)  # exp/sigmoid epilogues as vector code, here and where left as it was
        sch = s_tir.Schedule(func)
        # Keep padding blocks (bounds tests) out of the inner loop; inline the rest.
        root = sch.get_sblock("root")
        keep = {sch.get(b).name_hint for b in sch.get_child_blocks(root) if tests_bounds(sch.get(b))}
        try_inline_spatial(sch, keep=keep)
        mac = mac_of(sch)
        if mac is None:
            return None
        shape = cpu_shape(target)
        lanes = shape.lanes(str(mac.out.dtype))
        if mac.is_plain(0) and mac.is_plain(1):
            # a plain contraction: the matmul rule's job -- but a blocked 1x1 of one input block
            # (its ``ic // c`` folded to 0) is the blocked tile's (cpu_blocked_conv.PLAIN_ONE_BLOCK)
            done = (self._blocked(sch, mac, shape, lanes) if cpu_blocked_conv.BLOCKED_TILE and exp_epilogue
                    and cpu_blocked_conv.PLAIN_ONE_BLOCK and len(mac.out_indices) == 5 else None)
            if done is not None and mac_count(mac) >= PARALLEL_MIN_MACS:
                _parallel_padding(done, keep)
            return done
        if cpu_blocked_conv.BLOCKED_TILE:
            done = self._blocked(sch, mac, shape, lanes)
            if done is not None:
                if mac_count(mac) >= PARALLEL_MIN_MACS:  # the tile runs in parallel
                    _parallel_padding(done, keep)
                return _prefetched(done)
        sub = subsampled_1x1(sch, mac, lambda s, m: plane_tiled(func, s, m, lanes))
        if sub is not None:
            done = schedule_contraction(func, sub[0], sub[1], target, copies=(sub[2],))
            if done is not None:
                return done
        cands = vec_candidates(mac, lanes)
        # Output-channel vectors: a plain dim of one operand (the weight), packed.
        plain = [c for c in cands if c.plain and self._is_weight(mac, c.operand)]
        rows = _strided_width_tile(sch, mac, lanes, keep) if plain else None
        if rows is not None:
            sch, mac, width_cand = rows
            register_tile(sch, mac, make_plan(mac, width_cand, shape, width_cand.lanes, pack=False), shape)
            if mac_count(mac) >= PARALLEL_MIN_MACS:
                _parallel_padding(sch, keep)
            return sch
        inner = None
        if plain:
            inner = channels_inner_window(sch, mac, keep, 1 - plain[0].operand)
            again = [c for c in vec_candidates(inner[1], lanes) if c.plain and self._is_weight(inner[1], c.operand)] \
                if inner is not None else []
            if again:  # the re-read block still vectorises over output channels: take the new layout
                sch, mac, plain = inner[0], inner[1], again
                weight = mac.operands[plain[0].operand][0]
            else:
                inner = None
            prepack = is_layout_free(func, mac.operands[plain[0].operand][0])
            plan = make_plan(mac, plain[0], shape, plain[0].lanes, pack=not plain[0].last, prepack=prepack)
            fused = fused_window_plane(sch, mac) if _fuses_plane(mac, plan, shape) else None
            again = [c for c in vec_candidates(fused[1], lanes) if c.plain and self._is_weight(fused[1], c.operand)] \
                if fused is not None else []
            if again:  # the fused plane's rows under the same weight vectors (FUSED_WINDOW_PLANE)
                sch, mac, plain = fused[0], fused[1], again
                weight = mac.operands[plain[0].operand][0]
                plan = make_plan(mac, plain[0], shape, plain[0].lanes, pack=not plain[0].last, prepack=prepack,
                                 exact_wide=False)
                if FUSED_WINDOW_ROWS_32 and (rows := plane_rows_32(mac, plan, shape)) != plan.rows:
                    plan = dataclasses.replace(plan, rows=rows, split_ragged=True)
        else:
            # Output-width vectors: the innermost windowed dim, loads used as they are.
            width = [c for c in cands if c.last]
            if not width or window_stride(mac, width[-1]) != 1:
                return self._rows(func, sch, mac, lanes, shape.cores)  # see the module docstring
            plan = make_plan(mac, width[-1], shape, width[-1].lanes, pack=False)
            if plan.row is None and (mac_count(mac) < MIN_ROWLESS_STEPS * _outputs(mac)
                                     or _one_channel_per_group(mac, width[-1].operand)):
                return self._rows(func, sch, mac, lanes, shape.cores)  # too little reuse for a tile (docstring)
        register_tile(sch, mac, plan, shape)
        if inner is not None:
            _window_outside_channels(sch, mac, weight)
        if mac_count(mac) >= PARALLEL_MIN_MACS:  # the tile runs in parallel
            _parallel_padding(sch, keep)
        return sch

    @staticmethod
    def _blocked(sch: s_tir.Schedule, mac, shape, lanes: int) -> s_tir.Schedule | None:
        """A channel-blocked convolution's tile (:mod:`.cpu_blocked_conv`), or a blocked
        depthwise one's (:func:`.cpu_blocked_conv.depthwise_tile`, switch
        ``BLOCKED_DEPTHWISE_TILE``), on a copy of ``sch``; None (not such a block, no plan, or
        a primitive refused)."""
        bc = cpu_blocked_conv
        if bc.blocked_conv(mac) is not None:
            return _tile_on_copy(sch, mac, bc.blocked_conv, lambda m, c: bc.blocked_plan(m, c, shape, lanes),
                                 lambda s, m, c, p: bc.blocked_tile(s, m, c, p, shape))
        if bc.BLOCKED_DEPTHWISE_TILE:
            return _tile_on_copy(sch, mac, bc.blocked_depthwise, lambda m, c: bc.depthwise_plan(m, c, shape, lanes),
                                 bc.depthwise_tile)
        return None

    @staticmethod
    def _rows(func, sch, mac, lanes: int, cores: int = 1) -> s_tir.Schedule:
        """The channel-vector or channel-row schedule (:mod:`.cpu_depthwise`; ``cores``: the
        target's), else ``func`` as it was."""
        if vectorizes_channels(mac, lanes, cores):
            try:
                weight_free = is_layout_free(func, mac.operands[1][0]) or is_layout_free(func, mac.operands[0][0])
                vec = sch.copy()
                if channel_vectors(vec, mac, lanes, weight_free):
                    return vec
            except Exception:  # noqa: BLE001 - a primitive refused: channel rows instead
                pass
        try:
            if channel_rows(sch, mac, lanes):
                return sch
        except Exception:  # noqa: BLE001 - a primitive refused: leave the nest to LLVM
            pass
        return s_tir.Schedule(func)

    @staticmethod
    def _is_weight(mac, operand: int) -> bool:
        """The operand indexed by bare iterators only (the weight, not the window)."""
        return mac.is_plain(operand)


def _prefetched(sch: s_tir.Schedule) -> s_tir.Schedule:
    """``sch``, or a schedule of its function with the weight prefetches its tile asked for
    (:func:`..weight_prefetch.insert`: after every primitive, the prefetches are no blocks)."""
    from .. import weight_prefetch

    func = weight_prefetch.insert(sch.mod["main"])
    return sch if func.same_as(sch.mod["main"]) else s_tir.Schedule(func)


def _tile_on_copy(sch: s_tir.Schedule, mac, recognise, plan_of, tile) -> s_tir.Schedule | None:
    """``tile(copy, mac', conv', plan)`` on a copy of ``sch`` (``mac'``, ``conv'``: the copy's
    block as ``recognise`` reads it), where ``recognise(mac)`` and ``plan_of(mac, conv)`` give
    one; None where either does not, or a primitive refused (the caller's schedule untouched)."""
    conv = recognise(mac)
    plan = plan_of(mac, conv) if conv is not None else None
    if plan is None:
        return None
    new = sch.copy()
    mac = mac_of(new)  # the copy's block and iterators
    conv = recognise(mac) if mac is not None else None
    if conv is None:
        return None
    try:
        tile(new, mac, conv, plan)
    except Exception:  # noqa: BLE001 - a primitive refused: the generic tile
        return None
    return new
