"""ONNX's quantization ops through hetpart's CPU path, against ONNX Runtime and onnx.reference.

QuantizeLinear / DequantizeLinear (TVM's converters; per-tensor and per-axis, int8 and
uint8, the opsets 10-21 that changed them), MatMulInteger (TVM's), and the ops TVM
lacks: QLinearMatMul and QLinearConv (lowered by :mod:`hetpart.importer.qlinear`),
ConvInteger (:mod:`hetpart.importer.integer_ops`).  Integer outputs must be equal,
requantised ones within one quantisation step (ONNX rounds ``acc * a_scale *
b_scale / y_scale`` once; ORT and the reference associate the float product
differently, so a value at a rounding tie may land one step off).

References: onnx.reference everywhere (exact, numpy's integer arithmetic); ONNX Runtime
too where it is exact for the operand types on this host (:func:`host_isa.ort_integer_exact`:
not uint8 x int8 on x86 without VNNI, where MLAS's ``vpmaddubsw`` saturates its int16
pair sums -- 58 off on the QDQ case -- so there ORT is no reference).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from host_isa import ort_integer_exact
from onnx_cases import model, reference, run_on

F32, U8, I8 = np.float32, np.uint8, np.int8
RNG = np.random.default_rng(18)


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in m.graph.output], sess.run(None, feeds)))


def _within_one_step(got, want, what=""):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1, f"{what}: {int((diff > 1).sum())} values more than one step off"
    assert (diff == 0).mean() > 0.95, f"{what}: only {(diff == 0).mean():.1%} exact"


@pytest.mark.parametrize("opset,axis", [(10, None)] + [(o, a) for o in (13, 19, 21) for a in (None, 0, 1, -1)])
@pytest.mark.parametrize("qtype", [U8, I8])
def test_quantize_dequantize_match_onnxruntime(opset, qtype, axis):
    """Per-axis quantisation is opset 13+."""
    shape = (4, 6)
    n = 1 if axis is None else shape[axis]
    scale = RNG.uniform(0.01, 0.1, n).astype(F32)
    zp = RNG.integers(np.iinfo(qtype).min // 2 + 64, np.iinfo(qtype).max // 2, n).astype(qtype)
    if axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    attrs = {} if axis is None else {"axis": axis}
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], **attrs)],
              [("x", shape, F32)], [("q", shape, qtype), ("d", shape, F32)], {"s": scale, "z": zp}, opset=opset)
    x = RNG.uniform(-8, 8, shape).astype(F32)
    x[0, :3] = [0.5 * scale.reshape(-1)[0], 1e6, -1e6]  # a tie and both saturations
    got, want = run_on(m, "cpu", {"x": x}, simulate=False), _ort(m, {"x": x})
    np.testing.assert_array_equal(got["q"], want["q"])
    np.testing.assert_allclose(got["d"], want["d"], rtol=1e-6)


@pytest.mark.parametrize("atype,btype", [(U8, I8), (I8, I8), (U8, U8), (I8, U8)])
@pytest.mark.parametrize("zero_points", ["both", "none", "per-column", "a-only"])
def test_matmul_integer_matches_onnxruntime(atype, btype, zero_points):
    """Exact, whatever the operands' signedness and zero points (hetpart multiplies
    uint8 by int8 and applies the zero points after the product)."""
    a = RNG.integers(np.iinfo(atype).min, np.iinfo(atype).max, (2, 5, 32)).astype(atype)
    b = RNG.integers(np.iinfo(btype).min, np.iinfo(btype).max, (32, 16)).astype(btype)
    az, bz = atype(3), btype(np.iinfo(btype).max - 5)
    if zero_points == "per-column":
        bz = RNG.integers(np.iinfo(btype).min, np.iinfo(btype).max, 16).astype(btype)
    inputs = {"none": ["a", "b"], "a-only": ["a", "b", "az"]}.get(zero_points, ["a", "b", "az", "bz"])
    inits = {"b": b, "az": az, "bz": bz}
    m = model([helper.make_node("MatMulInteger", inputs, ["y"])], [("a", a.shape, atype)],
              [("y", (2, 5, 16), np.int32)], {k: inits[k] for k in inputs[1:]}, opset=13)
    got = run_on(m, "cpu", {"a": a}, simulate=False)["y"]
    np.testing.assert_array_equal(got, reference(m, {"a": a})["y"])
    if ort_integer_exact(atype, btype):
        np.testing.assert_array_equal(got, _ort(m, {"a": a})["y"])


def test_matmul_integer_of_two_inputs_matches_onnxruntime():
    """Both operands computed (attention's Q @ K^T in a dynamically quantised model)."""
    a = RNG.integers(0, 255, (3, 8, 24)).astype(U8)
    b = RNG.integers(0, 255, (3, 24, 8)).astype(U8)
    m = model([helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])],
              [("a", a.shape, U8), ("b", b.shape, U8), ("az", (), U8), ("bz", (), U8)], [("y", (3, 8, 8), np.int32)])
    feeds = {"a": a, "b": b, "az": np.array(128, U8), "bz": np.array(7, U8)}
    np.testing.assert_array_equal(run_on(m, "cpu", feeds, simulate=False)["y"], _ort(m, feeds)["y"])


@pytest.mark.parametrize("opset,qtype", [(10, U8), (10, I8), (21, I8), (21, U8)])
@pytest.mark.parametrize("per_column", [False, True])
def test_qlinear_matmul_matches_onnxruntime(opset, qtype, per_column):
    m_, k, n = 6, 40, 12
    a = RNG.integers(np.iinfo(qtype).min, np.iinfo(qtype).max, (3, m_, k)).astype(qtype)  # ORT: a, y one type
    b = RNG.integers(-100, 100, (k, n)).astype(I8)
    b_scale = RNG.uniform(0.01, 0.03, n if per_column else ()).astype(F32)
    b_zp = np.zeros(n if per_column else (), I8)
    y_zp = qtype(5)
    nodes = [helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])]
    inits = {"as": F32(0.02), "az": qtype(100), "b": b, "bs": b_scale, "bz": b_zp, "ys": F32(0.5), "yz": y_zp}
    m = model(nodes, [("a", a.shape, qtype)], [("y", (3, m_, n), qtype)], inits, opset=opset)
    got = run_on(m, "cpu", {"a": a}, simulate=False)["y"]
    if opset < 21 and ort_integer_exact(qtype, I8):  # ORT's CPU provider has no QLinearMatMul-21
        _within_one_step(got, _ort(m, {"a": a})["y"], "vs ORT")
    _within_one_step(got, reference(m, {"a": a})["y"], "vs onnx.reference")


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("attrs,out_hw", [({"pads": [1, 1, 1, 1]}, (9, 9)),
                                          ({"strides": [2, 2], "pads": [0, 1, 0, 1]}, (4, 5)),
                                          ({"group": 2, "dilations": [2, 2]}, (5, 5)),
                                          ({"auto_pad": "SAME_UPPER"}, (9, 9))])
def test_qlinear_conv_matches_onnxruntime(per_channel, attrs, out_hw):
    c, m_ = 4, 6
    x = RNG.integers(0, 255, (1, c, 9, 9)).astype(U8)
    w = RNG.integers(-127, 127, (m_, c // attrs.get("group", 1), 3, 3)).astype(I8)
    bias = RNG.integers(-2000, 2000, m_).astype(np.int32)
    w_scale = RNG.uniform(0.005, 0.02, m_ if per_channel else ()).astype(F32)
    inits = {"xs": F32(0.03), "xz": U8(120), "w": w, "ws": w_scale, "wz": np.zeros(m_ if per_channel else (), I8),
             "ys": F32(0.2), "yz": U8(100), "b": bias}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **attrs)
    m = model([node], [("x", x.shape, U8)], [("y", (1, m_, *out_hw), U8)], inits, opset=13)
    got = run_on(m, "cpu", {"x": x}, simulate=False)["y"]
    if ort_integer_exact(U8, I8):
        _within_one_step(got, _ort(m, {"x": x})["y"], "vs ORT")
    _within_one_step(got, reference(m, {"x": x})["y"], "vs onnx.reference")


@pytest.mark.parametrize("w_zp_shape", [(), (5,)])
def test_conv_integer_matches_onnx_reference(w_zp_shape):
    """Exact: the zero points are subtracted before padding (a padded input is its zero point)."""
    x = RNG.integers(0, 255, (2, 3, 7, 7)).astype(U8)
    w = RNG.integers(0, 255, (5, 3, 3, 3)).astype(U8)
    w_zp = RNG.integers(100, 150, w_zp_shape).astype(U8)
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 2, 1, 0], strides=[1, 2])
    m = model([node], [("x", x.shape, U8)], [("y", (2, 5, 7, 4), np.int32)], {"w": w, "xz": U8(17), "wz": w_zp}, opset=10)
    np.testing.assert_array_equal(run_on(m, "cpu", {"x": x}, simulate=False)["y"], reference(m, {"x": x})["y"])


def _qdq_model():
    """x -> Q/DQ -> MatMul(DQ(w, per-column)) -> Q/DQ -> Gemm(transB, DQ(w2), DQ(int32 bias))."""
    w = RNG.integers(-127, 127, (32, 16)).astype(I8)
    w2 = RNG.integers(-127, 127, (8, 16)).astype(I8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["h"]),
        helper.make_node("QuantizeLinear", ["h", "hs", "hz"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "hs", "hz"], ["hd"]),
        helper.make_node("DequantizeLinear", ["w2", "w2s"], ["w2d"]),
        helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"]),
        helper.make_node("Gemm", ["hd", "w2d", "bd"], ["y"], transB=1),
    ]
    inits = {"xs": F32(0.05), "xz": U8(128), "w": w, "ws": RNG.uniform(0.01, 0.02, 16).astype(F32),
             "wz": np.zeros(16, I8), "hs": F32(0.3), "hz": I8(-3), "w2": w2, "w2s": F32(0.02),
             "b": RNG.integers(-500, 500, 8).astype(np.int32), "bs": F32(0.3 * 0.02)}
    return model(nodes, [("x", (4, 32), F32)], [("y", (4, 8), F32)], inits, opset=19)


def _accumulator_dtype(func) -> str:
    """Element type of a contraction kernel's multiply-accumulate."""
    from tvm import s_tir

    from hetpart.kernels.analysis import block_infos, find_mac

    sch = s_tir.Schedule(func)
    return str(find_mac(sch, block_infos(sch)).out.dtype)


def test_qdq_matmul_and_gemm_run_as_integer_contractions():
    """QDQ MatMul/Gemm become MatMulInteger (8-bit operands) and give onnx.reference's
    result, and ORT's where ORT fuses them into exact integer kernels (u8 x s8)."""
    from hetpart.importer import load

    m = _qdq_model()
    graph = load(m)
    contractions = [k for k in graph.nodes if k.op_class == "matmul"]
    assert len(contractions) == 2
    assert all(_accumulator_dtype(graph.module[k.func]) == "int32" for k in contractions)
    x = RNG.uniform(-6, 6, (4, 32)).astype(F32)
    got = run_on(graph, "cpu", {"x": x}, simulate=False)["y"]  # the import above, compiled
    if ort_integer_exact(U8, I8):
        np.testing.assert_allclose(got, _ort(m, {"x": x})["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, reference(m, {"x": x})["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("qtype", [U8, I8])
def test_blocked_quantize_dequantize_match_onnx_reference(axis, qtype):
    """Opset 21's block_size (scales and zero points as inputs), blocks not dividing the
    axis (5 = 2 + 2 + 1): exact against onnx.reference."""
    shape = (5, 6) if axis == 0 else (4, 5)
    blocks = [3, 6] if axis == 0 else [4, 3]
    info = np.iinfo(qtype)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis, block_size=2),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=axis, block_size=2)]
    m = model(nodes, [("x", shape, F32), ("s", blocks, F32), ("z", blocks, qtype)],
              [("q", shape, qtype), ("d", shape, F32)], opset=21)
    feeds = {"x": RNG.uniform(-20, 20, shape).astype(F32), "s": RNG.uniform(0.05, 0.2, blocks).astype(F32),
             "z": RNG.integers(info.min // 2, info.max // 2, blocks).astype(qtype)}
    feeds["x"][0, 0] = 0.5 * feeds["s"][0, 0]  # a tie
    got, want = run_on(m, "cpu", feeds, simulate=False), reference(m, feeds)
    np.testing.assert_array_equal(got["q"], want["q"])
    np.testing.assert_allclose(got["d"], want["d"], rtol=1e-6)


@pytest.mark.parametrize("atype,btype", [(U8, I8), (U8, U8), (I8, I8)])
def test_onnxruntime_is_exact_exactly_where_the_suite_compares_to_it(atype, btype):
    """The gate of the ORT comparisons (:func:`host_isa.ort_integer_exact`), checked
    against ORT itself on the largest products (each pair of them past int16): where the
    gate says exact ORT equals numpy's int64 product; where it says not (u8 x s8, x86
    without VNNI) ORT does saturate -- so the gate skips no comparison it could make."""
    k, lo, hi = 64, np.iinfo(btype).min, np.iinfo(btype).max
    a = np.full((4, k), np.iinfo(atype).max if atype == U8 else np.iinfo(atype).min, atype)
    b = np.full((k, 16), lo if btype == I8 else hi, btype)
    b[:, ::2] = hi
    m = model([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], [("a", a.shape, atype)],
              [("y", (4, 16), np.int32)], {"b": b}, opset=13)
    want = a.astype(np.int64) @ b.astype(np.int64)
    exact = bool((_ort(m, {"a": a})["y"] == want).all())
    assert exact is ort_integer_exact(atype, btype)
    np.testing.assert_array_equal(run_on(m, "cpu", {"a": a}, simulate=False)["y"], want)
