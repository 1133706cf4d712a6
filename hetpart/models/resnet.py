"""ResNet-18 and ResNet-50 with torchvision's topology (ResNet v1.5).

Stem: 7x7/2 conv, BatchNorm, ReLU, 3x3/2 max-pool.  Four stages of residual blocks
(64, 128, 256, 512 channels; stages 2-4 start with stride 2 and a 1x1-conv+BN
shortcut), then GlobalAveragePool, Flatten and a Gemm to the classes.
ResNet-18 uses basic blocks (two 3x3 convs) ``2/2/2/2``; ResNet-50 bottleneck blocks
(1x1, 3x3 with the stride, 1x1 x4 channels) ``3/4/6/3``.  BatchNormalization nodes
are explicit, with inference-mode statistics, as exported models have them.
Node names follow torchvision's modules (``layer2.0.downsample.0``).

Small variants: base width 8 instead of 64, a 32x32 input and 10 classes.  The
block counts, and so the graph's topology and node count, stay those of the full
model (``layers`` can lower them).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register

BOTTLENECK_EXPANSION = 4
# Scale of the last BN in each residual branch: keeps the sum over many blocks in
# range with random weights (trained nets learn this; cf. zero-init-residual).
RESIDUAL_GAMMA = 0.5


@dataclass(frozen=True)
class ResNetConfig:
    block: str = "basic"  # "basic" or "bottleneck"
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage
    width: int = 64  # channels of the stem and first stage
    image_size: int = 224
    num_classes: int = 1000


FULL18 = ResNetConfig()
SMALL18 = ResNetConfig(width=8, image_size=32, num_classes=10)
FULL50 = ResNetConfig(block="bottleneck", layers=(3, 4, 6, 3))
SMALL50 = ResNetConfig(
    block="bottleneck", layers=(3, 4, 6, 3), width=8, image_size=32, num_classes=10
)


@register("resnet18", "ResNet-18 image classifier (torchvision topology)",
          full=FULL18, small=SMALL18)
def build_resnet18(cfg: ResNetConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    return build_resnet("resnet18", cfg, batch, seed)


@register("resnet50", "ResNet-50 image classifier (torchvision topology)",
          full=FULL50, small=SMALL50)
def build_resnet50(cfg: ResNetConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    return build_resnet("resnet50", cfg, batch, seed)


def build_resnet(name: str, cfg: ResNetConfig, batch: int, seed: int) -> onnx.ModelProto:
    _validate(name, cfg)
    b = GraphBuilder(name, seed)
    x = b.input("input", (batch, 3, cfg.image_size, cfg.image_size))
    x = b.relu(b.bn(b.conv(x, "conv1", 3, cfg.width, 7, stride=2), "bn1", cfg.width), "relu")
    x = b.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    block = _basic_block if cfg.block == "basic" else _bottleneck
    channels = cfg.width
    for stage, blocks in enumerate(cfg.layers):
        planes = cfg.width * 2**stage
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            x, channels = block(b, x, f"layer{stage + 1}.{i}", channels, planes, stride)
    x = b.op("GlobalAveragePool", [x], "avgpool")
    x = b.op("Flatten", [x], "flatten", axis=1)
    logits = b.linear(x, "fc", channels, cfg.num_classes, gain=1.0)
    return b.finish({"logits": logits})


def _basic_block(b: GraphBuilder, x: str, name: str, in_ch: int, planes: int, stride: int):
    y = _conv_bn(b, x, name, 1, in_ch, planes, 3, stride, relu=True)
    y = _conv_bn(b, y, name, 2, planes, planes, 3, 1, relu=False)
    return _residual(b, x, y, name, in_ch, planes, stride), planes


def _bottleneck(b: GraphBuilder, x: str, name: str, in_ch: int, planes: int, stride: int):
    out_ch = planes * BOTTLENECK_EXPANSION
    y = _conv_bn(b, x, name, 1, in_ch, planes, 1, 1, relu=True)
    # v1.5: the stride sits on the 3x3 conv, not on the first 1x1.
    y = _conv_bn(b, y, name, 2, planes, planes, 3, stride, relu=True)
    y = _conv_bn(b, y, name, 3, planes, out_ch, 1, 1, relu=False)
    return _residual(b, x, y, name, in_ch, out_ch, stride), out_ch


def _conv_bn(b: GraphBuilder, x: str, name: str, i: int, in_ch: int, out_ch: int,
             kernel: int, stride: int, relu: bool) -> str:
    """``{name}.conv{i}`` + ``{name}.bn{i}`` (+ ``{name}.relu{i}``); the block's last
    BN (no ReLU) gets the damped residual scale."""
    y = b.conv(x, f"{name}.conv{i}", in_ch, out_ch, kernel, stride)
    y = b.bn(y, f"{name}.bn{i}", out_ch, gamma=1.0 if relu else RESIDUAL_GAMMA)
    return b.relu(y, f"{name}.relu{i}") if relu else y


def _residual(b: GraphBuilder, x: str, y: str, name: str, in_ch: int, out_ch: int,
              stride: int) -> str:
    """Add the shortcut (a 1x1 conv + BN where the shape changes) and apply ReLU."""
    if stride != 1 or in_ch != out_ch:
        x = b.conv(x, f"{name}.downsample.0", in_ch, out_ch, 1, stride, gain=1.0)
        x = b.bn(x, f"{name}.downsample.1", out_ch)
    return b.relu(b.op("Add", [y, x], f"{name}.add"), f"{name}.relu")


def _validate(name: str, cfg: ResNetConfig) -> None:
    check(cfg.block in ("basic", "bottleneck"),
          f"{name}: block must be 'basic' or 'bottleneck', got {cfg.block!r}")
    check(len(cfg.layers) >= 1 and all(n >= 1 for n in cfg.layers),
          f"{name}: layers (blocks per stage) must each be >= 1, got {cfg.layers}")
    check(cfg.width >= 1 and cfg.num_classes >= 1, f"{name}: width and num_classes must be >= 1")
    check(cfg.image_size >= 16, f"{name}: image_size must be >= 16, got {cfg.image_size}")
