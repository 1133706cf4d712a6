"""TF32 tensor-core intrinsics for float32 contractions on CUDA (``mma.sync`` m16n8k8).

TVM 0.27 ships tensor intrinsics for float16/int8/fp8 operands only, and its WMMA
code generator refuses float32 operand fragments.  Its PTX ``mma`` code generator
does emit the TF32 shape, so this module writes the intrinsics a float32 GEMM
needs around it, in the same *warp-buffer* form as TVM's own ``mma_*`` intrinsics (a
16xN tile held by a warp as a ``[32 lanes, n]`` buffer, which TVM's warp-memory
lowering turns into ``n`` registers per thread):

* ``load_a``: a 16x8 tile of A (rows I, columns K) from shared memory into the
  m16n8k8 A fragment -- lane ``4g+t`` holds ``A[g][t]``, ``A[g+8][t]``, ``A[g][t+4]``,
  ``A[g+8][t+4]`` (:func:`a_layout`) -- each element rounded to the nearest TF32
  value on the way (:func:`round_to_tf32`; the tensor core itself would truncate);
* ``load_b``: a 16x8 tile of B given as ``[N, K]`` into two B fragments (columns 0-7
  and 8-15) -- lane ``4g+t`` holds ``B[g][t]``, ``B[g][t+4]``, ``B[g+8][t]``,
  ``B[g+8][t+4]`` (:func:`b_layout`) -- rounded as A;
* ``compute``: ``C[16x16] += A[16x8] * B[16x8]^T`` as two m16n8k8 TF32 ``mma.sync``.

Whether a build uses them is the build's choice (``KernelOptions.tf32``,
:mod:`hetpart.kernels.options`), not this module's.

* ``init`` / ``store``: zero a 16x16 float32 accumulator / copy it to shared memory,
  in the m16n8 accumulator layout (:func:`c_layout`, the one TVM's own ``mma_*``
  intrinsics use), each lane's 8 registers written by unrolled code;
  ``store_cols`` copies it transposed (shared memory holding ``[column, row]``), for a
  write-out that walks the rows.
"""

from __future__ import annotations

import threading

M, N, K = 16, 16, 8
"""The tile one ``compute`` call covers (two m16n8k8 instructions)."""

WARP = 32

NAMES = {
    "load_a": "hetpart_tf32_load_a_16x8_shared_dyn",
    "load_b": "hetpart_tf32_load_b_16x8_trans_shared_dyn",
    "compute": "hetpart_tf32_mma_16x16x8_trans",
    "init": "hetpart_tf32_fill_16x16",
    "store": "hetpart_tf32_store_16x16_shared_dyn",
    "store_cols": "hetpart_tf32_store_16x16_shared_dyn_trans",
    "load_b_bfloat16": "hetpart_tf32_load_b_16x8_trans_shared_dyn_from_bf16",
    "load_b_float16": "hetpart_tf32_load_b_16x8_trans_shared_dyn_from_fp16",
    "load_b_bfloat16_kmajor": "hetpart_tf32_load_b_16x8_shared_dyn_from_bf16",
    "load_b_float16_kmajor": "hetpart_tf32_load_b_16x8_shared_dyn_from_fp16",
    "load_a_bfloat16": "hetpart_tf32_load_a_16x8_shared_dyn_from_bf16",
    "load_a_float16": "hetpart_tf32_load_a_16x8_shared_dyn_from_fp16",
    "mma_load_a_bfloat16": "hetpart_bf16_load_a_16x16_shared_dyn_narrowing",
    "mma_load_a_float16": "hetpart_fp16_load_a_16x16_shared_dyn_narrowing",
    "mma_load_a_bfloat16_staged": "hetpart_bf16_load_a_16x16_shared_dyn",
    "mma_load_a_float16_staged": "hetpart_fp16_load_a_16x16_shared_dyn",
    "mma_load_b_bfloat16": "hetpart_bf16_load_b_16x16_trans_shared_dyn",
    "mma_load_b_float16": "hetpart_fp16_load_b_16x16_trans_shared_dyn",
    "mma_load_b_bfloat16_kmajor": "hetpart_bf16_load_b_16x16_shared_dyn",
    "mma_load_b_float16_kmajor": "hetpart_fp16_load_b_16x16_shared_dyn",
    "mma_compute_bfloat16": "hetpart_bf16_mma_16x16x16_trans",
    "mma_compute_float16": "hetpart_fp16_mma_16x16x16_trans",
}
"""Intrinsic names by role.  ``load_b_<dtype>``: ``load_b`` from a tile staged in
shared memory in that narrower dtype (a bf16/fp16-stored weight), each element widened
to float32 as it is loaded -- exactly: a bf16 or fp16 value is a TF32 value (8 and 10
mantissa bits, TF32 keeps 10; fp16's exponent range inside float32's), so no rounding;
``load_b_<dtype>_kmajor`` the same from a tile staged K-major (``[K, N]``: attention's ``K^T``
and ``V`` stored narrow, contiguous along N, :func:`_fragment_load`).
``load_a_<dtype>``: likewise for an A tile staged in that dtype (an activation stored
narrow between kernels: ``importer.low_precision_scores``' probabilities)."""

NARROW = ("bfloat16", "float16")
"""Staged dtypes ``load_b`` has a widening variant for."""

MMA_K = 16
"""K of one ``mma_compute_<dtype>`` call: ``C[16x16] += A[16x16] * B[16x16]^T`` as two
m16n8k16 ``mma.sync`` with bf16/fp16 operands and float32 accumulators (the storage-dtype
path, ``gpu_tensor_core.LOW_PRECISION_MMA``).  Its fragments hold 8 narrow elements per
lane (``[32, 8]`` warp buffers, 4 registers of two halves each): ``mma_load_a_<dtype>``
loads a 16x16 float32 tile of A from shared memory, each element rounded to ``dtype``
(round to nearest even, CUDA's ``__float2bfloat16`` / ``__float2half``) -- where the
activations are narrowed, as ``torch.autocast`` does before its GEMMs;
``mma_load_a_<dtype>_staged`` copies a 16x16 tile of A staged in ``dtype`` as it is (an
activation stored narrow between kernels, :mod:`hetpart.importer.low_precision_activations`;
its description a widening and narrowing back, as ``mma_load_b_<dtype>``'s);
``mma_load_b_<dtype>`` copies a 16x16 tile of B (``[N, K]``) staged in ``dtype`` as it is
(its description a widening to float32 and back, the form the schedule's inlined weight
widening takes: exact); ``mma_load_b_<dtype>_kmajor`` the same from a tile staged K-major
(``[K, N]``: an activation B contiguous along N in memory -- attention's ``K^T`` and ``V`` --
copied into shared memory in whole vectors, ``gpu_tensor_core.LOW_PRECISION_ATTENTION_MMA``).
Layouts: :func:`mma_a_layout`, :func:`mma_b_layout` (PTX ISA,
``mma.m16n8k16`` with ``.bf16``/``.f16``), the accumulator's :func:`c_layout`."""

MMA_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}
"""Narrow dtype -> the PTX operand type name TVM's ``ptx_mma`` takes."""

SCOPE = "shared.dyn"
"""Where operand tiles are staged and accumulators stored before the epilogue."""

_lock = threading.Lock()
_registered = False


def a_layout(i, k):
    """(lane, register) holding element ``(i, k)`` of a 16x8 A tile."""
    return 4 * (i % 8) + k % 4, 2 * (k // 4) + i // 8


def b_layout(n, k):
    """(lane, register) holding element ``(n, k)`` of a 16x8 B tile given as [N, K]."""
    return 4 * (n % 8) + k % 4, 2 * (n // 8) + k // 4


def mma_a_layout(i, k):
    """(lane, register) holding element ``(i, k)`` of a 16x16 A tile in the m16n8k16
    bf16/fp16 A fragment: lane ``4g+t`` holds rows ``g``, ``g+8`` at columns ``2t, 2t+1,
    2t+8, 2t+9`` -- registers ``a0..a7`` (PTX ISA), the same map as :func:`c_layout`."""
    return 4 * (i % 8) + (k % 8) // 2, 4 * (k // 8) + 2 * (i // 8) + k % 2


def mma_b_layout(n, k):
    """(lane, register) holding element ``(n, k)`` of a 16x16 B tile given as [N, K]: two
    m16n8k16 B fragments (columns 0-7 in registers 0-3, 8-15 in 4-7), lane ``4g+t``
    holding column ``g`` at ``k = 2t, 2t+1, 2t+8, 2t+9`` (``b0..b3``, PTX ISA)."""
    return 4 * (n % 8) + (k % 8) // 2, 4 * (n // 8) + 2 * (k // 8) + k % 2


def c_layout(i, j):
    """(lane, register) holding element ``(i, j)`` of the 16x16 float32 accumulator
    (TVM's ``shared_16x16_to_ldmatrix_32x8_layout``)."""
    return 4 * (i % 8) + (j % 8) // 2, 4 * (j // 8) + 2 * (i // 8) + j % 2


ROUND = "nvcuda::wmma::__float_to_tf32"
"""CUDA's float32 -> TF32 rounding (``<mma.h>``, which TVM includes in every module
with ``mma`` code): one ``cvt.rna.tf32.f32``."""


def round_to_tf32(x):
    """``x`` (a float32 TIR expression) rounded to the nearest TF32 value, ties away
    from zero (PTX's ``cvt.rna.tf32.f32``, as cuBLAS/CUTLASS convert; NaN and
    infinities kept).

    Why: the tensor core reads a float32 register given to a TF32 ``mma`` by dropping
    its low 13 mantissa bits -- rounding toward zero -- so every product came out
    smaller in magnitude, by ~2^-11 relative on average: a bias that does not cancel
    over K and compounds over layers (in a numpy emulation of 50 ReLU layers of 256
    channels, 2.9e-2 of the output's magnitude truncated, 1.5e-3 rounded; ResNet-50 at
    batch 32, every convolution on tensor cores, was 1.9e-2 off ONNX Runtime, at batch 1,
    few of them there, 4.4e-3).  One instruction per operand element loaded into a
    fragment."""
    from tvm import tirx

    return tirx.call_pure_extern("float32", ROUND, x)


def intrinsics() -> dict[str, str]:
    """:data:`NAMES`, with hetpart's intrinsics registered (on the first call)."""
    global _registered
    with _lock:
        if not _registered:
            _register()
            _registered = True
    return dict(NAMES)


def _register() -> None:
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(NAMES["load_a"], *_load_intrin(M, a_layout, lambda lane, r: (
        lane // 4 + 8 * (r % 2), lane % 4 + 4 * (r // 2))))
    TensorIntrin.register(NAMES["load_b"], *_load_intrin(N, b_layout, lambda lane, r: (
        lane // 4 + 8 * (r // 2), lane % 4 + 4 * (r % 2))))
    for narrow in NARROW:
        TensorIntrin.register(NAMES[f"load_b_{narrow}"], *_load_intrin(N, b_layout, lambda lane, r: (
            lane // 4 + 8 * (r // 2), lane % 4 + 4 * (r % 2)), source=narrow))
        TensorIntrin.register(NAMES[f"load_b_{narrow}_kmajor"], *_load_intrin(N, b_layout, lambda lane, r: (
            lane // 4 + 8 * (r // 2), lane % 4 + 4 * (r % 2)), source=narrow, kmajor=True))
        TensorIntrin.register(NAMES[f"load_a_{narrow}"], *_load_intrin(M, a_layout, lambda lane, r: (
            lane // 4 + 8 * (r % 2), lane % 4 + 4 * (r // 2)), source=narrow))
    TensorIntrin.register(NAMES["compute"], *_mma_intrin())
    for narrow in NARROW:
        TensorIntrin.register(NAMES[f"mma_load_a_{narrow}"], *_narrow_load_intrin(mma_a_layout, "float32", narrow))
        TensorIntrin.register(NAMES[f"mma_load_b_{narrow}"], *_narrow_load_intrin(mma_b_layout, narrow, narrow))
        TensorIntrin.register(NAMES[f"mma_load_b_{narrow}_kmajor"],
                              *_narrow_load_intrin(mma_b_layout, narrow, narrow, kmajor=True))
        TensorIntrin.register(NAMES[f"mma_load_a_{narrow}_staged"], *_narrow_load_intrin(mma_a_layout, narrow, narrow))
        TensorIntrin.register(NAMES[f"mma_compute_{narrow}"], *_narrow_mma_intrin(narrow))
    TensorIntrin.register(NAMES["init"], *_fill_intrin())
    TensorIntrin.register(NAMES["store"], *_store_intrin(transposed=False))
    TensorIntrin.register(NAMES["store_cols"], *_store_intrin(transposed=True))


def _c_inverse(lane, r):
    """Tile coordinates of register ``r`` of ``lane`` in the accumulator (:func:`c_layout`)."""
    return lane // 4 + 8 * ((r % 4) // 2), 8 * (r // 4) + 2 * (lane % 4) + r % 2


def _fill_intrin():
    """(desc, impl) zeroing a 16x16 accumulator, each lane its 8 registers (unrolled)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(c: T.handle) -> None:
        C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:WARP, 0:8])
            for i, j in T.grid(M, N):
                with T.sblock("fill"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    lane, reg = T.meta_var(c_layout(vi, vj))
                    T.reads()
                    T.writes(C[lane, reg])
                    C[lane, reg] = T.float32(0)

    @T.prim_func(s_tir=True)
    def impl(c: T.handle) -> None:
        C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:WARP, 0:8])
            for lane in T.thread_binding(0, WARP, "threadIdx.x"):
                for r in T.unroll(8):
                    C[lane, r] = T.float32(0)

    return desc, impl


def _store_intrin(transposed: bool):
    """(desc, impl) copying a 16x16 accumulator to shared memory, each lane its 8
    registers (unrolled); ``transposed``: element ``(i, j)`` lands at ``S[j, i]``."""
    from tvm.script import tirx as T

    def at(i, j):
        return (j, i) if transposed else (i, j)

    @T.prim_func(s_tir=True)
    def desc(c: T.handle, s: T.handle) -> None:
        C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
        S = T.match_buffer(s, (M, N), "float32", align=64, offset_factor=1, scope=SCOPE)
        with T.sblock("root"):
            T.reads(C[0:WARP, 0:8])
            T.writes(S[0:M, 0:N])
            for i, j in T.grid(M, N):
                with T.sblock("store"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    lane, reg = T.meta_var(c_layout(vi, vj))
                    si, sj = T.meta_var(at(vi, vj))
                    T.reads(C[lane, reg])
                    T.writes(S[si, sj])
                    S[si, sj] = C[lane, reg]

    @T.prim_func(s_tir=True)
    def impl(c: T.handle, s: T.handle) -> None:
        s0 = T.int32()
        s1 = T.int32()
        C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
        S = T.match_buffer(s, (M, N), "float32", align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
        with T.sblock("root"):
            T.reads(C[0:WARP, 0:8])
            T.writes(S[0:M, 0:N])
            for lane in T.thread_binding(0, WARP, "threadIdx.x"):
                for r in T.unroll(8):
                    row, col = T.meta_var(_c_inverse(lane, r))
                    si, sj = T.meta_var(at(row, col))
                    S[si, sj] = C[lane, r]

    return desc, impl


def _fragment_load(rows: int, width: int, source: str, dtype: str, layout, at, desc_value, impl_value,
                   kmajor: bool = False):
    """(desc, impl) copying a ``rows`` x ``width`` shared-memory tile of ``source`` dtype into a
    ``[32, rows * width / 32]`` warp buffer of ``dtype`` by ``layout`` (tile -> (lane, register));
    the description converts each element by ``desc_value``, the impl has each lane load its
    registers unrolled, from ``at(lane, r)`` (register -> tile coordinates), by ``impl_value``.
    With ``kmajor`` the shared tile is stored transposed (``width`` x ``rows``: element
    ``(i, k)`` at ``[k, i]``).  The one shape of every fragment load: TF32's
    (:func:`_load_intrin`) and the narrow m16n8k16 ones (:func:`_narrow_load_intrin`)."""
    from tvm.script import tirx as T

    regs = rows * width // WARP
    shape = (width, rows) if kmajor else (rows, width)

    def element(x, i, k):
        return x[k, i] if kmajor else x[i, k]

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, shape, source, align=64, offset_factor=1, scope=SCOPE)
        C = T.match_buffer(c, (WARP, regs), dtype, align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(A[0:shape[0], 0:shape[1]])
            T.writes(C[0:WARP, 0:regs])
            for i, k in T.grid(rows, width):
                with T.sblock("load"):
                    vi, vk = T.axis.remap("SS", [i, k])
                    lane, reg = T.meta_var(layout(vi, vk))
                    T.reads(element(A, vi, vk))
                    T.writes(C[lane, reg])
                    C[lane, reg] = desc_value(element(A, vi, vk))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s0 = T.int32()
        s1 = T.int32()
        A = T.match_buffer(a, shape, source, align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
        C = T.match_buffer(c, (WARP, regs), dtype, align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(A[0:shape[0], 0:shape[1]])
            T.writes(C[0:WARP, 0:regs])
            for lane in T.thread_binding(0, WARP, "threadIdx.x"):
                for r in T.unroll(regs):
                    row, col = T.meta_var(at(lane, r))
                    C[lane, r] = impl_value(element(A, row, col))

    return desc, impl


def _load_intrin(rows: int, layout, inverse, source: str = "float32", kmajor: bool = False):
    """(desc, impl) copying a ``rows`` x 8 shared-memory tile into a ``[32, 4]`` warp
    buffer by ``layout``; the impl has each lane load its 4 elements (``inverse``:
    register -> tile coordinates).  ``source``: the tile's dtype -- float32 (each
    element rounded to TF32), or bfloat16/float16 (each widened to float32, exact).
    ``kmajor``: the tile staged transposed (:func:`_fragment_load`)."""
    from tvm.script import tirx as T

    if source == "float32":
        def desc_value(x):
            return x

        impl_value = round_to_tf32
    else:
        def desc_value(x):
            return T.Cast("float32", x)

        impl_value = desc_value

    return _fragment_load(rows, K, source, "float32", layout, inverse, desc_value, impl_value, kmajor)


def _mma_intrin():
    """(desc, impl) of ``C[16x16] += A[16x8] * B[16x8]^T`` on warp buffers, the impl two
    ``mma.sync.m16n8k8`` TF32 instructions (columns 0-7, then 8-15)."""
    return _mma("m16n8k8", "float32", "tf32", K, a_layout, b_layout, lambda x: x)


def _mma(shape: str, dtype: str, ptx: str, depth: int, a_map, b_map, widen):
    """(desc, impl) of ``C[16x16] += A[16 x depth] * B[16 x depth]^T`` on warp buffers (A, B of ``dtype``,
    ``16 * depth / 32`` elements a lane by ``a_map`` / ``b_map``; C float32 by :func:`c_layout`),
    each product ``widen(a) * widen(b)`` in float32; the impl two ``mma.sync`` of ``shape``
    with ``ptx`` operands and float32 accumulators (C's columns 0-7, then 8-15).  The one shape
    of TF32's (:func:`_mma_intrin`) and the narrow m16n8k16 ones (:func:`_narrow_mma_intrin`)."""
    import tvm
    from tvm.script import tirx as T

    lift = tvm.runtime.convert
    regs = M * depth // WARP  # A's or B's elements a lane; each mma takes half of B's

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (WARP, regs), dtype, align=64, offset_factor=1, scope="warp")
        B = T.match_buffer(b, (WARP, regs), dtype, align=64, offset_factor=1, scope="warp")
        C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(C[0:WARP, 0:8], A[0:WARP, 0:regs], B[0:WARP, 0:regs])
            T.writes(C[0:WARP, 0:8])
            for i, j, k in T.grid(M, N, depth):
                with T.sblock("C"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    lc, rc = T.meta_var(c_layout(vi, vj))
                    la, ra = T.meta_var(a_map(vi, vk))
                    lb, rb = T.meta_var(b_map(vj, vk))
                    T.reads(C[lc, rc], A[la, ra], B[lb, rb])
                    T.writes(C[lc, rc])
                    C[lc, rc] = C[lc, rc] + widen(A[la, ra]) * widen(B[lb, rb])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (WARP, regs), dtype, align=64, offset_factor=1, scope="warp")
        B = T.match_buffer(b, (WARP, regs), dtype, align=64, offset_factor=1, scope="warp")
        C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(C[0:WARP, 0:8], A[0:WARP, 0:regs], B[0:WARP, 0:regs])
            T.writes(C[0:WARP, 0:8])
            for lane in T.thread_binding(0, WARP, "threadIdx.x"):
                for half in T.unroll(2):
                    T.evaluate(
                        T.ptx_legacy.mma(
                            shape, "row", "col", ptx, ptx, "fp32",
                            A.data, A.elem_offset + lane * lift(regs),
                            B.data, B.elem_offset + lane * lift(regs) + half * lift(regs // 2),
                            C.data, C.elem_offset + lane * lift(8) + half * lift(4),
                            False, dtype="float32",
                        )
                    )

    return desc, impl


def _inverse(layout, lane: int, r: int) -> tuple[int, int]:
    """Tile coordinates of register ``r`` of ``lane`` under a 16x16 ``layout``."""
    for i in range(M):
        for k in range(MMA_K):
            if layout(i, k) == (lane, r):
                return i, k
    raise ValueError(f"no element at lane {lane}, register {r}")


def _narrow_load_intrin(layout, source: str, dtype: str, kmajor: bool = False):
    """(desc, impl) copying a 16x16 shared-memory tile of ``source`` dtype into a
    ``[32, 8]`` warp buffer of ``dtype`` (bf16/fp16) by ``layout``.  ``source`` float32:
    each element narrowed (``Cast``, round to nearest even); ``source == dtype``: the
    description widens and narrows back (exact; the form of a weight whose widening the
    schedule inlined into the fragment copy), the impl copies.  Each lane loads its 8
    elements, unrolled, from the coordinates of a table (:func:`_inverse`).  ``kmajor``: the
    tile staged transposed (:func:`_fragment_load`)."""
    from tvm.script import tirx as T

    if source == "float32":
        def desc_value(x):
            return T.Cast(dtype, x)
    else:
        def desc_value(x):
            return T.Cast(dtype, T.Cast("float32", x))

    def impl_value(x):
        return x if source == dtype else T.Cast(dtype, x)

    regs = M * MMA_K // WARP
    table = [[_inverse(layout, lane, r) for r in range(regs)] for lane in range(WARP)]
    # (lane, r) -> (row, col) as closed forms (the layouts are affine in g, t and the bits of r)
    rows = {mma_a_layout: lambda lane, r: lane // 4 + 8 * ((r // 2) % 2),
            mma_b_layout: lambda lane, r: lane // 4 + 8 * (r // 4)}[layout]
    cols = {mma_a_layout: lambda lane, r: 2 * (lane % 4) + r % 2 + 8 * (r // 4),
            mma_b_layout: lambda lane, r: 2 * (lane % 4) + r % 2 + 8 * ((r // 2) % 2)}[layout]
    for lane in range(WARP):  # the closed forms are the table
        for r in range(regs):
            assert (rows(lane, r), cols(lane, r)) == table[lane][r], (lane, r)

    return _fragment_load(M, MMA_K, source, dtype, layout, lambda lane, r: (rows(lane, r), cols(lane, r)),
                          desc_value, impl_value, kmajor)


def _narrow_mma_intrin(dtype: str):
    """(desc, impl) of ``C[16x16] += A[16x16] * B[16x16]^T`` on ``dtype`` warp buffers
    (products and sums in float32), the impl two ``mma.sync.m16n8k16`` with ``dtype``
    operands and float32 accumulators (columns 0-7, then 8-15)."""
    from tvm.script import tirx as T

    return _mma("m16n8k16", dtype, MMA_DTYPES[dtype], MMA_K, mma_a_layout, mma_b_layout,
                lambda x: T.Cast("float32", x))