"""importer.preflight: forms TVM imports wrongly or crashes on are typed errors naming node and op.

Each case was, before the check, a wrong result (NonMaxSuppression with a
non-constant box count took 0 boxes; IsInf ignored detect_negative), an internal
error (Range/Slice/Expand with value-dependent shapes, bfloat16, integer Pow) or a
missing output (a Shape or Constant output).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import hetpart
from hetpart.backend import HetpartBackend
from hetpart.errors import ModelLoadError, UnsupportedOpsError


def model(nodes, inputs, outputs, inits=(), opset=17):
    def vi(name, elem, shape):
        return helper.make_tensor_value_info(name, elem, shape)

    graph = helper.make_graph(nodes, "m", [vi(*i) for i in inputs], [vi(*o) for o in outputs], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


F, I64 = TensorProto.FLOAT, TensorProto.INT64

CASES = {
    "Range": model([helper.make_node("Range", ["s", "l", "d"], ["y"], name="rng")],
                   [("s", F, []), ("l", F, []), ("d", F, [])], [("y", F, [None])]),
    "Slice": model([helper.make_node("Slice", ["x", "st", "en"], ["y"], name="slc")],
                   [("x", F, [4, 5]), ("st", I64, [1]), ("en", I64, [1])], [("y", F, [None, 5])]),
    "Expand": model([helper.make_node("Expand", ["x", "shape"], ["y"], name="exp")],
                    [("x", F, [3, 1]), ("shape", I64, [2])], [("y", F, [None, None])]),
    "NonMaxSuppression": model(
        [helper.make_node("NonMaxSuppression", ["b", "s", "k"], ["y"], name="nms")],
        [("b", F, [1, 4, 4]), ("s", F, [1, 1, 4]), ("k", I64, [1])], [("y", I64, [None, 3])]),
    "IsInf": model([helper.make_node("IsInf", ["x"], ["y"], name="isinf", detect_negative=0)],
                   [("x", F, [4])], [("y", TensorProto.BOOL, [4])]),
    "Pow": model([helper.make_node("Pow", ["x", "e"], ["y"], name="pow")],
                 [("x", I64, [3]), ("e", I64, [3])], [("y", I64, [3])]),
    "Shape": model([helper.make_node("Shape", ["x"], ["y"], name="shp", start=1, end=2)],
                   [("x", F, [3, 4, 5])], [("y", I64, [1])]),
    "Constant": model([helper.make_node("Constant", [], ["y"], name="cst",
                                        value=numpy_helper.from_array(np.ones(2, np.float32)))],
                      [], [("y", F, [2])]),
    # output_shape [9, 8] is not what the (zero) pads give ([10, 8]): ONNX pads to it
    "ConvTranspose": model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="convt", strides=[3, 2],
                                             output_padding=[1, 1], output_shape=[9, 8])],
                           [("x", F, [1, 1, 3, 3]), ("w", F, [1, 2, 3, 3])], [("y", F, [1, 2, 9, 8])]),
    "BFLOAT16": model([helper.make_node("Cast", ["x"], ["y"], name="cast", to=F)],
                      [("x", TensorProto.BFLOAT16, [3])], [("y", F, [3])]),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_refused_forms_are_typed_errors_naming_the_op(op):
    with pytest.raises(UnsupportedOpsError) as info:
        hetpart.load(CASES[op])
    assert op in info.value.ops, info.value.ops
    assert op in str(info.value)


def test_sequence_outputs_are_typed_errors():
    m = model([helper.make_node("SplitToSequence", ["x"], ["seq"], name="split")], [("x", F, [4])], [])
    m.graph.output.append(helper.make_tensor_sequence_value_info("seq", F, [None]))
    with pytest.raises(ModelLoadError, match="'seq' is not a tensor"):  # the structure check, before any op
        hetpart.load(m)


def test_constant_slice_bounds_with_negative_axes_and_steps_run():
    # the non-constant form is refused above; with constants TVM slices right
    inits = [numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in [("st", [-1, 0]), ("en", [-1000, 5]), ("ax", [-1, -2]), ("sp", [-1, 2])]]
    m = model([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], [("x", F, [5, 6])],
              [("y", F, [None, None])], inits)
    x = np.arange(30, dtype=np.float32).reshape(5, 6)
    (got,) = HetpartBackend.run_model(m, [x])
    np.testing.assert_array_equal(got, ReferenceEvaluator(m).run(None, {"x": x})[0])


def test_constant_nms_limits_still_import():
    inits = [numpy_helper.from_array(np.array([2], np.int64), "k"),
             numpy_helper.from_array(np.array([0.5], np.float32), "iou")]
    m = model([helper.make_node("NonMaxSuppression", ["b", "s", "k", "iou"], ["y"])],
              [("b", F, [1, 4, 4]), ("s", F, [1, 1, 4])], [("y", I64, [None, 3])], inits)
    assert hetpart.load(m).kernels


def test_conv_transpose_output_shape_the_pads_imply_runs():
    # onnx's test_convtranspose_kernel_shape: output_shape is what strides, kernel and
    # output_padding give, so TVM (which ignores output_shape) computes ONNX's result
    m = model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2], kernel_shape=[3, 3],
                                output_padding=[1, 1], output_shape=[10, 8])],
              [("x", F, [1, 1, 3, 3]), ("w", F, [1, 2, 3, 3])], [("y", F, [1, 2, 10, 8])])
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 1, 3, 3), np.float32), rng.standard_normal((1, 2, 3, 3), np.float32)
    (got,) = HetpartBackend.run_model(m, [x, w])
    np.testing.assert_allclose(got, ReferenceEvaluator(m).run(None, {"x": x, "w": w})[0], rtol=1e-5, atol=1e-6)
