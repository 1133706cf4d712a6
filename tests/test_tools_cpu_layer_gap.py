"""tools/cpu_layer_gap.py's keys: ORT's nodes land on the layer hetpart fuses them into -- a Conv
with its Clip (ReLU6) or Relu (ORT names the fused node after the activation), a SiLU (Sigmoid +
Mul, ORT's QuickGelu named ``<mul>/QuickGeluFusion/``), a squeeze-excite gate (the Mul of the
image by the sigmoid of the fc2 Conv, keyed as that Conv) and a Conv named after the
BatchNormalization / ReLU / residual Add it absorbed; NCHWc reorders a key of their own.
Before, a Clip-fused conv was keyed "Clip" and read 0 ms (mobilenet_v2), a SiLU "QuickGelu",
and with BN unfolded (the zoo's resnet50) every conv's time went to "Relu" / "BatchNormalization"."""

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


def _conv_bn_relu_add():
    """conv1 -> bn1 -> relu1 -> conv2 -> bn2 -> (+ x) add -> relu2 on [1, 8, 6, 6], BN unfolded
    (as the zoo's resnet50)."""
    rng = np.random.default_rng(0)
    inits = {}
    nodes = []
    x = "x"
    for i in (1, 2):
        inits[f"w{i}"] = rng.standard_normal((8, 8, 1, 1)).astype(np.float32)
        for p, v in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)):
            inits[f"{p}{i}"] = (rng.standard_normal(8) * 0.1 + v).astype(np.float32) if p != "v" else \
                np.full(8, 1.0, np.float32)
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", kernel_shape=[1, 1]))
        nodes.append(helper.make_node("BatchNormalization", [f"c{i}", f"s{i}", f"b{i}", f"m{i}", f"v{i}"],
                                      [f"n{i}"], name=f"bn{i}"))
        if i == 1:
            nodes.append(helper.make_node("Relu", ["n1"], ["r1"], name="relu1"))
            x = "r1"
    nodes.append(helper.make_node("Add", ["n2", "x"], ["a2"], name="add2"))
    nodes.append(helper.make_node("Relu", ["a2"], ["y"], name="relu2"))
    return model(nodes, [("x", (1, 8, 6, 6), np.float32)], [("y", [1, 8, 6, 6], np.float32)], inits, opset=13)


def test_fused_convs_keyed_by_their_conv():
    m = _conv_bn_relu_add()
    rows = [{"name": "relu1", "op": "FusedConv", "s": 1.0}, {"name": "relu2_nchwc", "op": "Conv", "s": 2.0},
            {"name": "bn2", "op": "Conv", "s": 4.0}, {"name": "relu2", "op": "Relu", "s": 8.0},
            {"name": "reorder_token_1", "op": "ReorderInput", "s": 16.0}]
    got = cpu_layer_gap.ort_keyed(m, rows)
    key = "conv 8->8 1x1 s1 @6x6"
    assert got == [(key, 1.0), (key, 2.0), (key, 4.0), ("Relu", 8.0), ("NCHWc reorders (ORT)", 16.0)]


def test_a_real_profile_puts_the_convs_time_on_the_convs():
    """ORT's own profile of the model (one thread, a few runs): every Conv node it ran lands on
    the conv's key, none on ReLU or BatchNormalization (before: all of it did)."""
    from cpu_kernel_profile import ort_nodes

    m = _conv_bn_relu_add()
    rows, _ = ort_nodes(m, 1, 3, warm=1)
    keyed = cpu_layer_gap.ort_keyed(m, [r for r in rows if "Conv" in r["op"]])
    assert keyed and {k for k, _ in keyed} == {"conv 8->8 1x1 s1 @6x6"}


def test_the_blocked_build_is_keyed_as_its_nchw_layers():
    """``--block 16``: hetpart's ``load(model, conv_block=16)`` kernels (5-d data, 6-d weights, a
    layout transform) keyed as the ONNX layers ORT's nodes are: ``conv ci->co kh x kw s @h x w``
    from the NCHW shapes, the transforms a key of their own."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c3x3"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="c1x1")]
    inits = {"w1": rng.standard_normal((32, 32, 3, 3)).astype(np.float32),
             "w2": rng.standard_normal((64, 32, 1, 1)).astype(np.float32)}
    m = model(nodes, [("x", [1, 32, 14, 14], np.float32)], [("y", [1, 64, 14, 14], np.float32)], inits, opset=13)
    keys = {k for k, _, _ in cpu_layer_gap.hetpart_keyed(m, 0, block=16)}
    onnx_keys = set(cpu_layer_gap.onnx_keys(m).values())
    assert {"conv 32->32 3x3 s1 @14x14", "conv 32->64 1x1 s1 @14x14"} <= keys & onnx_keys
    assert "layout transforms (hetpart)" in keys
