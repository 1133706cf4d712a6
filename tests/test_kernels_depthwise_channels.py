"""The channel-vector schedule of depthwise convolutions on planes narrower than a vector
(hetpart/kernels/rules/cpu_depthwise.py ``channel_vectors``, chosen by
``vectorizes_channels`` through the conv2d rule) against ONNX Runtime, and which
depthwise shapes take it.

Cases: mobilenet_v2's 960x7x7 and 576x14x14 stride 2 (+ ReLU6 as Clip) scaled down in
channels, a 5x5 window on 7x7, an unpadded window (no padding block: the image copied
into channel vectors), a batch of 2 (the batch loop fused with the channel blocks), 48
channels (three vector blocks), rows half a vector and one lane short of a vector wide
(8 and 15 on a 16-lane AVX-512 host, 4 and 7 on an 8-lane AVX2 one: the host's lanes
from /proc/cpuinfo, since these run).  Inputs: half negative, every 7th element 0.

Which shapes take the schedule depends on the vector width (channels in whole vectors,
rows narrower than one, or a stride-2 window whose batch x channel vectors cover the
target's cores: ``STRIDE2_CHANNEL_VECTORS``, or a 5x5+ window on rows up to 14 wide:
``WIDE_WINDOW_ROWS``): asserted for a fixed 8-lane and 16-lane CPU of
4 cores and the host's width.
Tolerances as tests/test_kernels_depthwise.py (ORT sums the window in another order).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper

from hetpart import importer
from host_isa import WIDTH_TARGETS, host_f32_lanes, width_target
from onnx_cases import assert_matches, model, run_on, single_cpu_kernel

# name -> (batch, channels, image, kernel, stride, pad, epilogue)
CASES = {
    "960x7x7-like 3x3 relu6": (1, 32, 7, 3, 1, 1, "relu6"),
    "576x14 s2-like 3x3 relu6": (1, 48, 14, 3, 2, 1, "relu6"),
    "5x5 on 7x7 relu": (1, 16, 7, 5, 1, 2, "relu"),
    "3x3 unpadded none": (1, 32, 7, 3, 1, 0, "none"),
    "batch 2 3x3 relu6": (2, 32, 7, 3, 1, 1, "relu6"),
    "half a vector wide 3x3 none": (1, 16, host_f32_lanes() // 2, 3, 1, 1, "none"),
    "a lane short of a vector wide 5x5 relu6": (1, 32, host_f32_lanes() - 1, 5, 1, 2, "relu6"),
    # stride 2 on rows of whole vectors (8 lanes; 16: narrower than one): STRIDE2_CHANNEL_VECTORS
    "stride 2 on 24 wide batch 4 3x3 relu6": (4, 32, 24, 3, 2, 1, "relu6"),
    "stride 2 on 28 wide batch 2 5x5 relu": (2, 48, 28, 5, 2, 2, "relu"),
    # a 5x5 / 7x7 window on 14-wide rows (8 lanes: 1.75 vectors; 16: narrower than one): WIDE_WINDOW_ROWS
    "5x5 on 14 wide batch 2 relu6": (2, 16, 14, 5, 1, 2, "relu6"),
    "7x7 on 14 wide none": (1, 16, 14, 7, 1, 3, "none"),
}


def _model(n, c, hw, k, stride, pad, epilogue, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c, 1, k, k)) * 0.5).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=c, kernel_shape=[k, k],
                              strides=[stride, stride], pads=[pad] * 4)]
    if epilogue == "relu6":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    out = (hw + 2 * pad - k) // stride + 1
    return model(nodes, [("x", [n, c, hw, hw], np.float32)], [("y", [n, c, out, out], np.float32)],
                 {"w": w, "b": b, "lo": np.float32(0.0), "hi": np.float32(6.0)}, opset=13)


def _input(n, c, hw) -> np.ndarray:
    x = (np.random.default_rng(1).standard_normal((n, c, hw, hw)) * 3).astype(np.float32)
    x.flat[::7] = 0.0
    return x


@pytest.mark.parametrize("case", list(CASES))
def test_channel_vectors_match_onnxruntime(case):
    spec = CASES[case]
    m, x = _model(*spec), _input(*spec[:3])
    graph = importer.load(m)  # imported once: scheduled here, compiled by run_on
    assert _vectorises_channels(graph), "the case must take the channel-vector schedule"
    got = run_on(graph, "cpu", {"x": x})["y"]
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (want < 0).any() or spec[-1] != "none", "negative outputs exercised"
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


def _vectorises_channels(m, target=None) -> bool:
    """(``m``: a model or its op graph.)  Whether the window's update block sits in an explicitly vectorised loop along the
    channels (channel vectors: its accumulator laid out channel-inner, ``[.., c // L, oh,
    ow, c % L]``; channel rows vectorise along the row, if at all:
    cpu_depthwise.REGISTER_ROWS), scheduled for ``target`` (the host's by default)."""
    func = single_cpu_kernel(m, target)
    found = []

    def visit_for(loop):
        if loop.kind == tvm.tirx.ForKind.VECTORIZED:
            tvm_ffi.structural_walk(loop.body, (tvm.s_tir.SBlock, found.append))

    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, visit_for))
    return any(b.name_hint.endswith("_update") and len(b.writes[0].source.shape) == 5 for b in found)


# (batch, channels, image, kernel, stride, pad) -> channel vectors? {lanes: decision}
DECISIONS = [
    ((1, 960, 7, 3, 1, 1), {16: True, 8: True}),     # mobilenet_v2's last depthwise
    ((1, 576, 14, 3, 2, 1), {16: True, 8: True}),    # its 14x14 stride 2: 7-wide output
    ((1, 1152, 7, 5, 1, 2), {16: True, 8: True}),    # efficientnet_b0's 5x5 on 7x7
    ((1, 384, 14, 3, 1, 1), {16: True, 8: False}),   # 14 wide (a tie at 3x3; 5x5 1.6x faster); 8 lanes: rows of 1.75 vectors
    ((1, 672, 14, 5, 1, 2), {16: True, 8: True}),    # efficientnet_b0's 5x5 on 14x14: WIDE_WINDOW_ROWS
    ((1, 384, 14, 7, 1, 3), {16: True, 8: True}),    # convnext_tiny's 7x7 on 14x14
    ((1, 64, 16, 5, 1, 2), {16: False, 8: False}),   # rows of whole vectors keep their register rows
    ((1, 192, 28, 3, 1, 1), {16: False, 8: False}),  # 28 wide: the copies outweigh the window
    ((1, 240, 28, 5, 1, 2), {16: False, 8: False}),
    ((1, 32, 16, 3, 1, 1), {16: False, 8: False}),   # rows of whole vectors
    ((1, 24, 7, 3, 1, 1), {16: False, 8: True}),     # channels not whole vectors of 16, 3 of 8
    ((1, 32, 112, 3, 1, 1), {16: False, 8: False}),
    # stride 2, any row width, where batch x channels / lanes covers the target's 4 cores:
    ((1, 96, 112, 3, 2, 1), {16: True, 8: True}),    # mobilenet_v2's / efficientnet_b0's 112x112 stride 2
    ((1, 144, 56, 5, 2, 2), {16: True, 8: True}),    # efficientnet_b0's 5x5 stride 2 on 56x56
    ((1, 72, 56, 5, 2, 2), {16: False, 8: True}),    # mobilenet_v3's: 72 channels no whole vectors of 16
    ((1, 16, 112, 3, 2, 1), {16: False, 8: False}),  # 1-2 channel groups for 4 cores: the rows
    ((4, 16, 112, 3, 2, 1), {16: True, 8: True}),    # a batch of 4 covers them
]


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
@pytest.mark.parametrize("shape,vectors", DECISIONS, ids=[f"{s[1]}x{s[2]}k{s[3]}s{s[4]}" for s, _ in DECISIONS])
def test_which_depthwise_shapes_take_channel_vectors(shape, vectors, cpu):
    """The decision for the target's vector width (the host's: its /proc/cpuinfo width's)."""
    target, lanes = width_target(cpu)
    if lanes not in vectors:
        pytest.skip(f"no decisions written down for {lanes}-lane float32 vectors")
    assert _vectorises_channels(_decision_graph(shape), target) is vectors[lanes]


@lru_cache(maxsize=None)
def _decision_graph(shape):
    """The op graph of a decision's model (relu6), imported once for the targets it is scheduled for."""
    return importer.load(_model(*shape, "relu6"))
