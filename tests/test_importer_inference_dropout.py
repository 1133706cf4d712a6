"""Dropout with its mask output, in inference, against onnx.reference and ONNX Runtime.

The bug: the importer refused every Dropout with a mask output ("training mode or a
mask output"), though in inference ONNX defines the output as the input and the mask
as all true -- old exports (opset 7-11) name the mask routinely.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnx_cases import assert_matches, model, reference, run_on

from hetpart.errors import UnsupportedOpsError
from hetpart.importer import load

F32 = np.float32


def _dropout(opset: int, inputs=("x",), initializers=None, **attrs):
    node = helper.make_node("Dropout", list(inputs), ["y", "mask"], **attrs)
    mask_type = F32 if opset < 10 else np.bool_  # Dropout-7's mask has the input's type
    return model([node, helper.make_node("Relu", ["y"], ["r"])], [("x", [3, 5], F32)],
                 [("r", [3, 5], F32), ("mask", [3, 5], mask_type)], initializers, opset=opset)


def _feeds():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(F32)
    x[0, 0] = np.nan  # the mask is true at NaN too
    return {"x": x}


CASES = {
    "opset7": lambda: _dropout(7),
    "opset10-ratio": lambda: _dropout(10, ratio=0.3),
    "opset12-no-training-input": lambda: _dropout(12, ("x", "ratio"), {"ratio": F32(0.4)}),
    "opset13-training-false": lambda: _dropout(13, ("x", "ratio", "t"), {"ratio": F32(0.4), "t": np.bool_(False)}),
    "opset22-training-ratio-zero": lambda: _dropout(22, ("x", "ratio", "t"), {"ratio": F32(0.0), "t": np.bool_(True)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_inference_dropout_with_mask_matches_reference_and_onnxruntime(case):
    m, feeds = CASES[case](), _feeds()
    got = run_on(m, "cpu", feeds, simulate=False)
    want = reference(m, feeds)
    assert_matches(got["r"], want["r"], what="r")
    # onnx.reference returns a bool mask even where Dropout-7's schema types it as the input
    assert_matches(got["mask"], want["mask"].astype(got["mask"].dtype), what="mask")
    ort_out = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert_matches(got["r"], ort_out[0], what="r (ORT)")
    if m.opset_import[0].version >= 12:
        # Before opset 12 the spec leaves the inference mask unsaid: onnx.reference (the
        # one hetpart follows) returns all true, ORT's Dropout-7/10 kernels all false.
        np.testing.assert_array_equal(got["mask"], ort_out[1])


def test_training_dropout_is_still_refused():
    m = _dropout(13, ("x", "ratio", "t"), {"ratio": F32(0.4), "t": np.bool_(True)})
    with pytest.raises(UnsupportedOpsError, match="training mode"):
        load(m)


def test_training_mode_from_an_input_is_refused():
    node = helper.make_node("Dropout", ["x", "", "t"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                                        helper.make_tensor_value_info("t", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(UnsupportedOpsError, match="training mode"):
        load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
