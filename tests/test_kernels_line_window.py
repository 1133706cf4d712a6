"""Convolutions with a one-dimensional window (inception_v3's 1x7 / 7x1 on 17x17, 1x3 / 3x1 on
8x8) on a channels-innermost padded image (issue 18; ``cpu_conv2d.CHANNELS_INNER_LINE_WINDOWS``):
the padding writes ``X[n, h, w, ic]`` and the tile sums the taps outside the channels, as the
3x3 convs of ``CHANNELS_INNER_WINDOW`` do (tests/test_kernels_channels_inner_window.py).

Against ONNX Runtime (inputs with negatives and zeros, ragged 17-wide rows, both paddings);
then the schedule: the padded image is channels-innermost with the switch on, on both vector
widths, in the image's layout with it off; over :data:`CHANNELS_INNER_LINE_MAX_OUT` output
channels, under ``CHANNELS_INNER_MIN_IN`` input channels, and a 3x3 on a plane under
``CHANNELS_INNER_MIN_PLANE`` keep the image's layout.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper

from onnx_cases import assert_matches, model, onnxruntime_outputs, run_on, scheduled_by

from hetpart.kernels.rules import cpu_conv2d
from cpu_tile_cases import mcpu_target


def _conv(c_in, c_out, hw, k, pads):
    rng = np.random.default_rng(13)
    kh, kw = k
    wt = (rng.standard_normal((c_out, c_in, kh, kw)) / np.sqrt(c_in * kh * kw)).astype(np.float32)
    b = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kh, kw], pads=list(pads)),
             helper.make_node("Relu", ["c"], ["y"])]
    oh, ow = hw + pads[0] + pads[2] - kh + 1, hw + pads[1] + pads[3] - kw + 1
    return model(nodes, [("x", (1, c_in, hw, hw), np.float32)], [("y", [1, c_out, oh, ow], np.float32)],
                 initializers={"w": wt, "b": b})


CASES = {
    "1x7 on 17x17 (inception's Mixed_6)": lambda: _conv(16, 48, 17, (1, 7), (0, 3, 0, 3)),
    "7x1 on 17x17": lambda: _conv(24, 32, 17, (7, 1), (3, 0, 3, 0)),
    "1x3 on 8x8 (Mixed_7)": lambda: _conv(16, 32, 8, (1, 3), (0, 1, 0, 1)),
    "3x1 on 8x8, unpadded": lambda: _conv(16, 32, 8, (3, 1), (0, 0, 0, 0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_line_window_matches_onnxruntime(case):
    m = CASES[case]()
    rng = np.random.default_rng(4)
    x = rng.standard_normal([d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = run_on(m, "cpu", {"x": x})["y"]
    (want,) = onnxruntime_outputs(m, {"x": x})
    assert (want == 0).any() and (want > 0).any()
    assert_matches(got, want, rtol=1e-5, atol=1e-5, what=case)


def _pad_shape(m, mcpu="haswell"):
    func = scheduled_by(m, mcpu_target(mcpu), "CpuConv2d")
    line = [ln for ln in func.script().splitlines() if "pad_temp = T.sblock_alloc_buffer" in ln]
    return [int(d) for d in re.findall(r"T.int64\((\d+)\)", line[0])] if line else None


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
def test_padded_image_is_channels_innermost(mcpu, monkeypatch):
    m = _conv(16, 48, 17, (1, 7), (0, 3, 0, 3))
    assert _pad_shape(m, mcpu) == [1, 17, 23, 16]
    monkeypatch.setattr(cpu_conv2d, "CHANNELS_INNER_LINE_WINDOWS", False)
    assert _pad_shape(m, mcpu) == [1, 16, 17, 23]


@pytest.mark.parametrize("m, shape", [
    (lambda: _conv(16, 400, 8, (1, 3), (0, 1, 0, 1)), [1, 16, 8, 10]),  # over CHANNELS_INNER_LINE_MAX_OUT
    (lambda: _conv(8, 32, 17, (1, 7), (0, 3, 0, 3)), [1, 8, 17, 23]),  # under CHANNELS_INNER_MIN_IN
    (lambda: _conv(16, 32, 17, (3, 3), (1, 1, 1, 1)), [1, 16, 19, 19]),  # a 3x3 under CHANNELS_INNER_MIN_PLANE
], ids=["400 outputs", "8 inputs", "3x3 on 17x17"])
def test_other_convs_keep_the_image_layout(m, shape):
    assert _pad_shape(m()) == shape
