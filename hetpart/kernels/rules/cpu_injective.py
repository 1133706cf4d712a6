"""CPU rule for injective kernels: element-wise chains, broadcast, transpose, reshape,
concat, gather, padding -- any function whose blocks are all spatial.

Every block with a single consumer is inlined into it, so each output is written by
one loop nest that reads the inputs directly; each remaining nest is fused into one
loop, split into SIMD-width chunks (vectorised) and run in parallel.  Correct for
any such function: only loops are restructured, each element computed as before.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import cpu_shape, is_cpu, parallel_vectorize, try_inline_spatial


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
        try_inline_spatial(sch)
        blocks = _spatial_blocks(sch)
        if blocks is None:
            return None
        shape = cpu_shape(target)
        for blk in blocks:
            dtype = sch.get(blk).writes[0].source.dtype
            parallel_vectorize(sch, blk, shape.lanes(str(dtype)))
        return sch
