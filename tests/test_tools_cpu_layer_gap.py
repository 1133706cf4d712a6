"""tools/cpu_layer_gap.py: ORT's profiled nodes keyed by the layer they compute, a fused Conv
named after the BatchNormalization / ReLU / residual Add it absorbed included."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from onnx import helper

from onnx_cases import model

_TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(_TOOLS))  # the tool imports cpu_kernel_profile as a sibling
_SPEC = importlib.util.spec_from_file_location("cpu_layer_gap", _TOOLS / "cpu_layer_gap.py")
cpu_layer_gap = importlib.util.module_from_spec(_SPEC)
sys.modules["cpu_layer_gap"] = cpu_layer_gap
_SPEC.loader.exec_module(cpu_layer_gap)


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
