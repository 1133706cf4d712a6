"""A one-tensor decode step for the device-resident state tests (runtime and benchmark):
a cache written at ``position`` by llama_decode's mask-select, then read."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

CACHE, D = 16, 8


def cache_step_model(past: str = "past", present: str = "present") -> onnx.ModelProto:
    """x [1, D], position [1] -> y [1, CACHE, 4], present [1, CACHE, D]: the new key
    (x @ Wk) written at ``position`` by a mask-select (llama_decode's pattern), then read."""
    rng = np.random.default_rng(7)
    wk = helper.make_tensor("wk", TensorProto.FLOAT, (D, D), rng.standard_normal((D, D)).astype(np.float32).ravel())
    wv = helper.make_tensor("wv", TensorProto.FLOAT, (D, 4), rng.standard_normal((D, 4)).astype(np.float32).ravel())
    slots = helper.make_tensor("slots", TensorProto.INT64, (CACHE,), np.arange(CACHE))
    shape = helper.make_tensor("hit_shape", TensorProto.INT64, (3,), [1, CACHE, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, (1,), [1])
    nodes = [
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("Unsqueeze", ["k", "axes"], ["k3"]),
        helper.make_node("Equal", ["slots", "position"], ["hit"]),
        helper.make_node("Reshape", ["hit", "hit_shape"], ["hit3"]),
        helper.make_node("Where", ["hit3", "k3", past], [present]),
        helper.make_node("MatMul", [present, "wv"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "cache_step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, D)),
         helper.make_tensor_value_info("position", TensorProto.INT64, (1,)),
         helper.make_tensor_value_info(past, TensorProto.FLOAT, (1, CACHE, D))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, CACHE, 4)),
         helper.make_tensor_value_info(present, TensorProto.FLOAT, (1, CACHE, D))],
        [wk, wv, slots, shape, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def two_reader_cache_model(past: str = "past", present: str = "present") -> onnx.ModelProto:
    """:func:`cache_step_model` whose cache is also read by a second kernel: ``z`` [1, 4]
    is the cache's maximum over its slots (``ReduceMax(past)``) @ Wo.  The Where kernel
    writes ``present`` and reads ``past``; the ReduceMax kernel reads ``past`` only: a
    state pair whose writer and readers are two kernels, that a plan could split."""
    base = cache_step_model(past, present)
    rng = np.random.default_rng(11)
    wo = helper.make_tensor("wo", TensorProto.FLOAT, (D, 4), rng.standard_normal((D, 4)).astype(np.float32).ravel())
    graph = base.graph
    nodes = list(graph.node) + [helper.make_node("ReduceMax", [past], ["old"], axes=[1], keepdims=0),
                                helper.make_node("MatMul", ["old", "wo"], ["z"])]
    outputs = [graph.output[0], helper.make_tensor_value_info("z", TensorProto.FLOAT, (1, 4)), graph.output[1]]
    two = helper.make_graph(nodes, "two_reader_cache", list(graph.input), outputs,
                            list(graph.initializer) + [wo])
    return helper.make_model(two, opset_imports=[helper.make_opsetid("", 17)])
