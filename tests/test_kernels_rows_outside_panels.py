"""A single image's 1x1 conv on wide rows loops the image's rows outside the weight's panels
(issue 18, inception_v3's 64->80 on 73x73 and its 1x1s on 35x35;
``register_tile.image_rows_outside_panels``, ``IMAGE_ROWS_OUTSIDE_PANELS``): each panel of output channels
reads an image row while it is in cache, the image streamed once, not once per panel.

Against ONNX Runtime (inputs with negatives and zeros; ReLU, residual add, no epilogue; ragged
row tiles); then the order from the scheduled TIR along the parallel tile loop: the image row
never goes back while the output-channel panel cycles within a row; with the switch off the
panel is outermost (the order before).  Narrow rows (14 wide: the weight would be re-read
more than the image), a short row of one panel and a weight past the bound keep the order.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cpu_tile_cases import constant_values, indices_along_tile_loop, matches_onnxruntime, scheduled
from onnx_cases import model

from hetpart.kernels import register_tile


def _conv(ic, oc, h, w, epilogue="relu"):
    """1x1 Conv (+ bias) on ``[1, ic, h, w]``, then ReLU, a residual Add (input ``r``) or nothing."""
    rng = np.random.default_rng(ic * 1000 + oc + w)
    wt = (rng.standard_normal((oc, ic, 1, 1)) / np.sqrt(ic)).astype(np.float32)
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    inputs = [("x", (1, ic, h, w), np.float32)]
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1])
    if epilogue == "relu":
        tail = [helper.make_node("Relu", ["c"], ["y"])]
    elif epilogue == "add":
        tail = [helper.make_node("Add", ["c", "r"], ["y"])]
        inputs.append(("r", (1, oc, h, w), np.float32))
    else:
        tail = [helper.make_node("Identity", ["c"], ["y"])]
    return model([conv] + tail, inputs, [("y", [1, oc, h, w], np.float32)], {"w": wt, "b": b}, opset=13)


CASES = {
    "64->80 on 6x73 + relu (inception's stem 1x1, 5-row ragged tiles)": lambda: _conv(64, 80, 6, 73),
    "48->24 on 5x37, one-vector panels": lambda: _conv(48, 24, 5, 37, epilogue="none"),
    "32->64 on 4x41 + add": lambda: _conv(32, 64, 4, 41, epilogue="add"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rows_outside_panels_match_onnxruntime(case):
    matches_onnxruntime(CASES[case](), case)


def _order(m, mcpu="haswell"):
    """(output-channel index, image row) of the update block along the tile loop (block
    iterators 0 and 1 of a batch-1 NCHW conv: ``oc, h``, the unit batch dropped)."""
    channels, rows = indices_along_tile_loop(scheduled(m, mcpu), (0, 1))
    return constant_values(channels), constant_values(rows)


@pytest.mark.parametrize("case", list(CASES))
def test_image_rows_outside_the_weight_panels(case, monkeypatch):
    channel, row = _order(CASES[case]())
    assert row == sorted(row) and row[-1] > 0, row
    assert len({c for c, r in zip(channel, row) if r == 0}) > 1, "every panel within the first row's tiles"
    monkeypatch.setattr(register_tile, "IMAGE_ROWS_OUTSIDE_PANELS", False)
    channel, row = _order(CASES[case]())
    assert channel == sorted(channel) and row != sorted(row), "before: the panel outermost"


def test_avx512_panels_need_rows_of_twice_their_channels():
    """16 lanes: 64->80 takes 32-channel panels (2 vectors) on 73-wide rows: rows outside;
    32->64 on 41-wide rows (under 2 x 32 channels) keeps the panels outermost."""
    channel, row = _order(CASES["64->80 on 6x73 + relu (inception's stem 1x1, 5-row ragged tiles)"](), "skylake-avx512")
    assert row == sorted(row), row
    channel, row = _order(_conv(32, 64, 4, 41, epilogue="add"), "skylake-avx512")
    assert channel == sorted(channel), channel


@pytest.mark.parametrize("m", [
    lambda: _conv(64, 32, 3, 14),  # 14-wide rows (googlenet's 14x14): under 2 panels' channels
    lambda: _conv(32, 8, 4, 41),  # one panel
    lambda: _conv(512, 160, 2, 73),  # a 320 KiB weight, past IMAGE_ROWS_MAX_WEIGHT_BYTES
], ids=["14 wide", "one panel", "weight past the bound"])
def test_order_unchanged(m, monkeypatch):
    model_ = m()
    after = scheduled(model_, "haswell").script()
    monkeypatch.setattr(register_tile, "IMAGE_ROWS_OUTSIDE_PANELS", False)
    assert scheduled(model_, "haswell").script() == after
