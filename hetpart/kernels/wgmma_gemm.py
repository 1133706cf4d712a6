"""A Hopper ``wgmma`` GEMM as a hand-written TIR PrimFunc (issue 17 feasibility spike).

Not wired into any build: :func:`wgmma_gemm` returns a standalone PrimFunc that
``tvm.compile`` turns into one CUDA kernel for ``sm_90a``; ``tools/gpu_wgmma_probe.py``
times it against hetpart's ``mma.sync`` rule, ``bench/results/gpu-wgmma-spike.md``
records what TVM 0.27 needed.  The geometry (layouts, descriptors, fragments, precisions)
is :mod:`hetpart.kernels.wgmma_layout`; split-K's reduction is :mod:`hetpart.kernels.wgmma_splitk`.

In:  ``A[M, K]`` (row-major, K contiguous), ``B[N, K]`` (the weight as ``[out, in]``, K
     contiguous: ``C = A @ B.T``), their dtypes by the precision
     (:data:`wgmma_layout.PRECISIONS`): ``bf16`` both bfloat16 (``m64nNk16.f32.bf16.bf16``),
     ``tf32`` both float32 (``m64nNk8.f32.tf32.tf32``; the tensor core truncates them to tf32),
     ``tf32r`` the same with A rounded to tf32 (``cvt.rna``) on its way to shared memory and B
     expected to hold tf32 values, ``f32a`` float32 A narrowed to bf16 (round to nearest even)
     on its way to shared memory and bfloat16 B; with a bias epilogue, ``bias[N]`` float32;
     with a residual one, ``R[M, N]`` float32 (read at the stored element: :data:`EPILOGUES`).
Out: ``C[M, N]`` float32 = sum over k of A[m, k] * B[n, k] in the instruction's input type,
     float32 sums (then ``+ bias[n]``, then GELU or ``+ R[m, n]``, by the epilogue); ``out_dtype``
     bfloat16: ``C`` bf16, each value rounded to nearest even in the store; with ``split > 1``, the
     float32 partial sums ``P[s * M + m, n]`` of K slice s instead (``wgmma_splitk.reduce`` sums them).

The kernel (``stages=1``: one stage, no TMA, no pipelining; ``stages>=2`` replaces the
copies by a ``cp.async`` pipeline, see :func:`wgmma_gemm`):

* one warpgroup (128 threads) per ``64 x bn`` tile of C (``bn`` 64 or 128: grid
  ``(N / bn, ceil(M / 64), split)``); M need not be a multiple of 64 (rows past M are
  loaded as zeros and not stored); N % bn == 0 and K % (tile K * split) == 0 are required;
* per tile of K (128 bytes per row: 64 bf16 or 32 tf32): each thread copies 16-byte chunks
  of the A and B tiles from global to shared memory, into the *no-swizzle K-major canonical
  layout* (:func:`smem_offset`), then ``fence.proxy.async.shared::cta`` (generic-proxy writes
  made visible to the async proxy wgmma reads through) and ``__syncthreads``;
* the accumulators pinned (:data:`PIN`: an empty ``asm volatile`` reading and writing each
  register in place, CUTLASS's ``warpgroup_fence_operand``) so the compiler moves no
  use of them across the asynchronous MMA; ``wgmma.fence``; four ``wgmma.mma_async``
  (k16 bf16 / k8 tf32), A and B both from shared memory through matrix descriptors
  (:func:`descriptor_fields`), accumulating into ``bn / 2`` float32 registers per thread;
  ``wgmma.commit_group``; ``wgmma.wait_group 0``; the accumulators pinned again;
  ``__syncthreads`` before the tiles are overwritten;
* the accumulators stored by the D fragment layout (:func:`d_fragment`), rows >= M skipped,
  through the epilogue where there is one.

The third spike's options of the pipeline (``stages >= 2``; defaults off, their code unchanged):
``swizzle="128b"`` stages A and B in the 128-byte swizzled K-major layout (cp.async to
XOR-swizzled addresses from a run-time 1024-byte boundary, descriptors of layout type
SWIZZLE_128B, SBO 1024 bytes) and ``consumers=2`` runs two warpgroups per CTA on a 128-row tile
(each its own m64 wgmmas over its half of A against the one B tile), ``bn`` up to 256; where
everything lies is :class:`wgmma_layout.PipelinePlan`.

The batch-32 spike's options (defaults off, their code unchanged): ``inflight=1`` ends each K tile with
``wgmma.wait_group 1`` instead of 0 (one tile's wgmmas run while the next tile's are issued; the refill
one stage later: :mod:`hetpart.kernels.wgmma_schedule`, whose model checks the stage-release order) and
``store="pairs"`` stores the D fragment's column pairs as one 8-byte ``float2`` (bf16: ``nv_bfloat162``)
each (:data:`STORES`).

Invariant: the shared-memory layout, the descriptor's LBO/SBO and the fragment layout
are the PTX ISA's (sections cited at each function); the CPU tests check the layout
against the ISA's canonical form and the fragment map for coverage, the GPU test
checks the numbers.  The ``bf16`` kernels' CUDA C is that of the first spike (the
probe's first results stay comparable).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import tvm
from tvm import tirx
from tvm.script import tirx as T

from hetpart.kernels.tir_macro import macro

from hetpart.kernels import wgmma_layout as lay
from hetpart.kernels import wgmma_schedule
from hetpart.kernels import wgmma_ws
from hetpart.kernels.wgmma_layout import (TILE_M, TILE_N_CHOICES, WARPGROUP, d_fragment,  # noqa: F401 - re-exported
                                          descriptor_fields, k_step_bytes, smem_offset)

TILE_K = lay.BF16.tile_k
"""K elements of bf16 staged per step (four wgmma k16 instructions); tf32: ``PRECISIONS['tf32'].tile_k``."""
MMA_K = lay.BF16.mma_k
"""wgmma's K for 16-bit inputs (tf32: 8)."""
CHUNK = lay.BF16.chunk
"""bf16 elements per 16-byte row of a core matrix (one vector copy)."""
ELEM_BYTES = lay.BF16.elem_bytes
EPILOGUES = (None, "bias", "bias_gelu", "bias_residual", "residual")
"""What the store (split 1) or the split-K reduction applies: nothing, ``+ bias[n]``,
``+ bias[n]`` then GELU in its erf form ``0.5 y (1 + erf(y / sqrt 2))`` (ONNX Gelu, default),
computed as hetpart's fused kernels compute it (:func:`gelu_value`; within a few ulps of it with
:data:`GELU_FAST_DIVIDE`), ``(+ bias[n]) + R[m, n]``
or ``+ R[m, n]`` (:data:`RESIDUAL_EPILOGUES`: a residual ``R [M, N]`` float32 read at the
store's own indices, added once, last)."""
BIAS_EPILOGUES = ("bias", "bias_gelu", "bias_residual")
"""The epilogues that read ``bias [N]``."""
RESIDUAL_EPILOGUES = ("bias_residual", "residual")
"""The epilogues that read a residual ``R [M, N]`` (a kernel parameter after the bias)."""
PRODUCERS = wgmma_ws.PRODUCERS
"""Who loads the pipeline's tiles: ``threads`` (the consumers, cp.async) or ``warp`` (a producer
warpgroup, TMA + mbarriers: :mod:`hetpart.kernels.wgmma_ws`)."""
PIPELINE_SCOPE = "shared.dyn"
"""Shared memory of the pipelined kernel: dynamic (several stages pass 48 KB; TVM's CUDA
runtime raises the kernel's dynamic shared-memory limit at launch)."""
PIN = "hetpart_wgmma_pin"
PIN_SOURCE = """
__forceinline__ __device__ void hetpart_wgmma_pin(float& reg) {
  asm volatile("" : "+f"(reg) :: "memory");
}
"""
"""An empty ``asm volatile`` that reads and writes one accumulator register in place
(CUTLASS's ``warpgroup_fence_operand``).  TVM 0.27's ``T.cuda.wgmma.noop_barrier`` does
not build on a buffer element (its codegen reads ``reg.dtype``, which a TensorLoad no
longer has), and its helper takes the register by value, which pins a copy."""
TF32_RNA = "hetpart_tf32_rna"
TF32_RNA_SOURCE = """
__forceinline__ __device__ float hetpart_tf32_rna(float x) {
  unsigned int r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return __uint_as_float(r);
}
"""
"""float32 -> the nearest tf32 value, ties away (``cvt.rna.tf32.f32``; its result is a
float32 bit pattern with the low 13 mantissa bits zero), for the ``tf32r`` precision's A."""
TIR_PIPELINE = "tirx"
"""TVM 0.27's lowering for hand-written TIRx kernels.  The default ("s_tir") pipeline's
CompactBufferAllocation shrinks a buffer to the elements TIR sees indexed -- a cp.async
writing 8 elements from one address, or wgmma reading through a descriptor, is invisible
to it -- and its MergeSharedMemoryAllocations fails on ``buffer.data`` in a call; the
"tirx" pipeline has neither (nor ThreadSync: every barrier here is written out)."""


@dataclass(frozen=True)
class Shape:
    """A GEMM's M, N, K, the N of one warpgroup's tile, the K elements of one staged tile
    (64 bf16, 32 tf32), the number of K slices (split-K) and the M of one CTA's tile (64 per
    consumer warpgroup)."""

    m: int
    n: int
    k: int
    bn: int = 128
    tile_k: int = TILE_K
    split: int = 1
    tile_m: int = TILE_M

    def check(self) -> None:
        """Raise ValueError unless the kernel supports this shape."""
        if self.bn not in TILE_N_CHOICES:
            raise ValueError(f"bn must be one of {TILE_N_CHOICES}, got {self.bn}")
        if self.split < 1:
            raise ValueError(f"split must be >= 1, got {self.split}")
        if self.m < 1 or self.n % self.bn or self.k % (self.tile_k * self.split):
            raise ValueError(f"need M >= 1, N % {self.bn} == 0 and K % ({self.tile_k} * split {self.split}) "
                             f"== 0; got M={self.m} N={self.n} K={self.k}")

    @property
    def grid(self) -> tuple[int, int]:
        """(blockIdx.x extent: N tiles, blockIdx.y extent: M tiles); blockIdx.z: the split."""
        return self.n // self.bn, -(-self.m // self.tile_m)

    @property
    def ctas(self) -> int:
        """Thread blocks of one launch (all three grid axes)."""
        return self.grid[0] * self.grid[1] * self.split


def epilogue_value(x, bias, col, epilogue, residual=None, row=None):
    """``x`` (a float32 TIR value of output ``[row, col]``) through the epilogue
    (:data:`EPILOGUES`); ``bias`` the float32 ``[N]`` buffer (None when the epilogue reads
    none), ``residual`` the float32 ``[M, N]`` one (read at ``[row, col]``, the store's
    indices; None when the epilogue reads none)."""
    if epilogue is None:
        return x
    y = x + bias[col] if epilogue in BIAS_EPILOGUES else x
    if epilogue in RESIDUAL_EPILOGUES:
        return y + residual[row, col]
    if epilogue == "bias":
        return y
    return gelu_value(y)


SQRT2_F32 = 1.4142135381698608
"""float32(sqrt 2): the constant an export divides by (``Div(x, sqrt(2))``)."""
INV_SQRT2_F32 = 0.7071067690849304
"""float32(1 / sqrt 2): what :data:`GELU_FAST_DIVIDE`'s GELU multiplies by instead."""

GELU_FAST_DIVIDE = False
"""Compute the ``bias_gelu`` epilogue's two float32 divisions cheaply (read by :func:`gelu_value` when a
kernel is built, so a tool that sets it builds with it): ``y / float32(sqrt 2)`` as
``y * float32(1 / sqrt 2)`` (:data:`INV_SQRT2_F32`; within one ulp of the quotient) and ``fast_erf``'s
rational ``p / q`` as ``__fdividef(p, q)`` (PTX ``div.approx.f32``: ``MUFU.RCP`` and a multiply, within 2
ulp; ``q`` lies in [-2.4, -0.0142], far from the range where ``__fdividef`` gives 0).  Off (the default):
the epilogue is bit for bit the fused kernel's (hetpart builds with IEEE division, ``div.rn.f32``: a
reciprocal, four FMAs, a range check and a slow-path branch each -- 64 of them per thread of a 128 x 64
tile), the code of before.
Why: device step 161's ViT-B/16 b32 bf16 profile (H100) has the fc1 + GELU wgmma GEMM (``bf16``, bn 64,
M = 6304, bf16 store) at 132.6 us against 110.2 for the same GEMM with no epilogue and a float32 store
(step 167's probe), while qkv's bias + bf16 store cost ~5 us over its probe (90.8 vs 86.0): the GELU's
~16 us is the epilogue's arithmetic, not a missing substitution -- the profile's table had cut the kernel's
name before ``_bf16a_wgmma_kernel`` (``tools/gpu_kernel_profile.py``'s ``short_name`` keeps it now).  That
kernel's PTX has 1145 instructions against 409 with the bias alone (32 values a thread, 64 ``div.rn.f32``),
its sm_90a cubin 45.4 KB against 16.9; with the switch 31.5 KB (``div.approx.f32``, no spills either way):
on the step-161 numbers perhaps 5-8 us of fc1's ~130, x 12 layers.  On, the GELU is within
1e-6 (1 + |y|) of the fused kernel's and no less accurate against float64 (``tests/test_kernels_wgmma_gelu.py``);
stored as bf16 the two agree but for rare one-ulp ties where y >= -3 (below, the output is the residue of
``1 + erf``, a few 1e-7 wide in both).  :mod:`.wgmma_match` compares the *fused* kernel's epilogue with
``math.erf``'s (``EPILOGUE_TOL``), unchanged.
Decides it (H100; 12 fc1 GEMMs of ViT, 6 of DistilBERT):
``tools/gpu_model_switch_ab.py vit_b_16-b32.onnx --precision bf16
--before hetpart.kernels.wgmma_gemm.GELU_FAST_DIVIDE=0 --after hetpart.kernels.wgmma_gemm.GELU_FAST_DIVIDE=1``
(and distilbert b32), after ``tests/test_kernels_wgmma_gelu.py``'s cuda tests."""
FAST_DIVIDE = "__fdividef"
"""CUDA's approximate float32 division (:data:`GELU_FAST_DIVIDE`)."""


def gelu_value(y, fast: bool | None = None):
    """The erf-GELU of the float32 TIR value ``y`` as the kernels the ``wgmma`` GEMM replaces
    compute it, operation for operation: the export's ``Div``/``Erf``/``Add``/``Mul``/``Mul``
    (torch.onnx's ``nn.GELU``, BERT's and ViT's exports) with ``Erf`` as hetpart's importer
    makes it (:mod:`hetpart.importer.fast_erf`: TVM's ``topi.fast_erf``, NaN passed through):
    ``((where(isnan(d), d, fast_erf(d)) + 1) * y) * 0.5`` with ``d = y / float32(sqrt 2)``.
    So for that spelling the substituted kernel's epilogue is bit-for-bit the fused kernel's
    on the same accumulator (an export's other spelling -- ``x * 0.7071``, ONNX ``Gelu`` ->
    ``relax.nn.gelu`` -- differs in the last bits; :mod:`.wgmma_match` accepts any within
    1e-5).  ``y`` and ``d`` are bound once (``Let``): the expression reads each many times.
    ``fast`` (default :data:`GELU_FAST_DIVIDE`, read now): ``d = y * float32(1 / sqrt 2)`` and
    ``fast_erf``'s quotient by :data:`FAST_DIVIDE` -- within a few ulps, no longer bit for bit."""
    fast = GELU_FAST_DIVIDE if fast is None else fast
    yv, dv = tirx.Var("gelu_y", "float32"), tirx.Var("gelu_d", "float32")
    erf = tirx.Select(tirx.isnan(dv), dv, fast_erf_value(dv, fast))
    body = (yv * (erf + tirx.FloatImm("float32", 1.0))) * tirx.FloatImm("float32", 0.5)
    d = yv * tirx.FloatImm("float32", INV_SQRT2_F32) if fast else yv / tirx.FloatImm("float32", SQRT2_F32)
    return tirx.Let(yv, y, tirx.Let(dv, d, body))


def fast_erf_value(v, fast: bool = False):
    """TVM's ``topi.fast_erf`` of the float32 TIR value ``v``: the very expression
    ``topi.fast_erf`` builds (read off it, each load of its input replaced by ``v``), so the two
    cannot drift apart across TVM versions (a node kind it did not use before raises); ``fast``:
    each division of it (the one ``p / q``) as :data:`FAST_DIVIDE`."""
    return _rebuild(_fast_erf_body(), v, fast)


@functools.lru_cache(maxsize=1)
def _fast_erf_body():
    from tvm import te, topi

    return topi.fast_erf(te.placeholder((1,), "float32", name="fast_erf_in")).op.body[0]


_BINARY = ("Add", "Sub", "Mul", "Div", "Min", "Max")


def _rebuild(e, v, fast: bool = False):
    if isinstance(e, tvm.ir.TensorLoad) or (isinstance(e, tvm.ir.Call) and str(getattr(e.op, "name", "")) == "te.tensor_load"):
        return v  # a load of the placeholder
    if isinstance(e, tirx.FloatImm):
        return e
    for name in _BINARY:
        cls = getattr(tirx, name)
        if isinstance(e, cls):
            a, b = _rebuild(e.a, v, fast), _rebuild(e.b, v, fast)
            if fast and cls is tirx.Div:
                return tirx.call_pure_extern("float32", FAST_DIVIDE, a, b)
            return cls(a, b)
    raise NotImplementedError(f"topi.fast_erf uses a {type(e).__name__}: extend wgmma_gemm._rebuild")


STORES = ("scalar", "pairs")
"""How the pipelined kernel stores its accumulators: ``scalar`` (the default, every earlier kernel's
code) one 4-byte (bf16: 2-byte) store per register straight from the D fragment layout -- a warp's
instruction writes 8 rows x 4 threads with an 8-byte stride, half of each 32-byte sector; ``pairs``
the fragment's column pairs ``acc[2j], acc[2j + 1]`` (columns ``c, c + 1``, ``c`` even:
:func:`wgmma_layout.d_fragment`) as one 8-byte ``float2`` (bf16: one 4-byte ``nv_bfloat162``) store,
each row's 32 bytes whole (:data:`PAIR_STORE`)."""
PAIR_STORE = {"float32": "hetpart_st2_f32", "bfloat16": "hetpart_st2_bf16"}
"""The helper storing two adjacent values of C's dtype (:data:`PAIR_STORE_SOURCE`)."""
PAIR_STORE_SOURCE = {"float32": """
__forceinline__ __device__ void hetpart_st2_f32(float* p, float a, float b) {
  *reinterpret_cast<float2*>(p) = make_float2(a, b);
}
""", "bfloat16": """
__forceinline__ __device__ void hetpart_st2_bf16(nv_bfloat16* p, nv_bfloat16 a, nv_bfloat16 b) {
  nv_bfloat162 v;
  v.x = a;
  v.y = b;
  *reinterpret_cast<nv_bfloat162*>(p) = v;
}
"""}
"""Both take the address of the even column (8-byte aligned for float32, 4 for bf16: N is a multiple
of 64 and the column even) and the two values already in C's dtype (the rounding is the scalar
store's ``Cast``)."""

OUT_DTYPES = ("float32", "bfloat16")
"""``C``'s dtypes: float32, or bfloat16 rounded to nearest even in the store (an output read
only as another GEMM's A: :mod:`hetpart.importer.low_precision_activations`)."""


def stored_value(out_dtype: str):
    """The function a store applies to its float32 value: the identity for float32 (the code
    of every earlier kernel unchanged), a cast (round to nearest even) for bfloat16."""
    if out_dtype == "float32":
        return lambda v: v
    return lambda v: tirx.Cast(out_dtype, v)


def _check_out_dtype(out_dtype) -> None:
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype!r}")


def _check_epilogue(epilogue) -> None:
    if epilogue not in EPILOGUES:
        raise ValueError(f"epilogue must be one of {EPILOGUES}, got {epilogue!r}")


# --- the kernel ----------------------------------------------------------------------
def _chunk_row(c, tx):
    """:func:`wgmma_layout.chunk_row` (kept here for the tests of the first spike)."""
    return lay.chunk_row(c, tx)


def _chunk_k(c, tx, chunk: int = CHUNK):
    """:func:`wgmma_layout.chunk_k`."""
    return lay.chunk_k(c, tx, chunk)


def wgmma_gemm(m: int, n: int, k: int, bn: int = 128, *, stages: int = 1,
               swapped_descriptor: bool = False, precision: str = "bf16", split: int = 1,
               epilogue: str | None = None, swizzle: str = "none", consumers: int = 1,
               out_dtype: str = "float32", producer: str = "threads", inflight: int = 0,
               store: str = "scalar") -> tvm.tirx.PrimFunc:
    """The PrimFunc ``main(A, B, C)`` (module doc): ``A [m, k]``, ``B [n, k]`` of the
    precision's dtypes, ``C [m, n]`` float32; with an epilogue and ``split == 1``,
    ``main(A, B, bias, C)`` (``bias [n]`` float32; a residual epilogue: ``main(A, B[, bias], R, C)``,
    ``R [m, n]`` float32); with ``split > 1``, ``main(A, B, P)``,
    ``P [split * m, n]`` float32 the partial sums of each K slice (no epilogue here: the
    reduction applies it).

    ``bn``: N of one warpgroup's tile (64, 128 or 256: the instruction m64n{bn} and bn / 2
    accumulator registers per thread).  ``stages``: 1, the plain kernel (vector loads
    and stores to shared memory, then the wgmmas); >= 2, a ``cp.async`` pipeline of that
    many shared-memory buffers (tiles ``stages - 1`` ahead in flight while the wgmmas of
    the current one run; dynamic shared memory); a converted A (``f32a``) is loaded,
    narrowed and stored by the threads instead, at the same point of the pipeline.
    ``swapped_descriptor``: see :func:`descriptor_fields`.  ``precision``: a key of
    :data:`wgmma_layout.PRECISIONS`.  ``split``: K slices, one per ``blockIdx.z``.
    ``epilogue``: one of :data:`EPILOGUES`.  ``swizzle`` (:data:`wgmma_layout.SWIZZLES`):
    ``128b`` stages A and B in the 128-byte swizzled layout (cp.async to swizzled addresses,
    row-major copy map, descriptors of layout type SWIZZLE_128B; the tiles start at a run-time
    1024-byte boundary of the dynamic shared memory).  ``consumers``: 2 runs two warpgroups
    (256 threads) per CTA on a 128-row tile, warpgroup w's wgmmas reading A rows 64w.. against
    the one B tile.  Both need ``stages >= 2`` (the pipeline; :class:`wgmma_layout.PipelinePlan`
    says where everything is).  ``out_dtype`` (:data:`OUT_DTYPES`): ``C``'s dtype; ``bfloat16``
    rounds each stored value (after the epilogue) to nearest even (``split == 1`` only: a split's
    reduction stores, :func:`wgmma_splitk.reduce`).  Raises ValueError for an unsupported shape
    or option.  ``producer`` (:data:`PRODUCERS`): ``threads`` (default) the consumers issue the
    loads themselves; ``warp`` the warp-specialised spike (:mod:`hetpart.kernels.wgmma_ws`: a
    producer warpgroup filling the stages by TMA, full / empty mbarriers; needs ``stages >= 2``,
    ``swizzle="128b"``, ``consumers=2`` and a precision copied as is: ``bf16`` or ``tf32``).
    ``inflight`` (:data:`wgmma_schedule.INFLIGHTS`; the cp.async pipeline only): 0 (default) every K
    tile ends with ``wgmma.wait_group 0``; 1 with ``wgmma.wait_group 1`` (one tile's wgmmas still run
    while the next tile's are issued; the refill goes into the stage of tile ``ko - 2``, so
    ``stages - 2`` tiles are in flight: :class:`wgmma_schedule.Schedule`, needs ``stages >= 3``).
    ``store`` (:data:`STORES`; ``stages >= 2``): ``scalar`` (default) or ``pairs`` (8-byte stores of
    the fragment's column pairs).
    """
    prec = lay.precision(precision)
    if store not in STORES:
        raise ValueError(f"store must be one of {STORES}, got {store!r}")
    if inflight and producer != "threads":
        raise ValueError("inflight is an option of the cp.async pipeline (producer='warp' keeps one tile in flight)")
    if store != "scalar" and stages < 2:
        raise ValueError("store='pairs' is an option of the pipelined kernels: need stages >= 2")
    if inflight and stages < 2:
        raise ValueError("inflight is an option of the cp.async pipeline: need stages >= 2")
    if producer not in PRODUCERS:
        raise ValueError(f"producer must be one of {PRODUCERS}, got {producer!r}")
    ws = producer == "warp"
    if ws:
        wgmma_ws.check_options(prec, stages, swizzle, consumers)
    _check_epilogue(epilogue)
    _check_out_dtype(out_dtype)
    if split > 1 and out_dtype != "float32":
        raise ValueError("with split > 1 the partial sums are float32: the reduction narrows (wgmma_splitk.reduce)")
    stored = stored_value(out_dtype)
    if split > 1 and epilogue is not None:
        raise ValueError("with split > 1 the epilogue belongs to the reduction (wgmma_splitk.reduce)")
    ch, tile_k = prec.chunk, prec.tile_k
    plan = lay.PipelinePlan(prec, bn, max(stages, 1), swizzle, consumers, swapped_descriptor)
    shape = Shape(m, n, k, bn, tile_k, split, plan.a_rows)
    shape.check()
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if (swizzle != "none" or consumers != 1) and stages < 2:
        raise ValueError("swizzle and consumers are options of the cp.async pipeline: need stages >= 2")
    grid_n, grid_m = shape.grid
    n_acc = bn // 2
    a_rows, b_rows = TILE_M, bn
    a_size, b_size = a_rows * tile_k, b_rows * tile_k
    a_lbo, a_sbo = descriptor_fields(a_rows, swapped_descriptor)
    b_lbo, b_sbo = descriptor_fields(b_rows, swapped_descriptor)
    # descriptors advance in 16-byte units (their address field drops 4 bits)
    a_step, b_step = k_step_bytes(a_rows) // 16, k_step_bytes(b_rows) // 16
    a_chunks, b_chunks = a_size // ch // WARPGROUP, b_size // ch // WARPGROUP
    k_tiles, k_steps = k // tile_k // split, tile_k // prec.mma_k
    a_dtype, b_dtype, s_dtype = prec.a_global, prec.b_global, prec.smem
    a_zero = tvm.tirx.const(0, a_dtype)
    wgmma = T.ptx[prec.instruction(bn)]
    trans = (0, 0) if prec.transpose_immediates else ()

    def tile_of(t, bz):
        """Global K tile of this CTA's tile ``t`` (its K slice's first, past the split)."""
        return t if bz is None else bz * k_tiles + t

    def out_row(r, bz):
        return r if bz is None else bz * m + r

    half = ch // 2  # a converted A's chunk is read as two 16-byte halves (TVM's float32x8 is broken)

    @macro
    def pin(acc):
        # every accumulator pinned in place (PIN): no use of one moves across an asynchronous wgmma
        for i in T.unroll(n_acc):
            T.cuda.func_call(PIN, acc[i], source_code=PIN_SOURCE)

    @macro
    def warpgroup_store(acc, C, bias, R, bx, by, bz, tx):
        # the one-warpgroup tile's scalar store (the first spike's code): each accumulator at its
        # D fragment place (rows >= M skipped), through the epilogue and C's dtype
        for i in T.unroll(n_acc):
            if by * TILE_M + d_fragment(tx, i)[0] < m:
                C[out_row(by * TILE_M + d_fragment(tx, i)[0], bz), bx * bn + d_fragment(tx, i)[1]] = \
                    stored(epilogue_value(acc[i], bias, bx * bn + d_fragment(tx, i)[1], epilogue,
                                          R, by * TILE_M + d_fragment(tx, i)[0]))

    @macro
    def store_a_rounded(dst, base, A, tile, by, tx):
        # A's tile ``tile`` into ``dst[base:]`` through registers (a_round): per chunk, one
        # float4 load (rows past M as zeros), each element rounded (TF32_RNA), one float4 store
        areg = T.alloc_buffer((ch,), "float32", scope="local")
        for c in T.unroll(a_chunks):
            for v in T.vectorized(ch):
                areg[v] = T.if_then_else(by * TILE_M + _chunk_row(c, tx) < m,
                                         A[T.min(by * TILE_M + _chunk_row(c, tx), m - 1),
                                           tile * tile_k + _chunk_k(c, tx, ch) + v],
                                         a_zero)
            for v in T.unroll(ch):
                areg[v] = T.cuda.func_call(TF32_RNA, areg[v], source_code=TF32_RNA_SOURCE, return_type="float32")
            for v in T.vectorized(ch):
                dst[base + smem_offset(_chunk_row(c, tx), _chunk_k(c, tx, ch) + v, a_rows, ch)] = areg[v]

    @macro
    def store_a_narrowed(dst, base, A, tile, by, tx):
        # A's tile ``tile`` into ``dst[base:]`` through registers: per chunk, two float4 loads
        # (rows past M as zeros), each narrowed to bf16 (round to nearest even) and stored
        if prec.a_round is not None:
            store_a_rounded(dst, base, A, tile, by, tx)
        else:
            for c in T.unroll(a_chunks):
                for h in T.unroll(2):
                    for v in T.vectorized(half):
                        dst[base + smem_offset(_chunk_row(c, tx), _chunk_k(c, tx, ch) + h * half + v, a_rows, ch)] = \
                            T.Cast(s_dtype, T.if_then_else(
                                by * TILE_M + _chunk_row(c, tx) < m,
                                A[T.min(by * TILE_M + _chunk_row(c, tx), m - 1),
                                  tile * tile_k + _chunk_k(c, tx, ch) + h * half + v],
                                a_zero))

    @macro
    def plain_body(A, B, C, bias, R, bx, by, bz, tx):
        As = T.alloc_buffer((a_size,), s_dtype, scope="shared", align=128)
        Bs = T.alloc_buffer((b_size,), s_dtype, scope="shared", align=128)
        acc = T.alloc_buffer((n_acc,), "float32", scope="local")
        desc_a = T.alloc_buffer((1,), "uint64", scope="local")
        desc_b = T.alloc_buffer((1,), "uint64", scope="local")
        for i in T.unroll(n_acc):
            acc[i] = T.float32(0)
        for ko in range(k_tiles):
            if prec.a_converted:
                store_a_narrowed(As, 0, A, tile_of(ko, bz), by, tx)
            else:
                for c in T.unroll(a_chunks):
                    for v in T.vectorized(ch):
                        As[smem_offset(_chunk_row(c, tx), _chunk_k(c, tx, ch) + v, a_rows, ch)] = T.if_then_else(
                            by * TILE_M + _chunk_row(c, tx) < m,
                            A[T.min(by * TILE_M + _chunk_row(c, tx), m - 1), tile_of(ko, bz) * tile_k + _chunk_k(c, tx, ch) + v],
                            a_zero)
            for c in T.unroll(b_chunks):
                for v in T.vectorized(ch):
                    Bs[smem_offset(_chunk_row(c, tx), _chunk_k(c, tx, ch) + v, b_rows, ch)] = \
                        B[bx * bn + _chunk_row(c, tx), tile_of(ko, bz) * tile_k + _chunk_k(c, tx, ch) + v]
            T.ptx.fence.proxy.async_.shared__cta()
            T.tvm_storage_sync("shared")
            pin(acc)
            T.ptx.wgmma.fence.sync.aligned()
            T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_a[0]), T.address_of(As[0]),
                                                  a_lbo, a_sbo, 0)
            T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_b[0]), T.address_of(Bs[0]),
                                                  b_lbo, b_sbo, 0)
            for kk in T.unroll(k_steps):
                wgmma(*[acc[i] for i in range(n_acc)],
                      desc_a[0] + T.uint64(kk * a_step), desc_b[0] + T.uint64(kk * b_step),
                      True, 1, 1, *trans)
            T.ptx.wgmma.commit_group.sync.aligned()
            T.ptx.wgmma.wait_group.sync.aligned(0)
            pin(acc)
            T.tvm_storage_sync("shared")
        warpgroup_store(acc, C, bias, R, bx, by, bz, tx)

    sched = wgmma_schedule.Schedule(stages, inflight, k_tiles) if stages >= 2 else None
    pair_store, pair_store_source = PAIR_STORE[out_dtype], PAIR_STORE_SOURCE[out_dtype]
    a_stage, b_stage = plan.a_stage, plan.b_stage  # descriptor units
    cp_async = T.ptx["cp.async.cg.shared.global"]
    threads, tile_m = plan.threads, plan.a_rows
    if plan.consumers == 1 and swizzle == "none":  # the first spike's expressions (its code unchanged)
        p_row, p_k = _chunk_row, (lambda c, tx: _chunk_k(c, tx, ch))
        a_off = b_off = None
    else:
        p_row, p_k = plan.copy_row, plan.copy_k
        a_off, b_off = plan.a_offset, plan.b_offset
    p_a_lbo, p_a_sbo = plan.a_fields
    p_b_lbo, p_b_sbo = plan.b_fields
    p_a_step, p_b_step = plan.a_step, plan.b_step

    b_base = stages * a_size  # S: the A tiles of every stage, then the B tiles (== plan.b_base)
    # the plan's layout (a_off set): tile sizes, offsets, descriptor steps all from ``plan``
    p_a_size, p_b_size, p_b_base = plan.a_size, plan.b_size, plan.b_base

    def fragment_row(tx, i):
        return lay.cta_fragment(tx, i, plan.consumers)[0]

    def fragment_col(tx, i):
        return lay.cta_fragment(tx, i, plan.consumers)[1]

    @macro
    def store_a_plan(dst, base, A, tile, by, tx):
        # store_a_narrowed for the plan's layout and copy map (swizzled / two consumers)
        if prec.a_round is not None:
            areg = T.alloc_buffer((ch,), "float32", scope="local")
            for c in T.unroll(plan.a_chunks):
                for v in T.vectorized(ch):
                    areg[v] = T.if_then_else(
                        by * tile_m + p_row(c, tx) < m,
                        A[T.min(by * tile_m + p_row(c, tx), m - 1), tile * tile_k + p_k(c, tx) + v], a_zero)
                for v in T.unroll(ch):
                    areg[v] = T.cuda.func_call(TF32_RNA, areg[v], source_code=TF32_RNA_SOURCE, return_type="float32")
                for v in T.vectorized(ch):
                    dst[base + a_off(p_row(c, tx), p_k(c, tx) + v)] = areg[v]
        else:
            for c in T.unroll(plan.a_chunks):
                for h in T.unroll(2):
                    for v in T.vectorized(half):
                        dst[base + a_off(p_row(c, tx), p_k(c, tx) + h * half + v)] = T.Cast(s_dtype, T.if_then_else(
                            by * tile_m + p_row(c, tx) < m,
                            A[T.min(by * tile_m + p_row(c, tx), m - 1), tile * tile_k + p_k(c, tx) + h * half + v],
                            a_zero))

    @macro
    def load_tile(S, A, B, tile, stage, bx, by, tx, pad):
        # tile ``tile`` of K into buffer ``stage``: 16-byte cp.async per chunk; A's rows past
        # M read a clamped (valid) address with src-size 0, which zero-fills the chunk; a
        # converted A goes through registers (loaded, narrowed, stored 16 bytes per chunk)
        if prec.a_converted:
            if a_off is None:
                store_a_narrowed(S, stage * a_size, A, tile, by, tx)
            else:
                store_a_plan(S, pad + stage * p_a_size, A, tile, by, tx)
        elif a_off is None:
            for c in T.unroll(a_chunks):
                cp_async(T.address_of(S[stage * a_size + smem_offset(_chunk_row(c, tx), _chunk_k(c, tx, ch), a_rows, ch)]),
                         T.address_of(A[T.min(by * TILE_M + _chunk_row(c, tx), m - 1),
                                        tile * tile_k + _chunk_k(c, tx, ch)]),
                         16, T.Select(by * TILE_M + _chunk_row(c, tx) < m, T.uint32(16), T.uint32(0)))
        else:
            for c in T.unroll(plan.a_chunks):
                cp_async(T.address_of(S[pad + stage * p_a_size + a_off(p_row(c, tx), p_k(c, tx))]),
                         T.address_of(A[T.min(by * tile_m + p_row(c, tx), m - 1), tile * tile_k + p_k(c, tx)]),
                         16, T.Select(by * tile_m + p_row(c, tx) < m, T.uint32(16), T.uint32(0)))
        if b_off is None:
            for c in T.unroll(b_chunks):
                cp_async(T.address_of(S[b_base + stage * b_size + smem_offset(_chunk_row(c, tx), _chunk_k(c, tx, ch), b_rows, ch)]),
                         T.address_of(B[bx * bn + _chunk_row(c, tx), tile * tile_k + _chunk_k(c, tx, ch)]),
                         16, T.uint32(16))
        else:
            for c in T.unroll(plan.b_chunks):
                cp_async(T.address_of(S[pad + p_b_base + stage * p_b_size + b_off(p_row(c, tx), p_k(c, tx))]),
                         T.address_of(B[bx * bn + p_row(c, tx), tile * tile_k + p_k(c, tx)]),
                         16, T.uint32(16))

    @macro
    def pair_epilogue(acc, C, bias, R, bx, by, bz, ctx):
        # store="pairs": acc[2j], acc[2j + 1] lie at columns c, c + 1 (c even) of one row: one
        # 8-byte (bf16: 4-byte) store of both, each through the epilogue and C's dtype as before
        for j in T.unroll(n_acc // 2):
            if by * tile_m + fragment_row(ctx, 2 * j) < m:
                T.cuda.func_call(
                    pair_store,
                    T.address_of(C[out_row(by * tile_m + fragment_row(ctx, 2 * j), bz),
                                   bx * bn + fragment_col(ctx, 2 * j)]),
                    stored(epilogue_value(acc[2 * j], bias, bx * bn + fragment_col(ctx, 2 * j), epilogue,
                                          R, by * tile_m + fragment_row(ctx, 2 * j))),
                    stored(epilogue_value(acc[2 * j + 1], bias, bx * bn + fragment_col(ctx, 2 * j) + 1, epilogue,
                                          R, by * tile_m + fragment_row(ctx, 2 * j))),
                    source_code=pair_store_source)

    @macro
    def scalar_epilogue(acc, C, bias, R, bx, by, bz, ctx):
        # the default store: each accumulator through the epilogue and C's dtype, one store each
        for i in T.unroll(n_acc):
            if by * tile_m + fragment_row(ctx, i) < m:
                C[out_row(by * tile_m + fragment_row(ctx, i), bz), bx * bn + fragment_col(ctx, i)] = \
                    stored(epilogue_value(acc[i], bias, bx * bn + fragment_col(ctx, i), epilogue,
                                          R, by * tile_m + fragment_row(ctx, i)))

    @macro
    def pipelined_core(S, A, B, C, bias, R, bx, by, bz, tx, pad, wg_units):
        acc = T.alloc_buffer((n_acc,), "float32", scope="local")
        desc_a = T.alloc_buffer((1,), "uint64", scope="local")
        desc_b = T.alloc_buffer((1,), "uint64", scope="local")
        for i in T.unroll(n_acc):
            acc[i] = T.float32(0)
        # the descriptors of stage 0; later stages and k16 steps add to the address field
        if a_off is None:
            T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_a[0]), T.address_of(S[0]), a_lbo, a_sbo, 0)
            T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_b[0]), T.address_of(S[b_base]),
                                                  b_lbo, b_sbo, 0)
        else:
            T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_a[0]), T.address_of(S[pad]), p_a_lbo, p_a_sbo,
                                                  plan.tvm_swizzle)
            T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_b[0]), T.address_of(S[pad + p_b_base]),
                                                  p_b_lbo, p_b_sbo, plan.tvm_swizzle)
        # the schedule's numbers (wgmma_schedule; inflight 0: stages - 1, its prologue, stages - 2, 0)
        for s in T.unroll(sched.prologue_groups):
            if s < sched.prologue:
                load_tile(S, A, B, tile_of(s, bz), s, bx, by, tx, pad)
            T.ptx.cp.async_.commit_group()
        for ko in range(k_tiles):
            # this thread's copies of tile ko have landed; after the barrier everyone's have,
            # and every wgmma of tile ko - 1 (inflight 1: ko - 2) is done (each thread waited for its own)
            T.ptx.cp.async_.wait_group(sched.cp_wait)
            T.ptx.fence.proxy.async_.shared__cta()
            T.tvm_storage_sync("shared")
            pin(acc)
            T.ptx.wgmma.fence.sync.aligned()
            for kk in T.unroll(k_steps):
                if a_off is None:
                    wgmma(*[acc[i] for i in range(n_acc)],
                          desc_a[0] + T.Cast("uint64", ko % stages * a_stage + kk * a_step),
                          desc_b[0] + T.Cast("uint64", ko % stages * b_stage + kk * b_step),
                          True, 1, 1, *trans)
                else:
                    wgmma(*[acc[i] for i in range(n_acc)],
                          desc_a[0] + T.Cast("uint64", ko % stages * a_stage + kk * p_a_step + wg_units),
                          desc_b[0] + T.Cast("uint64", ko % stages * b_stage + kk * p_b_step),
                          True, 1, 1, *trans)
            T.ptx.wgmma.commit_group.sync.aligned()
            if inflight == 0:
                # refill the buffer tile ko - 1 used (free: its wgmmas finished before the barrier)
                if ko + stages - 1 < k_tiles:
                    load_tile(S, A, B, tile_of(ko + stages - 1, bz), (ko + stages - 1) % stages, bx, by, tx, pad)
            else:
                # refill the buffer tile ko - 2 used (free: every thread passed tile ko - 1's
                # wait_group 1 before the barrier; tile ko - 1's wgmmas may still read theirs)
                if ko + sched.lead < k_tiles:
                    load_tile(S, A, B, tile_of(ko + sched.lead, bz), (ko + sched.lead) % stages, bx, by, tx, pad)
            T.ptx.cp.async_.commit_group()
            T.ptx.wgmma.wait_group.sync.aligned(sched.mma_wait)
            pin(acc)
        if inflight != 0:
            T.ptx.wgmma.wait_group.sync.aligned(0)
            pin(acc)
        if store == "pairs":
            pair_epilogue(acc, C, bias, R, bx, by, bz, tx)
        elif a_off is None:
            warpgroup_store(acc, C, bias, R, bx, by, bz, tx)
        else:
            scalar_epilogue(acc, C, bias, R, bx, by, bz, tx)

    @macro
    def pipelined_body(A, B, C, bias, R, bx, by, bz, tx):
        S = T.alloc_buffer((plan.smem_elems if a_off is not None else stages * (a_size + b_size),), s_dtype,
                           scope=PIPELINE_SCOPE, align=128)
        if a_off is None:
            pipelined_core(S, A, B, C, bias, R, bx, by, bz, tx, 0, 0)
        elif plan.aligned:
            pad = T.cuda.func_call(lay.ALIGN_PAD, T.address_of(S[0]), source_code=lay.ALIGN_PAD_SOURCE,
                                   return_type="int32") // prec.elem_bytes
            pipelined_core(S, A, B, C, bias, R, bx, by, bz, tx, pad,
                           tx // WARPGROUP * plan.a_warpgroup if plan.consumers > 1 else 0)
        else:
            pipelined_core(S, A, B, C, bias, R, bx, by, bz, tx, 0,
                           tx // WARPGROUP * plan.a_warpgroup if plan.consumers > 1 else 0)

    body = plain_body if stages == 1 else pipelined_body
    if ws:  # the warp-specialised spike (wgmma_ws): a producer warpgroup before the consumers
        threads = wgmma_ws.threads(plan)
        tma_a, tma_b = wgmma_ws.tensor_map_vars()
        box_a, box_b = wgmma_ws.boxes(plan)
        full_bytes = wgmma_ws.stage_bytes(plan)

        @macro
        def prelude(A, B):
            # host side, before the launch: the CUtensorMaps of A [m, k] and B [n, k] (128B
            # swizzle, boxes of one stage's tiles; rows past M read as zeros)
            T.Bind(T.tvm_stack_alloca("tensormap", 1), var=tma_a)
            T.tensormap_encode_tiled(tma_a, A.data, k, m, k * prec.elem_bytes, box_a[0], box_a[1], 1, 1,
                                     descriptor_dtype=s_dtype, rank=2, interleave=0,
                                     swizzle=wgmma_ws.TMA_SWIZZLE_128B, l2_promotion=2, oob_fill=0,
                                     force_cu_dtype=-1)
            T.Bind(T.tvm_stack_alloca("tensormap", 1), var=tma_b)
            T.tensormap_encode_tiled(tma_b, B.data, k, n, k * prec.elem_bytes, box_b[0], box_b[1], 1, 1,
                                     descriptor_dtype=s_dtype, rank=2, interleave=0,
                                     swizzle=wgmma_ws.TMA_SWIZZLE_128B, l2_promotion=2, oob_fill=0,
                                     force_cu_dtype=-1)

        def bar(buf, i):
            return T.cuda.cvta_generic_to_shared(T.address_of(buf[i]))

        @macro
        def ws_consumer(S, full, empty, C, bias, R, bx, by, bz, ctx, pad):
            # consumer warpgroup ctx // 128: the wgmmas of pipelined_core, fed by the full barriers
            acc = T.alloc_buffer((n_acc,), "float32", scope="local")
            desc_a = T.alloc_buffer((1,), "uint64", scope="local")
            desc_b = T.alloc_buffer((1,), "uint64", scope="local")
            for i in T.unroll(n_acc):
                acc[i] = T.float32(0)
            T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_a[0]), T.address_of(S[pad]), p_a_lbo, p_a_sbo,
                                                  plan.tvm_swizzle)
            T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_b[0]), T.address_of(S[pad + p_b_base]),
                                                  p_b_lbo, p_b_sbo, plan.tvm_swizzle)
            for ko in range(k_tiles):
                T.cuda.mbarrier_wait(T.address_of(full[ko % stages]), ko // stages % 2)
                pin(acc)
                T.ptx.wgmma.fence.sync.aligned()
                for kk in T.unroll(k_steps):
                    wgmma(*[acc[i] for i in range(n_acc)],
                          desc_a[0] + T.Cast("uint64", ko % stages * a_stage + kk * p_a_step
                                             + ctx // WARPGROUP * plan.a_warpgroup),
                          desc_b[0] + T.Cast("uint64", ko % stages * b_stage + kk * p_b_step),
                          True, 1, 1, *trans)
                T.ptx.wgmma.commit_group.sync.aligned()
                # tile ko - 1's wgmmas are done (at most this one in flight): release its stage
                T.ptx.wgmma.wait_group.sync.aligned(1)
                pin(acc)
                if ko > 0 and ctx % WARPGROUP == 0:
                    T.ptx["mbarrier.arrive.shared::cta.b64"](bar(empty, (ko - 1) % stages))
            T.ptx.wgmma.wait_group.sync.aligned(0)
            pin(acc)
            if store == "pairs":
                pair_epilogue(acc, C, bias, R, bx, by, bz, ctx)
            else:
                scalar_epilogue(acc, C, bias, R, bx, by, bz, ctx)

        @macro
        def ws_body(A, B, C, bias, R, bx, by, bz, tx):
            S = T.alloc_buffer((plan.smem_elems,), s_dtype, scope=PIPELINE_SCOPE, align=128)
            full = T.alloc_buffer((stages,), "uint64", scope="shared", align=8)
            empty = T.alloc_buffer((stages,), "uint64", scope="shared", align=8)
            pad = T.cuda.func_call(lay.ALIGN_PAD, T.address_of(S[0]), source_code=lay.ALIGN_PAD_SOURCE,
                                   return_type="int32") // prec.elem_bytes
            if tx == 0:
                for s in T.unroll(stages):
                    T.ptx["mbarrier.init.shared::cta.b64"](bar(full, s), T.uint32(1))
                    T.ptx["mbarrier.init.shared::cta.b64"](bar(empty, s), T.uint32(plan.consumers))
                T.ptx.fence("mbarrier_init", "release", "cluster", "")
            T.tvm_storage_sync("shared")
            if tx < WARPGROUP:
                # the producer warpgroup: fewer registers; one thread issues every stage's loads
                T.ptx["setmaxnreg.dec.sync.aligned.u32"](wgmma_ws.PRODUCER_REGS)
                if tx == 0:
                    for ko in range(k_tiles):
                        # stage ko % stages is free once both consumers released its last use
                        # (the first round passes at once: parity 1 of a fresh barrier)
                        T.cuda.mbarrier_wait(T.address_of(empty[ko % stages]), (ko // stages + 1) % 2)
                        T.ptx["mbarrier.arrive.expect_tx.shared::cta.b64"](bar(full, ko % stages),
                                                                          T.uint32(full_bytes))
                        T.ptx["cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"](
                            T.cuda.cvta_generic_to_shared(T.address_of(S[pad + ko % stages * p_a_size])),
                            T.reinterpret(T.handle().ty, T.address_of(tma_a)),
                            tile_of(ko, bz) * tile_k, by * tile_m, bar(full, ko % stages))
                        T.ptx["cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"](
                            T.cuda.cvta_generic_to_shared(T.address_of(S[pad + p_b_base + ko % stages * p_b_size])),
                            T.reinterpret(T.handle().ty, T.address_of(tma_b)),
                            tile_of(ko, bz) * tile_k, bx * bn, bar(full, ko % stages))
            else:
                T.ptx["setmaxnreg.inc.sync.aligned.u32"](wgmma_ws.CONSUMER_REGS)
                ws_consumer(S, full, empty, C, bias, R, bx, by, bz, tx - WARPGROUP, pad)

        body = ws_body

    @macro
    def launched(A, B, C, bias, R):
        # every entry's code after its signature: the host prelude (ws), the grid (blockIdx.z:
        # the K slice, split > 1 only), the body; the entries differ only in their parameters
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        if ws:
            prelude(A, B)
        bx = T.launch_thread("blockIdx.x", grid_n)
        by = T.launch_thread("blockIdx.y", grid_m)
        if split > 1:
            bz = T.launch_thread("blockIdx.z", split)
            tx = T.launch_thread("threadIdx.x", threads)
            body(A, B, C, bias, R, bx, by, bz, tx)
        else:
            tx = T.launch_thread("threadIdx.x", threads)
            body(A, B, C, bias, R, bx, by, None, tx)

    if split > 1:
        @T.prim_func
        def main_split(A: T.Buffer((m, k), a_dtype), B: T.Buffer((n, k), b_dtype),
                       P: T.Buffer((split * m, n), "float32")):
            launched(A, B, P, None, None)

        return main_split

    if epilogue == "residual":
        @T.prim_func
        def main_residual(A: T.Buffer((m, k), a_dtype), B: T.Buffer((n, k), b_dtype),
                          R: T.Buffer((m, n), "float32"), C: T.Buffer((m, n), out_dtype)):
            launched(A, B, C, None, R)

        return main_residual

    if epilogue == "bias_residual":
        @T.prim_func
        def main_bias_residual(A: T.Buffer((m, k), a_dtype), B: T.Buffer((n, k), b_dtype),
                               bias: T.Buffer((n,), "float32"), R: T.Buffer((m, n), "float32"),
                               C: T.Buffer((m, n), out_dtype)):
            launched(A, B, C, bias, R)

        return main_bias_residual

    if epilogue is not None:
        @T.prim_func
        def main_epilogue(A: T.Buffer((m, k), a_dtype), B: T.Buffer((n, k), b_dtype),
                          bias: T.Buffer((n,), "float32"), C: T.Buffer((m, n), out_dtype)):
            launched(A, B, C, bias, None)

        return main_epilogue

    @T.prim_func
    def main(A: T.Buffer((m, k), a_dtype), B: T.Buffer((n, k), b_dtype),
             C: T.Buffer((m, n), out_dtype)):
        launched(A, B, C, None, None)

    return main


def target(arch: str = "sm_90a") -> tvm.target.Target:
    """The CUDA target the kernel needs: wgmma exists only on ``sm_90a``."""
    return tvm.target.Target({"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}})


def build(m: int, n: int, k: int, bn: int = 128, *, stages: int = 1, swapped_descriptor: bool = False,
          precision: str = "bf16", split: int = 1, epilogue: str | None = None, swizzle: str = "none",
          consumers: int = 1, out_dtype: str = "float32", producer: str = "threads", inflight: int = 0,
          store: str = "scalar"):
    """``tvm.compile`` of :func:`wgmma_gemm` (same options) for sm_90a (under the target, so
    hetpart's CUDA compile callback, where it runs, compiles for 90a too).  Returns the
    executable; its function ``main`` takes the PrimFunc's tensors on the GPU."""
    tgt = target()
    mod = tvm.IRModule({"main": wgmma_gemm(m, n, k, bn, stages=stages, swapped_descriptor=swapped_descriptor,
                                           precision=precision, split=split, epilogue=epilogue,
                                           swizzle=swizzle, consumers=consumers, out_dtype=out_dtype,
                                           producer=producer, inflight=inflight, store=store)})
    with tgt:
        return tvm.compile(mod, target=tgt, tir_pipeline=TIR_PIPELINE)


def cuda_source(executable) -> str:
    """The CUDA C of a built executable ("" if none)."""
    def walk(mod):
        if mod.kind == "cuda":
            return mod.inspect_source("cuda")
        return next((found for found in map(walk, mod.imports) if found), "")

    return walk(executable.mod if hasattr(executable, "mod") else executable)


__all__ = ["BIAS_EPILOGUES", "EPILOGUES", "FAST_DIVIDE", "GELU_FAST_DIVIDE", "INV_SQRT2_F32", "OUT_DTYPES",
           "PAIR_STORE", "PAIR_STORE_SOURCE", "PRODUCERS", "RESIDUAL_EPILOGUES", "STORES", "Shape", "build",
           "cuda_source", "d_fragment", "descriptor_fields", "epilogue_value", "k_step_bytes", "smem_offset",
           "stored_value", "target", "wgmma_gemm"]
