"""A small all-conv model for the NCHW{N}c (blocked convolution) tests (``from blocked_conv_cases
import ...``): ``four_conv_model(batch, hw)``, used by test_kernels_cpu_blocked_conv, the
``--conv-block`` CLI and importer tests and the corpus benchmark's ``--onnx`` test.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def four_conv_model(batch: int, hw: int = 14):
    """x[b, 8, hw, hw] -> 3x3 pad 1 8->16 + relu -> 1x1 16->16 + add(3x3 out) + relu
    -> 3x3 stride 2 pad 1 16->16 -> 1x1 stride 2 16->16 + relu."""
    rng = np.random.default_rng(5)
    shapes = {"w1": (16, 8, 3, 3), "w2": (16, 16, 1, 1), "w3": (16, 16, 3, 3), "w4": (16, 16, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in shapes.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), f"b{i}") for i in range(1, 5)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["c3", "w4", "b4"], ["c4"], strides=[2, 2]),
        helper.make_node("Relu", ["c4"], ["y"]),
    ]
    out = -(-(-(-hw // 2)) // 2)
    g = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 16, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
