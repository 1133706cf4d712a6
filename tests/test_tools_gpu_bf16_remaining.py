"""tools/gpu_bf16_remaining.py: a model's kernels counted from a one- and a two-layer build, grouped,
priced by the stated roofline -- no GPU (the sm_90 build is cross-compiled)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import gpu_bf16_remaining as rem  # noqa: E402


def test_roofline_is_the_largest_of_bytes_flops_and_launch_floor():
    assert rem.roofline(3e6, 0, rem.CUDA_CORES, 1) == pytest.approx(2e-6)  # 1 us of bytes: the 2 us floor
    assert rem.roofline(3e9, 0, rem.CUDA_CORES, 1) == pytest.approx(1e-3)  # 3 GB at 3 TB/s
    assert rem.roofline(0, 95e9, "wgmma bf16", 1) == pytest.approx(1e-3)
    assert rem.roofline(0, 50e9, "wgmma f32a", 1) == pytest.approx(1e-3)
    assert rem.roofline(0, 40e9, "mma.sync tf32", 1) == pytest.approx(1e-3)
    assert rem.roofline(0, 0, "wgmma bf16", 2) == pytest.approx(4e-6)  # split-K's two launches


def test_a_small_pre_ln_encoder_counts_its_layers_kernels_per_layer():
    """Three pre-LN layers at 16 tokens (one tile: no wgmma): per layer 6 dense GEMMs, 2 attention products,
    2 LayerNorms, one softmax; the final LayerNorm once; every kernel of a layer scaled by 3."""
    case = rem.Case("tiny", 3, 16, 64, 2, 256, True)
    kernels = rem.per_model(case, 1)
    calls = {g: t["calls"] for g, t in rem.totals(kernels, lambda k: k.group).items()}
    assert calls["dense GEMM"] == 18 and calls["attention bmm"] == 6 and calls["softmax"] == 3
    assert calls["norm"] == 7
    assert not any(k.instruction.startswith("wgmma") for k in kernels)
    assert {k.instruction for k in kernels if k.group == "dense GEMM"} <= {"mma.sync tf32", "mma.sync bf16",
                                                                          rem.CUDA_CORES}
    text = rem.table("tiny batch 1", kernels)
    assert "| dense GEMM |" in text and "| **total** |" in text


def test_levers_price_what_they_remove():
    """Removing the per-layer transposes saves exactly their roofline; with no wgmma kernel the GEMM levers save
    nothing; fused attention never costs more than it replaces."""
    case = rem.Case("tiny", 3, 16, 64, 2, 256, True)
    kernels = rem.per_model(case, 1)
    saved = rem.levers(case, 1, kernels)
    transposes = sum(k.count * k.seconds for k in kernels if k.group == "elementwise" and k.per_layer)
    assert saved["fold head transposes"] == pytest.approx(transposes) and transposes > 0
    assert saved["wgmma GEMM 2x"] == 0 and saved["f32a -> bf16 A"] == 0
    assert saved["fused attention"] >= 0
    text = rem.lever_table({"tiny b1": (sum(k.count * k.seconds for k in kernels), saved)})
    assert text.count("\n") == len(rem.LEVERS) + 2
