"""importer.expand_functions: ops TVM lacks, run through onnx's own function bodies.

Each model runs end to end through hetpart's ONNX backend (every kernel on the CPU)
and is compared with onnx's reference evaluator.  Without the pass, Celu/Swish fail
to import, RMSNormalization fails inside TIR (an internal error) and
LayerNormalization loses its optional Mean/InvStdDev outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hetpart.backend import HetpartBackend
from hetpart.importer.expand_functions import expand_functions


def one_node(op, inputs, outputs, opset, inits=(), **attrs):
    """A one-node model; ``inputs``/``outputs``: (name, shape) pairs, float32."""
    node = helper.make_node(op, [n for n, _ in inputs] + [t.name for t in inits], [n for n, _ in outputs], **attrs)
    graph = helper.make_graph(
        [node], op.lower(), [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def assert_matches_reference(model, feeds):
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = HetpartBackend.run_model(model, list(feeds.values()), device="CPU")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_celu_with_an_attribute_expands_and_matches_the_reference():
    # Celu's body is Constant <value_float = @alpha> ... : exercises attribute references
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 12)
    model = one_node("Celu", [("x", [2, 12])], [("y", [2, 12])], 17, alpha=0.7)
    assert_matches_reference(model, {"x": x})


def test_rms_normalization_expands_and_matches_the_reference():
    rng = np.random.default_rng(0)
    # normalised over both axes: TVM's own converter fails inside TIR on this one
    scale = numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "scale")
    model = one_node("RMSNormalization", [("x", [3, 8])], [("y", [3, 8])], 23, inits=[scale], axis=0)
    assert_matches_reference(model, {"x": rng.standard_normal((3, 8)).astype(np.float32)})


def test_layer_normalization_returns_its_mean_and_inv_std_dev():
    rng = np.random.default_rng(1)
    scale = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "scale")
    bias = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bias")
    model = one_node("LayerNormalization", [("x", [4, 6])], [("y", [4, 6]), ("mean", [4, 1]), ("inv", [4, 1])],
                     17, inits=[scale, bias], axis=-1)
    assert_matches_reference(model, {"x": rng.standard_normal((4, 6)).astype(np.float32)})


def test_the_callers_model_is_not_edited_and_tvm_known_ops_stay():
    celu = one_node("Celu", [("x", [2])], [("y", [2])], 17)
    before = celu.SerializeToString()
    expanded = expand_functions(celu)
    assert celu.SerializeToString() == before
    assert "Celu" not in {n.op_type for n in expanded.graph.node}
    relu = one_node("Relu", [("x", [2])], [("y", [2])], 17)
    assert expand_functions(relu) is relu


def test_the_expanded_model_passes_the_onnx_checker():
    swish = one_node("Swish", [("x", [5])], [("y", [5])], 24)
    onnx.checker.check_model(expand_functions(swish), full_check=True)
