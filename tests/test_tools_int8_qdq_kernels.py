"""tools/int8_qdq_kernels.py: hetpart's fused kernels and ORT's nodes put in the same
categories (stem, depthwise, 1x1, squeeze-excite 1x1, pool, matmul), so their times can
be compared category by category."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import int8_qdq_kernels  # noqa: E402
from onnx_cases import model  # noqa: E402

from hetpart.importer import load  # noqa: E402

F32 = np.float32


def _net():
    rng = np.random.default_rng(0)
    w = {"stem": (8, 3, 3, 3), "dw": (8, 1, 3, 3), "pw": (16, 8, 1, 1), "se": (16, 16, 1, 1)}
    inits = {k: rng.standard_normal(s).astype(F32) for k, s in w.items()}
    inits["fc"] = rng.standard_normal((16, 10)).astype(F32)
    nodes = [helper.make_node("Conv", ["x", "stem"], ["a"], name="stem", strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["a1"], name="relu"),
             helper.make_node("Conv", ["a1", "dw"], ["b"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "pw"], ["c"], name="pw"),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
             helper.make_node("Conv", ["p", "se"], ["s"], name="se"),
             helper.make_node("Flatten", ["s"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")]
    return model(nodes, [("x", (1, 3, 16, 16), F32)], [("y", (1, 10), F32)], inits, opset=13)


def test_onnx_nodes_and_hetpart_kernels_fall_in_the_same_categories():
    m = _net()
    assert int8_qdq_kernels._ort_categories(m) == {
        "stem": "stem conv", "relu": "element-wise", "dw": "depthwise conv", "pw": "1x1 conv", "pool": "pool",
        "se": "SE 1x1 conv", "flat": "element-wise", "fc": "matmul"}
    graph = load(m)
    cats, first = [], True
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        cats.append(int8_qdq_kernels.category(k, graph.module[k.func], first and "conv2d" in k.ops))
        first = first and "conv2d" not in k.ops
    assert [c for c in cats if c != "element-wise"] == ["stem conv", "depthwise conv", "1x1 conv", "pool",
                                                         "SE 1x1 conv", "matmul"], cats
