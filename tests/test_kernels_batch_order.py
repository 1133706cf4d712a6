"""CPU tiles at batch > 1 (issue 18, ResNet-50 at batch 8/32): where the batch's images
are past ``register_tile.BATCH_GROUP_BYTES``, the images go in groups that fit, the group
loop outside the weight-panel loop (``register_tile.batch_group``), so every panel
re-reads a group's images from cache instead of the whole batch's from memory.

Against ONNX Runtime (inputs with negatives and zeros; ReLU / residual-add / no
epilogue; rtol 1e-5, atol 1e-6 of the largest output) at batch 3 for a 1x1, a strided
1x1, a 3x3 and a batched ``[b, m, k] @ [k, n]`` matmul, with the group size set so that
each group holds one image; then the order from the scheduled TIR: along the tile loop
(the parallel one), the image index (or group) never goes back while the output-channel
panel does -- before the change the panel was outermost and the image cycled; at batch
1, or a batch that fits, the schedule is the one before.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cpu_tile_cases import constant_values, conv, indices_along_tile_loop, matches_onnxruntime, scheduled, tile_shape
from onnx_cases import model

from hetpart.kernels import register_tile
from hetpart.kernels.rules import cpu_matmul


def _matmul(b, m, k, n):
    """``x[b, m, k] @ W[k, n] + bias``, then ReLU (W a model weight)."""
    rng = np.random.default_rng(b * 100 + m + k + n)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    bias = (rng.standard_normal(n) * 0.5).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    return model(nodes, [("x", (b, m, k), np.float32)], [("y", [b, m, n], np.float32)], {"w": w, "bias": bias},
                 opset=13)


CASES = {
    "1x1 256->32 on 14x14 + relu, batch 3": lambda: conv(256, 32, 14, batch=3),
    "1x1 512->32 on 7x7 + add, batch 3": lambda: conv(512, 32, 7, epilogue="add", batch=3),
    "1x1 64->32 s2 28x28 -> 14x14, batch 3": lambda: conv(64, 32, 28, stride=2, epilogue="none", batch=3),
    "3x3 32->64 on 14x14 + relu, batch 3": lambda: conv(32, 64, 14, k=3, pad=1, batch=3),
    "[3, 24, 64] @ [64, 48] + relu": lambda: _matmul(3, 24, 64, 48),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_tiles_match_onnxruntime(case, monkeypatch):
    m = CASES[case]()
    monkeypatch.setattr(register_tile, "BATCH_GROUP_BYTES", int(_images_bytes(m) * 1.5))
    matches_onnxruntime(m, case)


def _tile_order(func) -> tuple[list[int], list[int]]:
    """(image index, output-channel index) of the update block along the tile loop
    (iterators 0 and 1 of an NCHW conv's / a ``[b, m, n]`` matmul's block: ``n, oc`` /
    ``b, m``)."""
    images, channels = indices_along_tile_loop(func, (0, 1))
    return constant_values(images), constant_values(channels)


def _images_bytes(m) -> int:
    """Bytes of one image of the model's first input (its padded copy is a little more)."""
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    return 4 * int(np.prod(shape[1:]))


@pytest.mark.parametrize("case,mcpu,read", [
    ("1x1 256->32 on 14x14 + relu, batch 3", "haswell", 1),
    ("1x1 64->32 s2 28x28 -> 14x14, batch 3", "haswell", 4),
    ("3x3 32->64 on 14x14 + relu, batch 3", "haswell", 1),
    ("3x3 32->64 on 14x14 + relu, batch 3", "skylake-avx512", 1),
])
def test_batch_loop_is_outside_the_weight_panels(case, mcpu, read, monkeypatch):
    """Images past the group size (set here to one image and a bit: a padded image fits
    once, two do not): each image's tiles run every panel before the next image's.  (The
    stride-2 1x1 conv's tiles read a subsampled copy, ``read`` = 4 times smaller than the
    image: ``cpu_conv2d.subsampled_1x1``.)"""
    m = CASES[case]()
    monkeypatch.setattr(register_tile, "BATCH_GROUP_BYTES", int(_images_bytes(m) / read * 1.5))
    image, channel = _tile_order(scheduled(m, mcpu))
    assert image == sorted(image) and image[0] == 0 and image[-1] == 2, image
    per_image = [channel[i] for i in range(len(image)) if image[i] == 0]
    assert len(set(per_image)) > 1, "every panel within one image's tiles"


def test_images_in_groups_that_fit(monkeypatch):
    """Four images, two fitting the group size: the tile loop runs groups of two images
    (0-1 then 2-3), every panel over a group's images before the next group."""
    m = conv(256, 32, 14, batch=4)
    monkeypatch.setattr(register_tile, "BATCH_GROUP_BYTES", int(_images_bytes(m) * 2.5))
    image, channel = _tile_order(scheduled(m, "haswell"))
    groups = [i // 2 for i in image]
    assert groups == sorted(groups) and set(image[: len(image) // 2]) == {0, 1}, image
    assert len(set(channel[: len(image) // 2])) > 1, "every panel within the first group"


def test_batched_matmul_rows_outside_the_weight_panels(monkeypatch):
    """``[3, 24, 64] @ [64, 48]``: the batch (block iterator 0) outermost in the tile loop."""
    m = CASES["[3, 24, 64] @ [64, 48] + relu"]()
    monkeypatch.setattr(register_tile, "BATCH_GROUP_BYTES", 24 * 64 * 4)
    image, _ = _tile_order(scheduled(m, "haswell"))
    assert image == sorted(image) and image[-1] == 2, image


@pytest.mark.parametrize("m", [lambda: conv(256, 32, 14), lambda: conv(256, 32, 14, batch=3)],
                         ids=["batch 1", "batch 3 that fits"])
def test_schedule_unchanged_where_the_batch_fits(m, monkeypatch):
    """At batch 1, or where the batch's images fit :data:`BATCH_GROUP_BYTES`, the scheduled
    TIR is the one of the order before (the switch off)."""
    model_ = m()
    after = scheduled(model_, "haswell").script()
    monkeypatch.setattr(register_tile, "BATCH_OUTSIDE_PANELS", False)
    assert scheduled(model_, "haswell").script() == after


# --- a batch of 14x14 images: 1x1 convs on the padded plane (cpu_matmul._ragged_plane) ---

PLANE_CASES = {
    "1x1 256->32 on 14x14 + relu, batch 2": lambda: conv(256, 32, 14, batch=2),
    "1x1 256->48 on 14x14 + add, batch 3": lambda: conv(256, 48, 14, epilogue="add", batch=3),
    "1x1 256->40 on 17x17, batch 2": lambda: conv(256, 40, 17, epilogue="none", batch=2),
}


@pytest.mark.parametrize("case", list(PLANE_CASES))
def test_padded_plane_matches_onnxruntime(case):
    m = PLANE_CASES[case]()
    matches_onnxruntime(m, case)


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
def test_batched_14x14_plane_is_padded_and_tiled_along_it(mcpu):
    """196 pixels -> 208 (8 lanes) or 224 (16): the image copied zero-padded, the tile two
    full vectors along the plane (before: the weight tile, output-channel vectors)."""
    func = scheduled(PLANE_CASES["1x1 256->32 on 14x14 + relu, batch 2"](), mcpu)
    script = func.script()
    lanes = 8 if mcpu == "haswell" else 16
    assert "reindex_pad" in script and f"T.int64({-(-196 // (2 * lanes)) * 2 * lanes})" in script, script
    assert "layout_rewrite_preproc" not in script, "the weight is broadcast, not packed into panels"
    assert tile_shape(func)[1:] == (2, lanes)


@pytest.mark.parametrize("m", [lambda: conv(512, 32, 7, batch=2), lambda: conv(96, 32, 14, batch=2)],
                         ids=["7x7: 49 -> 64 is too much padding", "a sum of 96 is too short"])
def test_plane_not_padded_past_the_waste_bound(m):
    """(Batch 1 is padded too since RAGGED_PLANE_MIN_BATCH = 1: test_kernels_plane_batch1.py.)"""
    assert "reindex_pad" not in scheduled(m(), "haswell").script()


def test_7x7_plane_padded_where_the_epilogue_adds_a_residual(monkeypatch):
    """49 -> 64 pixels is past the waste bound, but not past the residual's: a 7x7 conv whose
    epilogue adds a residual is tiled on the padded plane (its weight tile read the
    residual as a gather per 16 channels); the same conv with a ReLU keeps the weight tile.
    (The channels-inner 7x7 plane, which takes both first since, off: test_kernels_r50_late.py.)"""
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    assert "reindex_pad" in scheduled(conv(512, 32, 7, epilogue="add", batch=2), "haswell").script()
    assert "reindex_pad" not in scheduled(conv(512, 32, 7, epilogue="relu", batch=2), "haswell").script()
