"""A plain multi-layer perceptron: ``Gemm`` + ``Relu`` layers, then a ``Gemm`` to logits.

Full: MNIST-sized 784 -> 2048 -> 2048 -> 10 (about 5.8M parameters), big enough that
the GEMMs are worth a GPU.  Small: 32 -> 16 -> 16 -> 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 784
    hidden: tuple[int, ...] = (2048, 2048)
    num_classes: int = 10


FULL = MLPConfig()
SMALL = MLPConfig(in_features=32, hidden=(16, 16), num_classes=4)


@register("mlp", "Multi-layer perceptron (Gemm+Relu layers)", full=FULL, small=SMALL)
def build_mlp(cfg: MLPConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    check(cfg.in_features > 0 and cfg.num_classes > 0 and all(h > 0 for h in cfg.hidden),
          f"mlp: sizes must be positive, got {cfg}")
    b = GraphBuilder("mlp", seed)
    x = b.input("input", (batch, cfg.in_features))
    width = cfg.in_features
    for i, hidden in enumerate(cfg.hidden):
        x = b.relu(b.linear(x, f"fc{i}", width, hidden), f"relu{i}")
        width = hidden
    # Xavier-like gain 1: the logits feed no ReLU.
    logits = b.linear(x, "classifier", width, cfg.num_classes, gain=1.0)
    return b.finish({"logits": logits})
