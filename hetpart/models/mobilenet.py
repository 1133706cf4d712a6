"""MobileNetV3- and EfficientNet-style networks: inverted residual blocks with
depthwise convolutions and squeeze-excite, as torchvision's opset-17 exports spell
them (batch norms folded into the convolutions' biases, as ``torch.onnx.export``
does in eval mode).

A block: 1x1 expansion conv (grouped when ``expand_groups`` > 1) + activation ->
kxk depthwise conv (``group`` = channels, stride 1 or 2) + activation ->
squeeze-excite (``GlobalAveragePool`` -> 1x1 conv -> ReLU/SiLU -> 1x1 conv ->
``HardSigmoid``/``Sigmoid`` -> ``Mul``) -> 1x1 projection conv, plus the input when
stride is 1 and the widths match.  Activations: ``mobilenet`` uses ``HardSwish`` and
ReLU, ``efficientnet`` SiLU (``x * Sigmoid(x)``).  Head: 1x1 conv + activation ->
``GlobalAveragePool`` -> ``Flatten`` -> ``Gemm`` (+ ``HardSwish`` -> ``Gemm`` for
MobileNetV3).

Input ``input`` float32 [batch, 3, image, image]; output ``logits`` [batch, classes].

The full variants follow MobileNetV3-Large and EfficientNet-B0's block tables.  The
small variants keep one block of each kind (3x3 and 5x5 depthwise, strides 1 and 2,
with and without squeeze-excite) at few channels on 32x32 images; MobileNet's small
variant has a grouped (not depthwise) expansion conv, which the full one lacks, so CI
covers grouped convolutions too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register



@dataclass(frozen=True)
class MobileNetConfig:
    image: int = 224
    stem: int = 16
    # Flattened block table: 6 ints per block (kernel, expanded, out, se, act code, stride),
    # act code 0 relu, 1 hswish, 2 silu.
    blocks: tuple = ()
    head: int = 960
    hidden: int = 1280  # 0: no hidden FC layer (EfficientNet)
    classes: int = 1000
    act: int = 1  # the stem's and head's activation code
    expand_groups: int = 1


def _table(*rows) -> tuple:
    return tuple(v for row in rows for v in row)


R, H, S = 0, 1, 2
# torchvision mobilenet_v3_large.
V3_LARGE = _table(
    (3, 16, 16, 0, R, 1), (3, 64, 24, 0, R, 2), (3, 72, 24, 0, R, 1), (5, 72, 40, 1, R, 2),
    (5, 120, 40, 1, R, 1), (5, 120, 40, 1, R, 1), (3, 240, 80, 0, H, 2), (3, 200, 80, 0, H, 1),
    (3, 184, 80, 0, H, 1), (3, 184, 80, 0, H, 1), (3, 480, 112, 1, H, 1), (3, 672, 112, 1, H, 1),
    (5, 672, 160, 1, H, 2), (5, 960, 160, 1, H, 1), (5, 960, 160, 1, H, 1),
)
# torchvision efficientnet_b0 (expand ratio 1 in the first stage, 6 after).
B0 = _table(
    (3, 32, 16, 1, S, 1), (3, 96, 24, 1, S, 2), (3, 144, 24, 1, S, 1), (5, 144, 40, 1, S, 2),
    (5, 240, 40, 1, S, 1), (3, 240, 80, 1, S, 2), (3, 480, 80, 1, S, 1), (3, 480, 80, 1, S, 1),
    (5, 480, 112, 1, S, 1), (5, 672, 112, 1, S, 1), (5, 672, 112, 1, S, 1), (5, 672, 192, 1, S, 2),
    (5, 1152, 192, 1, S, 1), (5, 1152, 192, 1, S, 1), (5, 1152, 192, 1, S, 1), (3, 1152, 320, 1, S, 1),
)

MOBILENET_FULL = MobileNetConfig(blocks=V3_LARGE)
MOBILENET_SMALL = MobileNetConfig(
    image=32, stem=8, head=48, hidden=64, classes=10, expand_groups=2,
    blocks=_table((3, 8, 8, 0, R, 1), (3, 32, 16, 0, R, 2), (5, 48, 16, 1, H, 1), (3, 64, 24, 1, H, 2)),
)
EFFICIENTNET_FULL = MobileNetConfig(stem=32, blocks=B0, head=1280, hidden=0, act=S)
EFFICIENTNET_SMALL = MobileNetConfig(
    image=32, stem=8, head=48, hidden=0, classes=10, act=S,
    blocks=_table((3, 8, 8, 1, S, 1), (3, 32, 16, 1, S, 2), (5, 48, 16, 1, S, 1), (5, 64, 24, 1, S, 2)),
)


@register("mobilenet", "MobileNetV3-Large-style: depthwise convs, hard-swish, squeeze-excite "
          "with hard-sigmoid", full=MOBILENET_FULL, small=MOBILENET_SMALL)
def build_mobilenet(cfg: MobileNetConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    return _build("mobilenet", cfg, batch, seed)


@register("efficientnet", "EfficientNet-B0-style: depthwise convs, SiLU, squeeze-excite with "
          "sigmoid", full=EFFICIENTNET_FULL, small=EFFICIENTNET_SMALL)
def build_efficientnet(cfg: MobileNetConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    return _build("efficientnet", cfg, batch, seed)


def _build(name: str, cfg: MobileNetConfig, batch: int, seed: int) -> onnx.ModelProto:
    _validate(name, cfg)
    b = GraphBuilder(name, seed)
    x = b.input("input", (batch, 3, cfg.image, cfg.image))
    x = activation(b, conv(b, x, "features.0", 3, cfg.stem, 3, stride=2), "features.0.act", cfg.act)
    width = cfg.stem
    for i in range(len(cfg.blocks) // 6):
        kernel, expanded, out, se, act, stride = cfg.blocks[6 * i:6 * i + 6]
        x = _block(b, x, f"features.{i + 1}", width, kernel, expanded, out, bool(se), act, stride, cfg)
        width = out
    n = len(cfg.blocks) // 6 + 1
    x = activation(b, conv(b, x, f"features.{n}", width, cfg.head, 1), f"features.{n}.act", cfg.act)
    x = b.op("GlobalAveragePool", [x], "avgpool")
    x = b.op("Flatten", [x], "flatten", axis=1)
    if cfg.hidden:
        x = activation(b, b.linear(x, "classifier.0", cfg.head, cfg.hidden), "classifier.1", H)
        x = b.linear(x, "classifier.3", cfg.hidden, cfg.classes, gain=1.0)
    else:
        x = b.linear(x, "classifier.1", cfg.head, cfg.classes, gain=1.0)
    return b.finish({"logits": x})


def conv(b: GraphBuilder, x: str, name: str, in_ch: int, out_ch: int, kernel: int, stride: int = 1,
         groups: int = 1, gain: float = 2.0) -> str:
    """Conv2d with bias (a batch norm folded in) and 'same' padding ``kernel // 2``."""
    std = math.sqrt(gain / (in_ch // groups * kernel * kernel))
    w = b.weight(f"{name}.weight", (out_ch, in_ch // groups, kernel, kernel), std)
    bias = b.weight(f"{name}.bias", (out_ch,), 0.1)
    pad = kernel // 2
    return b.op("Conv", [x, w, bias], name, kernel_shape=[kernel, kernel], strides=[stride, stride],
                pads=[pad] * 4, group=groups)


def activation(b: GraphBuilder, x: str, name: str, code: int) -> str:
    if code == R:
        return b.op("Relu", [x], name)
    if code == H:
        return b.op("HardSwish", [x], name)
    return b.op("Mul", [x, b.op("Sigmoid", [x], f"{name}.sigmoid")], name)  # SiLU, as exported


def squeeze_excite(b: GraphBuilder, x: str, name: str, channels: int, squeeze: int, act: int) -> str:
    """Global pool -> tiny FC (1x1 convs) -> gate in (0, 1) -> scale the channels."""
    s = b.op("GlobalAveragePool", [x], f"{name}.avgpool")
    s = conv(b, s, f"{name}.fc1", channels, squeeze, 1)
    s = b.op("Relu", [s], f"{name}.relu") if act != S else activation(b, s, f"{name}.silu", S)
    s = conv(b, s, f"{name}.fc2", squeeze, channels, 1, gain=1.0)
    if act == S:
        gate = b.op("Sigmoid", [s], f"{name}.sigmoid")
    else:  # torchvision's hardsigmoid: relu6(x + 3) / 6
        gate = b.op("HardSigmoid", [s], f"{name}.hardsigmoid", alpha=1.0 / 6, beta=0.5)
    return b.op("Mul", [gate, x], name)


def _block(b, x, name, width, kernel, expanded, out, se, act, stride, cfg: MobileNetConfig) -> str:
    h = x
    if expanded != width:
        groups = cfg.expand_groups if width % cfg.expand_groups == 0 and expanded % cfg.expand_groups == 0 else 1
        h = activation(b, conv(b, h, f"{name}.block.0", width, expanded, 1, groups=groups), f"{name}.block.0.act", act)
    h = conv(b, h, f"{name}.block.1", expanded, expanded, kernel, stride=stride, groups=expanded)
    h = activation(b, h, f"{name}.block.1.act", act)
    if se:
        squeeze = max(8, expanded // 4) if act != S else max(1, width // 4)
        h = squeeze_excite(b, h, f"{name}.block.2", expanded, squeeze, act)
    h = conv(b, h, f"{name}.block.3", expanded, out, 1, gain=1.0)
    if stride == 1 and width == out:
        h = b.op("Add", [h, x], f"{name}.residual")
    return h


def _validate(name: str, cfg: MobileNetConfig) -> None:
    check(len(cfg.blocks) >= 6 and len(cfg.blocks) % 6 == 0,
          f"{name}: blocks must be 6 ints per block (kernel, expanded, out, se, act, stride)")
    check(min(cfg.image, cfg.stem, cfg.head, cfg.classes, cfg.expand_groups) >= 1 and cfg.hidden >= 0,
          f"{name}: sizes must be >= 1, got {cfg}")
    for i in range(0, len(cfg.blocks), 6):
        kernel, expanded, out, se, act, stride = cfg.blocks[i:i + 6]
        check(kernel % 2 == 1 and min(expanded, out) >= 1 and se in (0, 1) and act in (R, H, S)
              and stride in (1, 2), f"{name}: bad block {cfg.blocks[i:i + 6]}")
