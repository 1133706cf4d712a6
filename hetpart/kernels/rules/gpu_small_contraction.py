"""GPU rule: a batched contraction with few outputs and no broadcast epilogue -- squeeze-excite's
first FC at batch > 1 (``[32, C] x [C, C/4]`` + bias + SiLU/ReLU) -- a thread block per output,
its threads sharing the sum (dlight's ``GeneralReduction``).

dlight's ``Matmul`` (the rule these functions reach otherwise) tiles the output 32 x 64 per
block of 128 threads: EfficientNet-B0's SE FCs at batch 32 (32 x 8 to 32 x 48 outputs, 32-1152
terms) are one block on one of the 132 SMs, each thread running up to 19328 serial stores (its
register tile over all of K); 16 launches per forward, ~0.3 ms estimated
(``bench/results/gpu-b32-static.md``).  ``GeneralReduction`` gives each output a block of 256
threads that sum its terms cooperatively (1152 terms: 4-5 per thread) -- 1536 blocks for the
largest, every SM busy, the bias and activation applied by the block after the sum.

Applies, with :data:`SMALL_CONTRACTIONS` on, to a function with one reduction block that reads two
or more buffers (a contraction, not a norm or a pool), static extents, a leading (batch) extent of
at least :data:`MIN_BATCH` (batch 1's are the GEMV rules'), at most :data:`MAX_OUTPUTS` reduced
values of :data:`MIN_TERMS`-:data:`MAX_TERMS` terms, and an output of exactly the reduced values
(the element-wise chain after it keeps their shape: a broadcast epilogue -- SE's gate times the
image -- is not taken, see :mod:`.gpu_broadcast_epilogue`, :mod:`.gpu_window`), and that dlight's
``Matmul`` would take (the rule runs just before it); None otherwise.

Invariant: each output is the same sum of the same products, added in a different order (a
tree over the threads), and the same element-wise expression of it.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import is_gpu, lone_contraction

SMALL_CONTRACTIONS = False
"""Off until device step 141 measures it (built and checked in session 51 without a GPU).  False:
these functions stay dlight's ``Matmul`` (one 32 x 64 tile per block), as before."""

MIN_BATCH = 2
"""Least leading extent of the reduction the rule takes (batch 1's SE FCs are GEMVs)."""

MAX_OUTPUTS = 16384
"""Most reduced values (a block each): 16 blocks of ``Matmul``'s 32 x 64 tiles or fewer --
an eighth of the SMs; larger outputs fill the GPU with tiles."""

MIN_TERMS = 32
"""Least terms per reduced value: fewer leave most of a 256-thread block idle."""

MAX_TERMS = 8192
"""Most terms per reduced value (32 serial per thread of a 256-thread block)."""


class GpuSmallContraction(ScheduleRule):
    """Few-output batched contraction as a block per output (module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not (SMALL_CONTRACTIONS and is_gpu(target) and isinstance(func, tirx.PrimFunc)):
            return None
        if not small_contraction(func):
            return None
        if dl.gpu.Matmul().apply(func, target, tunable) is None:
            return None  # only what dlight's Matmul (the next rule) would tile; the GEMV rules keep theirs
        return dl.gpu.GeneralReduction().apply(func, target, tunable)


def small_contraction(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` is one this rule takes (the module doc's conditions)."""
    found = lone_contraction(s_tir.Schedule(func))
    if found is None or not found.spatial:
        return False
    reduced = math.prod(found.spatial)
    if found.spatial[0] < MIN_BATCH or reduced > MAX_OUTPUTS or not MIN_TERMS <= found.terms <= MAX_TERMS:
        return False
    shape = getattr(func.params[-1], "shape", None) or ()  # the output (the last parameter)
    return (len(shape) > 0 and all(isinstance(d, tirx.IntImm) for d in shape)
            and math.prod(int(d) for d in shape) == reduced)
