"""CPU rule for injective kernels: element-wise chains, broadcast, transpose, reshape,
concat, gather, padding -- any function whose blocks are all spatial.

Every block with a single consumer is inlined into it, so each output is written by
one loop nest that reads the inputs directly; each remaining nest is fused into one
loop, split into SIMD-width chunks (vectorised) and run in parallel -- from
:data:`STRIDED_PARALLEL_MIN_ELEMENTS` outputs already when the nest reads an input
with a stride along its innermost loop (a transpose: each element costs a cache line),
and from :data:`HEAVY_PARALLEL_MIN_ELEMENTS` when each element rounds a float to an
integer (a quantisation: a divide, a round, a clip and a
narrowing cast per element).
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

import tvm
import tvm_ffi
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

HEAVY_PARALLEL_MIN_ELEMENTS = 1 << 15
"""Outputs from which a quantising nest (:func:`_quantising`: it rounds or casts a float
to an integer type) runs in parallel.  DynamicQuantizeLinear's quantisation of a
transformer's ``[128, 768]`` activation (96 Ki outputs; ``x / scale``, a round, a clip
and a uint8 cast each) sat under the contiguous threshold (256 Ki, set for memory-bound
copies) and ran on one thread: ~8.5 us on one core (~0.09 ns an output).  Measured in
dynamically quantised GPT-2 (2-core EPYC, 2 threads, the pool awake from the min/max
kernel just before): 8.3-8.7 -> 5.6-6.1 us (bench/results/cpu-int8-dynamic-2core.md);
alone, the pool asleep, a wash (8.3 -> 7.0-12.5 us).  32 Ki outputs (~3 us on one
core) is where 16 cores save about a wake-up (an estimate; not measured on a 16-core
CPU)."""


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
            parallel_vectorize(sch, blk, shape.lanes(str(stmt.writes[0].source.dtype)),
                               min_parallel=min_parallel(stmt))
        return sch


def min_parallel(stmt) -> int:
    """The outputs from which the nest of block ``stmt`` (inlined) runs in parallel:
    :data:`STRIDED_PARALLEL_MIN_ELEMENTS` for a strided read,
    :data:`HEAVY_PARALLEL_MIN_ELEMENTS` for a quantisation, else
    :data:`~hetpart.kernels.analysis.PARALLEL_MIN_ELEMENTS`."""
    if _strided(stmt):
        return STRIDED_PARALLEL_MIN_ELEMENTS
    if _quantising(stmt):
        return HEAVY_PARALLEL_MIN_ELEMENTS
    return PARALLEL_MIN_ELEMENTS


def _quantising(stmt) -> bool:
    """Whether block ``stmt`` rounds a float (``round``/``nearbyint``) or casts a float
    to an integer type: per-element arithmetic, not just a copy."""
    found = []

    def visit_call(e):
        if str(getattr(e.op, "name", "")).rsplit(".", 1)[-1] in ("round", "nearbyint"):
            found.append(e)

    def visit_cast(e):
        if _is_float(e.value.ty) and not _is_float(e.ty):
            found.append(e)

    tvm_ffi.structural_walk(stmt.body, [(tvm.ir.Call, visit_call), (tirx.Cast, visit_cast)], order="post")
    return bool(found)


def _is_float(dtype) -> bool:
    return str(dtype).startswith(("float", "bfloat"))


def _strided(stmt) -> bool:
    try:
        return reads_strided(stmt)
    except Exception:  # noqa: BLE001 - an index the analysis cannot read: the default threshold
        return False
