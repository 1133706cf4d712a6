"""Small CPU matmul / attention-score models with ragged register tiles, run all-CPU (shared by
the ragged-tile tests: ``from ragged_cases import ...``):

* ``graph_model(nodes, inputs, output, inits)``: an opset-17 model of one float32 output "y";
* ``linear(m, k, n, seed)``: ``y = x @ W + b`` on ``x [1, m, k]``;
* ``attention_scores(heads, seq, dim)``: ``y = x @ k^T * (1 / sqrt(dim))`` on ``[1, heads, seq, dim]``;
* ``seeded_feeds(m, special)``: seeded inputs (every 7th element zero; NaN and +-Inf where ``special``);
* ``run_all_cpu(m, feeds)``: output "y" of ``m`` compiled all-CPU, run in a Session.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetpart import load
from hetpart.backend import forced_plan


def graph_model(nodes, inputs, output, inits):
    """An opset-17 model of ``nodes``, float32 ``inputs`` (name -> shape), one float32 output
    "y" of shape ``output`` and initializers ``inits`` (name -> array)."""
    g = helper.make_graph(
        nodes, "ragged", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, output)],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def linear(m, k, n, seed=0):
    """``y = x @ W + b`` on ``x [1, m, k]`` (seeded W scaled by 1/sqrt(k), b)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
    return graph_model(nodes, {"x": [1, m, k]}, [1, m, n], {"w": w, "b": b})


def attention_scores(heads, seq, dim):
    """Attention scores ``y = x @ k^T * (1 / sqrt(dim))`` on ``x``, ``k`` of ``[1, heads, seq, dim]``."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["x", "kt"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["y"])]
    shp = [1, heads, seq, dim]
    return graph_model(nodes, {"x": shp, "k": shp}, [1, heads, seq, seq],
                       {"scale": np.array(1 / np.sqrt(dim), np.float32)})


def seeded_feeds(m: onnx.ModelProto, special: bool = False) -> dict:
    """Seeded standard-normal inputs of ``m``, every 7th element zero; with ``special`` a NaN,
    +Inf and -Inf in each."""
    rng = np.random.default_rng(1)
    out = {}
    for i in m.graph.input:
        x = rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        x.flat[::7] = 0.0
        if special:
            x.flat[[3, x.size // 2, x.size - 1]] = [np.nan, np.inf, -np.inf]
        out[i.name] = x
    return out


def run_all_cpu(m: onnx.ModelProto, feeds: dict) -> np.ndarray:
    """Output "y" of ``m`` on ``feeds``, every kernel on the CPU, compiled and run in a Session."""
    import hetpart

    graph = load(m)
    with hetpart.Session(hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)) as s:
        return s.run(feeds)["y"]
