"""Single layers of the corpus models where hetpart's all-CPU run trails ONNX Runtime
(issue 18: ViT-B/16, inception_v3, whisper's encoder, resnet50, densenet121, mobilenet_v2, the squeeze-excite
blocks of mobilenet_v3_large and efficientnet_b0), timed against ONNX Runtime.

In: layer names (``--list`` shows them; default all) and a thread count.  Out: per
layer, hetpart's time beside ONNX Runtime's on the same threads, and the ratio: the
least of interleaved whole runs (:func:`interleaved`; on a shared machine the medians
of separate runs moved by 2-5x), or with ``--kernels`` the sums of the per-kernel
medians of :func:`hetpart.bench.kernel_table.measure`; ``--save DIR`` writes the ONNX files instead (seeded
weights, static shapes, batch 1), for ``python -m hetpart.bench.kernel_table FILE``.
The corpus models are exported with torch on the GPU machine; :data:`LAYERS`
rebuilds their layers with ``onnx.helper`` (exact shapes) so they can be measured
anywhere.  A before/after comparison is this run on two checkouts.

    python bench/cpu_layers.py --threads 2                 # every layer
    python bench/cpu_layers.py vit_attn inc_1x7_192 --runs 20
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .settle import SettleLog


def _conv(c_in, c_out, hw, k, stride=(1, 1), pads=(0, 0, 0, 0), relu=True, seed=0, group=1, relu6=False, bias=True):
    """Conv (+ bias, + ReLU: torchvision's BasicConv2d after BN folding; ``relu6``: Clip(0, 6)
    as mobilenet_v2 exports it; ``group``: depthwise when it is ``c_in``; ``bias=False``: no bias,
    as densenet's transition convs) on a [1, c_in, h, w] input."""
    rng = np.random.default_rng(seed)
    kh, kw = k
    h, w = hw
    cg = c_in // group
    wt = (rng.standard_normal((c_out, cg, kh, kw)) / np.sqrt(cg * kh * kw)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32) * 0.1
    oh = (h + pads[0] + pads[2] - kh) // stride[0] + 1
    ow = (w + pads[1] + pads[3] - kw) // stride[1] + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"][: 3 if bias else 2], ["c" if relu or relu6 else "y"], kernel_shape=[kh, kw],
                              strides=list(stride), pads=list(pads), group=group)]
    consts = []
    if relu6:
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
        consts = [(np.array(0.0, np.float32), "lo"), (np.array(6.0, np.float32), "hi")]
    elif relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    inits = [(wt, "w"), (b, "b")] if bias else [(wt, "w")]
    return _model(nodes, {"x": [1, c_in, h, w]}, {"y": [1, c_out, oh, ow]}, inits, consts=consts)


def _conv_add(c_in, c_out, hw, seed=0, relu=True):
    """resnet50's bottleneck expand: 1x1 Conv (+ bias) + the residual Add + ReLU on [1, c_in, hw, hw]
    (the residual ``r`` an input, [1, c_out, hw, hw]; ``relu=False``: no ReLU, mobilenet_v2's projections)."""
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((c_out, c_in, 1, 1)) / np.sqrt(c_in)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32) * 0.1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "r"], ["s" if relu else "y"])] + (
                [helper.make_node("Relu", ["s"], ["y"])] if relu else [])
    return _model(nodes, {"x": [1, c_in, hw, hw], "r": [1, c_out, hw, hw]}, {"y": [1, c_out, hw, hw]},
                  [(wt, "w"), (b, "b")])


def _dw(c, hw, stride):
    """mobilenet_v2's depthwise 3x3 (pad 1) + bias + ReLU6."""
    return _conv(c, c, (hw, hw), (3, 3), (stride, stride), pads=(1, 1, 1, 1), group=c, relu6=True)


def _conv1d(c_in, c_out, length, k, stride, gelu=True, seed=0):
    """Whisper's front end: Conv1d(k, stride, pad 1) + GELU (erf form)."""
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((c_out, c_in, k)) / np.sqrt(c_in * k)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32) * 0.1
    out = (length + 2 - k) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k], strides=[stride], pads=[1, 1])]
    nodes += _gelu("c", "y") if gelu else [helper.make_node("Identity", ["c"], ["y"])]
    return _model(nodes, {"x": [1, c_in, length]}, {"y": [1, c_out, out]}, [(wt, "w"), (b, "b")],
                  consts=[(np.array(np.sqrt(0.5), np.float32), "rsqrt2"), (np.array(0.5, np.float32), "half"),
                          (np.array(1.0, np.float32), "one")] if gelu else [])


def _gelu(x, y):
    return [helper.make_node("Mul", [x, "rsqrt2"], [x + "_s"]), helper.make_node("Erf", [x + "_s"], [x + "_e"]),
            helper.make_node("Add", [x + "_e", "one"], [x + "_p"]), helper.make_node("Mul", [x, x + "_p"], [x + "_m"]),
            helper.make_node("Mul", [x + "_m", "half"], [y])]


def _vit_patch(seed=0):
    """ViT-B/16's patch embedding as torch exports it: Conv 3->768 k16 s16, Reshape, Transpose."""
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((768, 3, 16, 16)) / np.sqrt(768)).astype(np.float32)
    b = rng.standard_normal(768).astype(np.float32) * 0.1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[16, 16], strides=[16, 16]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])]
    return _model(nodes, {"x": [1, 3, 224, 224]}, {"y": [1, 196, 768]},
                  [(wt, "w"), (b, "b"), (np.array([1, 768, 196], np.int64), "shape")])


def _gelu_tanh(x, y):
    """GPT-2's gelu_new as exported: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 Pow(x, 3))))``."""
    return [helper.make_node("Pow", [x, "three"], [x + "_c"]), helper.make_node("Mul", [x + "_c", "gelu_c"], [x + "_k"]),
            helper.make_node("Add", [x, x + "_k"], [x + "_i"]), helper.make_node("Mul", [x + "_i", "s2pi"], [x + "_s"]),
            helper.make_node("Tanh", [x + "_s"], [x + "_t"]), helper.make_node("Add", [x + "_t", "one"], [x + "_p"]),
            helper.make_node("Mul", [x, "half"], [x + "_h"]), helper.make_node("Mul", [x + "_h", x + "_p"], [y])]


def _quick_gelu(x, y):
    """CLIP's quick_gelu as exported: ``x * sigmoid(1.702 x)``."""
    return [helper.make_node("Mul", [x, "q"], [x + "_q"]), helper.make_node("Sigmoid", [x + "_q"], [x + "_g"]),
            helper.make_node("Mul", [x, x + "_g"], [y])]


def _linear(m, k, n, gelu=False, seed=0):
    """``x[1, m, k] @ W[k, n] + b`` (+ GELU: True or ``"erf"`` BERT's, ``"tanh"`` GPT-2's gelu_new,
    ``"quick"`` CLIP's): a transformer's projections."""
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) * 0.1
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["a" if gelu else "y"])]
    consts = []
    if gelu == "tanh":
        nodes += _gelu_tanh("a", "y")
        consts = [(np.array(3.0, np.float32), "three"), (np.array(0.044715, np.float32), "gelu_c"),
                  (np.array(np.sqrt(2.0 / np.pi), np.float32), "s2pi"), (np.array(0.5, np.float32), "half"),
                  (np.array(1.0, np.float32), "one")]
    elif gelu == "quick":
        nodes += _quick_gelu("a", "y")
        consts = [(np.array(1.702, np.float32), "q")]
    elif gelu:
        nodes += _gelu("a", "y")
        consts = [(np.array(np.sqrt(0.5), np.float32), "rsqrt2"), (np.array(0.5, np.float32), "half"),
                  (np.array(1.0, np.float32), "one")]
    return _model(nodes, {"x": [1, m, k]}, {"y": [1, m, n]}, [(wt, "w"), (b, "b")], consts=consts)


def _attention(heads, seq, dim):
    """softmax(Q @ K^T / sqrt(d)) @ V on [1, heads, seq, dim] inputs (the two batch matmuls)."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["ss"]),
             helper.make_node("Softmax", ["ss"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    shp = [1, heads, seq, dim]
    return _model(nodes, {"q": shp, "k": shp, "v": shp}, {"y": shp},
                  [(np.array(1 / np.sqrt(dim), np.float32), "scale")])


def _softmax(heads, seq):
    """The attention softmax alone: Softmax over the last axis of [1, heads, seq, seq]."""
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=-1)]
    shp = [1, heads, seq, seq]
    return _model(nodes, {"x": shp}, {"y": shp}, [])


def _split_heads(windows, tokens, parts, heads, head_dim):
    """Swin's window QKV split-heads copy: ``[windows, tokens, parts*heads*head_dim]``
    reshaped to ``[windows, tokens, parts, heads, head_dim]`` and transposed
    ``(2, 0, 3, 1, 4)``: each head's ``head_dim`` floats of a token row moved to
    ``[part, window, head, token]``.  The windows count is fixed in the Reshape's shape,
    so the row does not take ``--batch`` (``swin_split_b8`` is batch 8's 512 windows)."""
    shape = np.array([windows, tokens, parts, heads, head_dim], np.int64)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[2, 0, 3, 1, 4])]
    return _model(nodes, {"x": [windows, tokens, parts * heads * head_dim]},
                  {"y": [parts, windows, heads, tokens, head_dim]}, [], [(shape, "shape")])


def _layer_norm(m, d, seed=0):
    """A transformer's residual add + LayerNormalization over ``d`` on [1, m, d] (opset 17, as
    torch exports ``nn.LayerNorm``)."""
    rng = np.random.default_rng(seed)
    g = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    b = (0.1 * rng.standard_normal(d)).astype(np.float32)
    nodes = [helper.make_node("Add", ["x", "r"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
    return _model(nodes, {"x": [1, m, d], "r": [1, m, d]}, {"y": [1, m, d]}, [(g, "g"), (b, "b")])


def _avgpool(c, hw, include_pad=0):
    """inception's branch pool: AveragePool 3x3 s1 pad 1; ``include_pad=1``: ``count_include_pad=1``, as
    torch.onnx exports ``F.avg_pool2d``'s default (the corpus's inception_v3); 0: ONNX's default."""
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                              count_include_pad=include_pad)]
    return _model(nodes, {"x": [1, c, hw, hw]}, {"y": [1, c, hw, hw]}, [])


def _avgpool2(c, hw):
    """densenet121's transition pool: AveragePool 2x2 stride 2, no padding, on [1, c, hw, hw]."""
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    return _model(nodes, {"x": [1, c, hw, hw]}, {"y": [1, c, hw // 2, hw // 2]}, [])


def _maxpool(c, hw, stride=2, pad=0, ceil=0):
    """MaxPool 3x3 (inception's: stride 2, no padding; resnet50's / densenet121's stem: pad 1;
    googlenet's branch pools: stride 1, pad 1; googlenet's stride-2 ones: ``ceil_mode=1``)."""
    span = hw + 2 * pad - 3
    out = (-(-span // stride) if ceil else span // stride) + 1
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[stride, stride], pads=[pad] * 4,
                              ceil_mode=ceil)]
    return _model(nodes, {"x": [1, c, hw, hw]}, {"y": [1, c, out, out]}, [])


def _dense_input(c0, n, hw, growth=32, seed=0):
    """densenet121's pre-activation on a dense layer's input: Concat of the block input
    (``c0`` channels) and ``n`` earlier layers' ``growth`` channels -> BatchNormalization
    -> ReLU (torch.onnx keeps this norm: no convolution before it to fold it into)."""
    rng = np.random.default_rng(seed)
    c = c0 + growth * n
    names = ["x"] + [f"f{i}" for i in range(n)]
    inputs = {"x": [1, c0, hw, hw], **{f"f{i}": [1, growth, hw, hw] for i in range(n)}}
    stats = [(rng.uniform(0.5, 1.5, c).astype(np.float32), "s"), ((rng.standard_normal(c) * 0.1).astype(np.float32), "b"),
             ((rng.standard_normal(c) * 0.1).astype(np.float32), "m"), (rng.uniform(0.5, 1.5, c).astype(np.float32), "v")]
    nodes = [helper.make_node("Concat", names, ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "s", "b", "m", "v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["y"])]
    return _model(nodes, inputs, {"y": [1, c, hw, hw]}, stats)


def _se(c, hw, squeeze, hard=True, seed=0):
    """Squeeze-excite as the zoo / torchvision write it: GlobalAveragePool -> 1x1 conv ->
    ReLU -> 1x1 conv -> HardSigmoid (MobileNetV3; ``hard=False``: Sigmoid, EfficientNet)
    -> Mul(gate, x) on a [1, c, hw, hw] input."""
    rng = np.random.default_rng(seed)
    inits = [((rng.standard_normal(shape) * scale).astype(np.float32), name)
             for name, shape, scale in [("w1", (squeeze, c, 1, 1), 2 / np.sqrt(c)), ("b1", (squeeze,), 0.5),
                                        ("w2", (c, squeeze, 1, 1), 2 / np.sqrt(squeeze)), ("b2", (c,), 0.5)]]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Conv", ["p", "w1", "b1"], ["f1"]),
             helper.make_node("Relu", ["f1"], ["a1"]), helper.make_node("Conv", ["a1", "w2", "b2"], ["f2"]),
             helper.make_node("HardSigmoid", ["f2"], ["g"], alpha=1.0 / 6, beta=0.5) if hard
             else helper.make_node("Sigmoid", ["f2"], ["g"]),
             helper.make_node("Mul", ["g", "x"], ["y"])]
    return _model(nodes, {"x": [1, c, hw, hw]}, {"y": [1, c, hw, hw]}, inits)


def _bn_relu(c, hw, seed=0):
    """BatchNormalization + ReLU on a [1, c, hw, hw] input (densenet121's norm1 of a dense
    block's first layer, the transition's pooled output: no Concat before it)."""
    rng = np.random.default_rng(seed)
    arrays = [(rng.uniform(0.5, 1.5, c), "s"), (rng.standard_normal(c) * 0.1, "b"),
              (rng.standard_normal(c) * 0.1, "m"), (rng.uniform(0.5, 1.5, c), "v")]
    inits = [(a.astype(np.float32), n) for a, n in arrays]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-5),
             helper.make_node("Relu", ["bn"], ["y"])]
    return _model(nodes, {"x": [1, c, hw, hw]}, {"y": [1, c, hw, hw]}, inits)


def _model(nodes, inputs, outputs, inits, consts=()):
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(a, n) for a, n in list(inits) + list(consts)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


LAYERS = {
    # ViT-B/16
    "vit_patch": lambda: _vit_patch(),
    "vit_qkv": lambda: _linear(197, 768, 2304),
    "vit_proj": lambda: _linear(197, 768, 768),
    "vit_fc1": lambda: _linear(197, 768, 3072, gelu=True),
    "vit_fc2": lambda: _linear(197, 3072, 768),
    "vit_attn": lambda: _attention(12, 197, 64),
    "vit_softmax": lambda: _softmax(12, 197),
    # inception_v3 (torchvision, 299x299)
    "inc_stem1": lambda: _conv(3, 32, (299, 299), (3, 3), (2, 2)),
    "inc_stem2": lambda: _conv(32, 32, (149, 149), (3, 3)),
    "inc_stem3": lambda: _conv(32, 64, (147, 147), (3, 3), pads=(1, 1, 1, 1)),
    "inc_stem4": lambda: _conv(64, 80, (73, 73), (1, 1)),
    "inc_stem5": lambda: _conv(80, 192, (73, 73), (3, 3)),
    "inc_5x5": lambda: _conv(48, 64, (35, 35), (5, 5), pads=(2, 2, 2, 2)),
    "inc_3x3_35": lambda: _conv(64, 96, (35, 35), (3, 3), pads=(1, 1, 1, 1)),
    "inc_3x3_96": lambda: _conv(96, 96, (35, 35), (3, 3), pads=(1, 1, 1, 1)),
    "inc_b_s2": lambda: _conv(288, 384, (35, 35), (3, 3), (2, 2)),
    "inc_1x7": lambda: _conv(128, 128, (17, 17), (1, 7), pads=(0, 3, 0, 3)),
    "inc_7x1": lambda: _conv(128, 192, (17, 17), (7, 1), pads=(3, 0, 3, 0)),
    "inc_1x7_192": lambda: _conv(192, 192, (17, 17), (1, 7), pads=(0, 3, 0, 3)),
    "inc_7x1_192": lambda: _conv(192, 192, (17, 17), (7, 1), pads=(3, 0, 3, 0)),
    "inc_d_s2": lambda: _conv(192, 320, (17, 17), (3, 3), (2, 2)),
    "inc_1x3": lambda: _conv(384, 384, (8, 8), (1, 3), pads=(0, 1, 0, 1)),
    "inc_3x1": lambda: _conv(384, 384, (8, 8), (3, 1), pads=(1, 0, 1, 0)),
    "inc_1x1_8": lambda: _conv(2048, 320, (8, 8), (1, 1)),
    "inc_1x1_35": lambda: _conv(288, 64, (35, 35), (1, 1)),  # Mixed_5d's branch 1x1s
    "inc_1x1_35b": lambda: _conv(192, 64, (35, 35), (1, 1)),  # Mixed_5b's
    "inc_1x1_35c": lambda: _conv(256, 48, (35, 35), (1, 1)),  # Mixed_5c's 5x5 branch
    "inc_1x1_17": lambda: _conv(768, 192, (17, 17), (1, 1)),  # Mixed_6b-e's
    "gn_1x1_28": lambda: _conv(256, 128, (28, 28), (1, 1)),  # googlenet 3b's branch 1x1
    "gn_1x1_14": lambda: _conv(480, 192, (14, 14), (1, 1)),  # googlenet 4a's
    "inc_avgpool_35": lambda: _avgpool(192, 35),
    "inc_avgpool_17": lambda: _avgpool(768, 17),
    "inc_avgpool_35i": lambda: _avgpool(192, 35, include_pad=1),  # as exported: Mixed_5b's
    "inc_avgpool_35j": lambda: _avgpool(288, 35, include_pad=1),  # Mixed_5d's, 6a's input
    "inc_avgpool_17i": lambda: _avgpool(768, 17, include_pad=1),  # Mixed_6b-e's
    "inc_avgpool_8i": lambda: _avgpool(1280, 8, include_pad=1),  # Mixed_7b's
    "inc_avgpool_8j": lambda: _avgpool(2048, 8, include_pad=1),  # Mixed_7c's
    "inc_maxpool_147": lambda: _maxpool(64, 147),
    "inc_maxpool_71": lambda: _maxpool(192, 71),  # inception's second stem pool
    "inc_maxpool_35": lambda: _maxpool(288, 35),  # Mixed_6a's
    "inc_maxpool_17": lambda: _maxpool(768, 17),  # Mixed_7a's
    "stem_maxpool_112": lambda: _maxpool(64, 112, pad=1),  # resnet50's / densenet121's
    "gn_maxpool_28": lambda: _maxpool(192, 28, stride=1, pad=1),  # googlenet 3a's branch pool
    "gn_maxpool_14": lambda: _maxpool(480, 14, stride=1, pad=1),  # 4a's
    "gn_maxpool_112c": lambda: _maxpool(64, 112, ceil=1),  # googlenet's stem pools (ceil_mode)
    "gn_maxpool_56c": lambda: _maxpool(192, 56, ceil=1),
    "gn_maxpool_28c": lambda: _maxpool(480, 28, ceil=1),
    # resnet50 (torchvision v1.5: stride in the 3x3), BN folded
    "r50_stem": lambda: _conv(3, 64, (224, 224), (7, 7), (2, 2), pads=(3, 3, 3, 3)),
    "r50_3x3_56": lambda: _conv(64, 64, (56, 56), (3, 3), pads=(1, 1, 1, 1)),
    "r50_3x3_28": lambda: _conv(128, 128, (28, 28), (3, 3), pads=(1, 1, 1, 1)),
    "r50_3x3_14": lambda: _conv(256, 256, (14, 14), (3, 3), pads=(1, 1, 1, 1)),
    "r50_3x3_7": lambda: _conv(512, 512, (7, 7), (3, 3), pads=(1, 1, 1, 1)),
    "r50_3x3_s2_28": lambda: _conv(128, 128, (56, 56), (3, 3), (2, 2), pads=(1, 1, 1, 1)),
    "r50_1x1_56a": lambda: _conv(64, 256, (56, 56), (1, 1), relu=False),
    "r50_1x1_56b": lambda: _conv(256, 64, (56, 56), (1, 1)),
    "r50_1x1_56c": lambda: _conv(256, 128, (56, 56), (1, 1)),
    "r50_1x1_28": lambda: _conv(512, 128, (28, 28), (1, 1)),
    "r50_1x1_14": lambda: _conv(1024, 256, (14, 14), (1, 1)),
    "r50_1x1_7": lambda: _conv(2048, 512, (7, 7), (1, 1)),
    "r50_1x1_7e": lambda: _conv(512, 2048, (7, 7), (1, 1), relu=False),  # expand (the residual add aside)
    "r50_1x1_14e": lambda: _conv(256, 1024, (14, 14), (1, 1), relu=False),
    "r50_ds_7": lambda: _conv(1024, 2048, (14, 14), (1, 1), (2, 2), relu=False),  # downsample, stride 2
    "r50_ds_14": lambda: _conv(512, 1024, (28, 28), (1, 1), (2, 2), relu=False),
    "r50_ds_28": lambda: _conv(256, 512, (56, 56), (1, 1), (2, 2), relu=False),
    # the rest of resnet50's distinct convs (with the rows above: every one of them)
    "r50_3x3_s2_14": lambda: _conv(256, 256, (28, 28), (3, 3), (2, 2), pads=(1, 1, 1, 1)),
    "r50_3x3_s2_7": lambda: _conv(512, 512, (14, 14), (3, 3), (2, 2), pads=(1, 1, 1, 1)),
    "r50_1x1_56d": lambda: _conv(64, 64, (56, 56), (1, 1)),
    "r50_1x1_28b": lambda: _conv(512, 256, (28, 28), (1, 1)),
    "r50_1x1_28e": lambda: _conv(128, 512, (28, 28), (1, 1), relu=False),
    "r50_1x1_14b": lambda: _conv(1024, 512, (14, 14), (1, 1)),
    "r50_1x1_7add": lambda: _conv_add(512, 2048, 7),  # the expand with its residual add + ReLU, as in the model
    "r50_1x1_14add": lambda: _conv_add(256, 1024, 14),
    "r50_1x1_28add": lambda: _conv_add(128, 512, 28),
    "r50_1x1_56add": lambda: _conv_add(64, 256, 56),
    # resnet18's downsamples (1x1 stride 2, bias, no ReLU), shorter sums than resnet50's
    "r18_ds_28": lambda: _conv(64, 128, (56, 56), (1, 1), (2, 2), relu=False),
    "r18_ds_14": lambda: _conv(128, 256, (28, 28), (1, 1), (2, 2), relu=False),
    "r18_ds_7": lambda: _conv(256, 512, (14, 14), (1, 1), (2, 2), relu=False),
    # densenet121: 1x1 bottlenecks on 128 + 32 k input channels, 3x3 128 -> 32
    "dn_1x1_56": lambda: _conv(192, 128, (56, 56), (1, 1)),  # block 1's bottlenecks (64 + 32 k inputs)
    "dn_1x1_56b": lambda: _conv(224, 128, (56, 56), (1, 1)),
    "dn_1x1_28": lambda: _conv(416, 128, (28, 28), (1, 1)),
    "dn_1x1_14": lambda: _conv(544, 128, (14, 14), (1, 1)),
    "dn_1x1_14b": lambda: _conv(608, 128, (14, 14), (1, 1)),
    "dn_1x1_7": lambda: _conv(992, 128, (7, 7), (1, 1)),
    "dn_trans_56": lambda: _conv(256, 128, (56, 56), (1, 1), relu=False, bias=False),  # transitions (bias-free in the model)
    "dn_trans_28": lambda: _conv(512, 256, (28, 28), (1, 1), relu=False, bias=False),
    "dn_trans_14": lambda: _conv(1024, 512, (14, 14), (1, 1), relu=False, bias=False),
    "dn_pool_56": lambda: _avgpool2(128, 56),  # the transitions' 2x2 average pools
    "dn_pool_28": lambda: _avgpool2(256, 28),
    "dn_pool_14": lambda: _avgpool2(512, 14),
    "dn_cat_56": lambda: _dense_input(64, 5, 56),     # block 1's last layer: 6 inputs, 224 ch
    "dn_cat_28": lambda: _dense_input(128, 11, 28),   # block 2's last: 12 inputs, 480 ch
    "dn_cat_14": lambda: _dense_input(256, 23, 14),   # block 3's last: 24 inputs, 992 ch
    "dn_cat_7": lambda: _dense_input(512, 15, 7),     # block 4's last: 16 inputs, 992 ch
    "dn_3x3_56": lambda: _conv(128, 32, (56, 56), (3, 3), pads=(1, 1, 1, 1)),
    "dn_3x3_28": lambda: _conv(128, 32, (28, 28), (3, 3), pads=(1, 1, 1, 1)),
    "dn_3x3_14": lambda: _conv(128, 32, (14, 14), (3, 3), pads=(1, 1, 1, 1)),
    "dn_3x3_7": lambda: _conv(128, 32, (7, 7), (3, 3), pads=(1, 1, 1, 1)),
    "dn_grow_56": lambda: _conv(128, 32, (56, 56), (3, 3), pads=(1, 1, 1, 1), relu=False, bias=False),  # as in the model
    "dn_grow_28": lambda: _conv(128, 32, (28, 28), (3, 3), pads=(1, 1, 1, 1), relu=False, bias=False),
    # mobilenet_v2: depthwise 3x3 + ReLU6, 1x1 expand (+ ReLU6) / project
    "mb_dw_112": lambda: _dw(32, 112, 1),
    "mb_dw_112s2": lambda: _dw(96, 112, 2),
    "mb_dw_56": lambda: _dw(144, 56, 1),
    "mb_dw_56s2": lambda: _dw(144, 56, 2),
    "mb_dw_28": lambda: _dw(192, 28, 1),
    "mb_dw_14": lambda: _dw(384, 14, 1),
    "mb_dw_14s2": lambda: _dw(576, 14, 2),
    "mb_dw_7": lambda: _dw(960, 7, 1),
    "mb_exp_56": lambda: _conv(24, 144, (56, 56), (1, 1), relu6=True),
    "mb_proj_56": lambda: _conv(144, 24, (56, 56), (1, 1), relu=False),
    "mb_exp_14": lambda: _conv(96, 576, (14, 14), (1, 1), relu6=True),
    "mb_proj_7": lambda: _conv(960, 320, (7, 7), (1, 1), relu=False),
    "mb_proj_14": lambda: _conv(384, 64, (14, 14), (1, 1), relu=False),
    "mb_proj_14add": lambda: _conv_add(576, 96, 14, relu=False),  # the projection + its residual
    "mb_proj_7add": lambda: _conv_add(960, 160, 7, relu=False),
    "mn3_proj_112add": lambda: _conv_add(16, 16, 112, relu=False),  # mobilenet_v3_large features.1 proj + residual
    "mn3_proj_56add": lambda: _conv_add(72, 24, 56, relu=False),  # features.3
    "mn3_dw_112s2": lambda: _conv(64, 64, (112, 112), (3, 3), (2, 2), pads=(1, 1, 1, 1), group=64),  # features.2
    "mn3_dw5_56s2": lambda: _conv(72, 72, (56, 56), (5, 5), (2, 2), pads=(2, 2, 2, 2), group=72),  # features.4
    "mn3_dw_28s2": lambda: _conv(240, 240, (28, 28), (3, 3), (2, 2), pads=(1, 1, 1, 1), group=240),  # features.7
    "mn3_dw5_28": lambda: _conv(120, 120, (28, 28), (5, 5), pads=(2, 2, 2, 2), group=120),  # features.5/6
    "eff_dw5_28": lambda: _conv(240, 240, (28, 28), (5, 5), pads=(2, 2, 2, 2), group=240, relu=False),
    "mn3_exp_14": lambda: _conv(112, 672, (14, 14), (1, 1)),  # features.11/12 expand (hard-swish in the model)
    "mb_exp_14b": lambda: _conv(64, 384, (14, 14), (1, 1), relu6=True),  # mobilenet_v2's 64->384 expand
    "eff_dw5_56s2": lambda: _conv(144, 144, (56, 56), (5, 5), (2, 2), pads=(2, 2, 2, 2), group=144, relu=False),
    "mb_stem": lambda: _conv(3, 32, (224, 224), (3, 3), (2, 2), pads=(1, 1, 1, 1), relu6=True),
    "mb_proj_112": lambda: _conv(32, 16, (112, 112), (1, 1), relu=False),
    "mb_exp_112": lambda: _conv(16, 96, (112, 112), (1, 1), relu6=True),
    "mn3_exp_112": lambda: _conv(16, 64, (112, 112), (1, 1)),  # mobilenet_v3_large features.2 expand + ReLU
    "mb_exp_7": lambda: _conv(160, 960, (7, 7), (1, 1), relu6=True),
    "mb_last": lambda: _conv(320, 1280, (7, 7), (1, 1), relu6=True),
    # squeeze-excite blocks: mobilenet_v3_large (hard-sigmoid) and efficientnet_b0 (sigmoid)
    "mn3_se_480_14": lambda: _se(480, 14, 120),
    "mn3_se_672_14": lambda: _se(672, 14, 168),
    "mn3_se_960_7": lambda: _se(960, 7, 240),
    "mn3_se_120_28": lambda: _se(120, 28, 32),
    "eff_se_672_14": lambda: _se(672, 14, 28, hard=False),
    "eff_se_1152_7": lambda: _se(1152, 7, 48, hard=False),
    "eff_se_480_14": lambda: _se(480, 14, 20, hard=False),
    # densenet121's BN + ReLU where no Concat precedes it (dense blocks 3 and 4's first norm1)
    "dn_bn_14": lambda: _bn_relu(256, 14),
    "dn_bn_7": lambda: _bn_relu(512, 7),
    # 5x5 / 7x7 depthwise: mobilenet_v3_large's 120x28x28 (+ ReLU), convnext_tiny's first stage
    "mn3_dw5_28": lambda: _conv(120, 120, (28, 28), (5, 5), pads=(2, 2, 2, 2), group=120),
    "cnx_dw7_56": lambda: _conv(96, 96, (56, 56), (7, 7), pads=(3, 3, 3, 3), group=96, relu=False),
    # whisper encoder front end (tiny: 80 mels -> 384, 3000 frames)
    "whisper_conv1": lambda: _conv1d(80, 384, 3000, 3, 1),
    "whisper_conv2": lambda: _conv1d(384, 384, 3000, 3, 2),
    "whisper_attn": lambda: _attention(6, 1500, 64),
    "whisper_softmax": lambda: _softmax(6, 1500),
    "whisper_proj": lambda: _linear(1500, 384, 384),  # q, k, v, out projections (d_model 384)
    "whisper_fc1": lambda: _linear(1500, 384, 1536, gelu=True),
    "whisper_fc2": lambda: _linear(1500, 1536, 384),
    "whisper_ln": lambda: _layer_norm(1500, 384),
    # distilbert / BERT-base at seq 128
    "bert_proj": lambda: _linear(128, 768, 768),
    "bert_fc1": lambda: _linear(128, 768, 3072, gelu=True),
    "bert_fc2": lambda: _linear(128, 3072, 768),
    "bert_ln": lambda: _layer_norm(128, 768),
    "bert_attn": lambda: _attention(12, 128, 64),
    # Swin-T stage 1's window QKV split-heads copy (7x7 windows, 3 heads of 32): batch 1's
    # 64 windows and batch 8's 512 (no --batch: the windows are in the Reshape's shape)
    "swin_split": lambda: _split_heads(64, 49, 3, 3, 32),
    "swin_split_b8": lambda: _split_heads(512, 49, 3, 3, 32),
    # GPT-2 (seq 128) and CLIP text (seq 77, d 512) MLPs: gelu_new (tanh, Pow) and quick_gelu epilogues
    "gpt2_fc1": lambda: _linear(128, 768, 3072, gelu="tanh"),
    "gpt2_fc1_plain": lambda: _linear(128, 768, 3072),
    "clip_fc1": lambda: _linear(77, 512, 2048, gelu="quick"),
    "clip_fc1_tanh": lambda: _linear(77, 512, 2048, gelu="tanh"),
    "clip_fc1_plain": lambda: _linear(77, 512, 2048),
    "clip_fc2": lambda: _linear(77, 2048, 512),
    "clip_qkv": lambda: _linear(77, 512, 1536),
    # rows of whole vectors, for comparison: BERT-base's attention softmax, 256-wide rows
    "bert_softmax": lambda: _softmax(12, 128),
    "softmax_256": lambda: _softmax(12, 256),
}


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of a :data:`LAYERS` model with the leading dim of every graph input and
    output set to ``batch`` (the convolution and pooling layers: their batch dim; a
    layer with a Reshape to a constant shape, ``vit_patch``, does not take a batch).
    ``model`` is left as it was."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in list(out.graph.input) + list(out.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    return out


BLOCK = 5
"""Runs of one side in a turn: ORT's pool threads spin for a while after a run, and the
first call after a switch paid for the other side's spinning (one call of each in turn
measured ViT's attention block at 1.9-3.2 ms, its kernels alone 0.9).  Each turn now
starts after :func:`hetpart.bench.settle.settle` (the other side's threads quiet)."""


def interleaved(model, threads: int, runs: int = 30, log: SettleLog | None = None) -> tuple[float, float]:
    """``(hetpart_ms, ort_ms)``: the least of ``runs`` whole runs of ``model`` each, both
    on ``threads`` threads, in turns of :data:`BLOCK` calls (so a neighbour's load hits
    both alike; the least is the run it hit least), each turn started once the process's
    other threads are quiet (:func:`~hetpart.bench.settle.settle`, its waits appended
    to ``log``): at 16 threads on 16 cores, turns right after ORT's measured ORT's
    spinning workers, not hetpart (layers of 0.05-0.4 ms at 2-7 ms).  hetpart: the op
    graph's module built by :func:`hetpart.kernels.build` (as the compiler builds a CPU
    partition) in a Relax VM on a leased thread whose TVM pool has ``threads`` threads;
    ONNX Runtime: :func:`hetpart.bench.peers.ort_session`."""
    import time

    import tvm
    from tvm import relax

    from .. import kernels, load
    from ..models import example_inputs
    from ..runtime.threads import call_leased
    from ..targets import cpu_tvm_target
    from .peers import ort_session

    feeds = example_inputs(model, seed=0)
    executable = kernels.build(load(model).module, cpu_tvm_target())
    session = ort_session(model, threads=threads)
    log = SettleLog() if log is None else log
    def turn(fn, times):
        log()
        for _ in range(BLOCK):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)

    def body():
        vm = relax.VirtualMachine(executable, tvm.cpu())
        args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]
        vm["main"](*args)
        session.run(None, feeds)
        h, o = [], []
        for _ in range(-(-runs // BLOCK)):
            turn(lambda: vm["main"](*args), h)
            turn(lambda: session.run(None, feeds), o)
        return min(h) * 1e3, min(o) * 1e3

    return call_leased("cpu layers", body, pool=threads, role="cpu")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("layers", nargs="*", help="layer names (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--batch", type=int, default=1, help="the layers' batch (with_batch)")
    p.add_argument("--kernels", action="store_true",
                   help="per-kernel medians (hetpart.bench.kernel_table) instead of interleaved whole runs")
    p.add_argument("--save", metavar="DIR", help="write <layer>.onnx files to DIR instead of timing")
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    if a.list:
        print("\n".join(LAYERS))
        return 0
    unknown = [n for n in a.layers if n not in LAYERS]
    if unknown:
        print(f"unknown layer(s) {', '.join(unknown)}; --list shows them", file=sys.stderr)
        return 1
    if a.save:
        os.makedirs(a.save, exist_ok=True)
    else:
        print(f"{'layer':<18}{'hetpart ms':>12}{'ORT ms':>10}{'ratio':>8}"
              + ("  slowest hetpart kernel" if a.kernels else f"{'settle ms':>10}   (least of {a.runs} interleaved runs, "
                                                            f"{a.threads} threads; settle: longest wait for a quiet turn)"))
    log = SettleLog()
    for name in a.layers or LAYERS:
        m = LAYERS[name]() if a.batch == 1 else with_batch(LAYERS[name](), a.batch)
        onnx.checker.check_model(m)
        if a.save:
            onnx.save(m, os.path.join(a.save, f"{name}.onnx"))
            continue
        if not a.kernels:
            waits = len(log.waits)
            h, o = interleaved(m, a.threads, a.runs, log)
            longest = max(w.waited_s for w in log.waits[waits:]) * 1e3
            busy = sum(not w.quiet for w in log.waits[waits:])
            print(f"{name:<18}{h:12.3f}{o:10.3f}{h / o:8.2f}{longest:10.0f}" + (f"  {busy} turn(s) not quiet" if busy else ""),
                  flush=True)
            continue
        from ..models import example_inputs
        from .kernel_table import measure

        t = measure(m, example_inputs(m, seed=0), a.threads, a.runs)
        h, o = sum(us for _, us in t.hetpart) / 1e3, sum(us for _, us in t.ort) / 1e3
        print(f"{name:<18}{h:12.3f}{o:10.3f}{h / o:8.2f}  {t.hetpart[0][0][:40]} {t.hetpart[0][1]:.1f} us", flush=True)
    if log.waits:
        print(log.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
