"""CPU rule for injective kernels: element-wise chains, broadcast, transpose, reshape,
concat, gather, padding -- any function whose blocks are all spatial.

Every block with a single consumer is inlined into it, so each output is written by
one loop nest that reads the inputs directly; each remaining nest is fused into one
loop, split into SIMD-width chunks (vectorised) and run in parallel -- from
:data:`STRIDED_PARALLEL_MIN_ELEMENTS` outputs already when the nest reads an input
with a stride along its innermost loop (a transpose: each element costs a cache line).
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

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..access import reads_strided
from ..analysis import PARALLEL_MIN_ELEMENTS, cpu_shape, is_cpu, parallel_vectorize, try_inline_spatial
from ..fast_exp import replace_exp

STRIDED_PARALLEL_MIN_ELEMENTS = 1 << 14
"""Outputs from which a strided copy runs in parallel.  Measured on the H200 host (16
cores): BERT's K^T transpose (``[1,128,12,64] -> [1,12,64,128]``, 96 Ki floats, each
read from its own cache line) took 130-160 us on one thread, ~1.5 ns an element, so
16 Ki elements already amortise a thread-pool wake-up; the contiguous threshold
(:data:`~hetpart.kernels.analysis.PARALLEL_MIN_ELEMENTS`, 256 Ki) kept it serial."""


def _spatial_blocks(sch: s_tir.Schedule):
    """Root blocks of ``sch`` if all of them (and all nested blocks) are spatial, else None."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    for blk in blocks:
        stmt = sch.get(blk)
        if not stmt.iter_vars or any(iv.iter_type != tirx.IterVar.DataPar for iv in stmt.iter_vars):
            return None
        if not sch.get_loops(blk):
            return None
    return blocks


class CpuInjective(ScheduleRule):
    """Inline, fuse, vectorise, parallelise (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        sch = s_tir.Schedule(func)
        if _spatial_blocks(sch) is None:
            return None
        sch = s_tir.Schedule(replace_exp(func))
        try_inline_spatial(sch)
        blocks = _spatial_blocks(sch)
        if blocks is None:
            return None
        shape = cpu_shape(target)
        for blk in blocks:
            stmt = sch.get(blk)
            strided = _strided(stmt)
            parallel_vectorize(sch, blk, shape.lanes(str(stmt.writes[0].source.dtype)),
                               min_parallel=STRIDED_PARALLEL_MIN_ELEMENTS if strided else PARALLEL_MIN_ELEMENTS)
        return sch


def _strided(stmt) -> bool:
    try:
        return reads_strided(stmt)
    except Exception:  # noqa: BLE001 - an index the analysis cannot read: the default threshold
        return False
