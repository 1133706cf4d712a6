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
NCHW convolution, :func:`_activation_rows`).  A 1x1 conv whose image rows are not whole
vectors but whose plane is (56x56, 28x28) is first rewritten to iterate the fused plane
``h*w`` (:func:`_fuse_plane`), so those tiles use full-width vectors too.
On a batch of planes that are no whole vectors (14x14 = 196) the plane is fused
and padded to whole vectors as well (:func:`_ragged_plane`); on a batch of 7x7 planes the
batch's planes are fused into one (:func:`batch_plane_tile`).
Where no dim is a whole number of vectors (attention scores over ViT's 197 tokens),
the vector dim is padded to whole vectors first (:func:`_pad_ragged_vector`) and the
epilogue computed with the copy-back, in the tile, over the unpadded domain.
Element-wise producers (a fused transpose or cast) are inlined into the loads.  A
float32 ``exp``/``sigmoid``/``tanh`` epilogue (SiLU after a 1x1 conv) is computed by
:func:`hetpart.kernels.fast_exp.replace_exp`: LLVM makes each a scalar libm call.
"""

from __future__ import annotations

import dataclasses
import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import (
    LAYOUT_FREE_ATTR, const_extent, cpu_shape, fitting_lanes, fuse_epilogue, is_cpu, is_layout_free, loop_of,
    mac_of, try_inline_spatial,
)
from ..fast_exp import replace_exp
from ..register_tile import (
    LAYOUT_REWRITE_PREPROC, MAX_ROWS_32_REGISTERS, MIN_ACCUMULATORS, make_plan, read_index, register_tile,
    thread_efficiency, tile_count, vec_candidates,
)


class CpuMatmul(ScheduleRule):
    """Register-tiled, parallel, vectorised matmul (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        sch = s_tir.Schedule(replace_exp(func))  # exp/sigmoid epilogues as vector code
        try_inline_spatial(sch)
        mac = mac_of(sch)
        if mac is None:
            return None
        if not (mac.is_plain(0) and mac.is_plain(1)):
            return None  # a convolution window or a gather: not a matmul
        if GEMV_ROW_STREAM:
            done = gemv_row_stream(sch, mac, target)
            if done is not None:
                return done
        return schedule_contraction(func, sch, mac, target)


GEMV_ROW_STREAM = True
"""Whether a one-row product by a ``[K, N]`` weight too large for the L2 (a classifier's final
Gemm at batch 1: mobilenet_v2's 1280 x 1000, 5 MB) gets :func:`gemv_row_stream` -- the weight
read row after row, each row's part one contiguous stream -- rather than the register tile,
whose column tiles each walk all ``K`` rows at a stride of ``N`` floats (a few cache lines a row,
4 KB apart: no prefetcher follows them; 2.3x ONNX Runtime's time on mobilenet_v2's head).
False: the register tile (A/B)."""

GEMV_MIN_WEIGHT_BYTES = 1 << 20
"""The least weight size for :data:`GEMV_ROW_STREAM`: smaller weights stay in the caches
between runs, where the register tile's walk costs nothing."""


GEMV_PACKED_PARTS = False
"""Whether :func:`gemv_row_stream` reads a model weight (layout-free) packed into its column
parts, ``[part, k, column in part]``, so that each core's part is ONE contiguous stream of
``K x N / parts`` floats (packed once at compile time, :mod:`hetpart.kernels.weight_prepack`).
Unpacked, a part reads ``N / parts`` floats of each row, ``N`` floats apart: on 16 cores
512 B runs for llama_decode's N=2048 projections, 64 B for its k/v (N=256), short runs the
prefetchers follow badly (1 thread over the 16-part schedule, cold weights: 10.7 GB/s for
N=2048, 4.3 for N=256, 12.8 for the probe's N=8192; bench/results/cpu-decode-gemv-2core.md).
Only where the parts are equal (``N`` a multiple of ``parts x lanes``) and there are several.
Off: device step 127 (session 49, 16 threads, bench/results/cpu-decode-gemv-nvidia-h100.md)
made five of llama_decode's eight layer GEMVs slower (0.76-0.97x; unpacked they read 118-180 GB/s
there) and only the 2 MB k/v ones faster; the 4-layer step 0.98x."""

GEMV_ROWS = 8
"""Weight rows one pass of :func:`gemv_row_stream` takes together (each accumulator vector loaded
and stored once per ``GEMV_ROWS`` FMAs; as many contiguous streams)."""


def gemv_row_stream(sch: s_tir.Schedule, mac, target: Target) -> s_tir.Schedule | None:
    """In: ``sch`` whose contraction ``mac`` is ``out[.., j] += a[.., k] * w[k, j]`` with every
    other output dim of extent 1 and ``w`` at least :data:`GEMV_MIN_WEIGHT_BYTES`.  Out: a copy
    of ``sch`` scheduled as::

        parallel j_o                     # one part of the columns per core (whole vectors)
          init acc[part] = 0
          serial k / GEMV_ROWS           # the weight's rows, in order
            serial j_i / lanes, unrolled GEMV_ROWS rows, vectorised lanes:
              acc[j] += a[k] * w[k, j]   # GEMV_ROWS contiguous streams
          write-back acc -> out, with the fused epilogue

    or None (another shape, or a primitive refused).  Invariant: each output is the same sum
    in the same order over ``k``."""
    shape = cpu_shape(target)
    out_dims = [v for v in mac.spatial if mac.extents[v] > 1]
    if len(out_dims) != 1 or len(mac.reduce) != 1:
        return None
    j, k = out_dims[0], mac.reduce[0]
    weight = None
    for buf, idx in mac.operands:
        if (len(idx) == 2 and isinstance(idx[0], tirx.Var) and idx[0].same_as(k)
                and isinstance(idx[1], tirx.Var) and idx[1].same_as(j)):
            weight = buf
    n, depth = mac.extents[j], mac.extents[k]
    if weight is None or n * depth * 4 < GEMV_MIN_WEIGHT_BYTES:
        return None
    lanes = next((w for w in (shape.lanes(str(mac.out.dtype)), 8, 4) if n % w == 0), None)
    if lanes is None:
        return None
    vectors = n // lanes
    per = -(-vectors // max(1, min(shape.cores, vectors)))  # vectors of one part (the last may be short)
    parts = -(-vectors // per)
    width = per * lanes
    packed = (GEMV_PACKED_PARTS and parts > 1 and n == parts * width
              and is_layout_free(sch.mod["main"], weight))
    try:
        s = sch.copy()
        main = mac.block
        wb = s.cache_write(main, 0, "global")
        fuse_epilogue(s, wb)
        if packed:  # each part's columns of every row, one contiguous panel (GEMV_PACKED_PARTS)
            pk = s.cache_read(main, read_index(s, main, weight), "global")
            s.transform_layout(pk, ("write", 0), lambda kk, jj: [jj // width, kk, jj % width])
            s.annotate(pk, LAYOUT_REWRITE_PREPROC, 1)  # packed once, at compile time
        by = loop_of(s, main)
        unit = [by(iv.var) for iv in s.get(main).iter_vars if not iv.var.same_as(j) and not iv.var.same_as(k)]
        j_all, j_l = s.split(by(j), factors=[vectors, lanes])
        j_o, j_v = s.split(j_all, factors=[parts, per])  # a short last part checks whole vectors only
        rows = next(r for r in (GEMV_ROWS, 4, 2, 1) if depth % r == 0)
        k_o, k_i = s.split(by(k), factors=[None, rows])
        s.reorder(*unit, j_o, k_o, j_v, k_i, j_l)
        if parts > 1:
            s.parallel(j_o)
        s.unroll(k_i)
        s.vectorize(j_l)
        s.reverse_compute_at(wb, j_o, preserve_unit_loops=True)
        s.decompose_reduction(main, k_o)
        wl = s.get_loops(wb)[-1]
        _, wi = s.split(wl, factors=[None, lanes])
        s.vectorize(wi)
        return s
    except Exception:  # noqa: BLE001 - a primitive refused: the register tile
        return None


def schedule_contraction(func: tirx.PrimFunc, sch: s_tir.Schedule, mac, target: Target,
                         copies: tuple = ()) -> s_tir.Schedule | None:
    """Tile the plain contraction ``mac`` of ``sch`` (a schedule of ``func``, its spatial
    producers inlined; both operands indexed by bare iterators) as :class:`CpuMatmul` does
    (the module docstring); None where no tile applies.  Also the conv rule's path for a
    strided 1x1 conv once its image is read through a subsampled copy
    (:func:`~.cpu_conv2d.subsampled_1x1`)."""
    shape = cpu_shape(target)
    lanes = shape.lanes(str(mac.out.dtype))
    unfused = (sch, mac)
    residual = _reads_residual(sch, mac)
    # a batch of 7x7 images: one plane of all their pixels, unless the channels-inner copy takes the
    # conv (256+ input channels: 0.83-0.93x the batch plane's time at batch 8, resnet50 / mobilenet_v2 /
    # efficientnet's projections; the batch plane stays with the narrow sums it is faster on)
    if not copies and _batch_plane(mac, lanes) and not _channels_inner_rows(mac, lanes):
        batched = batch_plane_tile(func, sch, mac, target)
        if batched is not None:
            return batched
    plane, inner, ragged = _plane_reading(func, sch, mac, lanes, residual)
    plane_copy = None
    if plane is not None:
        sch, mac, plane_copy = plane
    cands = vec_candidates(mac, lanes)
    padded = False
    if ragged or not cands or _narrow(max(c.lanes for c in cands), lanes):
        wide = _pad_ragged_vector(sch, mac, lanes, lambda b: is_layout_free(func, b))
        if wide is None and ragged:  # not padded: the image's own rows, as before
            (sch, mac), plane_copy = unfused, None
            cands = vec_candidates(mac, lanes)
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
    plan = make_plan(mac, best, shape, best.lanes, pack=not best.last, prepack=prepack, exact_wide=not inner)
    if inner and (rows := _channels_inner_rows_32(mac, plan, shape)) != plan.rows:
        plan = dataclasses.replace(plan, rows=rows, split_ragged=True)  # 4 tiles: LLVM kept the row checks
    plane_tile = not prepack and is_layout_free(func, mac.operands[1 - best.operand][0])
    if plane_tile:
        plan = dataclasses.replace(plan, rows=_plane_rows(mac, plan, shape))
    if (residual and _chunks_plane(mac, plan)) or (plane_tile and _chunks_plane_b1(mac, plan, shape)):
        plan = dataclasses.replace(plan, chunk=RESIDUAL_CHUNK_TILES)
    if not (func.attrs is not None and func.attrs.get(LAYOUT_FREE_ATTR)):  # no weight: attention's products
        plan = dataclasses.replace(plan, activations=True)
    keep = ()
    if plane_copy is not None and inner:
        _transpose_copy(sch, plane_copy, lanes, TRANSPOSE_PARALLEL_MIN if shape.cores > 1 else math.inf, copies)
        keep = (plane_copy,)
    elif plane_copy is not None:
        try:
            sch.compute_inline(plane_copy)  # loads straight from the image again
        except Exception:  # noqa: BLE001 - the copy stays a root block (one pass)
            pass
    register_tile(sch, mac, plan, shape, epilogue=not padded, copies=copies, keep=keep)
    return sch


CHANNELS_INNER_ROWS = True
"""Whether a 1x1 conv on an image of rows narrower than :data:`CHANNELS_INNER_MAX_WIDTH` + 1
(resnet50's 7x7 stage) reads a per-call copy of its image with the channels innermost, its
plane fused, under a weight tile of plane rows (:func:`_channels_inner_rows`; False: the weight
tile on the image's own rows, or the padded plane with a residual, as before; kept for A/B
runs)."""

CHANNELS_INNER_MAX_WIDTH = 7
"""The widest image row :func:`_channels_inner_rows` applies to (measured on 7x7 only)."""

CHANNELS_INNER_MIN_REDUCTION = 256
"""The least input channels for :func:`_channels_inner_rows`: the copy is one pass over the
image, paid back over a long sum (as :data:`RAGGED_PLANE_MIN_REDUCTION`)."""


def _plane_reading(func: tirx.PrimFunc, sch: s_tir.Schedule, mac, lanes: int, residual: bool):
    """How :func:`schedule_contraction` reads a 1x1 conv's image plane: ``(plane, inner,
    ragged)``, ``plane`` :func:`_fuse_plane`'s ``(sch, mac, copy)`` or None (the image's own
    rows).  Tried in order: the plane fused as it is; on a 7x7 image, the plane read through a
    channels-innermost copy (``inner``, :func:`_channels_inner_rows`); on a batch of 14x14
    images, the plane fused and then padded to whole vectors (``ragged``, :func:`_ragged_plane`).
    Each returns a copy of ``sch``: ``sch`` itself is left as it was."""
    is_weight = lambda b: is_layout_free(func, b)  # noqa: E731
    plane = _fuse_plane(sch, mac, lanes, is_weight)
    if plane is None and _channels_inner_rows(mac, lanes):
        plane = _fuse_plane(sch, mac, lanes, is_weight, ragged=True, channels_inner=True)
        if plane is not None:
            return plane, True, False
    if plane is None and _ragged_plane(mac, lanes, residual):
        plane = _fuse_plane(sch, mac, lanes, is_weight, ragged=True)
        if plane is not None:
            return plane, False, True
    return plane, False, False


def _channels_inner_rows(mac, lanes: int) -> bool:
    """Whether a stride-1 1x1 NCHW conv (a plain ``W[oc, ic] @ X[n, ic, h, w]`` of one
    reduction loop of :data:`CHANNELS_INNER_MIN_REDUCTION` steps or more) whose image rows are
    at most :data:`CHANNELS_INNER_MAX_WIDTH` wide and narrower than a vector, on a plane of no
    whole vectors (7x7 = 49), is tiled on its fused plane ``h*w`` read through a copy laid out
    ``X'[n, h*w, ic]`` (:func:`_fuse_plane` with ``channels_inner``, :func:`_transpose_copy`):
    the weight tile (output-channel vectors x plane rows) then broadcasts each row's channels
    from one cache line for 16 steps, and its rows need not divide the image's 7-wide rows
    (:func:`~hetpart.kernels.register_tile.make_plan` without ``exact_wide``: 5 rows x 2
    vectors on AVX2, the last of 10 tiles ragged; 7 x 2 x 16 on AVX-512).

    Before, the weight tile broadcast ``X[ic, h, w0..w0+6]`` -- 28 bytes of a new cache line
    (or two) every reduction step, 196 bytes further, that line re-read by the next row tile
    only after the whole sum -- and on AVX2 held 7 rows x 2 vectors: 14 accumulators, the
    two weight vectors and the broadcast, 17 of 16 registers, so LLVM moved accumulators
    through the stack every step (12 stack moves per 28 FMAs in 2048->512 + ReLU); with a
    residual the padded plane (49 -> 64 pixels, :data:`RAGGED_PLANE_B1_RESIDUAL`).  Five
    rows on the image's own rows measured 1.3x slower than the spilled seven: what the
    channels-inner copy removes is the per-step line.  ONNX Runtime's NCHWc pointwise kernel
    reads its input the same way (a block of channels per pixel).  Measured:
    bench/results/cpu-r50-late-2core.md."""
    if not CHANNELS_INNER_ROWS or len(mac.out_indices) < 3 or len(mac.reduce) != 1:
        return False
    h, w = mac.out_indices[-2], mac.out_indices[-1]
    if not (isinstance(h, tirx.Var) and isinstance(w, tirx.Var)):
        return False
    width, plane = mac.extents[w], mac.extents[h] * mac.extents[w]
    return (width <= CHANNELS_INNER_MAX_WIDTH and width < lanes and plane % lanes != 0
            and mac.extents[mac.reduce[0]] >= CHANNELS_INNER_MIN_REDUCTION)


TRANSPOSE_PARALLEL_MIN = 1 << 14
"""Elements from which :func:`_transpose_copy` runs its channel blocks in parallel (on a target of
2+ cores): each element is a strided read, several times an element-wise pass's cost, and the
copy is a serial fraction of the parallel tile after it (resnet50's 512x7x7 image: 25 Ki elements,
2 channel blocks of 16 a thread at 16 cores; under
:func:`~hetpart.kernels.register_tile.gate_parallel_min`'s 32 Ki there)."""


CHANNELS_INNER_ROWS_32 = False
"""Whether :func:`_channels_inner_rows`' tile takes up to
:data:`~hetpart.kernels.register_tile.MAX_ROWS_32_REGISTERS` rows on a 32-register target
(:func:`_channels_inner_rows_32`; False: the 7 rows ``make_plan`` gives a 7x7 plane).  Off: it
changes only AVX-512 code, which this 2-core AVX2 box cannot run; device step 84 A/Bs it
(``--after ...CHANNELS_INNER_ROWS_32=1``)."""


def _channels_inner_rows_32(mac, plan, shape) -> int:
    """Rows of a channels-inner plane tile (:func:`_channels_inner_rows`) on a target of 32
    vector registers where :data:`CHANNELS_INNER_ROWS_32`: of the counts past half
    :data:`~hetpart.kernels.register_tile.MAX_ROWS_32_REGISTERS` up to it (and the register file
    less 3, over the vectors), the one of the fewest tiles, then the least padding (49: 13 rows,
    4 tiles, 3 rows of padding), where the tile loop splits as evenly over ``shape.cores`` threads as
    ``plan.rows`` (:func:`~hetpart.kernels.register_tile.thread_efficiency`); else ``plan.rows``.

    The fused plane's rows need not divide 49, so the 7 x 2 x 16 tile (14 of 32 registers'
    accumulators, 2 weight vectors per 7 broadcasts) can hold 13 rows: 26 accumulators, the weight
    panel (2048 x 32 floats: 256 KiB, past a core's L1) read once per 13 plane rows, not 7 -- ONNX
    Runtime's AVX-512 SGEMM kernel holds 12 rows x 2 zmm.  The ragged last tile is split off
    (``TilePlan.split_ragged``): with the row checks in every tile LLVM left a branch per row in
    the FMA loop (built for ``sapphirerapids``: 6 + 20 FMAs in two blocks, 4 stack moves; split,
    one loop of 26 FMAs and one of 20, none).  The AVX2 tile stays unsplit (measured 1.03-1.07x
    slower split: LLVM had unswitched its 5-row check itself)."""
    if not CHANNELS_INNER_ROWS_32:
        return plan.rows
    return plane_rows_32(mac, plan, shape)


def plane_rows_32(mac, plan, shape) -> int:
    """:func:`_channels_inner_rows_32`'s row count, ungated (also a windowed conv's fused 7x7
    plane: :data:`~.cpu_conv2d.FUSED_WINDOW_ROWS_32`): ``plan.rows`` on a target of fewer than
    32 vector registers or a tile without rows."""
    if shape.registers < 32 or plan.row is None:
        return plan.rows
    extent = mac.extents[plan.row]
    top = min(MAX_ROWS_32_REGISTERS, (shape.registers - 3) // plan.vecs)
    rows = min(range(top, top // 2, -1), key=lambda r: (-(-extent // r), -(-extent // r) * r - extent))
    if rows <= plan.rows:
        return plan.rows
    width = plan.vecs * plan.lanes
    before = thread_efficiency(tile_count(mac, plan.vec, width, plan.row, plan.rows), shape.cores)
    after = thread_efficiency(tile_count(mac, plan.vec, width, plan.row, rows), shape.cores)
    return rows if after >= before else plan.rows


def _transpose_copy(sch: s_tir.Schedule, block, lanes: int, min_parallel: float, copies: tuple = ()) -> None:
    """Schedule the channels-inner copy ``X'[.., p, ic] = X[.., ic, p]`` of
    :func:`_channels_inner_rows` as a blocked transpose: ``ic`` in blocks of ``lanes`` outside
    the plane, each block's ``lanes`` source rows (``lanes x h*w`` floats) read from L1 while
    the plane loop writes one vector a pixel; the blocks in parallel from ``min_parallel``
    elements (:data:`TRANSPOSE_PARALLEL_MIN`: a serial pass holds every other core idle).  A strided conv's subsampled copy (``copies``,
    :func:`~.cpu_conv2d.subsampled_1x1`) is inlined into it where TVM allows: one copy, not two."""
    for c in copies:
        try:
            sch.compute_inline(c)
        except Exception:  # noqa: BLE001 - the subsampled copy stays (its own rows schedule)
            pass
    loops = sch.get_loops(block)
    extents = [const_extent(sch, lp) for lp in loops]
    if len(loops) < 2 or None in extents:
        return
    total = math.prod(extents)
    width = fitting_lanes(extents[-1], lanes)
    if width is None:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    else:
        ico, ici = sch.split(loops[-1], factors=[None, width])
        sch.reorder(*loops[:-2], ico, loops[-2], ici)
        outer = sch.fuse(*loops[:-2], ico) if len(loops) > 2 else ico
        sch.vectorize(ici)
    if total >= min_parallel:
        sch.parallel(outer)


PLANE_RAGGED_ROWS = True
"""Whether a tile along an activation's plane (output-channel rows broadcast from the weight x
plane vectors) on a 16-register target takes the register budget's rows with a ragged last tile
(:func:`_plane_rows`; False: the largest divisor of the channels, as before; kept for A/B runs)."""

PLANE_RAGGED_ROWS_MAX_WASTE = 1 / 16
"""The most rows the ragged last tile of :func:`_plane_rows` may pad, as a share of the
channels (128 channels in tiles of 6: 132, 3%)."""


def _plane_rows(mac, plan, shape) -> int:
    """Rows of a plane tile (``plan``: vectors of an activation's plane, rows over output
    channels whose weight scalars the tile broadcasts) on a target of 16 vector registers:
    ``registers - 4`` over the vectors (6 rows of 2: 12 accumulators, the two plane vectors and
    the broadcast, as ONNX Runtime's FMA3 SGEMM kernel holds 6 x 16), the last tile ragged
    (bound-checked rows, which LLVM unswitches: a loop of 12 FMAs a step and one of the
    remainder), where the divisor's tile holds no more than
    :data:`~hetpart.kernels.register_tile.MIN_ACCUMULATORS` (8) accumulators and the padding
    stays within :data:`PLANE_RAGGED_ROWS_MAX_WASTE`; else ``plan.rows``.

    Before, :func:`~hetpart.kernels.register_tile.make_plan` took the largest divisor of the
    channels up to 6: 4 for resnet50's 64-2048 channels, 8 accumulators, each step two plane
    vectors (a cache line, a new one every step: the next input channel's row) for 8 FMAs.
    With 6 rows the line feeds 12.  32-register targets are unchanged (8 rows: 16
    accumulators already).  Measured: bench/results/cpu-r50-late-2core.md."""
    if not PLANE_RAGGED_ROWS or shape.registers > 16 or plan.row is None:
        return plan.rows
    extent = mac.extents[plan.row]
    rows = max(1, (shape.registers - 4) // plan.vecs)
    if plan.rows * plan.vecs > MIN_ACCUMULATORS or rows <= plan.rows or extent < 2 * rows:
        return plan.rows
    waste = -(-extent // rows) * rows - extent
    return rows if waste <= PLANE_RAGGED_ROWS_MAX_WASTE * extent else plan.rows


def plane_tiled(func: tirx.PrimFunc, sch: s_tir.Schedule, mac, lanes: int) -> bool:
    """Whether :func:`schedule_contraction` tiles ``mac`` (a 1x1 conv's contraction) along
    its image plane -- :func:`_fuse_plane`, or :func:`_ragged_plane` -- rather than with
    output-channel vectors."""
    if _fuse_plane(sch, mac, lanes, lambda b: is_layout_free(func, b)) is not None:
        return True
    return _ragged_plane(mac, lanes, _reads_residual(sch, mac))


MIN_RAGGED_VECTORS = 2
"""Whole vectors a ragged dim must hold before it is padded to vectors (below that
the padding would be a third of the work or more)."""

RAGGED_PANEL_VECTORS = 2
"""A ragged dim whose padding to whole vectors would leave an odd count of them is
padded to a multiple of this many vectors (:func:`_pad_ragged_vector`): ViT's 197
tokens to 208 with 8 lanes (26 vectors), not 200 (25).  Then :func:`make_plan`'s tile
holds two vectors, 6 rows x 2 = 12 accumulators, where one vector gave 8 rows x 1:
8 accumulators over ViT's 64-long sum, 8 broadcasts per 8 FMAs, and 1.6x the tiles'
write-backs.  Measured (2-core EPYC znver3, AVX2, 2 threads, both builds in one process
in turns, least of 20 calls x 5 rounds): the attention scores ``[12,197,64] @
[12,64,197]`` with their scale 4.4 -> 2.3 ms (a 208-wide unpadded one: 1.3 ms; the
rest is the padded copy-back, scalar under its bound check)."""


NARROW_VECTORS = 4
"""A matmul whose widest vector dim holds only ``lanes / NARROW_VECTORS`` lanes (whisper's
attention scores over 1500 frames: 4 of 16) is padded to full vectors where it can
(:func:`_pad_ragged_vector`).  Half-width vectors of more than :data:`NARROW_LANES`
lanes are kept: on 56-wide rows neither tile won clearly (:func:`_activation_rows`)."""

NARROW_LANES = 4
"""A widest vector dim of at most this many lanes (one 128-bit register of float32) is
padded to full vectors too where the target's are wider, though it be half of them:
whisper's scores over 1500 frames on AVX2 (4 of 8 lanes; on AVX-512 a quarter,
padded by :data:`NARROW_VECTORS` already).  With 4-lane vectors the tile held one
vector of 4 a row (1500 is no whole number of 8): measured (2-core EPYC znver3, AVX2,
2 threads, both builds in one process in turns, least of 3 rounds) whisper-tiny's
``[6,1500,64] @ [6,64,1500]`` x 1/8 102 -> 48 ms.  AVX-512 decisions are unchanged."""


def _narrow(widest: int, lanes: int) -> bool:
    """Whether a matmul whose widest vector dim holds ``widest`` of ``lanes`` lanes is
    padded to full vectors (:data:`NARROW_VECTORS`, :data:`NARROW_LANES`)."""
    return widest * NARROW_VECTORS <= lanes or (widest <= NARROW_LANES < lanes)


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
    width = lanes * (RAGGED_PANEL_VECTORS if -(-mac.extents[var] // lanes) % RAGGED_PANEL_VECTORS else 1)
    padding = [width if iv.var.same_as(var) else 1 for iv in sch.get(mac.block).iter_vars]
    try:
        sch.pad_einsum(mac.block, padding)
    except Exception:  # noqa: BLE001 - not an einsum TVM can pad: decline
        return None
    return mac_of(sch)


PLANE_MAX_REDUCTION = 64
"""Reduction length up to which a 1x1 conv's fused plane (:func:`_fuse_plane`) is tiled
even where the weight tile would hold two full vectors of output channels: over so
short a sum the write-back weighs most, and the weight tile's is transposed (a
scatter per vector, each with the epilogue).  Measured (2-core EPYC shared with
other jobs, 2 threads, both builds in one process in turns, least of 400 calls, ms):
resnet50's 64->256 on 56x56 0.74/0.59/0.61/0.41/0.35 -> 0.57/0.52/0.54/0.39/0.27,
64->64 + ReLU 0.092/0.089 -> 0.071/0.079; mobilenet_v2's 32->192 + ReLU6 on 28x28
0.059 -> 0.033.  With K >= 256 (256->64 on 56x56, 512->128 and 416->128 on 28x28)
the weight tile's 14-16 accumulators beat the plane's 8-16: 3-15% slower there."""


RAGGED_PLANE = True
"""Whether a batched 1x1 conv on a plane of no whole vectors is tiled on its padded plane
(:func:`_ragged_plane`; False: the weight tile as before, kept for A/B runs)."""

RAGGED_PLANE_MIN_BATCH = 1
"""The least batch for :func:`_ragged_plane` (2: batch 1 keeps the weight tile, as before; kept
for A/B runs).  At batch 1 too the weight tile broadcast one image scalar per row and step a
plane (784 bytes) further, every panel re-reading the image; and with no epilogue its 7 rows x
2 vectors (14 accumulators, :func:`~hetpart.kernels.register_tile._exact_wide_rows`) spilled:
LLVM kept both weight vectors in registers and moved every accumulator through the stack each
step (densenet121's transition 1024->512 on 14x14, no bias: 4.3 ms against 2.8 with a bias).
Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, both builds and ONNX Runtime in one
process in settled turns, least of 10 calls x 3 rounds, ms, ORT in brackets; outputs
bit-identical; bench/results/cpu-concat-nets-2core.md): that transition 4.308 -> 2.525 (2.210),
densenet121's 544->128 + ReLU 0.364 -> 0.342 (0.318), resnet50's 1024->256 + ReLU 1.370 ->
1.279 (1.129), 256->1024 1.195 -> 1.158 (1.135), googlenet's 480->192 + ReLU 0.462 -> 0.407
(0.414), mobilenet_v2's 576->96 + its residual 0.305 -> 0.260 (0.272).  At batch 1 only where
the weight tile re-reads the image for :data:`RAGGED_PLANE_B1_MIN_PANELS` channel panels or more,
or its write-back gathers a residual, and only within :data:`RAGGED_PLANE_MAX_WASTE`: inception's
288->64 on 35x35 (4 panels) went 0.576 -> 0.645 (ORT 0.572), mobilenet_v2's 960->160 + residual
on 7x7 (49 -> 64 pixels) 0.202 -> 0.218 (0.190); hence not there."""

RAGGED_PLANE_B1_MIN_PANELS = 8
"""The least two-vector panels of output channels (128 channels with 8 lanes, 256 with 16) for
which :func:`_ragged_plane` pads a single image's plane where its epilogue reads no residual:
the weight tile re-reads the image once per panel, the plane tile pays a padded copy of it
(mobilenet_v2's 384->64 on 14x14, 4 panels: 0.137 / 0.138 ms, a tie; see
:data:`RAGGED_PLANE_MIN_BATCH`)."""

RAGGED_PLANE_MIN_REDUCTION = 256
"""The least reduction length (input channels) for :func:`_ragged_plane`: the padded copy
of the image and the copy-back of the output are two passes more, paid back by the
tile's contiguous reads over a long sum (resnet50's 256->1024 on 14x14 at batch 8: 12.4
-> 11.8 ms, 1024->256 22.7 -> 12.6); over mobilenet_v2's 96->576 on 14x14 (batch 4) a
tie (1.74 -> 1.77 ms), its whole model at batch 4 with the shorter sums padded too 52.1 ->
54.0 ms (1 thread, CPU time): not taken below 256."""

RAGGED_PLANE_MAX_WASTE = 1 / 6
"""The most padding :func:`_ragged_plane` adds, as a share of the plane: 14x14 = 196 ->
208 with 8 lanes (6%), -> 224 with 16 (14%); not 7x7 = 49 -> 64 (31%), measured
1.14-1.19x slower (resnet50's 2048->512 and 512->2048 at batch 8, 1 thread) -- unless
the epilogue reads a residual (:data:`RAGGED_PLANE_MAX_WASTE_RESIDUAL`)."""

RAGGED_PLANE_MAX_WASTE_RESIDUAL = 1 / 2
"""The most padding where the conv's epilogue reads a tensor of the output's shape (a
residual ``Add``, :func:`_reads_residual`): the weight tile's write-back, 16 output channels
a vector, reads that tensor as a gather of 16 planes per vector.  Measured (batch 8, 1
thread, CPU time, as :func:`_ragged_plane`): resnet50's 512->2048 on 7x7 + residual add +
ReLU 43.3 -> 15.6 ms (ONNX Runtime 11.8), the same conv without the add 13.5 (the
weight tile)."""


RESIDUAL_CHUNK_TILES = 16
"""Vector tiles per chunk of a tile along the activation (a plane tile: output-channel rows
x plane vectors, the weight broadcast) whose write-back reads a residual
(:func:`_reads_residual`): the tiles of every output-channel row run within a chunk of the
plane (16 tiles of 2 vectors: 256 pixels with 8 lanes) before the next chunk
(``TilePlan.chunk``).  Before, each plane tile ran every row tile: consecutive tiles
wrote, and read the residual at, the same pixels of every output channel -- a stream per
channel (256 for resnet50's 64->256 on 56x56), past what the prefetchers follow.
Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, both builds and ONNX Runtime in
one process, least of 3 calls x 5 rounds; outputs bit-identical;
bench/results/cpu-r50-ds-2core.md), batch 8: resnet50's 64->256 on 56x56 + residual add
+ ReLU 16.7 -> 13.0 ms (ONNX Runtime 17.4), 256->1024 on 14x14 (its padded plane) + residual
+ ReLU 12.5 -> 10.7 (11.3); without a residual the same chunks were 5-10% slower (64->256,
256->64, 256->128, mobilenet_v2's 24->144 and 144->24 on 56x56), hence only with one."""


RESIDUAL_CHUNK_MIN_BATCH = 2
"""The least batch for :data:`RESIDUAL_CHUNK_TILES` (resnet50's 64->256 on 56x56 + residual
at batch 1: 1.32 -> 1.39 ms with the chunks)."""

RESIDUAL_CHUNK_MIN_TILES = 8
"""The least vector tiles along the activation for :data:`RESIDUAL_CHUNK_TILES`: resnet50's
512->2048 on 7x7 + residual at batch 8 (64 padded pixels, 4 tiles: the row tiles then
outside the whole plane) 13.4 -> 14.5 ms with the chunks, its 256->1024 on 14x14 (208
pixels, 13 tiles) 12.5 -> 10.7."""


def _chunks_plane(mac, plan) -> bool:
    """Whether ``plan``, a tile along an activation (neither operand packed, output-channel
    rows broadcast from the weight) of a conv whose epilogue reads a residual, takes
    :data:`RESIDUAL_CHUNK_TILES`: a batch of :data:`RESIDUAL_CHUNK_MIN_BATCH` and
    :data:`RESIDUAL_CHUNK_MIN_TILES` vector tiles or more."""
    if plan.prepack or plan.pack_dim is not None or plan.row is None or len(mac.out_indices) < 3:
        return False
    n = mac.out_indices[0]
    if not isinstance(n, tirx.Var) or mac.extents[n] < RESIDUAL_CHUNK_MIN_BATCH:
        return False
    return mac.extents[plan.vec] >= RESIDUAL_CHUNK_MIN_TILES * plan.vecs * plan.lanes


PLANE_CHUNK_B1 = True
"""Whether one image's plane tile on a 32-register target (AVX-512) runs in chunks of
:data:`RESIDUAL_CHUNK_TILES` vector tiles, residual or not (:func:`_chunks_plane_b1`; False: each
plane tile runs every output-channel row tile, as before; kept for A/B runs)."""


PLANE_CHUNK_B1_MIN_CHANNELS = 64
"""The least output channels for :data:`PLANE_CHUNK_B1`: with fewer the tile's output streams are
few enough for the prefetchers, and a chunk re-reads its plane once per row tile from L2
(mobilenet_v2's 96->24 on 56x56: 0.121 -> 0.134 ms in the model with chunks)."""


PLANE_CHUNK_B1_MIN_TILES = 7
"""The least vector tiles along the plane for :data:`PLANE_CHUNK_B1`: 7 takes the 14x14 planes
(196 pixels padded to 224: the chunk is the whole plane, each row tile then runs all 7 plane
tiles).  resnet50 in the model: 256->1024 + residual 0.90x, 1024->256 0.92x, 1024->512 0.87x, the
512->1024 s2 0.87x against 8 (RESIDUAL_CHUNK_MIN_TILES, the batch-2+ residual rule's bound)."""


def _chunks_plane_b1(mac, plan, shape) -> bool:
    """Whether ``plan``, a plane tile of one image (the fused contraction ``[oc, h*w]`` of a 1x1
    conv at batch 1; neither operand packed, output-channel rows broadcast from the weight) on a
    target of 32+ vector registers, takes :data:`RESIDUAL_CHUNK_TILES` under
    :data:`PLANE_CHUNK_B1`: :data:`PLANE_CHUNK_B1_MIN_TILES` vector tiles or more and
    :data:`PLANE_CHUNK_B1_MIN_CHANNELS` output channels or more.

    Before, each 32-pixel plane tile ran all its output-channel row tiles: consecutive tiles
    wrote (and read a residual at) the same 32 pixels of every output channel, 256 streams
    12.5 KB apart for resnet50's 64->256 on 56x56, which no prefetcher follows -- in the model
    the residual (written three convs earlier) and the output then miss to L3 on every tile.
    In chunks (14 tiles of 32 pixels there) each row tile covers 448 contiguous pixels of its 8
    channels; on a 14x14 plane (7 tiles) the chunk is the whole plane.  Measured in the model
    (2-vCPU AVX-512 Xeon, 1 thread, CPU time, each kernel's least of 30 runs, runs alternating:
    tools/cpu_insitu_ab.py; bench/results/cpu-r50-avx512-1core.md): resnet50's 64->256 + residual
    + ReLU (x3) 4.92 -> 3.27 ms, its projection 1.18 -> 0.87, 256->1024 on 14x14 + residual (x6)
    6.09 -> 5.48, 1024->256 (x5) 4.29 -> 3.99; densenet121's 64->128 on 56x56 0.79x, mobilenet_v2's
    16->96 on 112x112 0.81x.
    AVX2 unchanged (16 registers; there the chunk measured 1.32 -> 1.39 ms alone at batch 1)."""
    if not PLANE_CHUNK_B1 or shape.registers < 32 or len(mac.out_indices) != 2:
        return False
    if plan.prepack or plan.pack_dim is not None or plan.row is None:
        return False
    if mac.extents[plan.row] < PLANE_CHUNK_B1_MIN_CHANNELS:
        return False
    return mac.extents[plan.vec] >= PLANE_CHUNK_B1_MIN_TILES * plan.vecs * plan.lanes


def _reads_residual(sch: s_tir.Schedule, mac) -> bool:
    """Whether a block other than the multiply-accumulate reads a buffer no block writes
    (a function input) with the output's shape: a residual added in the epilogue."""
    out = [int(d) if isinstance(d, tirx.IntImm) else -1 for d in mac.out.shape]
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    written = [w.source for b in blocks for w in b.writes]
    for b in blocks:
        if b.same_as(sch.get(mac.block)):
            continue
        for r in b.reads:
            shape = [int(d) if isinstance(d, tirx.IntImm) else -1 for d in r.source.shape]
            if shape == out and not any(r.source.same_as(w) for w in written):
                return True
    return False


def _ragged_plane(mac, lanes: int, residual: bool = False) -> bool:
    """Whether a stride-1 1x1 NCHW conv (a plain ``W[oc, ic] @ X[n, ic, h, w]``, at least
    :data:`RAGGED_PLANE_MIN_REDUCTION` input channels) on a batch
    of at least :data:`RAGGED_PLANE_MIN_BATCH` images whose ``h*w`` plane is no whole
    number of ``lanes`` vectors (14x14 = 196 = 24.5 x 8) should have its plane fused
    (:func:`_fuse_plane` with ``ragged``) and padded to whole vectors
    (:func:`_pad_ragged_vector`: 208 with 8 lanes, the image copied zero-padded once per
    call, the output copied back with the epilogue), then tiled as output-channel rows x
    two plane vectors, the weight broadcast (:func:`_activation_rows`) -- where the
    padding adds at most :data:`RAGGED_PLANE_MAX_WASTE` of the plane.

    The weight tile it replaces (16 output channels x 7 image columns) reads one image
    scalar per row and reduction step, the next step one plane (784 bytes on 14x14)
    further: a new cache line, and a new page every few steps, that the prefetchers do
    not follow, re-read by every panel of output channels; at batch 8 and 32 the batch's
    images no longer sit in L2/L3 between panels.  The plane tile reads two contiguous
    vectors per step.  Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, both
    builds in one process in settled turns, least of 3 calls x 4 rounds, batch 8; outputs
    bit-identical; bench/results/cpu-r50-b32-2core.md): resnet50's 1024->256 on 14x14
    22.7 -> 12.6 ms (ONNX Runtime 11.6), 1024->512 43.5 -> 23.9 (21.8), 256->1024 12.4
    -> 11.8 (11.7); on 7x7 (49 -> 64) 14.8 -> 17.5 and 13.5 -> 15.4: hence the waste bound,
    wider where the epilogue adds a residual (``residual``: :data:`RAGGED_PLANE_MAX_WASTE_RESIDUAL`)."""
    if not RAGGED_PLANE or len(mac.out_indices) < 3:
        return False
    n, h, w = mac.out_indices[0], mac.out_indices[-2], mac.out_indices[-1]
    batch = mac.extents[n] if isinstance(n, tirx.Var) else (1 if isinstance(n, tirx.IntImm) else 0)
    if not all(isinstance(v, tirx.Var) for v in (h, w)) or batch < max(1, RAGGED_PLANE_MIN_BATCH):
        return False
    plane = mac.extents[h] * mac.extents[w]
    if plane % lanes == 0 or plane < MIN_RAGGED_VECTORS * lanes:
        return False
    depth = math.prod(mac.extents[v] for v in mac.reduce)
    channels = math.prod(mac.extents[v] for v in mac.spatial
                         if not any(v.same_as(u) for u in (n, h, w) if isinstance(u, tirx.Var)))
    if depth < RAGGED_PLANE_MIN_REDUCTION and not _expand_plane(depth, channels, batch):
        return False
    width = lanes * (RAGGED_PANEL_VECTORS if -(-plane // lanes) % RAGGED_PANEL_VECTORS else 1)
    if batch < 2:  # one image: see RAGGED_PLANE_MIN_BATCH
        if not residual and channels < RAGGED_PLANE_B1_MIN_PANELS * 2 * lanes:
            return False
        waste = RAGGED_PLANE_MAX_WASTE
        if residual and _b1_residual_plane(channels, lanes):
            waste = RAGGED_PLANE_MAX_WASTE_RESIDUAL
    else:
        waste = RAGGED_PLANE_MAX_WASTE_RESIDUAL if residual else RAGGED_PLANE_MAX_WASTE
    return -(-plane // width) * width - plane <= waste * plane


RAGGED_PLANE_EXPAND = True
"""Whether a batched expansion 1x1 conv (output channels at least :data:`RAGGED_PLANE_EXPAND_RATIO`
times its input channels) takes :func:`_ragged_plane` from :data:`RAGGED_PLANE_EXPAND_MIN_REDUCTION`
input channels, under :data:`RAGGED_PLANE_MIN_REDUCTION` (False: not below 256, as before; kept
for A/B runs).  See :func:`_expand_plane`."""

RAGGED_PLANE_EXPAND_MIN_REDUCTION = 64
"""The least input channels of :data:`RAGGED_PLANE_EXPAND`."""

RAGGED_PLANE_EXPAND_RATIO = 4
"""The least output / input channels of :data:`RAGGED_PLANE_EXPAND` (the inverted residual's
expansions: 6)."""


def _expand_plane(depth: int, channels: int, batch: int) -> bool:
    """Whether a 1x1 conv of ``depth`` input and ``channels`` output channels on a batch of
    ``batch`` images whose plane is no whole vectors (14x14) takes the padded plane below
    :data:`RAGGED_PLANE_MIN_REDUCTION` (:data:`RAGGED_PLANE_EXPAND`).

    The weight tile re-reads the image once per two-vector panel of output channels: 6x
    expansions (EfficientNet's 112->672 and 80->480, mobilenet_v2's 96->576 and 64->384) have
    21-42 panels over a short sum, and at batch 8 the batch's images (0.5-0.7 MB) no longer stay
    in L2 between panels; their activation epilogue (SiLU, ReLU6) then runs in the weight tile's
    transposed write-back.  The padded plane reads each image row once per output-channel row
    tile, contiguous, and applies the epilogue in its copy-back along the plane.  One image
    (batch 1) keeps the weight tile (:data:`RAGGED_PLANE_MIN_BATCH`).  Measured (2-core EPYC
    znver3, AVX2, 1 thread, CPU time, both builds and ONNX Runtime in one process in turns, least
    of 3 calls x 5 rounds, batch 8; outputs bit-identical; bench/results/cpu-effnet-14-2core.md):
    EfficientNet's 112->672 + SiLU 4.365 -> 4.108 ms (ONNX Runtime 3.949), 80->480 + SiLU 2.519 ->
    2.327 (2.194), mobilenet_v2's 96->576 + ReLU6 2.834 -> 2.313 (2.554), 64->384 + ReLU6 1.177 ->
    1.057 (1.133); a 64->384 with no epilogue a tie (1.10 -> 1.08); MobileNetV3's 112->672 /
    80->480 + hard-swish a tie (kernel_switch_ab: 1.00, 0.99).  The earlier measurement that set
    :data:`RAGGED_PLANE_MIN_REDUCTION` (mobilenet_v2 at batch 4, every short sum padded) was a loss;
    the ratio gate keeps the projections (576->96 and the like are 256+ already) and the
    non-expanding short sums on their tiles."""
    return (RAGGED_PLANE_EXPAND and batch >= 2 and depth >= RAGGED_PLANE_EXPAND_MIN_REDUCTION
            and channels >= RAGGED_PLANE_EXPAND_RATIO * depth)


RAGGED_PLANE_B1_RESIDUAL = True
"""Whether a single image's 1x1 conv whose epilogue adds a residual takes :func:`_ragged_plane`
within :data:`RAGGED_PLANE_MAX_WASTE_RESIDUAL` (1/2: resnet50's 7x7 = 49 -> 64 pixels) where its
output channels fill :data:`RAGGED_PLANE_B1_RESIDUAL_MIN_PANELS` two-vector panels, with
:data:`RAGGED_PLANE_B1_RESIDUAL_MAX_LANES` lanes or fewer (False: the 1/6 bound of one image, as
before; kept for A/B runs).  See :func:`_b1_residual_plane`."""

RAGGED_PLANE_B1_RESIDUAL_MIN_PANELS = 32
"""The least two-vector panels of output channels (512 with 8 lanes) for
:data:`RAGGED_PLANE_B1_RESIDUAL`: mobilenet_v2's 960->160 + residual on 7x7 (10 panels) measured
0.202 -> 0.216 ms with the padded plane (ONNX Runtime 0.184; bench/results/cpu-r50-dn-b1-2core.md)."""

RAGGED_PLANE_B1_RESIDUAL_MAX_LANES = 8
"""The widest vectors (float32 lanes) :data:`RAGGED_PLANE_B1_RESIDUAL` applies with: AVX2's 16
registers, where the weight tile's 7 rows x 2 vectors need 17 (AVX-512's 32 hold them)."""


def _b1_residual_plane(channels: int, lanes: int) -> bool:
    """Whether one image's 1x1 conv with ``channels`` output channels and a residual epilogue
    may pad its plane up to :data:`RAGGED_PLANE_MAX_WASTE_RESIDUAL` (:data:`RAGGED_PLANE_B1_RESIDUAL`).

    On a 7x7 image with 8 lanes the weight tile is 7 rows x 2 vectors over a sum of 512+
    (:func:`~hetpart.kernels.register_tile._exact_wide_rows`): 14 accumulators, two weight
    vectors and the broadcast, 17 of AVX2's 16 registers.  With a bias alone LLVM spills one
    accumulator; with the residual add and the ReLU after it its register allocator kept 13
    of the 14 in stack slots, loaded and stored once per two steps of the reduction loop (28
    stack moves per 28 FMAs in resnet50's 512->2048 + residual + ReLU, built for znver3; 4
    without the add): 1.5x ONNX Runtime where the same conv without the add is 1.2x.  The
    plane tile (output-channel rows x two plane vectors, 8 accumulators) has no such loop.
    Measured: bench/results/cpu-r50-dn-b1-2core.md."""
    return (RAGGED_PLANE_B1_RESIDUAL and lanes <= RAGGED_PLANE_B1_RESIDUAL_MAX_LANES
            and channels >= RAGGED_PLANE_B1_RESIDUAL_MIN_PANELS * 2 * lanes)


def _fuse_plane(sch: s_tir.Schedule, mac, lanes: int, is_weight, ragged: bool = False, batch: bool = False,
                channels_inner: bool = False):
    """(``ragged``: whatever the plane's vectors and the channels, for :func:`_ragged_plane`;
    ``batch``: the same, and the batch's planes fused into one, ``(n, .., h, w, ..)`` iterated as
    ``(.., n*h*w + h*w + w, ..)``, for :func:`batch_plane_tile`; ``channels_inner``: the copy
    keeps the block's order ``X'[.., h*w, ic]``, for :func:`_channels_inner_rows`.)
    Fuse the image plane of a stride-1, unpadded 1x1 NCHW convolution whose rows are
    not whole SIMD vectors but whose plane is (``W[oc, ic] @ X[ic, h*w]``: 56x56 = 3136
    = 196 vectors of 16, where a row holds 3.5): returns ``(sch, mac, copy)``, a copy
    of the schedule with the block rewritten to iterate ``(.., oc, h*w, ic)``, the
    activation read through a copy
    ``X'[.., ic, h*w]`` (``copy``: to inline once the plan is made, so the tile loads
    from the image itself, ``h*w`` contiguous) and the output written through one
    (inlined into the tile's write-back with the epilogue); None where it does not apply.

    Applies when the output's two innermost indices are spatial iterators ``h, w``
    that are also the two innermost dims of the one non-weight operand, which the
    other operand does not use, both buffers' last two dims are exactly ``h x w``
    (so the plane is contiguous), ``w`` is not a whole number of ``lanes`` vectors and
    ``h*w`` is, and either the output channels are not a whole number of two-vector
    panels or the reduction is at most :data:`PLANE_MAX_REDUCTION` long; or, whatever
    the channels and the reduction, where ``w`` is an odd number of whole vectors and
    ``h*w`` a whole number of two-vector tiles (:func:`_odd_vector_rows`).  Before, such
    a conv got the weight tile: output-channel vectors x 8 image columns, with one
    vector of 16 channels (144 channels: 8 accumulators) or one half-width vector
    (24 channels), written back transposed.  Measured (A/B, 2 threads, least of 200):
    mobilenet_v2's 24->144 + ReLU6 on 56x56 0.226 -> 0.148 ms (ONNX Runtime 0.230),
    144->24 on 56x56 0.137 -> 0.073 (0.201); see bench/results/cpu-conv-eff-2core.md."""
    if len(mac.out_indices) < 2:
        return None
    h, w = mac.out_indices[-2:]
    if not (isinstance(h, tirx.Var) and isinstance(w, tirx.Var)):
        return None
    hw = (mac.extents[h], mac.extents[w])
    odd = _odd_vector_rows(hw, lanes)
    if ragged or batch:  # the plane padded afterwards (_ragged_plane, batch_plane_tile): no gate on whole vectors
        odd = True
    elif not odd and (hw[1] % lanes == 0 or (hw[0] * hw[1]) % lanes != 0):
        return None
    users = [o for o in (0, 1) if mac.uses(o, h) or mac.uses(o, w)]
    if len(users) != 1 or is_weight(mac.operands[users[0]][0]):
        return None
    o = users[0]
    buf, idx = mac.operands[o]
    if (len(idx) < 2 or not (isinstance(idx[-2], tirx.Var) and idx[-2].same_as(h))
            or not (isinstance(idx[-1], tirx.Var) and idx[-1].same_as(w))
            or mac.uses(o, h) != [len(idx) - 2] or mac.uses(o, w) != [len(idx) - 1]):
        return None
    if any(tuple(int(d) if isinstance(d, tirx.IntImm) else -1 for d in b.shape[-2:]) != hw
           for b in (buf, mac.out)):
        return None
    channels = math.prod(mac.extents[v] for v in mac.spatial if mac.uses(1 - o, v))
    depth = math.prod(mac.extents[v] for v in mac.reduce)
    if not odd and channels % (2 * lanes) == 0 and depth > PLANE_MAX_REDUCTION and not _long_sum_plane(mac, hw, lanes):
        return None  # the weight tile holds two full vectors and the reduction is long
    block = sch.get(mac.block)
    ivs = [iv.var for iv in block.iter_vars]
    hi = next(i for i, v in enumerate(ivs) if v.same_as(h))
    if hi + 1 >= len(ivs) or not ivs[hi + 1].same_as(w):
        return None
    width = hw[1]
    dtype = str(block.iter_vars[0].dom.extent.ty)
    if batch:  # (n, .., h, w, ..) -> (.., n*h*w + h*w + w, ..): the batch's planes one dim
        n = mac.out_indices[0]
        if (hi < 2 or not isinstance(n, tirx.Var) or not ivs[0].same_as(n) or mac.uses(o, n) != [0]
                or mac.uses(1 - o, n)):
            return None
        plane = hw[0] * hw[1]
        fused = tirx.IndexMap.from_func(
            lambda *vs: list(vs[1:hi]) + [vs[0] * plane + vs[hi] * width + vs[hi + 1]] + list(vs[hi + 2:]),
            ndim=len(ivs), index_dtype=dtype)
    else:
        fused = tirx.IndexMap.from_func(
            lambda *vs: list(vs[:hi]) + [vs[hi] * width + vs[hi + 1]] + list(vs[hi + 2:]),
            ndim=len(ivs), index_dtype=dtype)
    read = next(i for i, r in enumerate(block.reads) if r.source.same_as(buf))
    sch = sch.copy()  # on failure half-way the caller keeps its own schedule
    try:
        sch.transform_block_layout(mac.block, fused)
        copy = sch.reindex(mac.block, ("read", read))
        sch.reindex(mac.block, ("write", 0))
    except Exception:  # noqa: BLE001 - TVM refused: keep the row tiles
        return None
    # The copy is indexed as the block iterates ((.., plane, ic, ..)); lay it out as the
    # image ((.., ic, plane)) so the plane is its innermost, contiguous dim.
    copy_idx = list(sch.get(copy).writes[0].source.shape)
    new = mac_of(sch)
    if new is None:
        return None
    cbuf, cidx = new.operands[o]
    plane_var = sch.get(new.block).iter_vars[hi - 1 if batch else hi].var
    pos = next((d for d, e in enumerate(cidx) if isinstance(e, tirx.Var) and e.same_as(plane_var)), None)
    if pos is None or len(cidx) != len(copy_idx):
        return None
    order = [d for d in range(len(cidx)) if d != pos] + [pos]
    try:
        if not channels_inner:
            sch.transform_layout(copy, ("write", 0), lambda *ax: [ax[d] for d in order])
    except Exception:  # noqa: BLE001 - TVM refused: keep the row tiles
        return None
    new = mac_of(sch)
    if new is None or not (new.is_plain(0) and new.is_plain(1)):
        return None
    return sch, new, copy


PLANE_LONG_SUMS_AT_BATCH_1 = True
"""Whether a single image's 1x1 conv over a long sum whose plane is a whole number of two-vector
tiles (28x28 = 49 x 16 pixels with 8 lanes, AVX2) is tiled along its fused plane
(:func:`_long_sum_plane`; False: the weight tile, as :data:`PLANE_MAX_REDUCTION` chose
before; kept for A/B runs)."""


PLANE_LONG_SUMS_MAX_LANES = 8
"""The widest vectors (float32 lanes) :func:`_long_sum_plane` applies with."""


def _long_sum_plane(mac, hw: tuple[int, int], lanes: int) -> bool:
    """Whether :func:`_fuse_plane` takes a conv past :data:`PLANE_MAX_REDUCTION` whose weight
    tile would hold two channel vectors: at batch 1 (the batch index a constant, or one
    image), where the ``h x w`` plane is a whole number of two-vector tiles
    (:data:`PLANE_LONG_SUMS_AT_BATCH_1`).

    The weight tile (16 output channels x 4 image columns on a 28-wide row, 8
    accumulators) broadcasts an image scalar per row and step, the next step a plane
    (3 KiB) further, and every panel of output channels streams the whole image again:
    densenet121's 1x1 convs on 28x28 read 288-512 input channels, 0.9-1.6 MB, past a
    znver3 core's 512 KiB L2.  The plane tile (output-channel rows x two plane vectors,
    12 accumulators) reads two contiguous vectors per step.  Measured (2-core EPYC znver3,
    AVX2, 1 thread, CPU time, both builds and ONNX Runtime in one process in settled turns,
    least of 10 calls x 3 rounds, ms, ORT in brackets; outputs bit-identical;
    bench/results/cpu-concat-nets-2core.md): densenet121's 416->128 + ReLU 1.100 -> 0.870
    (0.965), its transition 512->256 2.903 -> 2.500 (2.266); resnet50's 512->128 + ReLU 1.357
    -> 1.135 (1.179), 128->512 1.206 -> 1.072 (1.163).  (The 2-thread, wall-time runs behind
    :data:`PLANE_MAX_REDUCTION`'s "3-15% slower" predate the odd-row and ragged-row work.)
    Only with 8 lanes (AVX2's 16 registers: the weight tile holds 4 rows x 2 vectors on a
    28-wide row): with 16 (AVX-512's 32 registers) that tile holds 14-16 accumulators and
    measured faster than the plane over long sums (:data:`PLANE_MAX_REDUCTION`; 784 pixels
    are no whole two-vector tiles of 16 lanes anyway).  Batches > 1 keep the weight tile
    (unmeasured)."""
    if not PLANE_LONG_SUMS_AT_BATCH_1 or lanes > PLANE_LONG_SUMS_MAX_LANES or (hw[0] * hw[1]) % (2 * lanes):
        return False
    n = mac.out_indices[0] if len(mac.out_indices) >= 3 else None
    return isinstance(n, tirx.IntImm) or (isinstance(n, tirx.Var) and mac.extents[n] == 1)


def _odd_vector_rows(hw: tuple[int, int], lanes: int) -> bool:
    """Whether an ``h x w`` image's rows are an odd number of whole ``lanes`` vectors
    while its plane is a whole number of two-vector tiles (``56 x 56`` with 8 lanes,
    AVX2: 7 vectors a row, 392 in the plane; ``112 x 112`` with 16, AVX-512).

    Such a 1x1 conv's rows get :func:`_activation_rows`' tile with one vector (two do
    not divide a row): 8 output channels x 1 vector, 8 accumulators; the fused plane
    (:func:`_fuse_plane`) holds two vectors, 12-16 accumulators, whatever the
    reduction length (the weight tile, which :data:`PLANE_MAX_REDUCTION` weighs the
    plane against, is not the alternative here).  Measured (2-core EPYC znver3, AVX2,
    2 threads, both builds in one process in settled turns, least of 60 calls x 3
    rounds, ms; bench/results/cpu-r50-2core.md): resnet50's 64->256 on 56x56 1.21 ->
    0.68, 256->64 1.29 -> 0.70, 256->128 2.61 -> 1.39; mobilenet_v2's 24->144 + ReLU6
    0.27 -> 0.20, 144->24 0.25 -> 0.19 (ONNX Runtime 0.84, 0.99, 1.53, 0.31, 0.29)."""
    w, plane = hw[1], hw[0] * hw[1]
    return w % lanes == 0 and (w // lanes) % 2 == 1 and plane % (2 * lanes) == 0


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


BATCH_PLANE = True
"""Whether a stride-1 1x1 conv on a batch of 7x7 planes (no whole two-vector tiles, and too
ragged to pad per image) is tiled on one plane of all the batch's pixels (:func:`_batch_plane`,
:func:`batch_plane_tile`; False: the weight tile or the per-image padded plane, as before; kept
for A/B runs)."""

BATCH_PLANE_MAX_WASTE = 1 / 16
"""The most padding :func:`batch_plane_tile` adds to the batch's pixels, as a share of them (batch
8 of 7x7: 392 -> 400, 2%; batch 2 of 7x7, 98 -> 112, 14%: not taken)."""

BATCH_PLANE_MAX_PIXELS = 49
"""The largest image plane (``h * w``) :func:`_batch_plane` applies to: 7x7, the plane measured.
14x14 planes (196 pixels: 6% padding per image, :func:`_ragged_plane` where the sum is 256+ long)
measured a tie or worse on the whole: mobilenet_v2's 96->576 + ReLU6 at batch 8 2.70 -> 2.47 ms,
its 64->384 + ReLU6 1.08 -> 1.15, MobileNetV3's 80->480 + hard-swish 1.61 -> 1.94, 240->80 0.73 ->
0.78 (tools/kernel_switch_ab.py, 1 thread, CPU time); inception's 17x17 and 35x35 are unmeasured."""


def _batch_plane(mac, lanes: int) -> bool:
    """Whether a 1x1 NCHW conv ``W[oc, ic] @ X[n, ic, h, w]`` is tiled by :func:`batch_plane_tile`:
    :data:`BATCH_PLANE`, a batch of 2+ images whose ``h*w`` plane (at most
    :data:`BATCH_PLANE_MAX_PIXELS`) is too ragged for one image's padding to whole two-vector
    tiles (past :data:`RAGGED_PLANE_MAX_WASTE`: 7x7 = 49 -> 64, 31%), the batch's pixels padded
    to whole tiles within :data:`BATCH_PLANE_MAX_WASTE`.  In: the block and the target's
    ``lanes``; out: True to take the batch plane."""
    if not BATCH_PLANE or len(mac.out_indices) != 4:
        return False
    n, h, w = mac.out_indices[0], mac.out_indices[-2], mac.out_indices[-1]
    if not all(isinstance(v, tirx.Var) for v in (n, h, w)) or mac.extents[n] < 2:
        return False
    plane, width = mac.extents[h] * mac.extents[w], 2 * lanes
    if plane % width == 0 or plane > BATCH_PLANE_MAX_PIXELS:
        return False
    total = plane * mac.extents[n]
    if -(-total // width) * width - total > BATCH_PLANE_MAX_WASTE * total:
        return False
    return -(-plane // width) * width - plane > RAGGED_PLANE_MAX_WASTE * plane


def batch_plane_tile(func: tirx.PrimFunc, sch: s_tir.Schedule, mac, target: Target) -> s_tir.Schedule | None:
    """Tile a 1x1 conv on a batch of small planes (:func:`_batch_plane`) as one contraction over
    all the batch's pixels: ``Y'[oc, p] = W[oc, ic] @ X'[ic, p]``, ``p = n*h*w + h*w + w``, with
    ``X'`` a copy of the image per call (image by image, ``(n, ic)`` rows of ``h*w`` contiguous on
    both sides; where ``p`` is no whole number of two-vector tiles, zero-padded to them:
    batch 8 of 7x7, 392 -> 400 pixels), then :func:`_activation_rows`' tile -- output-channel rows
    x two vectors of pixels, the weight broadcast -- the output written from the tile through
    ``p``'s image and pixel with the epilogue (a padded tile's copy-back, in the tile).  Returns
    a new schedule (``sch`` is left as it was), or None where it does not apply.

    The tiles before: the weight tile (two vectors of output channels x 4 image columns, 8
    accumulators, the last of a 7-wide row's two tiles ragged, every weight panel streaming
    the whole batch's images) below :data:`WIDE_ROWS_MIN_REDUCTION` input channels, 7 exact
    columns above; or one image's plane padded 49 -> 64 (a residual epilogue: 31% of the
    multiply-adds on padding).  Here 5-6 output channels x 16 pixels (10-12 accumulators),
    2% padding at batch 8 and none at 32 (1568 pixels).  Measured (2-core EPYC znver3, AVX2,
    1 thread, CPU time, both builds and ONNX Runtime in one process, least of 4 calls x 4
    rounds; outputs bit-identical; bench/results/cpu-dw-batch-2core.md), batch 8, ms, ORT
    (with its NCHWc reorders) in brackets: mobilenet_v2's 320->1280 + ReLU6 on 7x7 6.19 ->
    3.89 (3.94), 960->320 3.66 -> 3.10 (2.82), 960->160 + residual 1.98 -> 1.76 (1.47);
    EfficientNet's 1152->320 4.37 -> 3.56 (3.39), 1152->192 + residual 2.70 -> 2.39 (2.07)."""
    plane = _fuse_plane(sch, mac, cpu_shape(target).lanes(str(mac.out.dtype)), lambda b: is_layout_free(func, b),
                        batch=True)
    if plane is None:
        return None
    images = mac.extents[mac.out_indices[0]]
    sch, mac, copy = plane
    shape = cpu_shape(target)
    lanes = shape.lanes(str(mac.out.dtype))
    pixels = next((v for v in mac.spatial if mac.uses(1 - _weight_operand(func, mac), v)), None)
    if pixels is None:
        return None
    padded = mac.extents[pixels] % (2 * lanes) != 0
    try:
        if padded:
            sch.pad_einsum(mac.block, [2 * lanes if iv.var.same_as(pixels) else 1
                                       for iv in sch.get(mac.block).iter_vars])
            mac = mac_of(sch)
            copy_back = sch.get_consumers(mac.block)
            if len(copy_back) == 1:
                fuse_epilogue(sch, copy_back[0])  # the epilogue with the copy-back, over the unpadded pixels
            sch.compute_inline(copy)  # the padded copy reads the image itself
    except Exception:  # noqa: BLE001 - TVM refused: the caller's tiles
        return None
    cands = vec_candidates(mac, lanes) if mac is not None else []
    best = _activation_rows(mac, cands, lambda c: is_layout_free(func, mac.operands[c.operand][0]), lanes)
    if best is None:
        return None
    copies = ()
    if not padded:  # the copy image by image: (n, ic) rows of the h*w plane, contiguous on both sides
        loops = sch.get_loops(copy)
        if len(loops) != 2:
            return None
        n, hw = sch.split(loops[0], factors=[images, None])
        sch.reorder(n, loops[1], hw)
        copies = (copy,)
    plan = make_plan(mac, best, shape, best.lanes, pack=not best.last, prepack=False)
    register_tile(sch, mac, plan, shape, epilogue=not padded, copies=copies)
    return sch


def _weight_operand(func: tirx.PrimFunc, mac) -> int:
    """The operand of ``mac`` that is a model weight (1 where neither is)."""
    return 0 if is_layout_free(func, mac.operands[0][0]) else 1
