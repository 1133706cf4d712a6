"""mobilenet_v2 as torch.onnx exports torchvision's in eval mode (opset 17), built with
onnx.helper and random weights (torch is not needed): every BN folded into its conv's
bias, ReLU6 as ``Clip(x, 0, 6)`` with constant min/max inputs, the inverted residual
table (t, c, n, s) of torchvision, a 1x1 conv to 1280 + ReLU6, GlobalAveragePool,
Flatten, Gemm.  For CPU measurements where the corpus model (exported on the GPU
machine) is not at hand (issue 18; bench/results/cpu-convnets-2core.md).  The zoo's
``mobilenet`` is MobileNetV3-Large (hard-swish, squeeze-excite), not this.

    python tools/mobilenet_v2_onnx.py /tmp/mobilenet_v2.onnx
    python tools/cpu_kernel_profile.py /tmp/mobilenet_v2.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# torchvision's inverted residual settings: expand ratio t, channels c, repeats n, stride s.
TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def build(hw=224, classes=1000, batch=1, seed=0, table=TABLE, stem=32, last=1280):
    """The model: input ``input`` [batch, 3, hw, hw], output ``output`` [batch, classes]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cnt = [0]

    def name(p):
        cnt[0] += 1
        return f"{p}{cnt[0]}"

    def const(a, p):
        n = name(p)
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), n))
        return n

    lo, hi = const(0.0, "min"), const(6.0, "max")

    def conv(x, ci, co, k, s=1, group=1, relu6=True):
        w = const(rng.standard_normal((co, ci // group, k, k)) * np.sqrt(2.0 / (ci // group * k * k)), "w")
        b = const(rng.standard_normal(co) * 0.1, "b")
        y = name("conv")
        nodes.append(helper.make_node("Conv", [x, w, b], [y], name=y, kernel_shape=[k, k], strides=[s, s],
                                      pads=[k // 2] * 4, group=group))
        if not relu6:
            return y
        z = name("clip")
        nodes.append(helper.make_node("Clip", [y, lo, hi], [z], name=z))
        return z

    x = conv("input", 3, stem, 3, 2)
    c = stem
    for t, co, n, s in table:
        for i in range(n):
            h = x if t == 1 else conv(x, c, c * t, 1)
            h = conv(h, c * t, c * t, 3, s if i == 0 else 1, group=c * t)
            h = conv(h, c * t, co, 1, relu6=False)
            if i > 0 or (s == 1 and c == co):
                y = name("add")
                nodes.append(helper.make_node("Add", [h, x], [y], name=y))
                h = y
            x, c = h, co
    x = conv(x, c, last, 1)
    y = name("gap")
    nodes.append(helper.make_node("GlobalAveragePool", [x], [y], name=y))
    f = name("flat")
    nodes.append(helper.make_node("Flatten", [y], [f], name=f))
    w = const(rng.standard_normal((classes, last)) / np.sqrt(last), "fcw")
    b = const(rng.standard_normal(classes) * 0.1, "fcb")
    nodes.append(helper.make_node("Gemm", [f, w, b], ["output"], name="fc", transB=1))
    g = helper.make_graph(nodes, "mobilenet_v2",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, hw, hw])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, classes])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


if __name__ == "__main__":
    onnx.save(build(), sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2.onnx")
