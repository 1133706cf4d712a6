"""GPU rule: reductions of a few terms per output -- depthwise convolutions, average
pooling -- one thread per output, the terms summed serially in a register.

dlight's ``GeneralReduction`` (the rule these functions reached before) binds the
*reduction* to the 256 threads of a block and gives each output a block of its own:
a depthwise 3x3 convolution runs 9 multiply-adds on 256 threads with a cross-thread
sum, one block per output pixel.  MobileNet-v2 at batch 32 launched ~10^8 such
blocks (77.5 ms on the H200 against PyTorch's 2.5 ms); Inception-v3's padded 3x3
average pools the same (75.0 against 7.0).

Here, for a function with one reduction block of at most :data:`MAX_TERMS` terms per
output that slides a window over its input (an index moves with an output and a
reduction iterator, :func:`_slides`):

1. every producer of the reduction (the padding, a widening of a bf16/fp16 weight) is
   inlined into it, so each term loads straight from the function's inputs, its
   bounds test in the load;
2. the element-wise blocks after it (bias, relu/clip, the pooling's division, ...)
   are inlined into the last one, which writes the output (any other element-wise
   block, e.g. a scalar the epilogue tests, inlined where it is read); with none, a
   write-back from a register is added;
3. that output block's loops are fused and cut into blocks of :data:`THREADS`
   threads, consecutive threads on consecutive outputs (coalesced along the image
   rows); the reduction is computed inside each thread, into a register, its
   :data:`MAX_TERMS` or fewer terms unrolled.

The grid has one thread per output, so it fills the GPU whenever the outputs do
(a 32x96x112x112 depthwise layer: 150528 blocks of 256 on 132 SMs).  Where 256-thread
blocks would give fewer than :data:`MIN_BLOCKS_PER_SM` blocks per SM (of the build's
``KernelOptions.sm_count``), the blocks are smaller (128, then 64 threads:
:func:`threads_for`) -- EfficientNet-B0's 672x7x7 depthwise layer at batch 1 is 129
blocks of 256 on 132 SMs, 515 of 64.

Batch 1 too (:data:`MIN_BATCH`): there dlight's ``GeneralReduction`` had given each
output pixel a 256-thread block as well (EfficientNet-B0: ~2.3e6 such blocks per
image, ConvNeXt-T's 7x7 layers ~2.1e6; ``bench/results/gpu-b1-static.md``).
Returns None for anything else: more or fewer than one reduction block, dynamic or
longer reductions, producers or consumers that do not inline (or leave more than one
output block), an output block that reads more than one reduced value per thread.

Invariant: each output is the same sum (max, ...) of the same terms in the same
order; only the loop nest and where the partial value lives change.
"""

from __future__ import annotations

import math

import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import is_gpu
from ..options import DEFAULT, DEFAULT_SM_COUNT, KernelOptions

MAX_TERMS = 64
"""Most terms per output this rule reduces serially in one thread (a 7x7 window is
49); longer reductions are the reduction rules' (threads cooperating on each)."""

THREADS = 256
"""Threads per block, one output each, where the grid still fills the GPU."""

SMALL_THREADS = (128, 64)
"""Smaller blocks tried in turn where :data:`THREADS` gives too few blocks."""

MIN_BLOCKS_PER_SM = 2
"""Blocks per SM below which a smaller block is tried (:func:`threads_for`)."""

MIN_BATCH = 1
"""Smallest leading spatial extent (batch) the rule takes.  It was 2 (batch 1 kept
dlight's ``GeneralReduction``: a 256-thread block per output pixel, the same schedule
that made batch 32 30x slower than PyTorch) until the batch-1 static analysis
(``tools/gpu_static_kernels.py``) found the same blocks-per-output there."""


def threads_for(outputs: int, sm_count: int = DEFAULT_SM_COUNT) -> int:
    """Threads per block for ``outputs`` outputs, one thread each: :data:`THREADS`,
    unless that gives fewer than :data:`MIN_BLOCKS_PER_SM` blocks per SM; then the
    first of :data:`SMALL_THREADS` that does, else the smallest of them."""
    want = MIN_BLOCKS_PER_SM * sm_count
    for threads in (THREADS, *SMALL_THREADS):
        if math.ceil(outputs / threads) >= want:
            return threads
    return SMALL_THREADS[-1]


class GpuWindowReduction(ScheduleRule):
    """Short reductions (depthwise convolution, pooling) one thread per output (module
    docstring), block sizes for the build's ``options.sm_count``."""

    def __init__(self, options: KernelOptions = DEFAULT):
        self.options = options

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_gpu(target) or not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        red = _single_short_reduction(sch)
        if red is None:
            return None
        try:
            if not _inline_producers(sch, red):
                return None
            out = _output_block(sch, red)
            if out is None:
                return None
            return sch if _bind(sch, red, out, self.options.sm_count) else None
        except Exception:  # noqa: BLE001 - a primitive TVM refuses: leave the function to the next rule
            return None


def _single_short_reduction(sch: s_tir.Schedule):
    """The function's one reduction block, when it has static extents, at most
    :data:`MAX_TERMS` terms per output and a leading spatial extent of at least
    :data:`MIN_BATCH`; else None."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks
                  if any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return None
    red = reductions[0]
    ivs = sch.get(red).iter_vars
    if not ivs or not all(isinstance(iv.dom.extent, tirx.IntImm) for iv in ivs):
        return None
    if any(iv.iter_type not in (tirx.IterVar.DataPar, tirx.IterVar.CommReduce) for iv in ivs):
        return None
    terms = math.prod(int(iv.dom.extent) for iv in ivs if iv.iter_type == tirx.IterVar.CommReduce)
    if terms > MAX_TERMS:
        return None
    if ivs[0].iter_type != tirx.IterVar.DataPar or int(ivs[0].dom.extent) < MIN_BATCH:
        return None
    if len(sch.get(red).writes) != 1 or not _slides(sch.get(red)):
        return None
    return red


def _slides(block) -> bool:
    """True when ``block`` reads a buffer at a region that moves with both an output
    and a reduction iterator (``oh * stride + ry``): a window sliding over an image,
    as in a convolution or a pool -- not a reduction over a whole axis."""
    spatial = [iv.var for iv in block.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [iv.var for iv in block.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
    for read in block.reads:
        for rng in read.region:
            used = []
            tvm_ffi.structural_walk(rng.min, (tirx.Var, used.append), order="post")
            if _any_of(used, spatial) and _any_of(used, reduce):
                return True
    return False


def _any_of(found: list, wanted: list) -> bool:
    return any(v.same_as(w) for v in found for w in wanted)


def _inline_producers(sch: s_tir.Schedule, red) -> bool:
    """Inline every producer chain of ``red`` into it; False when one will not inline
    (a reduction feeding it, say)."""
    todo = list(sch.get_producers(red))
    while todo:
        producer = todo.pop()
        more = list(sch.get_producers(producer))
        sch.compute_inline(producer)
        todo.extend(more)
    return not sch.get_producers(red)


def _output_block(sch: s_tir.Schedule, red):
    """The block that writes the function's output, once every other element-wise
    block (the epilogue after ``red``, scalars it reads) is inlined into its
    consumers; a register write-back is added when ``red`` writes the output itself.
    None when a block will not inline or more than one output block is left."""
    root = sch.get_sblock("root")
    for blk in sch.get_child_blocks(root):
        if sch.get(blk).same_as(sch.get(red)) or not sch.get_consumers(blk):
            continue
        sch.compute_inline(blk)  # raises where it cannot: the caller declines
    rest = [b for b in sch.get_child_blocks(root) if not sch.get(b).same_as(sch.get(red))]
    if not rest:
        return sch.cache_write(red, 0, "local")  # the write-back block
    if len(rest) != 1 or any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(rest[0]).iter_vars):
        return None
    return rest[0]


def _bind(sch: s_tir.Schedule, red, out, sm_count: int = DEFAULT_SM_COUNT) -> bool:
    """One thread per output of ``out``, :func:`threads_for` a block, ``red`` computed in
    each thread's register; False when a thread would compute more than one reduced
    value (``out`` reads ``red`` at more than one point)."""
    loops = sch.get_loops(out)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = sch.get(fused).extent
    if not isinstance(extent, tirx.IntImm):
        return False
    bx, tx = sch.split(fused, [None, threads_for(int(extent), sm_count)])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.compute_at(red, tx, preserve_unit_loops=True)
    sch.set_scope(red, 0, "local")
    inner = sch.get_loops(red)[2:]
    extents = [sch.get(lp).extent for lp in inner]
    if not all(isinstance(e, tirx.IntImm) for e in extents):
        return False
    terms = math.prod(int(iv.dom.extent) for iv in sch.get(red).iter_vars
                      if iv.iter_type == tirx.IterVar.CommReduce)
    if math.prod(int(e) for e in extents) != terms:
        return False  # more than one reduced value per thread
    for lp in inner:
        if int(sch.get(lp).extent) > 1:
            sch.unroll(lp)
    return True
