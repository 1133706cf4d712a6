"""Small hand-built ONNX models with symbolic dims, for the shape-bucket tests.

``batch_model()``: inputs ``x [batch, 8]`` and ``s [batch, 1]``; outputs
``y = relu(x @ W + b) * s`` ``[batch, 4]`` and ``p = sum(y, axis=1) [batch, 1]`` (rows
independent, so zero padding along ``batch`` is exact).  ``seq_model()``: ``x [batch,
seq, 8]`` -> ``relu(x @ W) [batch, seq, 4]`` (positions independent too).  Weights
seeded.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _weights(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def batch_model(batch="batch") -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Mul", ["r", "s"], ["y"]),
             helper.make_node("ReduceSum", ["y", "axes"], ["p"], keepdims=1)]
    graph = helper.make_graph(
        nodes, "bucket_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [batch, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, [batch, 1])],
        [numpy_helper.from_array(_weights(0, (8, 4)), "W"), numpy_helper.from_array(_weights(1, (4,)), "b"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def seq_model() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Relu", ["xw"], ["y"])]
    graph = helper.make_graph(
        nodes, "bucket_seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])],
        [numpy_helper.from_array(_weights(2, (8, 4)), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 8)).astype(np.float32),
            "s": rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)}
