"""``hetpart.kernels.wgmma_gemm`` (issue 17 spike): a hand-written Hopper ``wgmma`` GEMM,
``C[M, N] = A[M, K] @ B[N, K].T`` with bf16 inputs and float32 sums, not wired into builds.

Without a GPU: the shared-memory layout the kernel writes, read back the way the PTX ISA
says wgmma reads a no-swizzle K-major operand through a matrix descriptor (start address,
LBO between core matrices adjacent in K, SBO between core matrices adjacent in M/N; ISA
9.7.17.5.1), is the tile -- for every k16 step and every stage; the chunk-to-thread map
copies each 16-byte chunk of a tile exactly once; the accumulator fragment map (ISA
"WGMMA .m64nNk16 register fragment layout for accumulator matrix D") covers the 64 x N tile
once; the whole kernel, simulated in numpy with those maps, is the GEMM; the PrimFunc builds
for sm_90a with ``wgmma.mma_async`` in its CUDA C and nvcc compiles it without spilling.
With a GPU (``cuda`` mark): the kernel against numpy.

Tolerance (GPU): the reference is float64 sums of the bf16-rounded inputs (bf16 products
are exact in float32), so what differs is the float32 accumulation inside the tensor core:
a few float32 ulps of the partial sums, ~ sqrt(K) * 2^-24 relative to the output's
magnitude; asserted below 1e-4 of max |C| (a layout or descriptor error gives O(1)).  C is
pre-filled with NaN, so an element the kernel fails to write fails the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm

from hetpart.kernels import wgmma_gemm as wg
from hetpart.targets import cuda_available

ISA_TOL = 1e-4
"""max |C - C_ref| / max |C_ref| on the GPU (module doc)."""

SHAPES = [(m, n, k) for m in (64, 197) for n in (128, 768) for k in (64, 768)]
VARIANTS = [(128, 1), (128, 3), (64, 2)]
"""(bn, stages) of the kernels checked: the plain one, a 3-stage cp.async pipeline, a narrow tile."""


# --- the layouts (pure Python) ---------------------------------------------------------------
def _descriptor_read(smem: np.ndarray, start_bytes: int, lbo: int, sbo: int, rows: int) -> np.ndarray:
    """The ``rows x 16`` bf16 operand wgmma reads from ``smem`` (a flat bf16 array) through a
    no-swizzle K-major descriptor -- ISA 9.7.17.5.1's canonical layout, written out
    independently of :func:`wg.smem_offset`: element (r, k) at byte
    ``start + (r // 8) * SBO + (r % 8) * 16 + (k // 8) * LBO + (k % 8) * 2`` (LBO and SBO
    given in the descriptor's 16-byte units)."""
    out = np.empty((rows, wg.MMA_K), smem.dtype)
    for r in range(rows):
        for k in range(wg.MMA_K):
            byte = start_bytes + (r // 8) * sbo * 16 + (r % 8) * 16 + (k // 8) * lbo * 16 + (k % 8) * 2
            assert byte % 2 == 0
            out[r, k] = smem[byte // 2]
    return out


def _staged(tile: np.ndarray) -> np.ndarray:
    """``tile`` (rows x TILE_K) copied into shared memory as the kernel's threads copy it:
    thread t's chunk c covers row :func:`wg._chunk_row`, K :func:`wg._chunk_k` .. +7."""
    rows = tile.shape[0]
    smem = np.full(rows * wg.TILE_K, np.nan, np.float32)
    seen = set()
    for c in range(rows * wg.TILE_K // wg.CHUNK // wg.WARPGROUP):
        for t in range(wg.WARPGROUP):
            r, k0 = wg._chunk_row(c, t), wg._chunk_k(c, t)
            assert (r, k0) not in seen, "a chunk copied twice"
            seen.add((r, k0))
            for v in range(wg.CHUNK):
                smem[wg.smem_offset(r, k0 + v, rows)] = tile[r, k0 + v]
    assert len(seen) == rows * wg.TILE_K // wg.CHUNK, "every chunk copied"
    return smem


@pytest.mark.parametrize("rows", [64, 128])
def test_staged_tile_reads_back_through_the_descriptor(rows):
    tile = np.arange(rows * wg.TILE_K, dtype=np.float32).reshape(rows, wg.TILE_K)
    smem = _staged(tile)
    assert not np.isnan(smem).any(), "the layout fills the tile's buffer exactly"
    lbo, sbo = wg.descriptor_fields(rows)
    assert (lbo * 16, sbo * 16) == (rows * 16, 128)
    for kk in range(wg.TILE_K // wg.MMA_K):
        got = _descriptor_read(smem, kk * wg.k_step_bytes(rows), lbo, sbo, rows)
        np.testing.assert_array_equal(got, tile[:, kk * 16:(kk + 1) * 16])


def test_swapped_descriptor_reads_something_else():
    """The probe's debugging variant really is different (it must fail if ours is right)."""
    tile = np.arange(64 * wg.TILE_K, dtype=np.float32).reshape(64, wg.TILE_K)
    lbo, sbo = wg.descriptor_fields(64, swapped=True)
    got = _descriptor_read(_staged(tile), 0, lbo, sbo, 16)  # 16 rows stay inside the tile
    assert not np.array_equal(got, tile[:16, :16])


@pytest.mark.parametrize("bn", wg.TILE_N_CHOICES)
def test_d_fragment_covers_the_tile_once(bn):
    slots = {wg.d_fragment(t, i) for t in range(wg.WARPGROUP) for i in range(bn // 2)}
    assert slots == {(r, c) for r in range(64) for c in range(bn)}


def test_d_fragment_is_the_isa_one():
    # ISA figure for m64nNk16 D: warp w rows 16w.., lane l: d0,d1 at (l/4, 2(l%4)+{0,1}),
    # d2,d3 at (l/4+8, same); the next 8 columns in d4..d7, and so on.
    for t in (0, 1, 5, 31, 32, 77, 127):
        w, lane = t // 32, t % 32
        assert wg.d_fragment(t, 0) == (16 * w + lane // 4, 2 * (lane % 4))
        assert wg.d_fragment(t, 1) == (16 * w + lane // 4, 2 * (lane % 4) + 1)
        assert wg.d_fragment(t, 2) == (16 * w + lane // 4 + 8, 2 * (lane % 4))
        assert wg.d_fragment(t, 7) == (16 * w + lane // 4 + 8, 8 + 2 * (lane % 4) + 1)


def _simulate(a: np.ndarray, b: np.ndarray, bn: int) -> np.ndarray:
    """The kernel's data movement in numpy: per output tile and K tile, A and B staged by
    :func:`_staged` (A's rows past M as zeros), each k16 step's operands read back through
    the descriptors, multiplied, and the accumulators stored by :func:`wg.d_fragment`."""
    m, k = a.shape
    n = b.shape[0]
    out = np.full((m, n), np.nan, np.float64)
    for by in range(-(-m // 64)):
        for bx in range(n // bn):
            acc = np.zeros((64, bn))
            for ko in range(k // wg.TILE_K):
                at = np.zeros((64, wg.TILE_K), np.float32)
                rows = a[by * 64:(by + 1) * 64, ko * 64:(ko + 1) * 64]
                at[:rows.shape[0]] = rows
                sa, sb = _staged(at), _staged(b[bx * bn:(bx + 1) * bn, ko * 64:(ko + 1) * 64])
                for kk in range(wg.TILE_K // wg.MMA_K):
                    oa = _descriptor_read(sa, kk * wg.k_step_bytes(64), *wg.descriptor_fields(64), 64)
                    ob = _descriptor_read(sb, kk * wg.k_step_bytes(bn), *wg.descriptor_fields(bn), bn)
                    acc += oa.astype(np.float64) @ ob.astype(np.float64).T
            regs = {(t, i): acc[wg.d_fragment(t, i)] for t in range(128) for i in range(bn // 2)}
            for (t, i), value in regs.items():
                r, c = wg.d_fragment(t, i)
                if by * 64 + r < m:
                    out[by * 64 + r, bx * bn + c] = value
    return out


def test_simulated_kernel_is_the_gemm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((70, 128)).astype(np.float32)
    b = rng.standard_normal((128, 128)).astype(np.float32)
    np.testing.assert_allclose(_simulate(a, b, 64), a.astype(np.float64) @ b.astype(np.float64).T, rtol=1e-9)


@pytest.mark.parametrize("shape", [(197, 100, 64), (197, 128, 96), (0, 128, 64)])
def test_unsupported_shapes_are_refused(shape):
    with pytest.raises(ValueError):
        wg.wgmma_gemm(*shape)


# --- the CUDA C ------------------------------------------------------------------------------
def _source(m, n, k, bn, stages) -> str:
    try:
        return wg.cuda_source(wg.build(m, n, k, bn, stages=stages))
    except tvm.error.TVMError as e:  # no CUDA codegen in this TVM build
        if "cuda" in str(e).lower() and "not enabled" in str(e).lower():
            pytest.skip(f"TVM has no CUDA codegen here: {e}")
        raise


@pytest.mark.parametrize("bn,stages", VARIANTS)
def test_builds_for_sm90a_with_wgmma(bn, stages):
    src = _source(197, 768, 768, bn, stages)
    assert f"wgmma.mma_async.sync.aligned.m64n{bn}k16.f32.bf16.bf16" in src
    for op in ("wgmma.fence.sync.aligned", "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned 0",
               "fence.proxy.async.shared::cta"):
        assert op in src, op
    kernel = src[src.rindex('extern "C" __global__'):]  # the definition
    assert kernel.count("_mma_async_sync_aligned_m64n") == wg.TILE_K // wg.MMA_K, "four k16 wgmmas per K tile"
    if stages > 1:
        assert "cp.async.cg.shared.global" in src and "extern __shared__" in src


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("bn,stages", VARIANTS)
def test_nvcc_compiles_for_sm90a_without_spilling(bn, stages, tmp_path):
    from hetpart.kernels import cuda_compile

    (tmp_path / "k.cu").write_text(_source(197, 768, 768, bn, stages))
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr
    assert "serialized" not in done.stderr, "ptxas serialized the wgmmas"


# --- on the GPU ------------------------------------------------------------------------------
def bf16_inputs(m: int, n: int, k: int, seed: int = 0):
    """(A, B) as bf16 numpy arrays (ml_dtypes), negatives and every 7th element zero."""
    from hetpart.importer.low_precision import to_low

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    a.flat[::7] = 0.0
    b.flat[3::7] = 0.0
    return to_low(a, "bfloat16"), to_low(b, "bfloat16")


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("bn,stages", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_numpy_on_gpu(shape, bn, stages):
    m, n, k = shape
    a, b = bf16_inputs(m, n, k)
    dev = tvm.cuda(0)
    ex = wg.build(m, n, k, bn, stages=stages)
    c = tvm.runtime.tensor(np.full((m, n), np.nan, np.float32), dev)
    ex["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), c)
    got = c.numpy()
    want = a.astype(np.float64) @ b.astype(np.float64).T
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= ISA_TOL, f"{shape} bn={bn} stages={stages}: max rel err {err:.2e}"
