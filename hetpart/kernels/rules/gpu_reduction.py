"""dlight's GPU ``Reduction`` rule with its epilogue hand-off fixed.

dlight schedules a reduction whose reduced axis is not innermost in memory ("inner
spatial", e.g. a 1x1 grouped convolution reducing over input channels) as: each
thread ``threadIdx.x`` owns a few outputs, ``threadIdx.y`` splits the reduction,
and with an unrolled spatial factor the write-back walks one spatial axis (say the
output channel) serially per thread.  An element-wise epilogue (bias, ReLU,
hard-swish) is then bound to ``threadIdx.x`` over the outputs in their natural
order -- a *different* thread-to-output map whenever the unrolled axis is not the
innermost one -- while the reduced values stay in ``local`` (per-thread) memory.
The epilogue thread then reads registers it never wrote: on the H200 the small
MobileNet's grouped 1x1 convolutions came out wrong by ~90% (TVM 0.27).

Here the epilogue of an unrolled inner-spatial schedule reads the reduced values
from ``shared`` memory, as dlight already does for broadcasting epilogues, so any
thread may read any output of its block.  Everything else is dlight's schedule; the
rule keeps dlight's name (``Reduction``), which profiles record.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import is_broadcast_epilogue
from tvm.s_tir.dlight.gpu.reduction import _suggest_inner_spatial_tx

_LEN_TY = 16  # dlight's threadIdx.y extent of this schedule


class Reduction(dl.gpu.Reduction):
    """dlight's ``Reduction``; see the module docstring for what differs."""

    def _sch_inner_spatial(self, sch: s_tir.Schedule, target, block, s_factor, unroll_spatial_factor,
                           epilogue_info, loop_order, s_split_index):
        if epilogue_info is None or not unroll_spatial_factor:
            return super()._sch_inner_spatial(sch, target, block, s_factor, unroll_spatial_factor,
                                              epilogue_info, loop_order, s_split_index)
        super()._sch_inner_spatial(sch, target, block, s_factor, unroll_spatial_factor, None,
                                   loop_order, s_split_index)
        epilogue = epilogue_info.block_rv
        bx = sch.get_loops(block)[0]
        sch.reverse_compute_at(epilogue, bx, preserve_unit_loops=True)
        broadcast = is_broadcast_epilogue(sch, block, epilogue)
        # Shared, not local: the epilogue's threads read outputs other threads reduced.
        sch.set_scope(block, 0, "shared")
        _, *spatial = sch.get_loops(epilogue)
        if broadcast:
            _, tx, ty = sch.split(sch.fuse(*spatial), factors=[None, _suggest_inner_spatial_tx(s_factor), _LEN_TY])
            sch.bind(ty, "threadIdx.y")
        else:
            _, tx = sch.split(sch.fuse(*spatial), factors=[None, _suggest_inner_spatial_tx(s_factor)])
        sch.bind(tx, "threadIdx.x")
