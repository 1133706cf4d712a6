"""GPU rule: *split-K* for contractions whose output is too small to fill the GPU.

A convolution taken as an implicit GEMM (``M = n*oh*ow``, ``N = oc``, ``K =
ic*kh*kw``; see :mod:`.gpu_conv2d`) or a plain matmul is tiled by dlight's ``Matmul``
into 32x64 output tiles, one thread block each, every block looping serially over
all of K.  ResNet-50's late 3x3 layers have tiny outputs and long K (512ch 7x7: M =
49, N = 512, K = 4608 -> 16 blocks on 132 SMs, 288 serial k-steps each): the GPU
idles.  This rule cuts K into S chunks and gives each chunk its own blocks:

1. normalise the contraction to ``C[b, I, J] += A[b, I, K] * B[b, J, K]``
   (:func:`.gpu_gemm.as_normal_gemm`: a convolution's windowed operand first
   ``reindex``-ed, padding inlined into it), padded to whole tiles;
2. split K into (S, K/S) and ``rfactor`` the S loop: kernel 1 computes S partial
   products ``P[s, b, I, J]`` (a global buffer), chunk ``s`` on ``blockIdx.z``,
   tiled through shared memory with a 4x4 register tile per thread;
3. kernel 2, one thread per output element, sums the S partials in a register and
   applies the fused element-wise epilogue (bias, relu, residual add ...), which is
   inlined into it -- at batch 1 one that reads the sum twice (GELU, SiLU) too: its
   blocks are inlined into the output block first (:func:`inline_epilogue`; until
   then such a function went to dlight's un-split ``Matmul``: ConvNeXt-T's and Swin-T's
   last-stage MLP ``49 x 768 -> 3072`` with GELU, 96 blocks with 12896 serial stores
   per thread; :data:`FORK_EPILOGUE_MAX_BATCH`; with TF32 on, batch-1 matmuls like that one
   are :class:`.gpu_tensor_core.GpuTensorCoreSplitK`'s, which runs first).

S (:func:`split_factor`) is chosen so that the grid holds at least
``TARGET_WAVES`` blocks per SM while every chunk keeps ``MIN_K_CHUNK`` or more of K;
when the un-split grid already has a block per SM, or K is too short to split, the
rule returns None and the next rule (the un-split path) runs, so nothing else
changes.  The rule also returns None for anything it does not recognise (dynamic
shapes, non-float32, depthwise/grouped convolutions, epilogues that cannot be
inlined).  :class:`~hetpart.kernels.options.KernelOptions` ``split_k="off"`` switches it
off (for A/B timing); its ``sm_count`` is the SM count the grid is sized for.

Invariant: each output is the same sum of the same products; only the order of the
floating-point additions changes (S partial sums added at the end).
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import consumer_chain, is_gpu, largest_divisor
from ..options import DEFAULT, KernelOptions
from ..register_tile import LAYOUT_REWRITE_PREPROC
from .gpu_gemm import as_normal_gemm, inline_producers

TARGET_WAVES = 2
"""Blocks per SM the split aims for: a 128-thread block cannot hide memory latency
alone on an SM, two begin to."""

MIN_K_CHUNK = 256
"""Shortest K chunk worth a thread block: below it the partial sums written and read
back (S*M*N floats) cost more than the k-loop they save."""

# Tile of kernel 1: a block computes TILE_M x TILE_N outputs with THREADS_M x
# THREADS_N threads, each a MICRO x MICRO register tile, K in steps of K_STEP staged
# through shared memory.  The same shape as dlight's CUDA Matmul config, so the split
# is the only change against the un-split path.
THREADS_M, THREADS_N, MICRO, K_STEP, VEC = 8, 16, 4, 16, 2
TILE_M, TILE_N = THREADS_M * MICRO, THREADS_N * MICRO
UNROLL = 256

EPILOGUE_THREADS = 256
"""Threads per block of kernel 2 (at most; a divisor of the output count, so no
thread runs past the end)."""


def split_factor(batch: int, m: int, n: int, k: int, sms: int = DEFAULT.sm_count) -> int:
    """How many K chunks to compute in parallel for a ``batch`` x (M x N x K) GEMM
    tiled TILE_M x TILE_N; 1 means "do not split".

    Splits only when the un-split grid has fewer blocks than ``sms``.  S divides the
    number of K_STEP steps (no chunk is ragged) with K/S >= MIN_K_CHUNK; the smallest
    such S that reaches TARGET_WAVES blocks per SM, else the largest allowed.
    """
    blocks = batch * math.ceil(m / TILE_M) * math.ceil(n / TILE_N)
    if blocks >= sms:
        return 1
    steps = math.ceil(k / K_STEP)
    allowed = [s for s in range(2, steps + 1) if steps % s == 0 and steps // s * K_STEP >= MIN_K_CHUNK]
    if not allowed:
        return 1
    for s in allowed:
        if blocks * s >= TARGET_WAVES * sms:
            return s
    return allowed[-1]


class GpuSplitKGemm(ScheduleRule):
    """Split-K for starved convolutions (implicit GEMM) and matmuls (module docstring).

    ``options``: ``sm_count`` is the SM count the grid is sized for; ``split_k``
    says whether plain matmuls are split too (``"all"``), only convolutions
    (``"conv"``), or nothing (``"off"``).
    """

    def __init__(self, options: KernelOptions = DEFAULT):
        self.sms = options.sm_count
        self.mode = options.split_k

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        gemm = normal_gemm_for(func, target, self.mode)
        if gemm is None:
            return None
        return split_gemm(gemm, split_factor(*gemm.shape, sms=self.sms),
                          fork_epilogue=0 < images(func) <= FORK_EPILOGUE_MAX_BATCH)


FORK_EPILOGUE_MAX_BATCH = 1
"""Images (the output's leading extent) up to which an epilogue that reads the sum
twice is taken (:func:`inline_epilogue`): batch 1 is where such functions were
starved (ConvNeXt-T's, Swin-T's last-stage GELU MLP: 96 blocks, un-split); at batch
32 the functions it would add (EfficientNet-B0's SE FCs on 1-2 blocks, MobileNet-v3's
classifier) keep their measured schedules until it is measured there."""


def normal_gemm_for(func: tirx.PrimFunc, target: Target, mode: str):
    """``func`` in normal GEMM form (``as_normal_gemm``) where a split-K rule in ``mode``
    (``KernelOptions.split_k``: ``"off"``, ``"conv"``, ``"all"``) applies on ``target``
    (CUDA only; plain matmuls only under ``"all"``), else None."""
    if mode == "off" or not is_gpu(target) or target.kind.name != "cuda":
        return None
    return as_normal_gemm(func, plain=mode == "all")


def images(func: tirx.PrimFunc) -> int:
    """The leading extent of ``func``'s output (a convolution's batch; 0 if not static)."""
    shape = getattr(func.params[-1], "shape", None) or ()
    return int(shape[0]) if len(shape) and isinstance(shape[0], tirx.IntImm) else 0


def split_gemm(gemm, s: int, *, fork_epilogue: bool = False) -> s_tir.Schedule | None:
    """Steps 2-3 on a function in normal form (``as_normal_gemm``'s): K in ``s``
    chunks of whole K_STEP slices, the partial products, then their sum through the
    epilogue; None when ``s`` is 1 or the epilogue is no inlinable chain (with
    ``fork_epilogue``, one that forks is inlined into one first: :func:`inline_epilogue`)."""
    if s == 1:
        return None
    sch, main = gemm.sch, gemm.block
    if consumer_chain(sch, main) is None and not (fork_epilogue and inline_epilogue(sch, main)):
        return None
    # Whole tiles (rows past M, columns past N, K past a multiple of K_STEP*S
    # read as zeros), so no tile or chunk is ragged.
    sch.pad_einsum(main, [1, TILE_M, TILE_N, K_STEP * s])
    _, _, _, k = sch.get_loops(main)
    chunk, _ = sch.split(k, [s, None])
    partial = sch.rfactor(chunk, factor_axis=0)
    _schedule_partials(sch, partial)
    if not schedule_sum_epilogue(sch, main, partial):
        return None
    return sch


def inline_epilogue(sch: s_tir.Schedule, main) -> bool:
    """Inline every block after ``main`` but the function's output block into the
    blocks that read it, so what follows ``main`` is one chain (its write-back, then
    the output block); False (the schedule may be half changed: the caller declines)
    when a block is not element-wise, the blocks after ``main`` end in more than one
    output, or TVM refuses an inlining."""
    after = _reachable(sch, main)
    outputs = [b for b in after if not sch.get_consumers(b)]
    if len(outputs) != 1:
        return False
    for blk in after:
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
            return False
    writeback = sch.get_consumers(main)
    if len(writeback) != 1:
        return False
    out = sch.get(outputs[0]).name_hint
    keep = {sch.get(writeback[0]).name_hint, out}
    for name in [sch.get(b).name_hint for b in after]:
        if name in keep:
            continue
        try:
            sch.compute_inline(sch.get_sblock(name))
        except Exception:  # noqa: BLE001 - TVM refuses with several error types
            return False
    return consumer_chain(sch, main) is not None


def _reachable(sch: s_tir.Schedule, block) -> list:
    """The blocks that read, directly or not, what ``block`` writes (in schedule order)."""
    seen, todo, names = [], [block], set()
    while todo:
        for c in sch.get_consumers(todo.pop()):
            name = sch.get(c).name_hint
            if name not in names:
                names.add(name)
                seen.append(c)
                todo.append(c)
    order = {sch.get(b).name_hint: i for i, b in enumerate(sch.get_child_blocks(sch.get_sblock("root")))}
    return sorted(seen, key=lambda b: order.get(sch.get(b).name_hint, len(order)))


# --- step 2: kernel 1, the partial GEMMs --------------------------------------------
def _schedule_partials(sch: s_tir.Schedule, partial) -> None:
    """Tile the rfactor block ``P[s, b, i, j] += A[b, i, s*KC + kr] * B[b, j, s*KC + kr]``:
    chunk ``s`` -> blockIdx.z, (b, J tile) -> blockIdx.y, I tile -> blockIdx.x; J
    across threadIdx.x (so neighbouring threads write neighbouring partials), I across
    threadIdx.y; each K_STEP slice of A and B staged in shared memory by all threads;
    the MICRO x MICRO accumulators in registers."""
    b, i, j, chunk, kr = sch.get_loops(partial)  # rfactor keeps the loop order
    bi, ty, mi = sch.split(i, [None, THREADS_M, MICRO])
    bj, tx, mj = sch.split(j, [None, THREADS_N, MICRO])
    ko, ki = sch.split(kr, [None, K_STEP])
    sch.reorder(chunk, b, bj, bi, ty, tx, ko, ki, mi, mj)
    sch.bind(chunk, "blockIdx.z")
    sch.bind(sch.fuse(b, bj), "blockIdx.y")
    sch.bind(bi, "blockIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    sch.annotate(tx, ann_key="pragma_auto_unroll_max_step", ann_val=UNROLL)
    sch.annotate(tx, ann_key="pragma_unroll_explicit", ann_val=1)

    acc = sch.cache_write(partial, 0, "local")
    sch.reverse_compute_at(acc, tx, preserve_unit_loops=True)
    _, vec = sch.split(sch.get_loops(acc)[-1], [None, VEC])
    sch.vectorize(vec)
    for operand in (0, 1):
        staged = _stage_in_shared(sch, partial, operand, ko)
        inline_producers(sch, staged)
    sch.decompose_reduction(partial, ko)


def _stage_in_shared(sch: s_tir.Schedule, block, operand: int, at):
    """Copy ``block``'s ``operand`` slice for one iteration of loop ``at`` into shared
    memory, every thread of the block loading VEC contiguous elements per step."""
    staged = sch.cache_read(block, operand, "shared")
    ndim = len(sch.get_loops(staged))
    sch.compute_at(staged, at, preserve_unit_loops=True)
    loops = sch.get_loops(staged)[-ndim:]
    ty, tx, _, vec = sch.split(sch.fuse(*loops), [THREADS_M, THREADS_N, None, VEC])
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    sch.vectorize(vec)
    # Pad each row by VEC floats: rows of K_STEP floats would otherwise map the
    # threads reading one column to the same shared-memory bank.
    sch.storage_align(staged, 0, axis=-2, factor=8, offset=VEC)
    return staged


# --- step 3: kernel 2, sum of partials + epilogue -------------------------------------
def schedule_sum_epilogue(sch: s_tir.Schedule, total, partial) -> bool:
    """Inline the element-wise blocks after the write-back block ``total`` (``C[b, i, j]
    = sum_s P[s, b, i, j]``) into the function's output block, run that block one
    thread per element, and compute ``total`` in a register inside each thread.
    False when the blocks after the GEMM are not a single inlinable chain."""
    tail = consumer_chain(sch, total)
    if tail is None:
        return False
    for blk in tail[:-1]:
        sch.compute_inline(blk)
    out = tail[-1] if tail else None
    if out is None:
        return False
    loops = sch.get_loops(out)
    count = 1
    for lp in loops:
        ext = sch.get(lp).extent
        if not isinstance(ext, tirx.IntImm):
            return False
        count *= int(ext)
    threads = largest_divisor(count, EPILOGUE_THREADS)
    if threads < 32:
        return False  # ragged output: leave it to the un-split rules
    bx, tx = sch.split(sch.fuse(*loops) if len(loops) > 1 else loops[0], [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.compute_at(total, tx, preserve_unit_loops=True)
    sch.set_scope(total, 0, "local")
    return _all_on_gpu(sch)



def _all_on_gpu(sch: s_tir.Schedule) -> bool:
    """True when every block at the function's root sits under a blockIdx loop (a
    block left over would be a host loop nest the CUDA build rejects) -- but a weight's
    layout rewrite, which :mod:`hetpart.kernels.weight_prepack` moves out and runs at
    compile time."""
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if LAYOUT_REWRITE_PREPROC in sch.get(blk).annotations:
            continue
        loops = sch.get_loops(blk)
        binding = sch.get(loops[0]).thread_binding if loops else None
        if binding is None or not str(binding.thread_tag).startswith("blockIdx"):
            return False
    return True
