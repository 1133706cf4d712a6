"""GPU rule: float32 matmuls and convolutions (as implicit GEMMs) on TF32 tensor cores.

The CUDA-core rules (dlight's ``Matmul``, :mod:`.gpu_conv2d`, :mod:`.gpu_splitk`)
run float32 GEMMs as register-tiled SIMT code; at batch 8-32 the grids are full and
that code meets cuDNN's TF32 tensor cores.  This rule runs the same contraction on
the tensor cores (TF32 ``mma.sync`` on 16x16x8 warp tiles, :mod:`hetpart.kernels.tf32`):

1. normal form ``C[b, I, J] += A[b, I, K] * B[b, J, K]`` -- a convolution's windowed
   operand ``reindex``-ed first, padding inlined (as :mod:`.gpu_conv2d` does) -- padded
   to whole block tiles (rows past M and K past the tile read as zeros);
2. a thread block computes a :class:`Tile` of the output (the largest of
   :data:`MATMUL_TILES` / :data:`CONV_TILES` whose grid fills the GPU), each of its warps a few 16x16
   accumulator fragments; each ``Tile.k``
   slice of A and B is staged in shared memory by all threads (4-float vector
   loads; the im2col matrix of a convolution is never stored), loaded into each
   warp's operand registers and multiplied;
3. each warp stores its accumulators to shared memory and writes them out through
   the fused element-wise epilogue (bias, relu, residual add...), 4 floats per
   thread per step.

Applies to float32 contractions whose grid fills the GPU (at least :data:`MIN_BLOCKS`
blocks of one of the tiles) -- smaller ones are split-K's or the SIMT rules' -- on targets with
tensor cores (sm_80 and later); returns None otherwise, or when
``HETPART_TF32=0`` asks for full float32.  Invariant: every output is the same sum
over K, of products of TF32-rounded operands (see :mod:`hetpart.kernels.tf32`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from .. import tf32
from ..analysis import is_gpu
from .gpu_gemm import as_normal_gemm, inline_producers
from .gpu_splitk import SM_COUNT


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

WARP = 32
VEC = 4

MIN_BLOCKS = SM_COUNT
"""Blocks below which a tile is not used (and with no tile left, the rule declines):
with fewer blocks than SMs the tensor cores idle, and split-K (which cuts K across
blocks) does better."""

MIN_ARCH = 80
"""TF32 ``mma.sync`` needs compute capability 8.0 (Ampere) or later."""


class GpuTensorCoreGemm(ScheduleRule):
    """float32 GEMM / implicit-GEMM convolution on TF32 tensor cores (module doc)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not (tf32.enabled() and is_gpu(target) and target.kind.name == "cuda" and _arch(target) >= MIN_ARCH):
            return None
        gemm = as_normal_gemm(func)
        if gemm is None:
            return None
        sch, main, plain, shape = gemm
        batch, m, n, _ = shape
        tiles = MATMUL_TILES if plain else CONV_TILES
        tile = next((t for t in tiles if t.blocks(batch, m, n) >= MIN_BLOCKS), None)
        if tile is None:
            return None
        sch.pad_einsum(main, [1, tile.m, tile.n, tile.k])
        if not _schedule(sch, main, tile, tf32.intrinsics()):
            return None
        return sch


def _arch(target: Target) -> int:
    arch = str(target.attrs.get("arch", "") or "")
    digits = "".join(ch for ch in arch if ch.isdigit())
    return int(digits) if digits else 0


def _schedule(sch: s_tir.Schedule, main, t: Tile, names: dict[str, str]) -> bool:
    """Tile, stage and tensorize the normal-form block ``main``; False when a step
    TVM refuses leaves nothing usable (the caller then declines)."""
    b, i, j, k = sch.get_loops(main)
    i, fi = sch.split(i, [None, tf32.M])
    j, fj = sch.split(j, [None, tf32.N])
    k, fk = sch.split(k, [None, tf32.K])
    sch.reorder(i, j, k, fi, fj, fk)
    frag = main
    step = sch.blockize(fi)  # one 16x16x8 tensor-core step

    bi, wi, mi = sch.split(i, [None, t.warps_m, t.frags_m])
    bj, wj, mj = sch.split(j, [None, t.warps_n, t.frags_n])
    ko, ki = sch.split(k, [None, t.k_frags])
    sch.reorder(b, bi, bj, wi, wj, ko, ki, mi, mj)
    sch.bind(b, "blockIdx.z")
    sch.bind(bi, "blockIdx.y")
    sch.bind(bj, "blockIdx.x")
    warp = sch.fuse(wi, wj)
    sch.bind(warp, "threadIdx.y")

    for operand in (0, 1):
        staged = _stage(sch, step, operand, ko, t.warps)
        inline_producers(sch, staged)
    a_frag = sch.cache_read(step, 0, "warp")
    b_frag = sch.cache_read(step, 1, "warp")
    sch.compute_at(a_frag, ki)
    sch.compute_at(b_frag, ki)
    out_shared = sch.cache_write(step, 0, tf32.SCOPE)
    acc = sch.cache_write(step, 0, "warp")
    sch.reverse_compute_at(acc, warp)
    sch.reverse_compute_at(out_shared, warp)
    # Each 16-row (A, C) / 16-column (B) fragment a [32 lanes, registers] block (tf32.*_layout).
    sch.transform_layout(a_frag, ("write", 0), lambda b_, r, c: (b_, r // 16, c // 8, *tf32.a_layout(r % 16, c % 8)))
    sch.transform_layout(b_frag, ("write", 0), lambda b_, r, c: (b_, r // 16, c // 8, *tf32.b_layout(r % 16, c % 8)))
    sch.transform_layout(acc, ("read", 0), lambda b_, r, c: (b_, r // 16, c // 16, *tf32.c_layout(r % 16, c % 16)))
    for loop in (ki, mi, mj):
        _unroll_in_nvcc(sch, loop)
    init = sch.decompose_reduction(step, ko)
    try:
        _tensorize_tiles(sch, a_frag, 16, 8, names["load_a"])
        _tensorize_tiles(sch, b_frag, 16, 8, names["load_b"])
        _tensorize_tiles(sch, acc, 16, 16, names["store"])
        sch.tensorize(sch.get_loops(sch.get_child_blocks(init)[0])[-2], names["init"])
        sch.tensorize(sch.get_loops(frag)[-3], names["compute"])
    except Exception:  # noqa: BLE001 - the step does not match the intrinsic: decline
        return False
    return _write_out(sch, out_shared)


def _stage(sch: s_tir.Schedule, block, operand: int, at, warps: int):
    """Copy ``block``'s ``operand`` slice for one iteration of ``at`` into shared
    memory: all threads, VEC floats each per step, rows padded against bank conflicts."""
    staged = sch.cache_read(block, operand, tf32.SCOPE)
    sch.compute_at(staged, at)
    loops = sch.get_loops(staged)[-2:]
    _, ty, tx, vec = sch.split(sch.fuse(*loops), [None, warps, WARP, VEC])
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    sch.vectorize(vec)
    sch.storage_align(staged, 0, axis=-2, factor=32, offset=VEC)
    return staged


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


def _write_out(sch: s_tir.Schedule, out_shared) -> bool:
    """Fuse the element-wise epilogue into the copy of a warp's accumulators from
    shared memory to the output: 32 threads, VEC floats each per step.

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
    loops = sch.get_loops(out_shared)
    _, tx, vec = sch.split(sch.fuse(*loops[-2:]), [None, WARP, VEC])
    sch.bind(tx, "threadIdx.x")
    sch.vectorize(vec)
    return True


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
