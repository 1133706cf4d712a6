"""A Hopper ``wgmma`` GEMM as a hand-written TIR PrimFunc (issue 17 feasibility spike).

Not wired into any build: :func:`wgmma_gemm` returns a standalone PrimFunc that
``tvm.compile`` turns into one CUDA kernel for ``sm_90a``; ``tools/gpu_wgmma_probe.py``
times it against hetpart's ``mma.sync`` rule, ``bench/results/gpu-wgmma-spike.md``
records what TVM 0.27 needed.

In:  ``A[M, K]`` bfloat16 (row-major, K contiguous), ``B[N, K]`` bfloat16 (the weight
     as ``[out, in]``, K contiguous: ``C = A @ B.T``).
Out: ``C[M, N]`` float32 = sum over k of float(A[m, k]) * float(B[n, k]), float32 sums.

The kernel (``stages=1``: one stage, no TMA, no pipelining; ``stages>=2`` replaces the
copies by a ``cp.async`` pipeline, see :func:`wgmma_gemm`):

* one warpgroup (128 threads) per ``64 x bn`` tile of C (``bn`` 64 or 128: grid
  ``(N / bn, ceil(M / 64))``); M need not be a multiple of 64 (rows past M are
  loaded as zeros and not stored); N % bn == 0 and K % 64 == 0 are required;
* per 64-wide slice of K: each thread copies 16-byte chunks (8 bf16) of the A and B
  tiles from global to shared memory, into the *no-swizzle K-major canonical layout*
  (:func:`smem_offset`), then ``fence.proxy.async.shared::cta`` (generic-proxy writes
  made visible to the async proxy wgmma reads through) and ``__syncthreads``;
* the accumulators pinned (:data:`PIN`: an empty ``asm volatile`` reading and writing each
  register in place, CUTLASS's ``warpgroup_fence_operand``) so the compiler moves no
  use of them across the asynchronous MMA; ``wgmma.fence``; four
  ``wgmma.mma_async.sync.aligned.m64n{bn}k16.f32.bf16.bf16``, A and B both from shared memory through matrix descriptors (:func:`descriptor_fields`),
  accumulating into ``bn / 2`` float32 registers per thread; ``wgmma.commit_group``;
  ``wgmma.wait_group 0``; the accumulators pinned again; ``__syncthreads`` before the
  tiles are overwritten;
* the accumulators stored by the D fragment layout (:func:`d_fragment`), rows >= M skipped.

Invariant: the shared-memory layout, the descriptor's LBO/SBO and the fragment layout
are the PTX ISA's (sections cited at each function); the CPU tests check the layout
against the ISA's canonical form and the fragment map for coverage, the GPU test
checks the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.script import tirx as T

WARPGROUP = 128
"""Threads of one warpgroup: four consecutive warps."""
TILE_M = 64
"""Rows of C per warpgroup: wgmma's M is always 64."""
TILE_K = 64
"""K elements staged in shared memory per step (four wgmma k16 instructions)."""
MMA_K = 16
"""wgmma's K for 16-bit inputs."""
CORE_ROWS = 8
"""A core matrix is 8 rows of 16 bytes (8 bf16): 128 contiguous bytes (ISA 9.7.17.5.1)."""
CHUNK = 8
"""bf16 elements per 16-byte row of a core matrix (one vector copy)."""
ELEM_BYTES = 2
TILE_N_CHOICES = (64, 128)
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
TIR_PIPELINE = "tirx"
"""TVM 0.27's lowering for hand-written TIRx kernels.  The default ("s_tir") pipeline's
CompactBufferAllocation shrinks a buffer to the elements TIR sees indexed -- a cp.async
writing 8 elements from one address, or wgmma reading through a descriptor, is invisible
to it -- and its MergeSharedMemoryAllocations fails on ``buffer.data`` in a call; the
"tirx" pipeline has neither (nor ThreadSync: every barrier here is written out)."""


@dataclass(frozen=True)
class Shape:
    """A GEMM's M, N, K and the N of one warpgroup's tile."""

    m: int
    n: int
    k: int
    bn: int = 128

    def check(self) -> None:
        """Raise ValueError unless the kernel supports this shape."""
        if self.bn not in TILE_N_CHOICES:
            raise ValueError(f"bn must be one of {TILE_N_CHOICES}, got {self.bn}")
        if self.m < 1 or self.n % self.bn or self.k % TILE_K:
            raise ValueError(f"need M >= 1, N % {self.bn} == 0 and K % {TILE_K} == 0; got "
                             f"M={self.m} N={self.n} K={self.k}")

    @property
    def grid(self) -> tuple[int, int]:
        """(blockIdx.x extent: N tiles, blockIdx.y extent: M tiles)."""
        return self.n // self.bn, -(-self.m // TILE_M)


# --- the layouts (pure Python: shared by the kernel and the CPU tests) ----------------
def smem_offset(row: int, k: int, rows: int):
    """Element offset of tile element (row, k) in the no-swizzle K-major layout of a
    ``rows x TILE_K`` tile (works on ints and TIR expressions alike).

    PTX ISA 9.7.17.5.1 (Shared Memory Matrix Layout), no swizzle ("interleave"), K-major:
    the tile is a grid of core matrices of 8 rows x 16 bytes, each 128 contiguous bytes
    (row r of a core matrix at byte 16 * r).  Here the core matrices of one 8-column
    K group are consecutive along M/N (``rows / 8`` of them, 128 bytes apart), and the
    K groups follow each other ``rows / 8 * 128`` bytes apart.  So, in the descriptor's
    terms (ISA 9.7.17.5.1.2, Matrix Descriptor): the *leading* dimension byte offset
    (LBO: between core matrices adjacent in K) is ``rows * 16`` bytes and the *stride*
    dimension byte offset (SBO: between core matrices adjacent in M/N) is 128 bytes.
    CUTLASS writes the same canonical form (``make_gmma_desc<Major::K>``, INTERLEAVE) as
    ``((8, m), (T, 2k)) : ((1T, SBO), (1, LBO))`` in 16-byte units.
    """
    return ((k // CHUNK) * (rows // CORE_ROWS) + row // CORE_ROWS) * (CORE_ROWS * CHUNK) \
        + (row % CORE_ROWS) * CHUNK + k % CHUNK


def descriptor_fields(rows: int, swapped: bool = False) -> tuple[int, int]:
    """(LBO, SBO) in the descriptor's 16-byte units for a ``rows``-row tile laid out by
    :func:`smem_offset` (see there).  ``swapped``: the two exchanged -- a debugging
    variant for the probe, should a GPU show the ISA's reading differs from ours."""
    lbo, sbo = rows * 16 // 16, CORE_ROWS * 16 // 16
    return (sbo, lbo) if swapped else (lbo, sbo)


def k_step_bytes(rows: int) -> int:
    """Bytes from one wgmma k16 slice of a tile to the next: two K core-matrix groups."""
    return (MMA_K // CHUNK) * rows * 16


def d_fragment(thread: int, i: int):
    """(row, col) in the 64 x N tile of accumulator register ``i`` of warpgroup thread
    ``thread`` (ints or TIR expressions).

    PTX ISA 9.7.17.5.1.1 (Register Fragments, the figure "WGMMA .m64nNk16 register
    fragment layout for accumulator matrix D"): warp w = thread / 32 owns rows
    16w..16w+15; within the warp the layout is mma.m16n8's C fragment repeated every 8
    columns: lane l holds, for each 8-column block j = i / 4, d[4j], d[4j+1] at
    (l / 4, 8j + 2 (l % 4) + {0, 1}) and d[4j+2], d[4j+3] at (l / 4 + 8, same columns).
    (CUTLASS: ``CLayout_64xN = ((4,8,4),(2,2,N/8)) : ((128,1,16),(64,8,512))``.)
    """
    warp, lane = thread // 32, thread % 32
    row = 16 * warp + lane // 4 + 8 * ((i // 2) % 2)
    col = 8 * (i // 4) + 2 * (lane % 4) + i % 2
    return row, col


# --- the kernel ----------------------------------------------------------------------
def _chunk_row(c, tx):
    """Tile row of 16-byte chunk ``c * 128 + tx`` (module doc: 8 consecutive chunks fill
    one core matrix, so 8 consecutive threads write 128 contiguous bytes and read 16
    bytes of 8 rows each)."""
    idx = c * WARPGROUP + tx
    return idx // (CORE_ROWS * (TILE_K // CHUNK)) * CORE_ROWS + idx % CORE_ROWS


def _chunk_k(c, tx):
    """First K (within the tile) of chunk ``c * 128 + tx``."""
    return (c * WARPGROUP + tx) // CORE_ROWS % (TILE_K // CHUNK) * CHUNK


def wgmma_gemm(m: int, n: int, k: int, bn: int = 128, *, stages: int = 1,
               swapped_descriptor: bool = False) -> tvm.tirx.PrimFunc:
    """The PrimFunc ``main(A: [m, k] bf16, B: [n, k] bf16, C: [m, n] float32)`` (module doc).

    ``bn``: N of one warpgroup's tile (64 or 128: the instruction m64n{bn}k16 and bn / 2
    accumulator registers per thread).  ``stages``: 1, the plain kernel (vector loads
    and stores to shared memory, then the wgmmas); >= 2, a ``cp.async`` pipeline of that
    many shared-memory buffers (tiles ``stages - 1`` ahead in flight while the wgmmas of
    the current one run; dynamic shared memory).  ``swapped_descriptor``: see
    :func:`descriptor_fields`.  Raises ValueError for an unsupported shape.
    """
    shape = Shape(m, n, k, bn)
    shape.check()
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    grid_n, grid_m = shape.grid
    n_acc = bn // 2
    a_rows, b_rows = TILE_M, bn
    a_size, b_size = a_rows * TILE_K, b_rows * TILE_K
    a_lbo, a_sbo = descriptor_fields(a_rows, swapped_descriptor)
    b_lbo, b_sbo = descriptor_fields(b_rows, swapped_descriptor)
    # descriptors advance in 16-byte units (their address field drops 4 bits)
    a_step, b_step = k_step_bytes(a_rows) // 16, k_step_bytes(b_rows) // 16
    a_chunks, b_chunks = a_size // CHUNK // WARPGROUP, b_size // CHUNK // WARPGROUP
    k_tiles, k_steps = k // TILE_K, TILE_K // MMA_K
    wgmma = T.ptx[f"wgmma.mma_async.sync.aligned.m64n{bn}k16.f32.bf16.bf16"]

    if stages == 1:
        @T.prim_func
        def main(A: T.Buffer((m, k), "bfloat16"), B: T.Buffer((n, k), "bfloat16"),
                 C: T.Buffer((m, n), "float32")):
            T.func_attr({"global_symbol": "main", "tirx.noalias": True})
            bx = T.launch_thread("blockIdx.x", grid_n)
            by = T.launch_thread("blockIdx.y", grid_m)
            tx = T.launch_thread("threadIdx.x", WARPGROUP)
            As = T.alloc_buffer((a_size,), "bfloat16", scope="shared", align=128)
            Bs = T.alloc_buffer((b_size,), "bfloat16", scope="shared", align=128)
            acc = T.alloc_buffer((n_acc,), "float32", scope="local")
            desc_a = T.alloc_buffer((1,), "uint64", scope="local")
            desc_b = T.alloc_buffer((1,), "uint64", scope="local")
            for i in T.unroll(n_acc):
                acc[i] = T.float32(0)
            for ko in range(k_tiles):
                for c in T.unroll(a_chunks):
                    for v in T.vectorized(CHUNK):
                        As[smem_offset(_chunk_row(c, tx), _chunk_k(c, tx) + v, a_rows)] = T.if_then_else(
                            by * TILE_M + _chunk_row(c, tx) < m,
                            A[T.min(by * TILE_M + _chunk_row(c, tx), m - 1), ko * TILE_K + _chunk_k(c, tx) + v],
                            T.bfloat16(0))
                for c in T.unroll(b_chunks):
                    for v in T.vectorized(CHUNK):
                        Bs[smem_offset(_chunk_row(c, tx), _chunk_k(c, tx) + v, b_rows)] = \
                            B[bx * bn + _chunk_row(c, tx), ko * TILE_K + _chunk_k(c, tx) + v]
                T.ptx.fence.proxy.async_.shared__cta()
                T.tvm_storage_sync("shared")
                for i in T.unroll(n_acc):
                    T.cuda.func_call(PIN, acc[i], source_code=PIN_SOURCE)
                T.ptx.wgmma.fence.sync.aligned()
                T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_a[0]), T.address_of(As[0]),
                                                      a_lbo, a_sbo, 0)
                T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_b[0]), T.address_of(Bs[0]),
                                                      b_lbo, b_sbo, 0)
                for kk in T.unroll(k_steps):
                    wgmma(*[acc[i] for i in range(n_acc)],
                          desc_a[0] + T.uint64(kk * a_step), desc_b[0] + T.uint64(kk * b_step),
                          True, 1, 1, 0, 0)
                T.ptx.wgmma.commit_group.sync.aligned()
                T.ptx.wgmma.wait_group.sync.aligned(0)
                for i in T.unroll(n_acc):
                    T.cuda.func_call(PIN, acc[i], source_code=PIN_SOURCE)
                T.tvm_storage_sync("shared")
            for i in T.unroll(n_acc):
                if by * TILE_M + d_fragment(tx, i)[0] < m:
                    C[by * TILE_M + d_fragment(tx, i)[0], bx * bn + d_fragment(tx, i)[1]] = acc[i]

        return main

    prologue = min(stages - 1, k_tiles)
    a_stage, b_stage = a_size * ELEM_BYTES // 16, b_size * ELEM_BYTES // 16  # descriptor units
    cp_async = T.ptx["cp.async.cg.shared.global"]

    b_base = stages * a_size  # S: the A tiles of every stage, then the B tiles

    @T.macro
    def load_tile(S, A, B, tile, stage, bx, by, tx):
        # tile ``tile`` of K into buffer ``stage``: 16-byte cp.async per chunk; A's rows past
        # M read a clamped (valid) address with src-size 0, which zero-fills the chunk
        for c in T.unroll(a_chunks):
            cp_async(T.address_of(S[stage * a_size + smem_offset(_chunk_row(c, tx), _chunk_k(c, tx), a_rows)]),
                     T.address_of(A[T.min(by * TILE_M + _chunk_row(c, tx), m - 1),
                                    tile * TILE_K + _chunk_k(c, tx)]),
                     16, T.Select(by * TILE_M + _chunk_row(c, tx) < m, T.uint32(16), T.uint32(0)))
        for c in T.unroll(b_chunks):
            cp_async(T.address_of(S[b_base + stage * b_size + smem_offset(_chunk_row(c, tx), _chunk_k(c, tx), b_rows)]),
                     T.address_of(B[bx * bn + _chunk_row(c, tx), tile * TILE_K + _chunk_k(c, tx)]),
                     16, T.uint32(16))

    @T.prim_func
    def main_pipelined(A: T.Buffer((m, k), "bfloat16"), B: T.Buffer((n, k), "bfloat16"),
                       C: T.Buffer((m, n), "float32")):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        bx = T.launch_thread("blockIdx.x", grid_n)
        by = T.launch_thread("blockIdx.y", grid_m)
        tx = T.launch_thread("threadIdx.x", WARPGROUP)
        S = T.alloc_buffer((stages * (a_size + b_size),), "bfloat16", scope=PIPELINE_SCOPE, align=128)
        acc = T.alloc_buffer((n_acc,), "float32", scope="local")
        desc_a = T.alloc_buffer((1,), "uint64", scope="local")
        desc_b = T.alloc_buffer((1,), "uint64", scope="local")
        for i in T.unroll(n_acc):
            acc[i] = T.float32(0)
        # the descriptors of stage 0; later stages and k16 steps add to the address field
        T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_a[0]), T.address_of(S[0]), a_lbo, a_sbo, 0)
        T.cuda.wgmma.encode_matrix_descriptor(T.address_of(desc_b[0]), T.address_of(S[b_base]),
                                              b_lbo, b_sbo, 0)
        for s in T.unroll(stages - 1):
            if s < prologue:
                load_tile(S, A, B, s, s, bx, by, tx)
            T.ptx.cp.async_.commit_group()
        for ko in range(k_tiles):
            # this thread's copies of tile ko have landed; after the barrier everyone's have,
            # and every wgmma of tile ko - 1 is done (each thread waited for its own)
            T.ptx.cp.async_.wait_group(stages - 2)
            T.ptx.fence.proxy.async_.shared__cta()
            T.tvm_storage_sync("shared")
            for i in T.unroll(n_acc):
                T.cuda.func_call(PIN, acc[i], source_code=PIN_SOURCE)
            T.ptx.wgmma.fence.sync.aligned()
            for kk in T.unroll(k_steps):
                wgmma(*[acc[i] for i in range(n_acc)],
                      desc_a[0] + T.Cast("uint64", ko % stages * a_stage + kk * a_step),
                      desc_b[0] + T.Cast("uint64", ko % stages * b_stage + kk * b_step),
                      True, 1, 1, 0, 0)
            T.ptx.wgmma.commit_group.sync.aligned()
            # refill the buffer tile ko - 1 used (free: its wgmmas finished before the barrier)
            if ko + stages - 1 < k_tiles:
                load_tile(S, A, B, ko + stages - 1, (ko + stages - 1) % stages, bx, by, tx)
            T.ptx.cp.async_.commit_group()
            T.ptx.wgmma.wait_group.sync.aligned(0)
            for i in T.unroll(n_acc):
                T.cuda.func_call(PIN, acc[i], source_code=PIN_SOURCE)
        for i in T.unroll(n_acc):
            if by * TILE_M + d_fragment(tx, i)[0] < m:
                C[by * TILE_M + d_fragment(tx, i)[0], bx * bn + d_fragment(tx, i)[1]] = acc[i]

    return main_pipelined


def target(arch: str = "sm_90a") -> tvm.target.Target:
    """The CUDA target the kernel needs: wgmma exists only on ``sm_90a``."""
    return tvm.target.Target({"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}})


def build(m: int, n: int, k: int, bn: int = 128, *, stages: int = 1, swapped_descriptor: bool = False):
    """``tvm.compile`` of :func:`wgmma_gemm` for sm_90a (under the target, so hetpart's
    CUDA compile callback, where it runs, compiles for 90a too).  Returns the executable;
    its function ``main`` takes (A, B, C) tensors on the GPU."""
    tgt = target()
    mod = tvm.IRModule({"main": wgmma_gemm(m, n, k, bn, stages=stages,
                                                swapped_descriptor=swapped_descriptor)})
    with tgt:
        return tvm.compile(mod, target=tgt, tir_pipeline=TIR_PIPELINE)


def cuda_source(executable) -> str:
    """The CUDA C of a built executable ("" if none)."""
    def walk(mod):
        if mod.kind == "cuda":
            return mod.inspect_source("cuda")
        return next((found for found in map(walk, mod.imports) if found), "")

    return walk(executable.mod if hasattr(executable, "mod") else executable)


__all__ = ["Shape", "build", "cuda_source", "d_fragment", "descriptor_fields", "k_step_bytes",
           "smem_offset", "target", "wgmma_gemm"]
