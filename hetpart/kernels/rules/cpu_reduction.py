"""CPU rule for reductions: pooling (max/avg/global), mean/sum, softmax, layer norm.

Two shapes of function, two schedules:

* **one reduction block** (pooling, mean, sum; padding and element-wise producers
  inlined): the reduction loops move *outside* the innermost output loop, which is
  vectorised -- each step reduces ``lanes`` neighbouring outputs at once (a window
  of a pooling, or a column of a mean over a non-innermost axis); the other output
  loops run in parallel.  Where the innermost output extent is too short, the
  outputs run in parallel and each reduction is a serial loop.
* **several blocks sharing leading spatial axes** (softmax = max, exp, sum, divide;
  layer norm = sum, mean, variance, normalise): as in TVM's dlight CPU rule, the
  shared rows run in parallel and every block is computed inside the row loop, so a
  row stays in cache from its first pass to its last; element-wise passes are
  vectorised, reductions run serially along the row.

Invariant: each output is reduced over the same elements in the same order as the
unscheduled function.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import block_infos, const_extent, cpu_shape, is_cpu, try_inline_spatial


def _leading_s(kind: str) -> int:
    return len(kind) - len(kind.lstrip("S"))


def _vectorize_inner(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = const_extent(sch, loops[-1])
    if ext is None or ext < 2:
        return
    if ext > lanes and ext % lanes == 0:
        _, inner = sch.split(loops[-1], factors=[None, lanes])
        sch.vectorize(inner)
    elif ext <= lanes:
        sch.vectorize(loops[-1])


class CpuReduction(ScheduleRule):
    """Parallel rows, vectorised element-wise passes (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        sch = s_tir.Schedule(func)
        try_inline_spatial(sch)
        infos = block_infos(sch)
        if infos is None or all(bi.is_injective() for bi in infos):
            return None
        if any(not bi.dom_kind() or bi.dom_kind()[0] != "S" for bi in infos):
            return None
        lanes = cpu_shape(target).lanes(str(sch.get(infos[-1].block_rv).writes[0].source.dtype))
        reductions = [bi for bi in infos if not bi.is_injective()]
        if len(reductions) == 1 and infos[0] is reductions[0]:
            if self._one_reduction(sch, infos, lanes):
                return sch
            return None
        return sch if self._rows(sch, infos, lanes) else None

    @staticmethod
    def _one_reduction(sch, infos, lanes: int) -> bool:
        """Reduction block first, element-wise epilogue blocks after it."""
        main = infos[0]
        kind = main.dom_kind()
        if kind.strip("SR") or "RS" in kind or any(not bi.is_injective() for bi in infos[1:]):
            return False
        # Accumulate in a buffer local to the parallel body (so in registers): a
        # parallel loop is outlined into a closure where LLVM no longer knows the
        # output does not alias the input, and would load/store it every step.
        wb = sch.cache_write(main.block_rv, 0, "global")
        loops = sch.get_loops(main.block_rv)
        ns = _leading_s(kind)
        spatial, reduce = loops[:ns], loops[ns:]
        last = const_extent(sch, spatial[-1])
        if last is not None and last % lanes == 0:
            # Reduce `lanes` neighbouring outputs at once.
            s0, s1 = sch.split(spatial[-1], factors=[None, lanes])
            sch.reorder(*spatial[:-1], s0, *reduce, s1)
            par = sch.fuse(*spatial[:-1], s0) if ns > 1 else s0
            sch.vectorize(s1)  # before decompose: it copies the loop kinds to the init
            at = par
        else:
            par = sch.fuse(*spatial[:-1]) if ns > 2 else spatial[0]
            at = spatial[-1] if ns > 1 else par
        sch.parallel(par)
        sch.reverse_compute_at(wb, at, preserve_unit_loops=True)
        sch.decompose_reduction(main.block_rv, reduce[0])
        _vectorize_inner(sch, wb, lanes)
        for epi in infos[1:]:
            sch.reverse_compute_at(epi.block_rv, at, preserve_unit_loops=True)
            _vectorize_inner(sch, epi.block_rv, lanes)
        return True

    @staticmethod
    def _rows(sch, infos, lanes: int) -> bool:
        """Blocks sharing leading spatial rows, the last one element-wise."""
        if not infos[-1].is_injective():
            return False
        lead = min(_leading_s(bi.dom_kind()) for bi in infos)
        if lead == 0:
            return False
        last = infos[-1].block_rv
        loops = sch.get_loops(last)
        rows = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
        sch.parallel(rows)
        _vectorize_inner(sch, last, lanes)
        for bi in reversed(infos[:-1]):
            sch.compute_at(bi.block_rv, rows, preserve_unit_loops=True)
        for bi in infos[:-1]:
            if bi.is_injective():
                _vectorize_inner(sch, bi.block_rv, lanes)
        return True
