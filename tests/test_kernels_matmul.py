"""The CPU matmul rule's tiles for 1x1 NCHW convolutions (hetpart/kernels/rules/cpu_matmul.py,
``_activation_rows``; hetpart/kernels/register_tile.py, ``_write_back_loops``: a tile
written back along its vectors): where the image rows are
full SIMD vectors (112 = 7 x 16 and 7 x 8 lanes, so on AVX-512 and AVX2 alike), the
tile is output channels x row vectors, the weight broadcast and not packed; against
ONNX Runtime (finite inputs with negatives and zeros; rtol 1e-5, atol 1e-6 of the
largest output: ORT sums in another order and its SiLU is within ~5e-8) and
``onnx.reference`` (NaN and +-inf in the input: each spreads over its pixel's
output channels; ``inf + -inf`` is NaN in any order).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper, numpy_helper

from onnx_cases import assert_matches, reference

from hetpart import kernels, load
from hetpart.backend import forced_plan
from hetpart.kernels import weight_prepack
from hetpart.targets import cpu_tvm_target

IC, OC, HW = 16, 48, 112


def _model(epilogue: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((OC, IC, 1, 1)) * 0.5).astype(np.float32)
    b = rng.standard_normal(OC).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1])]
    nodes += ([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
              if epilogue == "silu" else [helper.make_node("Identity", ["c"], ["y"])])
    graph = helper.make_graph(
        nodes, "pointwise", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, IC, HW, HW])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, OC, HW, HW])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _input(special: bool = False) -> np.ndarray:
    x = (np.random.default_rng(1).standard_normal((1, IC, HW, HW)) * 3).astype(np.float32)
    x.flat[::9] = 0.0
    if special:
        x.flat[[3, 500, HW * HW + 7, x.size - 1]] = [np.nan, np.inf, -np.inf, np.inf]
    return x


def _hetpart(m, x):
    import hetpart

    graph = load(m)
    with hetpart.Session(hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)) as s:
        return s.run({"x": x})["y"]


@pytest.mark.parametrize("epilogue", ["silu", "none"])
def test_pointwise_conv_matches_onnxruntime(epilogue):
    m, x = _model(epilogue), _input()
    got = _hetpart(m, x)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=epilogue)


def test_pointwise_conv_nan_and_inf_as_the_reference():
    m, x = _model("silu"), _input(special=True)
    want = reference(m, {"x": x})["y"]
    assert np.isnan(want).any() and np.isinf(want).any()
    assert_matches(_hetpart(m, x), want, rtol=1e-5, atol=1e-6 * float(np.nanmax(np.abs(want[np.isfinite(want)]))))


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
def test_pointwise_conv_vectorises_image_rows_with_weight_broadcast(mcpu):
    """Rows of the image are the vectors: no packed weight panel, and the vector loop
    of the multiply-accumulate indexes the output's last (width) dim."""
    from hetpart.targets import host_triple

    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 4})
    mod = kernels.schedule(weight_prepack.mark_weights(load(_model("silu")).module), target)  # as build() does
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuMatmul"
    text = func.script()
    assert "layout_rewrite_preproc" not in text, "the weight is broadcast, not packed"
    updates = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlockRealize, lambda r: updates.append(r)
                                        if r.block.name_hint.endswith("_update") else None))
    (update,) = updates
    vec = []
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, lambda f: vec.append(f.loop_var)
                                        if f.kind == tvm.tirx.ForKind.VECTORIZED else None))
    x = func.params[0]
    loads = []
    tvm_ffi.structural_walk(update.block.body, (tvm.ir.TensorLoad, lambda ld: loads.append(ld)
                                                if ld.source.same_as(x) else None))
    assert loads, text
    assert _bound_to_vector(update, loads[0].indices[-1], vec), "the image's width is not the vector dim:\n" + text


def _bound_to_vector(realize, index, vec_vars) -> bool:
    """Whether a block var ``index`` uses is bound to a vectorised loop."""
    names = []
    tvm_ffi.structural_walk(index, (tvm.tirx.Var, names.append))
    for iv, value in zip(realize.block.iter_vars, realize.iter_values):
        if any(iv.var.same_as(n) for n in names):
            used = []
            tvm_ffi.structural_walk(value, (tvm.tirx.Var, used.append))
            if any(v.same_as(u) for v in vec_vars for u in used):
                return True
    return False


def _model_14(epilogue: str = "silu") -> onnx.ModelProto:
    """A 1x1 conv + SiLU on 14x14 (EfficientNet's 112->672): 7-row tiles of 16-lane vectors."""
    rng = np.random.default_rng(2)
    ic, oc, hw = 32, 96, 14
    w = (rng.standard_normal((oc, ic, 1, 1)) * 0.3).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    graph = helper.make_graph(
        nodes, "pointwise14", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, ic, hw, hw])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, oc, hw, hw])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_seven_row_tile_matches_onnxruntime_and_the_reference():
    m = _model_14()
    x = (np.random.default_rng(3).standard_normal((1, 32, 14, 14)) * 3).astype(np.float32)
    x.flat[::11] = 0.0
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_matches(_hetpart(m, x), want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
    x.flat[[4, 200, 3000]] = [np.nan, np.inf, -np.inf]
    want = reference(m, {"x": x})["y"]
    assert_matches(_hetpart(m, x), want, rtol=1e-5, atol=1e-6 * float(np.nanmax(np.abs(want[np.isfinite(want)]))))


def test_seven_row_tile_writes_back_along_its_vectors():
    """7 rows of a 14-wide image: the write-back's vector loop runs along the tile's
    output-channel vectors (read contiguously), not along 7-lane rows (each lane a gather)."""
    mod = kernels.schedule(weight_prepack.mark_weights(load(_model_14()).module), cpu_tvm_target())
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    realizes = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlockRealize, lambda r: realizes.append(r)
                                        if r.block.name_hint.endswith("_global") and not r.block.name_hint.startswith("param")
                                        else None))
    assert realizes, func.script()
    wb = realizes[-1]
    vec = []
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, lambda f: vec.append(f.loop_var)
                                        if f.kind == tvm.tirx.ForKind.VECTORIZED else None))
    store = wb.block.body
    channel_index = store.indices[1]  # the output is [n, oc, h, w]
    assert _bound_to_vector(wb, channel_index, vec), func.script()


def _gemv(k: int = 1280, n: int = 1000) -> onnx.ModelProto:
    """EfficientNet's classifier: x[1, k] @ W[k, n] + b."""
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal((n,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t"]), helper.make_node("Add", ["t", "B"], ["y"])], "gemv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, n])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gemv_tile_accumulates_at_most_eight_vectors_and_matches_onnxruntime():
    """A 25-vector GEMV tile (the register budget's divisor of 125 half-width vectors)
    ran 441 us against ONNX Runtime's 73 on one thread; capped at eight, 78 us."""
    from hetpart.kernels.register_tile import GEMV_MAX_VECTORS
    from hetpart.targets import host_triple

    m = _gemv()
    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "skylake-avx512", "num-cores": 4})
    mod = kernels.schedule(weight_prepack.mark_weights(load(m).module), target)
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuMatmul"
    unrolled = []
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, lambda f: unrolled.append(int(f.extent))
                                        if f.kind == tvm.tirx.ForKind.UNROLLED else None))
    assert unrolled and max(unrolled) <= GEMV_MAX_VECTORS, func.script()
    x = np.random.default_rng(5).standard_normal((1, 1280)).astype(np.float32)
    x[0, ::7] = 0.0
    x[0, 1::5] *= -4.0
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_matches(_hetpart(m, x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()), what="gemv")
