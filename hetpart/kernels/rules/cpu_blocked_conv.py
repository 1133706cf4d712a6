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
:data:`FEWER_SPARE_WIDE` (AVX-512's wider tiles), :data:`ROWS_OUTSIDE_BLOCKS` (large images' rows
outside the block groups), :data:`STACK_TILE` (the accumulators on the stack),
:data:`BLOCKED_DEPTHWISE_TILE`, :data:`DEPTHWISE_PADDING_IN_ROWS`, :data:`DEPTHWISE_ROW_GROUPS`
(off), :data:`BATCH_IMAGE_PAIRS` (off: a pair of images in a 7-wide tile; the strides it takes:
:data:`IMAGE_PAIRS_STRIDES`).  Invariant: only reorders, splits and caches -- every output is the same sum in the same
order over the reduction as the unscheduled block, up to FMA contraction.

The rule's entry point: it composes the recognition (:mod:`..blocked_conv_match`:
:class:`BlockedConv`, :func:`blocked_conv`, :class:`BlockedPlan`), the register tile's plan
(:func:`blocked_plan`, :func:`pressure`, :func:`spare_registers`), the tile schedules
(:func:`blocked_tile` and its variants: plane groups, pixel tiles, rows outside the blocks, all
blocks) and the batch side (:mod:`..blocked_conv_batch`: per-image / grouped padding, the block
groups split outside the batch, the padding pass as rows).  Every switch of the three modules
lives here, where tools and tests set it (``hetpart.kernels.rules.cpu_blocked_conv.NAME``); the
other two read theirs from here at call time and hold no copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import tvm
from tvm import s_tir, tirx

from ..analysis import (
    CpuShape, MacBlock, PARALLEL_MIN_ELEMENTS, buffer_bytes, const_extent, fuse_epilogue, loop_of, parallel_vectorize,
)
from .. import ragged_rows, stack_tiles, weight_prefetch
from ..register_tile import PARALLEL_MIN_MACS, mac_count, thread_efficiency
from ..blocked_conv_match import (  # recognition (PLAIN_INPUT stays here: module docstring)
    BlockedConv, BlockedPlan, _at, _blocked_out, _is, _reads, _unit, _window, blocked_conv, conv_strides,
)
from ..blocked_conv_batch import (  # the batch side (its switches stay here: module docstring)
    _pad_per_image, _padding_block, _per_image_padding, group_split, pad_group_images, padding_rows,
)

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

SPARE_REGISTERS_WIDE = 1
""":data:`SPARE_REGISTERS` on a CPU of 32 vector registers (AVX-512) while
:data:`FEWER_SPARE_WIDE` is on: there LLVM folds the broadcast data scalar into its FMA
(``vfmadd231ps zmm, zmm, [mem]{1to16}``) and needs no temporaries beyond the loaded operand
:func:`pressure` already counts, so 2 blocks x 14 columns (pressure 31) fits where 3 spare
registers allowed 2 x 7 (17) on 14- and 28-wide images and 2 x 8 on 56.  Measured (the dev
box's AVX-512 Xeon, 1 thread, CPU time, each kernel alone in one process in turns, least of
10 x 3, resnet50 NCHW16c): 3x3 256 on 14x14 1.327 -> 1.193 ms (0.90), 3x3 128 on 28x28
1.372 -> 1.235 (0.90), 3x3 64 on 56x56 1.369 -> 1.289 (0.94), 1x1 1024->256 on 14x14 1.236
-> 1.163 (0.94), 1x1 64->256 on 56x56 0.631 -> 0.619 (0.98); 7-wide images keep 2 x 7."""

FEWER_SPARE_WIDE = True
"""Whether a 32-register CPU's blocked tiles leave :data:`SPARE_REGISTERS_WIDE` registers
spare rather than :data:`SPARE_REGISTERS` (False: as before; kept for A/B runs,
``--before hetpart.kernels.rules.cpu_blocked_conv.FEWER_SPARE_WIDE=0``).  16-register CPUs
(AVX2) are unchanged."""


FEWER_SPARE_MIN_STEPS = 128
"""The least reduction (``ic * kh * kw`` steps) for :data:`FEWER_SPARE_WIDE`.  In resnet50
(NCHW16c, in whole runs, 1 AVX-512 thread, least of 30), before :data:`STACK_TILE`, the short 1x1s
with a residual add lost with 2 x 14: 64->256 on 56x56 (64 steps) 2.254 -> 2.362 ms (1.05),
128->512 on 28x28 (128) 2.405 -> 2.547 (1.06) -- each tile then a workspace allocation and a
store / reload of its accumulators.  With the tile on the stack (each kernel alone, least of
10 x 4): 128->512 on 28x28 + residual 0.577 -> 0.538 (0.93), without 0.542 -> 0.507 (0.94); the
64-step ones on 56x56 1.00-1.01 (kept on 2 x 8)."""


SHORT_SUMS_NARROW = False
"""Whether :data:`FEWER_SPARE_WIDE` starts at :data:`SHORT_SUMS_MIN_STEPS` reduction steps rather
than :data:`FEWER_SPARE_MIN_STEPS`: a 1x1 of 128-255 input channels on 32 registers keeps the
3-spare tile (2 blocks x 7 columns, 14 accumulators) instead of 2 x 14 (28, pressure 31).  False:
from 128, as before.  Measured (the znver4 AVX-512 dev box, 1 thread, CPU time, each kernel alone,
NCHW16c, 3 calls x 3 rounds; bench/results/cpu-b32-dw-rows-2core.md): mobilenet_v2 b32 144->32 on
28x28 0.77x, 192->32 + residual 0.94x, 192->64 on 14x14 0.95x; efficientnet_b0 b32 144->40 on
28x28 0.83x; resnet50 b8 128->512 + residual + ReLU on 28x28 0.91x (the Xeon had measured 0.93x
the other way at batch 1: :data:`FEWER_SPARE_MIN_STEPS`), its 7x7 stem (147 steps) 0.96x."""

SHORT_SUMS_MIN_STEPS = 256
"""The least reduction for :data:`FEWER_SPARE_WIDE` under :data:`SHORT_SUMS_NARROW` (384-step 1x1s
kept 2 x 14: 384->64 / 384->96 on 14x14 measured 1.06-1.11x with 2 x 7 / 3 x 7)."""


def spare_registers(shape: CpuShape, steps: int | None = None) -> int:
    """The vector registers a blocked conv tile of a ``steps``-long reduction (None: any)
    leaves free on ``shape``: :data:`SPARE_REGISTERS`, or :data:`SPARE_REGISTERS_WIDE` with 32
    under :data:`FEWER_SPARE_WIDE` from :data:`FEWER_SPARE_MIN_STEPS` steps
    (:data:`SHORT_SUMS_MIN_STEPS` under :data:`SHORT_SUMS_NARROW`)."""
    least = SHORT_SUMS_MIN_STEPS if SHORT_SUMS_NARROW else FEWER_SPARE_MIN_STEPS
    wide = FEWER_SPARE_WIDE and shape.registers >= 32 and (steps is None or steps >= least)
    return SPARE_REGISTERS_WIDE if wide else SPARE_REGISTERS


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

BATCH_FULL_REGISTERS = True
"""Whether a batched convolution (``n`` > 1) on a CPU of 32 vector registers (AVX-512) whose
reduction (``ic * kh * kw``) is at least :data:`FULL_REGISTERS_MIN_REDUCTION` leaves
:data:`SPARE_REGISTERS_FULL` registers free rather than :data:`SPARE_REGISTERS`: 2 blocks x 14
columns (pressure 31) where the output width is 14, 28 or 56, which 3 spare registers ruled out
(2 x 7 or 2 x 8).  AVX-512 FMAs take their broadcast operand from memory (``{1to16}``), so
with the columns outside the blocks the tile holds its accumulators and the blocks' weight
vectors, 30 of 32.  Measured (1 AVX-512 thread, CPU time, the kernel alone, least of 5 x 3,
resnet50 at batch 8, NCHW16c, ms; 2 x 7 or 2 x 8 -> 2 x 14): 256 3x3 on 14x14 12.04 -> 10.67,
128 3x3 on 28x28 11.93 -> 11.18, 64 3x3 on 56x56 12.28 -> 11.61, 1024 -> 256 1x1 on 14x14
5.69 -> 5.44; 64 -> 256 1x1 on 56x56 (+ residual add) 6.75 -> 7.85, hence the reduction
floor.  In resnet50 at batch 8, timed inside whole runs: 256 3x3 on 14x14 0.88x, 128 3x3 on 28x28
0.92x, the model's kernels 0.97x.  Batch 1 keeps :data:`SPARE_REGISTERS` (not measured here:
its tiles were being reworked beside this; bench/results/cpu-batch-blocked-1core.md)."""

SPARE_REGISTERS_FULL = 1
""":data:`SPARE_REGISTERS` where :data:`BATCH_FULL_REGISTERS` applies."""

FULL_REGISTERS_MIN_REDUCTION = 576
"""The shortest reduction (``ic * kh * kw``) :data:`BATCH_FULL_REGISTERS` applies to: every 3x3
of 64 input channels or more, 1x1s of 1024 or more.  Measured in resnet50 at batch 8 (each conv
alone, as :data:`BATCH_FULL_REGISTERS`, 2 x 14 against 2 x 7/8): the 3x3s 0.87-0.97x, 1x1s of
1024 inputs 0.96-0.98x, of 512 0.94-1.06x, of 256 1.02-1.11x, 128 -> 512 on 28x28 (+ add)
1.27x -- over a short reduction the 28-accumulator write-back and its epilogue weigh more."""


PLAIN_INPUT = True
"""Whether a convolution from a plain ``NCHW`` image to a blocked output (``conv2d_NCHW_to_NCHWc``:
the import's first conv of a 3-channel image, :mod:`hetpart.importer.conv_layout`) is read as a
blocked one of one-channel input blocks (:func:`..blocked_conv_match._plain_input`) and gets :func:`blocked_tile`,
rather than the generic tile (False; kept for A/B runs)."""


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
    :func:`pressure` fits ``shape.registers`` less :func:`spare_registers`, of the least
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
    if pixel_tiles(mac, conv, shape):
        return BlockedPlan(2, PIXEL_COLUMNS, vectors, width)
    steps = mac.extents[conv.ic]
    for v in conv.window:
        steps *= mac.extents[v]
    budget = shape.registers - _spare(mac, conv, shape, steps)
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
    if top is not None and top[1].blocks == 1:  # ALL_BLOCKS: every chunk in one tile, columns to fill
        columns = (budget - 1 - chunks * vectors) // (chunks * vectors)
        if all_blocks_fit(mac, conv, shape, vectors, budget):
            return BlockedPlan(chunks, columns, vectors, width)
        if ALL_BLOCKS_PLANE and all_blocks_fit(mac, conv, shape, vectors, budget, any_weight=True):
            whole = BlockedPlan(chunks, columns, vectors, width, True)
            if plane_1x1(mac, conv) and plane_ic_groups(mac, conv, whole, shape) is not None:
                return whole
    if top is not None and ow % top[1].columns and plane_1x1(mac, conv):
        fused = best(ow * mac.extents[conv.oh], True)
        if fused is not None and fused[0] > top[0]:
            top = fused
    if top is not None and not top[1].plane and (plane_1x1(mac, conv) or plane_kx1(mac, conv)):  # PLANE_IC_GROUPS
        fused = best(ow * mac.extents[conv.oh], True)
        if (fused is not None and plane_ic_groups(mac, conv, fused[1], shape) is not None
                and fused[1].accumulators >= top[1].accumulators):  # not fewer: 7x1 192->192's 3 x 9 rows
            top = fused
    return top[1] if top is not None else None


STACK_TILE = True
"""Whether :func:`blocked_tile` asks for its accumulator tile on the stack
(:data:`.stack_tiles.TILE_PRAGMA` on the tile loop, up to :data:`STACK_TILE_BYTES`): a tile of 1 KiB
or more (2 blocks x 8 columns of 16 lanes and up) was a ``TVMBackendAllocWorkspace`` per tile,
its accumulators stored there after the reduction and loaded back by the write-back; on the stack
LLVM keeps them in registers (the reduction loop already did) and writes the output straight
from them.  False: as before (A/B runs).  Measured (the dev box's AVX-512 Xeon, 1 thread, CPU
time, each kernel alone, least of 10 x 3, resnet50 NCHW16c): 64->256 1x1 on 56x56 + residual
0.704 -> 0.650 ms (0.92), without 0.649 -> 0.567 (0.87), 3x3 256 on 14x14 1.181 -> 1.140 (0.97),
1024->512 1x1 on 14x14 0.98, 128->512 + residual on 28x28 0.98."""

STACK_TILE_BYTES = 2048
"""The largest accumulator tile :data:`STACK_TILE` puts on the stack: 32 registers' worth of
16-lane float vectors (the most a tile's :func:`pressure` allows)."""

ROWS_OUTSIDE_BLOCKS = True
"""Whether a tile of a large image (:data:`ROWS_OUTSIDE_MIN_BYTES`) and a small weight
(:data:`ROWS_OUTSIDE_MAX_WEIGHT_BYTES`) runs its output rows outside its output-channel block
groups -- ``parallel fused(n, oh, oc_chunk / B, ow / R)``, so the image's rows a group reads are
in cache for the next group and the image is streamed once, the weight once per row -- rather
than each group over the whole image (``fused(n, oc_chunk / B, oh, ow / R)``: the image
streamed from L3 once per group where it is larger than L2).  False: as before (A/B runs,
``--before hetpart.kernels.rules.cpu_blocked_conv.ROWS_OUTSIDE_BLOCKS=0``).  Measured (the dev
box's AVX-512 Xeon, 1 thread, CPU time, each kernel alone, least of 10 x 3, NCHW16c, ms):
resnet50's 256->64 / 256->128 / 256->512 s2 1x1 on 56x56 0.622 -> 0.593 (0.95) / 1.287 -> 1.168
(0.91) / 1.459 -> 1.240 (0.85), 3x3 s2 128 on 56x56 1.506 -> 1.443 (0.96), 512->128 / 512->256 on
28x28 0.599 -> 0.577 (0.96) / 1.273 -> 1.224 (0.96); densenet121's 192->128 / 224->128 / 256->128
on 56x56 0.94 / 0.95 / 0.94, 512->256 on 28x28 0.97; inception_v3's 80->192 3x3 on 73x73 0.99.
Where the weight is large the rows lose: resnet50's 512->1024 s2 (2 MiB) 1.08, 3x3 s2 256 on
28x28 (2.3 MiB) 1.10, inception_v3's 288->384 3x3 s2 (4 MiB) 1.15 -- hence the weight bound; a
0.8 MiB image (64->256 on 56x56, 1024->512 on 14x14) 1.00-1.10 -- hence the image bound."""

ROWS_OUTSIDE_MIN_BYTES = 3 << 19
"""The least data image (bytes per image, the padded one for a windowed conv: 1.5 MiB) for
:data:`ROWS_OUTSIDE_BLOCKS`: a smaller one stays in a core's L2 between block groups."""

ROWS_OUTSIDE_MAX_WEIGHT_BYTES = 1 << 20
"""The largest weight for :data:`ROWS_OUTSIDE_BLOCKS` (1 MiB): it is re-read once per output row
and should stay in L2."""


PIXEL_TILES = True
"""Whether a 1x1 stride-1 blocked conv on a narrow image with a long reduction (:func:`pixel_tiles`)
tiles its output *pixels*: its ``oh, ow`` iterators made one (``transform_block_layout`` on the
update and the write-back block, ``(.., h, w, ..) -> (.., h * ow + w, ..)``: the pixels are
contiguous in ``NCHW{c}c``), split by 14 -- 2 blocks x 14 pixels, 28 accumulators, the last tile
(7 on a 7x7 image) split off ragged -- where a row's 7 columns allowed 2 x 7 and each weight
vector, read from L2 (a 7x7 stage's 2-4 MiB weights), fed 7 FMAs.  False: as before (A/B runs).
Measured (the dev box's AVX-512 Xeon, 1 thread, CPU time, each kernel alone, least of 10 x 3):
resnet50's 2048->512, 512->2048, 512->2048 + residual on 7x7 0.88 / 0.90 / 0.88, mobilenet_v2's
960->320 and 960->160 + residual 0.91, densenet121's 992->128 0.91, googlenet's 832->384 0.99-1.01;
mobilenet_v2's ReLU6 expansions 320->1280 / 160->960 1.20 / 1.27 and googlenet's 832-channel ones
in the model (hence :data:`PIXEL_TILES_MIN_STEPS`); a 3-block plan (832->48) did not compile
(hence 2 blocks only)."""

PIXEL_TILES_MAX_WIDTH = 7
"""The widest image :data:`PIXEL_TILES` takes (the 7x7 stages of resnet50, densenet121, googlenet,
mobilenet_v2)."""

PIXEL_TILES_MIN_STEPS = 960
"""The least reduction (input channels) :data:`PIXEL_TILES` takes: where the weight traffic per
FMA is what a wider tile saves.  In whole runs (``tools/cpu_insitu_ab.py --block 16``, 1 AVX-512
thread, least of 20-30): resnet50's 2048->512 0.95, 512->2048 + residual 0.99; mobilenet_v2's
960->320 / 960->160 0.95 / 0.98, 576->160 1.03; densenet121's 16 of 512..992->128 0.93-1.04 (sum
0.98); googlenet's 832->* 0.97-1.07 (sum 1.025) -- hence 960, not 512 (the first bound)."""

PIXEL_COLUMNS = 14
"""The pixels of a :data:`PIXEL_TILES` tile (2 blocks: 28 accumulators of AVX-512's 32)."""


def _fused_pixels(at: int, width: int):
    """The index map ``(.., h, w, ..) -> (.., h * width + w, ..)`` of iterators ``at``, ``at + 1``."""
    def fn(*v):
        return (*v[:at], v[at] * width + v[at + 1], *v[at + 2:])
    return fn


def pixel_tiles(mac: MacBlock, conv: BlockedConv, shape: CpuShape) -> bool:
    """Whether ``conv`` tiles its pixels (:data:`PIXEL_TILES`): 32 vector registers, no window,
    the data's spatial indices the output's own ``oh``, ``ow`` (stride 1, no padding), ``ow`` at
    most :data:`PIXEL_TILES_MAX_WIDTH`, :data:`PIXEL_TILES_MIN_STEPS` input channels or more, an
    even number (4 or more) of output blocks of one vector each.  (With one pair of blocks the tile
    loop binds the pixels as ``t * 14 + r`` but TVM leaves ``t % 4 * 14 + r`` in the bound check,
    which :func:`~..ragged_rows.split_ragged_rows` then does not recognise: every tile checked.)"""
    if not PIXEL_TILES or shape.registers < 32 or conv.window or conv.oh is None or conv.oc_chunk is None:
        return False
    if mac.extents[conv.ow] > PIXEL_TILES_MAX_WIDTH or mac.extents[conv.ic] < PIXEL_TILES_MIN_STEPS:
        return False
    chunks = mac.extents[conv.oc_chunk]
    if chunks % 2 or chunks < 4 or mac.extents[conv.oc_block] != shape.lanes(str(mac.out.dtype)):
        return False
    d_idx = mac.operands[conv.data][1]
    return _is(d_idx[2], conv.oh) and _is(d_idx[3], conv.ow) and pressure(2, 1, PIXEL_COLUMNS) <= \
        shape.registers - spare_registers(shape, mac.extents[conv.ic])


def rows_outside_blocks(mac: MacBlock, conv: BlockedConv) -> bool:
    """Whether :func:`blocked_tile` runs ``conv``'s output rows outside its block groups
    (:data:`ROWS_OUTSIDE_BLOCKS`): an image of :data:`ROWS_OUTSIDE_MIN_BYTES` or more per batch
    index, a weight of :data:`ROWS_OUTSIDE_MAX_WEIGHT_BYTES` or less, and rows to iterate."""
    if not ROWS_OUTSIDE_BLOCKS or conv.oh is None or conv.oc_chunk is None:
        return False
    batch = mac.extents[conv.n] if conv.n is not None else 1
    image = buffer_bytes(mac.operands[conv.data][0]) // max(1, batch)
    weight = buffer_bytes(mac.operands[1 - conv.data][0])
    return image >= ROWS_OUTSIDE_MIN_BYTES and weight <= ROWS_OUTSIDE_MAX_WEIGHT_BYTES


def _spare(mac: MacBlock, conv: BlockedConv, shape: CpuShape, steps: int) -> int:
    """Registers :func:`blocked_plan` leaves free for a ``steps``-long reduction:
    :data:`SPARE_REGISTERS_FULL` for a batched conv on 32 registers with a long enough reduction
    (:data:`BATCH_FULL_REGISTERS`), else :func:`spare_registers` (which, under
    :data:`FEWER_SPARE_WIDE`, already leaves 1 from :data:`FEWER_SPARE_MIN_STEPS` steps at any
    batch: the batch rule then only matters in A/B runs with that switch off)."""
    if (BATCH_FULL_REGISTERS and conv.n is not None and shape.registers >= 32
            and steps >= FULL_REGISTERS_MIN_REDUCTION):
        return SPARE_REGISTERS_FULL
    return spare_registers(shape, steps)


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


ALL_BLOCKS = True
"""Whether a conv whose output-channel chunks are a prime beyond :data:`MAX_BLOCKS_WIDE` (5, 7: the
divisor rule left it one block per tile, ``1 x 15`` on inception_v3's 64 -> 80 on 73x73, a weight
load and a broadcast per FMA) and whose whole weight fits L1 (:data:`ALL_BLOCKS_MAX_WEIGHT_BYTES`)
tiles all its blocks at once: ``chunks x r`` (5 x 5), ``r`` the most columns the registers hold
(:func:`all_blocks_fit`).  False: as before (A/B).  Measured (1 AVX-512 thread, CPU time, the kernel
alone, least of 40): 64 -> 80 on 73x73 0.534 -> 0.423 ms (5 x 5) / 0.417 (5 x 4); googlenet's
512 -> 112 on 14x14 (229 KiB of weights) 7 x 3 1.05, 7 x 2 1.22, 96 -> 208 3x3 13 x 2 1.35 -- hence
the weight bound and the 32-register budget's cap of 7 blocks."""

ALL_BLOCKS_MAX_CHUNKS = 7
"""The most output chunks :data:`ALL_BLOCKS` tiles at once (the primes 5 and 7 past
:data:`MAX_BLOCKS_WIDE`; 9 takes 3 x 3 blocks)."""

ALL_BLOCKS_MAX_WEIGHT_BYTES = 32 * 1024
"""The largest weight :data:`ALL_BLOCKS` tiles whole (two thirds of a 48 KiB L1)."""


ALL_BLOCKS_PLANE = True
"""Whether a batch-1 1x1 conv of 5 or 7 output chunks whose weight overruns
:data:`ALL_BLOCKS_MAX_WEIGHT_BYTES` (googlenet's 512 -> 112 on 14x14: 229 KiB) tiles all its blocks
at once on its fused plane under :data:`PLANE_IC_GROUPS` (the weights of an input-channel group in
L1), where that applies (one block group: one core), rather than one block at a time."""


def all_blocks_fit(mac: MacBlock, conv: BlockedConv, shape: CpuShape, vectors: int, budget: int,
                   any_weight: bool = False) -> bool:
    """Whether ``conv`` takes :data:`ALL_BLOCKS`: switch on, a 32-register CPU, more chunks than
    :data:`MAX_BLOCKS_WIDE` and at most :data:`ALL_BLOCKS_MAX_CHUNKS`, a weight within :data:`ALL_BLOCKS_MAX_WEIGHT_BYTES` (any with
    ``any_weight``: :data:`ALL_BLOCKS_PLANE`), and at least 4 columns (3 with ``any_weight``) of
    ``chunks`` blocks within ``budget`` registers (:func:`pressure`)."""
    if not ALL_BLOCKS or shape.registers < 32 or conv.oc_chunk is None:
        return False
    chunks = mac.extents[conv.oc_chunk]
    least = 3 if any_weight else 4
    if not MAX_BLOCKS_WIDE < chunks <= ALL_BLOCKS_MAX_CHUNKS or pressure(chunks, vectors, least) > budget:
        return False
    if mac.extents[conv.ow] < least:
        return False
    return any_weight or buffer_bytes(mac.operands[1 - conv.data][0]) <= ALL_BLOCKS_MAX_WEIGHT_BYTES


PLANE_IC_GROUPS = True
"""Whether a batch-1 (a batch too: :data:`BATCH_PLANE_GROUPS`) blocked 1x1 stride-1 conv on a small
plane (:func:`plane_1x1`) whose tile's weights overrun :data:`PLANE_GROUP_WEIGHT_BYTES` runs as ONNX
Runtime's MLAS pointwise kernel does (:func:`plane_groups_tile`): per output-block group, the input channels in groups whose weights for
the tile's blocks fit L1, each group over every pixel tile of the plane, the accumulators kept in
the group's output plane (in L1/L2) between groups -- rather than each pixel tile streaming all of
its blocks' weights (``ic * blocks * 64`` bytes: 98 KiB for inception_v3's 768 -> 192, 256 KiB for
2048 -> 448) from L2, or, the first tile of a group, from memory.  Only where the block groups alone
give every core one (``oc_chunks / blocks >= cores``: the parallel loop is theirs).  False: the
plane or row tile as before (A/B runs)."""

BATCH_PLANE_GROUPS = True
"""Whether :data:`PLANE_IC_GROUPS` also applies to a batch (``n > 1``) stride-1 1x1 conv
(:func:`plane_1x1`; not :func:`plane_kx1`): the same plane schedule per image, the tile loop
``fused(n, oc_chunk / B)`` (parallel; batch-outer, as ONNX Runtime's MLAS splits its NCHWc convs),
taken where the images' block groups give every core one (``n * oc_chunks / B >= cores``).  False:
batch-1 only, the batched row tile as before (A/B runs)."""

PLANE_GROUP_WEIGHT_BYTES = 24 * 1024
"""The weights one input-channel group of :data:`PLANE_IC_GROUPS` may read: half an AVX-512 Xeon's
48 KiB L1 data cache, the rest for the pixels' data and the accumulators."""


PLANE_GROUP_MIN_TILE_WEIGHT_BYTES = 96 * 1024
"""The least weights of one tile (``ic * blocks * 64`` bytes) for :data:`PLANE_IC_GROUPS`: below it
L2 feeds the tile's weight streams.  Measured in googlenet (whole runs, 1 AVX-512 thread, least of
20): 832 -> * on 7x7 (104 KiB) 0.93-0.97; 480..528 -> * on 14x14 (60-66 KiB) 1.01-1.05, 256 -> * on
28x28 (32 KiB: the group's plane of accumulators leaves L1) 1.10-1.26."""


def plane_ic_groups(mac: MacBlock, conv: BlockedConv, plan: BlockedPlan, shape: CpuShape) -> int | None:
    """Input-channel chunks (of ``conv.ic_block``) per group of :data:`PLANE_IC_GROUPS` for a plane
    ``plan``: the most dividing the chunk count whose weights for the plan's blocks fit
    :data:`PLANE_GROUP_WEIGHT_BYTES`, or None (the tile as before): switch off, a batch (but a 1x1 under
    :data:`BATCH_PLANE_GROUPS`), not a
    :func:`plane_1x1` conv, one chunk, a tile's weights under :data:`PLANE_GROUP_MIN_TILE_WEIGHT_BYTES`, or
    fewer block groups (times images, :data:`BATCH_PLANE_GROUPS`) than cores."""
    if not PLANE_IC_GROUPS or not plan.plane or conv.oc_chunk is None:
        return None
    images = 1
    if conv.n is not None:  # BATCH_PLANE_GROUPS: per image, 1x1s only
        if not BATCH_PLANE_GROUPS or not plane_1x1(mac, conv):
            return None
        images = mac.extents[conv.n]
    if not (plane_1x1(mac, conv) or plane_kx1(mac, conv)):
        return None
    if images * (mac.extents[conv.oc_chunk] // plan.blocks) < shape.cores:
        return None
    chunks = mac.extents[conv.ic] // conv.ic_block
    window = 1
    for v in conv.window:
        window *= mac.extents[v]
    per_chunk = window * conv.ic_block * plan.blocks * plan.vectors * plan.lanes * tvm.DataType(str(mac.out.dtype)).bits // 8
    if chunks <= 1 or chunks * per_chunk < PLANE_GROUP_MIN_TILE_WEIGHT_BYTES:
        return None
    fits = [d for d in _divisors(chunks, chunks) if d * per_chunk <= PLANE_GROUP_WEIGHT_BYTES]
    return fits[-1] if fits else 1


def plane_groups_tile(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedConv, plan: BlockedPlan,
                      shape: CpuShape) -> None:
    """Apply a :data:`PLANE_IC_GROUPS` ``plan`` to ``conv``'s block in ``sch``::

        parallel  [n x] oc_chunk / B                             # a group of B output blocks [of an image]
          init    acc[B, plane, c] = 0
          serial  ic // c / G                                    # G chunks: their weights in L1
            serial  plane / R                                    # a tile of R pixels
              serial  G, ic % c: unroll B, R, V; acc += bcast(data) * vload(weight)
          write-back acc -> out (the group's plane), with the fused epilogue

    the ragged last pixel tile split off (:func:`~..ragged_rows.split_ragged_rows`); other root
    blocks get the injective schedule.  Invariant: each output's sum runs over the input channels
    in the same order as before."""
    group = plane_ic_groups(mac, conv, plan, shape)
    main = mac.block
    wb = sch.cache_write(main, 0, "global")
    fuse_epilogue(sch, wb)
    by = loop_of(sch, main)
    occ_o, occ_i = sch.split(by(conv.oc_chunk), factors=[None, plan.blocks])
    pixels = mac.extents[conv.oh] * mac.extents[conv.ow]
    px_o, px_i = sch.split(sch.fuse(by(conv.oh), by(conv.ow)), factors=[None, plan.columns])
    vec_o, vec_i = sch.split(by(conv.oc_block), factors=[plan.vectors, plan.lanes])
    chunks = mac.extents[conv.ic] // conv.ic_block
    ic_o, ic_i = sch.split(by(conv.ic), factors=[chunks, conv.ic_block])
    ic_g, ic_w = sch.split(ic_o, factors=[None, group])
    inner = (px_i, occ_i, vec_o) if columns_outer(plan) else (occ_i, px_i, vec_o)
    sch.reorder(*([by(conv.n)] if conv.n is not None else []), occ_o, ic_g, px_o, ic_w,
                *(by(v) for v in conv.window), ic_i, *inner, vec_i)
    if conv.n is not None:  # BATCH_PLANE_GROUPS: the same plane schedule per (image, block group)
        occ_o = sch.fuse(by(conv.n), occ_o)
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(occ_o)
    for lp in inner:
        sch.unroll(lp)
    sch.vectorize(vec_i)
    init = sch.decompose_reduction(main, ic_g)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.reverse_compute_at(wb, occ_o, preserve_unit_loops=True)
    _write_back(sch, wb, plan, under=1)
    names = {sch.get(b).name_hint for b in (main, wb, init)}
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(blk).name_hint not in names and all(
                iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
            parallel_vectorize(sch, blk, plan.lanes, min_parallel=PARALLEL_MIN_ELEMENTS)
    if RAGGED_SPLIT and pixels % plan.columns:
        ragged_rows.split_ragged_rows(sch, px_o, (main,), plan.columns, pixels)


PLANE_KX1 = True
"""Whether a batch-1 ``k x 1`` stride-1 blocked conv whose image has no column padding (inception_v3's
7x1 on 17x17, 3x1 on 8x8: :func:`plane_kx1`) may take :data:`PLANE_IC_GROUPS`' plane tile: its
pixels contiguous along the fused plane, tap ``kh`` reading the plane ``kh`` rows on (``p + kh *
ow``), so the row tile's ragged 9 + 8 columns become one ragged tile per plane -- where the plane
tile keeps at least the row tile's accumulators (12 output chunks keep their 3 x 9 rows: 2 x 10 on the
plane went 1.00-1.08 in situ on 192->192 / 160->192 / 128->192, 0.91-0.96 on the 2 x 9 of 160->160 /
128->128).  False: the row tile (A/B)."""


def plane_kx1(mac: MacBlock, conv: BlockedConv) -> bool:
    """Whether ``conv`` (with :data:`PLANE_KX1` on) has a window of one loop, the weight's ``kh``,
    and its data reads row ``oh + kh`` and column ``ow`` bare of an image exactly ``ow`` wide:
    output pixel ``p`` of the fused plane reads the padded plane's pixel ``p + kh * ow``."""
    if not PLANE_KX1 or len(conv.window) != 1 or conv.oh is None:
        return False
    w_idx, d_idx = mac.operands[1 - conv.data][1], mac.operands[conv.data][1]
    kh = conv.window[0]
    if not (_is(w_idx[2], kh) and _unit(w_idx[3]) and _is(d_idx[3], conv.ow)):
        return False
    row = d_idx[2]
    if not (isinstance(row, tirx.Add) and (
            (_is(row.a, conv.oh) and _is(row.b, kh)) or (_is(row.a, kh) and _is(row.b, conv.oh)))):
        return False
    width = mac.operands[conv.data][0].shape[3]
    if not (isinstance(width, tirx.IntImm) and int(width) == mac.extents[conv.ow]):
        return False
    return mac.extents[conv.oh] * mac.extents[conv.ow] <= PLANE_1X1_MAX_PIXELS


def ic_groups_of(func: tirx.PrimFunc, target) -> int | None:
    """:func:`plane_ic_groups` of ``func``'s tile on ``target`` where it is a channel-blocked
    convolution taking :func:`plane_groups_tile`, else None.  For tools and tests."""
    read = _planned(func, target)
    if read is None or read.plan is None:
        return None
    return plane_ic_groups(read.mac, read.conv, read.plan, read.shape)


BATCH_IMAGE_PAIRS = False
"""Whether a batched blocked conv on a narrow image (output width at most :data:`IMAGE_PAIRS_MAX_WIDTH`,
resnet50's 7x7 stage: 512 3x3, 512 3x3 s2, 512->2048 1x1 + residual, 1024->2048 1x1 s2) whose row
tile is the whole row (``2 blocks x 7 columns``, 14 of 32 registers' accumulators) holds a *pair of
images* in its register tile -- ``2 images x 2 blocks x 7 columns``, 28 accumulators, pressure 31 --
so each weight vector loaded feeds 14 FMAs, not 7, and a block group's weights are streamed once per
two images.  The batch loop is split ``(n / 2, 2)``: the outer half in the tile loop (or, where the
conv pads per image, the padding computed per pair under it), the pair the tile's outermost unrolled
loop (under :data:`BATCH_GROUP_SPLIT` the parts keep their count, each a run of pairs).  Only where the
batch is even, the target has 32 vector registers, the doubled tile fits (:func:`pressure` within the
:func:`_spare` budget), the plan is no pixel / plane tile, no rows-outside tile and not
:data:`BATCH_PAD_IMAGE_GROUPS`'s.  Why: a 7-wide row tile issues 2 weight loads and 14 broadcast
FMAs a step; on a core of two 512-bit FMA pipes and two 512-bit load ports (the Xeon) 16 loads a 7-cycle
step are the bound, the pair's 30 loads a 14-cycle step about not (as :data:`PIXEL_TILES`' 2 x 14
pixels for the 1x1s of 960+ inputs: 0.88-0.90 alone on the Xeon dev VM).  On the znver4 dev box (one
512-bit FMA a cycle) the kernels are FMA-bound either way: 0.99-1.04 alone at b32
(bench/results/cpu-r50-b32-s57-2core.md).  Device step 165 (session 58, the H100 host's Xeon, 16
threads; bench/results/gpu-steps-165-169-nvidia-h100.md): in situ at b32 the 3x3 @7x7 kernel 16.12 ->
12.03 ms and the 1x1 512->2048 10.30 -> 8.87, the two stride-2 kernels 1.02 / 0.97, the whole run 265.1 ->
262.7 ms; the model at b32 285.4 -> 237.7 ms (ORT 217.6) but at b8 64.8 -> 70.7 (ORT 61.8), both inside
wide rounds.  The rule (every changed kernel <= 0.97, the model <= 1.00 at both batches) is not met: off
(the default), one image per tile, as before; the sums are the same in the same order either way.
:data:`IMAGE_PAIRS_STRIDES` restricts it to some strides (``(1,)``: the two stride-1 kernels that gained)."""

IMAGE_PAIRS_MAX_WIDTH = 7
"""The widest output row :data:`BATCH_IMAGE_PAIRS` takes."""

IMAGE_PAIRS_STRIDES = (1, 2)
"""The strides whose convs :data:`BATCH_IMAGE_PAIRS` takes: a conv pairs only where its stride along
the output columns and along the rows (:func:`~..blocked_conv_match.conv_strides`; None, an index not
linear in the iterator, is in no tuple) are both in this tuple.  ``(1, 2)`` (the default): resnet50's
7x7 stage in full, as :data:`BATCH_IMAGE_PAIRS` alone (a pairable conv of another stride -- none in
resnet50 or tools/kernel_code_hash.py's cases -- would now keep one image a tile).  ``(1,)``: its two
stride-1 kernels only (the 3x3 and the 1x1 512->2048), the ones device step 165 found faster (0.75 /
0.86 in situ at b32), not the two stride-2 ones (1.02 / 0.97) -- the A/B of device step 173
(``--after ...IMAGE_PAIRS_STRIDES=1``: the switch parser takes a bare value as a one-tuple).  Read
only with :data:`BATCH_IMAGE_PAIRS` on."""


def image_pairs(mac: MacBlock, conv: BlockedConv, plan: BlockedPlan, shape: CpuShape) -> int:
    """Images of one register tile under :data:`BATCH_IMAGE_PAIRS`: 2 where it applies to ``conv``'s
    ``plan`` on ``shape`` and ``conv``'s strides are in :data:`IMAGE_PAIRS_STRIDES`, else 1."""
    if not BATCH_IMAGE_PAIRS or conv.n is None or conv.oh is None or shape.registers < 32 or plan.plane:
        return 1
    n, ow = mac.extents[conv.n], mac.extents[conv.ow]
    if n < 2 or n % 2 or ow > IMAGE_PAIRS_MAX_WIDTH or plan.columns != ow:
        return 1
    steps = mac.extents[conv.ic]
    for v in conv.window:
        steps *= mac.extents[v]
    if pressure(plan.blocks, plan.vectors, 2 * plan.columns) > shape.registers - _spare(mac, conv, shape, steps):
        return 1
    if pixel_tiles(mac, conv, shape) or rows_outside_blocks(mac, conv):
        return 1
    if any(s not in IMAGE_PAIRS_STRIDES for s in conv_strides(mac, conv)):  # oh is no unit dim here
        return 1
    return 2


def blocked_tile(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedConv, plan: BlockedPlan, shape: CpuShape) -> None:
    """Apply ``plan`` to ``conv``'s block in ``sch`` (the nest of the module docstring);
    other root blocks (the padding, an epilogue that did not fuse) get the injective
    schedule."""
    if plan.plane and plane_ic_groups(mac, conv, plan, shape) is not None:
        return plane_groups_tile(sch, mac, conv, plan, shape)
    main = mac.block
    wb = sch.cache_write(main, 0, "global")
    fuse_epilogue(sch, wb)
    pixels = pixel_tiles(mac, conv, shape) and (plan.blocks, plan.columns) == (2, PIXEL_COLUMNS)
    orig = [iv.var for iv in sch.get(main).iter_vars]
    at = 0
    if pixels:  # the main block's and the write-back's (oh, ow) iterators as one pixel iterator
        width = mac.extents[conv.ow]
        at = next(i for i, iv in enumerate(sch.get(main).iter_vars) if iv.var.same_as(conv.oh))
        for blk in (main, wb):
            k = len(sch.get(blk).iter_vars)
            wat = at if blk is main else 2
            sch.transform_block_layout(blk, tirx.IndexMap.from_func(_fused_pixels(wat, width), ndim=k))
    main_loops = sch.get_loops(main)

    def by(v):
        i = next(i for i, var in enumerate(orig) if var.same_as(v))
        return main_loops[i - 1 if pixels and i > at else i]

    occ_o, occ_i = (sch.split(by(conv.oc_chunk), factors=[None, plan.blocks]) if conv.oc_chunk is not None
                    else (None, None))
    plane = plan.plane and not pixels  # one column iterator over the plane's pixels (plane_1x1)
    width = mac.extents[conv.ow] * (mac.extents[conv.oh] if pixels or plane else 1)
    if pixels:
        ow_o, ow_i = sch.split(by(conv.oh), factors=[None, plan.columns])
    elif plane:
        ow_o, ow_i = sch.split(sch.fuse(by(conv.oh), by(conv.ow)), factors=[None, plan.columns])
    else:
        ow_o, ow_i = sch.split(by(conv.ow), factors=[None, plan.columns])
    vec_o, vec_i = sch.split(by(conv.oc_block), factors=[plan.vectors, plan.lanes])
    chunks = mac.extents[conv.ic] // conv.ic_block
    ic_o, ic_i = (sch.split(by(conv.ic), factors=[chunks, conv.ic_block]) if chunks > 1 else (None, by(conv.ic)))
    pad = _per_image_padding(sch, mac, conv, shape)
    group = pad_group_images(sch, pad, shape, mac.extents[conv.n]) if pad is not None else 1
    pair = 1 if pixels or plane or group > 1 else image_pairs(mac, conv, plan, shape)
    n_i = None
    if group > 1:  # BATCH_PAD_IMAGE_GROUPS: the padding per group of images, the group's images in the tile loop
        image, n_lp = sch.split(by(conv.n), factors=[None, group])
    elif pair > 1:  # BATCH_IMAGE_PAIRS: a pair of images in the register tile (the padding, if per image, per pair)
        n_o, n_i = sch.split(by(conv.n), factors=[None, pair])
        image, n_lp = (n_o, None) if pad is not None else (None, n_o)
    else:
        image = by(conv.n) if pad is not None else None  # the padding computed per image, under this loop
        n_lp = by(conv.n) if conv.n is not None and image is None else None
    oh_lp = by(conv.oh) if conv.oh is not None and not pixels and not plane else None
    rows_out = rows_outside_blocks(mac, conv)
    order = (n_lp, oh_lp, occ_o, ow_o) if rows_out else (n_lp, occ_o, oh_lp, ow_o)
    parts = 1
    if n_lp is not None and occ_o is not None and not rows_out and group == 1:  # BATCH_GROUP_SPLIT
        parts = group_split(mac, conv, plan, shape, _group_tiles(mac, conv, plan, shape))
        if parts > 1:
            part, occ_o = sch.split(occ_o, factors=[parts, None])
            order = (part, n_lp, occ_o, oh_lp, ow_o)
    outer = [lp for lp in order if lp is not None]
    reds = [lp for lp in (ic_o, *(by(v) for v in conv.window), ic_i) if lp is not None]
    inner = [lp for lp in ((ow_i, occ_i, vec_o) if columns_outer(plan) else (occ_i, ow_i, vec_o)) if lp is not None]
    if n_i is not None:  # the pair's images outermost in the tile: each weight vector feeds both images' columns
        inner = [n_i, *inner]
    sch.reorder(*([image] if image is not None else []), *outer, *reds, *inner, vec_i)
    prefetch = _prefetch_shape(sch, mac, conv, order, occ_o, ic_o)
    tile = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if prefetch is not None:  # under BATCH_GROUP_SPLIT: the groups in parts of `groups`, a part `n` images long
        span = prefetch[0] * prefetch[1] * (mac.extents[conv.n] // pair if parts > 1 else 0)
        weight_prefetch.mark(sch, tile, reds, mac.operands[1 - conv.data][0], *prefetch, cores=shape.cores,
                             parts=parts, span=span)
    images = image is not None and BATCH_IMAGES_PARALLEL and mac.extents[conv.n] >= shape.cores
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(image if images else tile)
    if not plane:  # a plane tile's pixels cross rows: no box of the output; its write-back a pass after
        if STACK_TILE:
            sch.annotate(tile, stack_tiles.TILE_PRAGMA, STACK_TILE_BYTES)
        sch.reverse_compute_at(wb, tile, preserve_unit_loops=True)
    if image is not None:
        _pad_per_image(sch, pad, image, plan, parallel=mac_count(mac) >= PARALLEL_MIN_MACS and not images,
                       images=max(group, pair))
    for lp in inner:
        sch.unroll(lp)
    sch.vectorize(vec_i)
    init = sch.decompose_reduction(main, reds[0])
    if not plane:
        _write_back(sch, wb, plan, under=2 if image is not None else 1)
    names = {sch.get(b).name_hint for b in (main, *([] if plane else [wb]), init, *([pad] if image is not None else []))}
    padding = _padding_block(sch, mac, conv) if PADDING_ROWS and image is None else None
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(blk).name_hint not in names and all(
                iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
            if padding is not None and sch.get(blk).same_as(sch.get(padding)) and padding_rows(
                    sch, blk, parallel=mac_count(mac) >= PARALLEL_MIN_MACS):
                continue
            parallel_vectorize(sch, blk, plan.lanes, min_parallel=PARALLEL_MIN_ELEMENTS)
    if RAGGED_SPLIT and width % plan.columns:
        # Last: the split leaves the tile's body in two branches (blocks renamed) no primitive may move.
        ragged_rows.split_ragged_rows(sch, tile, (main, init) if plane else (main, init, wb), plan.columns, width)


def _prefetch_shape(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedConv, order, occ_o, ic_o) -> tuple | None:
    """``(groups, tiles a group)`` of a tile whose block groups run outside its rows and columns
    (``order`` the tile loops, outermost first, before the fuse) and whose reduction has an outer
    input-channel-chunk loop ``ic_o``, for :func:`.weight_prefetch.mark`; else None."""
    if not weight_prefetch.WEIGHT_PREFETCH or occ_o is None or ic_o is None or rows_outside_blocks(mac, conv):
        return None
    loops = [lp for lp in order if lp is not None]
    at = next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(occ_o)))
    extents = [const_extent(sch, lp) for lp in loops[at:]]
    if None in extents:
        return None
    tiles = 1
    for e in extents[1:]:
        tiles *= e
    return extents[0], tiles


BATCH_PADDING_PER_IMAGE = True
"""Whether a batched blocked conv (``n`` > 1) whose image is padded computes the padding one image
at a time, under the batch loop, right before that image's tiles (the padded image, 0.2-1 MiB
in resnet50, still in L2 when the tiles read it), rather than the whole batch's padded images
in a pass before the tiles (6.9 MiB for resnet50's 64 x 58 x 58 at batch 8: written out to L3
and read back).  The tile then runs its parallel loop per image (``n`` a serial loop outside
it).  Measured (1 AVX-512 thread, CPU time, each conv alone, least of 5 x 3, resnet50 at batch
8, NCHW16c, ms, whole-batch padding -> per image): 64 3x3 on 56x56 12.25 -> 11.18, 128 3x3 s2
56 -> 28 14.58 -> 12.16, 128 3x3 on 28x28 11.57 -> 10.61, 256 3x3 s2 12.81 -> 11.22, 512 3x3 s2
14.42 -> 13.46; 256 on 14x14 and 512 on 7x7 (their padded batches 2.1 and 1.3 MiB) unchanged."""


PLAIN_PADDING_PER_IMAGE = False
"""Whether :data:`BATCH_PADDING_PER_IMAGE` takes a stem's padding too: a batched conv from a plain
``NCHW`` image (``conv2d_NCHW_to_NCHWc``, :data:`PLAIN_INPUT`; its padding block has 4 loops, not
5) pads each image under the batch loop, right before that image's tiles (resnet50's 3 x 230 x 230
padded image, 0.6 MiB, read from L2), not the whole batch in a pass before them (5 MiB at batch 8,
written out to L3 and read back).  Off: the batch padded in one pass (before;
bench/results/cpu-r50-stem-2core.md)."""


BATCH_IMAGES_PARALLEL = False
"""Where :data:`BATCH_PADDING_PER_IMAGE` applies and the batch has at least as many images as the
target has cores, whether the batch loop is the parallel one (each thread pads and tiles whole
images: one fork-join per conv) rather than each image's tile loop (two fork-joins per image:
the padding's and the tile's).  Off: unmeasured -- on one thread the two are the same code;
``tools/device_round.sh 96`` measures it at 32 images on 16 cores."""


BATCH_PAD_SHARE_BY_CORES = True
"""(On since device step 104, 16 threads on the GPU machine's Xeon, resnet50 NCHW16c: batch 8
56.03 -> 51.99 ms, batch 32 254.1 -> 242.5 ms; 1.017x on one thread.)  Whether :data:`BATCH_PADDING_PER_IMAGE` applies only where each core's share of the whole
batch's padded input (its bytes / the target's cores) exceeds :data:`PAD_SHARE_BYTES`.  Under
it the batch's padding is one parallel pass and the tiles one parallel loop fused over
``(n, blocks, rows, columns)``: 2 fork-joins per conv, where per-image padding has 2 per image
(resnet50 at batch 8 on 16 cores: 16 padded convs, 256 of the model's 297 parallel regions,
each image's padding a region of ~1 us of work a thread).  With TVM's contiguous static
chunks the rows a thread pads (its ``1/cores`` of the batch) are mostly the rows its tiles read,
so a share that fits its L2 is read back from there, which is what padding per image bought
on one core.  False: per-image padding wherever the batch is padded (before)."""

PAD_SHARE_BYTES = 1 << 20
"""A core's share of a batch's padded input (bytes) up to which :data:`BATCH_PAD_SHARE_BY_CORES`
pads the whole batch in one pass: half the Xeon's 2 MiB L2, the rest for weights and outputs.
resnet50 at batch 8 on 16 cores: the largest share 0.86 MiB (128 x 58 x 58 a image, the stride-2
3x3), so every conv pads in one pass; at batch 32 the 64 x 58 x 58, 128 x 58 x 58 and 256 x 30 x 30
ones (1.7-3.4 MiB a core) keep per-image padding (512 x 16 x 16: exactly 1 MiB, one pass).  Targets of fewer than
:data:`PAD_SHARE_MIN_CORES` cores keep it everywhere."""


PAD_SHARE_MIN_CORES = 8
"""The fewest target cores :data:`BATCH_PAD_SHARE_BY_CORES` applies to: a fork-join costs more and
each region's work a thread is smaller with more cores, while on few cores per-image padding's
cache gain is what counts -- on the 2-core dev box's target (1 thread, CPU time, resnet50 b8) the
share rule (then: the 256 x 16 x 16 and 512 x 9 x 9 padded batches in one pass) ran 1.028x per-image
padding; the 16-core build on one thread 1.017x (all 16 padded convs in one pass)."""


BATCH_PAD_IMAGE_GROUPS = False
"""Where :data:`BATCH_PAD_SHARE_BY_CORES` leaves a padded batch to per-image padding (a core's share of
the whole padded batch over :data:`PAD_SHARE_BYTES`), whether the batch is padded in groups of ``k``
images instead (:func:`pad_group_images`: the most images, ``k`` dividing ``n``, whose padded input
still is :data:`PAD_SHARE_BYTES` a core or less): the batch loop split ``(n / k, k)``, the group's
padding one parallel pass (its images, rows and channel chunks fused), its tiles one parallel loop
fused over ``(k, blocks, rows, columns)`` -- 2 fork-joins a group where per-image padding has 2 an
image.  resnet50 at batch 32 on 16 cores: the 64 x 58 x 58 (3 convs) and 256 x 30 x 30 padded inputs
in 2 groups of 16, the 128 x 58 x 58 in 4 of 8: 24 parallel regions where per-image padding has 320
(1024 -> 383 regions, step 104, took b32 254.1 -> 242.5 ms at 16 threads: ~17 us a region).  Each
core still pads about the rows its tiles read (TVM's contiguous static chunks over both loops), a
share that fits its L2 as in the one-pass form.  Targets of fewer than :data:`PAD_SHARE_MIN_CORES`
cores, batches padded in one pass, and :data:`BATCH_IMAGES_PARALLEL`'s convs are unchanged.  Off
(the default) until ``tools/device_round.sh 129`` measures it at 16 threads; on one thread a
16-core build pads each group's k images itself (bench/results/r50-b32-2core.md)."""


BATCH_GROUP_SPLIT = True
"""Whether a batched blocked conv whose batch is in its parallel tile loop (no per-image padding)
on a target of :data:`GROUP_SPLIT_MIN_CORES` or more cores may run its block groups in ``p``
parts *outside* the batch -- ``parallel fused(oc_chunk / B / (G/p), n, G/p, oh, ow / R)`` -- so
that TVM's contiguous static chunks give each core a slice of the weights (``G/p`` groups, kept in
its L2) and stream images through it, where the batch-outer loop ``fused(n, oc_chunk / B, oh, ow /
R)`` gives each core part of one or two images and *all* of their groups' weights (resnet50's 7x7
stage at batch 8 on 16 cores: half an image and 4.5 MiB of a 512 3x3's 9 MiB a core, more than
its 2 MiB L2; at batch 32 two images, the whole weight twice).  ``p`` is the part count of least
modelled bytes into a core's L2 (:func:`group_split`).  ONNX Runtime's MLAS NCHWc conv partitions
batch-outer as hetpart did (``n, filter set of 4 blocks, output row``).  False: batch-outer
everywhere (before; A/B runs)."""

GROUP_SPLIT_MIN_CORES = 8
"""The fewest target cores :data:`BATCH_GROUP_SPLIT` applies to (its per-core weight slices are
what it buys; measured only on one core of a 16-core build)."""

GROUP_SPLIT_L2_BYTES = 3 << 19
"""The bytes of a core's L2 (the Xeon's: 2 MiB) the model of :func:`group_split` lets hold
weights and images (1.5 MiB: the rest for the outputs written); also the most one group's
weights plus one image may take for the split to apply (a larger unit re-reads within itself)."""

GROUP_SPLIT_MAX_RATIO = 0.75
"""The most modelled bytes, relative to the batch-outer loop's, a split must reach to be taken."""


def _group_tiles(mac: MacBlock, conv: BlockedConv, plan: BlockedPlan, shape: CpuShape) -> int:
    """Tiles of one image and block group in :func:`blocked_tile`'s loop: its rows (one where the
    pixels or the plane are fused: :func:`pixel_tiles`, ``plan.plane``) times its column tiles."""
    pixels = pixel_tiles(mac, conv, shape) and (plan.blocks, plan.columns) == (2, PIXEL_COLUMNS)
    fused = pixels or plan.plane
    width = mac.extents[conv.ow] * (mac.extents[conv.oh] if fused else 1)
    rows = 1 if fused or conv.oh is None else mac.extents[conv.oh]
    return rows * -(-width // plan.columns)


PADDING_ROWS = False
"""Whether a blocked conv's padding pass over the whole image (batch 1, or a batch padded in one pass:
not :data:`BATCH_PADDING_PER_IMAGE`'s per-image form) runs as rows (:func:`padding_rows`): its loops
before the column fused (batch x channel chunks x padded rows, parallel), the column loop partitioned
at the left and right padding (the interior a plain copy), the channel block one vector.  Off (the
default, as before): the injective schedule, every loop but the block fused into one parallel loop,
each vector re-deriving ``(chunk, row, column)`` by division and checking all four bounds.
Measured (dev VM, AVX-512, 1 thread, CPU time; bench/results/cpu-pad-rows-2core.md): the padding pass
is ~0.09 ms of resnet50's 64 3x3 on 56x56 (1.39 ms; 1.30 on a pre-padded input), rows take ~0.015 ms
of it; in whole runs the changed kernels sum 0.994 (resnet50) and 1.002 (googlenet) of before --
inside the noise, so off until device step 117's 16-thread A/B says otherwise.  What the pass costs
is its traffic (the image read and the padded copy written), which only a conv that reads the
unpadded image (MLAS's border kernels) removes."""


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


def _read(func: tirx.PrimFunc):
    """``(sch, mac, conv)`` of ``func`` as :class:`.cpu_conv2d.CpuConv2d` reads it (its padding kept,
    its other producers inlined, in ``sch``), ``conv`` None where it is not a channel-blocked
    convolution."""
    from ..analysis import mac_of, tests_bounds, try_inline_spatial

    sch = s_tir.Schedule(func)
    keep = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root")) if tests_bounds(sch.get(b))}
    try_inline_spatial(sch, keep=keep)
    mac = mac_of(sch)
    return sch, mac, (blocked_conv(mac) if mac is not None else None)


class _Planned(NamedTuple):
    """:func:`_read` of a channel-blocked convolution with the tile :func:`blocked_plan` gives it."""

    sch: s_tir.Schedule
    mac: MacBlock
    conv: BlockedConv
    shape: CpuShape
    plan: BlockedPlan | None


def _planned(func: tirx.PrimFunc, target) -> _Planned | None:
    """``func`` read (:func:`_read`) and planned on ``target`` where it is a channel-blocked
    convolution (``plan`` None where :func:`blocked_plan` gives none), else None: what the
    ``*_of`` helpers for tools and tests start from."""
    from ..analysis import cpu_shape

    sch, mac, conv = _read(func)
    if conv is None:
        return None
    shape = cpu_shape(target)
    return _Planned(sch, mac, conv, shape, blocked_plan(mac, conv, shape, shape.lanes(str(mac.out.dtype))))


def plan_of(func: tirx.PrimFunc, target) -> BlockedPlan | None:
    """The tile :class:`.cpu_conv2d.CpuConv2d` gives ``func`` on ``target`` where it is a
    channel-blocked convolution (:func:`blocked_conv`), else None.  For tools and tests."""
    read = _planned(func, target)
    return None if read is None else read.plan


def image_pairs_of(func: tirx.PrimFunc, target) -> int | None:
    """:func:`image_pairs` of ``func``'s tile on ``target`` (before :data:`BATCH_PAD_IMAGE_GROUPS`,
    which takes precedence in :func:`blocked_tile`) where it is a channel-blocked convolution, else
    None.  For tools and tests."""
    read = _planned(func, target)
    if read is None or read.plan is None:
        return None
    return image_pairs(read.mac, read.conv, read.plan, read.shape)


def group_split_of(func: tirx.PrimFunc, target) -> int | None:
    """:func:`group_split` of ``func``'s tile on ``target`` as :func:`blocked_tile` takes it (1:
    batch-outer, as where the batch is not in the tile loop -- per-image padding, rows outside
    the block groups) where it is a channel-blocked convolution tiled by :func:`blocked_tile`,
    else None.  For tools and tests."""
    read = _planned(func, target)
    if read is None or read.conv.oc_chunk is None:
        return None
    sch, mac, conv, shape, plan = read
    if plan is None or (plan.plane and plane_ic_groups(mac, conv, plan, shape) is not None):
        return None
    if conv.n is None or rows_outside_blocks(mac, conv) or _per_image_padding(sch, mac, conv, shape) is not None:
        return 1
    return group_split(mac, conv, plan, shape, _group_tiles(mac, conv, plan, shape))


def rows_outside_of(func: tirx.PrimFunc) -> bool | None:
    """:func:`rows_outside_blocks` of ``func`` where it is a channel-blocked convolution, else
    None.  For tools and tests."""
    _, mac, conv = _read(func)
    return None if conv is None else rows_outside_blocks(mac, conv)


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
        window = _window(w_idx[1:3], mac)
        if window is None:
            continue
        if len(mac.reduce) != len(window) or not ((oh is None or _reads(d_idx[2], oh)) and _reads(d_idx[3], ow)):
            continue
        return BlockedDepthwise(n, chunk, oh, ow, lane, window, data)
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
    return BlockedPlan(1, cols[-1], vectors, width, row_group=depthwise_row_group(mac, conv, shape.cores))


DEPTHWISE_ROW_GROUPS = False
"""Whether a depthwise tile whose padding is computed under its row loop
(:data:`DEPTHWISE_PADDING_IN_ROWS`) runs ``R`` output rows per parallel iteration
(:func:`depthwise_row_group`), the padding computed once for the group's ``(R - 1) * s + kh``
input rows, instead of one output row per iteration, whose padding copied its ``kh`` input
rows each time: every padded row copied ``kh / s`` times (3x for a stride-1 3x3) -- a load and
a store per input vector, beside the tap's 9 FMAs per output vector.  False: one row per
iteration, as before."""

DEPTHWISE_ROW_GROUP_MAX = 8
"""The most output rows of one :data:`DEPTHWISE_ROW_GROUPS` group (a divisor of the output
height: 8 for 112 / 56 rows, 7 for 28 / 14 / 7)."""

DEPTHWISE_ROW_GROUPS_STRIDED = False
"""Whether :data:`DEPTHWISE_ROW_GROUPS` groups the rows of a strided depthwise conv too (its rows'
windows overlap by ``kh - s`` rows only: 1 of 3 for a 3x3 stride 2).  Off: measured slower
(mobilenet_v2 b32, NCHW16c, the stride-2 kernels alone 1.05-1.75x)."""

DEPTHWISE_ROW_GROUP_MIN_WIDTH = 112
"""The narrowest output row :data:`DEPTHWISE_ROW_GROUPS` groups.  Measured (mobilenet_v2 b32,
NCHW16c, each kernel alone, 1 thread, CPU time): 32x112x112 3x3 in groups of 2 rows 0.85-0.88x;
192x28x28 3x3 slower the larger the group (2 rows 1.15x, 4 rows 1.33x, 7 rows 1.47x), 144x56x56
0.94-1.10x, 14x14 / 7x7 0.64-1.14x between runs: the grouping is kept to the 112-wide rows."""

DEPTHWISE_ROW_GROUP_BYTES = 32 << 10
"""The most bytes of padded input rows one :data:`DEPTHWISE_ROW_GROUPS` group copies (a core's
L1 data cache: the group's padding is copied before its rows are read)."""


def depthwise_row_group(mac: MacBlock, conv: BlockedDepthwise, cores: int) -> int:
    """Output rows per parallel iteration of :func:`depthwise_tile`: the largest divisor of the
    output height up to :data:`DEPTHWISE_ROW_GROUP_MAX` whose padded input rows fit
    :data:`DEPTHWISE_ROW_GROUP_BYTES` and whose iterations (batch x channel blocks x height /
    rows) split over ``cores`` threads as evenly as single rows do
    (:func:`~..register_tile.thread_efficiency`); 1 with the switch off, no row iterator, rows
    narrower than :data:`DEPTHWISE_ROW_GROUP_MIN_WIDTH` or a stride (:data:`DEPTHWISE_ROW_GROUPS_STRIDED`).
    In: the block as :func:`blocked_depthwise` reads it; the stride from the padded image's
    height.  Out: a divisor of the output height (the split then needs no bound check)."""
    if not (DEPTHWISE_ROW_GROUPS and DEPTHWISE_PADDING_IN_ROWS) or conv.oh is None \
            or mac.extents[conv.ow] < DEPTHWISE_ROW_GROUP_MIN_WIDTH:
        return 1
    height = mac.extents[conv.oh]
    data = mac.operands[conv.data][0]  # the padded image [n, chunk, (oh - 1) * s + kh, ., lanes]
    padded_h, padded_w = (int(d) for d in data.shape[2:4])
    taps = mac.extents[conv.window[0]] if len(conv.window) == 2 else 1
    stride = max(1, round((padded_h - taps) / (height - 1))) if height > 1 else 1
    if stride != 1 and not DEPTHWISE_ROW_GROUPS_STRIDED:
        return 1
    row_bytes = padded_w * int(data.shape[4]) * data.dtype.bits // 8
    others = 1
    for v in (conv.n, conv.chunk):
        if v is not None:
            others *= mac.extents[v]
    single = thread_efficiency(others * height, cores)
    for rows in reversed(_divisors(height, DEPTHWISE_ROW_GROUP_MAX)):
        if ((rows - 1) * stride + taps) * row_bytes <= DEPTHWISE_ROW_GROUP_BYTES \
                and thread_efficiency(others * height // rows, cores) >= single:
            return rows
    return 1


def depthwise_tile(sch: s_tir.Schedule, mac: MacBlock, conv: BlockedDepthwise, plan: BlockedPlan) -> None:
    """Apply ``plan`` to ``conv``'s block in ``sch``::

        parallel fused(n, chunk, oh)      # oh / G and a serial G inside (DEPTHWISE_ROW_GROUPS)
          serial ow / R
            init   acc[R, c] = 0
            serial kh, kw                                  # the window's taps
              unroll R, V; vectorise lanes: acc[r] += vload(data) * vload(weight)
            write-back acc -> out, with the fused epilogue

    other root blocks (the padding) get the injective schedule."""
    main = mac.block
    wb = sch.cache_write(main, 0, "global")
    fuse_epilogue(sch, wb)
    by = loop_of(sch, main)
    ow_o, ow_i = sch.split(by(conv.ow), factors=[None, plan.columns])
    vec_o, vec_i = sch.split(by(conv.lane), factors=[plan.vectors, plan.lanes])
    rows = [by(v) for v in (conv.n, conv.chunk, conv.oh) if v is not None]
    group = []
    if plan.row_group > 1:  # DEPTHWISE_ROW_GROUPS: R rows per iteration, their padding once
        rows[-1], oh_i = sch.split(rows[-1], factors=[None, plan.row_group])
        group = [oh_i]
    reds = [by(v) for v in conv.window]
    sch.reorder(*rows, *group, ow_o, *reds, ow_i, vec_o, vec_i)
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
