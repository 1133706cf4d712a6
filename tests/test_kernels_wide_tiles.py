"""CPU tiles for ResNet-50's convolutions on 16-register (AVX2) targets (issue 18):

* a one-loop reduction (1x1 conv, matmul) of 512+ steps whose default row count leaves
  a ragged tile takes an exact divisor up to 14 accumulators
  (``register_tile._exact_wide_rows``: 7 rows on 7- and 14-wide images, where 6 rows of
  2 vectors was the limit);
* a 1x1 conv whose image rows are an odd number of whole vectors (56 = 7 x 8 lanes)
  tiles the fused plane in two vectors (``cpu_matmul._odd_vector_rows``), whatever K;
* a stride-2 conv with a long reduction whose rows hold two vectors (resnet50's stem
  on 112-wide rows) takes the width tile (``cpu_conv2d._strided_width_tile``).

Against ONNX Runtime (inputs with negatives and zeros; ReLU and residual-add
epilogues; rtol 1e-5, atol 1e-6 of the largest output: ORT sums in another order),
built for an AVX2 target (``haswell``: runs on any x86 host with AVX2) and for the
host; then the decisions, from the scheduled TIR, on AVX2 and AVX-512 targets
(AVX-512's 32 registers: up to 14 rows, ``register_tile._rows_for_32_registers``,
tested in test_kernels_rows_32_registers).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm_ffi

from cpu_tile_cases import build_and_run, conv, host_has_avx2, mcpu_target, random_feeds, scheduled, tile_rows, tile_shape
from onnx_cases import assert_matches, onnxruntime_outputs

from hetpart.kernels.rules import cpu_conv2d, cpu_matmul
from hetpart.targets import cpu_tvm_target


CASES = {
    "1x1 512->32 on 7x7 + relu": lambda: conv(512, 32, 7),
    "1x1 512->16 on 7x7 + add, batch 2": lambda: conv(512, 16, 7, epilogue="add", batch=2),
    "1x1 512->32 on 14x14 + add": lambda: conv(512, 32, 14, epilogue="add"),
    "1x1 512->32 s2 14x14 -> 7x7": lambda: conv(512, 32, 14, stride=2, epilogue="none"),
    "1x1 128->32 on 56x56 + relu (K = 128)": lambda: conv(128, 32, 56),
    "1x1 16->48 on 56x56 + add": lambda: conv(16, 48, 56, epilogue="add"),
    "1x1 64->40 on 8x8 + relu": lambda: conv(64, 40, 8),
    "stem 3->16 7x7 s2 on 64x64 + relu": lambda: conv(3, 16, 64, k=7, stride=2, pad=3),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mcpu", ["haswell", "host"])
def test_wide_tiles_match_onnxruntime(case, mcpu):
    if mcpu == "haswell" and not host_has_avx2():
        pytest.skip("an AVX2 build needs an AVX2 host to run")
    m = CASES[case]()
    feeds = random_feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    if "relu" in case:
        assert (want == 0).any() and (want > 0).any(), "the clamp is exercised"
    got = build_and_run(m, feeds, cpu_tvm_target() if mcpu == "host" else mcpu_target(mcpu))
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=f"{case} ({mcpu})")


@pytest.mark.parametrize("shape,avx2,avx512", [
    ((512, 32, 7), 7, 7),  # 7 = 4 + 3 ragged rows before on AVX2
    ((512, 32, 14), 7, 14),  # 14 = 5 + 5 + 4; AVX-512: 14 rows (register_tile._rows_for_32_registers)
    ((512, 32, 28), 4, 14),  # 28 = 7 x 4 already exact on AVX2: unchanged
    ((320, 32, 7), 4, 7),  # K < WIDE_ROWS_MIN_REDUCTION: the ragged rows stay (wide measured slower)
])
def test_one_loop_reduction_takes_exact_wide_rows(shape, avx2, avx512, monkeypatch):
    # The weight tile's rows: the 14x14 / 28x28 planes' own tiles at batch 1 off
    # (cpu_matmul.RAGGED_PLANE_MIN_BATCH, PLANE_LONG_SUMS_AT_BATCH_1; test_kernels_plane_batch1.py).
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_MIN_BATCH", 2)
    monkeypatch.setattr(cpu_matmul, "PLANE_LONG_SUMS_AT_BATCH_1", False)
    # The 7x7 plane's channels-inner tile off (cpu_matmul.CHANNELS_INNER_ROWS; test_kernels_r50_late.py).
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    ic, oc, hw = shape
    m = conv(ic, oc, hw)
    assert tile_rows(scheduled(m, "haswell")) == avx2
    assert tile_rows(scheduled(m, "skylake-avx512")) == avx512


def test_strided_1x1_takes_exact_wide_rows_windowed_conv_does_not(monkeypatch):
    """A stride-2 1x1 conv (the conv2d rule, a one-loop reduction) takes 7 rows on a
    7-wide output; a 3x3 window keeps 4 (14 accumulators spilled there) on the image's rows
    (its fused plane off: cpu_conv2d.FUSED_WINDOW_PLANE, test_kernels_r50_3x3.py)."""
    monkeypatch.setattr(cpu_conv2d, "FUSED_WINDOW_PLANE", False)
    assert tile_rows(scheduled(conv(512, 32, 14, stride=2, epilogue="none"), "haswell")) == 7
    assert tile_rows(scheduled(conv(64, 32, 7, k=3, pad=1), "haswell")) == 4


def test_odd_vector_rows_tile_the_plane_whatever_the_reduction():
    """On AVX2, 56-wide rows are 7 vectors: 256 -> 64 (K = 256) is tiled on the fused
    plane (its ``reindex`` copy), two 8-lane vectors a tile (before: one vector of a
    row x 8 channels); on AVX-512 (56 = 3.5 vectors) the weight tile stays for K = 256,
    as measured there."""
    m = conv(256, 64, 56)
    avx2 = scheduled(m, "haswell")
    assert "reindex" in avx2.script() and tile_shape(avx2)[1:] == (2, 8), avx2.script()
    assert "layout_rewrite_preproc" in scheduled(m, "skylake-avx512").script()


def test_stem_takes_the_width_tile_where_rows_hold_two_vectors():
    """resnet50's stem (7x7 stride 2, 147 reduction steps) on 112-wide rows: on AVX2 (14
    vectors, two a tile) output channels x row vectors, the weight broadcast (not
    packed) and the padded image de-interleaved; on AVX-512 (7 vectors: one a tile)
    the output-channel tile, weight packed, as before."""
    m = conv(3, 64, 224, k=7, stride=2, pad=3)
    assert "layout_rewrite_preproc" not in scheduled(m, "haswell").script()
    assert "layout_rewrite_preproc" in scheduled(m, "skylake-avx512").script()
