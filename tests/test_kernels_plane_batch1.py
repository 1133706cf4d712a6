"""1x1 convs of one image tiled along the image plane (issue 18, densenet121 / resnet50 all-CPU
at batch 1; hetpart/kernels/rules/cpu_matmul.py):

* a 14x14 plane (196 pixels, no whole vectors) over 256+ input channels is fused and padded to
  whole vectors at batch 1 too (``RAGGED_PLANE_MIN_BATCH``; before: from batch 2, batch 1 kept the
  weight tile, whose 7 x 2 accumulators spilled without an epilogue -- densenet121's transitions),
  where the weight tile would re-read the image for 8+ channel panels or gather a residual, within
  1/6 padding (``RAGGED_PLANE_B1_MIN_PANELS``);
* with 8 lanes (AVX2), a 28x28 plane (49 two-vector tiles) over a long sum takes the plane tile
  too (``PLANE_LONG_SUMS_AT_BATCH_1``; before: the weight tile past ``PLANE_MAX_REDUCTION``).

Against ONNX Runtime (inputs with negatives and zeros; no epilogue, ReLU, a residual Add; rtol
1e-5, atol 1e-6 of the largest output: ORT sums in another order), then the schedule: the padded
plane / the broadcast weight where the rules apply, the weight tile with the switches off.
"""

from __future__ import annotations

import pytest

from cpu_tile_cases import conv, matches_onnxruntime, scheduled, tile_shape

from hetpart.kernels.rules import cpu_matmul

CASES = {
    "1x1 256->128 on 14x14, no epilogue": lambda: conv(256, 128, 14, epilogue="none"),
    "1x1 288->128 on 14x14 + relu": lambda: conv(288, 128, 14),
    "1x1 256->48 on 14x14 + add": lambda: conv(256, 48, 14, epilogue="add"),
    "1x1 512->32 on 7x7 + add": lambda: conv(512, 32, 7, epilogue="add"),
    "1x1 96->32 on 28x28, no epilogue": lambda: conv(96, 32, 28, epilogue="none"),
    "1x1 128->48 on 28x28 + relu": lambda: conv(128, 48, 28),
    "1x1 96->32 on 28x28 + add": lambda: conv(96, 32, 28, epilogue="add"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batch_1_planes_match_onnxruntime(case):
    matches_onnxruntime(CASES[case](), case)


def _plane_tiled(func) -> bool:
    """The weight broadcast (not packed into panels) and the tile's vectors along the plane."""
    return "layout_rewrite_preproc" not in func.script()


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
@pytest.mark.parametrize("epilogue", ["none", "relu", "add"])
def test_14x14_plane_padded_at_batch_1(mcpu, epilogue, monkeypatch):
    """196 pixels -> 208 (8 lanes) or 224 (16), the tile two plane vectors; with the switch at
    2, the weight tile as before (the weight packed, no padded copy)."""
    m = conv(256, 256, 14, epilogue=epilogue)
    func = scheduled(m, mcpu)
    lanes = 8 if mcpu == "haswell" else 16
    script = func.script()
    assert "reindex_pad" in script and f"T.int64({-(-196 // (2 * lanes)) * 2 * lanes})" in script, script
    assert _plane_tiled(func) and tile_shape(func)[1:] == (2, lanes)
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_MIN_BATCH", 2)
    before = scheduled(m, mcpu)
    assert "reindex_pad" not in before.script() and not _plane_tiled(before)


def test_batch_1_pads_for_many_panels_or_a_residual_within_a_sixth(monkeypatch):
    """At batch 1: 64 output channels (4 two-vector panels of 8 lanes) keep the weight tile
    unless the epilogue adds a residual; a 7x7 plane (49 -> 64) is not padded even then (at
    batch 2 the residual's wider bound pads it); 128 channels (8 panels) are padded.  (The 7x7
    plane's channels-inner tile, which takes it first since, off: test_kernels_r50_late.py.)"""
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    def padded(m):
        return "reindex_pad" in scheduled(m, "haswell").script()

    assert not padded(conv(384, 64, 14, epilogue="none"))
    assert padded(conv(384, 64, 14, epilogue="add"))
    assert padded(conv(384, 128, 14, epilogue="none"))
    assert not padded(conv(512, 32, 7, epilogue="add"))
    assert padded(conv(512, 32, 7, epilogue="add", batch=2))


@pytest.mark.parametrize("ic,oc", [(96, 32), (512, 128)])
def test_28x28_long_sum_takes_the_plane_with_8_lanes(ic, oc, monkeypatch):
    """Past PLANE_MAX_REDUCTION with whole two-vector channel panels: the plane (784 pixels =
    49 two-vector tiles of 8) on AVX2; the weight tile with the switch off, and with 16 lanes
    (AVX-512: 784 is no whole number of 32-pixel tiles; its weight tile holds 14 accumulators)."""
    m = conv(ic, oc, 28)
    func = scheduled(m, "haswell")
    assert _plane_tiled(func) and tile_shape(func)[1:] == (2, 8), func.script()
    assert not _plane_tiled(scheduled(m, "skylake-avx512"))
    monkeypatch.setattr(cpu_matmul, "PLANE_LONG_SUMS_AT_BATCH_1", False)
    assert not _plane_tiled(scheduled(m, "haswell"))


def test_batches_keep_the_weight_tile_on_28x28():
    """At batch 2 the 28x28 long sum keeps the weight tile (unmeasured there)."""
    assert not _plane_tiled(scheduled(conv(96, 32, 28, batch=2), "haswell"))


def test_short_sums_and_7x7_without_a_residual_unchanged(monkeypatch):
    """A 14x14 plane over fewer than 256 channels or with 4 channel panels, and a 7x7 one (49 ->
    64: too much padding) with no residual, schedule as before the change."""
    ms = [conv(96, 32, 14), conv(512, 32, 7), conv(384, 64, 14)]
    after = [scheduled(m, "haswell").script() for m in ms]
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_MIN_BATCH", 2)
    monkeypatch.setattr(cpu_matmul, "PLANE_LONG_SUMS_AT_BATCH_1", False)
    assert [scheduled(m, "haswell").script() for m in ms] == after
