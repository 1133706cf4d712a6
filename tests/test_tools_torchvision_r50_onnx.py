"""tools/torchvision_r50_onnx.py: the BN fold leaves no BatchNormalization, gives every Conv a bias
and the exporter's attributes, and keeps the function (ONNX Runtime, small ResNet-50, inputs with
negatives and zeros)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from torchvision_r50_onnx import fold_bn_into_conv  # noqa: E402


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    from hetpart.bench.peers import ort_session

    sess = ort_session(model, threads=1)
    return sess.run(None, {model.graph.input[0].name: x})[0]


def test_fold_keeps_function_and_drops_bn():
    from hetpart import models

    zoo = models.build("resnet50", small=True)
    tv = fold_bn_into_conv(zoo)
    onnx.checker.check_model(tv)
    ops = [n.op_type for n in tv.graph.node]
    assert "BatchNormalization" not in ops
    convs = [n for n in tv.graph.node if n.op_type == "Conv"]
    assert len(convs) == 53
    for n in convs:
        assert len(n.input) == 3
        assert [a.name for a in n.attribute] == ["dilations", "group", "kernel_shape", "pads", "strides"]
    pool = next(n for n in tv.graph.node if n.op_type == "MaxPool")
    assert {a.name for a in pool.attribute} >= {"ceil_mode", "dilations", "pads"}
    gemm = next(n for n in tv.graph.node if n.op_type == "Gemm")
    assert {a.name for a in gemm.attribute} >= {"alpha", "beta", "transB"}
    shape = [d.dim_value for d in zoo.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    want, got = _run(zoo, x), _run(tv, x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
