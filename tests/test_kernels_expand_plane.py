"""Batched expansion 1x1 convs on 14x14 planes tiled on the padded plane (issue 18: EfficientNet's
112->672 / 80->480 + SiLU and mobilenet_v2's 96->576 / 64->384 + ReLU6 at batch 8 were 1.4-1.5x
ONNX Runtime; hetpart/kernels/rules/cpu_matmul.py ``_expand_plane``, switch
``RAGGED_PLANE_EXPAND``):

below 256 input channels a 1x1 conv kept the weight tile, which re-reads the image once per
two-vector panel of output channels; an expansion (output channels >= 4x input, from 64 input
channels) on a batch of 2+ images now takes the padded plane (196 -> 208 pixels with 8 lanes, the
image copied zero-padded, the output copied back with the epilogue).

Against ONNX Runtime (inputs with negatives and zeros; ReLU, SiLU, none), built for this host; then
the schedules for an AVX2 target: the padded plane where the rule applies, the weight tile with
the switch off, at batch 1, under 64 input channels and for a conv that does not expand 4x.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cpu_tile_cases import conv, matches_onnxruntime, scheduled
from onnx_cases import model

from hetpart.kernels.rules import cpu_matmul


def _conv_silu(ic, oc, hw, batch):
    """1x1 conv (+ bias) then ``c * sigmoid(c)`` (EfficientNet's expansion)."""
    rng = np.random.default_rng(ic + oc)
    w = (rng.standard_normal((oc, ic, 1, 1)) / np.sqrt(ic)).astype(np.float32)
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    return model(nodes, [("x", (batch, ic, hw, hw), np.float32)], [("y", [batch, oc, hw, hw], np.float32)],
                 {"w": w, "b": b}, opset=13)


CASES = {
    "1x1 64->384 on 14x14 + relu, batch 2": lambda: conv(64, 384, 14, batch=2),
    "1x1 80->480 on 14x14 + silu, batch 3": lambda: _conv_silu(80, 480, 14, batch=3),
    "1x1 64->256 on 14x14, no epilogue, batch 2": lambda: conv(64, 256, 14, epilogue="none", batch=2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_expansions_match_onnxruntime(case):
    matches_onnxruntime(CASES[case](), case)


def _padded_plane(m) -> bool:
    script = scheduled(m, "haswell").script()
    return "reindex_pad" in script and "T.int64(208)" in script and "layout_rewrite_preproc" not in script


@pytest.mark.parametrize("m", [lambda: conv(64, 384, 14, batch=2), lambda: _conv_silu(112, 672, 14, batch=2),
                               lambda: conv(96, 576, 14, epilogue="none", batch=4)],
                         ids=["64->384 b2", "112->672 + silu b2", "96->576 b4"])
def test_expansion_padded_and_switch_restores_the_weight_tile(m, monkeypatch):
    assert _padded_plane(m())
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_EXPAND", False)
    assert not _padded_plane(m())


@pytest.mark.parametrize("m", [lambda: conv(64, 384, 14), lambda: conv(48, 288, 14, batch=2),
                               lambda: conv(96, 256, 14, batch=2)],
                         ids=["batch 1", "48 input channels", "96->256: under 4x"])
def test_not_taken(m):
    assert not _padded_plane(m())
