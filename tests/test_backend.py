"""hetpart.backend: the ONNX backend interface, checked against onnx's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.backend.base import Backend
from onnx.reference import ReferenceEvaluator

from hetpart import backend
from hetpart.backend import HetpartBackend
from hetpart.errors import TargetError


def two_output_model():
    """y = relu(x @ W), z = x + 1: two outputs, declared z first."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "W")
    one = numpy_helper.from_array(np.ones((1,), np.float32), "one")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Relu", ["m"], ["y"]),
             helper.make_node("Add", ["x", "one"], ["z"])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w, one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_is_an_onnx_backend_with_the_module_level_functions():
    assert issubclass(HetpartBackend, Backend)
    assert backend.supports_device("CPU") and backend.supports_device("CUDA")
    assert not backend.supports_device("TPU")
    with pytest.raises(TargetError, match="TPU"):
        backend.prepare(two_output_model(), "TPU")


@pytest.mark.parametrize("device", ["CPU", "CUDA"])  # CUDA: simulated on a machine without a GPU
def test_outputs_come_in_the_models_order_and_match_the_reference(device):
    model = two_output_model()
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": x})
    rep = backend.prepare(model, device)
    try:
        plan_devices = {p.device for p in rep.compiled.partitions}
        got = rep.run([x])
        again = rep.run({"x": x})
    finally:
        rep.close()
    assert plan_devices == {device.lower()}
    for g, a, e in zip(got, again, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(g, a)


def test_run_node_runs_one_node():
    x = np.array([[-1.0, 2.0]], np.float32)
    (y,) = backend.run_node(helper.make_node("Relu", ["x"], ["y"]), [x],
                            outputs_info=[(np.float32, (1, 2))])
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.parametrize("values", [[1.0], [2.0, 1.0, 2.0, 5.0]])
def test_unique_outputs_keep_their_length_even_of_one(values):
    # relax.run.unique returns a tuple of tensors of unknown shape; the op graph
    # typed them 0-d, so a length-1 result came back as a scalar
    outs = ["Y", "indices", "inverse_indices", "counts"]
    node = helper.make_node("Unique", ["X"], outs, sorted=1)
    graph = helper.make_graph([node], "u", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [len(values)])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT if o == "Y" else TensorProto.INT64,
                                                             [None]) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array(values, np.float32)
    for got, want in zip(backend.run_model(model, [x]), ReferenceEvaluator(model).run(None, {"X": x})):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


# --- forced_plan(cpu_tail=True): what only CPU kernels feed stays on the CPU (issue 20) -----


def test_cpu_tail_keeps_nms_trim_on_the_cpu_and_changes_nothing_else():
    """The detector's NMS is a CPU kernel; the three kernels that trim its rows to their
    count read only its outputs: forced to CUDA they went CPU -> GPU -> CPU every run; with
    cpu_tail they stay on the CPU.  Every other kernel keeps its forced device, and a model
    without CPU-only kernels gets the same plan."""
    import hetpart

    graph = hetpart.load("zoo:detector:small")
    forced, tail = backend.forced_plan(graph, "cuda"), backend.forced_plan(graph, "cuda", cpu_tail=True)
    nms = next(k.id for k in graph.nodes if k.func.startswith("all_class_non_max_suppression"))
    moved = {k for k in graph.kernels if forced.assignment[k] != tail.assignment[k]}
    assert moved and all(forced.assignment[k] == "cuda" and tail.assignment[k] == "cpu" for k in moved)
    assert all({graph.tensors[t].producer for t in graph.kernels[k].inputs} <= moved | {nms} for k in moved)
    assert [p.device for p in tail.partitions].count("cuda") == 1
    mlp = hetpart.load("zoo:mlp:small")
    assert backend.forced_plan(mlp, "cuda", cpu_tail=True).assignment == backend.forced_plan(mlp, "cuda").assignment


def test_cpu_tail_plan_of_the_detector_answers_as_onnx_runtime():
    """Compiled (CUDA partitions simulated on the CPU) and run: boxes, scores and TopK
    equal ONNX Runtime's, and NMS selects the same (batch, class, box) rows."""
    import onnxruntime as ort

    import hetpart
    from hetpart import models

    proto = models.build("detector", small=True, batch=2)
    graph = hetpart.load("zoo:detector:small:batch=2")
    compiled = hetpart.compile(backend.forced_plan(graph, "cuda", cpu_tail=True), graph, simulate=True,
                               progress=False)
    feeds = models.example_inputs(proto, seed=4)
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in proto.graph.output], ref.run(None, feeds)))
    with hetpart.Session(compiled) as s:
        got = s.run(feeds)
    for name in ("boxes", "scores", "topk_scores"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(got["topk_indices"], want["topk_indices"])
    assert sorted(map(tuple, got["selected_indices"].tolist())) == sorted(map(tuple, want["selected_indices"].tolist()))
