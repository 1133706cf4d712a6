"""GPU rule: float32 matmuls and convolutions (as implicit GEMMs) on TF32 tensor cores.

The CUDA-core rules (dlight's ``Matmul``, :mod:`.gpu_conv2d`, :mod:`.gpu_splitk`)
run float32 GEMMs as register-tiled SIMT code; at batch 8-32 the grids are full and
that code meets cuDNN's TF32 tensor cores.  This rule runs the same contraction on
the tensor cores (TF32 ``mma.sync`` on 16x16x8 warp tiles, :mod:`hetpart.kernels.tf32`):

1. normal form ``C[b, I, J] += A[b, I, K] * B[b, J, K]`` -- a convolution's windowed
   operand ``reindex``-ed first, padding inlined (as :mod:`.gpu_conv2d` does), its K
   ordered ``(ky, kx, channel)`` so that a K slice of whole channels has one window
   offset -- padded to whole block tiles (rows past M and K past the tile read as zeros);
2. a model weight's copy into that form (the ``[1, N, K]`` reindex and its tile
   padding) is marked as a weight-layout rewrite, so :mod:`hetpart.kernels.weight_prepack`
   does it once at compile time: the kernel reads whole aligned rows of a packed weight;
3. a thread block computes a :class:`Tile` of the output (the largest of
   :data:`MATMUL_TILES` / :data:`CONV_TILES` whose grid fills the GPU), each of its warps a few 16x16
   accumulator fragments; each ``Tile.k`` slice of A and B is staged in shared memory
   by all threads (the im2col matrix of a convolution is never stored) -- along K, 4
   floats per thread, where K is contiguous in memory; along the rows (8 rows x 4 K per
   warp step) where the rows are and K is not (an NCHW convolution's input) -- then
   loaded into each warp's operand registers and multiplied.  The staging of slice
   k+1 overlaps the multiplication of slice k (a two-stage software pipeline with
   ``cp.async`` copies into double buffers) except where :func:`_pipelined` says it
   does not pay -- there, on grids of at most :data:`REGISTER_PREFETCH_MAX_BLOCKS_PER_SM`
   blocks per SM, each thread loads its share of slice k+1 into registers during the
   multiplication of slice k instead (:data:`REGISTER_PREFETCH`);
4. each warp stores its accumulators to shared memory and writes them out through
   the fused element-wise epilogue (bias, relu, residual add...; at batch > 1 also
   ONNX ``Clip`` with its bounds as inputs -- ReLU6 -- whose NaN tests of the bounds
   are first inlined into it, :func:`_inline_side_inputs`), 4 floats per
   thread per step along the output's contiguous dimension -- the columns of a
   matmul, the rows (pixels) of an NCHW convolution, whose accumulators are then
   stored transposed so that the write-out reads them along the rows too.

A convolution whose grid has fewer than two blocks per SM (:data:`SPLIT_K_BELOW_PER_SM`) has
its K cut into 2-4 chunks that start at window offsets (:func:`split_factor`): steps
1-4 run per chunk as more blocks, writing partial products ``P[s, b, J, I]`` instead
of fusing the epilogue, and a second kernel (:func:`.gpu_splitk.schedule_sum_epilogue`)
adds the chunks and applies the epilogue, one thread per output element.

At batch 1 a plain matmul whose smallest tile gives under two blocks per SM (a
transformer's projections at 128-197 tokens: 48-192 tiles of 32x64 on 132 SMs) is
:class:`GpuTensorCoreSplitK`'s: the smallest
tile, K cut into :func:`matmul_split_factor` chunks, the same two kernels with the
partials in the matmul's own order ``P[s, b, I, J]`` and the K loop always pipelined;
it runs before the SIMT split-K rules (:mod:`.gpu_splitk`, :mod:`.gpu_splitk_fine`), which
took these functions before.  :class:`GpuTensorCoreConvSplitK`, next, does the same for batch-1
convolutions (3x3 and 1x1) whose smallest tile's grid is under a block per SM -- ResNet-50's layers at
56x56 to 7x7 -- with chunks at window offsets (:func:`conv_split_factor`, :data:`CONV_SPLIT_B1`).

Applies to float32 contractions whose grid fills the GPU (at least :data:`MIN_BLOCKS_PER_SM`
blocks per SM of one of the tiles) -- smaller ones are split-K's or the SIMT rules' -- on targets with
tensor cores (sm_80 and later); returns None otherwise, or when the build's
:class:`~hetpart.kernels.options.KernelOptions` ask for full float32 (``tf32=False``).
The grid thresholds scale with the options' ``sm_count``.
A weight stored in bfloat16/float16 (:mod:`hetpart.importer.low_precision`: the
kernel widens it in a block of its own) is a float32 contraction to this rule: it is
packed at compile time like a float32 weight, but in its own dtype
(:func:`_pack_in_storage_dtype`), and widened in the staging copy, so global memory
holds the half-size packed weight and shared memory its float32 values, exact in TF32
-- the products are those of a bf16/fp16 ``mma`` accumulating in float32.  (Until
issue 17's coverage check, ``tools/bf16_rule_coverage.py``, the packing stopped at the
widening and every call re-gathered the weight in the kernel's K order.)  Invariant: every output is the same sum
over K, of products of TF32-rounded operands (see :mod:`hetpart.kernels.tf32`); a
split K changes only the order of the additions.  With :data:`LOW_PRECISION_MMA` on, a
contraction with such a weight instead multiplies in the weight's dtype (both operands
rounded to it, the activation at its fragment load; m16n8k16 bf16/fp16 ``mma`` with
float32 sums), as ``torch.autocast`` does; with :data:`LOW_PRECISION_ATTENTION_MMA`, a contraction
of two activations stored in bf16 between kernels (attention's ``Q K^T`` and ``P V``,
:mod:`hetpart.importer.low_precision_attention`) likewise, its B (``K^T``, ``V``: contiguous along
N) staged K-major in whole vectors (:func:`_stage_kmajor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.ir import TensorLoad
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from .. import access, tf32
from ..analysis import arch_of, consumer_chain, contains, is_gpu, is_layout_free
from ..register_tile import LAYOUT_REWRITE_PREPROC
from .gpu_gemm import as_normal_gemm, inline_producers
from ..options import DEFAULT, KernelOptions
from ...importer.low_precision_scores import NARROW_ACTIVATION_ATTR
from .gpu_splitk import inline_epilogue, schedule_sum_epilogue


@dataclass(frozen=True)
class Tile:
    """A thread block's share of the GEMM: ``warps_m x warps_n`` warps, each computing
    ``frags_m x frags_n`` 16x16 accumulator fragments, K staged ``k_frags`` x 8 at a time."""

    warps_m: int
    warps_n: int
    frags_m: int
    frags_n: int
    k_frags: int = 4

    @property
    def m(self) -> int:
        return self.warps_m * self.frags_m * tf32.M

    @property
    def n(self) -> int:
        return self.warps_n * self.frags_n * tf32.N

    @property
    def k(self) -> int:
        return self.k_frags * tf32.K

    @property
    def warps(self) -> int:
        return self.warps_m * self.warps_n

    def blocks(self, batch: int, m: int, n: int) -> int:
        return batch * math.ceil(m / self.m) * math.ceil(n / self.n)


MATMUL_TILES = (Tile(2, 4, 4, 2), Tile(2, 4, 2, 2), Tile(2, 2, 2, 2), Tile(2, 2, 1, 2))
CONV_TILES = (Tile(2, 2, 2, 2), Tile(2, 2, 1, 2))
"""Block tiles, in order of preference; the rule takes the first whose grid fills the
GPU.  Measured on the H200 (one kernel at a time, TFLOP/s): BERT-base's batch-32
matmuls ran fastest with 128x128 tiles of 8 warps (61-83, against 55-58 with 64x128
and 51-53 with 64x64); ResNet-50's batch-32 convolutions with 64x64 tiles of 4 warps
(30-40, against 12-31 with 64x128), whose smaller blocks hide the slower im2col
loads of the windowed operand; smaller tiles serve outputs too small for the first
(ResNet-50's 7x7 layers)."""

TILE_BY_PADDING = False
"""Off until device step 141 measures it (built and checked in session 51 without a GPU).
Choose a plain GEMM's tile (a matmul's; a 1x1 convolution's too with
:data:`TILE_BY_PADDING_CONVOLUTIONS`) among the :data:`MATMUL_TILES` whose grid fills the GPU by
the least padded output area per unit of the tile's measured rate (:func:`plain_tile`), not
the first that fills it.  At batch 32 every grid fills with the first, 128 x 128, which pads
a narrow output to 128 columns: attention's ``P V`` (N = the head width, 64: half the MMAs
multiply padding; ViT-B/16 M = 197 -> 256 too, 38% of the executed MMAs useful; the Whisper
encoder's 1500 x 64 per head, 49%) and the 1x1 convolutions into 16-64 channels
(EfficientNet-B0's 16/24/40, ResNet-50's 64: 12-50%).  The 64 x 64 tile (4 warps) halves
those MMAs where it fits N, at its measured ~0.72 of the 128 x 128 tile's rate.  False: the
first tile that fills the grid, as before (issue 17's batch-32 analysis,
``bench/results/gpu-b32-static.md``)."""

TILE_BY_PADDING_CONVOLUTIONS = True
"""With :data:`TILE_BY_PADDING` on, 1x1 convolutions (plain GEMMs too) as well; False: matmuls
only -- the fallback if step 141 finds a convolution slower (their tiles were measured on
ResNet-50, not on these channel counts)."""

MATMUL_TILE_RATES = (72.0, 56.5, 52.0, 36.0)
"""TFLOP/s of each of :data:`MATMUL_TILES` in the tile choice of :data:`TILE_BY_PADDING`: the
first three measured on the H200 on BERT-base's batch-32 matmuls (midpoints of 61-83, 55-58,
51-53: :data:`MATMUL_TILES`' note); the last (32 x 64) not measured there, taken at half the
first's, so that it wins only where it saves more than half the MMAs."""

WARP = 32
VEC = 4

MIN_BLOCKS_PER_SM = 1
"""Blocks per SM below which a tile is not used (and with no tile left, the rule
declines): with fewer blocks than SMs the tensor cores idle, and split-K (which cuts
K across blocks) does better."""

MIN_ARCH = 80
"""TF32 ``mma.sync`` needs compute capability 8.0 (Ampere) or later."""


SPLIT_K_BELOW_PER_SM = 2
"""Blocks per SM below which a convolution's K is split across blocks
(:func:`split_factor`)."""

MIN_K_CHUNK = 512
"""Shortest K chunk a block of a split grid runs (16 slices of 32): shorter, the
partial sums written and read back cost more than the parallelism gives."""


def split_factor(blocks: int, k: int, k_run: int, tile: Tile, options: KernelOptions = DEFAULT) -> int:
    """How many chunks to cut a convolution's K into (1: none) for a grid of
    ``blocks`` tiles: the smallest of 2..4 that brings the grid to
    :data:`SPLIT_K_BELOW_PER_SM` blocks per SM (of ``options.sm_count``) with chunks of
    whole K slices, at least :data:`MIN_K_CHUNK` long, that start at a window offset (a
    multiple of ``k_run``, the channels per offset; a chunk starting mid-window costs
    its loads a division per element).  ``options.split_k == "off"`` switches
    splitting off.

    Measured on the H200 (ResNet-50, batch 32): the 3x3 layers at 7x7 outputs (200
    blocks of 64x64 on 132 SMs, 144 K slices each) took 0.164 / 0.198 ms un-split
    (stride 1 / 2), 0.108 / 0.129 split in 3 (600 blocks) -- cuDNN 0.079 / 0.085;
    split in 2 (chunks starting mid-window) 0.35 ms.  The 1x1 layers with grids
    under the threshold gained nothing from a split (they are not split)."""
    below = SPLIT_K_BELOW_PER_SM * options.sm_count
    if blocks >= below or options.split_k == "off" or k_run >= k:
        return 1
    for s in (2, 3, 4):
        chunk = k // s
        if k % (s * tile.k) or chunk % k_run:
            continue
        if chunk < MIN_K_CHUNK:
            break
        if blocks * s >= below:
            return s
    return 1


class GpuTensorCoreGemm(ScheduleRule):
    """float32 GEMM / implicit-GEMM convolution on TF32 tensor cores (module doc),
    with the build's ``options`` (TF32 on/off, split-K, the SM count)."""

    def __init__(self, options: KernelOptions = DEFAULT):
        self.options = options

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not (self.options.tf32 and is_gpu(target) and target.kind.name == "cuda" and arch_of(target) >= MIN_ARCH):
            return None
        gemm = as_normal_gemm(func, channels_last=True)
        if gemm is None:
            return None
        sch, main, plain, (batch, m, n, k), k_run = gemm
        min_blocks = MIN_BLOCKS_PER_SM * self.options.sm_count
        if plain and TILE_BY_PADDING and (TILE_BY_PADDING_CONVOLUTIONS or not _is_convolution(sch, main)):
            tile = plain_tile(batch, m, n, self.options.sm_count)
        else:
            tiles = MATMUL_TILES if plain else CONV_TILES
            tile = next((t for t in tiles if t.blocks(batch, m, n) >= min_blocks), None)
            if tile is not None and not plain and _images(func) == 1:
                tile = conv_b1_tile(tile, batch, m, n, self.options.sm_count)
        if tile is None:
            return None
        blocks = tile.blocks(batch, m, n)
        split = split_factor(blocks, k, k_run, tile, self.options)
        if _images(func) >= SIDE_INPUTS_MIN_BATCH:
            _inline_side_inputs(sch, main)
        return _schedule_split(sch, main, func, tile, blocks, split, self.options, transposed=not plain)


CONV_B1_SMALL_TILE = False
"""Off: measured no gain (built in session 57, issue 17).
Device step 167 (session 58, H100; bench/results/gpu-steps-165-169-nvidia-h100.md): whisper_encoder
b1 bf16 with all three conv-front switches on 1.136 -> 1.118 ms, rounds overlapping (1.136-1.148 /
1.118-1.157); with this one removed from the three, within 1 %: no gain outside the spread, so off.
Run a batch-1 windowed convolution (k > 1) whose first filling tile of :data:`CONV_TILES` (64 x 64)
gives under :data:`CONV_B1_SMALL_TILE_BLOCKS_PER_SM` blocks per SM on the smallest (32 x 64:
twice the blocks, each warp half the MMAs and half the staged A per K slice) -- the Whisper
encoder's stride-1 front-end Conv1d 80 -> 384 on 3000 frames (45.9 us at device step 159, roofline
~2.1): 282 blocks of 4 warps (2-3 per SM, 8-12 warps) whose K loop is issue-bound (per slice and
warp ~600 instructions for 32 ``mma.sync``: 16 predicated scalar loads of the windowed input, a
``/`` and ``%`` by 80 each, shared stores, TF32 conversions) become 564 (4-5 per SM, 16-20 warps)
to hide those latencies.  False: the first filling tile, as before."""

CONV_B1_SMALL_TILE_BLOCKS_PER_SM = 4
"""Blocks per SM of the first tile's grid under which :data:`CONV_B1_SMALL_TILE` takes the smallest."""


def conv_b1_tile(tile: Tile, batch: int, m: int, n: int, sms: int) -> Tile:
    """:data:`CONV_B1_SMALL_TILE`'s tile for a batch-1 windowed convolution's ``batch`` x (M x N)
    implicit GEMM whose first filling tile is ``tile``: the smallest of :data:`CONV_TILES` where the
    switch is on and ``tile``'s grid is under :data:`CONV_B1_SMALL_TILE_BLOCKS_PER_SM` blocks per SM
    of ``sms``; else ``tile``."""
    if CONV_B1_SMALL_TILE and tile.blocks(batch, m, n) < CONV_B1_SMALL_TILE_BLOCKS_PER_SM * sms:
        return CONV_TILES[-1]
    return tile


def padded_area(t: Tile, m: int, n: int) -> int:
    """Output elements a grid of ``t`` computes for an M x N output (rows and columns
    padded to whole tiles): what its MMAs cost, K and the batch being the same for every tile."""
    return math.ceil(m / t.m) * t.m * math.ceil(n / t.n) * t.n


def plain_tile(batch: int, m: int, n: int, sms: int) -> Tile | None:
    """:data:`TILE_BY_PADDING`'s tile for a plain ``batch`` x (M x N) GEMM on ``sms`` SMs: of the
    :data:`MATMUL_TILES` whose grid has :data:`MIN_BLOCKS_PER_SM` blocks per SM, the one of least
    ``padded_area / rate`` (:data:`MATMUL_TILE_RATES`), the earlier on a tie; None if none fills.
    ViT-B/16 at batch 32 (132 SMs): ``P V`` (384 x 197 x 64) -> 64 x 64; ``Q K^T`` (197 x 197) and
    the projections (6304 x 768...) keep 128 x 128."""
    filling = [(i, t) for i, t in enumerate(MATMUL_TILES) if t.blocks(batch, m, n) >= MIN_BLOCKS_PER_SM * sms]
    if not filling:
        return None
    return min(filling, key=lambda it: (padded_area(it[1], m, n) / MATMUL_TILE_RATES[it[0]], it[0]))[1]


def _schedule_split(sch: s_tir.Schedule, main, func, tile: Tile, blocks: int, split: int,
                    options: KernelOptions, *, transposed: bool, images: int | None = None) -> s_tir.Schedule | None:
    """Pad ``main`` (normal form) to whole tiles, pack its weights and schedule it on
    ``tile`` (``blocks`` of them) -- with ``split`` > 1 as K chunks writing partial
    products ``P[s, b, J, I]`` (``transposed``: the order of a convolution's NCHW
    output) or ``P[s, b, I, J]`` (a matmul's: its K loop always software-pipelined --
    rows past M bounds-test whole 4-float copies, not the 4-byte ones of a padded
    convolution that :data:`PIPELINE_MAX_BLOCKS_PER_SM_PREDICATED` was measured on), then a
    second kernel summing them through the epilogue.  ``images``: the batch the
    pipeline depth is chosen for (:func:`pipeline_stages`; default the output's leading
    extent).  None when a step does not apply."""
    sch.pad_einsum(main, [1, tile.m, tile.n, tile.k * split])
    _mark_weight_packs(sch, main, func)
    narrowed = _narrow_activation(sch, main, func)
    done = (lambda s: _fold_narrow_round_trips(s)) if narrowed else (lambda s: s)
    stages = pipeline_stages(_images(func) if images is None else images, blocks * split, transposed,
                             options.sm_count)
    if split == 1:
        return done(sch) if _schedule(sch, main, tile, blocks, tf32.intrinsics(), options.sm_count,
                                      stages=stages, activations=narrowed) else None
    chunk, _ = sch.split(sch.get_loops(main)[-1], [split, None])
    partial = sch.rfactor(chunk, factor_axis=0)
    if not _schedule(sch, partial, tile, blocks * split, tf32.intrinsics(), options.sm_count,
                     partials="transposed" if transposed else "plain", pipeline=not transposed, stages=stages,
                     activations=narrowed):
        return None
    return done(sch) if schedule_sum_epilogue(sch, main, partial) else None


MATMUL_SPLIT_MAX_BATCH = 1
"""Images (the output's leading extent) up to which :class:`GpuTensorCoreSplitK`
applies whatever M is: batch 1 is where transformer projections leave the tiles' grid
starved (issue 17); at batch 32 their grids fill the GPU, and the only matmuls small
enough there are classifiers whose rows are the batch (ResNet-50's, EfficientNet-B0's,
MobileNet-v3's ``[32, C] x [C, 1000]``), which keep their measured schedules."""

MATMUL_SPLIT_MIN_TOKEN_ROWS = 64
"""Rows (M) from which a matmul whose output leads with more than
:data:`MATMUL_SPLIT_MAX_BATCH` is taken too: a 2-D or sequence-first one at batch 1,
whose leading extent is the tokens, not the batch -- ``nn.MultiheadAttention``'s in- and
out-projections as torch exports them (``[L, N, E]``, ``[L * N, E]``: torchvision's ViT),
HF ``Conv1D``'s ``Gemm`` (GPT-2).  A classifier at batch 32 has 32 rows."""

MATMUL_SPLIT_MIN_ROWS = 32
"""Least M (rows) a split matmul has: a tile's 32 rows; fewer would compute mostly
padding (an M = 1 classifier is a GEMV's)."""

MATMUL_SPLIT_MIN_SLICES = 4
"""Least K slices (of ``Tile.k`` = 32) per chunk: the two-stage pipeline needs a few
slices to overlap, and the partials cost S x M x N floats."""

MATMUL_SPLIT_MAX = 16
"""Most chunks of a split matmul (bounds the partials and the sum kernel's loop)."""

MATMUL_BLOCK = "matmul"
"""The name of the block ``relax.matmul`` (ONNX MatMul, Gemm) legalizes to: what the
split applies to (not convolutions, 1x1 ones included, whose operands are plain too)."""

MATMUL_SPLIT_TILE = MATMUL_TILES[-1]
"""The tile of a split matmul: the smallest (32 x 64, 4 warps), the most blocks before
any split."""


def matmul_split_factor(batch: int, m: int, n: int, k: int, options: KernelOptions = DEFAULT) -> int:
    """How many K chunks :class:`GpuTensorCoreSplitK` cuts a plain ``batch`` x (M x N x K)
    matmul into; 1: it declines.  Only where the smallest tile's grid has fewer than
    :data:`SPLIT_K_BELOW_PER_SM` blocks per SM (the threshold at which the convolutions'
    split pays, measured on the H200; larger grids stay :class:`GpuTensorCoreGemm`'s),
    M has :data:`MATMUL_SPLIT_MIN_ROWS` rows and ``options.split_k`` is ``"all"``: the
    smallest S (whole chunks of at least
    :data:`MATMUL_SPLIT_MIN_SLICES` slices, S dividing the slices, at most
    :data:`MATMUL_SPLIT_MAX`) that gives :data:`SPLIT_K_BELOW_PER_SM` blocks per SM, else
    the largest such S if it gives at least one per SM."""
    sms = options.sm_count
    tile = MATMUL_SPLIT_TILE
    blocks = tile.blocks(batch, m, n)
    if options.split_k != "all" or m < MATMUL_SPLIT_MIN_ROWS or blocks >= SPLIT_K_BELOW_PER_SM * sms:
        return 1
    slices = math.ceil(k / tile.k)
    allowed = [s for s in range(2, MATMUL_SPLIT_MAX + 1)
               if slices % s == 0 and slices // s >= MATMUL_SPLIT_MIN_SLICES]
    if not allowed:
        return 1
    pick = next((s for s in allowed if blocks * s >= SPLIT_K_BELOW_PER_SM * sms), allowed[-1])
    return pick if blocks * pick >= sms else 1


SHORT_K_MAX_SLICES = 8
"""K slices (of ``Tile.k`` = 32: K <= 256) up to which a batch-1 matmul that no split
brings to a block per SM runs un-split on the smallest tile (:func:`short_k_unsplit`)."""


def short_k_unsplit(batch: int, m: int, n: int, k: int, options: KernelOptions = DEFAULT) -> bool:
    """Whether :class:`GpuTensorCoreSplitK` takes a matmul it does not split: K of at most
    :data:`SHORT_K_MAX_SLICES` slices (too short to split into chunks of
    :data:`MATMUL_SPLIT_MIN_SLICES`), M of :data:`MATMUL_SPLIT_MIN_ROWS` or more, and a grid
    of the smallest tile under a block per SM (which :class:`GpuTensorCoreGemm` declines) --
    attention's ``softmax(QK^T) V`` at batch 1 (BERT: 12 heads x 128 x 64, K = 128: 48
    tiles; ViT: 197 tokens, 84 tiles), which dlight's SIMT ``Matmul`` ran with 2176-3516
    serial stores per thread.  Those blocks idle SMs either way; on the tensor cores each
    runs its few K slices in a fraction of the time."""
    tile = MATMUL_SPLIT_TILE
    return (m >= MATMUL_SPLIT_MIN_ROWS and math.ceil(k / tile.k) <= SHORT_K_MAX_SLICES
            and tile.blocks(batch, m, n) < MIN_BLOCKS_PER_SM * options.sm_count)


SPLIT_LONG_K_BMM = False
"""Off until a device A/B measures it (session 56, issue 17; built and checked without a GPU).
Give :class:`GpuTensorCoreSplitK` the batched contractions of long K that
:func:`matmul_split_factor` leaves alone because its smallest tile's grid already has two blocks
per SM (:func:`long_k_split_factor`): attention's ``P V`` at 1500 tokens (the Whisper encoder,
6 heads: ``[6, 1500, 1500] x [6, 1500, 64]``) went to :class:`GpuTensorCoreGemm`'s 64 x 128 tile,
144 blocks of 8 warps, each looping over all 47 K slices with half its columns padding
(81.8 us against ``Q K^T``'s 47.6 at equal flops, device step 159); with this on, 32 x 64 tiles
(N = 64 exactly) split in K: 282 x 2 = 564 blocks of 4 warps, 24 slices each, then the sum
kernel.  False: those keep :class:`GpuTensorCoreGemm`'s schedule, byte-identical to before."""

LONG_K_MIN_SLICES = 32
"""K slices (of ``Tile.k`` = 32: K >= 1024) from which :data:`SPLIT_LONG_K_BMM` splits: shorter,
each block's serial loop is short anyway (ViT-B/16's ``P V``, K = 197, stays un-split)."""

LONG_K_BLOCKS_PER_SM = 4
"""Blocks per SM the split of :data:`SPLIT_LONG_K_BMM` aims for (the smallest S reaching it):
a grid under it with a long K is split; 4 takes Whisper's ``P V`` to 564 blocks (S = 2, the
partials 4.6 MB), 8 to 1128 (S = 4, 9.2 MB) -- an A/B knob."""

LONG_K_MIN_CHUNK_SLICES = 8
"""Least K slices per chunk of a long-K split (K padded to S whole chunks)."""


def long_k_split_factor(batch: int, m: int, n: int, k: int, options: KernelOptions = DEFAULT) -> int:
    """How many K chunks :data:`SPLIT_LONG_K_BMM` cuts a batched (``batch`` > 1: heads) M x N x K
    contraction into; 1: none (the switch off, ``options.split_k`` not ``"all"``, M under
    :data:`MATMUL_SPLIT_MIN_ROWS`, K under :data:`LONG_K_MIN_SLICES` slices, or the smallest
    tile's grid at :data:`LONG_K_BLOCKS_PER_SM` blocks per SM already).  Out: the smallest S in
    2..:data:`MATMUL_SPLIT_MAX` whose grid reaches :data:`LONG_K_BLOCKS_PER_SM` blocks per SM with
    chunks of at least :data:`LONG_K_MIN_CHUNK_SLICES` slices, else the largest such S.
    Invariant: K is padded to S whole chunks by :func:`_schedule_split` (S need not divide the
    slices: Whisper's 47), the padding's products zero."""
    tile = MATMUL_SPLIT_TILE
    blocks, slices = tile.blocks(batch, m, n), math.ceil(k / tile.k)
    target = LONG_K_BLOCKS_PER_SM * options.sm_count
    if (not SPLIT_LONG_K_BMM or options.split_k != "all" or batch < 2 or m < MATMUL_SPLIT_MIN_ROWS
            or slices < LONG_K_MIN_SLICES or blocks >= target):
        return 1
    allowed = [s for s in range(2, MATMUL_SPLIT_MAX + 1) if slices // s >= LONG_K_MIN_CHUNK_SLICES]
    return next((s for s in allowed if blocks * s >= target), allowed[-1] if allowed else 1)


class GpuTensorCoreSplitK(GpuTensorCoreGemm):
    """Split-K on TF32 tensor cores for batch-1 float32 matmuls whose tile grid has
    under two blocks per SM (transformer projections at 128-197 tokens: 48-84 tiles of
    32 x 64, which the SIMT split-K rules took before -- ``gpu_splitk``: CUDA-core FMAs,
    4327-12905 serial stores per thread; BERT's FFN up-projection at 128 tokens, 192
    tiles, un-split on the tensor cores before, 24 K slices per block).  K is cut into
    :func:`matmul_split_factor` chunks; each chunk's tiles run as :class:`GpuTensorCoreGemm`'s (staged through
    shared memory, ``mma.sync``), writing partial products ``P[s, b, I, J]``; a second
    kernel sums them through the fused epilogue -- one that reads the sum twice
    (GELU) is inlined into a chain first (:func:`.gpu_splitk.inline_epilogue`).  A matmul
    too short in K to split whose grid stays under a block per SM runs un-split on the
    same tile, epilogue fused (:func:`short_k_unsplit`: attention's ``P V``).  With
    :data:`SPLIT_LONG_K_BMM` a batched contraction of long K whose grid is under
    :data:`LONG_K_BLOCKS_PER_SM` blocks per SM is split too (:func:`long_k_split_factor`:
    attention's ``P V`` at 1500 tokens).
    Declines everything else (convolutions, batch > :data:`MATMUL_SPLIT_MAX_BATCH` --
    an output leading with more than that and M under
    :data:`MATMUL_SPLIT_MIN_TOKEN_ROWS` --, grids the smallest tile fills twice over,
    K that neither splits nor is short, few rows), so those keep their rules."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not (self.options.tf32 and is_gpu(target) and target.kind.name == "cuda" and arch_of(target) >= MIN_ARCH):
            return None
        images = _images(func)
        if images < 1:
            return None
        gemm = as_normal_gemm(func, channels_last=True)
        if gemm is None or not gemm.plain or gemm.sch.get(gemm.block).name_hint != MATMUL_BLOCK:
            return None  # a 1x1 convolution is plain too: its rules stay
        sch, main, _, (batch, m, n, k), _ = gemm
        if images > MATMUL_SPLIT_MAX_BATCH and m < MATMUL_SPLIT_MIN_TOKEN_ROWS:
            return None
        split = matmul_split_factor(batch, m, n, k, self.options)
        if split == 1:
            split = long_k_split_factor(batch, m, n, k, self.options)
        if split == 1 and not short_k_unsplit(batch, m, n, k, self.options):
            return None
        if split > 1 and consumer_chain(sch, main) is None and not inline_epilogue(sch, main):
            return None
        tile = MATMUL_SPLIT_TILE
        return _schedule_split(sch, main, func, tile, tile.blocks(batch, m, n), split, self.options,
                               transposed=False, images=1)  # token rows, not images: a batch-1 grid


CONV_SPLIT_B1 = True
"""Give :class:`GpuTensorCoreConvSplitK` the batch-1 convolutions no tensor-core tile grid
fills (issue 17, ``bench/results/gpu-r50-b1-static.md``).  False: they go to the SIMT
split-K rules (:mod:`.gpu_splitk_fine`, :mod:`.gpu_splitk`) or dlight's ``Matmul``, as
before -- the "before" of device step 134's A/B.  Measured there (H100, session 50;
``bench/results/gpu-r50-b1-nvidia-h100.md``): zoo:resnet50 b1 all-GPU 1.303 -> 0.527 ms; each of
the 41 changed launches 1.5-3.6x faster (ResNet-18, ConvNeXt's 2 and the detector's 3 too); the
corpus ResNet-50 b1 TF32 0.58x PyTorch's CUDA graph (was 1.48-1.51x on the H200)."""

CONV_SPLIT_MAX_BATCH = 1
"""Images up to which :class:`GpuTensorCoreConvSplitK` applies (batch 32's convolutions fill
the tiles' grids and keep their measured schedules)."""

CONV_SPLIT_MIN_SLICES = 4
"""Least K slices (of ``Tile.k`` = 32) per chunk of a split batch-1 convolution (as
:data:`MATMUL_SPLIT_MIN_SLICES`: the pipeline needs a few slices to overlap)."""

CONV_SPLIT_MAX = 16
"""Most chunks of a split batch-1 convolution (bounds the partials: S x M x N floats of whole
tiles, at most 4.2 MB for ResNet-50 -- its 1x1 1024 -> 2048 at 7x7 in 8 -- within the H200's L2)."""

CONV_BLOCK = "conv"
"""How the name of a convolution's block (``relax.nn.conv2d`` legalized: ``conv2d_nchw``)
begins: what :class:`GpuTensorCoreConvSplitK` applies to, 1x1 convolutions (plain GEMMs)
included."""


def _is_convolution(sch: s_tir.Schedule, block) -> bool:
    """Whether ``block`` is a convolution's (named :data:`CONV_BLOCK`...), 1x1 ones included."""
    return sch.get(block).name_hint.startswith(CONV_BLOCK)


CONV_SPLIT_TILE = CONV_TILES[-1]
"""The tile of a split batch-1 convolution: the smallest (32 x 64, 4 warps; also the
smallest of :data:`MATMUL_TILES`, which a 1x1 convolution's plain GEMM would use)."""


CONV_SPLIT_PARTIAL_WAVES = False
"""Off: measured no gain (built in session 57, issue 17).
Device step 167 (session 58, H100; bench/results/gpu-steps-165-169-nvidia-h100.md): whisper_encoder
b1 bf16 with all three conv-front switches on 1.136 -> 1.118 ms, rounds overlapping (1.136-1.148 /
1.118-1.157); with this one removed from the three, within 1 %: no gain outside the spread, so off.
Let :class:`GpuTensorCoreConvSplitK` split a batch-1 convolution of long K whose smallest tile's
grid already has a block per SM but under :data:`CONV_SPLIT_PARTIAL_WAVES_BLOCKS_PER_SM`
(:func:`conv_split_factor`).  The Whisper encoder's second front-end convolution (Conv1d 384 -> 384,
k3, stride 2, 3000 -> 1500 frames, bf16 weights; device step 159: 68.6 us, roofline ~4.6) went to
:class:`GpuTensorCoreGemm`'s 64 x 64 tile: 144 blocks of 4 warps on 132 SMs (12 SMs run two,
one after the other or side by side: 8 warps), each looping over all 36 K slices, each slice 16
predicated 4-byte ``cp.async`` per thread whose window index takes a ``%`` and a ``/`` -- an
issue-bound loop with 1-2 warps per scheduler to hide its latencies.  With this on: 32 x 64
tiles, K in 3 chunks of one window offset each (12 slices): 282 x 3 = 846 blocks (6.4 per SM),
then the sum kernel through the GELU epilogue (partials 6.9 MB, in L2).  False: those keep
:class:`GpuTensorCoreGemm`'s schedule, byte-identical to before."""

CONV_SPLIT_PARTIAL_WAVES_BLOCKS_PER_SM = 4
"""Blocks (of the 32 x 64 tile) per SM under which :data:`CONV_SPLIT_PARTIAL_WAVES` splits, and
the grid its split aims for (the smallest allowed S reaching it, else the largest allowed):
Whisper's stride-2 front-end convolution, 282 tiles -> S = 3 (S = 2 would start a chunk
mid-window); its stride-1 one (564 tiles, K = 240) is left alone -- an A/B knob."""

CONV_SPLIT_PARTIAL_WAVES_MIN_SLICES = 16
"""K slices (of ``Tile.k`` = 32) from which :data:`CONV_SPLIT_PARTIAL_WAVES` splits: a short K's
blocks finish fast anyway, and its partials would cost more than the split gives."""


def conv_split_factor(batch: int, m: int, n: int, k: int, k_run: int, options: KernelOptions = DEFAULT) -> int:
    """How many K chunks :class:`GpuTensorCoreConvSplitK` cuts a batch-1 convolution's
    ``batch`` x (M x N x K) implicit GEMM into; 1: it declines.  Only where the smallest
    tile's grid has fewer blocks than SMs (so :class:`GpuTensorCoreGemm` declines it too)
    and ``options.split_k`` is not ``"off"``: chunks of whole slices, at least
    :data:`CONV_SPLIT_MIN_SLICES` long, starting at a window offset (a multiple of
    ``k_run``, the channels per offset, where ``k_run < k``: :func:`split_factor`'s
    measured reason), at most :data:`CONV_SPLIT_MAX`; the smallest S that gives
    :data:`SPLIT_K_BELOW_PER_SM` blocks per SM, else the largest allowed if it gives at
    least one per SM.

    ResNet-50 at batch 1 (132 SMs, 32 x 64 tiles): the 3x3 layers 56x56 / 28x28 / 14x14 /
    7x7 (98 / 50 / 28 / 16 tiles) split 3 / 9 / 9 / 9; the 1x1 layers 2-16.

    With :data:`CONV_SPLIT_PARTIAL_WAVES` on, a grid of a block per SM or more but under
    :data:`CONV_SPLIT_PARTIAL_WAVES_BLOCKS_PER_SM` with K of at least
    :data:`CONV_SPLIT_PARTIAL_WAVES_MIN_SLICES` slices is split too (:func:`_partial_waves_split`)."""
    sms = options.sm_count
    tile = CONV_SPLIT_TILE
    blocks = tile.blocks(batch, m, n)
    if options.split_k == "off":
        return 1
    if blocks >= MIN_BLOCKS_PER_SM * sms:
        return _partial_waves_split(blocks, k, k_run, sms) if CONV_SPLIT_PARTIAL_WAVES else 1
    allowed = _conv_chunkings(k, k_run)
    if not allowed:
        return 1
    pick = next((s for s in allowed if blocks * s >= SPLIT_K_BELOW_PER_SM * sms), allowed[-1])
    return pick if blocks * pick >= sms else 1


def _conv_chunkings(k: int, k_run: int) -> list[int]:
    """The chunk counts S (2..:data:`CONV_SPLIT_MAX`) a convolution's K may be cut into: whole
    slices of :data:`CONV_SPLIT_TILE`, at least :data:`CONV_SPLIT_MIN_SLICES` per chunk, each
    starting at a window offset (a multiple of ``k_run`` where ``k_run < k``)."""
    slice_k = CONV_SPLIT_TILE.k
    return [s for s in range(2, CONV_SPLIT_MAX + 1)
            if not (k % (s * slice_k) or k // s < CONV_SPLIT_MIN_SLICES * slice_k
                    or (k_run < k and (k // s) % k_run))]


def _partial_waves_split(blocks: int, k: int, k_run: int, sms: int) -> int:
    """:data:`CONV_SPLIT_PARTIAL_WAVES`' chunk count for a grid of ``blocks`` 32 x 64 tiles on
    ``sms`` SMs (at least one per SM): 1 where the grid has
    :data:`CONV_SPLIT_PARTIAL_WAVES_BLOCKS_PER_SM` per SM or K is under
    :data:`CONV_SPLIT_PARTIAL_WAVES_MIN_SLICES` slices or no chunking is allowed
    (:func:`_conv_chunkings`); else the smallest allowed S whose grid reaches that many per SM,
    else the largest allowed.  Whisper's stride-2 front end (282 tiles, K = 3 x 384): 3."""
    target = CONV_SPLIT_PARTIAL_WAVES_BLOCKS_PER_SM * sms
    if blocks >= target or math.ceil(k / CONV_SPLIT_TILE.k) < CONV_SPLIT_PARTIAL_WAVES_MIN_SLICES:
        return 1
    allowed = _conv_chunkings(k, k_run)
    return next((s for s in allowed if blocks * s >= target), allowed[-1]) if allowed else 1


class GpuTensorCoreConvSplitK(GpuTensorCoreGemm):
    """Split-K on TF32 tensor cores for batch-1 float32 convolutions whose tile grid has
    fewer blocks than SMs (:func:`conv_split_factor`).  ResNet-50 at batch 1: every 3x3
    layer (98 tiles of 32 x 64 at 56x56 down to 16 at 7x7) and 25 of its 36 1x1 launches,
    which the SIMT rules took before -- :mod:`.gpu_splitk`'s CUDA-core split (4325-4865
    serial stores per thread; the H200 profile: 35-43 us per 3x3 layer, 231 MFLOP each,
    ~6 TFLOP/s) or dlight's ``Matmul`` (98-112 blocks, 14-15 us per 103 MFLOP).  Each
    chunk's tiles run as :class:`GpuTensorCoreGemm`'s, writing partial products
    ``P[s, b, J, I]`` (the NCHW output's order: the sum kernel reads them along the
    pixels), then a second kernel sums them through the fused epilogue.  Declines
    matmuls (:class:`GpuTensorCoreSplitK`'s), batch > :data:`CONV_SPLIT_MAX_BATCH`, grids
    a tile fills, K no allowed split cuts, and everything with :data:`CONV_SPLIT_B1` off."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not (CONV_SPLIT_B1 and self.options.tf32 and is_gpu(target) and target.kind.name == "cuda"
                and arch_of(target) >= MIN_ARCH):
            return None
        if not 1 <= _images(func) <= CONV_SPLIT_MAX_BATCH:
            return None
        gemm = as_normal_gemm(func, channels_last=True)
        if gemm is None or not _is_convolution(gemm.sch, gemm.block):
            return None  # matmuls are GpuTensorCoreSplitK's
        sch, main, _, (batch, m, n, k), k_run = gemm
        split = conv_split_factor(batch, m, n, k, k_run, self.options)
        if split == 1:
            return None
        if consumer_chain(sch, main) is None and not inline_epilogue(sch, main):
            return None
        tile = CONV_SPLIT_TILE
        return _schedule_split(sch, main, func, tile, tile.blocks(batch, m, n), split, self.options,
                               transposed=True)


SIDE_INPUTS_MIN_BATCH = 2
"""Leading output extent (a convolution's batch) from which an epilogue's side inputs
are inlined (:func:`_inline_side_inputs`).  Batch 1 keeps the schedules measured there (issue 17:
its Clip-ended convolutions stay dlight's SIMT ``Matmul``) until this is measured
there; lower it to 1 to extend it."""


def _images(func: tirx.PrimFunc) -> int:
    """The leading extent of ``func``'s output (a convolution's batch, a 3-D matmul's
    batch; 0 if not static)."""
    out = getattr(func.params[-1], "shape", None) or ()
    return int(out[0]) if len(out) and isinstance(out[0], tirx.IntImm) else 0


def _inline_side_inputs(sch: s_tir.Schedule, main) -> None:
    """Inline into the epilogue the blocks that compute values it reads from the
    function's inputs alone -- ONNX ``Clip``'s NaN tests of its bounds
    (``isnan(min)``, scalars: ReLU6 as torchvision exports it) -- so the epilogue is one chain of
    blocks after ``main`` that :func:`_fuse_epilogue` can fuse into the write-out (TVM
    will not reverse-inline a block that reads another intermediate buffer).  Blocks
    that feed ``main`` (padding, weight copies) are not touched."""
    after = _blocks_after(sch, main)
    if not after:
        return
    names = {sch.get(b).name_hint for b in after}
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        consumers = sch.get_consumers(blk)
        if (sch.get(blk).name_hint in names or not consumers or sch.get_producers(blk)
                or not all(sch.get(c).name_hint in names for c in consumers)
                or any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars)):
            continue
        try:
            sch.compute_inline(blk)
        except Exception:  # noqa: BLE001 - stays a block; the epilogue fusion then declines as before
            pass


PACK_LOW_PRECISION = True
"""Pack bf16/fp16-stored weights at compile time in their own dtype (:func:`_mark_weight_packs`);
False: the kernel gathers them from the unpacked weight on every call, as before issue 17's
coverage check -- the before of ``tools/bf16_rule_coverage.py --time``."""


def _mark_weight_packs(sch, main, func) -> None:
    """Make the copy chain from a model weight to ``main``'s operand (reindex into
    ``[1, N, K]``, tile padding) one block, annotated as a weight-layout rewrite: done
    once at compile time, into a buffer padded to whole tiles (aligned rows).  A weight
    stored in bf16/fp16 and widened in the kernel (:mod:`hetpart.importer.low_precision`)
    is packed in its own dtype and widened after the packing
    (:func:`_pack_in_storage_dtype`)."""
    for operand in (0, 1):
        chain, widen = _producer_chain(sch, main, operand)
        if not chain:
            continue
        reads = sch.get(widen if widen is not None else chain[-1]).reads
        if len(reads) != 1 or not is_layout_free(func, reads[0].source):
            continue
        if widen is not None and not (PACK_LOW_PRECISION and _is_widening(sch, widen)):
            continue
        for blk in reversed(chain[1:]):
            sch.compute_inline(blk)
        if widen is not None:
            _pack_in_storage_dtype(sch, chain[0], widen, str(reads[0].source.dtype))
        sch.annotate(chain[0], LAYOUT_REWRITE_PREPROC, 1)


def _narrows_activation(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` carries ``NARROW_ACTIVATION_ATTR`` (an operand a bf16/fp16 activation stored
    narrow between kernels: :mod:`hetpart.importer.low_precision_scores`' mechanics)."""
    return func.attrs is not None and NARROW_ACTIVATION_ATTR in func.attrs


def _narrow_activation(sch, main, func) -> tuple[int, ...]:
    """For a function with ``NARROW_ACTIVATION_ATTR`` (set by the importer's
    :mod:`~hetpart.importer.low_precision_scores` mechanics on the kernels it retypes, only
    there: an activation stored in bf16/fp16 between kernels): each of ``main``'s operands 0
    and 1 that is such an input (:func:`_pack_activation`; operand 1 only where it is not a
    model weight: attention's K^T or V, :mod:`hetpart.importer.low_precision_attention`).
    :func:`_schedule` then stages operand 0 in its own dtype (``cp.async``, half the bytes)
    and widens it in the fragment loads (``tf32.NAMES["load_a_<dtype>"]``), and operand 1 as
    it does a narrow weight (:data:`WIDEN_IN_FRAGMENTS`), K-major where it is contiguous along N
    (:func:`_stage_kmajor`).  Without the attribute (every
    other kernel) nothing changes.  Returns the operands narrowed, ``()`` for none; where
    any was, the scheduled function then goes through :func:`_fold_narrow_round_trips`."""
    if not _narrows_activation(func):
        return ()
    return tuple(operand for operand in (0, 1) if _pack_activation(sch, main, func, operand))


def _pack_activation(sch, main, func, operand: int) -> bool:
    """In: ``main``'s read ``operand``, produced by a narrow input widened by a block
    (``widen``) then reindexed/padded (``chain``).  Out: the chain as one block computed in
    the input's dtype and one widening block after it -- the form :func:`_narrow_weight`
    finds (the weight's :func:`_pack_in_storage_dtype`, not packed at compile time: the
    chain is inlined into the staging copy, per call).  True when it applied; a refusal
    leaves the schedule as it was.  Operand 1 is left where its input is a model weight
    (:func:`_mark_weight_packs`' or, without :data:`PACK_LOW_PRECISION`, gathered as before)."""
    chain, widen = _producer_chain(sch, main, operand)
    if not chain or widen is None or not _is_widening(sch, widen):
        return False
    source = sch.get(widen).reads[0].source
    if str(source.dtype) not in tf32.NARROW or (operand == 1 and is_layout_free(func, source)):
        return False
    for blk in reversed(chain[1:]):
        sch.compute_inline(blk)
    _pack_in_storage_dtype(sch, chain[0], widen, str(source.dtype))
    return True


def _fold_narrow_round_trips(sch: s_tir.Schedule) -> s_tir.Schedule:
    """``sch``'s function with each narrow -> float32 -> narrow round trip dropped (exact:
    bf16/fp16 values are float32 values): ``Cast(d, Cast(f32, x))`` -> ``x`` and, the
    padded staging copy of :func:`_narrow_activation`, ``Cast(d, if_then_else(c, Cast(f32,
    x), 0))`` -> ``if_then_else(c, x, d(0))`` -- a plain predicated copy, which TVM's
    ``InjectPTXAsyncCopy`` turns into ``cp.async``."""
    import tvm_ffi

    def dtype(e) -> str:
        return str(e.ty)

    def fold(cast):
        target, value = dtype(cast), cast.value
        if target not in tf32.NARROW:
            return cast
        if isinstance(value, tirx.Cast) and dtype(value.value) == target:
            return value.value
        if (isinstance(value, tvm.ir.Call) and getattr(value.op, "name", "") == IF_THEN_ELSE
                and isinstance(value.args[1], tirx.Cast) and dtype(value.args[1].value) == target
                and isinstance(value.args[2], tirx.FloatImm) and float(value.args[2].value) == 0.0):
            return tirx.if_then_else(value.args[0], value.args[1].value, tirx.const(0, target))
        return cast

    func = sch.mod["main"]
    return s_tir.Schedule(func.with_body(tvm_ffi.structural_map(func.body, (tirx.Cast, fold))))


def _is_widening(sch, block) -> bool:
    """Whether ``block`` only converts its one input element by element (its body a
    store of a ``Cast`` of a load) for one consumer: the form storing its input in its
    own dtype keeps exact.  Checked before the chain is touched, so a refusal leaves
    the schedule as it was."""
    stmt = sch.get(block)
    body = stmt.body
    return (len(sch.get_consumers(block)) == 1 and stmt.init is None and isinstance(body, tirx.BufferStore)
            and isinstance(body.value, tirx.Cast) and isinstance(body.value.value, TensorLoad))


def _pack_in_storage_dtype(sch, pack, widen, dtype: str) -> None:
    """``pack`` (the reindex + padding of a widened weight, one block) reading the
    weight itself and storing the packed copy in the weight's ``dtype``; a new
    element-wise block widens the packed copy into the buffer ``pack`` wrote, which
    the operand's staging copy inlines.  The packed bytes stay half of float32's, and
    the values are the weight's: bf16/fp16 -> float32 -> bf16/fp16 is exact, and the
    padding is zero in either dtype."""
    sch.compute_inline(widen)
    sch.cache_write(pack, 0, "global")  # ``pack`` now writes a buffer of its own, copied into the old one
    sch.unsafe_set_dtype(pack, 0, dtype)  # ...stored in ``dtype``, the copy widening it


def _producer_chain(sch, main, operand):
    """``(blocks, widen)``: the blocks producing ``main``'s read ``operand``, nearest
    first (single producers), up to a block that changes the dtype (excluded); that
    block as ``widen`` when it widens the chain's one input (a bf16/fp16 weight,
    :mod:`hetpart.importer.low_precision`), else None."""
    out = []
    buf = sch.get(main).reads[operand].source
    block = main
    while True:
        prods = [p for p in sch.get_producers(block)
                 if any(w.source.same_as(buf) for w in sch.get(p).writes)]
        if len(prods) != 1:
            return out, None
        block = prods[0]
        reads = sch.get(block).reads
        if len(reads) == 1 and reads[0].source.dtype != buf.dtype:
            return out, block
        out.append(block)
        if len(reads) != 1:
            return out, None
        buf = reads[0].source



def _schedule(sch: s_tir.Schedule, main, t: Tile, blocks: int, names: dict[str, str], sms: int, *,
              partials: str = "", pipeline: bool = False, stages: int = 2, activations: tuple = ()) -> bool:
    """Tile, stage and tensorize the normal-form block ``main`` (a grid of ``blocks``
    on ``sms`` SMs); False when a step
    TVM refuses leaves nothing usable (the caller then declines).  With ``partials``,
    ``main`` is a split-K block ``P[s, b, I, J] += ...``: its chunks run as more
    blocks; it writes the partials -- as ``[s, b, J, I]`` where ``partials`` is
    ``"transposed"``, as they are where ``"plain"`` -- and fuses no epilogue.  ``pipeline``:
    software-pipeline the K loop whatever :func:`_pipelined` says; ``stages``: the
    pipeline's depth where it is one (:func:`pipeline_stages`: 2, or 3 -- copies two K
    slices ahead of the MMAs, a shared-memory buffer per stage); ``activations``: the operands
    :func:`_narrow_activation` found stored narrow (the MMA's dtype: :func:`_mma_dtype`)."""
    if not partials:
        b, i, j, k = sch.get_loops(main)
    else:
        b, i, j, chunk, k = sch.get_loops(main)
        sch.reorder(chunk, b, i, j)
        b = sch.fuse(chunk, b)
    narrow = _narrow_weight(sch, main, 1) if (
        WIDEN_IN_FRAGMENTS or LOW_PRECISION_MMA or LOW_PRECISION_MMA_CONVOLUTIONS_ONLY
        or (LOW_PRECISION_ATTENTION_MMA and 1 in activations)) else None
    narrow_a = _narrow_weight(sch, main, 0) if _narrows_activation(sch.mod["main"]) else None
    mma = _mma_dtype(sch, main, narrow, narrow_a, activations)
    if mma and narrow_a is not None and narrow_a[1] != mma:
        narrow_a = None  # an fp16 activation into a bf16 MMA (or the reverse): staged widened, narrowed as loaded
    kk = tf32.MMA_K if mma else tf32.K  # K of one tensor-core step
    i, fi = sch.split(i, [None, tf32.M])
    j, fj = sch.split(j, [None, tf32.N])
    k, fk = sch.split(k, [None, kk])
    sch.reorder(i, j, k, fi, fj, fk)
    frag = main
    step = sch.blockize(fi)  # one 16x16x8 tensor-core step

    bi, wi, mi = sch.split(i, [None, t.warps_m, t.frags_m])
    bj, wj, mj = sch.split(j, [None, t.warps_n, t.frags_n])
    ko, ki = sch.split(k, [None, t.k // kk])
    sch.reorder(b, bi, bj, wi, wj, ko, ki, mi, mj)
    sch.bind(b, "blockIdx.z")
    sch.bind(bi, "blockIdx.y")
    sch.bind(bj, "blockIdx.x")
    warp = sch.fuse(wi, wj)
    sch.bind(warp, "threadIdx.y")

    staged = [_stage(sch, step, operand, ko, t.warps)
              for operand in (0, 1) if not (operand == 0 and narrow_a) and not (operand == 1 and narrow)]
    a_frag = sch.cache_read(step, 0, "warp")
    b_frag = sch.cache_read(step, 1, "warp")
    sch.compute_at(a_frag, ki)
    sch.compute_at(b_frag, ki)
    load_a, load_b, compute = names["load_a"], names["load_b"], names["compute"]
    if narrow_a is not None:  # an activation stored narrow: staged in its dtype, widened in the fragment load
        sch.compute_inline(narrow_a[0])
        staged.insert(0, _stage(sch, a_frag, 0, ko, t.warps))
        load_a = names[f"load_a_{narrow_a[1]}"]
    kmajor = False
    if narrow is not None:  # the fragment load widens; the weight is staged in its own dtype
        widen, dtype = narrow
        sch.compute_inline(widen)
        if 1 in activations:  # attention's K^T / V: N-contiguous, staged K-major in whole vectors
            b_staged, kmajor = _stage_kmajor(sch, b_frag, 0, ko, t.warps)
            staged.append(b_staged)
        else:
            staged.append(_stage(sch, b_frag, 0, ko, t.warps))
        load_b = names[f"load_b_{dtype}_kmajor" if kmajor else f"load_b_{dtype}"]
    if mma:  # both fragments in the weight's dtype: A narrowed as loaded (copied if stored narrow), B as staged
        sch.unsafe_set_dtype(a_frag, 0, mma)
        sch.unsafe_set_dtype(b_frag, 0, mma)
        load_a, load_b, compute = (names[f"mma_{role}_{mma}"] for role in ("load_a", "load_b", "compute"))
        if narrow_a is not None:
            load_a = names[f"mma_load_a_{mma}_staged"]
        if kmajor:
            load_b = names[f"mma_load_b_{mma}_kmajor"]
    a_map, b_map = (tf32.mma_a_layout, tf32.mma_b_layout) if mma else (tf32.a_layout, tf32.b_layout)
    out = _accumulators(sch, step, warp, partials)
    if out is None:
        return False
    acc, out_shared, rows = out
    # Each 16-row (A, C) / 16-column (B) fragment a [32 lanes, registers] block (tf32.*_layout).
    sch.transform_layout(a_frag, ("write", 0), lambda b_, r, c: (b_, r // 16, c // kk, *a_map(r % 16, c % kk)))
    sch.transform_layout(b_frag, ("write", 0), lambda b_, r, c: (b_, r // 16, c // kk, *b_map(r % 16, c % kk)))
    sch.transform_layout(acc, ("read", 0), lambda *ix: (*ix[:-2], ix[-2] // 16, ix[-1] // 16,
                                                        *tf32.c_layout(ix[-2] % 16, ix[-1] % 16)))
    for loop in (ki, mi, mj):
        _unroll_in_nvcc(sch, loop)
    init = sch.decompose_reduction(step, ko)
    if pipeline or _pipelined(sch, staged, blocks, sms):
        # Stage 0 (both shared-memory copies, async) runs stages - 1 K slices ahead of
        # the last (the fragment loads and MMAs); TVM gives the shared tiles a buffer per stage.
        sch.annotate(ko, "software_pipeline_stage", [0, 0, stages - 1])
        sch.annotate(ko, "software_pipeline_order", [0, 1, 2])
        sch.annotate(ko, "software_pipeline_async_stages", [0])
    elif _prefetches(t, blocks, sms, sch.get(ko).extent):
        _prefetch_through_registers(sch, staged, ko)
    acc_name = sch.get(acc).name_hint  # tensorizing replaces the block by ``<name>_o``
    try:
        _tensorize_tiles(sch, a_frag, 16, kk, load_a)
        _tensorize_tiles(sch, b_frag, 16, kk, load_b)
        _tensorize_tiles(sch, acc, 16, 16, names["store_cols" if rows else "store"])
        sch.tensorize(sch.get_loops(sch.get_child_blocks(init)[0])[-2], names["init"])
        sch.tensorize(sch.get_loops(frag)[-3], compute)
    except Exception:  # noqa: BLE001 - the step does not match the intrinsic: decline
        return False
    if rows:
        # Columns VEC floats past a multiple of 32 apart: a warp's fragment stores (lane
        # 4g+t: row g, columns 2t, 2t+1) land in 32 banks.  Set on the tensorized
        # store, the block that writes the buffer now.
        sch.storage_align(sch.get_sblock(acc_name + "_o"), 0, axis=-2, factor=32, offset=VEC)
    _write_out(sch, out_shared, rows)
    return True


def _accumulators(sch: s_tir.Schedule, step, warp, partials: str):
    """Give ``step``'s result a warp-register cache (``acc``) and a shared-memory copy
    (``out_shared``, the block that writes the output), both per ``warp``; fuse the
    epilogue into that copy -- or, for split-K ``partials``, have it write them
    (``"transposed"``: as ``[s, b, J, I]``).  Where the output is contiguous along the rows, the shared copy
    is laid out column by column.  Returns ``(acc, out_shared, rows)``, or None when
    the epilogue does not fuse."""
    out_shared = sch.cache_write(step, 0, tf32.SCOPE)
    acc = sch.cache_write(step, 0, "warp")
    sch.reverse_compute_at(acc, warp)
    sch.reverse_compute_at(out_shared, warp)
    if partials == "transposed":
        sch.transform_layout(out_shared, ("write", 0), lambda *ix: (*ix[:-2], ix[-1], ix[-2]))
    elif not partials and not _fuse_epilogue(sch, out_shared):
        return None
    rows = _writes_along_rows(sch, out_shared)
    if rows:  # accumulators stored column by column ([c, r]): the write-out reads along r
        sch.transform_layout(acc, ("write", 0), lambda *ix: (*ix[:-2], ix[-1], ix[-2]))
    return acc, out_shared, rows


def _stage(sch: s_tir.Schedule, block, operand: int, at, warps: int):
    """Copy ``block``'s ``operand`` slice for one iteration of ``at`` into shared
    memory (producers inlined: it loads the function's inputs), all threads of the
    block, rows padded against bank conflicts.  Threads walk K, VEC floats each,
    where K is contiguous in memory; else, where the rows are, a warp takes 8 rows x
    4 K per step (:func:`_along_rows`): 32-byte runs of global memory per 8 lanes, and
    the 36-float row pitch puts its 32 stores in 32 banks."""
    staged = _staging_copy(sch, block, operand, at)
    r, k = sch.get_loops(staged)[-2:]
    if not _along_rows(sch, staged, warps):
        _spread_in_vectors(sch, staged, r, k, warps)
        return staged
    ro, r8 = sch.split(r, [None, ROW_LANES])
    ko, kk = sch.split(k, [None, WARP // ROW_LANES])
    sch.reorder(ko, ro, kk, r8)
    tx = sch.fuse(kk, r8)
    _, ty = sch.split(sch.fuse(ko, ro), [None, warps])
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    sch.storage_align(staged, 0, axis=-2, factor=32, offset=VEC)
    return staged


def _spread_in_vectors(sch: s_tir.Schedule, staged, outer, inner, warps: int) -> None:
    """Spread the staging copy ``staged`` (loops ``outer``, ``inner``: ``inner`` contiguous in
    memory and in the shared buffer) over the block's threads, VEC elements each, its rows
    padded against bank conflicts (VEC elements past a multiple of 32)."""
    _, ty, tx, vec = sch.split(sch.fuse(outer, inner), [None, warps, WARP, VEC])
    sch.vectorize(vec)
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    sch.storage_align(staged, 0, axis=-2, factor=32, offset=VEC)


def _staging_copy(sch: s_tir.Schedule, block, operand: int, at):
    """The shared-memory copy of ``block``'s ``operand`` slice for one iteration of ``at``,
    its producers inlined (it loads the function's inputs); its loops not yet spread over threads."""
    staged = sch.cache_read(block, operand, tf32.SCOPE)
    sch.compute_at(staged, at)
    inline_producers(sch, staged)
    return staged


def _stage_kmajor(sch: s_tir.Schedule, block, operand: int, at, warps: int):
    """``(staged, kmajor)``: in: ``block``'s ``operand`` an ``[N, K]`` B slice.  Where
    :func:`_stage` would stage it along its rows (N contiguous in memory, K not: attention's
    ``K^T`` and ``V``; in a narrow dtype one element per lane, which ``cp.async`` cannot
    copy), it is stored K-major (``[K, N]``, rows padded as :func:`_stage` pads them) and
    copied VEC elements per thread along N, whole vectors in memory and in shared memory;
    ``kmajor`` True -- its fragments then load by ``tf32.NAMES["load_b_<dtype>_kmajor"]`` (TF32)
    or ``["mma_load_b_<dtype>_kmajor"]`` (:data:`LOW_PRECISION_ATTENTION_MMA`).
    Else staged as :func:`_stage` does (``kmajor`` False)."""
    staged = _staging_copy(sch, block, operand, at)
    r, k = sch.get_loops(staged)[-2:]
    kmajor = _along_rows(sch, staged, warps)
    if kmajor:
        sch.transform_layout(staged, ("write", 0), lambda *ix: (*ix[:-2], ix[-1], ix[-2]))
        sch.reorder(k, r)
        r, k = k, r  # the copy walks N innermost
    _spread_in_vectors(sch, staged, r, k, warps)
    return staged, kmajor


ROW_LANES = 8
"""Lanes of a warp along the rows when a slice is staged along its rows."""


def _along_rows(sch: s_tir.Schedule, staged, warps: int) -> bool:
    """True when the staged slice's global reads are not contiguous in runs of VEC
    along K but step through memory more tightly along the rows (an NCHW
    convolution's input: consecutive output pixels), and the slice splits evenly
    into warp steps of ROW_LANES rows x WARP/ROW_LANES K."""
    blk = sch.get(staged)
    r, k = blk.iter_vars[-2:]
    rows, ks = int(r.dom.extent), int(k.dom.extent)
    if rows % ROW_LANES or ks % (WARP // ROW_LANES) or (rows // ROW_LANES) * (ks // (WARP // ROW_LANES)) % warps:
        return False
    try:
        if access.unit_run(blk, k.var, VEC) >= VEC:
            return False
        along_r, along_k = access.strides_along(blk, r.var), access.strides_along(blk, k.var)
    except access.Unknown:
        return False
    return len(along_r) == 1 and len(along_k) == 1 and 0 < abs(along_r[0]) < abs(along_k[0])


PIPELINE_MAX_BLOCKS_PER_SM_PREDICATED = 2
"""Grids (in blocks per SM) up to which a slice with bounds-tested loads (a padded convolution) is still
software-pipelined.  Measured on the H200 (ResNet-50 convolutions, batch 32): the
pipeline cut 20% off 512x7x7 3x3 (200 blocks) but added 10-20% to the 3x3 layers at
56x56-14x14 (392-1568 blocks), whose predicated 4-byte copies cost more than the
overlap gives; unpadded slices gained up to 10% (BERT-base at batch 32: 9.9 -> 9.0 ms
end to end; most 1x1 convolutions 3-9%).  One case goes the other way and this
threshold does not capture it: the 7x7 stride-2 stem (6272 blocks) ran 0.230 ms
unpipelined, 0.192 pipelined."""

IF_THEN_ELSE = "prim.if_then_else"


REGISTER_PREFETCH = True
"""Prefetch each K slice through registers where the K loop is not ``cp.async``-pipelined
(:func:`_pipelined`: bounds-tested loads on a grid of more than
:data:`PIPELINE_MAX_BLOCKS_PER_SM_PREDICATED` blocks per SM -- ResNet-50's 3x3
convolutions, its 1x1 stride-2 one at 14x14): each thread loads its share of slice k+1
from global memory into registers before the tensor-core steps of slice k and stores it
to shared memory after them (:func:`_prefetch_through_registers`), so a slice's load
latency hides behind the previous slice's MMAs, with the plain predicated loads whose
4-byte ``cp.async`` form cost more than it overlapped.  False: each slice is loaded and
stored before its MMAs, as before (issue 17's batch-32 analysis,
``bench/results/gpu-b32-conv-analysis.md``: these grids hold ~3-6 blocks of 4 warps per
SM, too few to hide an un-overlapped load per slice)."""

REGISTER_PREFETCH_MAX_BLOCKS_PER_SM = 8
"""Grids (blocks per SM) up to which :data:`REGISTER_PREFETCH` applies.  The prefetch holds
each thread's share of a slice in registers (64x64 tiles of 4 warps: 16 + 16 floats; 64-80
-> 96 registers per thread, at most 5 blocks per SM), which costs nothing where the grid
leaves fewer blocks per SM (ResNet-50 at batch 32: 392-800 blocks, 3-6 per SM) but halves
the blocks resident on the large grids (its 3x3 at 56x56: 1568 blocks; the 7x7 stem:
6272), which hide latency by occupancy and keep their schedule until measured."""


REGISTER_PREFETCH_MAX_THREAD_FLOATS = 64
"""Most floats a thread may hold in accumulators (``frags_m x frags_n x 8``) and prefetched
slice shares (``(m + n) x k / threads``) together for :data:`REGISTER_PREFETCH` to apply: the
64x64 tiles of 4 warps (32 + 32: 94-118 registers with the prefetch, ptxas for sm_90, no
spill), not the 128x128 ones of 8 warps (64 + 32: 128-154 registers, ConvNeXt's and
MobileNet-v2's M-padded pointwise layers at batch 32 -- one block per SM)."""


def _prefetches(t: Tile, blocks: int, sms: int, slices) -> bool:
    """Whether an un-pipelined K loop of ``slices`` iterations (at least 2: one to prefetch
    across) on a grid of ``blocks`` tiles ``t`` on ``sms`` SMs gets the register prefetch
    (:data:`REGISTER_PREFETCH`, :data:`REGISTER_PREFETCH_MAX_BLOCKS_PER_SM`,
    :data:`REGISTER_PREFETCH_MAX_THREAD_FLOATS`)."""
    held = t.frags_m * t.frags_n * 8 + (t.m + t.n) * t.k // (t.warps * WARP)
    return (REGISTER_PREFETCH and blocks <= REGISTER_PREFETCH_MAX_BLOCKS_PER_SM * sms
            and held <= REGISTER_PREFETCH_MAX_THREAD_FLOATS
            and isinstance(slices, tirx.IntImm) and int(slices) >= 2)


MANIFEST_LOCAL_STAGE = "tirx.manifest_shared_memory_local_stage"
"""Block annotation TVM's ``ManifestSharedMemoryLocalStage`` pass (in the default TIR
pipeline, before ``InjectSoftwarePipeline``) turns into a register stage: the annotated
shared-memory copy becomes a load of each thread's share into a ``local`` buffer (its
serial steps only) and a store of that buffer into shared memory, two children of the
enclosing loop."""


def _prefetch_through_registers(sch: s_tir.Schedule, staged: list, ko) -> None:
    """Split each of ``staged`` (the A and B slice copies, children of ``ko``) into a
    register load and a shared store (:data:`MANIFEST_LOCAL_STAGE`) and pipeline ``ko``
    over ``[load A, store A, load B, store B, MMAs]``: stores of slice i, loads of slice
    i+1, MMAs of slice i.  The loads' latency overlaps the MMAs; one register copy
    suffices (slice i's is stored before slice i+1's is loaded) and shared memory is not
    double-buffered (the stores and the MMAs are one stage; TVM syncs between them)."""
    for block in staged:
        sch.annotate(block, MANIFEST_LOCAL_STAGE, 1)
    sch.annotate(ko, "software_pipeline_stage", [0, 1, 0, 1, 1])
    sch.annotate(ko, "software_pipeline_order", [2, 0, 3, 1, 4])


DEEP_PIPELINE = False
"""Off: measured no better (device step 142, session 51, H100, ViT-B/16 batch 1 all-CUDA: TF32
1.467 -> 1.483 ms with it on; bf16 with the other switches on, 1.604 without it against 1.612
with).  The 2-stage loop's copies are not what these grids wait on.
Software-pipeline the K loop of a batch-1 plain matmul on a starved grid
(:func:`pipeline_stages`) in 3 stages instead of 2: ``cp.async`` copies of slice k+2
in flight while slice k is multiplied.  Such a grid (ViT/BERT's layers at 197 tokens:
84-336 blocks of 4 warps on 132 SMs, 1-3 blocks per SM) has nothing else to run while a
block waits, so a block's time is its K slices times what each exposes of a load
latency; with 2 stages a slice's copies have one slice's MMAs (16 ``mma.sync`` per
warp for the 32x64 tile) to hide behind, with 3 two.  False: 2 stages, as before
(issue 17, ``bench/results/gpu-vit-b1-static.md``; device step 135 A/Bs it)."""

DEEP_PIPELINE_STAGES = 3
DEEP_PIPELINE_MAX_BLOCKS_PER_SM = 4
"""Grids (blocks per SM) up to which :data:`DEEP_PIPELINE` applies: the starved grids of
batch 1 (ViT's layers: 0.6-2.5 blocks per SM), not the batch-32 ones whose occupancy
hides the latency (and whose 2-stage schedules were measured)."""


def pipeline_stages(images: int, grid: int, transposed: bool, sms: int) -> int:
    """The software pipeline's depth for a tensor-core kernel (where its K loop is
    pipelined): :data:`DEEP_PIPELINE_STAGES` for a plain matmul (not a convolution's
    ``transposed`` partials or output) whose output leads with at most
    :data:`MATMUL_SPLIT_MAX_BATCH` images, or any split matmul's token rows (the caller's
    ``images`` is then the tokens: counted as 1 by :class:`GpuTensorCoreSplitK`), on a grid
    of at most :data:`DEEP_PIPELINE_MAX_BLOCKS_PER_SM` blocks per SM; else 2."""
    if (DEEP_PIPELINE and not transposed and images <= MATMUL_SPLIT_MAX_BATCH
            and grid <= DEEP_PIPELINE_MAX_BLOCKS_PER_SM * sms):
        return DEEP_PIPELINE_STAGES
    return 2


WIDEN_IN_FRAGMENTS = True
"""On since device step 142 (session 51, H100, batch 1 bf16, all-CUDA, GPU-resident inputs,
least of 5 round medians): ViT-B/16 1.785 -> 1.611 ms, the Whisper encoder 2.006 -> 1.908,
DistilBERT 0.743 -> 0.671; outputs identical to the widened-in-staging build.  Stage a bf16/fp16-stored weight (:func:`_pack_in_storage_dtype`'s packed copy) in shared
memory in its own dtype -- a plain copy, so ``cp.async`` (8 bytes per 4 elements) in the
pipeline like a float32 operand's -- and widen it as each warp loads its fragments
(``tf32.NAMES["load_b_<dtype>"]``, exact).  Before (False), the staging copy widened
it: a global load, a convert and a shared store per element, which cannot be an async
copy; in the pipelined K loop each thread then waited out the load of slice k+1 before
the MMAs of slice k -- one exposed load latency per K slice, the bf16 build's whole
difference from the TF32 one (issue 17: ViT-B/16 at batch 1 1.85 ms in bf16 against
1.50 in TF32 on the H200; 72 weight K slices per layer; ``bench/results/gpu-vit-b1-static.md``).
Where it does not apply (a widened operand A; a weight not packed at compile time,
``PACK_LOW_PRECISION`` off) the staging copy widens, as before."""


LOW_PRECISION_MMA = False
"""Off: measured no faster than :data:`WIDEN_IN_FRAGMENTS` alone (device step 142, session 51,
H100, ViT-B/16 batch 1 bf16: 1.600 ms without it, 1.612 with, the switches' before 1.785; its
output 4.6e-3 off the TF32-multiplied build's).  At batch 1 these GEMMs wait on memory, not on
the tensor cores' rate; batch 32 (device step 141) is where its rate would show.
Where a contraction's weight is stored in bf16/fp16 (:func:`_narrow_weight`: the packed
copy of :func:`_pack_in_storage_dtype`, widened by one block), multiply in that dtype:
the weight staged in its own dtype (by ``cp.async``, as :data:`WIDEN_IN_FRAGMENTS` does,
which this implies for such a weight) and copied into its fragments unchanged, the
activation tile staged in float32 and rounded to the dtype as each warp loads its
fragments (``tf32.NAMES["mma_load_a_<dtype>"]``), each 16x16x16 step two ``mma.sync``
m16n8k16 bf16/fp16 with float32 accumulators (:data:`tf32.MMA_K`); accumulators,
split-K partials and the epilogue unchanged, in float32.  What ``torch.autocast`` does
(bf16 activations into bf16 GEMMs): twice the TF32 tensor-core rate and a third fewer
instructions per K slice (a slice of 32 is 2 steps, not 4).  The numerics: each operand
rounded once to the dtype (bf16: 8 significant bits, relative error <= 2^-9 each; fp16:
11, <= 2^-12), products exact in float32, sums in float32 -- a bf16 GEMM's output off
the float32 one by ~2^-9 sqrt(2) / sqrt(K)-averaged, a few 1e-3 of the output's
magnitude, against issue 17's 2e-2 (TF32 rounded only the activation, to 11 bits).  A
contraction without such a weight (attention's ``Q K^T``, ``P V``) stays TF32 (its two bf16
activations: :data:`LOW_PRECISION_ATTENTION_MMA`).  False:
TF32 with float32 activations, as before (the before of device step 136's A/B)."""


LOW_PRECISION_MMA_CONVOLUTIONS = True
"""With :data:`LOW_PRECISION_MMA` on, convolutions too (their implicit GEMMs, 1x1 included:
ResNet-50 at batch 1 in bf16, 23 kernels); False: matmuls only (the transformers device step
136 measures), convolutions TF32 as before -- the fallback if a CNN's kernels come out slower."""


LOW_PRECISION_MMA_CONVOLUTIONS_ONLY = False
"""Off: measured no gain (built in session 57, issue 17).
Device step 167 (session 58, H100; bench/results/gpu-steps-165-169-nvidia-h100.md): whisper_encoder
b1 bf16 with all three conv-front switches on 1.136 -> 1.118 ms, rounds overlapping (1.136-1.148 /
1.118-1.157); with this one removed from the three, within 1 %: no gain outside the spread, so off.
Multiply the convolutions with a bf16/fp16 weight in that dtype (:data:`LOW_PRECISION_MMA`'s
fragment path) with :data:`LOW_PRECISION_MMA` itself off, the matmuls staying TF32 -- so that an
A/B isolates the convolutions.  The Whisper encoder's front end (Conv1d 80 -> 384 and 384 -> 384
k3, 45.9 + 68.6 us at device step 159) is issue-bound, not bandwidth-bound: per K slice of 32 each
warp of its TF32 kernel converts its 64 A-fragment floats one ``cvt.rna.tf32`` each, widens 64
bf16 B values, and issues 16 m16n8k8 ``mma.sync``; in bf16 the A values are rounded two to a
``cvt.rn.bf16x2``, B is copied unchanged, and 8 m16n8k16 ``mma.sync`` do the slice.  Numerics:
:data:`LOW_PRECISION_MMA`'s (the activation rounded to bf16, ~2^-9 relative, within issue 17's
2e-2).  False: those convolutions multiply in TF32, as before."""


LOW_PRECISION_ATTENTION_MMA = False
"""Off until a device step measures it (built in session 56 without a GPU).  Where both operands
of a contraction are activations stored in bf16/fp16 between kernels (attention's ``Q K^T`` and
``P V`` with :data:`hetpart.importer.low_precision_attention.STORE_ATTENTION_OPERANDS_BF16`, and
:data:`~hetpart.importer.low_precision_scores.STORE_SCORES_BF16` for ``P``), multiply in that
dtype: :data:`LOW_PRECISION_MMA`'s fragment path (both operands staged in their dtype by the
staging copy, copied into the fragments unchanged, m16n8k16 ``mma.sync`` with float32
accumulators), as ``torch.autocast`` multiplies attention.  Exact on the stored values: the
operands were rounded once, by their producers; products exact in float32, sums float32.
False: such a contraction widens its operands in the fragment loads and multiplies in TF32 --
exact too on bf16 values, at half the tensor-core rate."""


def _mma_dtype(sch: s_tir.Schedule, main, narrow, narrow_a, activations: tuple) -> str | None:
    """The dtype ``main``'s tensor-core steps multiply in (None: TF32).  In: ``narrow`` /
    ``narrow_a``, :func:`_narrow_weight`'s answer for operand 1 / 0 (None: float32);
    ``activations``, the operands stored narrow between kernels (:func:`_narrow_activation`).
    Out: with operand 1 an activation (attention's ``Q K^T``, ``P V``), both operands' dtype
    where operand 0 is one of the same dtype and :data:`LOW_PRECISION_ATTENTION_MMA` is on;
    with operand 1 a narrow weight, its dtype where :data:`LOW_PRECISION_MMA` is on
    (convolutions: :data:`LOW_PRECISION_MMA_CONVOLUTIONS`), or with operand 1 a narrow weight of
    a convolution, its dtype where :data:`LOW_PRECISION_MMA_CONVOLUTIONS_ONLY` is on.  Invariant:
    with the three switches off, None."""
    if narrow is None:
        return None
    if 1 in activations:
        both = 0 in activations and narrow_a is not None and narrow_a[1] == narrow[1]
        return narrow[1] if LOW_PRECISION_ATTENTION_MMA and both else None
    if LOW_PRECISION_MMA and (LOW_PRECISION_MMA_CONVOLUTIONS or not _is_convolution(sch, main)):
        return narrow[1]
    if LOW_PRECISION_MMA_CONVOLUTIONS_ONLY and _is_convolution(sch, main):
        return narrow[1]
    return None


def _narrow_weight(sch: s_tir.Schedule, step, operand: int):
    """``(widen block, dtype)`` when ``step``'s ``operand`` is produced by one block that
    only widens one bf16/fp16 buffer element by element (the packed weight of
    :func:`_pack_in_storage_dtype`, same shape), for ``step`` alone; else None."""
    buf = sch.get(step).reads[operand].source
    prods = [p for p in sch.get_producers(step) if any(w.source.same_as(buf) for w in sch.get(p).writes)]
    if len(prods) != 1:
        return None
    (widen,) = prods
    blk = sch.get(widen)
    reads = blk.reads
    if len(reads) != 1 or str(reads[0].source.dtype) not in tf32.NARROW or not _is_widening(sch, widen):
        return None
    if [int(x) for x in reads[0].source.shape] != [int(x) for x in buf.shape]:
        return None
    return widen, str(reads[0].source.dtype)


def _pipelined(sch: s_tir.Schedule, staged: list, blocks: int, sms: int) -> bool:
    """Whether to software-pipeline the K loop of a grid of ``blocks`` on ``sms`` SMs
    (see :data:`PIPELINE_MAX_BLOCKS_PER_SM_PREDICATED`)."""
    predicated = any(contains(sch.get(b).body, tvm.ir.Call, lambda c: getattr(c.op, "name", "") == IF_THEN_ELSE)
                     for b in staged)
    return not predicated or blocks <= PIPELINE_MAX_BLOCKS_PER_SM_PREDICATED * sms


def _tensorize_tiles(sch: s_tir.Schedule, block, rows: int, cols: int, intrin: str) -> None:
    """Cut the last two loops of ``block`` into ``rows`` x ``cols`` tiles (the outer
    tile loops unrolled) and tensorize each tile with ``intrin``."""
    i, j = sch.get_loops(block)[-2:]
    i0, i1 = sch.split(i, [None, rows])
    j0, j1 = sch.split(j, [None, cols])
    sch.reorder(i0, j0, i1, j1)
    _unroll_in_nvcc(sch, i0)
    _unroll_in_nvcc(sch, j0)
    sch.tensorize(i1, intrin)


def _unroll_in_nvcc(sch: s_tir.Schedule, loop) -> None:
    """Have nvcc unroll ``loop`` (``#pragma unroll``), not TVM.  A loop over fragments
    must reach TVM's warp-memory lowering as a loop: with constant fragment offsets
    the lowered register index keeps ``(4*lane + 131) / 128``, which TVM does not
    simplify and nvcc can only compile with the registers in local memory; and it
    must be unrolled by nvcc, so every register index is a constant."""
    sch.unroll(loop)
    sch.annotate(loop, "pragma_unroll_explicit", 0)


def _fuse_epilogue(sch: s_tir.Schedule, out_shared) -> bool:
    """Fuse the element-wise epilogue (bias, relu, residual add...) into the copy of
    the accumulators from shared memory to the output.

    The epilogue may read the GEMM result more than once (GELU: ``x * (1 + erf(x /
    sqrt 2)) / 2``), so it is not always a chain: every block after the GEMM but the
    last is inlined into its consumers first, then the last into the copy.  False
    when a block after the GEMM is not element-wise or will not inline."""
    after = _blocks_after(sch, out_shared)
    if not after:  # None (not element-wise) or nothing to write out through
        return False
    try:
        for blk in after[:-1]:
            sch.compute_inline(blk)
        sch.reverse_compute_inline(after[-1])
    except Exception:  # noqa: BLE001 - not inlinable into the write-out
        return False
    return True


def _writes_along_rows(sch: s_tir.Schedule, out_shared) -> bool:
    """True when the output is contiguous along the GEMM's rows, not its columns (an
    NCHW convolution's output: consecutive pixels of one channel), so the write-out
    should walk the rows."""
    blk = sch.get(out_shared)
    r, c = blk.iter_vars[-2:]
    try:
        along_r, along_c = access.write_strides_along(blk, r.var), access.write_strides_along(blk, c.var)
    except access.Unknown:
        return False
    return len(along_r) == 1 and len(along_c) == 1 and along_r[0] == 1 and abs(along_c[0]) > 1


def _write_out(sch: s_tir.Schedule, out_shared, rows: bool) -> None:
    """Run the write-out (the epilogue fused into it) with a warp's 32 threads, VEC
    floats each per step along the output's contiguous dimension: the columns, or
    with ``rows`` the rows -- there one float each where an aligned run of VEC rows
    is not contiguous in the output (an image of 7x7 pixels)."""
    *_, r, c = sch.get_loops(out_shared)
    vec = VEC
    if rows:
        blk = sch.get(out_shared)
        if not access.writes_in_runs(blk, blk.iter_vars[-2].var, VEC):
            vec = 1
        sch.reorder(c, r)
        r, c = c, r
    _, tx, inner = sch.split(sch.fuse(r, c), [None, WARP, vec])
    sch.bind(tx, "threadIdx.x")
    if vec > 1:
        sch.vectorize(inner)


def _blocks_after(sch: s_tir.Schedule, block) -> list | None:
    """Every block that (transitively) consumes ``block``, in topological order, or
    None when one of them is not element-wise (spatial iterators only)."""
    order, seen, todo = [], set(), [block]
    while todo:
        for consumer in sch.get_consumers(todo.pop()):
            name = sch.get(consumer).name_hint
            if name in seen:
                continue
            if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(consumer).iter_vars):
                return None
            seen.add(name)
            order.append(consumer)
            todo.append(consumer)
    root = sch.get_child_blocks(sch.get_sblock("root"))
    position = {sch.get(b).name_hint: i for i, b in enumerate(root)}
    return sorted(order, key=lambda b: position.get(sch.get(b).name_hint, -1))
