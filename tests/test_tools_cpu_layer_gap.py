"""tools/cpu_layer_gap.py's keys: ORT's nodes land on the layer hetpart fuses them into -- a Conv
with its Clip (ReLU6) or Relu (ORT names the fused node after the activation), a SiLU (Sigmoid +
Mul, ORT's QuickGelu named ``<mul>/QuickGeluFusion/``) and a squeeze-excite gate (the Mul of the
image by the sigmoid of the fc2 Conv, keyed as that Conv); NCHWc reorders a key of their own.
Before, a Clip-fused conv was keyed "Clip" and read 0 ms (mobilenet_v2), a SiLU "QuickGelu"."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import helper

from onnx_cases import model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import cpu_layer_gap  # noqa: E402


def _net():
    w = lambda o, i: np.ones((o, i, 1, 1), np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="exp"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="exp.relu6"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="proj"),
        helper.make_node("Sigmoid", ["c2"], ["s2"], name="proj.act.sigmoid"),
        helper.make_node("Mul", ["c2", "s2"], ["a2"], name="proj.act"),
        helper.make_node("GlobalAveragePool", ["a2"], ["p"], name="se.pool"),
        helper.make_node("Conv", ["p", "w3"], ["c3"], name="se.fc2"),
        helper.make_node("Sigmoid", ["c3"], ["g"], name="se.sigmoid"),
        helper.make_node("Mul", ["a2", "g"], ["y"], name="se.gate"),
    ]
    inits = {"w1": w(16, 8), "w2": w(8, 16), "w3": w(8, 8), "lo": np.float32(0), "hi": np.float32(6)}
    return model(nodes, [("x", [1, 8, 4, 4], np.float32)], [("y", [1, 8, 4, 4], np.float32)], inits, opset=13)


def test_fused_activations_silu_and_gates_keyed_with_their_conv():
    m = _net()
    keys = cpu_layer_gap.onnx_keys(m)
    producer = {o: n.name for n in m.graph.node for o in n.output}
    exp, proj, fc2 = keys["exp"], keys["proj"], keys["se.fc2"]
    assert exp == "conv 8->16 1x1 s1 @4x4" and proj == "conv 16->8 1x1 s1 @4x4"
    key = lambda name, op: cpu_layer_gap.ort_key({"name": name, "op": op}, keys, producer)  # noqa: E731
    assert key("exp.relu6", "Conv") == exp  # ORT's Conv + Clip, named after the Clip
    assert key("proj_nchwc", "Conv") == proj
    assert key("proj.act/QuickGeluFusion/", "QuickGelu") == proj
    assert key("se.gate", "Mul") == fc2
    assert key("ReorderOutput_token_3", "ReorderOutput") == "NCHWc reorders (ORT)"
