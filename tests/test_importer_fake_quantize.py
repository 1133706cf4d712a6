"""A QuantizeLinear -> DequantizeLinear pair on an activation computed in float
(:mod:`hetpart.importer.fake_quantize`), against ONNX Runtime running the pair as written.

The values must be the pair's exactly (equal arrays, not a tolerance): rounding ties
(half-way between two steps, to even), zero, negatives, both saturations and the
infinities, for int8 and uint8 with a zero point inside the range, after a conv and
around a residual Add as a QDQ model has them.  The structure must be the float one:
no quantize/dequantize left in a kernel (the integer round trip was ~12 vector
instructions an element in every conv's epilogue); a pair it cannot take (a scale per
channel, different scales) stays as it was and still matches.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from onnx_cases import model, run_on

from hetpart.importer import fake_quantize, load

F32 = np.float32


def _ort(m, feeds):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the pairs as written
    sess = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in m.graph.output], sess.run(None, feeds)))


def _hard_values(shape, scale: float, zp: int, qtype) -> np.ndarray:
    """Ties ``(k + 0.5) * scale`` for k around the zero point (both signs), zeros, both
    saturations, the infinities, the rest normal."""
    x = np.random.default_rng(7).standard_normal(shape).astype(F32) * F32(40 * scale)
    flat = x.reshape(-1)
    ks = np.arange(-6, 6, dtype=F32)
    ties = (ks + F32(0.5)) * F32(scale)
    info = np.iinfo(qtype)
    special = np.concatenate([ties, [0.0, -0.0, (info.max - zp + 3) * scale, (info.min - zp - 3) * scale,
                                     1e30, -1e30, np.inf, -np.inf]]).astype(F32)
    flat[:special.size] = special
    flat[special.size::5] = 0.0
    return x


def _qdq(name: str, scale: str, zp: str) -> list:
    return [helper.make_node("QuantizeLinear", [name, scale, zp], [name + "_q"]),
            helper.make_node("DequantizeLinear", [name + "_q", scale, zp], [name + "_dq"])]


@pytest.mark.parametrize("qtype,zp", [(np.uint8, 0), (np.uint8, 131), (np.int8, -5), (np.int8, 0)])
def test_qdq_pairs_after_a_conv_and_around_an_add_are_float_and_exact(qtype, zp):
    """Conv -> Q/DQ -> Add(Q/DQ of the input) -> Q/DQ, the residual shape of a QDQ model."""
    s1, s2, s3 = F32(0.0625), F32(0.037), F32(0.11)  # an exact power of two, two that are not
    w = np.random.default_rng(1).standard_normal((4, 4, 3, 3)).astype(F32) * F32(0.2)
    nodes = [*_qdq("x", "s2", "z"),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             *_qdq("c", "s1", "z"),
             helper.make_node("Add", ["c_dq", "x_dq"], ["a"]),
             *_qdq("a", "s3", "z")]
    m = model(nodes, [("x", (1, 4, 8, 8), F32)], [("a_dq", (1, 4, 8, 8), F32)],
              {"w": w, "s1": s1, "s2": s2, "s3": s3, "z": np.asarray(zp, dtype=qtype)}, opset=13)
    graph = load(m)  # imported once: its kernels read here, compiled by run_on
    kernel_ops = [k.ops for k in graph.nodes]
    assert not any({"quantize", "dequantize"} & set(ops) for ops in kernel_ops), kernel_ops
    assert sum(ops.count("fake_quantize") for ops in kernel_ops) == 3, kernel_ops
    x = _hard_values((1, 4, 8, 8), float(s2), zp, qtype)
    x[~np.isfinite(x)] = 0.0  # inf - inf in the conv: NaN, which ORT's QuantizeLinear and TVM's map apart
    got = run_on(graph, "cpu", {"x": x}, simulate=False)["a_dq"]
    np.testing.assert_array_equal(got, _ort(m, {"x": x})["a_dq"])


@pytest.mark.parametrize("qtype,zp", [(np.uint8, 128), (np.int8, 3)])
def test_a_pair_alone_is_exact_on_ties_saturation_and_infinities(qtype, zp):
    scale = F32(0.02)
    m = model(_qdq("x", "s", "z"), [("x", (4, 64), F32)], [("x_dq", (4, 64), F32)],
              {"s": scale, "z": np.asarray(zp, dtype=qtype)}, opset=13)
    x = _hard_values((4, 64), float(scale), zp, qtype)
    np.testing.assert_array_equal(run_on(m, "cpu", {"x": x}, simulate=False)["x_dq"], _ort(m, {"x": x})["x_dq"])


def test_pairs_it_cannot_take_stay_integer_and_match():
    """A scale per channel, and a DequantizeLinear whose scale differs from its
    QuantizeLinear's: both left to TVM's quantize/dequantize."""
    per_channel = np.array([0.01, 0.02, 0.03, 0.05], F32)
    nodes = [helper.make_node("QuantizeLinear", ["x", "pc", "zc"], ["q1"], axis=1),
             helper.make_node("DequantizeLinear", ["q1", "pc", "zc"], ["d1"], axis=1),
             helper.make_node("QuantizeLinear", ["d1", "s", "z"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z"], ["y"])]
    m = model(nodes, [("x", (2, 4, 5), F32)], [("y", (2, 4, 5), F32)],
              {"pc": per_channel, "zc": np.zeros(4, np.int8), "s": F32(0.04), "s2": F32(0.08),
               "z": np.int8(-2)}, opset=13)
    graph = load(m)
    ops = {op for k in graph.nodes for op in k.ops}
    assert "fake_quantize" not in ops and {"quantize", "dequantize"} <= ops, ops
    x = _hard_values((2, 4, 5), 0.01, 0, np.int8)
    x[~np.isfinite(x)] = 0.0  # ORT's per-axis kernel and TVM's disagree on the infinities' int8
    np.testing.assert_array_equal(run_on(graph, "cpu", {"x": x}, simulate=False)["y"], _ort(m, {"x": x})["y"])


def test_the_switch_turns_the_rewrite_off_and_both_agree_even_on_nan(monkeypatch):
    """Off, TVM's integer round trip; on, the float form; the same values, NaN included
    (both clip it to the upper bound: not ONNX Runtime's value, whose int8 cast of NaN
    differs)."""
    m = model(_qdq("x", "s", "z"), [("x", (4, 64), F32)], [("x_dq", (4, 64), F32)],
              {"s": F32(0.02), "z": np.int8(-7)}, opset=13)
    x = _hard_values((4, 64), 0.02, -7, np.int8)
    x[0, -4:] = np.nan
    on = run_on(m, "cpu", {"x": x}, simulate=False)["x_dq"]
    monkeypatch.setattr(fake_quantize, "FLOAT_FAKE_QUANT", False)
    off = load(m)
    assert {op for k in off.nodes for op in k.ops} == {"quantize", "dequantize"}
    np.testing.assert_array_equal(on, run_on(off, "cpu", {"x": x}, simulate=False)["x_dq"])


@pytest.mark.cuda
@pytest.mark.parametrize("qtype,zp", [(np.uint8, 128), (np.int8, 3)])
def test_on_the_gpu_a_pair_alone_is_exact_and_a_qdq_conv_within_one_step(qtype, zp):
    """The pass runs before fusion for both devices: on CUDA the pair alone must give
    ORT's values exactly (IEEE division and round-half-even there too), and the
    residual QDQ conv at most one quantization step off where the GPU's conv sums in
    another order (a sum that lands next to a tie may round to the other step)."""
    scale = F32(0.02)
    m = model(_qdq("x", "s", "z"), [("x", (4, 64), F32)], [("x_dq", (4, 64), F32)],
              {"s": scale, "z": np.asarray(zp, dtype=qtype)}, opset=13)
    x = _hard_values((4, 64), float(scale), zp, qtype)
    np.testing.assert_array_equal(run_on(m, "cuda", {"x": x}, simulate=False)["x_dq"], _ort(m, {"x": x})["x_dq"])

    s1, s2, s3 = F32(0.0625), F32(0.037), F32(0.11)
    w = np.random.default_rng(1).standard_normal((4, 4, 3, 3)).astype(F32) * F32(0.2)
    nodes = [*_qdq("x", "s2", "z"), helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             *_qdq("c", "s1", "z"), helper.make_node("Add", ["c_dq", "x_dq"], ["a"]), *_qdq("a", "s3", "z")]
    m = model(nodes, [("x", (1, 4, 8, 8), F32)], [("a_dq", (1, 4, 8, 8), F32)],
              {"w": w, "s1": s1, "s2": s2, "s3": s3, "z": np.asarray(zp, dtype=qtype)}, opset=13)
    x = _hard_values((1, 4, 8, 8), float(s2), zp, qtype)
    x[~np.isfinite(x)] = 0.0
    got, want = run_on(m, "cuda", {"x": x}, simulate=False)["a_dq"], _ort(m, {"x": x})["a_dq"]
    off = np.abs(got - want)
    assert off.max() <= float(s3) * 1.0001 and np.count_nonzero(off) <= 0.1 * off.size, (off.max(), np.count_nonzero(off))
