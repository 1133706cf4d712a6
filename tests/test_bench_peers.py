"""How the benchmark opens ONNX Runtime (``hetpart.bench.peers.ort_session``): at an IR
version an older ORT reads, and through external data for models past protobuf's
2 GB limit (issue 19).  The reference is ``onnx.reference.ReferenceEvaluator``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from hetpart import models

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed")

from hetpart.bench import peers  # noqa: E402 - after the skip
from hetpart.bench.peers import PEERS, PeerModel, ort_session  # noqa: E402


@pytest.fixture
def seen(monkeypatch):
    """The IR version and the source (bytes or a path) of every model handed to ORT."""
    real = ort.InferenceSession
    calls = []

    def spy(source, *args, **kwargs):
        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
        calls.append({"ir_version": model.ir_version, "path": not isinstance(source, bytes)})
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    return calls


def _relu_model() -> onnx.ModelProto:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "relu", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_ort_gets_the_ir_version_the_opsets_need(seen):
    """make_model stamps onnx's newest IR version (14 with onnx 1.2x); ORT 1.20 refuses
    more than 10, though opset 13 needs only IR 7 (cpu_nms failed on the GPU machine)."""
    model = _relu_model()
    stamped = model.ir_version
    assert stamped > 7
    out = ort_session(model).run(None, {"x": np.array([-1, 0, 2], np.float32)})[0]
    assert out.tolist() == [0, 0, 2]
    assert seen == [{"ir_version": 7, "path": False}]
    assert model.ir_version == stamped  # the caller's model is untouched


def test_external_data_route_runs_the_model_like_the_reference(seen, zoo_onnx):
    """The route models past 2 GB take (``EncodeError: Failed to serialize proto``
    before), forced here on a small model: saved with external data, opened by path."""
    model = zoo_onnx("dlrm")
    before = [t.raw_data for t in model.graph.initializer]
    feeds = models.example_inputs(model, seed=3)
    session = ort_session(model, external_data_above=0)
    got = session.run(None, feeds)
    want = ReferenceEvaluator(model).run(None, feeds)
    assert seen and seen[-1]["path"], "the session was not opened from a saved file"
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    assert [t.raw_data for t in model.graph.initializer] == before  # weights back in the proto


def test_onnxruntime_peer_goes_through_ort_session(monkeypatch, zoo_onnx):
    """The peer uses the helper, so a >2 GB model reaches the external-data route."""
    calls = []
    real = peers.ort_session
    monkeypatch.setattr(peers, "ort_session", lambda m, **kw: calls.append(m) or real(m, **kw))
    model = zoo_onnx("mlp")
    feeds = models.example_inputs(model)
    PEERS["onnxruntime_cpu"].make(PeerModel("mlp", model, list(feeds)), False)(feeds)
    assert calls == [model]
