"""densenet121 as torch.onnx exports torchvision's in eval mode, built with onnx.helper
(random weights; torch is not needed): Conv+BN fused where the BN follows a Conv; each
dense layer's pre-activation norm1 (on the Concat of the features so far), the
transitions' norm and norm5 kept as BatchNormalization.  For CPU measurements where
the corpus model (exported on the GPU machine) is not at hand (issue 18;
bench/results/cpu-densenet-2core.md).

    python tools/densenet_onnx.py /tmp/densenet121.onnx
    python -m hetpart.bench.kernel_table /tmp/densenet121.onnx --threads 2
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

def build(blocks=(6, 12, 24, 16), growth=32, bn_size=4, init=64, hw=224, classes=1000, seed=0, stem=True, c_in=None):
    """The model; ``stem=False, classes=0``: dense blocks alone on a [1, c_in, hw, hw] input."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cnt = [0]
    def name(p):
        cnt[0] += 1; return f"{p}{cnt[0]}"
    def const(a, p):
        n = name(p); inits.append(numpy_helper.from_array(a.astype(np.float32), n)); return n
    def conv(x, ci, co, k, s=1, p=0, bias=True):
        w = const(rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k), "w")
        ins = [x, w] + ([const(rng.standard_normal(co) * 0.1, "b")] if bias else [])
        y = name("conv"); nodes.append(helper.make_node("Conv", ins, [y], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)); return y
    def bn(x, c):
        sc = const(rng.uniform(0.5, 1.5, c), "s"); b = const(rng.standard_normal(c) * 0.1, "bb")
        m = const(rng.standard_normal(c) * 0.1, "m"); v = const(rng.uniform(0.5, 1.5, c), "v")
        y = name("bn"); nodes.append(helper.make_node("BatchNormalization", [x, sc, b, m, v], [y], epsilon=1e-5)); return y
    def relu(x):
        y = name("relu"); nodes.append(helper.make_node("Relu", [x], [y])); return y
    def cat(xs):
        if len(xs) == 1: return xs[0]
        y = name("cat"); nodes.append(helper.make_node("Concat", xs, [y], axis=1)); return y
    if stem:
        x = relu(conv("input", 3, init, 7, 2, 3))
        y = name("pool"); nodes.append(helper.make_node("MaxPool", [x], [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)); x = y
        c = init; in_shape = [1, 3, hw, hw]
    else:
        x = "input"; c = c_in or init; in_shape = [1, c, hw, hw]
    for bi, n in enumerate(blocks):
        feats = [x]
        for _ in range(n):
            cc = cat(feats); ci = c + growth * (len(feats) - 1)
            h = relu(conv(relu(bn(cc, ci)), ci, bn_size * growth, 1))
            feats.append(conv(h, bn_size * growth, growth, 3, 1, 1, bias=False))
        x = cat(feats); c = c + growth * n
        if bi != len(blocks) - 1:
            x = conv(relu(bn(x, c)), c, c // 2, 1, bias=False)
            y = name("avg"); nodes.append(helper.make_node("AveragePool", [x], [y], kernel_shape=[2, 2], strides=[2, 2])); x = y
            c //= 2
    x = relu(bn(x, c))
    if classes:
        y = name("gap"); nodes.append(helper.make_node("GlobalAveragePool", [x], [y]))
        f = name("flat"); nodes.append(helper.make_node("Flatten", [y], [f]))
        w = const(rng.standard_normal((classes, c)) / np.sqrt(c), "fcw"); b = const(rng.standard_normal(classes) * 0.1, "fcb")
        nodes.append(helper.make_node("Gemm", [f, w, b], ["output"], transB=1))
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, classes])
    else:
        nodes.append(helper.make_node("Identity", [x], ["output"]))
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, c, hw, hw])
    g = helper.make_graph(nodes, "densenet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)], [out], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
    return m

if __name__ == "__main__":
    onnx.save(build(), sys.argv[1] if len(sys.argv) > 1 else "densenet121.onnx")
