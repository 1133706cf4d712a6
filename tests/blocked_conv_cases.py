"""Small conv models for the NCHW{N}c (blocked convolution) tests (``from blocked_conv_cases
import ...``):

* ``four_conv_model(batch, hw)``: four convs with a residual add (test_kernels_cpu_blocked_conv,
  the ``--conv-block`` CLI and importer tests, the corpus benchmark's ``--onnx`` test);
* ``small_densenet()``: a small densenet (test_importer_blocked_regions and the
  nchwc_in_situ / parallel_audit tool tests);
* ``relu6_conv_inits(rng, shapes)`` / ``conv(x, w, y)``: the seeded weights, biases and ReLU6
  bounds of a conv model and its biased Conv node (the depthwise models of
  test_kernels_cpu_blocked_depthwise and test_kernels_blocked_dw_row_groups).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def relu6_conv_inits(rng, shapes: dict) -> list:
    """Inputs: a numpy Generator and ``{weight name: shape}``.  Output: the initializers of a conv
    model: per name its weight (standard normal x 0.4), then per name its bias ``b<name>``
    (standard normal, ``shape[0]``), then the ReLU6 Clip bounds ``lo`` = 0 and ``hi`` = 6 (as
    torch exports them); ``rng`` drawn in that order."""
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n) for n, s in shapes.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(s[0]).astype(np.float32), "b" + n) for n, s in shapes.items()]
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
              numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    return inits


def conv(x: str, w: str, y: str, **kw):
    """The Conv node ``y = conv(x, w) + b<w>`` (the bias named as :func:`relu6_conv_inits` names it)."""
    return helper.make_node("Conv", [x, w, "b" + w], [y], **kw)


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


def small_densenet():
    """A small densenet (x [1, 3, 16, 16] -> y [1, 16, 4, 4]): a stem conv and max pool, two dense
    layers (BN-ReLU, 1x1 conv, 3x3 growth conv) whose concats read the pool, a transition
    (BN-ReLU, 1x1 conv, 2x2 avg pool), a last BN-ReLU; seeded weights and BN statistics."""
    rng = np.random.default_rng(5)
    nodes, inits = [], []

    def const(a, name):
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    def conv(x, ci, co, k, name, pad=0, stride=1, bias=True):
        w = const(rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k), f"{name}_w")
        ins = [x, w] + ([const(rng.standard_normal(co) * 0.1, f"{name}_b")] if bias else [])
        nodes.append(helper.make_node("Conv", ins, [name], pads=[pad] * 4, strides=[stride] * 2, kernel_shape=[k, k]))
        return name

    def bn_relu(x, c, name):
        ps = [const(rng.uniform(-1.5, 1.5, c), f"{name}_s"), const(rng.standard_normal(c) * 0.1, f"{name}_b"),
              const(rng.standard_normal(c) * 0.1, f"{name}_m"), const(rng.uniform(0.5, 1.5, c), f"{name}_v")]
        nodes.append(helper.make_node("BatchNormalization", [x, *ps], [f"{name}_bn"], epsilon=1e-5))
        nodes.append(helper.make_node("Relu", [f"{name}_bn"], [f"{name}_r"]))
        return f"{name}_r"

    def relu(x):
        nodes.append(helper.make_node("Relu", [x], [f"{x}_r"]))
        return f"{x}_r"

    nodes.append(helper.make_node("MaxPool", [relu(conv("x", 3, 16, 3, "stem", pad=1))], ["p"],
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    feats = ["p"]
    for i in range(2):
        c = 16 + 8 * i
        if len(feats) > 1:
            nodes.append(helper.make_node("Concat", feats, [f"cat{i}"], axis=1))
        h = relu(conv(bn_relu(f"cat{i}" if len(feats) > 1 else "p", c, f"n{i}"), c, 16, 1, f"b{i}"))
        feats.append(conv(h, 16, 8, 3, f"g{i}", pad=1, bias=False))
    nodes.append(helper.make_node("Concat", feats, ["cat2"], axis=1))
    t = conv(bn_relu("cat2", 32, "t"), 32, 16, 1, "tr", bias=False)
    nodes.append(helper.make_node("AveragePool", [t], ["avg"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Identity", [bn_relu("avg", 16, "n5")], ["y"]))
    g = helper.make_graph(nodes, "small_densenet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
