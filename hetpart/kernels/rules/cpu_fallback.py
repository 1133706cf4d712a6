"""CPU rule of last resort: any function the other rules leave alone.

Runs the outermost loop of every root block in parallel where TVM proves that legal
(the loop is bound to data-parallel iterators only); everything else stays as
LegalizeOps wrote it.  Never changes results; never fails (a refused ``parallel`` is
skipped).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import is_cpu


class CpuFallback(ScheduleRule):
    """Parallelise the outer loop of each root block when legal."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        sch = s_tir.Schedule(func)
        try:
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
        except Exception:  # noqa: BLE001 - no root block (hand-written TIR): leave it
            return sch
        for blk in blocks:
            try:
                loops = sch.get_loops(blk)
                if loops and sch.get(loops[0]).kind == tirx.ForKind.SERIAL:
                    sch.parallel(loops[0])
            except Exception:  # noqa: BLE001 - not provably parallel: keep it serial
                pass
        return sch
