"""GPU rule for a matmul by gathered expert weights read in place
(:mod:`hetpart.importer.expert_matmul`): per (token, choice) a GEMV over the chosen expert's
``[K, N]`` rows, N contiguous (an "outer" reduction: dlight's ``GEMV`` has no CUDA schedule
for it and declines; its ``Fallback`` ran the down projection on 2 blocks, a serial K of 2816
a thread, and ``GeneralReduction`` the gate a block per column, reading it at a stride of N).

Scheduled as split-K over a block's threads::

    blockIdx.x  = (b.., m, n_o)                # each (token, choice) in COLUMNS-wide parts
      threadIdx.x = n_i  (COLUMNS columns)     # a warp reads rows of contiguous columns
      threadIdx.y = k_i  (SPLIT parts of K)
        acc = sum over k_o of x[k] * W[row, k, n]   (local, unrolled)
      cross-thread sum over threadIdx.y        # TVM's allreduce
      epilogue (SwiGLU) per column, in registers

Matched only by the block :data:`~hetpart.importer.expert_matmul.OP` in the form
:func:`.cpu_gathered_matmul.gathered` reads, with at most a chain of element-wise blocks of the
output's shape after it; else None (the next rule).  Built for sm_90 without a GPU (session 53);
its CUDA results are a ``cuda`` test's (tests/test_kernels_gpu_gathered_gemv.py).
Invariant: each output is the same products summed (in another order: partial sums per thread,
then a tree), the same element-wise expression of it.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ...importer.expert_matmul import OP
from ..analysis import is_gpu, loop_of, mac_of, try_inline_spatial
from .cpu_gathered_matmul import gathered, has_block

COLUMNS = 16
"""Columns a block reads (``threadIdx.x``): a warp reads 2 rows of 64 contiguous bytes."""

SPLIT = 32
"""Parts K is split into (``threadIdx.y``): 512 threads a block, enough blocks to cover the SMs
at one token (down: 2 x 1024 / 16 = 128 blocks)."""

UNROLL = 8
"""Serial K steps a thread unrolls (loads in flight)."""


class GpuGatheredGemv(ScheduleRule):
    """Split-K GEMV over the chosen rows (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_gpu(target) or not has_block(func, OP):
            return None
        sch = s_tir.Schedule(func)
        try_inline_spatial(sch)
        mac = mac_of(sch)
        found = gathered(mac) if mac is not None else None
        if found is None:
            return None
        try:
            return _split_k(sch, mac, *found)
        except Exception:  # noqa: BLE001 - a primitive refused: the next rule
            return None


def _largest(n: int, options: tuple) -> int:
    """The largest of ``options`` dividing ``n`` (1 when none does)."""
    return next((f for f in options if n % f == 0), 1)


def _split_k(sch: s_tir.Schedule, mac, j, k) -> s_tir.Schedule | None:
    """``sch`` scheduled as the module docstring draws it; None where the blocks after the
    contraction are not one element-wise chain."""
    main = mac.block
    chain = _chain(sch, main)
    if chain is None:
        return None
    cols = _largest(mac.extents[j], (COLUMNS, 8, 4, 2))
    split = _largest(mac.extents[k], (SPLIT, 16, 8, 4, 2))
    by = loop_of(sch, main)
    unit = [by(iv.var) for iv in sch.get(main).iter_vars if not iv.var.same_as(j) and not iv.var.same_as(k)]
    n_o, n_i = sch.split(by(j), factors=[None, cols])
    k_o, k_i = sch.split(by(k), factors=[None, split])
    sch.reorder(*unit, n_o, n_i, k_i, k_o)
    rf = sch.rfactor(k_i, factor_axis=0)
    loops = sch.get_loops(rf)
    bx = sch.fuse(*loops[: len(unit) + 1])
    _, tx, ty, ko = sch.get_loops(rf)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.annotate(ko, "pragma_auto_unroll_max_step", UNROLL)
    sch.annotate(ko, "pragma_unroll_explicit", 1)
    sch.decompose_reduction(rf, ko)
    sch.set_scope(rf, 0, "local")
    sch.reverse_compute_at(main, bx, preserve_unit_loops=True)
    spatial, parts = _write_back_loops(sch, main)
    sch.reorder(*spatial, parts)  # a cross-thread sum's loop is the deepest
    sch.bind(spatial[[v.same_as(j) for v in mac.spatial].index(True)], "threadIdx.x")
    sch.bind(parts, "threadIdx.y")
    for i, blk in enumerate([main, *chain]):
        if i < len(chain):
            sch.set_scope(blk, 0, "local")  # read by the next block of the same thread
        if i:
            sch.reverse_compute_at(blk, bx, preserve_unit_loops=True)
            sch.bind(sch.fuse(*sch.get_loops(blk)[1:]), "threadIdx.x")
    return sch


def _write_back_loops(sch: s_tir.Schedule, block) -> tuple:
    """``([spatial loops], parts loop)`` of the rfactor write-back ``block`` under the block loop:
    its loops follow its iterators (the factored one, a reduction, first; the spatial ones in the
    contraction's order)."""
    ivs = sch.get(block).iter_vars
    loops = sch.get_loops(block)[-len(ivs):]
    spatial = [lp for iv, lp in zip(ivs, loops) if iv.iter_type == tirx.IterVar.DataPar]
    (parts,) = [lp for iv, lp in zip(ivs, loops) if iv.iter_type == tirx.IterVar.CommReduce]
    return spatial, parts


def _chain(sch: s_tir.Schedule, block) -> list | None:
    """The blocks after ``block``, each the only consumer of the one before and the rest of
    the function; None where they are anything else."""
    root = sch.get_sblock("root")
    rest = [b for b in sch.get_child_blocks(root) if not sch.get(b).same_as(sch.get(block))]
    chain, last = [], block
    while True:
        consumers = sch.get_consumers(last)
        if not consumers:
            break
        if len(consumers) != 1:
            return None
        last = consumers[0]
        chain.append(last)
    return chain if len(chain) == len(rest) else None
