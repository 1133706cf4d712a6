"""Tests of the tensor-core rule's tile choice by padding (``gpu_tensor_core.TILE_BY_PADDING``,
issue 17's batch-32 analysis: bench/results/gpu-b32-static.md).

Without a GPU: :func:`plain_tile` picks 64 x 64 for attention's ``P V`` at batch 32 (ViT-B/16:
384 x 197 x 64; the Whisper encoder's 192 x 1500 x 64) and for 1x1 convolutions into 16-64
channels, keeps 128 x 128 where it pads as little (``Q K^T``, the projections), keeps the first
filling tile at batch 1, and gives None where no grid fills; the rule, scheduled for sm_90,
launches the chosen grid (``P V``: 1536 blocks of 128 threads, not 768 of 256) with the switch
on, the grid of before with it off, and keeps 1x1 convolutions at 128 x 128 with
``TILE_BY_PADDING_CONVOLUTIONS`` off; the CUDA C builds, and ptxas compiles ``P V``'s without
spills.  With a GPU (``cuda`` mark): ``P V`` at ViT's and Whisper's shapes and a 1x1 convolution
into 16 channels at batch 32, switch on, match ONNX Runtime (CPU) within TF32's precision.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from tvm import tirx

from onnx_cases import cuda_source, model

from hetpart import kernels, load
from hetpart.kernels.rules import gpu_tensor_core as tc
from hetpart.targets import cuda_available, cuda_tvm_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_static_kernels import launch_shape  # noqa: E402

SM90 = cuda_tvm_target("sm_90")
SMS = 132
TF32_RTOL = 5e-3
"""Error bound relative to the output's magnitude (as tests/test_kernels_tensor_core.py)."""

BIG, SMALL = tc.MATMUL_TILES[0], tc.MATMUL_TILES[2]  # 128 x 128 (8 warps), 64 x 64 (4 warps)


@pytest.fixture
def padding_on(monkeypatch):
    monkeypatch.setattr(tc, "TILE_BY_PADDING", True)


# --- the choice ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,want", [
    ((384, 197, 64), SMALL),  # ViT-B/16 b32 P V: 128 x 128 pads N 64 -> 128, M 197 -> 256
    ((192, 1500, 64), SMALL),  # the Whisper encoder's b32 P V
    ((384, 128, 64), SMALL),  # BERT-base b32 P V
    ((1, 401408, 16), SMALL),  # EfficientNet-B0 b32's 1x1 into 16 channels at 112x112
    ((1, 100352, 64), SMALL),  # ResNet-50 b32's 1x1 into 64 channels at 56x56
    ((1, 6272, 184), SMALL),  # MobileNet-v3 b32's 1x1 into 184 channels (64 x 128 pads to 256)
    ((384, 197, 197), BIG),  # ViT's Q K^T: every tile pads 197 -> 256 (the 32-row one: 224, at half the rate)
    ((1, 6304, 768), BIG),  # ViT's projections
    ((1, 6304, 3072), BIG),
    ((192, 1500, 1500), BIG),  # Whisper's Q K^T
])
def test_tile_of_least_padding_per_rate(shape, want):
    assert tc.plain_tile(*shape, SMS) == want


def test_batch_1_keeps_the_first_filling_tile():
    """ViT-B/16 b1 ``Q K^T`` (12 heads): 128 x 128 and 64 x 128 leave SMs idle; 64 x 64 is the
    first that fills and pads no more than the 32-row tile per rate."""
    first = next(t for t in tc.MATMUL_TILES if t.blocks(12, 197, 197) >= SMS)
    assert tc.plain_tile(12, 197, 197, SMS) == first == SMALL


def test_no_tile_fills():
    assert tc.plain_tile(1, 32, 64, SMS) is None


def test_padded_area():
    assert tc.padded_area(BIG, 197, 64) == 256 * 128
    assert tc.padded_area(SMALL, 197, 64) == 256 * 64
    assert tc.padded_area(tc.MATMUL_TILES[3], 197, 64) == 224 * 64


def test_rates_name_every_tile():
    assert len(tc.MATMUL_TILE_RATES) == len(tc.MATMUL_TILES)


# --- the schedule --------------------------------------------------------------------------------
def _pv(batch=32, heads=12, tokens=197, width=64):
    """ONNX ``P V``: [batch, heads, tokens, tokens] x [batch, heads, tokens, width]."""
    p, v = (batch, heads, tokens, tokens), (batch, heads, tokens, width)
    return model([helper.make_node("MatMul", ["p", "v"], ["y"])],
                 [("p", p, np.float32), ("v", v, np.float32)], [("y", (batch, heads, tokens, width), np.float32)])


def _conv1x1(cin=32, cout=16, size=112, n=32):
    """ONNX ``Conv`` 1x1 + bias at batch ``n`` (EfficientNet-B0's projection into 16 channels)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((cout, cin, 1, 1)) * 0.1).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return model([helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1])],
                 [("x", (n, cin, size, size), np.float32)], [("y", (n, cout, size, size), np.float32)],
                 {"w": w, "b": b})


def _scheduled(m, name: str) -> tirx.PrimFunc:
    (func,) = [f for gv, f in load(m).module.functions_items() if isinstance(f, tirx.PrimFunc) and name in gv.name_hint]
    return kernels.schedule_primfunc(func, SM90)


def _launch(func: tirx.PrimFunc) -> tuple[int, int]:
    """(grid, block) of the function's kernel, as tools/gpu_static_kernels.py reads them."""
    shape = launch_shape(func)
    return shape.grid, shape.block


def test_pv_off_is_128x128():
    func = _scheduled(_pv(), "matmul")
    assert str(func.attrs["hetpart.rule"]) == "GpuTensorCoreGemm"
    assert _launch(func) == (384 * 2 * 1, BIG.warps * 32)


def test_pv_on_is_64x64(padding_on):
    func = _scheduled(_pv(), "matmul")
    assert str(func.attrs["hetpart.rule"]) == "GpuTensorCoreGemm"
    assert _launch(func) == (384 * 4 * 1, SMALL.warps * 32)


def test_switch_off_schedule_unchanged(monkeypatch):
    """Off, the script is the one of before (the first filling tile): the same text as with the
    switch on and the padding choice forced to give that tile."""
    off = _scheduled(_pv(), "matmul").script()
    monkeypatch.setattr(tc, "TILE_BY_PADDING", True)
    monkeypatch.setattr(tc, "plain_tile", lambda batch, m, n, sms: BIG)
    assert _scheduled(_pv(), "matmul").script() == off


def test_conv1x1_on_is_64x64(padding_on):
    func = _scheduled(_conv1x1(), "conv")
    assert str(func.attrs["hetpart.rule"]) == "GpuTensorCoreGemm"
    assert _launch(func) == (32 * 12544 // 64, SMALL.warps * 32)


def test_conv1x1_keeps_its_tile_with_convolutions_off(padding_on, monkeypatch):
    monkeypatch.setattr(tc, "TILE_BY_PADDING_CONVOLUTIONS", False)
    func = _scheduled(_conv1x1(), "conv")
    assert _launch(func) == (32 * 12544 // 128, BIG.warps * 32)


def test_pv_on_builds_for_sm90(padding_on):
    source = cuda_source(kernels.build(load(_pv()).module, SM90, cuda_graph=False))
    assert "mma.sync" in source and "__launch_bounds__(128)" in source


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_pv_on_compiles_without_spilling(padding_on, tmp_path):
    """The 64 x 64 ``P V`` kernel (ViT b32) under ptxas for sm_90: no spills, fewer registers than
    the 128 x 128 one (122 there: 2 blocks of 8 warps per SM)."""
    from hetpart.kernels import cuda_compile

    (tmp_path / "k.cu").write_text(cuda_source(kernels.build(load(_pv()).module, SM90, cuda_graph=False)))
    cmd = cuda_compile.nvcc_command("90", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr
    regs = int(re.search(r"Used (\d+) registers", done.stderr).group(1))
    assert regs <= 96, f"{regs} registers"


# --- on the GPU ----------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("shape", [(32, 12, 197, 64), (1, 12, 1500, 64)], ids=["vit-b32", "whisper-heads"])
def test_pv_matches_onnxruntime_on_gpu(shape, padding_on):
    from onnx_cases import relative_error_on_cuda

    batch, heads, tokens, width = shape
    m = _pv(batch, heads, tokens, width)
    assert _launch(kernels.schedule_primfunc(
        next(f for gv, f in load(m).module.functions_items() if isinstance(f, tirx.PrimFunc)),
        cuda_tvm_target()))[1] == SMALL.warps * 32
    rng = np.random.default_rng(1)
    p = rng.standard_normal((batch, heads, tokens, tokens)).astype(np.float32)
    v = rng.standard_normal((batch, heads, tokens, width)).astype(np.float32)
    p.flat[::7] = 0.0  # negatives and zeros
    err = relative_error_on_cuda(m, {"p": p, "v": v})
    assert err < TF32_RTOL, f"max error {err:.2e} of the output's magnitude"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_conv1x1_matches_onnxruntime_on_gpu(padding_on):
    from onnx_cases import relative_error_on_cuda

    x = np.random.default_rng(2).standard_normal((32, 32, 112, 112)).astype(np.float32)
    x.flat[::7] = 0.0
    err = relative_error_on_cuda(_conv1x1(), {"x": x})
    assert err < TF32_RTOL, f"max error {err:.2e} of the output's magnitude"
