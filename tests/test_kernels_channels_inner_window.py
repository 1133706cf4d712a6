"""Stride-1 windowed convs with few output channels read a channels-innermost padded image
(issue 18; rules/cpu_conv2d.py, ``CHANNELS_INNER_WINDOW``): densenet121's 3x3 "growth" convs
(128 -> 32 channels, pad 1, 56x56 and 28x28), resnet50's 3x3s on 56x56 and 28x28 (64 and 128).  The padding block writes ``X[n, h, w, ic]`` and
the tile sums the window outside the channels (``ry, rx, ic``), the weight panel packed in that
order, so each broadcast steps to the next float (ORT/MLAS's NCHWc input does the same);
before, each step read a plane further.

Against ONNX Runtime and onnx.reference (inputs with negatives and zeros; no bias, bias +
ReLU, a width the 4-column tile does not divide, a batch of 2); then the schedule: the copy is
channels-innermost with the switch on, not off, on AVX2 and AVX-512; 14x14 planes (at batch 4 too), 129+ output
channels, stride 2 and 3-channel stems are unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cpu_tile_cases import conv2d_script
from onnx_cases import assert_matches, model, onnxruntime_outputs, reference, run_on

from hetpart.kernels.rules import cpu_conv2d


def _conv(c_in, c_out, h, w, *, stride=1, bias=False, relu=False, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.1).astype(np.float32)
    wt.reshape(-1)[::5] = 0.0
    inits = {"W": wt}
    ins = ["x", "W"]
    if bias:
        inits["B"] = rng.standard_normal(c_out).astype(np.float32)
        ins.append("B")
    nodes = [helper.make_node("Conv", ins, ["c" if relu else "y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              strides=[stride, stride])]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    return model(nodes, [("x", (batch, c_in, h, w), np.float32)], [("y", [batch, c_out, oh, ow], np.float32)],
                 initializers=inits, opset=13)


CASES = {
    "densenet's growth conv 128->32 on 28x28, no bias": lambda: _conv(128, 32, 28, 28),
    "32->16 + bias + ReLU on 30x29 (a ragged column tile)": lambda: _conv(32, 16, 30, 29, bias=True, relu=True),
    "64->32 on 28x28, batch 2": lambda: _conv(64, 32, 28, 28, batch=2),
    "64->128 + bias + ReLU on 28x28 (resnet50's 3x3, narrower)": lambda: _conv(64, 128, 28, 28, bias=True, relu=True),
}


def _feeds(m) -> dict:
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    return {"x": x}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_onnxruntime_and_the_reference(case):
    m = CASES[case]()
    feeds = _feeds(m)
    got = run_on(m, "cpu", feeds)["y"]
    (want,) = onnxruntime_outputs(m, feeds)
    assert_matches(got, want, rtol=1e-4, atol=1e-5, what=case)
    assert_matches(got, reference(m, feeds)["y"], rtol=1e-4, atol=1e-5, what=case)


CHANNELS_INNER = "pad_temp = T.sblock_alloc_buffer((T.int64(1), T.int64(30), T.int64(30), T.int64(128)))"


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
def test_growth_conv_reads_channels_innermost(mcpu, monkeypatch):
    m = _conv(128, 32, 28, 28)
    assert CHANNELS_INNER in conv2d_script(m, mcpu)
    monkeypatch.setattr(cpu_conv2d, "CHANNELS_INNER_WINDOW", False)
    assert CHANNELS_INNER not in conv2d_script(m, mcpu)


@pytest.mark.parametrize("m", [lambda: _conv(128, 32, 14, 14), lambda: _conv(32, 32, 14, 14, batch=4), lambda: _conv(16, 160, 28, 28),
                               lambda: _conv(128, 32, 56, 56, stride=2), lambda: _conv(3, 32, 28, 28)],
                         ids=["14x14 plane", "14x14 planes, batch 4", "160 output channels", "stride 2", "3 input channels"])
def test_other_convs_unchanged(m, monkeypatch):
    model_ = m()
    after = conv2d_script(model_)
    monkeypatch.setattr(cpu_conv2d, "CHANNELS_INNER_WINDOW", False)
    assert conv2d_script(model_) == after
