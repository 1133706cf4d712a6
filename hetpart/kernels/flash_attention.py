"""Fused multi-head attention forward as a hand-written TIR PrimFunc (issue 17, spike 1).

Not wired into any build: :func:`flash_attention` returns a standalone PrimFunc that
``tvm.compile`` (``tir_pipeline="tirx"``, as :mod:`.wgmma_gemm`) turns into one CUDA kernel
for sm_80 or later (``mma.sync`` bf16 exists from sm_80; the H100 runs it as it is);
``tools/gpu_flash_probe.py`` checks and times it against PyTorch's SDPA.  The geometry
(fragments, ldmatrix addresses, shared-memory swizzle, copy map) is :mod:`.flash_layout`.

In:  ``Q, K, V [batch, heads, seq, 64]`` bfloat16 (the layout hetpart's head-split
     transposes produce; each ``[seq, 64]`` head contiguous), a float ``scale`` (default
     ``1 / sqrt(64)``).
Out: ``O [batch, heads, seq, 64]`` = ``softmax(scale * Q K^T) V`` per (batch, head),
     non-causal, no mask; ``out_dtype`` bfloat16 (round to nearest even in the store) or float32.

The bias path (``bias_shape``, :mod:`.flash_substitute`'s masked triples): a fourth input
``B [1|batch, 1|heads, 1|seq, seq]`` float32 (a key-padding mask ``[b, 1, 1, s]``, a causal or
relative bias ``[1, 1, s, s]``, ...), ``O = softmax(scale * Q K^T + B) V``: each score becomes
``max(s * scale * log2(e) + B * log2(e), -FLT_MAX)`` before the online softmax, ``B`` read from
global memory at the score's (batch, head, query, key), a size-1 axis at 0, query and key
clamped to ``seq - 1``.  The clamp keeps every score finite (``finfo.min * log2(e)`` overflows to
``-inf``, so does a ``-inf`` bias): a row whose keys are all masked is the uniform row the
reference softmax of ``finfo.min`` scores gives (for an all ``-inf`` row the reference is NaN, the
kernel still the uniform row), a key tile all masked leaves ``m`` finite, and the first tile's
invariant below holds as it is.  Without ``bias_shape`` the PrimFunc is the unmasked one,
unchanged (same macros, the bias branch not taken).

The kernel (FlashAttention-2's loop): one CTA of 4 warps (128 threads) per (64-query
tile, head, batch) -- grid ``(ceil(seq / 64), heads, batch)``; warp ``w`` owns query rows
``16 w .. 16 w + 15`` of the tile:

* ``cp.async`` (16 bytes, ``.cg``) copies the Q tile and the first K and V tiles into
  shared memory (swizzled [64, 64] tiles, :func:`flash_layout.smem_offset`); rows past
  ``seq`` are zero-filled (src-size 0 from a clamped address), so no NaN enters an MMA;
  then each warp loads its Q rows' A fragments once (``ldmatrix.x4``, 16 b32 registers);
* per key tile ``t`` of 64 (double-buffered: tile ``t + 1``'s K and V copies are issued
  before tile ``t`` is computed; ``cp.async.wait_group 1`` + ``__syncthreads`` before, a
  ``__syncthreads`` after, so the buffer is free when it is refilled):
  S = Q K^T as 8 n8 tiles x 4 k16 steps of ``mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32``
  (K's B fragments by ``ldmatrix.x4``, 32 float32 scores per thread); keys ``>= seq`` set to
  ``-inf``; scores times ``scale * log2(e)``; per row (each thread holds two rows, a quad of
  four threads one row's 64 scores) the tile max by two ``__shfl_xor_sync``, ``m_new =
  max(m, tile max)``, ``alpha = 2^(m - m_new)``, ``l *= alpha``, ``O *= alpha``,
  ``P = 2^(S - m_new)`` (``ex2.approx``), ``l +=`` this thread's part of the row sum (float32,
  before P's rounding); P rounded to bf16 (nearest even) and packed straight from the
  accumulators into A fragments (C's layout is A's: :func:`flash_layout.p_register`);
  ``O += P V`` (V's B fragments by ``ldmatrix.x4.trans``; 32 float32 accumulators);
* ``l`` summed over the quad, ``O / l`` stored, rows ``>= seq`` skipped.

Invariant: every key tile holds at least one key ``< seq``, so ``m_new`` is finite after the
first tile (``alpha = 2^-inf = 0`` there) and no row sees ``-inf - -inf``.  The CPU tests
(``tests/test_kernels_flash_attention.py``) check, without a GPU: the fragment and ldmatrix
maps of :mod:`.flash_layout` against the PTX ISA; a numpy model of this exact order (tiles,
float32 running max / sum, bf16 P: ``emulate``) and a register-level one (the macros'
fragments, register for register: ``simulate``) against float64 attention; and the generated
CUDA C itself (every ldmatrix / cp.async address, mma operand list, P packing, key mask and
store evaluated per thread) against those maps.  ptxas (nvcc 13, ``-Xptxas -v``): 154
registers on sm_90a, 148 on sm_80, no spills, 40 KB static shared memory.

The key split (``key_split=True``; :data:`.flash_substitute.FLASH_KEY_SPLIT_MAX_CTAS`, off by
default): the same grid, 8 warps (256 threads) a CTA -- two warp groups ``g = tx // 128``, each
the four warps above on the same 64 query rows (warp ``w`` of a group rows ``16 (w % 4) ..``), group
``g`` running the loop over key tiles ``2 i + g`` (:func:`flash_layout.split_tile`: interleaved, so
one step's two tiles are one contiguous block of 128 keys and only the last step holds a partial or
absent tile) with its own ``m``, ``l``, ``O``.  A CTA walks ``ceil(n_kv / 2)`` steps instead of
``n_kv`` (Whisper b1: 12 instead of 24, 8 warps a CTA instead of 4), for latency-bound small grids.

* Shared memory (static, 44 KB <= 48 KB): Q 8 KB (copied by group 0, read by both), each group's
  K and V tile single-buffered (4 x 8 KB), a 4 KB float32 merge buffer.  Double-buffering both
  groups would take 72 KB (dynamic shared memory); instead K's and V's copies are pipelined
  against each other: per step, ``wait_group 1`` + barrier (K(i) in), Q K^T, barrier (every
  warp done with K), K(i+1)'s copies issued, the softmax, ``wait_group 1`` + barrier (V(i) in),
  P V, barrier, V(i+1)'s copies issued -- K's copy overlaps the softmax and P V, V's the next
  Q K^T and softmax.  Every thread commits a (possibly empty) group at each point, so the
  ``wait_group 1`` count holds for both groups.
* A group whose tile ``2 i + g >= n_kv`` (group 1 at the last step of an odd tile count; at
  ``seq <= 64`` every step) skips that step's Q K^T, softmax and P V (a warp-uniform branch; the
  barriers stay outside it; the copy is zero-filled).  Group 0 always has tile 0, so its ``m`` is
  finite; group 1's may stay ``-inf`` (no tile), ``l = 0``, ``O = 0``.  The invariant above holds
  per group: every tile a group computes holds a key ``< seq``.
* The merge (the log-sum-exp one): group 1 writes its ``m`` and per-thread ``l`` partial (thread
  ``tx`` holds the same rows and columns as group 0's thread ``tx - 128``) to the merge buffer;
  group 0 takes ``m' = max(m0, m1)``, ``a0 = 2^(m0 - m')``, ``a1 = 2^(m1 - m')`` (``2^-inf = 0``:
  a group without a tile adds nothing, no NaN as ``m'`` is finite), ``l = l0 a0 + l1 a1``, ``O = O0 a0``;
  then ``O += O1 a1`` in four passes of 8 accumulators; group 0 stores ``O / l`` (quad-summed ``l``) as
  above.  The bias path is unchanged (a score's bias is read at its own (query, key)).
  ptxas (nvcc 13): 128 registers, no spills, 45056 bytes static shared memory (sm_90a and sm_80).
"""

from __future__ import annotations

import math

import tvm
from tvm.script import tirx as T

from hetpart.kernels.tir_macro import macro

from hetpart.kernels import flash_layout as fl
from hetpart.kernels.wgmma_gemm import TIR_PIPELINE, cuda_source  # noqa: F401 - re-exported

OUT_DTYPES = ("bfloat16", "float32")
LOG2E = 1.4426950408889634
MMA = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
LDMATRIX = "ldmatrix.sync.aligned.m8n8.x4.shared.b16"
LDMATRIX_T = "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"
CP_ASYNC = "cp.async.cg.shared.global"

QUAD_MAX, QUAD_SUM, PACK, EX2 = "hetpart_quad_max", "hetpart_quad_sum", "hetpart_pack_bf16x2", "hetpart_ex2"
HELPERS = {
    QUAD_MAX: """
__forceinline__ __device__ float hetpart_quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
""",
    QUAD_SUM: """
__forceinline__ __device__ float hetpart_quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
""",
    PACK: """
__forceinline__ __device__ unsigned int hetpart_pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned int*>(&v);
}
""",
    EX2: """
__forceinline__ __device__ float hetpart_ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
""",
}
"""CUDA helpers by name: quad reductions (the four threads of an accumulator row: lanes
differing in bits 0-1), two floats -> one b32 of bf16 (``lo`` in the low half: the lower
column, the ISA's order; round to nearest even), and ``2^x`` by ``ex2.approx.ftz.f32``
(``2^-inf = +0``).  TVM emits each source once per kernel, keyed by the name."""


def _call(name, *args, dtype="float32"):
    return T.cuda.func_call(name, *args, source_code=HELPERS[name], return_type=dtype)


def check(batch: int, heads: int, seq: int, head_dim: int, out_dtype: str) -> None:
    """Raise ValueError unless the kernel supports this shape and output dtype."""
    if head_dim != fl.HEAD_DIM:
        raise ValueError(f"head_dim must be {fl.HEAD_DIM}, got {head_dim}")
    if min(batch, heads, seq) < 1:
        raise ValueError(f"need batch, heads, seq >= 1; got {batch}, {heads}, {seq}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype!r}")


def check_bias(batch: int, heads: int, seq: int, bias_shape) -> tuple[int, int, int, int]:
    """``bias_shape`` as a tuple of ints; ValueError unless it is ``[1|batch, 1|heads, 1|seq, seq]``."""
    shape = tuple(int(d) for d in bias_shape)
    if (len(shape) != 4 or shape[0] not in (1, batch) or shape[1] not in (1, heads) or shape[2] not in (1, seq)
            or shape[3] != seq):
        raise ValueError(f"bias shape must be [1|{batch}, 1|{heads}, 1|{seq}, {seq}], got {list(shape)}")
    return shape


def flash_attention(batch: int, heads: int, seq: int, head_dim: int = fl.HEAD_DIM, *,
                    scale: float | None = None, out_dtype: str = "bfloat16",
                    bias_shape=None, key_split: bool = False) -> tvm.tirx.PrimFunc:
    """The PrimFunc ``main(Q, K, V, O)`` of the module doc for these static sizes; with
    ``bias_shape`` (``[1|batch, 1|heads, 1|seq, seq]``, :func:`check_bias`) ``main(Q, K, V, B, O)``:
    ``O = softmax(scale * Q K^T + B) V``, ``B`` float32 broadcast over its size-1 axes (module doc:
    the bias path).  Without ``bias_shape`` the PrimFunc is the unmasked kernel's, unchanged.
    ``key_split``: the same function computed by the key-split CTA of 256 threads (module doc:
    the key split); off, the PrimFunc is the unsplit one, unchanged."""
    check(batch, heads, seq, head_dim, out_dtype)
    scale_log2 = (1.0 / math.sqrt(head_dim) if scale is None else scale) * LOG2E
    shape, bf16 = (batch, heads, seq, head_dim), "bfloat16"
    threads = fl.SPLIT_THREADS if key_split else fl.THREADS
    if bias_shape is not None:
        return _biased(shape, check_bias(batch, heads, seq, bias_shape), scale_log2, out_dtype, key_split)
    launched = _launched((_split_body if key_split else _body)(seq, scale_log2, out_dtype), shape, threads)

    @T.prim_func
    def main(Q: T.Buffer(shape, bf16), K: T.Buffer(shape, bf16), V: T.Buffer(shape, bf16),
             O: T.Buffer(shape, out_dtype)):
        launched(Q, K, V, O, None)

    return main


def _biased(shape, bias_shape, scale_log2, out_dtype, key_split=False):
    """:func:`flash_attention` with an additive float32 bias ``B`` of ``bias_shape``."""
    seq = shape[2]
    bf16, f32 = "bfloat16", "float32"
    body = (_split_body if key_split else _body)(seq, scale_log2, out_dtype, bias_shape)
    launched = _launched(body, shape, fl.SPLIT_THREADS if key_split else fl.THREADS)

    @T.prim_func
    def main(Q: T.Buffer(shape, bf16), K: T.Buffer(shape, bf16), V: T.Buffer(shape, bf16),
             B: T.Buffer(bias_shape, f32), O: T.Buffer(shape, out_dtype)):
        launched(Q, K, V, O, B)

    return main


def _launched(body, shape, threads):
    """The macro ``launched(Q, K, V, O, B)`` each entry PrimFunc runs after its signature (the
    entries differ only in their parameters): the function's attributes, the grid (``blockIdx``
    x: query tiles, y: heads, z: batch of ``shape``; ``threads`` a CTA) and ``body`` (``B`` the
    bias buffer, None without one)."""
    batch, heads, seq, _ = shape

    @macro
    def launched(Q, K, V, O, B):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        bx = T.launch_thread("blockIdx.x", fl.q_tiles(seq))
        by = T.launch_thread("blockIdx.y", heads)
        bz = T.launch_thread("blockIdx.z", batch)
        tx = T.launch_thread("threadIdx.x", threads)
        body(Q, K, V, O, bx, by, bz, tx, B)

    return launched


def _copies(seq):
    """The macro issuing one 64 x 64 tile's cp.async copies (rows >= seq zero-filled)."""
    cp_async = T.ptx[CP_ASYNC]

    @macro
    def load_tile(dst, base, src, bz, by, row0, tx):
        for c in T.unroll(fl.COPY_CHUNKS):
            cp_async(T.address_of(dst[base + fl.smem_offset(fl.copy_row_col(c, tx)[0], fl.copy_row_col(c, tx)[1])]),
                     T.address_of(src[bz, by, T.min(row0 + fl.copy_row_col(c, tx)[0], seq - 1),
                                      fl.copy_row_col(c, tx)[1]]),
                     16, T.Select(row0 + fl.copy_row_col(c, tx)[0] < seq, T.uint32(16), T.uint32(0)))

    return load_tile


def _scores():
    """The macro S = Q K^T of one key tile for one warp (``s`` 32 float32, zeroed first)."""
    ldsm, mma = T.ptx[LDMATRIX], T.ptx[MMA]

    @macro
    def scores(s, qf, kf, Ks, kbase, lane):
        for i in T.unroll(fl.S_TILES * 4):
            s[i] = T.float32(0)
        for j in T.unroll(fl.S_TILES):
            for p in T.unroll(fl.D_STEPS // 2):
                ldsm(kf[0], kf[1], kf[2], kf[3],
                     T.address_of(Ks[kbase + fl.smem_offset(fl.k_ldmatrix_row_col(lane, j, p)[0],
                                                            fl.k_ldmatrix_row_col(lane, j, p)[1])]))
                for h in T.unroll(2):
                    mma(s[4 * j], s[4 * j + 1], s[4 * j + 2], s[4 * j + 3],
                        qf[4 * (2 * p + h)], qf[4 * (2 * p + h) + 1], qf[4 * (2 * p + h) + 2], qf[4 * (2 * p + h) + 3],
                        kf[2 * h], kf[2 * h + 1],
                        s[4 * j], s[4 * j + 1], s[4 * j + 2], s[4 * j + 3])

    return scores


def _softmax_step(seq, scale_log2, bias_shape=None):
    """The macro of one tile's online softmax for one thread's two rows: mask, scale,
    running max ``m``, rescale of ``l`` and ``o``, ``s`` replaced by P (float32).  With
    ``bias_shape``: each score ``max(s * scale_log2 + B[...] * log2(e), -FLT_MAX)``: clamped to
    ``-FLT_MAX`` (a ``finfo.min`` bias times log2(e) overflows to ``-inf``; clamped, a
    fully masked row stays finite: the reference softmax's uniform row), ``B`` read at the
    (batch, head, query, key) of the score, size-1 axes at 0, the query row and key clamped to
    ``seq - 1`` (rows / keys past ``seq`` are skipped / ``-inf``)."""
    neg_inf = tvm.tirx.const(float("-inf"), "float32")
    lowest = tvm.tirx.const(-3.4028234663852886e38, "float32")
    masked = seq % fl.TILE_KV != 0
    biased = bias_shape is not None
    bb, bh, bq = (bias_shape[0] > 1, bias_shape[1] > 1, bias_shape[2] > 1) if biased else (False, False, False)

    def bias_at(B, bz, by, row, key):  # B's element of a score: size-1 axes at 0, row and key clamped
        return B[bz if bb else 0, by if bh else 0, T.min(row, seq - 1) if bq else 0, T.min(key, seq - 1)]

    @macro
    def softmax_step(s, o, m, l, mx, alpha, t, lane, B, bx, by, bz, warp):
        for j in T.unroll(fl.S_TILES):
            for c in T.unroll(4):
                if biased:
                    s[4 * j + c] = T.max(
                        s[4 * j + c] * T.float32(scale_log2)
                        + bias_at(B, bz, by, bx * fl.TILE_Q + warp * 16 + fl.c_fragment(lane, c)[0],
                                  t * fl.TILE_KV + j * 8 + fl.c_fragment(lane, c)[1]) * T.float32(LOG2E), lowest)
                    if masked:
                        s[4 * j + c] = T.Select(t * fl.TILE_KV + j * 8 + fl.c_fragment(lane, c)[1] < seq,
                                                s[4 * j + c], neg_inf)
                elif masked:
                    s[4 * j + c] = T.Select(t * fl.TILE_KV + j * 8 + fl.c_fragment(lane, c)[1] < seq,
                                            s[4 * j + c] * T.float32(scale_log2), neg_inf)
                else:
                    s[4 * j + c] = s[4 * j + c] * T.float32(scale_log2)
        for r in T.unroll(2):
            mx[r] = m[r]
            for j in T.unroll(fl.S_TILES):
                for h in T.unroll(2):
                    mx[r] = T.max(mx[r], s[4 * j + 2 * r + h])
            mx[r] = _call(QUAD_MAX, mx[r])
            alpha[r] = _call(EX2, m[r] - mx[r])
            m[r] = mx[r]
            l[r] = l[r] * alpha[r]
            for j in T.unroll(fl.D_TILES):
                for h in T.unroll(2):
                    o[4 * j + 2 * r + h] = o[4 * j + 2 * r + h] * alpha[r]
            for j in T.unroll(fl.S_TILES):
                for h in T.unroll(2):
                    s[4 * j + 2 * r + h] = _call(EX2, s[4 * j + 2 * r + h] - m[r])
                    l[r] = l[r] + s[4 * j + 2 * r + h]

    return softmax_step


def _accumulate():
    """The macro O += P V of one key tile for one warp (P packed to bf16 first)."""
    ldsm_t, mma = T.ptx[LDMATRIX_T], T.ptx[MMA]

    @macro
    def accumulate(o, s, pf, vf, Vs, vbase, lane):
        for k in T.unroll(fl.KV_STEPS):
            for j in T.unroll(4):
                pf[4 * k + j] = _call(PACK, s[4 * fl.p_register(k, j)[0] + fl.p_register(k, j)[1]],
                                      s[4 * fl.p_register(k, j)[0] + fl.p_register(k, j)[1] + 1], dtype="uint32")
        for k in T.unroll(fl.KV_STEPS):
            for p in T.unroll(fl.D_TILES // 2):
                ldsm_t(vf[0], vf[1], vf[2], vf[3],
                       T.address_of(Vs[vbase + fl.smem_offset(fl.v_ldmatrix_row_col(lane, k, p)[0],
                                                              fl.v_ldmatrix_row_col(lane, k, p)[1])]))
                for h in T.unroll(2):
                    mma(o[4 * (2 * p + h)], o[4 * (2 * p + h) + 1], o[4 * (2 * p + h) + 2], o[4 * (2 * p + h) + 3],
                        pf[4 * k], pf[4 * k + 1], pf[4 * k + 2], pf[4 * k + 3],
                        vf[2 * h], vf[2 * h + 1],
                        o[4 * (2 * p + h)], o[4 * (2 * p + h) + 1], o[4 * (2 * p + h) + 2], o[4 * (2 * p + h) + 3])

    return accumulate


def _store(seq, out_dtype):
    """The macro normalising ``o`` by the quad-summed ``l`` and storing rows ``< seq``."""

    @macro
    def store(O, o, l, bx, by, bz, warp, lane):
        for r in T.unroll(2):
            l[r] = _call(QUAD_SUM, l[r])
        for j in T.unroll(fl.D_TILES):
            for c in T.unroll(4):
                if bx * fl.TILE_Q + warp * 16 + fl.c_fragment(lane, c)[0] < seq:
                    O[bz, by, bx * fl.TILE_Q + warp * 16 + fl.c_fragment(lane, c)[0], j * 8 + fl.c_fragment(lane, c)[1]] = \
                        T.Cast(out_dtype, o[4 * j + c] / l[c // 2])

    return store


def _registers():
    """One thread's registers of a flash body, allocated here (an ``AllocBuffer`` each, emitted
    where a TVMScript body calls this, in this order): ``(qf, kf, vf, pf, s, o, m, l, mx, alpha)``
    -- Q's, K's, V's and P's ldmatrix fragments (uint32), the scores ``s`` and the output ``o``
    (float32 accumulators), the running max ``m`` and sum ``l`` of two rows, the new max ``mx`` and
    the rescale ``alpha``.  Unpack it into those names: the parser names each buffer by its target."""
    return (T.alloc_buffer((4 * fl.D_STEPS,), "uint32", scope="local"),
            T.alloc_buffer((4,), "uint32", scope="local"),
            T.alloc_buffer((4,), "uint32", scope="local"),
            T.alloc_buffer((4 * fl.KV_STEPS,), "uint32", scope="local"),
            T.alloc_buffer((4 * fl.S_TILES,), "float32", scope="local"),
            T.alloc_buffer((4 * fl.D_TILES,), "float32", scope="local"),
            *(T.alloc_buffer((2,), "float32", scope="local") for _ in range(4)))  # m, l, mx, alpha


def _start():
    """The macro starting a thread's softmax state: ``o`` zero, each row's max ``m`` -inf, sum ``l`` 0."""

    @macro
    def start(o, m, l):
        for i in T.unroll(4 * fl.D_TILES):
            o[i] = T.float32(0)
        for r in T.unroll(2):
            m[r] = T.float32("-inf")
            l[r] = T.float32(0)

    return start


def _body(seq, scale_log2, out_dtype, bias_shape=None):
    load_tile, scores, accumulate, start = _copies(seq), _scores(), _accumulate(), _start()
    softmax_step, store = _softmax_step(seq, scale_log2, bias_shape), _store(seq, out_dtype)
    ldsm = T.ptx[LDMATRIX]
    n_kv, tile = fl.kv_tiles(seq), fl.TILE_ELEMS

    @macro
    def body(Q, K, V, O, bx, by, bz, tx, B=None):
        Qs = T.alloc_buffer((tile,), "bfloat16", scope="shared", align=128)
        Ks = T.alloc_buffer((2 * tile,), "bfloat16", scope="shared", align=128)
        Vs = T.alloc_buffer((2 * tile,), "bfloat16", scope="shared", align=128)
        qf, kf, vf, pf, s, o, m, l, mx, alpha = _registers()
        start(o, m, l)
        load_tile(Qs, 0, Q, bz, by, bx * fl.TILE_Q, tx)
        T.ptx.cp.async_.commit_group()
        load_tile(Ks, 0, K, bz, by, 0, tx)
        load_tile(Vs, 0, V, bz, by, 0, tx)
        T.ptx.cp.async_.commit_group()
        T.ptx.cp.async_.wait_group(1)
        T.tvm_storage_sync("shared")
        for d in T.unroll(fl.D_STEPS):
            ldsm(qf[4 * d], qf[4 * d + 1], qf[4 * d + 2], qf[4 * d + 3],
                 T.address_of(Qs[fl.smem_offset(fl.q_ldmatrix_row_col(tx // 32, tx % 32, d)[0],
                                                fl.q_ldmatrix_row_col(tx // 32, tx % 32, d)[1])]))
        for t in range(n_kv):
            if t + 1 < n_kv:
                load_tile(Ks, (t + 1) % 2 * tile, K, bz, by, (t + 1) * fl.TILE_KV, tx)
                load_tile(Vs, (t + 1) % 2 * tile, V, bz, by, (t + 1) * fl.TILE_KV, tx)
            T.ptx.cp.async_.commit_group()
            T.ptx.cp.async_.wait_group(1)
            T.tvm_storage_sync("shared")
            scores(s, qf, kf, Ks, t % 2 * tile, tx % 32)
            softmax_step(s, o, m, l, mx, alpha, t, tx % 32, B, bx, by, bz, tx // 32)
            accumulate(o, s, pf, vf, Vs, t % 2 * tile, tx % 32)
            T.tvm_storage_sync("shared")
        store(O, o, l, bx, by, bz, tx // 32, tx % 32)

    return body


def _split_body(seq, scale_log2, out_dtype, bias_shape=None):
    """The key-split CTA's body (module doc: the key split): 256 threads, group ``g = tx // 128``
    over key tiles ``2 i + g``; K and V single-buffered per group, K's next copy issued once
    every warp's Q K^T has read K, V's once every P V has read V; the (m, l, O) merge."""
    load_tile, scores, accumulate, start = _copies(seq), _scores(), _accumulate(), _start()
    softmax_step, store = _softmax_step(seq, scale_log2, bias_shape), _store(seq, out_dtype)
    ldsm = T.ptx[LDMATRIX]
    n_kv, steps, tile, nt = fl.kv_tiles(seq), fl.split_steps(seq), fl.TILE_ELEMS, fl.THREADS
    groups, chunk = fl.SPLIT_GROUPS, fl.MERGE_CHUNK

    @macro
    def body(Q, K, V, O, bx, by, bz, tx, B=None):
        Qs = T.alloc_buffer((tile,), "bfloat16", scope="shared", align=128)
        Ks = T.alloc_buffer((groups * tile,), "bfloat16", scope="shared", align=128)
        Vs = T.alloc_buffer((groups * tile,), "bfloat16", scope="shared", align=128)
        X = T.alloc_buffer((chunk * nt,), "float32", scope="shared", align=128)
        qf, kf, vf, pf, s, o, m, l, mx, alpha = _registers()
        start(o, m, l)
        if tx < nt:
            load_tile(Qs, 0, Q, bz, by, bx * fl.TILE_Q, tx % nt)
        load_tile(Ks, tx // nt * tile, K, bz, by, fl.split_tile(0, tx // nt) * fl.TILE_KV, tx % nt)
        T.ptx.cp.async_.commit_group()
        load_tile(Vs, tx // nt * tile, V, bz, by, fl.split_tile(0, tx // nt) * fl.TILE_KV, tx % nt)
        T.ptx.cp.async_.commit_group()
        T.ptx.cp.async_.wait_group(1)
        T.tvm_storage_sync("shared")
        for d in T.unroll(fl.D_STEPS):
            ldsm(qf[4 * d], qf[4 * d + 1], qf[4 * d + 2], qf[4 * d + 3],
                 T.address_of(Qs[fl.smem_offset(fl.q_ldmatrix_row_col(tx // 32 % fl.WARPS, tx % 32, d)[0],
                                                fl.q_ldmatrix_row_col(tx // 32 % fl.WARPS, tx % 32, d)[1])]))
        for i in range(steps):
            # outstanding: K(i), V(i) -> K(i) has landed
            T.ptx.cp.async_.wait_group(1)
            T.tvm_storage_sync("shared")
            if fl.split_tile(i, tx // nt) < n_kv:
                scores(s, qf, kf, Ks, tx // nt * tile, tx % 32)
            T.tvm_storage_sync("shared")
            if i + 1 < steps:
                load_tile(Ks, tx // nt * tile, K, bz, by, fl.split_tile(i + 1, tx // nt) * fl.TILE_KV, tx % nt)
            T.ptx.cp.async_.commit_group()
            if fl.split_tile(i, tx // nt) < n_kv:
                softmax_step(s, o, m, l, mx, alpha, fl.split_tile(i, tx // nt), tx % 32, B, bx, by, bz,
                             tx // 32 % fl.WARPS)
            # outstanding: V(i), K(i + 1) -> V(i) has landed
            T.ptx.cp.async_.wait_group(1)
            T.tvm_storage_sync("shared")
            if fl.split_tile(i, tx // nt) < n_kv:
                accumulate(o, s, pf, vf, Vs, tx // nt * tile, tx % 32)
            T.tvm_storage_sync("shared")
            if i + 1 < steps:
                load_tile(Vs, tx // nt * tile, V, bz, by, fl.split_tile(i + 1, tx // nt) * fl.TILE_KV, tx % nt)
            T.ptx.cp.async_.commit_group()
        # the merge: group 1's (m, l) then its O, MERGE_CHUNK accumulators a pass, through X
        if tx >= nt:
            for r in T.unroll(2):
                X[r * nt + tx % nt] = m[r]
                X[(2 + r) * nt + tx % nt] = l[r]
        T.tvm_storage_sync("shared")
        if tx < nt:
            for r in T.unroll(2):
                mx[r] = T.max(m[r], X[r * nt + tx])
                alpha[r] = _call(EX2, m[r] - mx[r])
                m[r] = _call(EX2, X[r * nt + tx] - mx[r])  # group 1's factor (2^-inf = 0: no key tile)
                l[r] = l[r] * alpha[r] + X[(2 + r) * nt + tx] * m[r]
            for j in T.unroll(4 * fl.D_TILES):
                o[j] = o[j] * alpha[j % 4 // 2]
        for p in T.unroll(4 * fl.D_TILES // chunk):
            T.tvm_storage_sync("shared")
            if tx >= nt:
                for c in T.unroll(chunk):
                    X[c * nt + tx % nt] = o[p * chunk + c]
            T.tvm_storage_sync("shared")
            if tx < nt:
                for c in T.unroll(chunk):
                    o[p * chunk + c] = o[p * chunk + c] + X[c * nt + tx] * m[c % 4 // 2]
        if tx < nt:
            store(O, o, l, bx, by, bz, tx // 32, tx % 32)

    return body


def target(arch: str = "sm_90a") -> tvm.target.Target:
    """A CUDA target for the kernel (``sm_80`` or later: ``mma.sync`` bf16, ``cp.async``, ``ldmatrix``)."""
    return tvm.target.Target({"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}})


def build(batch: int, heads: int, seq: int, head_dim: int = fl.HEAD_DIM, *, scale: float | None = None,
          out_dtype: str = "bfloat16", arch: str = "sm_90a", bias_shape=None, key_split: bool = False):
    """``tvm.compile`` of :func:`flash_attention` (same options) for ``arch``; the executable's
    function ``main(Q, K, V, O)`` (``main(Q, K, V, B, O)`` with ``bias_shape``) takes tensors on the GPU."""
    tgt = target(arch)
    mod = tvm.IRModule({"main": flash_attention(batch, heads, seq, head_dim, scale=scale, out_dtype=out_dtype,
                                                bias_shape=bias_shape, key_split=key_split)})
    with tgt:
        return tvm.compile(mod, target=tgt, tir_pipeline=TIR_PIPELINE)


__all__ = ["LOG2E", "OUT_DTYPES", "build", "check", "check_bias", "cuda_source", "flash_attention", "target"]
