"""Register tiling of a multiply-accumulate block on a CPU: the engine of the matmul
and conv2d rules.

The kernel is *output stationary*: a tile of ``rows x (vecs*lanes)`` outputs lives in
SIMD registers while the whole reduction runs; each reduction step loads ``vecs``
vectors of the *vector operand* (contiguous along the vectorised iterator) and
broadcasts ``rows`` scalars of the *broadcast operand*, issuing ``rows*vecs`` fused
multiply-adds.  For ``C[i,j] += A[i,k]*B[k,j]``: vectorise ``j`` (B is the vector
operand), block ``i`` across rows (A is broadcast).  For an NCHW convolution:
vectorise ``oc`` (the weight, packed so that ``oc`` is innermost) and block ``ow``.

Loop nest produced (outer to inner)::

    parallel  fused([image group,] panel spatial, vec-outer, other spatial, row-outer)  # one tile each
      init    acc[rows, vecs*lanes] = 0                       # registers
      serial  reduction loops (block order)
        unroll rows; unroll vecs; vectorise lanes: acc += bcast(X) * vload(W)
      write-back tile acc -> C, with the fused epilogue (bias, relu, gelu, add...)

The image group (a batch's images past :data:`BATCH_GROUP_BYTES`, :func:`batch_group`)
is there only at batch > 1.

A row extent that no row count from 4 to 8 divides (197 tokens, a 17-wide image)
gets a ragged last tile (:func:`_row_count`): the multiply-adds and the write-back
carry a bound check on the row, which only the last tile fails; where the row extent
holds two tiles over a one-loop reduction, the tile loop's body is split into the whole
tile without the check and the ragged one (:mod:`.ragged_rows`).

``acc`` is a tile-sized buffer local to the parallel iteration; after unrolling all of
its indices are constants, so LLVM keeps it in registers.  Invariant: the schedule only
reorders, splits, packs and caches -- every output element is computed by the same
sum in the same order as the unscheduled function, so results match to rounding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tvm import s_tir, tirx

from . import ragged_rows
from .analysis import (
    PARALLEL_MIN_ELEMENTS, CpuShape, MacBlock, broadcast_prefix, buffer_bytes, const_extent, fitting_lanes,
    fuse_epilogue, largest_divisor, loop_of, parallel_vectorize,
)
from .ragged_copy import split_ragged_copy_back

LAYOUT_REWRITE_PREPROC = "meta_schedule.layout_rewrite_preproc"

SPLIT_RAGGED_COPY_BACK = True
"""Whether a padded MAC's copy-back (computed in the tile) is split into a vectorised
branch for the panels wholly inside the output and the bound-checked branch for the
ragged last one (:func:`~.ragged_copy.split_ragged_copy_back`).  Before, TVM's
VectorizeLoop scalarised every panel's copy-back for its per-lane check.  Measured
(2-core EPYC znver3, AVX2, 2 threads, both builds in one process in turns): ViT's
attention scores ``[12,197,64] @ [12,64,197]`` x 1/8, padded to 208, 0.96 -> 0.70 ms."""

PARALLEL_MIN_MACS = 1 << 16
"""Multiply-accumulates below which a tiled kernel stays on one thread: 64 Ki FMAs
take a few microseconds vectorised, no more than waking and joining the thread pool
(measured: a 16x14x14 depthwise conv, 28 Ki MACs, ran 9x slower in parallel on the
2-core dev box than serially)."""


def gate_parallel_min(cores: int) -> int:
    """Elements from which a *broadcast* block left at the root beside the tile
    (:func:`~.analysis.broadcast_prefix`: squeeze-excite's gate ``gate[c] * x[c, h, w]``
    over the whole feature map, after the tiny fc2 GEMV that computes the gate) runs in
    parallel on a target of ``cores`` cores: the injective schedule's
    :data:`~.analysis.PARALLEL_MIN_ELEMENTS` (256 Ki) at 2 cores, 32 Ki at 16.

    A serial pass costs the other ``cores - 1`` threads its whole time, so the size that
    pays for a pool wake-up falls with the cores.  At 2 threads parallel gates of 56-188
    Ki measured equal or slower (72x28x28, 120x28x28, EfficientNet's 240x28x28: 0.015
    -> 0.019 ms), hence no change there; at 16 a 672x14x14 gate (131 Ki) on one thread
    is 1/16 of the speed the rest of the model runs at (static analysis,
    ``tools/cpu_parallelism.py``; issue 18, bench/results/cpu-convnets-2core.md)."""
    return max(1 << 15, PARALLEL_MIN_ELEMENTS * 2 // max(1, cores))


@dataclass(frozen=True)
class TilePlan:
    """How to tile one :class:`MacBlock`.

    ``vec`` is the spatial iterator vectorised; ``vec_operand`` (0/1) the operand that
    depends on it; ``pack_dim`` the operand dim to move innermost (None: it already is,
    or the index is not a plain iterator and the load is used as is); ``row`` the
    spatial iterator blocked across registers (None: no reuse of the vector loads is
    possible, e.g. depthwise convolution).  ``prepack``: the packed operand is a
    weight of the model (a layout-free parameter), so its packing is split off and
    done once at compile time (:mod:`hetpart.kernels.weight_prepack`) instead of on
    every call.  ``chunk``: vector tiles (``vec`` outer) per chunk, the row tiles looped
    within each chunk, not outside every vector tile (1: no chunks; a plane tile whose
    write-back reads a residual, :data:`~.rules.cpu_matmul.RESIDUAL_CHUNK_TILES`).
    ``split_ragged``: a ragged last row tile is split off as its own branch
    (:func:`~.ragged_rows.split_ragged_rows`) whatever the tile count, not only where
    :func:`~.ragged_rows.applies`.
    """

    vec: tirx.Var
    vec_operand: int
    pack_dim: int | None
    row: tirx.Var | None
    lanes: int
    vecs: int
    rows: int
    prepack: bool = False
    chunk: int = 1
    activations: bool = False  # no model weight in the function (attention's products): panel_chunk
    split_ragged: bool = False  # the ragged last row tile a branch of its own, however many tiles

    def describe(self) -> str:
        row = f"{self.row.name}x{self.rows}" if self.row is not None else "-"
        pack = f", pack dim {self.pack_dim}" if self.pack_dim is not None else ""
        return f"vec {self.vec.name}x{self.vecs}x{self.lanes}, rows {row}{pack}"


@dataclass(frozen=True)
class VecCandidate:
    """A spatial iterator that one operand alone depends on: vectorisable."""

    var: tirx.Var
    operand: int
    dim: int
    plain: bool  # the operand's index there is exactly ``var``
    last: bool  # ... and it is the operand's innermost dim
    lanes: int  # vector width that divides its extent (:func:`~.analysis.fitting_lanes`)


def vec_candidates(mac: MacBlock, lanes: int) -> list[VecCandidate]:
    """Spatial iterators usable as the vector dim: exactly one operand depends on them,
    through one dim only, and ``lanes`` or a narrower power of two divides their extent
    (each candidate carries the widest that does)."""
    out = []
    for var in mac.spatial:
        width = fitting_lanes(mac.extents[var], lanes)
        if width is None:
            continue
        users = [o for o in (0, 1) if mac.uses(o, var)]
        if len(users) != 1:
            continue
        o = users[0]
        dims = mac.uses(o, var)
        if len(dims) != 1:
            continue
        plain = mac.plain_dim(o, var) is not None
        out.append(VecCandidate(var, o, dims[0], plain, dims[0] == len(mac.operands[o][1]) - 1, width))
    return out


GEMV_MAX_VECTORS = 8
"""The most vectors a GEMV tile accumulates (the register budget allows ~28): eight
chains already hide the FMA latency, and wider tiles ran far slower -- 25 vectors
for ``1x1280 @ 1280x1000`` took 441 us on one thread, 8 (then 5) take 78 us (ONNX
Runtime's Gemm: 69-73 us); ``1x2048 @ 2048x1000`` 853 -> 135 us (2-core EPYC,
``python -m hetpart.bench.kernel_table``, 2026-12-03).  Narrower tiles also give
more of them to the threads (5 tiles of 200 before, 25 of 40 now)."""


def make_plan(
    mac: MacBlock, cand: VecCandidate, shape: CpuShape, lanes: int, *, pack: bool, prepack: bool = False,
    exact_wide: bool = True,
) -> TilePlan:
    """Sizes of the register tile for vectorising ``cand``: two vectors wide where the
    extent allows, and as many rows as the register file holds (keeping ~4 registers
    for the loads and the broadcast), using a row count that divides the extent so no
    tail loop is needed.

    Without a row iterator (a GEMV, ``1 x K @ K x N``) the tile instead grows along
    the vector iterator, up to :data:`GEMV_MAX_VECTORS`: independent accumulators hide
    the FMA latency that one two-vector chain would serialise on (on a 96x56x56
    depthwise conv this measured 14x over the one-vector tile).

    ``exact_wide`` False: a row count that leaves a ragged last tile is kept, not widened
    to a divisor past the register budget (:func:`_exact_wide_rows`; a channels-inner
    image's fused 7x7 plane, :func:`~.rules.cpu_matmul._channels_inner_rows`)."""
    budget = max(1, shape.registers - 4)
    vecs = 2 if mac.extents[cand.var] % (2 * lanes) == 0 else 1
    other = 1 - cand.operand
    rows_var = None
    for var in mac.spatial:  # the innermost one the broadcast operand alone uses
        if var.same_as(cand.var) or mac.extents[var] == 1:
            continue
        if mac.uses(other, var) and not mac.uses(cand.operand, var):
            rows_var = var
    max_rows = min(8, max(1, budget // vecs))
    rows = _row_count(mac.extents[rows_var], max_rows, vecs) if rows_var is not None else 1
    if rows_var is not None and mac.extents[rows_var] % rows and exact_wide and not _row_major_output(mac, cand):
        rows = _exact_wide_rows(mac, shape, vecs, mac.extents[rows_var], rows)
    if rows_var is not None:
        rows = _rows_for_32_registers(mac, shape, cand, rows_var, lanes, vecs, rows)
    if rows == 1:
        rows_var = None
        vecs = largest_divisor(mac.extents[cand.var] // lanes, min(budget, GEMV_MAX_VECTORS))
    elif vecs == 2 and _split_panels(mac, shape, cand, rows_var, lanes, rows):
        vecs = 1
    pack_dim = cand.dim if (pack or prepack) else None
    return TilePlan(cand.var, cand.operand, pack_dim, rows_var, lanes, vecs, rows, prepack=prepack)


WIDE_ROWS_MIN_REDUCTION = 512
"""Reduction length from which :func:`_exact_wide_rows` applies: over a shorter sum the
wider tile's write-back (14 vectors, transposed into 7 image columns) and its spilled
accumulator weigh more than the weight panel it streams less often.  Measured as
below: mobilenet_v2's 96->576 + ReLU6 on 14x14 0.25 -> 0.51 ms, 160->960 on 7x7 0.27
-> 0.33, 320->1280 0.65 -> 0.84; 256->1024 on 14x14 a tie (0.77 / 0.78); from 512 up
faster (below)."""

WIDE_TILE_SPARE_REGISTERS = 2
"""Registers a tile of a one-loop reduction keeps free beyond its accumulators
(:func:`_exact_wide_rows`): the broadcast and one weight vector (LLVM folds the other
weight load into the FMA)."""


WIDE_ROWS_ROW_MAJOR = False
"""Whether :func:`_exact_wide_rows` also widens a tile whose vectors run along the output's
innermost dim (a matmul ``[.., M, K] @ [K, N]`` written row by row; True: as before, kept for A/B
runs).  Its 7 rows x 2 vectors on a 16-register target spilled there: CLIP text's MLP at seq 77
(``M`` = 77, no divisor from 2 to 6) took 7 rows, and each FMA step moved accumulators through the
stack.  Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, both builds and ONNX Runtime in one
process, least of 10 calls x 3 rounds, ms, ORT in brackets; bench/results/cpu-b32-text-2core.md):
77x512 @ 512x2048 + bias + quick_gelu 3.65 -> 1.78 (1.97), with gelu_new (tanh) 3.66 -> 2.01
(2.15), bias alone 2.32 -> 1.75 (1.78).  The 1x1 convolutions it was measured on write
their tile transposed (vectors along the channels, rows along the plane): unchanged, and they
keep it (resnet50's 2048->512 on 7x7 1.49 ms with it, 2.38 without)."""


def _row_major_output(mac: MacBlock, cand: VecCandidate) -> bool:
    """Whether ``cand``'s vectors run along the output's innermost index (a row-major matmul
    output), where :data:`WIDE_ROWS_ROW_MAJOR` off keeps the default row count."""
    inner = mac.out_indices[-1] if mac.out_indices else None
    return (not WIDE_ROWS_ROW_MAJOR and isinstance(inner, tirx.Var) and inner.same_as(cand.var))


def _depth(mac: MacBlock) -> int:
    n = 1
    for v in mac.reduce:
        n *= mac.extents[v]
    return n


def _exact_wide_rows(mac: MacBlock, shape: CpuShape, vecs: int, extent: int, rows: int) -> int:
    """Rows of a tile whose default count (``rows``) leaves a ragged last tile: a divisor
    of ``extent`` above it where the accumulators fit ``shape.registers`` less
    :data:`WIDE_TILE_SPARE_REGISTERS` -- only for a reduction of one loop (a matmul, a
    1x1 convolution: no window indices held in registers), else ``rows``.  With 16
    registers (AVX2) the default budget (registers - 4) allows 6 rows of 2 vectors,
    so a 7- or 14-wide image got 4 or 5 ragged rows: 2 or 3 tiles per output row,
    each streaming the whole weight panel; 7 rows of 2 vectors (14 accumulators) take
    one or two.  With 32 registers (AVX-512) the default already allows 8: unchanged
    (:func:`_rows_for_32_registers` widens those tiles instead).

    Measured (2-core EPYC znver3, AVX2, 2 threads, both builds in one process in
    settled turns, least of 60 calls x 3 rounds, ms; bench/results/cpu-r50-2core.md):
    resnet50's 2048->512 1x1 on 7x7 1.66 -> 0.99 (ONNX Runtime 0.74), 512->2048 on 7x7
    1.09 -> 0.75 (0.69), 1024->256 on 14x14 0.89 -> 0.81 (0.78), its stride-2 1x1s
    1024->2048 and 512->1024 2.08 -> 1.83 and 2.08 -> 1.74; mobilenet_v2's 960->320
    on 7x7 0.59 -> 0.42.  Only from :data:`WIDE_ROWS_MIN_REDUCTION` steps.
    Not for windowed convolutions: 14 accumulators beside a 3x3 window's indices spilled
    (resnet50's 3x3 convs 1.4-2.0 -> 2.4-5.8 ms)."""
    if sum(1 for v in mac.reduce if mac.extents[v] > 1) > 1 or _depth(mac) < WIDE_ROWS_MIN_REDUCTION:
        return rows
    wide = largest_divisor(extent, min(8, max(1, (shape.registers - WIDE_TILE_SPARE_REGISTERS) // vecs)))
    return wide if wide > rows else rows


ROWS_32_REGISTERS = True
"""Whether a target with 32 vector registers (AVX-512) may tile more rows than 8
(:func:`_rows_for_32_registers`); False: the rows of a 16-register target (kept for A/B
runs, ``tools/cpu_rule_ab.py --before hetpart.kernels.register_tile.ROWS_32_REGISTERS=0``)."""

MAX_ROWS_32_REGISTERS = 14
"""The most rows of a tile on a 32-register target: 14 rows of 2 vectors hold 28
accumulators, beside the 2 weight vectors and the broadcast (31 of 32; statically checked:
resnet50's tiles built for ``sapphirerapids`` keep every accumulator in a register)."""

ROWS_32_MIN_REDUCTION = 256
"""Reduction steps from which :func:`_rows_for_32_registers` widens a tile: a longer sum
amortises the wider tile's transposed write-back (28 vectors to 14 image columns)."""


def tile_count(mac: MacBlock, vec, vec_width: int, row, rows: int) -> int:
    """Iterations of the tile loop :func:`register_tile` runs in parallel: every spatial
    extent, the vector one in tiles of ``vec_width``, the row one in tiles of ``rows``."""
    n = 1
    for v in mac.spatial:
        e = mac.extents[v]
        n *= -(-e // vec_width) if v.same_as(vec) else -(-e // rows) if row is not None and v.same_as(row) else e
    return n


def thread_efficiency(tiles: int, cores: int) -> float:
    """Ideal over modelled time of ``tiles`` equal iterations split in contiguous ranges
    over ``cores`` threads (TVM's parallel loop: each thread ``ceil(tiles / cores)``)."""
    return tiles / (cores * -(-tiles // cores)) if tiles > 0 else 1.0


def _rows_for_32_registers(mac: MacBlock, shape: CpuShape, cand: VecCandidate, rows_var, lanes: int, vecs: int,
                           rows: int) -> int:
    """Rows of the tile on a target with 32 vector registers: the largest divisor of
    the row extent up to :data:`MAX_ROWS_32_REGISTERS` (and the register file less 3,
    over ``vecs``) where it exceeds ``rows`` -- 14 for 14-, 28- and 56-wide images, 7
    for 7-wide ones (unchanged) -- else ``rows``.  Only over a reduction of one loop (a
    1x1 convolution, a matmul: 28 accumulators beside a 3x3 window's indices spilled,
    46-73 vector moves to the stack in the FMA loop of each of resnet50's 3x3 convs
    built for ``sapphirerapids``) of :data:`ROWS_32_MIN_REDUCTION` steps or more, and
    only where the wider tile splits as evenly over ``shape.cores`` threads
    (:func:`thread_efficiency` of :func:`tile_count`; the core count is the target's
    ``num-cores``, a value of the target the kernel is built for) as ``rows`` does.

    Before, a 32-register target tiled at most 8 rows, as a 16-register one does: 14-16
    accumulators of 32, the tile reading 2 weight vectors for every 7-8 broadcasts --
    the same reuse per step as AVX2's 7 x 2 tile while each vector is twice as wide.
    ONNX Runtime's MLAS doubles its SGEMM tile on AVX-512 (12 rows x 2 zmm against 6 x
    2 ymm with FMA3).  Issue 18, bench/results/cpu-r50-threads-analysis.md."""
    if (not ROWS_32_REGISTERS or shape.registers < 32 or _depth(mac) < ROWS_32_MIN_REDUCTION
            or sum(1 for v in mac.reduce if mac.extents[v] > 1) > 1):
        return rows
    extent = mac.extents[rows_var]
    wide = largest_divisor(extent, min(MAX_ROWS_32_REGISTERS, (shape.registers - 3) // vecs))
    if wide <= rows:
        return rows
    width = vecs * lanes
    before = thread_efficiency(tile_count(mac, cand.var, width, rows_var, rows), shape.cores)
    after = thread_efficiency(tile_count(mac, cand.var, width, rows_var, wide), shape.cores)
    return wide if after >= before else rows


SMALL_SPLIT = True
"""Whether a tile loop that splits unevenly over the target's ``num-cores`` may take
one-vector channel panels instead of two (:func:`_split_panels`); False: the tile
before (kept for A/B runs, ``tools/cpu_rule_ab.py --before
hetpart.kernels.register_tile.SMALL_SPLIT=0``)."""

ONE_VECTOR_TILE_COST = 0.75
"""Time of a ``rows x 1`` vector tile relative to the ``rows x 2`` tile it halves
(:func:`_split_panels`): ideal 0.5, but per step it issues half the FMAs for the same
``rows`` broadcasts (7 x 1: 8 loads for 7 FMAs, against 9 for 14) and its panels
re-read the image twice as often.  Measured on the 2-core AVX2 box (one thread's CPU
time, both sides built for 16 cores with every split taken, least of 10 calls x 5
rounds; bench/results/cpu-small-split.md): densenet121's 128->32 3x3 on 7x7 0.63,
128->32 3x3 on 14x14 0.78, mobilenet_v2's 960->160 1x1 on 7x7 + add 0.76, 960->320
0.77.  Device step 74 measures it on the AVX-512 Xeon."""

SMALL_SPLIT_MARGIN = 0.9
"""The most modelled time (relative to the two-vector tile's) at which
:func:`_split_panels` takes the one-vector tile: the model ignores caches and the pool."""


def _split_panels(mac: MacBlock, shape: CpuShape, cand: VecCandidate, rows_var, lanes: int, rows: int) -> bool:
    """Whether a ``rows x 2``-vector tile should be ``rows x 1`` on a target of
    ``shape.cores`` cores: the tile loop's modelled time, ``ceil(E / cores)`` iterations
    a thread (TVM's contiguous split, :func:`thread_efficiency`) of one tile each, falls
    to :data:`SMALL_SPLIT_MARGIN` or less with twice the iterations at
    :data:`ONE_VECTOR_TILE_COST` each.  In: the block, the chosen tile (two vectors of
    ``lanes`` by ``rows`` of ``rows_var``); out: True to halve the vectors.  The core
    count is the target's ``num-cores``, never the environment's.

    Where the loop has few iterations (a 32-channel conv on a 7x7 image: 7 tiles of 7 x
    32 outputs; 16 threads, 9 of them idle and the busy ones 2.3x the ideal), the
    one-vector panel doubles them; where it has many (4+ per core), the ceil's loss is
    small and the two-vector tile's reuse wins.  Issue 18,
    bench/results/cpu-r50-threads-analysis.md (densenet121 0.92 modelled efficiency
    at 16 threads, mobilenet_v2 0.93)."""
    if not SMALL_SPLIT or shape.cores <= 1:
        return False
    width = 2 * lanes
    tiles = tile_count(mac, cand.var, width, rows_var, rows)
    split = tile_count(mac, cand.var, lanes, rows_var, rows)
    if split <= tiles:
        return False
    before = -(-tiles // shape.cores)
    after = -(-split // shape.cores) * ONE_VECTOR_TILE_COST
    return after <= SMALL_SPLIT_MARGIN * before


MIN_ACCUMULATORS = 8
"""Accumulator vectors a ragged tile keeps at least (rows x vecs): two FMA pipes of
four cycles' latency need eight independent chains.  Inception's 1x1 conv 64->80 on
73x73 (80 = 5 vectors, one per tile) measured 0.60 ms with 5 ragged rows against
0.40 ms for the same conv on 72x72 with 8 exact rows; in three runs of both builds in
turns (2-core EPYC shared with other jobs, 2 threads, least of 30) 8 ragged rows took
0.38 / 0.37 / 0.19 ms, 5 ragged rows 0.39 / 0.47 / 0.23 ms."""


RAGGED_OVER_HALF_DIVISOR = 32
"""Where the largest divisor of a row extent up to ``max_rows`` is exactly half of it (147 =
3 x 49 with AVX2's 6 rows: a 3-row tile, 6 accumulators), :func:`_row_count` takes ``max_rows``
rows with a ragged last tile instead when that pads at most 1/32 of the extent (147 -> 150);
0: off, kept for A/B runs.  Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, each kernel
alone before / after in one process, least of 10 calls x 5 rounds; bench/results/
cpu-inception-2core.md): inception_v3's stem convs on 147-wide rows, 32->32 3x3 8.09 -> 6.59 ms,
32->64 3x3 pad 1 11.33 -> 9.23.  Changes no kernel of resnet50, densenet121, mobilenet_v2,
googlenet (AVX2 or AVX-512) nor of inception_v3 with AVX-512 (8 rows: 147 takes 7)."""


def _row_count(extent: int, max_rows: int, vecs: int = 2) -> int:
    """Rows of the tile along an iterator of ``extent``: the largest divisor up to
    ``max_rows`` where it is at least half of ``max_rows``; else (a prime extent such as
    ViT's 197 tokens or inception's 17/71/73-wide images) the count from ``max_rows/2``
    (at least :data:`MIN_ACCUMULATORS` / ``vecs``) to ``max_rows`` that leaves the
    fewest rows in the ragged last tile's padding -- the last tile then computes under a predicate (:func:`register_tile`; the
    write-back's ``reverse_compute_at`` bounds it by the output too).

    Before, a prime extent gave one row: a GEMV tile that reloads the weight vectors
    for every output row.  Measured (2-core EPYC, 2 threads, ``bench/cpu_layers.py``):
    ViT's ``197x768 @ 768x768`` 3.6 -> 0.66 ms (ONNX Runtime 1.3), inception's 1x7
    conv 192->192 on 17x17 7.8 -> 0.62 ms (0.82), its 80->192 3x3 on 73x73 (71 wide)
    17.4 -> 4.0 ms (3.4)."""
    d = largest_divisor(extent, max_rows)
    if RAGGED_OVER_HALF_DIVISOR and 2 * d == max_rows < extent:
        waste = -(-extent // max_rows) * max_rows - extent
        if waste * RAGGED_OVER_HALF_DIVISOR <= extent:
            return max_rows
    if 2 * d >= max_rows or extent <= max_rows:
        return d
    least = min(max_rows, max((max_rows + 1) // 2, -(-MIN_ACCUMULATORS // vecs)))
    return min(range(max_rows, least - 1, -1), key=lambda r: (-(-extent // r) * r - extent, -r))


def mac_count(mac: MacBlock) -> int:
    """Multiply-accumulates the block performs (product of all its extents)."""
    n = 1
    for e in mac.extents.values():
        n *= e
    return n


def read_index(sch: s_tir.Schedule, block, buffer) -> int:
    """The position of ``buffer`` among ``block``'s reads (what ``cache_read`` takes);
    ValueError where the block does not read it."""
    for i, region in enumerate(sch.get(block).reads):
        if region.source.same_as(buffer):
            return i
    raise ValueError(f"block does not read {buffer.name}")


def _pack_operand(sch: s_tir.Schedule, mac: MacBlock, plan: TilePlan):
    """Copy the vector operand into panels ``[d // L, <other dims>, d % L]`` (L = tile
    width), so each reduction step of a tile reads one contiguous L-vector and
    consecutive steps read consecutive memory.  The copy runs once per call, before
    the main loop; its cost is one pass over the operand -- none at run time when the
    plan says ``prepack`` (a model weight, packed once at compile time).  Packed panels
    also keep a tile's reads off the cache-set conflicts that a row stride of a power
    of two times 1-4 KiB causes (768x3072 weights ran at half speed unpacked).
    Returns the packing block."""
    buf, idx = mac.operands[plan.vec_operand]
    d, width, nd = plan.pack_dim, plan.lanes * plan.vecs, len(idx)

    def panel(*ax):
        return [ax[d] // width] + [ax[i] for i in range(nd) if i != d] + [ax[d] % width]

    pk = sch.cache_read(mac.block, read_index(sch, mac.block, buf), "global")
    # A callable, not an IndexMap: the schedule then builds the map with the block's own
    # index dtype (an int64 map on an int32 buffer fails to invert in TVM 0.27).
    sch.transform_layout(pk, ("write", 0), panel)
    if plan.prepack:
        # TVM's marker for a weight-layout rewrite: SplitLayoutRewritePreproc moves
        # this block into its own function, which weight_prepack folds at compile time.
        sch.annotate(pk, LAYOUT_REWRITE_PREPROC, 1)
    loops = sch.get_loops(pk)
    elements = 1
    for lp in loops:
        elements *= const_extent(sch, lp) or 1
    if elements >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(sch.fuse(*loops[: max(1, len(loops) - 1)]) if len(loops) > 1 else loops[0])
    return pk


BATCH_OUTSIDE_PANELS = True
"""Whether :func:`batch_group` may put groups of images outside the vector operand's
panel loop (False: the order before, every panel's loop over the whole batch; kept for
A/B runs)."""

BATCH_GROUP_BYTES = 8 << 20
"""The most bytes of the broadcast operand (a conv's images, a matmul's activation rows)
a group of images holds where the whole batch's are more (:func:`batch_group`): about
what stays in a shared L3 between two passes of a weight panel over the group.  On the
2-core EPYC (32 MB L3, shared with other jobs; batch 8, 2 threads, wall time, noisy)
one image a group was faster for the layers whose batch held 13-26 MB and slower for
6.4 MB ones (resnet50's 1024->256 and 1024->512 on 14x14: 1.15-1.3x, their 1-9 MB
weights then streamed once per image); the bound keeps those in one pass."""


def _batch_vars(mac: MacBlock, plan: TilePlan) -> list:
    """The leading spatial iterators (block order) before the vector iterator that the
    vector operand does not use and that are not the row iterator: an NCHW conv's or a
    ``[b, m, k] @ [k, n]`` matmul's batch beside a weight panel."""
    out = []
    for v in mac.spatial:
        if v.same_as(plan.vec) or mac.uses(plan.vec_operand, v) or (plan.row is not None and v.same_as(plan.row)):
            break
        out.append(v)
    return out


def _bytes_per(buffer, extent: int) -> int:
    """Bytes of ``buffer`` per index of a dim of ``extent`` (its batch)."""
    return buffer_bytes(buffer) // max(1, extent)


IMAGE_ROWS_OUTSIDE_PANELS = True
"""Whether :func:`image_rows_outside_panels` may put a single image's rows outside the weight's
panel loop (False: every panel's loop over the whole image, as before; kept for A/B runs)."""

IMAGE_ROWS_MAX_WEIGHT_BYTES = 256 << 10
"""The largest weight for :func:`image_rows_outside_panels`: the panels, re-read once per image row,
should stay in a core's L2 (512 KiB on znver3, 2 MiB on Sapphire Rapids)."""

IMAGE_ROWS_MIN_WIDTH = 2
"""The least image row width, in panels' channels (``vecs * lanes``), for
:func:`image_rows_outside_panels`.  Rows outside, the weight is read once per image row (``h`` times
``oc * ic``); panels outside, the image once per panel (``oc / panel`` times ``ic * h * w``):
the weight's traffic is ``panel / w`` of the image's.  At 2 the weight, re-read from L2, moves
at most half the bytes the image did, from L3."""


IMAGE_ROWS_WIDTH_IN_PIXELS = True
"""Whether :func:`image_rows_outside_panels`' least row width is :data:`IMAGE_ROWS_MIN_PIXELS`
pixels (False: :data:`IMAGE_ROWS_MIN_WIDTH` panels, 32 pixels with AVX2's 8 lanes but 64 with
AVX-512's 16, which left resnet50's 56-wide 256->64 and 256->128 streaming their 3.2 MB image
from L3 once per panel)."""

IMAGE_ROWS_MIN_PIXELS = 32
"""The least image row width, in pixels, for :func:`image_rows_outside_panels` under
:data:`IMAGE_ROWS_WIDTH_IN_PIXELS` (AVX2's two 16-channel panels: its threshold unchanged)."""

IMAGE_ROWS_NARROW_MIN_BYTES = 7 << 18
"""The least image (bytes per image, 1.75 MiB) for :data:`IMAGE_ROWS_MIN_PIXELS`: a smaller one
stays in a core's L2 (2 MiB on the Xeons) between panels.  In the model (1 thread, AVX-512):
densenet121's 96->128 and 128->128 on 56x56 (1.2 / 1.6 MB) 1.51x / 1.08x slower with the rows
outside, inception_v3's 192->64 on 35x35 (0.94 MB) 1.10-1.15x, its 256->64 / 288->64 (1.25 / 1.4 MB)
0.93x; from 160 channels on 56x56 (2.0 MB) 0.67-0.87x, resnet50's 256->64 / 256->128 (3.2 MB)
0.75-0.82x."""


def image_rows_outside_panels(mac: MacBlock, plan: TilePlan) -> bool:
    """Whether a 1x1 convolution's weight tile (output-channel vectors of a packed weight x
    image columns; one reduction loop) loops the image's rows outside the weight's panels:
    every panel then reads an image row (``ic x w`` scalars) while it is in L1/L2, the image
    streamed from memory once, not once per panel.  Where :data:`IMAGE_ROWS_OUTSIDE_PANELS`, the
    broadcast operand is a 4-D image, the vector operand uses no spatial iterator but the
    vectorised one (a weight ``[oc, ic]``: not a batched product's per-head operand), the
    image is larger than the weight, the weight at most
    :data:`IMAGE_ROWS_MAX_WEIGHT_BYTES`, there are 2+ panels and no batch group
    (:func:`batch_group`) already orders images outside the panels.

    Before, the panel loop was outermost: inception_v3's 64->80 on 73x73 streamed its
    1.36 MB image 5 times, googlenet's 512->64 on 14x14 its 400 KB image 4 times, from L3
    inside the model (the concat before it, or the stem conv, left it there).  ONNX Runtime's
    NCHWc pointwise kernel reads each input block once for up to 4 output blocks."""
    if not IMAGE_ROWS_OUTSIDE_PANELS or not plan.prepack or plan.row is None:
        return False
    if sum(1 for v in mac.reduce if mac.extents[v] > 1) != 1:
        return False
    if len(mac.operands[1 - plan.vec_operand][0].shape) != 4 or any(
            mac.uses(plan.vec_operand, v) for v in mac.spatial if not v.same_as(plan.vec)):
        return False  # not an NCHW image beside a weight of output channels alone (attention's products)
    panel = plan.vecs * plan.lanes
    weight = _bytes_per(mac.operands[plan.vec_operand][0], 1)
    image = _bytes_per(mac.operands[1 - plan.vec_operand][0], 1)
    width = IMAGE_ROWS_MIN_WIDTH * panel
    if IMAGE_ROWS_WIDTH_IN_PIXELS and image >= IMAGE_ROWS_NARROW_MIN_BYTES:
        width = min(width, IMAGE_ROWS_MIN_PIXELS)
    if mac.extents[plan.vec] < 2 * panel or mac.extents[plan.row] < width:
        return False
    return weight <= IMAGE_ROWS_MAX_WEIGHT_BYTES and image > weight


def batch_group(mac: MacBlock, plan: TilePlan):
    """``(var, group)``: the batch iterator (the one leading spatial iterator of
    :func:`_batch_vars`) and how many of its images a pass of a weight panel covers, or
    None where every panel's loop keeps the whole batch (the order before: a batch of 1,
    a batch whose broadcast operand fits :data:`BATCH_GROUP_BYTES`, no batch iterator).

    Before, the panel loop was outermost: each panel of output channels streamed the
    whole batch's images (resnet50's 256x56x56 input at batch 8: 25.7 MB, past L3),
    once per panel (32 with 8 lanes).  :func:`register_tile` splits the batch into
    groups of ``group`` images (the largest divisor of the batch whose images' bytes fit
    :data:`BATCH_GROUP_BYTES`), the group loop outside the panel loop: every panel
    re-reads a group's images from cache; the weight is streamed once per group.
    Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, before/after in one process
    in settled turns, least of 3 calls x 4 rounds; outputs bit-identical;
    bench/results/cpu-r50-b32-2core.md), ms, ONNX Runtime in brackets: batch 8, the
    1x1 stride-2 256->512 on 56x56 87.5 -> 30.1 (25.1), 512->256 on 28x28 28.6 -> 25.1
    (20.7), 512->128 13.8 -> 12.3 (11.8); batch 32, 256->512 s2 419 -> 139 (109),
    512->256 124 -> 98 (84)."""
    if not BATCH_OUTSIDE_PANELS:
        return None
    batch = _batch_vars(mac, plan)
    if len(batch) != 1:
        return None
    var = batch[0]
    extent = mac.extents[var]
    buf = mac.operands[1 - plan.vec_operand][0]
    image = _bytes_per(buf, extent)
    if extent <= 1 or image * extent <= BATCH_GROUP_BYTES:
        return None
    return var, largest_divisor(extent, max(1, BATCH_GROUP_BYTES // max(1, image)))


ROWS_OUTSIDE_PANELS = True
"""Whether :func:`panel_chunk` may put the row blocks outside (chunks of) the panels."""

PANEL_CHUNK_OUT_BYTES = 4 << 20
"""The bytes of output, or of the row operand, per head (an index of the outer dims
both operands share) from which :func:`panel_chunk` applies: past the caches, so a
column strip of such an output or a pass of such a row operand per panel goes to memory."""

PANEL_CHUNK_MAX_BYTES = 512 << 10
"""The most bytes of the vector operand a chunk of panels holds (:func:`panel_chunk`):
what a core's L2 keeps while the row blocks pass over it (512 KiB on znver3, 1-2 MiB on
the Xeons)."""

PACK_CHUNKED = True
"""Whether a chunked vector operand is packed into contiguous panels (kept for A/B runs)."""


def panel_chunk(mac: MacBlock, plan: TilePlan, panel_vars: list) -> int | None:
    """How many panels of the vector operand a chunk holds where the row blocks go
    outside the chunk's panels, or None (the order before: every panel's loop over
    all the row blocks).  The largest divisor of the panel count whose panels fit
    :data:`PANEL_CHUNK_MAX_BYTES` (all of them for whisper's K^T, 64 x 1504 floats:
    each row block then writes whole rows).

    Applies to a product of activations (no model weight in the function: the
    attention's ``Q @ K^T`` and ``P @ V``) with a register tile of rows, one
    reduction, a head (an outer dim both operands index), whose output or row operand
    per head is at least :data:`PANEL_CHUNK_OUT_BYTES` (whisper's scores and ``P``:
    ``[1500, 1500]``, 9 MB).  Before, a panel's tiles ran down all 1500 rows: the
    scores' wrote a 16-column strip, 64 bytes a row, each row's segment straddling
    two cache lines that the next panel completed only after the strip had left the
    caches (and the panel's 64 rows were 6 KB apart); ``P @ V`` streamed the 9 MB of
    ``P`` once per panel (4).  Now the chunk is packed (:func:`_pack_operand`,
    contiguous panels) and each row block covers its rows whole.  Measured (2-core
    EPYC znver3, AVX2, one thread's CPU time, least of 2 calls x 8-16 rounds, in one
    process in turns): whisper-tiny's ``[6,1500,64] @ [6,64,1500]`` x 1/8 25.3 -> 21.8
    ms (ONNX Runtime 20.0; 47-panel chunks 24.3, unpacked 25.4), ``[6,1500,1500] @
    [6,1500,64]`` 20.8 -> 19.1 (ONNX Runtime 21.0)."""
    if not ROWS_OUTSIDE_PANELS or plan.row is None or not plan.activations or len(mac.reduce) != 1:
        return None
    if not any(mac.extents[v] > 1 and mac.uses(1 - plan.vec_operand, v) for v in panel_vars):
        return None  # no head both operands index (a projection's weight, a conv's)
    heads = 1
    for v in panel_vars:
        heads *= max(1, mac.extents[v])
    out = rows = 1
    for v in mac.spatial:
        out *= mac.extents[v]
    for v in mac.spatial + mac.reduce:
        rows *= mac.extents[v] if mac.uses(1 - plan.vec_operand, v) else 1
    if max(out, rows) * 4 // heads < PANEL_CHUNK_OUT_BYTES:
        return None
    per_panel = plan.vecs * plan.lanes * 4
    for v in mac.reduce:
        per_panel *= mac.extents[v]
    panels = -(-mac.extents[plan.vec] // (plan.vecs * plan.lanes))
    fits = [d for d in range(2, panels + 1) if panels % d == 0 and d * per_panel <= PANEL_CHUNK_MAX_BYTES]
    return max(fits) if fits else None


def register_tile(sch: s_tir.Schedule, mac: MacBlock, plan: TilePlan, shape: CpuShape, *, epilogue: bool = True,
                  copies: tuple = (), keep: tuple = ()) -> None:
    """Apply ``plan`` to ``mac`` in ``sch`` (see the module docstring for the result).

    Epilogue blocks that consume the MAC output element-wise are fused into the tile's
    write-back (unless ``epilogue`` is False: a padded MAC whose copy-back covers less
    than the write-back, which TVM 0.27's ``reverse_compute_inline`` would widen to the
    padded domain, writing past the output); ``copies``, root blocks that copy an
    operand per call (a strided conv's subsampled image), get :func:`copy_rows`; ``keep``,
    root blocks the caller scheduled, stay as they are; any other block at the root (padding, an epilogue that could not be fused) gets the
    injective schedule.
    """
    main = mac.block
    rest = [v for v in mac.spatial if not v.same_as(plan.vec) and not (plan.row is not None and v.same_as(plan.row))]
    panel_vars = [v for v in rest if mac.uses(plan.vec_operand, v)]
    chunk = panel_chunk(mac, plan, panel_vars) if batch_group(mac, plan) is None and plan.chunk == 1 else None
    if chunk is not None:
        plan = dataclasses.replace(plan, chunk=chunk)  # the row tiles within chunks of panels
        if plan.pack_dim is None and PACK_CHUNKED:
            dim = mac.plain_dim(plan.vec_operand, plan.vec)
            if dim is not None:
                plan = dataclasses.replace(plan, pack_dim=dim)
    pack = _pack_operand(sch, mac, plan) if plan.pack_dim is not None else None

    # Accumulate into a buffer laid out (other..., row, vec): the vector dim innermost,
    # so every FMA of the tile reads and writes one whole register.
    wb = sch.cache_write(main, 0, "global")
    def dim_of(var):
        return next(d for d, e in enumerate(mac.out_indices) if isinstance(e, tirx.Var) and e.same_as(var))

    inner = ([plan.row] if plan.row is not None else []) + [plan.vec]
    inner_dims = [dim_of(v) for v in inner]
    perm = [d for d in range(len(mac.out_indices)) if d not in inner_dims] + inner_dims
    sch.transform_layout(main, ("write", 0), lambda *ax: [ax[p] for p in perm])
    if epilogue:
        fuse_epilogue(sch, wb)  # the element-wise epilogue chain, into the write-back

    by = loop_of(sch, main)
    v0, v1, v2 = sch.split(by(plan.vec), factors=[None, plan.vecs, plan.lanes])
    inner_row = []
    # Tile order: the vector operand's panel (v0) outside the loops it does not depend
    # on, so consecutive tiles of a thread reuse one panel from L2 (a 512x512x3x3
    # weight re-streamed from L3 for each output row ran 2x slower).
    rest = [v for v in mac.spatial if not v.same_as(plan.vec) and not (plan.row is not None and v.same_as(plan.row))]
    panel_vars = [v for v in rest if mac.uses(plan.vec_operand, v)]
    # Images in groups past BATCH_GROUP_BYTES: the group loop outside the panels.
    group = batch_group(mac, plan)
    groups, within = (sch.split(by(group[0]), factors=[None, group[1]]) if group is not None else (None, None))
    def after_panel(v):  # noqa: E306
        return within if group is not None and v.same_as(group[0]) else by(v)
    outer = (([groups] if group is not None else []) + [by(v) for v in panel_vars] + [v0]
             + [after_panel(v) for v in rest if not mac.uses(plan.vec_operand, v)])
    if group is None and image_rows_outside_panels(mac, plan):  # image rows outside the panels
        outer = [by(v) for v in rest if not mac.uses(plan.vec_operand, v)] + [by(v) for v in panel_vars] + [v0]
    if plan.row is not None:
        r0, r1 = sch.split(by(plan.row), factors=[None, plan.rows])
        outer.append(r0)
        inner_row = [r1]
        chunk = largest_divisor(const_extent(sch, v0) or 1, plan.chunk)
        if chunk > 1:  # the row tiles within a chunk of vector tiles (TilePlan.chunk)
            v0o, v0i = sch.split(v0, factors=[None, chunk])
            outer = [v0o if lp.same_as(v0) else lp for lp in outer] + [v0i]
    reds = [by(v) for v in mac.reduce]
    sch.reorder(*outer, *reds, *inner_row, v1, v2)
    tile = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(tile)
    sch.reverse_compute_at(wb, tile, preserve_unit_loops=True)

    # Annotate before splitting off the init: `vectorize` needs the block to still be
    # a complete reduction block; decompose_reduction copies the loop kinds.
    for loop in inner_row + [v1]:
        sch.unroll(loop)
    sch.vectorize(v2)
    init = sch.decompose_reduction(main, reds[0])
    _vectorize_innermost(sch, _write_back_loops(sch, wb, mac, plan, dim_of))
    copy_back = _copy_back_in_tile(sch, wb, tile) if not epilogue else None

    # Whatever else remains at the root (padding, unfused epilogue): injective schedule,
    # a broadcast epilogue (the SE gate) or a padded operand's copy in parallel from
    # gate_parallel_min(cores) elements.
    # The packed operand keeps its own (layout-following) loops.
    tile_blocks = {sch.get(b).name_hint for b in (main, wb, init) + tuple(b for b in (pack, copy_back) if b is not None)}
    copy_names = {sch.get(b).name_hint for b in copies}
    kept = {sch.get(b).name_hint for b in keep}
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(blk).name_hint in tile_blocks | kept:
            continue
        if sch.get(blk).name_hint in copy_names:
            copy_rows(sch, blk, plan.lanes, gate_parallel_min(shape.cores))
            continue
        if all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
            # A padded MAC's operand copy (ViT's K^T, 12x64x208: 160 Ki) is one pass like
            # the gate: serial, it holds 15 of 16 cores idle for its time (the same at 2
            # cores: 256 Ki).
            gate = not epilogue or broadcast_prefix(sch, blk) > 0
            parallel_vectorize(sch, blk, plan.lanes,
                               min_parallel=gate_parallel_min(shape.cores) if gate else PARALLEL_MIN_ELEMENTS)
    if plan.row is not None and (plan.split_ragged or ragged_rows.applies(
            plan.rows, mac.extents[plan.row], sum(1 for v in mac.reduce if mac.extents[v] > 1))):
        # The ragged last of two row tiles a branch of its own; the whole tile unchecked.
        ragged_rows.split_ragged_rows(sch, tile, (main, init, wb), plan.rows, mac.extents[plan.row])
    if copy_back is not None and SPLIT_RAGGED_COPY_BACK:
        # Last: it leaves the copy-back nest in two branches no primitive may move.
        split_ragged_copy_back(sch, copy_back)


COPY_ROWS = True
"""Whether a per-call operand copy (:func:`copy_rows`) runs in rows (False: the injective
schedule, :func:`~.analysis.parallel_vectorize`, vectors across rows; kept for A/B runs)."""


def copy_rows(sch: s_tir.Schedule, block, lanes: int, min_parallel: int) -> None:
    """The schedule of a per-call copy of an operand read with a stride (a strided 1x1
    conv's subsampled image, :func:`~.rules.cpu_conv2d.subsampled_1x1`; ``copies`` of
    :func:`register_tile`): its outer loops fused and parallel from ``min_parallel``
    elements (:func:`gate_parallel_min`: the copy is a serial fraction of the parallel
    tile after it), the innermost loop (a row) vectorised where a vector width divides
    it, else left to LLVM's loop vectoriser.

    The injective schedule fused the whole nest and vectorised it across rows: each lane's
    source (``x[.., 2*(p // 14), 2*(p % 14)]``) then an address of its own, a gather.
    Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, both builds in one process,
    least of 3 calls x 5 rounds, ms; bench/results/cpu-r50-ds-2core.md): resnet50's 256->512
    1x1 stride 2 on 56x56 at batch 8 24.8 -> 21.9, 512->1024 on 28x28 at batch 1 3.15 -> 2.98;
    the others ties."""
    if not COPY_ROWS:
        parallel_vectorize(sch, block, lanes, min_parallel=min_parallel)
        return
    loops = sch.get_loops(block)
    extents = [const_extent(sch, lp) for lp in loops]
    if len(loops) < 2 or None in extents:
        parallel_vectorize(sch, block, lanes, min_parallel=min_parallel)
        return
    outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    width = fitting_lanes(extents[-1], lanes)
    if width is not None:
        _, vec = sch.split(loops[-1], factors=[None, width])
        sch.vectorize(vec)
    total = 1
    for e in extents:
        total *= e
    if total >= min_parallel:
        sch.parallel(outer)


def _copy_back_in_tile(sch: s_tir.Schedule, wb, tile):
    """Compute the consumer of a padded MAC's write-back (its copy-back with the
    epilogue, over the unpadded domain) in the tile too, while the tile is in cache:
    ``reverse_compute_at`` bounds it by its own domain (a ``T.where`` on the ragged
    tile).  Returns that block, or None where it was left at the root (TVM refused)."""
    consumers = sch.get_consumers(wb)
    if len(consumers) != 1:
        return None
    try:
        sch.reverse_compute_at(consumers[0], tile, preserve_unit_loops=True)
    except Exception:  # noqa: BLE001 - stays a root block (injective schedule)
        return None
    return consumers[0]


def _write_back_loops(sch: s_tir.Schedule, wb, mac: MacBlock, plan: TilePlan, dim_of) -> list:
    """The write-back's loops under the tile, innermost last, as it should vectorise.

    In the output's order, its innermost dim innermost -- unless that dim is the row
    dim (an NCHW conv's ``ow``, tiled as rows of output-channel vectors): a vector of
    the write-back along the rows has one lane per row (8, or 7 for a 28-, 14- or
    7-wide image, which LLVM splits into pieces), each lane gathered across the
    tile's vectors, and a fused epilogue (SiLU's ``exp``) computed on those narrow
    vectors.  Then the tile's own vector dim (full SIMD width, read contiguously,
    stored with a stride) goes innermost.  Measured (2-core EPYC, 2 threads, least of
    300 calls, the output-order write-back then this): 112->672 1x1 conv + SiLU on
    14x14 0.21 -> 0.10 ms, 24->144 1x1 + SiLU on 56x56 0.31 -> 0.19-0.23, the
    EfficientNet stem (3->32 3x3 stride 2 + SiLU on 224) 0.29 -> 0.21-0.22; without an
    epilogue the same (64->64, 128->128, 256->256 3x3 convs on 56, 28, 14: 0.49-0.53)."""
    loops = sch.get_loops(wb)[1:]
    last = len(mac.out_indices) - 1
    if plan.row is None or len(loops) != len(mac.out_indices) or dim_of(plan.row) != last:
        return loops
    d = dim_of(plan.vec)
    rest = [lp for i, lp in enumerate(loops) if i != d]
    sch.reorder(*rest, loops[d])
    return rest + [loops[d]]


def _vectorize_innermost(sch: s_tir.Schedule, loops) -> None:
    """Unroll-free vectorisation of a tile's copy loop nest: the innermost non-unit loop
    is vectorised; unit loops are left to the simplifier."""
    loops = [lp for lp in loops if const_extent(sch, lp) != 1]
    if not loops:
        return
    if (const_extent(sch, loops[-1]) or 0) >= 2:
        sch.vectorize(loops[-1])
    for lp in loops[:-1]:
        if (const_extent(sch, lp) or 0) <= 16:
            sch.unroll(lp)
