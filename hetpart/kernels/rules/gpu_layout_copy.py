"""GPU rule: layout copies -- a transpose, reshape, slice or squeeze of one input, with at most
an element-wise epilogue (a cast, an add of a tensor laid out as the output or broadcast to it,
a multiply by a constant) -- as a vectorised copy or as the classic tiled transpose through
shared memory.

Why (issue 17; H100, ViT-B/16 batch 32 bf16, ``bench/results/gpu-kernel-profile-vit-b32-bf16-161-nvidia-h100.md``,
DistilBERT's in ``gpu-kernel-profile-distilbert-b32-bf16-161-nvidia-h100.md``): dlight's ``Fallback``, the rule
these functions reached, gives every output element a thread of a 1024-thread block, one 4-byte
load each, whatever the input's layout.  ViT's head split ``fused_reshape1_expand_dims_transpose2_squeeze``
(the qkv projection ``[197, 32, 2304]`` float32 to ``[3, 197, 32, 768]``: 58 MB read and 58 MB
written, ~40 us at ~3 TB/s) ran 68.2 us x 12 per forward, its merge ``fused_reshape5_transpose6_add4``
26.7 us x 12, the K^T slices feeding flash attention 22-30 us x 12 each, DistilBERT's K^T head split
``fused_reshape3_transpose1`` (a strided read: one element per 32-byte sector per thread) 19.2 us x 6
and its Q/V split ``fused_reshape3_transpose`` 9.5 us x 12.

Here, for a function whose blocks all inline into one spatial block that writes the output in
its own index order and reads exactly one buffer in another order (the *moved* input: its index
is not the output's iterators in order), the other reads laid out as the output (or broadcast),
the value built from loads, casts and ``+ - * /``, min, max, every buffer float32, bf16 or fp16
(:func:`match`):

* ``vector`` -- where every access is proved (``access.run_kind``: TVM's arithmetic, every value
  of the other iterators) to move by one element per step of the output's innermost iterator over
  aligned groups of ``lanes`` -- or not to move at all (a broadcast) --, ``lanes`` the most a 16-byte
  access of the widest dtype holds (4 float32, 8 bf16): groups of ``lanes`` outputs, one per
  thread, :data:`THREADS` threads a block, each group a vector load per input and a vector store
  (``float4``).  The input's innermost axis is the output's (a permutation of outer axes: ViT's head
  split and merge, DistilBERT's Q/V split, the merge that narrows the context to bf16).
* ``tile`` -- where the moved input is contiguous along another output axis ``a`` (its first
  :data:`TILE` steps move by one element) and not along the innermost: tiles of :data:`TILE` x
  :data:`TILE` (``a`` x innermost) per block of :data:`TILE` x :data:`TILE_ROWS` threads, the
  input's tile read along ``a`` (coalesced) into shared memory whose rows are padded to
  ``TILE + 1`` elements (no bank conflicts when read down a column), then written along the
  output's innermost axis (coalesced), the epilogue applied as it is written.  Ragged edges (197
  tokens) are predicated.  Declined when TVM's region of the tile is not ``TILE x TILE`` (an index
  the analysis cannot bound) or either axis is shorter than :data:`MIN_TILE_EXTENT`.

Anything else -- reductions, gathers (an index that loads), concatenations and selects, element-wise
functions without a moved input, a copy whose innermost axis is the input's but not vectorisable --
returns None and stays dlight's ``Fallback``.  Before scheduling, the inlined block's indices are
simplified with the iterators' ranges (``s_tir.transform.StmtSimplify``: an inlined reshape's
``floordiv``/``floormod`` chains), so TVM's region analysis bounds the tile.

Switch: :data:`LAYOUT_COPY` (off: the rule returns None, every function scheduled as before); with
it, :data:`VECTOR_ELEMENTWISE` (off) takes element-wise functions (a cast) as ``vector`` copies too.

Invariant: every output element is the same expression of the same input elements (a copy, the
same cast and epilogue arithmetic per element); only the loop nest, the threads and the staging
through shared memory change.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir import TensorLoad
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from .. import access
from ..analysis import is_gpu

LAYOUT_COPY = False
"""Off until the device A/B measures it (built and checked without a GPU, session 58).  Decided by
``tools/gpu_model_switch_ab.py vit_b_16-b32.onnx --precision bf16 --before
hetpart.kernels.rules.gpu_layout_copy.LAYOUT_COPY=0 --after hetpart.kernels.rules.gpu_layout_copy.LAYOUT_COPY=1``
(and DistilBERT b32 the same).  False: these functions stay dlight's ``Fallback`` (a 1024-thread
block of scalar copies), generated code as before the rule existed."""

VECTOR_ELEMENTWISE = False
"""With :data:`LAYOUT_COPY`, also element-wise functions of the same form but without a moved input
(every load laid out as the output or broadcast: a cast -- flash attention's Q and V narrowings,
``flash_in``, 15 us x 24 per ViT-B/16 b32 bf16 forward on the H100 -- an add of a table) as the
``vector`` plan, the first load along the output's innermost axis taking the moved input's place.
Off until measured: ``tools/gpu_model_switch_ab.py vit_b_16-b32.onnx --precision bf16 --before
...gpu_layout_copy.LAYOUT_COPY=0 --before ...VECTOR_ELEMENTWISE=0 --after ...LAYOUT_COPY=1 --after
...VECTOR_ELEMENTWISE=1 --each`` (its ``-VECTOR_ELEMENTWISE`` variant: layout copies alone).  Off,
those functions stay ``Fallback``'s."""

THREADS = 256
"""Threads per block of a ``vector`` copy, one group of lanes each."""

VECTOR_BYTES = 16
"""Bytes of the widest access a thread makes (``float4``, CUDA's widest load)."""

TILE = 32
"""Edge of a ``tile`` plan's tile (elements of ``a`` x the innermost axis): a warp's row."""

TILE_ROWS = 8
"""Threads of a ``tile`` block along ``threadIdx.y`` (``TILE`` x ``TILE_ROWS`` = 256; each
thread moves ``TILE / TILE_ROWS`` elements in and out)."""

MIN_TILE_EXTENT = 16
"""Least extent of the two tiled axes: shorter ones leave most of a tile idle."""

DTYPES = ("float32", "bfloat16", "float16")
"""Dtypes of the buffers a copy this rule takes may read and write (the activations of the
transformer layouts it is for; integer and bool copies stay ``Fallback``'s)."""

_ARITHMETIC = (tirx.Add, tirx.Sub, tirx.Mul, tirx.Div, tirx.Min, tirx.Max)
_LEAVES = (tirx.IntImm, tirx.FloatImm)


@dataclass(frozen=True)
class Plan:
    """What :func:`match` found: ``kind`` ``"vector"`` (``lanes`` per thread) or ``"tile"``
    (``axis``: the output axis along which the moved input is contiguous); ``moved``: the moved
    input's buffer."""

    kind: str
    lanes: int = 1
    axis: int = -1
    moved: object = None


class GpuLayoutCopy(ScheduleRule):
    """Layout copies as vectorised copies or tiled transposes (module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not (LAYOUT_COPY and is_gpu(target) and isinstance(func, tirx.PrimFunc)):
            return None
        found = match(func)
        if found is None:
            return None
        sch, block, plan = found
        try:
            if plan.kind == "vector":
                return _vector(sch, block, plan)
            return _tile(sch, block, plan)
        except Exception:  # noqa: BLE001 - a primitive TVM refuses: leave the function to the next rule
            return None


def match(func: tirx.PrimFunc):
    """``(schedule, block, Plan)`` for a function this rule takes (the module doc's conditions),
    the schedule with every block inlined into the one output block and its indices simplified;
    None otherwise."""
    try:
        found = _single_block(func)
    except Exception:  # noqa: BLE001 - a block that will not inline: not a layout copy
        return None
    if found is None:
        return None
    sch, blk = found
    block = sch.get(blk)
    moved = _moved_load(sch, blk)
    if moved is None:
        return None
    lanes = _lanes(block, moved)
    if lanes > 1:
        return sch, blk, Plan("vector", lanes=lanes, moved=moved.source)
    if _laid_out_as_output(moved, [iv.var for iv in block.iter_vars]):
        return None  # element-wise (VECTOR_ELEMENTWISE): no transposed tile to make
    axis = _tile_axis(block, moved)
    if axis is None:
        return None
    return sch, blk, Plan("tile", axis=axis, moved=moved.source)


# --- recognition ----------------------------------------------------------------------------------
def _single_block(func: tirx.PrimFunc):
    """``(schedule, block)``: ``func`` with every block but the last inlined into its consumers
    and the indices simplified, when one spatial block of static extents is left whose loops bind
    its iterators in order and whose body stores the function's output at its iterators (a unit
    iterator may be the constant 0 in both); else None."""
    # A deep copy: the simplified module's schedule below would otherwise mutate statements it
    # shares with ``func`` in place (seen with TVM 0.27: a single-block function came back scheduled).
    sch = s_tir.Schedule(copy.deepcopy(func))
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    if not blocks:
        return None
    for blk in blocks:
        if any(iv.iter_type != tirx.IterVar.DataPar or not isinstance(iv.dom.extent, tirx.IntImm)
               for iv in sch.get(blk).iter_vars):
            return None
    for blk in blocks[:-1]:
        sch.compute_inline(blk)  # raises where it cannot: the caller declines
    sch = s_tir.Schedule(s_tir.transform.StmtSimplify()(sch.mod))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if len(blocks) != 1:
        return None
    blk = blocks[0]
    block = sch.get(blk)
    store = block.body
    if not isinstance(store, tirx.BufferStore) or block.init is not None or block.alloc_buffers:
        return None
    ivs = block.iter_vars
    if len(store.indices) != len(ivs) or not all(_is_iterator(i, iv) for i, iv in zip(store.indices, ivs)):
        return None
    loops = sch.get_loops(blk)
    realize = sch.get(loops[-1]).body if loops else None
    if (len(loops) != len(ivs) or not isinstance(realize, s_tir.SBlockRealize)
            or not all(_is_iterator(val, iv, sch.get(lp).loop_var)
                       for val, iv, lp in zip(realize.iter_values, ivs, loops))
            or not _is_one(realize.predicate)):
        return None
    return sch, blk


def _is_iterator(expr, iv, var=None) -> bool:
    """True when ``expr`` is ``var`` (by default the iterator ``iv``'s own variable), or 0 where
    ``iv``'s extent is 1 (a unit axis the simplifier substituted: batch 1)."""
    if expr.same_as(iv.var if var is None else var):
        return True
    return int(iv.dom.extent) == 1 and isinstance(expr, tirx.IntImm) and int(expr.value) == 0


def _moved_load(sch: s_tir.Schedule, blk):
    """The block's one load that is not laid out as the output (the moved input), when the value
    is loads, casts and plain arithmetic, every buffer of a :data:`DTYPES` dtype, no index loads,
    and no other load reads the moved buffer; else None."""
    block = sch.get(blk)
    value = block.body.value
    if not _plain(value) or str(block.body.buffer.dtype) not in DTYPES:
        return None
    loads = _loads(value)
    ivars = [iv.var for iv in block.iter_vars]
    moved = [ld for ld in loads if not _laid_out_as_output(ld, ivars)]
    if not moved and VECTOR_ELEMENTWISE:  # element-wise: the first load along the output's innermost axis
        moved = [ld for ld in loads if ld.indices and ld.indices[-1].same_as(ivars[-1])][:1]
    if len(moved) != 1:
        return None
    found = moved[0]
    if any(ld is not found and ld.source.same_as(found.source) for ld in loads):
        return None
    if any(str(ld.source.dtype) not in DTYPES or _loads_in(ld.indices) for ld in loads):
        return None
    return found


def _plain(expr) -> bool:
    """True when ``expr`` is loads, constants, casts and ``+ - * /``, min, max only."""
    if isinstance(expr, TensorLoad) or isinstance(expr, _LEAVES):
        return True
    if isinstance(expr, tirx.Cast):
        return _plain(expr.value)
    if isinstance(expr, _ARITHMETIC):
        return _plain(expr.a) and _plain(expr.b)
    return False


def _loads(expr) -> list:
    """The loads of ``expr`` (post order)."""
    found: list = []
    tvm_ffi.structural_walk(expr, (TensorLoad, found.append), order="post")
    return found


def _loads_in(indices) -> bool:
    return any(_loads(i) for i in indices)


def _laid_out_as_output(load, ivars) -> bool:
    """True when each index of ``load`` is a constant or one of the output's iterators, those in
    the output's order: an input laid out as the output, or broadcast to it."""
    last = -1
    for index in load.indices:
        if isinstance(index, tirx.IntImm):
            continue
        pos = next((k for k, v in enumerate(ivars) if index.same_as(v)), None)
        if pos is None or pos <= last:
            return False
        last = pos
    return True


def _lanes(block, moved) -> int:
    """The most lanes (a power of two, at most :data:`VECTOR_BYTES` of the widest dtype) for
    which the store and ``moved`` move in aligned runs along the innermost iterator and every
    other load does or stays put (``access.run_kind``); 1 where there are none."""
    inner = block.iter_vars[-1].var
    others = [ld for ld in _loads(block.body.value) if ld is not moved]
    widest = max(_bytes(a.source.dtype) for a in [moved, *others])
    lanes = VECTOR_BYTES // max(widest, _bytes(block.body.buffer.dtype))
    while lanes > 1:
        if (access.run_kind(block, block.body, inner, lanes) == "run"
                and access.run_kind(block, moved, inner, lanes) == "run"
                and all(access.run_kind(block, ld, inner, lanes) is not None for ld in others)):
            return lanes
        lanes //= 2
    return 1


def _tile_axis(block, moved) -> int | None:
    """The output axis (not the innermost) along which ``moved`` is contiguous for its first
    ``min(TILE, extent)`` steps, when the innermost axis moves it by more than one element and
    both extents are at least :data:`MIN_TILE_EXTENT`; else None."""
    ivs = block.iter_vars
    inner = ivs[-1]
    if int(inner.dom.extent) < MIN_TILE_EXTENT or len(ivs) < 2:
        return None
    try:
        if access.steps_along(block, moved, inner.var, 2) == [1]:
            return None  # contiguous along the innermost axis: a copy, not a transpose
        for pos in range(len(ivs) - 2, -1, -1):
            extent = int(ivs[pos].dom.extent)
            if extent < MIN_TILE_EXTENT:
                continue
            steps = access.steps_along(block, moved, ivs[pos].var, min(TILE, extent))
            if all(s == 1 for s in steps):
                return pos
    except access.Unknown:
        return None
    return None


def _bytes(dtype) -> int:
    d = tvm_ffi.dtype(str(dtype))
    return max(1, d.bits * d.lanes // 8)


def _is_one(expr) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == 1


# --- schedules ------------------------------------------------------------------------------------
def _vector(sch: s_tir.Schedule, blk, plan: Plan) -> s_tir.Schedule:
    """``lanes`` consecutive outputs per thread as one vector access per buffer, :data:`THREADS`
    threads a block over the fused outer loops."""
    loops = sch.get_loops(blk)
    outer, lanes = sch.split(loops[-1], [None, plan.lanes])
    fused = sch.fuse(*loops[:-1], outer) if len(loops) > 1 else outer
    bx, tx = sch.split(fused, [None, THREADS])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.vectorize(lanes)
    return sch


def _tile(sch: s_tir.Schedule, blk, plan: Plan) -> s_tir.Schedule | None:
    """The tiled transpose: a block per ``TILE x TILE`` tile of (``plan.axis``, innermost), the
    moved input's tile staged in shared memory with padded rows (an axis shorter than ``TILE``
    predicated); None when TVM's region of the tile is larger than the tile."""
    loops = sch.get_loops(blk)
    last = len(loops) - 1
    tile = math.prod(min(TILE, int(sch.get(loops[k]).extent)) for k in (plan.axis, last))  # a short axis: its extent
    a_out, a_in = sch.split(loops[plan.axis], [None, TILE])
    n_out, n_in = sch.split(loops[last], [None, TILE])
    others = [lp for k, lp in enumerate(loops) if k not in (plan.axis, last)]
    sch.reorder(*others, a_out, n_out, a_in, n_in)
    bx = sch.fuse(*others, a_out, n_out)
    sch.bind(bx, "blockIdx.x")
    _, rows = sch.split(a_in, [None, TILE_ROWS])
    sch.bind(rows, "threadIdx.y")
    sch.bind(n_in, "threadIdx.x")
    read = next(k for k, r in enumerate(sch.get(blk).reads) if r.source.same_as(plan.moved))
    cache = sch.cache_read(blk, read, "shared")
    sch.compute_at(cache, bx)
    staged = sch.get_loops(cache)[1:]
    extents = [sch.get(lp).extent for lp in staged]
    if not all(isinstance(e, tirx.IntImm) for e in extents) or math.prod(int(e) for e in extents) != tile:
        return None  # the region is not the tile: an index TVM's analysis could not bound
    fused = sch.fuse(*staged) if len(staged) > 1 else staged[0]
    _, ty, tx = sch.split(fused, [None, TILE_ROWS, TILE])
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    ndim = len(sch.get(cache).writes[0].region)
    if ndim >= 2:
        sch.storage_align(cache, 0, ndim - 2, TILE, 1)  # rows of TILE + 1: a column read hits 32 banks
    return sch
