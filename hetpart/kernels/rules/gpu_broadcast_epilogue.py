"""GPU rule: a small contraction whose element-wise epilogue broadcasts its result over
a much larger output -- squeeze-excite's second FC, its gate and the gate's multiply
of the image, fused into one function -- as two kernels: the contraction (and the
per-channel part of the epilogue) one thread per reduced value, then the broadcast
part one thread per output element.

dlight's ``GEMV`` (the rule these functions reached before) tiles the function by the
contraction's outputs: EfficientNet-B0's first SE block at batch 1 (fc2: 8 -> 32
channels, then ``sigmoid(.) * x`` over 32x112x112) got 2 thread blocks of 512
threads, whose epilogue loop ran on the 32 ``threadIdx.x`` lanes only -- 6272 serial
iterations per thread, recomputing the sigmoid for each of the 401408 outputs on 2 of
the 132 SMs (``bench/results/gpu-b1-static.md``; every SE block of EfficientNet-B0
and MobileNet-v3 the same at 2-72 blocks).

Here, for a function with one reduction block that reads two or more buffers (a
convolution or matmul, not a norm), at most :data:`MAX_REDUCED` reduced values of at
most :data:`MAX_TERMS` terms each, a leading (batch) extent of at most
:data:`MAX_BATCH`, and an output at least :data:`MIN_BROADCAST` times larger than the
reduced values, reached through a chain of element-wise blocks:

1. every producer of the reduction (the padding) is inlined into it;
2. kernel 1: the reduction's spatial loops fused, :data:`REDUCE_THREADS` threads a
   block, each thread summing its value serially in a register, then running the
   chain's blocks over the reduced shape (bias, activation: computed once per
   channel, not per pixel) under the same thread; the last of them writes a global
   scratch buffer;
3. kernel 2: the output block (the broadcast multiply) one thread per element,
   :data:`EPILOGUE_THREADS` a block, reading the per-channel value.

Batch 1 only for now (:data:`MAX_BATCH`): at batch 32 the SE blocks' functions keep
the schedules measured there until this rule is measured at that batch.  Returns
None for anything else (dynamic shapes, several reductions, a chain that forks or
is not element-wise, a middle block whose shape is not the reduction's).

Invariant: each output is the same sum of the same products in the same order, and
the same element-wise expression of it; only the loops and where values live change.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import consumer_chain, is_gpu, lone_contraction

MAX_REDUCED = 4096
"""Most reduced values (batch x channels) the rule takes: one thread each."""

MAX_TERMS = 2048
"""Most terms per reduced value, summed serially by one thread."""

MIN_BROADCAST = 16
"""Least ratio of output elements to reduced values for the rule to apply."""

MAX_BATCH = 1
"""Largest leading extent of the reduction the rule takes (see the module docstring)."""

REDUCE_THREADS = 64
EPILOGUE_THREADS = 256


class GpuBroadcastEpilogue(ScheduleRule):
    """Small contraction + broadcast epilogue as two kernels (module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_gpu(target) or not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        red = _small_contraction(sch)
        if red is None:
            return None
        try:
            return sch if _schedule(sch, red) else None
        except Exception:  # noqa: BLE001 - a primitive TVM refuses: leave the function to the next rule
            return None


def _extent(iv) -> int | None:
    return int(iv.dom.extent) if isinstance(iv.dom.extent, tirx.IntImm) else None


def _small_contraction(sch: s_tir.Schedule):
    """The function's one reduction block when it is a small contraction (module doc's
    conditions on it), else None."""
    found = lone_contraction(sch)
    if found is None or not found.spatial:
        return None
    if found.spatial[0] > MAX_BATCH or math.prod(found.spatial) > MAX_REDUCED or found.terms > MAX_TERMS:
        return None
    return found.block


def _count(sch: s_tir.Schedule, blk) -> int:
    return math.prod(_extent(iv) for iv in sch.get(blk).iter_vars if iv.iter_type == tirx.IterVar.DataPar)


def _schedule(sch: s_tir.Schedule, red) -> bool:
    todo = list(sch.get_producers(red))
    while todo:  # the padding (and anything before it) read straight from the inputs
        producer = todo.pop()
        more = list(sch.get_producers(producer))
        sch.compute_inline(producer)
        todo.extend(more)
    if sch.get_producers(red):
        return False
    chain = consumer_chain(sch, red, static_extents=True)
    if not chain:
        return False
    reduced = _count(sch, red)
    *middle, out = chain
    if any(_count(sch, b) != reduced for b in middle) or _count(sch, out) < MIN_BROADCAST * reduced:
        return False
    if len(sch.get_child_blocks(sch.get_sblock("root"))) != 1 + len(chain):
        return False  # another block (a scalar the epilogue tests, ...) would be left unscheduled
    # Kernel 2 first (its loops are still the output's own): one thread per output element.
    loops = sch.get_loops(out)
    bx, tx = sch.split(sch.fuse(*loops) if len(loops) > 1 else loops[0], [None, EPILOGUE_THREADS])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    # Kernel 1: one thread per reduced value, the per-channel chain under the same thread.
    n_spatial = sum(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(red).iter_vars)
    loops = sch.get_loops(red)
    spatial = loops[:n_spatial]
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    rbx, rtx = sch.split(fused, [None, min(REDUCE_THREADS, reduced)])
    sch.bind(rbx, "blockIdx.x")
    sch.bind(rtx, "threadIdx.x")
    for blk in middle:
        sch.reverse_compute_at(blk, rtx, preserve_unit_loops=True)
    # Values that stay within a thread live in registers; the last one kernel 2 reads.
    for blk in [red, *middle][:-1]:
        sch.set_scope(blk, 0, "local")
    return True
