"""CPU rule for injective kernels: element-wise chains, broadcast, transpose, reshape,
concat, gather, padding -- any function whose blocks are all spatial.

Every block with a single consumer is inlined into it, so each output is written by
one loop nest that reads the inputs directly; each remaining nest is fused into one
loop, split into SIMD-width chunks (vectorised) and run in parallel -- from
:data:`STRIDED_PARALLEL_MIN_ELEMENTS` outputs already when the nest reads an input
with a stride along its innermost loop (a transpose: each element costs a cache line),
and from :data:`HEAVY_PARALLEL_MIN_ELEMENTS` when each element rounds a float to an
integer (a quantisation: a divide, a round, a clip and a
narrowing cast per element).
A producer that computes and that its consumer broadcasts (a decode step's rotary
embedding of the new key, ``[1, kv, 1, d]``, written into the KV cache by a ``Where``
over ``[1, kv, slots, d]``) stays a block of its own, computed once, not per cache slot
(``try_inline_spatial(keep_broadcast_arithmetic=True)``).  A transpose whose inputs are
contiguous along the loop just outside the innermost is tiled
(:func:`_tile_transpose`); one that moves whole contiguous rows (a head split:
``[w, t, 3*h*d] -> [3, w, h, t, d]``) keeps its rows as the vectorised inner loop
(:func:`_permuted_rows`).
Float32 ``exp``, ``sigmoid`` and ``tanh`` (Sigmoid, SiLU, Exp, Tanh, Elu, Selu, ...) are computed by
:func:`hetpart.kernels.fast_exp.replace_exp`'s vectorisable arithmetic: LLVM emits
them as one scalar libm ``expf`` call per element even inside a vector loop.
Measured (2-core EPYC, AVX-512, 2 threads, ``bench/cpu_softmax.py --ops
Sigmoid,SiLU``): see bench/results/cpu-elementwise-exp-2core.md.

Correct for any such function: only loops are restructured, each element computed
as before -- except ``exp``, ``sigmoid`` and ``tanh``, within 4, 6 and 16 float32 ulps
of the exact values, with the same 0, +inf and NaN (tests/test_kernels_elementwise_exp.py).
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from tvm.ir import TensorLoad

from ..access import MOVES_BY_STEPS, Unknown, moves_by, reads_strided, strides_along, unit_run, write_strides_along
from ..analysis import (PARALLEL_MIN_ELEMENTS, const_extent, cpu_shape, fitting_lanes, is_cpu, lane_safe,
                        parallel_vectorize, try_inline_spatial)
from ..fast_exp import replace_exp

STRIDED_PARALLEL_MIN_ELEMENTS = 1 << 14
"""Outputs from which a strided copy runs in parallel.  Measured on the H200 host (16
cores): BERT's K^T transpose (``[1,128,12,64] -> [1,12,64,128]``, 96 Ki floats, each
read from its own cache line) took 130-160 us on one thread, ~1.5 ns an element, so
16 Ki elements already amortise a thread-pool wake-up; the contiguous threshold
(:data:`~hetpart.kernels.analysis.PARALLEL_MIN_ELEMENTS`, 256 Ki) kept it serial."""

RAGGED_TRANSPOSE_TILES = True
"""Whether :func:`_tile_transpose` tiles a transpose whose innermost extent is no whole
number of vectors too.  Before, such a nest fell to the plain injective schedule:
all loops fused and split into ``lanes``-wide vectors, each lane's indices a div/mod
of the fused index, each element a gather -- ViT's ``K^T`` (``[1,12,197,64] ->
[1,12,64,197]``) took 0.10-0.26 ms, tiled 0.033-0.048 (two runs), whisper-tiny's
(``[1,6,1500,64]``) 0.79 -> 0.14 ms (2-core EPYC znver3, AVX2, 2 threads, both in one
process in turns, least of 20 calls x 6 rounds)."""

PERMUTED_ROWS = True
"""Whether :func:`_permuted_rows` schedules a copy of permuted contiguous rows (Swin's
window QKV split-heads ``[512, 49, 288] -> [3, 512, 3, 49, 32]`` at batch 8) as rows.
Before, the plain injective schedule split the innermost loop into 8-lane vectors and fused
their chunks with every outer loop into its parallel loop, each vector's source address a
chain of the reshape's and transpose's div/mod on the fused index: 25.6-30.2 ms on one core of the
2-core EPYC (AVX2) against ONNX Runtime's 9.4-11.2 ms; as rows 3.2-4.2 ms.  zoo:swin at batch 8,
1 thread: 1265 -> 1137 ms, ORT 1140 (bench/results/cpu-swin-copy-2core.md)."""

HEAVY_PARALLEL_MIN_ELEMENTS = 1 << 15
"""Outputs from which a quantising nest (:func:`_quantising`: it rounds or casts a float
to an integer type) runs in parallel.  DynamicQuantizeLinear's quantisation of a
transformer's ``[128, 768]`` activation (96 Ki outputs; ``x / scale``, a round, a clip
and a uint8 cast each) sat under the contiguous threshold (256 Ki, set for memory-bound
copies) and ran on one thread: ~8.5 us on one core (~0.09 ns an output).  Measured in
dynamically quantised GPT-2 (2-core EPYC, 2 threads, the pool awake from the min/max
kernel just before): 8.3-8.7 -> 5.6-6.1 us (bench/results/cpu-int8-dynamic-2core.md);
alone, the pool asleep, a wash (8.3 -> 7.0-12.5 us).  32 Ki outputs (~3 us on one
core) is where 16 cores save about a wake-up (an estimate; not measured on a 16-core
CPU)."""


def _spatial_blocks(sch: s_tir.Schedule, *, loopless: bool = False):
    """Root blocks of ``sch`` if all of them (and all nested blocks) are spatial and
    each has a loop, else None.  With ``loopless``, blocks without a loop pass too: the
    check before inlining, which may remove them (a 0-d ``Cast`` of a quantised nest's
    zero point, ``quantize -> cast -> subtract(zp)`` as the dynamically quantised
    ConvInteger's input: declined, the nest was left to
    :class:`~.cpu_fallback.CpuFallback`, three serial loops LLVM unrolled and
    vectorised apiece -- the model's costliest kernels to compile)."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    for blk in blocks:
        stmt = sch.get(blk)
        if not stmt.iter_vars or any(iv.iter_type != tirx.IterVar.DataPar for iv in stmt.iter_vars):
            return None
        if not loopless and not sch.get_loops(blk):
            return None
    return blocks


class CpuInjective(ScheduleRule):
    """Inline, fuse, vectorise, parallelise (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        sch = s_tir.Schedule(func)
        if _spatial_blocks(sch, loopless=True) is None:
            return None
        sch = s_tir.Schedule(replace_exp(func))
        try_inline_spatial(sch, keep_broadcast_arithmetic=True)
        blocks = _spatial_blocks(sch)
        if blocks is None:
            return None
        shape = cpu_shape(target)
        for blk in blocks:
            stmt = sch.get(blk)
            lanes = shape.lanes(str(stmt.writes[0].source.dtype))
            if _partition_concat(sch, blk, lanes, shape.cores):
                continue
            if _tile_transpose(sch, blk, lanes, shape.cores):
                continue
            if NARROW_BYTE_TRANSPOSE and lanes > NARROW_LANES and _tile_transpose(sch, blk, NARROW_LANES, shape.cores):
                continue
            if MERGE_PLANE_TRANSPOSE:
                merged, tiled = _merged_plane_tile(sch, blk, lanes, shape.cores)
                if merged is not None and (tiled or MERGE_PLANE_FLAT):
                    sch = merged
                if tiled:
                    continue
            blk = sch.get_sblock(stmt.name_hint)
            if BLOCKING_TRANSFORM_VECTORS and _blocking_transform(sch, blk, lanes):
                continue
            if PERMUTED_ROWS and _permuted_rows(sch, blk, lanes):
                continue
            parallel_vectorize(sch, blk, lanes, min_parallel=min_parallel(stmt))
        return sch


MAX_CONCAT_SEGMENTS = 128
"""Concat inputs up to which a concat nest is split into one loop per input
(densenet121's last concat has 33)."""


def concat_segments(stmt) -> tuple[int, list[int]] | None:
    """``(axis, sizes)`` when block ``stmt`` reads a concatenation: TOPI's concat is a
    chain ``if_then_else(C_k <= v, x_k[.., v - C_k, ..], ...)`` over one block iterator
    ``v`` (iterator ``axis``), the constants ``C_k`` the inputs' offsets; ``sizes`` the
    inputs' extents along it, in order.  None for anything else (a padding's conditions
    are ``And``s of two bounds; a ``Select`` is not ``if_then_else``)."""
    iters = [iv.var for iv in stmt.iter_vars]
    found: dict[int, set[int]] = {}

    def visit(e):
        if not str(getattr(e.op, "name", "")).endswith("if_then_else"):
            return
        cond, then = e.args[0], e.args[1]
        if not (isinstance(cond, tirx.LE) and isinstance(cond.a, tirx.IntImm)):
            return
        axis = next((i for i, v in enumerate(iters) if cond.b.same_as(v)), None)
        if axis is not None and isinstance(then, TensorLoad) and _offset_index(then, iters[axis], int(cond.a.value)):
            found.setdefault(axis, set()).add(int(cond.a.value))

    tvm_ffi.structural_walk(stmt.body, [(tvm.ir.Call, visit)], order="post")
    if len(found) != 1:
        return None
    ((axis, offsets),) = found.items()
    extent = stmt.iter_vars[axis].dom.extent
    if not isinstance(extent, tirx.IntImm):
        return None
    edges = [0] + sorted(o for o in offsets if 0 < o < int(extent)) + [int(extent)]
    if not 2 <= len(edges) - 1 <= MAX_CONCAT_SEGMENTS:
        return None
    return axis, [b - a for a, b in zip(edges, edges[1:])]


def _offset_index(load, var, offset: int) -> bool:
    """Whether ``load`` reads ``var - offset`` in one of its indices (a concat input)."""
    for idx in load.indices:
        if isinstance(idx, tirx.Sub) and idx.a.same_as(var) and isinstance(idx.b, tirx.IntImm) \
                and int(idx.b.value) == offset:
            return True
    return False


BLOCKED_CONCAT_VECTORS = True
"""Whether a partitioned concat over a channel-blocked tensor (``[n, C/c, h, w, c]``, the
opt-in ``NCHW{c}c`` import) keeps its channel block as an explicitly vectorised inner loop
(:func:`_partition_concat`).  Before, the plane's loops were fused with it into one run of
``h*w*c`` elements, each BN parameter read at ``i % c`` of the fused index: LLVM's loop
vectoriser gave up and densenet121's concat+BN+ReLU kernels ran scalar -- block 3's last
(992x14x14, NCHW16c) 0.173 ms against 0.046 in NCHW (1 thread, AVX-512);
bench/results/cpu-dn-blocked-2core.md."""


def _blocked_plane(sch: s_tir.Schedule, plane, lanes: int | None) -> bool:
    """Schedule a concat part's ``plane`` loops ``[.., h, w, c]`` whose innermost is a channel
    block of at most 4 vectors (:data:`BLOCKED_CONCAT_VECTORS`; a block narrower than the lanes is
    one vector): the others fused, ``c`` split into ``lanes`` vectors (vectorised) and the rest
    unrolled.  False (nothing done) otherwise."""
    if not BLOCKED_CONCAT_VECTORS or lanes is None or len(plane) < 2:
        return False
    c = const_extent(sch, plane[-1])
    if c is None or c < 4 or c > 4 * lanes or (c > lanes and c % lanes):
        return False
    if len(plane) > 2:
        sch.fuse(*plane[:-1])
    if c > lanes:
        outer, inner = sch.split(plane[-1], factors=[None, lanes])
        sch.unroll(outer)
        sch.vectorize(inner)
    else:
        sch.vectorize(plane[-1])
    return True


def _partition_concat(sch: s_tir.Schedule, block, lanes: int | None = None, cores: int = 1) -> bool:
    """A concat nest (:func:`concat_segments`, with whatever element-wise work was inlined
    into it) as one loop per input: the concat loop moved outermost and partitioned at
    the inputs' offsets, so TVM's simplifier resolves the ``if_then_else`` chain in each
    part and every element is a plain copy (+ epilogue) of one input.  In each part
    the loops after the concat axis are fused (an NCHW plane: contiguous, left to LLVM's
    loop vectoriser).  Serial: TVM parallelises only loops from 0, so a part could run
    in parallel only over its rows, one thread-pool launch per part -- measured 5-8x
    slower than serial at 2 threads (densenet's 12-input 480x28x28: 0.37 vs 0.044 ms;
    the rows loop outside the partition, one launch: 0.28-1.7 ms).  False (nothing
    changed) where the nest is no concat or its loops are not bound one-to-one to the
    block's iterators.  A channel-blocked concat runs in parallel over chunks of its plane instead
    (:func:`_parallel_blocked_concat`, one launch for all its parts; an NCHW one so chunked, each
    part's run a piece of one channel's plane, ran 1.1-5.5x its serial time per core: densenet121's
    14x14 and 7x7 concats).

    Why: the chain is evaluated per element, up to one compare per input -- densenet121's
    Concat -> BatchNorm -> ReLU over 24 inputs, the ReLU's ``Select`` evaluating the chain
    twice, took 1.8 ms for 992x14x14 outputs on 2 threads (15 us partitioned).
    """
    stmt = sch.get(block)
    found = concat_segments(stmt)
    loops = sch.get_loops(block)
    if found is None or len(loops) != len(stmt.iter_vars) or None in [const_extent(sch, lp) for lp in loops]:
        return False
    axis, sizes = found
    values = _iter_values(sch, block)
    if const_extent(sch, loops[axis]) != sum(sizes) or values is None \
            or any(not v.same_as(sch.get(lp).loop_var) for v, lp in zip(values, loops)):
        return False
    # a channel-blocked tensor [n, C/c, h, w, c] concatenated along C/c: its plane ends in the block
    blocked = len(loops) == 5 and axis == 1
    if blocked and _parallel_blocked_concat(sch, block, loops, sizes, lanes, cores):
        return True
    sch.reorder(loops[axis], *loops[:axis])
    for part in sch.loop_partition(loops[axis], factors=sizes[:-1] + [None]):
        for blk in sch.get_child_blocks(part):
            plane = sch.get_loops(blk)[-len(loops):][axis + 1:]  # [concat part, loops before it, the plane]
            if blocked and _blocked_plane(sch, plane, lanes):
                continue
            if len(plane) > 1:
                sch.fuse(*plane)
    return True


PARALLEL_BLOCKED_CONCAT = True
"""Whether a channel-blocked concat (``[n, C/c, h, w, c]`` along ``C/c``, the opt-in ``NCHW{c}c``
import; densenet121's concat + BatchNorm + ReLU) of at least :data:`BLOCKED_CONCAT_PARALLEL_MIN`
outputs runs in parallel over chunks of its plane (:func:`_parallel_blocked_concat`).  Before: serial
(:func:`_partition_concat`) -- at 16 threads densenet121's 58 such kernels, 2.3 ms on one core, stayed
2.3 ms while its convolutions took ~3 (bench/results/cpu-blocked-parallel-audit.md)."""

BLOCKED_CONCAT_PARALLEL_MIN = 1 << 15
"""Outputs from which a channel-blocked concat with arithmetic after it runs in parallel: ~8 us of
concat + BatchNorm + ReLU on one AVX-512 core (992x14x14 = 194 Ki outputs took 46 us), a few
thread-pool wake-ups.  A plain concat (a copy: each part one contiguous run, which chunking breaks
up -- googlenet's 14x14 ones ran 1.12x their serial time per core) from the contiguous threshold
(:data:`~hetpart.kernels.analysis.PARALLEL_MIN_ELEMENTS`), as any copy."""

CHUNK_OVERHEAD_PIXELS = 0.5
"""A parallel iteration's own cost in :func:`blocked_concat_chunk`, in pixels of the plane (each
iteration restarts every input's part: measured per core, googlenet's blocked 14x14 concats in
1-pixel chunks ran 1.06-1.11x their serial time, in 14-pixel chunks ~1.0)."""


def blocked_concat_chunk(pixels: int, cores: int, batch: int = 1) -> int:
    """Pixels of one parallel iteration of a concat over a ``pixels``-pixel plane: the divisor ``d``
    of ``pixels`` whose iterations split over ``cores`` threads as TVM splits them (contiguous
    ``ceil(E/cores)`` a thread, ``E = pixels / d``) give the busiest thread the least modelled work,
    ``ceil(E/cores) * (d + CHUNK_OVERHEAD_PIXELS)``; the largest among equals (the longest contiguous
    runs: 8-pixel chunks of a 28x28 plane, 98 iterations, ran 10% slower on one core than 49-pixel
    ones).  16 cores: 56x56 -> 196 (16 iterations), 28x28 -> 49 (16), 14x14 -> 14 (14), 7x7 -> 1 (49);
    1 core: the whole plane.  ``batch`` images: ``E = batch * pixels / d`` (the batch loop is fused
    into the parallel one), so at batch >= cores a whole plane an iteration."""
    threads = max(1, cores)
    return min((d for d in range(1, pixels + 1) if pixels % d == 0),
               key=lambda d: (-(-(batch * pixels // d) // threads) * (d + CHUNK_OVERHEAD_PIXELS), -d))


def _parallel_blocked_concat(sch: s_tir.Schedule, block, loops, sizes: list[int], lanes: int | None,
                             cores: int) -> bool:
    """A channel-blocked concat's nest ``[n, C/c, h, w, c]`` as ``parallel fused(n, p_o)`` over
    chunks of :func:`blocked_concat_chunk` pixels of the ``h*w`` plane, in each the concat axis
    partitioned at the inputs' offsets (each part a plain copy + epilogue, :func:`_partition_concat`)
    and every part's ``[p_i, c]`` loops a run of whole channel-block vectors (:func:`_blocked_plane`):
    one launch for all parts, each thread a contiguous band of every channel block's plane.  False
    (nothing changed) when :data:`PARALLEL_BLOCKED_CONCAT` is off, the nest has fewer than
    :data:`BLOCKED_CONCAT_PARALLEL_MIN` outputs (a plain copy: 256 Ki), its channel block does not vectorise or it would
    be one iteration (a one-core target)."""
    extents = [const_extent(sch, lp) for lp in loops]
    c = extents[-1]
    least = BLOCKED_CONCAT_PARALLEL_MIN if _computes(sch.get(block)) else PARALLEL_MIN_ELEMENTS
    if not PARALLEL_BLOCKED_CONCAT or lanes is None or math.prod(extents) < least \
            or c < 4 or c > 4 * lanes or (c > lanes and c % lanes):
        return False
    n, cc, h, w, cb = loops
    pixels = extents[2] * extents[3]
    chunk = blocked_concat_chunk(pixels, cores, extents[0])
    if chunk == pixels and extents[0] == 1:
        return False  # one iteration: nothing to run in parallel
    p_o, p_i = sch.split(sch.fuse(h, w), factors=[None, chunk])
    sch.reorder(n, p_o, cc, p_i, cb)
    sch.parallel(sch.fuse(n, p_o))
    for part in sch.loop_partition(cc, factors=sizes[:-1] + [None]):
        for blk in sch.get_child_blocks(part):
            _blocked_plane(sch, sch.get_loops(blk)[-2:], lanes)
    return True


def _computes(stmt) -> bool:
    """Whether block ``stmt`` does float arithmetic on what it reads (a concat's epilogue: BN, ReLU),
    not just select and copy it (index arithmetic is integer)."""
    found = []

    def visit(e):
        if _is_float(e.ty):
            found.append(e)

    kinds = (tirx.Add, tirx.Sub, tirx.Mul, tirx.Div, tirx.Max, tirx.Min, tirx.Select, tirx.Cast)
    tvm_ffi.structural_walk(stmt.body, [(k, visit) for k in kinds], order="post")
    return bool(found)


def _iter_values(sch: s_tir.Schedule, block):
    """The loop expressions block ``block`` is bound to (its realize's ``iter_values``), or None."""
    target, found = sch.get(block), []

    def visit(realize):
        if realize.block.same_as(target):
            found.append(realize.iter_values)

    tvm_ffi.structural_walk(sch.mod["main"].body, [(s_tir.SBlockRealize, visit)], order="post")
    return list(found[0]) if found else None


MIXED_TRANSPOSE_TILES = True
"""Switch: :func:`_tile_transpose` also tiles a nest where, beside the transposed reads (strided
along the innermost loop, contiguous along the next), other reads run along the write (stride 0
or 1 along the innermost: a residual in the output's layout, a broadcast): the NHWC -> NCHW
write-back of :mod:`hetpart.importer.qdq_conv` with the residual add after it (resnet18's
``[3136, 64] -> [64, 56, 56] + x``: 0.24 ms on one core as a flat 16-lane loop, a gather per
lane).  Only whole-vector tiles: a ragged one (14x14, 7x7 planes; 28x28 at 64 int8 lanes) runs its
lanes unvectorised, which measured 1.4-2.5x slower than the flat loop on resnet18's fake-quantising
write-backs (though 2-4.5x faster on mobilenet's: bench/results/cpu-int8-scale-2core.md).  Off: every
read must be transposed (as before)."""

TRANSPOSE_ROW_SPLIT = True
"""Switch: a tiled transpose (:func:`_tile_transpose`) whose parallel loop (the loops outside its
tiles' row loop times the vector chunks of its innermost) has fewer iterations than the target's
cores also splits that row loop into ``ceil(cores / E)`` parts, fused into the parallel loop.
:mod:`hetpart.importer.qdq_conv`'s NCHW -> ``[H*W, C]`` uint8 layout kernels (64 channels: one
64-byte chunk, E = 1; 128 on 28x28: 2; 256 on 14x14: 4) and the 7x7 write-backs ``[49, O] ->
[O, 7, 7]`` (E = 4) ran on 1-4 threads of 16.  Off: the chunks only (as before)."""


def _tile_transpose(sch: s_tir.Schedule, block, lanes: int, cores: int = 1) -> bool:
    """A transpose (each input read with a stride along the innermost loop, whose write
    is contiguous) whose inputs are all contiguous along the loop just outside it, as
    ``lanes x lanes``-ish tiles: the innermost loop split into ``lanes``-wide vectors,
    its outer part moved outside that loop.  A tile then reads ``lanes`` rows of the
    input, each for the whole next loop's extent, while they are in L1, instead of one
    element of every row of a plane per output row; its chunks run in parallel from
    :data:`STRIDED_PARALLEL_MIN_ELEMENTS` outputs (with parts of the row loop where the chunks
    are fewer than ``cores``: :data:`TRANSPOSE_ROW_SPLIT`).  False (nothing changed) where the
    nest is no such transpose or its loops are not bound one-to-one to the block's
    iterators.

    Why: the repeat-KV expand of a decode step's keys, then their ``Transpose`` for
    ``q @ K^T`` (``[1, 4, 2048, 64] -> [1, 32, 64, 2048]``, issue 19), walked the cache
    by slot within each head dim, one cache line per element per output row.

    An innermost extent that is no whole number of vectors (ViT's 197 tokens, whisper's
    1500 frames) is tiled alike when :data:`RAGGED_TRANSPOSE_TILES`: the split's last
    tile is ragged (a bound check on the row) and the ``lanes`` loop is left to LLVM
    rather than vectorised (TVM's VectorizeLoop would scalarise it for the check).
    """
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    extents = [const_extent(sch, lp) for lp in loops]
    values = _iter_values(sch, block)
    if len(loops) < 2 or len(loops) != len(stmt.iter_vars) or None in extents or values is None \
            or any(not v.same_as(sch.get(lp).loop_var) for v, lp in zip(values, loops)):
        return False
    ragged = extents[-1] % lanes != 0
    if (ragged and not (RAGGED_TRANSPOSE_TILES and extents[-1] >= 2 * lanes)) or extents[-2] < 2:
        return False
    inner, outer = stmt.iter_vars[-1].var, stmt.iter_vars[-2].var
    try:
        along_inner, along_outer = strides_along(stmt, inner), strides_along(stmt, outer)
        writes = write_strides_along(stmt, inner)
    except Unknown:
        return False
    if not along_inner or writes != [1] * len(writes) or len(along_outer) != len(along_inner):
        return False
    transposed = [abs(x) > 1 and y == 1 for x, y in zip(along_inner, along_outer)]
    if not all(transposed):  # MIXED_TRANSPOSE_TILES: the others read along the write (a residual) or broadcast
        if not MIXED_TRANSPOSE_TILES or ragged or not any(transposed) \
                or not all(t or abs(x) <= 1 for t, x in zip(transposed, along_inner)):
            return False
    chunks, vec = sch.split(loops[-1], factors=[None, lanes])
    sch.reorder(chunks, loops[-2])
    if not ragged:
        sch.vectorize(vec)
    if math.prod(extents) >= STRIDED_PARALLEL_MIN_ELEMENTS:
        outer = [*loops[:-2], chunks]
        tiles = math.prod(extents[:-2]) * -(-extents[-1] // lanes)
        if TRANSPOSE_ROW_SPLIT and tiles < cores:  # the row loop split too: every core a share
            parts = min(extents[-2], -(-cores // tiles))
            outer.append(sch.split(loops[-2], factors=[parts, None])[0])
        sch.parallel(sch.fuse(*outer))
    return True


NARROW_BYTE_TRANSPOSE = True
NARROW_LANES = 16
"""Whether a transpose that is no tile at its output type's lanes (8-bit: 64, so a row of fewer than
128 channels was no tile) is tried again with :data:`NARROW_LANES` lanes (a float vector's count):
the NCHW -> ``[H*W, C]`` uint8 layout kernel of :mod:`hetpart.importer.qdq_conv` (120 channels on
28x28: a 64-lane flat loop with a div/mod gather per byte, 100 us).  False: as before."""

MERGE_PLANE_TRANSPOSE = True
"""Whether a nest that is no tileable transpose as written, but whose last two iterators
(a plane ``h, w``) every read and write steps through as one (stride along ``h`` = ``W`` x
stride along ``w``), has them merged into one iterator (``transform_block_layout``) and is
then tried again as a transpose (:func:`_tile_transpose`): the NHWC -> NCHW write-back of
an integer conv (:mod:`hetpart.importer.qdq_conv`, ``[H*W, O] -> [1, O, H, W]``) read its
input a cache line per element (64 -> 64 channels on 112x112: 4.8 ms).  False: as before."""


def _plane_width(sch: s_tir.Schedule, block) -> int | None:
    """The width ``W`` of the block's last two iterators where every access steps through them
    as a row-major plane (stride along ``h`` = ``W`` x stride along ``w``) and some read is
    strided along ``w``; None otherwise.  Reads the schedule only."""
    stmt = sch.get(block)
    ivs = stmt.iter_vars
    if len(ivs) < 3 or len(sch.get_loops(block)) != len(ivs):
        return None
    ext = [iv.dom.extent for iv in ivs[-2:]]
    if not all(isinstance(e, tirx.IntImm) for e in ext) or int(ext[1]) < 2 or int(ext[0]) < 2:
        return None
    h, w = ivs[-2].var, ivs[-1].var
    width = int(ext[1])
    try:
        rh, rw = strides_along(stmt, h), strides_along(stmt, w)
        wh, ww = write_strides_along(stmt, h), write_strides_along(stmt, w)
    except Unknown:
        return None
    if not rh or len(rh) != len(rw) or any(a != width * b for a, b in zip(rh, rw)) \
            or any(a != width * b for a, b in zip(wh, ww)) or all(abs(b) <= 1 for b in rw):
        return None
    return width


def _merge_plane(sch: s_tir.Schedule, block) -> bool:
    """Merge the block's last two iterators into one where every access steps through them
    as a row-major plane (:func:`_plane_width`, :data:`MERGE_PLANE_TRANSPOSE`); False (nothing
    changed) otherwise."""
    width = _plane_width(sch, block)
    if width is None:
        return False
    n = len(sch.get(block).iter_vars)
    try:
        sch.transform_block_layout(block, tvm.tirx.IndexMap.from_func(
            lambda *v: [*v[:n - 2], v[n - 2] * width + v[n - 1]], ndim=n))
    except Exception:  # noqa: BLE001 - not a bijective affine layout: left as it was
        return False
    return True


MERGE_PLANE_FLAT = True
"""Whether a plane that :func:`_merge_plane` merged stays merged when the nest is then no tile
(:func:`_tile_transpose` gives up: a ragged plane -- 14x14, 7x7 -- that also reads a per-channel
parameter or a residual, :data:`MIXED_TRANSPOSE_TILES`), for the flat loop the later rules give
it: its transposed reads then index ``x[p, o]``, not ``x[(h*W + w) % (H*W), o]`` of the fused loop.
Measured (``tools/kernel_switch_ab.py``, 1 thread, CPU time, the dev box's 2-core Xeon): ORT-QDQ
resnet18's 256x14x14 write-back of two transposed inputs 0.080 ms merged against 0.095 unmerged; its 4
other and mobilenet's 4 such kernels the same either way (bench/results/cpu-merge-plane-flat-2core.md).  False: the schedule as it was before the
merge (the tile's failure leaves nothing behind)."""


def _merged_plane_tile(sch: s_tir.Schedule, block, lanes: int, cores: int = 1) -> tuple[s_tir.Schedule | None, bool]:
    """``(copy, tiled)``: a copy of ``sch`` with ``block``'s plane merged (:func:`_merge_plane`;
    None where it is no such plane) and whether the merged nest was then tiled as a transpose
    (:func:`_tile_transpose`, which changes nothing where it gives up).  ``sch`` itself is never
    changed, so the caller decides whether a merge without a tile is kept
    (:data:`MERGE_PLANE_FLAT`); every block and loop handle of ``sch`` is valid in the copy."""
    if _plane_width(sch, block) is None:  # decided before copying: most blocks are no plane
        return None, False
    trial = sch.copy()
    name = trial.get(block).name_hint
    if not _merge_plane(trial, block):
        return None, False
    return trial, _tile_transpose(trial, trial.get_sblock(name), lanes, cores)


BLOCKING_TRANSFORM_VECTORS = True
"""Whether an ``NCHW -> NCHW{c}c`` layout transform (:func:`_blocking_transform`) runs in the
output's order, each output vector one channel block of a pixel (a strided gather of ``c``
channels), rather than the plain schedule's: the input's pixels fused and vectorised, so every
vector's output addresses (a scatter ``c`` floats apart) came from a div / mod of the fused
index.  False: as before (A/B runs).  Measured (the dev box's AVX-512 Xeon, 1 thread, CPU
time): resnet50's stem pool output 64x56x56 -> NCHW16c, in whole runs of the model, 0.23 ms
(ONNX Runtime reads the NCHW image in its first conv)."""


def _blocking_transform(sch: s_tir.Schedule, block, lanes: int) -> bool:
    """A copy ``y[n, C // c, h, w, C % c] = x[n, C, h, w]`` (the channel-blocked import's
    transform into ``NCHW{c}c``, ``c`` a whole number of vectors or at most one) scheduled in
    ``y``'s order: ``C`` split into ``C / c`` outside and ``c`` innermost (vectorised; ``lanes``
    wide pieces, the rest unrolled), ``n, C / c, h`` fused into the parallel loop where large
    (:func:`min_parallel`).  False (nothing changed) where the block is no such copy or its loops
    are not bound one-to-one to its iterators."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    values = _iter_values(sch, block)
    extents = [const_extent(sch, lp) for lp in loops]
    if len(loops) != 4 or len(stmt.iter_vars) != 4 or None in extents or values is None \
            or any(not v.same_as(sch.get(lp).loop_var) for v, lp in zip(values, loops)):
        return False
    if len(stmt.reads) != 1 or len(stmt.writes) != 1 or not isinstance(stmt.body, tirx.BufferStore):
        return False
    store = stmt.body
    load = store.value
    n, ch, h, w = (iv.var for iv in stmt.iter_vars)
    if type(load).__name__ not in ("BufferLoad", "TensorLoad") or len(load.indices) != 4 or len(store.indices) != 5 \
            or not all(isinstance(e, tirx.Var) and e.same_as(v) for e, v in zip(load.indices, (n, ch, h, w))):
        return False
    c = store.buffer.shape[4]
    if not isinstance(c, tirx.IntImm):
        return False
    c = int(c)
    nn, a, hh, ww, d = store.indices
    div = isinstance(a, tirx.FloorDiv) and a.a.same_as(ch) and isinstance(a.b, tirx.IntImm) and int(a.b) == c
    mod = isinstance(d, tirx.FloorMod) and d.a.same_as(ch) and isinstance(d.b, tirx.IntImm) and int(d.b) == c
    if not (div and mod and all(isinstance(e, tirx.Var) and e.same_as(v) for e, v in ((nn, n), (hh, h), (ww, w)))
            and extents[1] % c == 0 and (c <= lanes or c % lanes == 0)):
        return False
    co, ci = sch.split(loops[1], factors=[None, c])
    sch.reorder(loops[0], co, loops[2], loops[3], ci)
    if c > lanes:
        outer, ci = sch.split(ci, factors=[None, lanes])
        sch.unroll(outer)
    sch.vectorize(ci)
    if math.prod(extents) >= min_parallel(stmt):
        sch.parallel(sch.fuse(loops[0], co, loops[2]))
    return True


def _permuted_rows(sch: s_tir.Schedule, block, lanes: int) -> bool:
    """A parallel copy that moves contiguous rows to a permuted order (every read
    contiguous along the innermost loop for its whole extent, as the write is, but some
    read moving by another non-zero stride than the write along an outer loop: a head
    split's ``[s, w, h, t, d] <- x[w, t, s*H*D + h*D + d]``), as rows: the longest
    suffix of loops along which every read moves as the write does at every step,
    fused into one loop split into vectors, and only the loops outside it fused into
    the parallel loop.  Each vector's address is then the row's base plus a constant,
    the div/mod of the outer indices computed once a row.  False (nothing changed)
    where the nest is no such copy, stays serial (:func:`min_parallel`: the plain
    schedule keeps its rows as loops of their own then), its loops are not bound
    one-to-one to the block's iterators, or its rows hold no whole vector (4+ lanes).

    Why: the plain schedule (:func:`~hetpart.kernels.analysis.parallel_vectorize`)
    fuses a parallel nest's vector chunks into its parallel loop with the outer loops,
    so each vector's source is a chain of the reshape's and transpose's div/mod on the
    fused index -- Swin-T's split-heads copy at batch 8 cost ~3x ONNX Runtime's
    (:data:`PERMUTED_ROWS`).
    """
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    extents = [const_extent(sch, lp) for lp in loops]
    values = _iter_values(sch, block)
    if len(loops) < 2 or len(loops) != len(stmt.iter_vars) or None in extents or values is None \
            or any(not v.same_as(sch.get(lp).loop_var) for v, lp in zip(values, loops)) \
            or not lane_safe(stmt) or not stmt.reads or math.prod(extents) < min_parallel(stmt):
        return False
    try:
        k = _row_suffix(stmt, extents)
        permuted = k is not None and k > 0 and any(r not in (0, w) for iv in stmt.iter_vars[:k]
                                 for r in strides_along(stmt, iv.var) for w in write_strides_along(stmt, iv.var))
    except Unknown:
        return False
    width = fitting_lanes(math.prod(extents[k:]), lanes) if permuted else None
    if width is None:
        return False
    row = sch.fuse(*loops[k:]) if k < len(loops) - 1 else loops[k]
    _, vec = sch.split(row, factors=[None, width])
    sch.vectorize(vec)
    sch.parallel(sch.fuse(*loops[:k]) if k > 1 else loops[0])
    return True


def _row_suffix(stmt, extents) -> int | None:
    """The first of the block's innermost loops along which every read moves at every
    step by the write's stride (the whole innermost loop by one element), or None where
    the innermost loop is no such row.  :class:`Unknown` from :mod:`..access`."""
    def keeps_up(j: int) -> bool:
        var = stmt.iter_vars[j].var
        if extents[j] < 2:
            return True
        writes = write_strides_along(stmt, var)
        return len(set(writes)) == 1 and moves_by(stmt, var, writes[0])

    inner, steps = stmt.iter_vars[-1].var, min(extents[-1], MOVES_BY_STEPS)
    if write_strides_along(stmt, inner) != [1] * len(stmt.writes) or unit_run(stmt, inner, steps) < steps:
        return None
    k = len(extents) - 1
    while k > 0 and keeps_up(k - 1):
        k -= 1
    return k


def min_parallel(stmt) -> int:
    """The outputs from which the nest of block ``stmt`` (inlined) runs in parallel:
    :data:`STRIDED_PARALLEL_MIN_ELEMENTS` for a strided read (or write: :data:`STRIDED_WRITES_PARALLEL`),
    :data:`HEAVY_PARALLEL_MIN_ELEMENTS` for a quantisation, else
    :data:`~hetpart.kernels.analysis.PARALLEL_MIN_ELEMENTS`."""
    if _strided(stmt):
        return STRIDED_PARALLEL_MIN_ELEMENTS
    if _quantising(stmt):
        return HEAVY_PARALLEL_MIN_ELEMENTS
    return PARALLEL_MIN_ELEMENTS


def _quantising(stmt) -> bool:
    """Whether block ``stmt`` rounds a float (``round``/``nearbyint``) or casts a float
    to an integer type: per-element arithmetic, not just a copy."""
    found = []

    def visit_call(e):
        if str(getattr(e.op, "name", "")).rsplit(".", 1)[-1] in ("round", "nearbyint"):
            found.append(e)

    def visit_cast(e):
        if _is_float(e.value.ty) and not _is_float(e.ty):
            found.append(e)

    tvm_ffi.structural_walk(stmt.body, [(tvm.ir.Call, visit_call), (tirx.Cast, visit_cast)], order="post")
    return bool(found)


def _is_float(dtype) -> bool:
    return str(dtype).startswith(("float", "bfloat"))


STRIDED_WRITES_PARALLEL = True
"""Whether a nest that *writes* with a stride along its innermost iterator (a layout transform
to ``NCHW{c}c``, which TVM legalises as a loop over the source's NCHW indices scattering each
element ``c`` floats apart) takes :data:`STRIDED_PARALLEL_MIN_ELEMENTS` as a strided read does.
Before: the contiguous threshold (256 Ki) -- densenet121's and googlenet's stem-pool transform
(64x56x56, 196 Ki elements, 0.22-0.24 ms on one AVX-512 core) ran serial at 16 threads
(bench/results/cpu-blocked-parallel-audit.md)."""


def _strided(stmt) -> bool:
    try:
        if reads_strided(stmt):
            return True
        if not STRIDED_WRITES_PARALLEL:
            return False
        inner = _innermost_spatial(stmt)
        return inner is not None and any(abs(s) > 1 for s in write_strides_along(stmt, inner))
    except Exception:  # noqa: BLE001 - an index the analysis cannot read: the default threshold
        return False


def _innermost_spatial(stmt):
    """The innermost data-parallel iterator of block ``stmt`` of extent > 1, or None."""
    for iv in reversed(list(stmt.iter_vars)):
        if iv.iter_type == tirx.IterVar.DataPar and isinstance(iv.dom.extent, tirx.IntImm) \
                and int(iv.dom.extent) > 1:
            return iv.var
    return None
