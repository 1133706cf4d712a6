"""CPU rule for a matmul by gathered expert weights read in place
(:mod:`hetpart.importer.expert_matmul`): ``out[b.., m, n] = sum_k x[b.., m, k] * W[row(ids[b..]), k, n]``,
with any fused element-wise epilogue (SwiGLU's ``silu(gate) * up``).

A MoE decode step is a few GEMVs (one per token and chosen expert), each over a ``[K, N]``
slice of the table far larger than any cache: the time is the weight read.  Scheduled as
:func:`.cpu_matmul.gemv_row_stream` schedules a dense GEMV, per (token, choice)::

    parallel (b.., m, j_o)               # each (token, choice) split into column parts
      init acc[part] = 0
      serial k / ROWS                    # the chosen expert's rows, in order
        serial j_i / lanes, unrolled ROWS rows, vectorised lanes:
          acc[j] += x[k] * W[row, k, j]  # ROWS contiguous streams of the chosen rows
      write-back acc -> out, with the fused epilogue

Parts: enough that (tokens x choices x parts) fills the target's cores, whole vectors each.
The row index is loop-invariant in a part (LLVM hoists its load and clamp).  Matched only by
the block :data:`~hetpart.importer.expert_matmul.OP` with ``x`` plain and ``W`` indexed
``[f(spatial), k, n]``; anything else (and N of no whole vectors) is left to the next rule.
Invariant: each output is the same sum, in the same ``k`` order, as the unscheduled function.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target
from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

from ...importer.expert_matmul import OP
from ..analysis import cpu_shape, fuse_epilogue, is_cpu, loop_of, mac_of, try_inline_spatial
from ..fast_exp import replace_exp

ROWS = 8
"""Rows of the chosen expert read per step (unrolled): ROWS contiguous streams, as
:data:`.cpu_matmul.GEMV_ROWS`."""


def has_block(func: tirx.PrimFunc, name: str) -> bool:
    """Whether ``func`` has a block named ``name``."""
    try:
        s_tir.Schedule(func).get_sblock(name)
    except Exception:  # noqa: BLE001 - TVM raises its own error for a missing block
        return False
    return True


def gathered(mac) -> tuple | None:
    """``(j, k)``: the column and reduction vars of ``mac`` when it reads ``x`` plainly and
    ``W[f(spatial), k, j]`` (module docstring); else None."""
    if len(mac.reduce) != 1 or not mac.is_plain(0) or mac.is_plain(1):
        return None
    k = mac.reduce[0]
    _, idx = mac.operands[1]
    if len(idx) != 3 or not all(isinstance(e, tirx.Var) for e in idx[1:]) or not idx[1].same_as(k):
        return None
    j = idx[2]
    used = collect_vars_used_in_prim_expr(idx[0])
    if any(v.same_as(k) or v.same_as(j) for v in used) or not any(j.same_as(v) for v in mac.spatial):
        return None
    return j, k


class CpuGatheredMatmul(ScheduleRule):
    """Row-streamed, parallel, vectorised gathered matmul (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target) or not has_block(func, OP):
            return None
        sch = s_tir.Schedule(replace_exp(func))  # a sigmoid epilogue as vector code
        try_inline_spatial(sch)
        mac = mac_of(sch)
        found = gathered(mac) if mac is not None else None
        return _row_stream(sch, mac, *found, target) if found else None


def _parts(units: int, vectors: int, cores: int) -> int:
    """Column parts per (token, choice): enough that ``units * parts`` fills ``cores``,
    at most one a vector.  In: positive ints.  Out: 1 <= parts <= vectors."""
    return max(1, min(vectors, -(-cores // units)))


def _row_stream(sch: s_tir.Schedule, mac, j, k, target: Target) -> s_tir.Schedule | None:
    """``sch`` scheduled as the module docstring draws it, or None (N of no whole vectors
    of 16, 8 or 4 lanes, or a primitive refused)."""
    shape = cpu_shape(target)
    n, depth = mac.extents[j], mac.extents[k]
    lanes = next((w for w in (shape.lanes(str(mac.out.dtype)), 8, 4) if n % w == 0), None)
    if lanes is None:
        return None
    units = 1
    for v in mac.spatial:
        units *= mac.extents[v] if not v.same_as(j) else 1
    vectors = n // lanes
    per = -(-vectors // _parts(units, vectors, shape.cores))  # vectors of one part (the last may be short)
    parts = -(-vectors // per)
    rows = next(r for r in (ROWS, 4, 2, 1) if depth % r == 0)
    try:
        s = sch.copy()
        main = mac.block
        wb = s.cache_write(main, 0, "global")
        fuse_epilogue(s, wb)
        by = loop_of(s, main)
        unit = [by(iv.var) for iv in s.get(main).iter_vars if not iv.var.same_as(j) and not iv.var.same_as(k)]
        j_all, j_l = s.split(by(j), factors=[vectors, lanes])
        j_o, j_v = s.split(j_all, factors=[parts, per])
        k_o, k_i = s.split(by(k), factors=[None, rows])
        s.reorder(*unit, j_o, k_o, j_v, k_i, j_l)
        outer = s.fuse(*unit, j_o)
        if units * parts > 1:
            s.parallel(outer)
        s.unroll(k_i)
        s.vectorize(j_l)
        s.reverse_compute_at(wb, outer, preserve_unit_loops=True)
        s.decompose_reduction(main, k_o)
        _, wi = s.split(s.get_loops(wb)[-1], factors=[None, lanes])
        s.vectorize(wi)
        return s
    except Exception:  # noqa: BLE001 - a primitive refused: the next rule
        return None
