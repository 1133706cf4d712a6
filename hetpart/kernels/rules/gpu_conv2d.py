"""GPU rule for NCHW convolutions (regular, 1x1 padded, strided; fused padding and
element-wise epilogue) as an *implicit GEMM*, scheduled by dlight's tiled Matmul rule.

dlight's ``Matmul`` needs every operand indexed by bare iterators, so a convolution
(input index ``oh*stride + ry - pad``) falls through to ``GeneralReduction`` /
``Fallback`` -- one thread per output, no shared-memory reuse.  This rule first
``reindex``-es the windowed operand: a new block copies it into a buffer indexed by
the conv block's own iterators ``[n, oh, ow, ic, ry, rx]``, with the padding producer
inlined into that copy (so its bounds test guards every load: no read outside the
input).  The convolution is then a plain contraction ``M = n*oh*ow``, ``N = oc``,
``K = ic*kh*kw``, which ``Matmul`` tiles into shared memory; the copy block is
inlined into Matmul's shared-memory loads, so the im2col matrix is never stored.

Applies only where the weight alone depends on an output iterator (``oc``) and the
input alone on a reduction-free spatial iterator -- i.e. not depthwise or grouped
convolutions, whose "GEMM" would be a batch of tiny ones; those stay with dlight.
Returns None whenever dlight's Matmul declines, so the next rule in the list runs.
Invariant: only the loop nest and staging change; each output is the same sum.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import MacBlock, is_gpu, schedule_mac


class GpuConv2dImplicitGemm(ScheduleRule):
    """Convolution -> reindexed contraction -> dlight Matmul (see module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_gpu(target):
            return None
        found = schedule_mac(func)
        if found is None:
            return None
        sch, mac = found
        if not reindex_window(sch, mac):
            return None
        return dl.gpu.Matmul().apply(sch.mod["main"], target, tunable)


def reindex_window(sch: s_tir.Schedule, mac: MacBlock) -> bool:
    """Make ``mac`` (a regular convolution's MAC block) a plain contraction: ``reindex``
    its windowed operand into a copy indexed by the block's own iterators, with the
    padding (any element-wise producer) inlined into the copy so its bounds test
    guards every load.  False, with ``sch`` possibly half-changed (the caller drops
    it), when ``mac`` is no such convolution: both operands plain (a matmul),
    depthwise/grouped (oc reaches the input), or a producer that cannot be inlined."""
    windowed = [o for o in (0, 1) if not mac.is_plain(o)]
    if len(windowed) != 1:
        return False  # a plain contraction (Matmul's own) or something else
    win, weight = windowed[0], 1 - windowed[0]
    # Regular convolution: oc reaches the weight only, ic both operands.
    if not any(mac.uses(weight, v) and not mac.uses(win, v) for v in mac.spatial):
        return False
    if not any(mac.uses(weight, v) and mac.uses(win, v) for v in mac.reduce):
        return False
    buf = mac.operands[win][0]
    reads = [i for i, r in enumerate(sch.get(mac.block).reads) if r.source.same_as(buf)]
    if len(reads) != 1:
        return False
    copy = sch.reindex(mac.block, ("read", reads[0]))
    # Inline the padding (and any other element-wise producer) into the copy, so the
    # bounds test sits on the loads later staged into shared memory.
    for producer in sch.get_producers(copy):
        try:
            sch.compute_inline(producer)
        except Exception:  # noqa: BLE001 - not inlinable: stays a kernel stage
            return False
    return True
