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

The same for the other precisions (``tf32``: float32 operands read as tf32 by ``m64nNk8``,
4 elements per 16-byte core-matrix row; ``f32a``: float32 A narrowed to bf16 on the register
path, round to nearest even), split-K (the partials of each K slice, then the in-order
reduction) and the epilogue (bias, bias + GELU erf form), from ``wgmma_layout`` and
``wgmma_splitk``.

Tolerance (GPU): the reference is float64 sums of the bf16-rounded inputs (bf16 products
are exact in float32), so what differs is the float32 accumulation inside the tensor core:
a few float32 ulps of the partial sums, ~ sqrt(K) * 2^-24 relative to the output's
magnitude; asserted below 1e-4 of max |C| (a layout or descriptor error gives O(1)).  C is
pre-filled with NaN, so an element the kernel fails to write fails the test.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm

from hetpart.kernels import wgmma_gemm as wg
from hetpart.kernels.wgmma_substitute import round_tf32
from hetpart.targets import cuda_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_wgmma_probe import bf16_inputs, variant_inputs  # noqa: E402  (the probe's inputs: negatives, every 7th zero)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nvcc_cases import cubin_and_ptx  # noqa: E402


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
@functools.lru_cache(maxsize=None)  # the build test and the nvcc test read each variant's source: one TVM build
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


# === the other precisions, split-K, the epilogue (wgmma_layout, wgmma_splitk) =================
from hetpart.kernels import wgmma_layout as lay  # noqa: E402
from hetpart.kernels import wgmma_splitk as sk  # noqa: E402
from gemm_runs import run_on_gpu  # noqa: E402

TF32 = lay.PRECISIONS["tf32"]


def _isa_read(smem: np.ndarray, start_bytes: int, lbo: int, sbo: int, rows: int, prec: lay.Precision) -> np.ndarray:
    """The ``rows x mma_k`` operand of one wgmma step, read from ``smem`` (flat, elements of
    ``prec.elem_bytes``) by ISA 9.7.17.5.1's no-swizzle K-major form, in bytes: element (r, k)
    at ``start + (r // 8) * SBO + (r % 8) * 16 + (k // e) * LBO + (k % e) * size`` with ``e``
    = 16 / size elements per core-matrix row (8 bf16, 4 tf32) -- independently of
    :func:`lay.smem_offset`."""
    size = prec.elem_bytes
    per_row = 16 // size
    out = np.empty((rows, prec.mma_k), smem.dtype)
    for r in range(rows):
        for k in range(prec.mma_k):
            byte = start_bytes + (r // 8) * sbo * 16 + (r % 8) * 16 + (k // per_row) * lbo * 16 + (k % per_row) * size
            assert byte % size == 0
            out[r, k] = smem[byte // size]
    return out


def _staged_as(tile: np.ndarray, prec: lay.Precision) -> np.ndarray:
    """:func:`_staged` for any precision: chunk c of thread t covers row :func:`lay.chunk_row`,
    K :func:`lay.chunk_k` .. + chunk - 1 (16 bytes)."""
    rows = tile.shape[0]
    smem = np.full(rows * prec.tile_k, np.nan, np.float64)
    seen = set()
    for c in range(rows * prec.tile_k // prec.chunk // lay.WARPGROUP):
        for t in range(lay.WARPGROUP):
            r, k0 = lay.chunk_row(c, t), lay.chunk_k(c, t, prec.chunk)
            assert (r, k0) not in seen, "a chunk copied twice"
            seen.add((r, k0))
            for v in range(prec.chunk):
                smem[lay.smem_offset(r, k0 + v, rows, prec.chunk)] = tile[r, k0 + v]
    assert len(seen) == rows * prec.tile_k // prec.chunk, "every chunk copied"
    return smem


def test_tf32_geometry_is_the_isa_one():
    assert (TF32.mma_k, TF32.chunk, TF32.tile_k, TF32.elem_bytes) == (8, 4, 32, 4)
    assert TF32.instruction(128) == "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32"
    assert not TF32.transpose_immediates, ".tf32 wgmma has no imm-trans (K-major only)"
    assert lay.PRECISIONS["f32a"].a_converted and lay.PRECISIONS["tf32r"].a_converted and not TF32.a_converted
    for name in lay.PRECISIONS:  # one step reads 32 bytes of K per row: the descriptor step is shared
        p = lay.PRECISIONS[name]
        assert p.mma_k * p.elem_bytes == lay.STEP_K_BYTES and p.tile_k * p.elem_bytes == lay.TILE_K_BYTES


@pytest.mark.parametrize("rows", [64, 128])
def test_tf32_staged_tile_reads_back_through_the_descriptor(rows):
    tile = np.arange(rows * TF32.tile_k, dtype=np.float64).reshape(rows, TF32.tile_k)
    smem = _staged_as(tile, TF32)
    assert not np.isnan(smem).any()
    lbo, sbo = lay.descriptor_fields(rows)
    for kk in range(TF32.tile_k // TF32.mma_k):
        got = _isa_read(smem, kk * lay.k_step_bytes(rows), lbo, sbo, rows, TF32)
        np.testing.assert_array_equal(got, tile[:, kk * 8:(kk + 1) * 8])


def test_bf16_layout_is_unchanged_by_the_generalisation():
    """wgmma_layout's bf16 maps are the first spike's (its generated code must not change)."""
    bf = lay.BF16
    for r in range(0, 128, 5):
        for k in range(64):
            assert lay.smem_offset(r, k, 128) == ((k // 8) * 16 + r // 8) * 64 + (r % 8) * 8 + k % 8
    for c in range(8):
        for t in range(128):
            i = c * 128 + t
            assert (lay.chunk_row(c, t), lay.chunk_k(c, t)) == (i // 64 * 8 + i % 8, i // 8 % 8 * 8)
    assert (bf.tile_k, bf.mma_k, bf.chunk) == (wg.TILE_K, wg.MMA_K, wg.CHUNK) == (64, 16, 8)


def _tf32(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to tf32 (10 mantissa bits, to nearest, ties away: cvt.rna)."""
    return round_tf32(np.asarray(x, np.float32))


def _bf16(x: np.ndarray) -> np.ndarray:
    from hetpart.importer.low_precision import to_low

    return to_low(x, "bfloat16").astype(np.float32)


def _gelu(y: np.ndarray) -> np.ndarray:
    from math import erf

    return 0.5 * y * (1.0 + np.vectorize(erf)(y / np.sqrt(2.0)))


def _a_as_staged(a: np.ndarray, precision: str) -> np.ndarray:
    """A's values as the kernel stages them: f32a narrowed to bf16 (RNE), tf32r rounded to tf32
    (RNA), else as given."""
    return {"f32a": _bf16, "tf32r": _tf32}.get(precision, lambda x: np.asarray(x, np.float32))(a)


def _reference(a, b, epilogue=None, bias=None, precision="bf16") -> np.ndarray:
    """float64 GEMM of the operands as the tensor core sees them (:func:`_a_as_staged`), then
    the epilogue."""
    a64 = _a_as_staged(a, precision).astype(np.float64)
    out = a64 @ np.asarray(b, np.float32).astype(np.float64).T
    if epilogue is not None:
        out = out + bias.astype(np.float64)
        if epilogue == "bias_gelu":
            out = _gelu(out)
    return out


def _simulate_as(a, b, bn, prec: lay.Precision, split=1, epilogue=None, bias=None):
    """The kernel in numpy for any precision and split (:func:`_simulate` generalised): A
    staged as the kernel stages it (f32a: narrowed to bf16), each wgmma step's operands read
    by :func:`_isa_read`, accumulators stored by :func:`lay.d_fragment` into ``P[s * M + m,
    n]``; then, for split > 1, the slices summed in order (:func:`sk.reduce`) and the epilogue
    applied (in the store when split == 1).  Returns (C, P or None)."""
    m, k = a.shape
    n = b.shape[0]
    tk = prec.tile_k
    k_tiles = k // tk // split
    part = np.full((split * m, n), np.nan)
    for s in range(split):
        for by in range(-(-m // 64)):
            for bx in range(n // bn):
                acc = np.zeros((64, bn))
                for ko in range(s * k_tiles, (s + 1) * k_tiles):
                    at = np.zeros((64, tk))
                    rows = a[by * 64:(by + 1) * 64, ko * tk:(ko + 1) * tk]
                    at[:rows.shape[0]] = _a_as_staged(rows, prec.name)
                    sa, sb = _staged_as(at, prec), _staged_as(b[bx * bn:(bx + 1) * bn, ko * tk:(ko + 1) * tk], prec)
                    for kk in range(tk // prec.mma_k):
                        oa = _isa_read(sa, kk * lay.k_step_bytes(64), *lay.descriptor_fields(64), 64, prec)
                        ob = _isa_read(sb, kk * lay.k_step_bytes(bn), *lay.descriptor_fields(bn), bn, prec)
                        acc += oa @ ob.T
                for t in range(128):
                    for i in range(bn // 2):
                        r, c = lay.d_fragment(t, i)
                        if by * 64 + r < m:
                            part[s * m + by * 64 + r, bx * bn + c] = acc[r, c]
    out = part.reshape(split, m, n).sum(axis=0)
    if epilogue is not None:
        out = out + bias
        if epilogue == "bias_gelu":
            out = _gelu(out)
    return out, (part if split > 1 else None)


def _inputs(m, n, k, precision, seed=0):
    """(A, B, bias) in the precision's global dtypes, as float32 numpy arrays holding exactly
    the values the kernel receives: bf16 operands rounded to bf16, tf32 ones to tf32 (the
    tensor core reads a tf32 operand's float32 bits truncated; rounded inputs make the test
    independent of that); f32a's and tf32r's A left float32 (the kernel's narrowing or rounding
    is under test), tf32r's B rounded (its contract: a weight rounded when packed)."""
    return tuple(np.asarray(x, np.float32) for x in variant_inputs(m, n, k, precision, seed)[0])


@pytest.mark.parametrize("precision,split,epilogue,k_tiles", [
    ("tf32", 1, None, 2), ("f32a", 1, None, 2), ("bf16", 2, None, 2), ("tf32", 3, "bias", 3),
    ("f32a", 1, "bias_gelu", 1), ("f32a", 2, "bias_gelu", 2), ("tf32r", 1, None, 2), ("tf32r", 2, "bias", 2)])
def test_simulated_variant_is_the_gemm(precision, split, epilogue, k_tiles):
    prec = lay.precision(precision)
    m, n, k = 70, 64, k_tiles * prec.tile_k
    a, b, bias = _inputs(m, n, k, precision)
    got, part = _simulate_as(a, b, 64, prec, split, epilogue, bias)
    np.testing.assert_allclose(got, _reference(a, b, epilogue, bias, precision), rtol=1e-9, atol=1e-9)
    if part is not None:  # each slice's partial is that slice's GEMM
        ks = k // split
        for s in range(split):
            want = _reference(a[:, s * ks:(s + 1) * ks], b[:, s * ks:(s + 1) * ks], precision=precision)
            np.testing.assert_allclose(part[s * m:(s + 1) * m], want, rtol=1e-9, atol=1e-9)


def test_tf32_rounding_is_to_nearest_ties_away():
    """The reference's tf32 rounding is cvt.rna's: 10 mantissa bits, ties away from zero."""
    x = np.array([1 + 2 ** -11, -(1 + 2 ** -11), 1 + 2 ** -12, 1 + 3 * 2 ** -11], np.float32)
    np.testing.assert_array_equal(_tf32(x), np.array([1 + 2 ** -10, -(1 + 2 ** -10), 1.0, 1 + 2 ** -9], np.float32))


def test_f32a_narrowing_is_round_to_nearest_even():
    """The reference's bf16 rounding is RNE (ties to even), the kernel's cvt.rn.bf16.f32 too."""
    x = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 1 + 2 ** -8 + 2 ** -20], np.float32)
    np.testing.assert_array_equal(_bf16(x), np.array([1.0, 1 + 2 ** -6, -1.0, 1 + 2 ** -7], np.float32))


def test_choose_split_fills_the_h100():
    vit = {"qkv": (197, 2304, 768), "proj": (197, 768, 768), "fc1": (197, 3072, 768), "fc2": (197, 768, 3072)}
    got = {name: sk.choose_split(*shape) for name, shape in vit.items()}
    assert got == {"qkv": 2, "proj": 6, "fc1": 2, "fc2": 6}
    for name, (m, n, k) in vit.items():
        for bn in (64, 128):
            for precision in lay.PRECISIONS:
                s = sk.choose_split(m, n, k, bn, precision)
                shape = wg.Shape(m, n, k, bn, lay.precision(precision).tile_k, s)
                shape.check()
                assert shape.ctas >= sk.H100_SMS, (name, bn, precision, s)
    assert sk.choose_split(197, 768, 128) == 1, "two K tiles: no slice of two tiles can be cut"
    assert sk.choose_split(4096, 4096, 768) == 1


@pytest.mark.parametrize("kwargs", [dict(precision="fp8"), dict(split=5), dict(split=2, epilogue="bias"),
                                    dict(epilogue="relu"), dict(split=0)])
def test_unsupported_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        wg.wgmma_gemm(197, 768, 768, 128, stages=3, **kwargs)


NEW_VARIANTS = [  # (precision, bn, stages, split, epilogue): built, compiled, checked on the GPU
    ("tf32", 128, 1, 1, None), ("tf32", 128, 3, 1, None), ("tf32", 64, 2, 1, None),
    ("f32a", 128, 1, 1, None), ("f32a", 128, 3, 1, None), ("f32a", 64, 4, 1, "bias_gelu"),
    ("bf16", 128, 3, 6, None), ("f32a", 128, 3, 6, "bias_gelu"), ("tf32", 64, 3, 3, "bias"),
    ("bf16", 128, 1, 1, "bias"), ("tf32r", 128, 3, 1, None), ("tf32r", 128, 1, 1, None), ("tf32r", 128, 3, 6, "bias"),
]


@functools.lru_cache(maxsize=None)  # the build test and the nvcc test read each variant's source: one TVM build
def _variant_source(precision, bn, stages, split, epilogue, shape=(197, 768, 768)) -> str:
    try:
        return wg.cuda_source(sk.build(*shape, bn, stages=stages, precision=precision, split=split, epilogue=epilogue))
    except tvm.error.TVMError as e:
        if "cuda" in str(e).lower() and "not enabled" in str(e).lower():
            pytest.skip(f"TVM has no CUDA codegen here: {e}")
        raise


@pytest.mark.parametrize("precision,bn,stages,split,epilogue", NEW_VARIANTS)
def test_variant_builds_for_sm90a(precision, bn, stages, split, epilogue):
    prec = lay.precision(precision)
    src = _variant_source(precision, bn, stages, split, epilogue)
    assert prec.instruction(bn) in src
    gemm = src[src.index('extern "C" __global__ void __launch_bounds__(128) wgmma_gemm_kernel('):]
    gemm = gemm[gemm.index("{"):]
    assert gemm.count("_mma_async_sync_aligned_m64n") == prec.tile_k // prec.mma_k, "four wgmmas per K tile"
    assert ("blockIdx.z" in gemm) == (split > 1)
    assert (sk.REDUCE_SYMBOL in src) == (split > 1)
    if stages > 1:  # B always by cp.async, A unless narrowed through registers; unrolled chunks,
        a_chunks, b_chunks = 64 // 16, bn // 16  # loads: the prologue's, the loop's (if it refills)
        tiles = 768 // prec.tile_k // split
        loads = min(stages - 1, tiles) + (tiles > stages - 1)
        want = loads * (b_chunks + (0 if prec.a_converted else a_chunks))
        assert gemm.count("tvm_builtin_ptx_cp_async_cg_src_size") == want
    if prec.a_converted:
        assert ("(nv_bfloat16)(" if precision == "f32a" else "hetpart_tf32_rna(") in gemm and "float4" in gemm
    assert "erff(" not in src  # GELU's erf is TVM's fast_erf, as in the kernels replaced
    assert ("gelu_d" in src) == (epilogue == "bias_gelu")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("precision,bn,stages,split,epilogue", NEW_VARIANTS)
def test_variant_nvcc_compiles_for_sm90a_without_spilling(precision, bn, stages, split, epilogue, tmp_path):
    (tmp_path / "k.cu").write_text(_variant_source(precision, bn, stages, split, epilogue))
    report, ptx = cubin_and_ptx(tmp_path / "k.cu", "90a")  # the PTX nvcc made on the way to this cubin
    spills = re.findall(r"(\d+) bytes spill stores", report)
    assert spills and set(spills) == {"0"}, report
    assert len(spills) == (2 if split > 1 else 1), "the GEMM (and the reduction)"
    assert "serialized" not in report, "ptxas serialized the wgmmas"
    if precision == "f32a":  # the narrowing is cvt.rn (round to nearest even)
        assert "cvt.rn.bf16.f32" in ptx and "cvt.rz.bf16" not in ptx
    if precision == "tf32r":  # A rounded to nearest, ties away
        assert "cvt.rna.tf32.f32" in ptx


def _run_variant(shape, precision, bn, stages, split, epilogue):
    m, n, k = shape
    a, b, bias = _inputs(m, n, k, precision)
    prec = lay.precision(precision)
    dev = tvm.cuda(0)
    ex = sk.build(m, n, k, bn, stages=stages, precision=precision, split=split, epilogue=epilogue)

    def on_gpu(x, dtype):
        from hetpart.importer.low_precision import to_low

        return tvm.runtime.tensor(to_low(x, dtype) if dtype == "bfloat16" else np.asarray(x, np.float32), dev)

    ta, tb, tbias = on_gpu(a, prec.a_global), on_gpu(b, prec.b_global), on_gpu(bias, "float32")
    extra = [tbias] if epilogue is not None else []
    got, part = run_on_gpu(ex, dev, ta, tb, extra, m, n, split)
    return a, b, bias, got, part


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("precision,bn,stages,split,epilogue", NEW_VARIANTS)
@pytest.mark.parametrize("shape", [(64, 128, 768), (197, 768, 768), (197, 128, 3072)])
def test_variant_matches_numpy_on_gpu(shape, precision, bn, stages, split, epilogue):
    a, b, bias, got, part = _run_variant(shape, precision, bn, stages, split, epilogue)
    want = _reference(a, b, epilogue, bias, precision)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= ISA_TOL, f"{shape} {precision} bn={bn} stages={stages} split={split} {epilogue}: {err:.2e}"
    if part is not None:
        m, k = a.shape
        ks = k // split
        for s in range(split):
            ref = _reference(a[:, s * ks:(s + 1) * ks], b[:, s * ks:(s + 1) * ks], precision=precision)
            e = float(np.abs(part[s * m:(s + 1) * m] - ref).max() / np.abs(ref).max())
            assert e <= ISA_TOL, f"partial {s}: {e:.2e}"


# --- the GELU epilogue against the fused kernels' (numpy float32 simulation) ----------------------
def _eval_f32(e, env: dict):
    """The float32 value (numpy arrays, one element per probe) of the TIR expression ``e``,
    operation by operation in IEEE single precision; loads read ``env`` by buffer, variables
    by Var (every load is element-wise here: indices are ignored)."""
    from tvm import tirx

    ev = lambda x: _eval_f32(x, env)  # noqa: E731
    if isinstance(e, tirx.FloatImm):
        return np.float32(e.value)
    if isinstance(e, tirx.IntImm):
        return np.int64(e.value)
    if isinstance(e, tirx.Var):
        return next(v for k, v in env.items() if k.same_as(e))
    source = getattr(e, "source", None) if isinstance(e, tvm.ir.TensorLoad) else None
    if source is not None:
        return next(v for k, v in env.items() if k.same_as(source))
    if isinstance(e, tirx.Let):
        return _eval_f32(e.body, {**env, e.var: ev(e.value)})
    if isinstance(e, tirx.Cast):
        return ev(e.value).astype(str(e.dtype) if hasattr(e, "dtype") else str(e.ty))
    binary = {tirx.Add: np.add, tirx.Sub: np.subtract, tirx.Mul: np.multiply, tirx.Div: np.divide,
              tirx.Min: np.minimum, tirx.Max: np.maximum, tirx.LT: np.less, tirx.GT: np.greater}
    for cls, fn in binary.items():
        if isinstance(e, cls):
            a, b = ev(e.a), ev(e.b)
            with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 at -inf: NaN in both
                out = fn(a, b)
            assert out.dtype in (np.bool_, np.result_type(a, b)), "float32 stays float32"
            return out
    if isinstance(e, tirx.Select):
        return np.where(ev(e.condition), ev(e.true_value), ev(e.false_value))
    if isinstance(e, tvm.ir.Call) and str(e.op.name).endswith("isnan"):
        return np.isnan(ev(e.args[0]))
    raise NotImplementedError(type(e).__name__)


def _fused_epilogue(acc: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The importer's fused dense + bias + erf-GELU kernel (the export's Div/Erf/Add/Mul/Mul,
    ``Erf`` -> ``fast_erf``), its element-wise blocks after the matmul run on ``acc``."""
    import sys
    from pathlib import Path

    from tvm import s_tir, tirx

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_cases import projection

    from hetpart import importer

    mod = importer.load(projection(64, 64, 128, True)).module
    [func] = [f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and "fast_erf" in gv.name_hint]
    sch = s_tir.Schedule(func)
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    assert blocks[0].name_hint == "matmul"
    env = {blocks[0].body.buffer: acc, func.params[2]: bias}  # param 2: the bias
    for b in blocks[1:]:
        env[b.body.buffer] = _eval_f32(b.body.value, env)
    return env[blocks[-1].body.buffer]


def test_gelu_epilogue_is_bit_for_bit_the_fused_kernels():
    """``epilogue_value(.., "bias_gelu")`` computes, in float32, exactly what the fused kernel it
    replaces computes from the same accumulator and bias (hetpart's ``fast_erf``, the export's
    operation order): equal bits at 20000 probes (normal, wide, around fast_erf's clamp at
    |d| = 4, zeros, infinities, NaN), and within 1e-6 of the exact erf-GELU."""
    from tvm import tirx

    rng = np.random.default_rng(0)
    n = 20000
    acc = np.concatenate([rng.standard_normal(n // 2) * 3, rng.standard_normal(n // 4) * 300,
                          np.linspace(-6.0, 6.0, n // 4 - 8) * np.sqrt(2),
                          [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 4 * np.sqrt(2)]]).astype(np.float32)
    bias = (rng.standard_normal(acc.size) * 0.1).astype(np.float32)
    bias[-8:] = 0.0
    x, col = tirx.Var("acc", "float32"), tirx.Var("col", "int32")
    bias_buf = tirx.decl_buffer((acc.size,), "float32", name="bias")
    got = _eval_f32(wg.epilogue_value(x, bias_buf, col, "bias_gelu"), {x: acc, bias_buf: bias})
    want = _fused_epilogue(acc, bias)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = ~np.isnan(want)
    np.testing.assert_array_equal(got[fin].view(np.uint32), want[fin].view(np.uint32))
    y = acc.astype(np.float64) + bias
    ok = np.isfinite(y) & (np.abs(y) < 1e6)
    np.testing.assert_allclose(got[ok], _gelu(y[ok]), rtol=1e-6, atol=1e-6)
