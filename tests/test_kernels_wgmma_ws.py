"""The warp-specialised wgmma GEMM spike (``producer="warp"``, :mod:`hetpart.kernels.wgmma_ws`).

Without a GPU: the variant builds for sm_90a at ViT-B/16's batch-32 shapes (M = 6304), its CUDA
C has the TMA loads, the mbarrier protocol, ``setmaxnreg`` and the wgmmas, the CUtensorMaps are
kernel parameters, nvcc compiles it without spills; unsupported options are refused; the default
builds the same CUDA C as before (the existing variants unchanged).
With a GPU (``cuda`` mark): against float64 numpy like the swizzle tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm

from hetpart.kernels import wgmma_gemm as wg
from hetpart.kernels import wgmma_layout as lay
from hetpart.kernels import wgmma_splitk as sk
from hetpart.kernels import wgmma_ws as ws
from hetpart.targets import cuda_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_wgmma_probe import variant_inputs  # noqa: E402

ISA_TOL = 1e-4
M_B32 = 6304
VIT_NK = [(2304, 768), (768, 768), (3072, 768), (768, 3072)]
WS = dict(swizzle="128b", consumers=2, producer="warp")


def _source(m, n, k, bn=128, stages=4, precision="bf16", **options) -> str:
    return wg.cuda_source(wg.build(m, n, k, bn, stages=stages, precision=precision, **WS, **options))


@pytest.fixture(scope="module")
def vit_sources():
    return {(n, k): _source(M_B32, n, k) for n, k in VIT_NK}


@pytest.mark.parametrize("n,k", VIT_NK)
def test_builds_at_vit_b32_with_tma_mbarriers_and_wgmma(vit_sources, n, k):
    src = vit_sources[(n, k)]
    plan = lay.PipelinePlan(lay.BF16, 128, 4, "128b", 2)
    assert "__launch_bounds__(384)" in src
    assert src.count("const __grid_constant__ CUtensorMap tma_") == 4  # declaration + definition, A and B
    for op in ("mbarrier.init.shared::cta.b64", "mbarrier.arrive.expect_tx.shared::cta.b64",
               "mbarrier.try_wait.parity", "mbarrier.arrive.shared::cta.b64", "fence.mbarrier_init",
               "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes",
               f"setmaxnreg.dec.sync.aligned.u32 {ws.PRODUCER_REGS}",
               f"setmaxnreg.inc.sync.aligned.u32 {ws.CONSUMER_REGS}",
               "wgmma.mma_async", "wgmma.wait_group.sync.aligned"):
        assert op in src, op
    assert "cp.async.cg" not in src  # no thread-issued copies left
    kernel = src[src.index("main_kernel(float* __restrict__ C_ptr, const"):]
    kernel = kernel[kernel.index("{"):]
    assert f"(uint){ws.stage_bytes(plan)}" in kernel  # expect_tx: one stage's A and B boxes
    assert "__syncthreads" in kernel and kernel.count("__syncthreads") == 1  # only after the barrier init
    # two TMA loads per K tile, from the producer loop over every K tile
    assert kernel.count("bulk_tensor_2d") == 2
    assert re.search(rf"for \(int ko = 0; ko < {k // 64}; \+\+ko\)", kernel)


def test_stage_numbers():
    plan = lay.PipelinePlan(lay.BF16, 256, 4, "128b", 2)
    assert ws.boxes(plan) == ((64, 128), (64, 256))
    assert ws.stage_bytes(plan) == (128 + 256) * 128
    assert ws.threads(plan) == 384
    assert 128 * ws.PRODUCER_REGS + 256 * ws.CONSUMER_REGS <= 65536
    tf = lay.PipelinePlan(lay.precision("tf32"), 128, 3, "128b", 2)
    assert ws.boxes(tf) == ((32, 128), (32, 128))  # 128 bytes of K either way


@pytest.mark.parametrize("kwargs", [dict(swizzle="none"), dict(consumers=1), dict(stages=1),
                                    dict(precision="f32a"), dict(precision="tf32r"), dict(producer="warps")])
def test_unsupported_options_are_refused(kwargs):
    options = dict(stages=4, swizzle="128b", consumers=2, producer="warp", precision="bf16")
    options.update(kwargs)
    with pytest.raises(ValueError):
        wg.wgmma_gemm(M_B32, 768, 768, 128, **options)


def test_default_producer_builds_the_code_of_before():
    """``producer="threads"`` passed explicitly is the default's CUDA C (the spike changes no other kernel;
    the hash comparison of a spread of variants before/after is in the branch's report)."""
    base = dict(stages=4, swizzle="128b", consumers=2)
    a = wg.cuda_source(wg.build(197, 768, 768, 128, **base))
    b = wg.cuda_source(wg.build(197, 768, 768, 128, producer="threads", **base))
    assert a == b and "mbarrier" not in a and "cp.async.cg" in a


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("precision,bn,stages,n,k", [("bf16", 128, 4, 2304, 768), ("bf16", 256, 4, 768, 3072),
                                                     ("bf16", 128, 6, 3072, 768), ("tf32", 128, 3, 768, 768)])
def test_nvcc_compiles_without_spilling(precision, bn, stages, n, k, tmp_path):
    from hetpart.kernels import cuda_compile

    cu = tmp_path / "k.cu"
    cu.write_text(_source(M_B32, n, k, bn, stages, precision))
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(cu), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr
    assert "serialized" not in done.stderr, "ptxas serialized the wgmmas"
    # setmaxnreg needs the launch to hold 65536 / 384 registers per thread (wgmma_ws.CONSUMER_REGS)
    assert re.search(r"Used 168 registers", done.stderr), done.stderr


# --- on the GPU --------------------------------------------------------------------------------------
GPU_CASES = [("bf16", 128, 4, None), ("bf16", 256, 3, None), ("bf16", 128, 6, "bias_gelu"), ("tf32", 128, 3, None)]


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("shape", [(64, 256, 768), (197, 768, 768), (6304, 768, 3072)])
def test_matches_numpy_on_gpu(shape, case):
    from gpu_wgmma_probe import _with_epilogue

    precision, bn, stages, epilogue = case
    m, n, k = shape
    if n % bn:
        pytest.skip("N % bn")
    (a, b, bias), (a64, b64) = variant_inputs(m, n, k, precision)
    dev = tvm.cuda(0)
    ex = sk.build(m, n, k, bn, stages=stages, precision=precision, epilogue=epilogue, **WS)
    ta, tb, tbias = (tvm.runtime.tensor(x, dev) for x in (a, b, bias))
    c = tvm.runtime.tensor(np.full((m, n), np.nan, np.float32), dev)
    ex[sk.GEMM_SYMBOL](ta, tb, *([tbias] if epilogue else []), c)
    got = c.numpy()
    want = _with_epilogue(a64 @ b64.T, bias, epilogue)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= ISA_TOL, f"{shape} {case}: max rel err {err:.2e}"
