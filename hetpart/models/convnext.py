"""A ConvNeXt, spelled with the ops torchvision's opset-17 export uses.

Stem: 4x4 stride-4 conv, then ``LayerNorm2d`` -- a LayerNorm over the channels,
exported as ``Transpose`` to NHWC -> ``LayerNormalization`` -> ``Transpose`` back.
A block: 7x7 depthwise conv -> ``Transpose`` to NHWC -> LayerNorm -> Linear to 4x
width (``MatMul`` + ``Add``) -> GELU (erf form) -> Linear back -> layer scale
(``Mul`` by a per-channel weight) -> ``Transpose`` to NCHW -> residual ``Add``.
Between stages: LayerNorm2d then a 2x2 stride-2 conv.  Head: ``GlobalAveragePool``
-> LayerNorm2d -> ``Flatten`` -> ``Gemm``.

Input ``input`` float32 [batch, 3, image, image]; output ``logits`` [batch, classes].

Full: ConvNeXt-T (depths 3/3/9/3, widths 96/192/384/768, 224x224).  Small: depths
1/1, widths 16/32, 32x32 images, 10 classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register


@dataclass(frozen=True)
class ConvNextConfig:
    image: int = 224
    depths: tuple = (3, 3, 9, 3)
    widths: tuple = (96, 192, 384, 768)
    classes: int = 1000


FULL = ConvNextConfig()
SMALL = ConvNextConfig(image=32, depths=(1, 1), widths=(16, 32), classes=10)


@register("convnext", "ConvNeXt: 7x7 depthwise convs, LayerNorm over channels between "
          "transposes, layer scale", full=FULL, small=SMALL)
def build_convnext(cfg: ConvNextConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(cfg)
    b = GraphBuilder("convnext", seed)
    x = b.input("input", (batch, 3, cfg.image, cfg.image))
    x = _conv(b, x, "features.0.0", 3, cfg.widths[0], 4, stride=4)
    x = layernorm2d(b, x, "features.0.1", cfg.widths[0])
    for stage, (depth, width) in enumerate(zip(cfg.depths, cfg.widths)):
        if stage:
            x = layernorm2d(b, x, f"downsample.{stage}.0", cfg.widths[stage - 1])
            x = _conv(b, x, f"downsample.{stage}.1", cfg.widths[stage - 1], width, 2, stride=2)
        for i in range(depth):
            x = _block(b, x, f"stages.{stage}.{i}", width)
    x = b.op("GlobalAveragePool", [x], "avgpool")
    x = layernorm2d(b, x, "classifier.0", cfg.widths[-1])
    x = b.op("Flatten", [x], "classifier.1", axis=1)
    return b.finish({"logits": b.linear(x, "classifier.2", cfg.widths[-1], cfg.classes, gain=1.0)})


def layernorm2d(b: GraphBuilder, x: str, name: str, channels: int) -> str:
    """LayerNorm over the channels of an NCHW tensor, through NHWC and back."""
    x = b.transpose(x, f"{name}.to_nhwc", (0, 2, 3, 1))
    x = b.layernorm(x, name, channels, eps=1e-6)
    return b.transpose(x, f"{name}.to_nchw", (0, 3, 1, 2))


def _conv(b: GraphBuilder, x: str, name: str, in_ch: int, out_ch: int, kernel: int, stride: int = 1,
          groups: int = 1, pad: int = 0) -> str:
    w = b.weight(f"{name}.weight", (out_ch, in_ch // groups, kernel, kernel),
                 math.sqrt(1.0 / (in_ch // groups * kernel * kernel)))
    bias = b.weight(f"{name}.bias", (out_ch,), 0.05)
    return b.op("Conv", [x, w, bias], name, kernel_shape=[kernel, kernel], strides=[stride, stride],
                pads=[pad] * 4, group=groups)


def _block(b: GraphBuilder, x: str, name: str, width: int) -> str:
    h = _conv(b, x, f"{name}.block.0", width, width, 7, groups=width, pad=3)
    h = b.transpose(h, f"{name}.block.1", (0, 2, 3, 1))
    h = b.layernorm(h, f"{name}.block.2", width, eps=1e-6)
    h = b.dense(h, f"{name}.block.3", width, 4 * width, gain=2.0)
    h = b.gelu(h, f"{name}.block.4")
    h = b.dense(h, f"{name}.block.5", 4 * width, width)
    h = b.op("Mul", [h, b.weight(f"{name}.layer_scale", (width,), 0.05, mean=0.5)], f"{name}.scale")
    h = b.transpose(h, f"{name}.block.6", (0, 3, 1, 2))
    return b.op("Add", [h, x], f"{name}.residual")


def _validate(cfg: ConvNextConfig) -> None:
    check(len(cfg.depths) == len(cfg.widths) >= 1 and min(cfg.depths) >= 1 and min(cfg.widths) >= 1,
          f"convnext: depths and widths must be equally long lists of ints >= 1, got {cfg}")
    check(cfg.image % (4 * 2 ** (len(cfg.depths) - 1)) == 0 and cfg.classes >= 1,
          f"convnext: image must be a multiple of {4 * 2 ** (len(cfg.depths) - 1)}, got {cfg.image}")
