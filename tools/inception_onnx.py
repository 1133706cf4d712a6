"""googlenet and inception_v3 as torch.onnx exports torchvision's (``weights=None,
aux_logits=False``, eval mode, opset 17, ``dynamo=False``), built with onnx.helper (random
weights; torch is not needed): every BasicConv2d a Conv (+ bias: its BatchNorm folded) +
Relu; the branch pools as the symbolic exports them (``AveragePool`` 3x3 s1 pads 1,
``count_include_pad=1``; googlenet's ``MaxPool`` 3x3 s1 pads 1 ``ceil_mode=1``); the head
GlobalAveragePool, Flatten, Gemm.  For CPU measurements where the corpus model (exported on
the GPU machine) is not at hand (issue 18; bench/results/cpu-inception-2core.md).

    python tools/inception_onnx.py inception_v3 /tmp/inception_v3.onnx
    python tools/inception_onnx.py googlenet /tmp/googlenet.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Net:
    """Node / initializer accumulator with seeded weights (torchvision's module order)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def const(self, a, p):
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(a.astype(np.float32), n))
        return n

    def node(self, op, ins, **attrs):
        y = self.name(op.lower())
        self.nodes.append(helper.make_node(op, ins, [y], name=y, **attrs))
        return y

    def conv(self, x, ci, co, k, s=1, p=0):
        """BasicConv2d: Conv (BN folded into weight and bias) + Relu; ``k``, ``p`` int or (h, w)."""
        kh, kw = (k, k) if isinstance(k, int) else k
        ph, pw = (p, p) if isinstance(p, int) else p
        w = self.const(self.rng.standard_normal((co, ci, kh, kw)) / np.sqrt(ci * kh * kw), "w")
        b = self.const(self.rng.standard_normal(co) * 0.1, "b")
        c = self.node("Conv", [x, w, b], kernel_shape=[kh, kw], strides=[s, s], pads=[ph, pw, ph, pw])
        return self.node("Relu", [c])

    def maxpool(self, x, k=3, s=2, p=0, ceil=0):
        return self.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil)

    def avgpool(self, x):
        return self.node("AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4, count_include_pad=1)

    def cat(self, xs):
        return self.node("Concat", xs, axis=1)

    def model(self, x, c, hw, classes, graph_name):
        y = self.node("Flatten", [self.node("GlobalAveragePool", [x])])
        w = self.const(self.rng.standard_normal((classes, c)) / np.sqrt(c), "fcw")
        b = self.const(self.rng.standard_normal(classes) * 0.1, "fcb")
        self.nodes.append(helper.make_node("Gemm", [y, w, b], ["output"], name="fc", transB=1))
        g = helper.make_graph(self.nodes, graph_name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, classes])], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m


def googlenet(classes=1000, seed=0):
    """torchvision's GoogLeNet (its "5x5" branch a 3x3, as torchvision has it) on [1, 3, 224, 224]."""
    n = _Net(seed)

    def inception(x, ci, c1, c3r, c3, c5r, c5, pp):
        b1 = n.conv(x, ci, c1, 1)
        b2 = n.conv(n.conv(x, ci, c3r, 1), c3r, c3, 3, p=1)
        b3 = n.conv(n.conv(x, ci, c5r, 1), c5r, c5, 3, p=1)
        b4 = n.conv(n.maxpool(x, 3, 1, 1, ceil=1), ci, pp, 1)
        return n.cat([b1, b2, b3, b4]), c1 + c3 + c5 + pp

    x = n.maxpool(n.conv("input", 3, 64, 7, 2, 3), ceil=1)
    x = n.maxpool(n.conv(n.conv(x, 64, 64, 1), 64, 192, 3, p=1), ceil=1)
    x, c = inception(x, 192, 64, 96, 128, 16, 32, 32)
    x, c = inception(x, c, 128, 128, 192, 32, 96, 64)
    x = n.maxpool(x, ceil=1)
    for cfg in [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)]:
        x, c = inception(x, c, *cfg)
    x = n.maxpool(x, 2, 2, ceil=1)
    for cfg in [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]:
        x, c = inception(x, c, *cfg)
    return n.model(x, c, 224, classes, "googlenet")


def inception_v3(classes=1000, seed=0):
    """torchvision's Inception3 on [1, 3, 299, 299]."""
    n = _Net(seed)

    def block_a(x, ci, pool):
        b1 = n.conv(x, ci, 64, 1)
        b5 = n.conv(n.conv(x, ci, 48, 1), 48, 64, 5, p=2)
        b3 = n.conv(n.conv(n.conv(x, ci, 64, 1), 64, 96, 3, p=1), 96, 96, 3, p=1)
        bp = n.conv(n.avgpool(x), ci, pool, 1)
        return n.cat([b1, b5, b3, bp]), 224 + pool

    def block_b(x, ci):
        b3 = n.conv(x, ci, 384, 3, 2)
        bd = n.conv(n.conv(n.conv(x, ci, 64, 1), 64, 96, 3, p=1), 96, 96, 3, 2)
        return n.cat([b3, bd, n.maxpool(x)]), 384 + 96 + ci

    def block_c(x, ci, c7):
        b1 = n.conv(x, ci, 192, 1)
        b7 = n.conv(n.conv(n.conv(x, ci, c7, 1), c7, c7, (1, 7), p=(0, 3)), c7, 192, (7, 1), p=(3, 0))
        bd = n.conv(x, ci, c7, 1)
        for co, k, p in [(c7, (7, 1), (3, 0)), (c7, (1, 7), (0, 3)), (c7, (7, 1), (3, 0)), (192, (1, 7), (0, 3))]:
            bd = n.conv(bd, c7, co, k, p=p)
        bp = n.conv(n.avgpool(x), ci, 192, 1)
        return n.cat([b1, b7, bd, bp]), 768

    def block_d(x, ci):
        b3 = n.conv(n.conv(x, ci, 192, 1), 192, 320, 3, 2)
        b7 = n.conv(n.conv(n.conv(x, ci, 192, 1), 192, 192, (1, 7), p=(0, 3)), 192, 192, (7, 1), p=(3, 0))
        b7 = n.conv(b7, 192, 192, 3, 2)
        return n.cat([b3, b7, n.maxpool(x)]), 320 + 192 + ci

    def block_e(x, ci):
        b1 = n.conv(x, ci, 320, 1)
        b3 = n.conv(x, ci, 384, 1)
        b3 = n.cat([n.conv(b3, 384, 384, (1, 3), p=(0, 1)), n.conv(b3, 384, 384, (3, 1), p=(1, 0))])
        bd = n.conv(n.conv(x, ci, 448, 1), 448, 384, 3, p=1)
        bd = n.cat([n.conv(bd, 384, 384, (1, 3), p=(0, 1)), n.conv(bd, 384, 384, (3, 1), p=(1, 0))])
        bp = n.conv(n.avgpool(x), ci, 192, 1)
        return n.cat([b1, b3, bd, bp]), 2048

    x = n.conv(n.conv(n.conv("input", 3, 32, 3, 2), 32, 32, 3), 32, 64, 3, p=1)
    x = n.maxpool(n.conv(n.conv(n.maxpool(x), 64, 80, 1), 80, 192, 3))
    x, c = block_a(x, 192, 32)
    x, c = block_a(x, c, 64)
    x, c = block_a(x, c, 64)
    x, c = block_b(x, c)
    for c7 in (128, 160, 160, 192):
        x, c = block_c(x, c, c7)
    x, c = block_d(x, c)
    x, c = block_e(x, c)
    x, c = block_e(x, c)
    return n.model(x, c, 299, classes, "inception_v3")


BUILDERS = {"googlenet": googlenet, "inception_v3": inception_v3}

if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "inception_v3"
    onnx.save(BUILDERS[which](), sys.argv[2] if len(sys.argv) > 2 else f"{which}.onnx")
