"""``Session.run`` returns the model's output names (not TVM's ``gv`` / ``lv74``) and
takes numpy scalars and 0-d arrays as feeds; values checked against onnxruntime.

The names travel OpGraph.output_names -> CompiledModel.output_names (the manifest's
``output_names``) -> Session; nothing is guessed at run time.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from onnx_cases import compile_on, model

from hetpart import compiler, importer
from hetpart.partitioner import Plan
from hetpart.runtime import MultiSession, Session


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _classifier():
    """x -> logits = x W + b, probs = Softmax(logits), and ``same`` = Identity(probs):
    two model outputs that TVM holds in one tensor."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
             helper.make_node("Identity", ["probs"], ["same"])]
    return model(nodes, [("x", [2, 8], np.float32)],
                 [("logits", [2, 4], np.float32), ("probs", [2, 4], np.float32), ("same", [2, 4], np.float32)],
                 {"w": rng.standard_normal((8, 4)).astype(np.float32), "b": np.float32([0.1, 0.2, 0.3, 0.4])})


@pytest.fixture(scope="module")
def classifier():
    m = _classifier()
    return m, compile_on(m, "cuda", simulate=True)


def test_graph_and_artifact_carry_the_model_output_names(classifier, tmp_path):
    m, compiled = classifier
    graph = importer.load(m)
    assert graph.model_output_names == ("logits", "probs", "same")
    assert compiled.model_output_names == ["logits", "probs", "same"]
    assert compiler.load_compiled(compiled.save(tmp_path / "art")).model_output_names == ["logits", "probs", "same"]


def test_run_returns_outputs_by_onnx_name(classifier):
    m, compiled = classifier
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    want = _ort(m, {"x": x})
    with Session(compiled) as s:
        inline = s.run({"x": x})
        threaded = s.submit({"x": x}).result()
    for got in (inline, threaded):
        assert list(got) == ["logits", "probs", "same"]
        for name, w in want.items():
            np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6, err_msg=name)
    assert inline["probs"] is not inline["same"]  # one tensor, two arrays the caller owns


def test_loaded_artifact_and_multisession_use_the_same_names(classifier, tmp_path):
    m, compiled = classifier
    loaded = compiler.load_compiled(compiled.save(tmp_path / "art"))
    x = np.ones((2, 8), np.float32)
    with MultiSession([loaded, compiled]) as ms:
        for got in ms.run([{"x": x}, {"x": x}]):
            assert list(got) == ["logits", "probs", "same"]
            np.testing.assert_allclose(got["logits"], _ort(m, {"x": x})["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("low", [np.float32(0), np.array(0, dtype=np.float32), np.float32(-0.5)])
def test_numpy_scalars_and_0d_arrays_feed_scalar_inputs(low):
    """Clip's min and max as model inputs of shape [] (how exporters pass them)."""
    m = model([helper.make_node("Clip", ["x", "low", "high"], ["y"])],
              [("x", [3, 5], np.float32), ("low", [], np.float32), ("high", [], np.float32)],
              [("y", [3, 5], np.float32)])
    x = np.linspace(-2, 2, 15, dtype=np.float32).reshape(3, 5)
    feeds = {"x": x, "low": low, "high": np.float32(1.25)}
    with Session(compile_on(m, "cpu", simulate=True)) as s:
        got = s.run(feeds)
    want = _ort(m, {k: np.asarray(v) for k, v in feeds.items()})
    np.testing.assert_array_equal(got["y"], want["y"])


def test_scalar_of_the_wrong_dtype_is_a_clear_error():
    from hetpart.errors import RuntimeFailure

    m = model([helper.make_node("Add", ["x", "s"], ["y"])], [("x", [4], np.float32), ("s", [], np.float32)],
              [("y", [4], np.float32)])
    with Session(compile_on(m, "cpu", simulate=True)) as s:
        with pytest.raises(RuntimeFailure, match="'s' has dtype float64"):
            s.run({"x": np.zeros(4, np.float32), "s": 1.5})


def _named_outputs_model(names):
    """x -> r = Relu(x) -> probs = Softmax(r) -> Neg: outputs ``probs`` and the Neg, named ``names``."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], [names[0]], axis=-1),
             helper.make_node("Neg", [names[0]], [names[1]])]
    return model(nodes, [("x", [2, 8], np.float32)], [(n, [2, 8], np.float32) for n in names])


def test_an_output_named_like_an_internal_relax_tensor_takes_its_onnx_name(tmp_path):
    """The model names an output as Relax names an internal tensor (``lv``): the output's
    tensor takes the name and the internal tensor a fresh one, so every output shows under
    its ONNX name; a plan that splits at the internal tensor compiles, its manifest and
    ``Session.run`` keyed by the model's names, values as onnxruntime's."""
    plain = importer.load(_named_outputs_model(("probs", "neg")))
    internal = [t.name for t in plain.tensors.values() if not t.is_input and not t.is_output]
    clash = internal[0]  # a Relax var name such as lv
    m = _named_outputs_model(("probs", clash))
    graph = importer.load(m)
    graph.validate()
    assert graph.outputs == graph.model_output_names == ("probs", clash)
    renamed = {t: old for t, old in graph.relax_names.items() if old == clash}
    assert len(renamed) == 1 and not graph.tensors[next(iter(renamed))].is_output
    assert len(graph.tensors) == len(plain.tensors)
    first = graph.topological_order()[0]
    assert set(graph.kernels[first].outputs) == set(renamed)  # the Relu's tensor moved
    plan = Plan.by_hand(graph, {k: "cpu" if k == first else "cuda" for k in graph.kernels})
    compiled = compiler.compile(plan, simulate=True, progress=False)
    assert compiled.model_output_names == ["probs", clash]
    assert [t.name for t in compiled.outputs] == ["probs", clash]
    crossing = {t.name for p in compiled.partitions for t in p.inputs} - set(graph.inputs)
    assert crossing == set(renamed)
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)
    want = _ort(m, {"x": x})
    for art in (compiled, compiler.load_compiled(compiled.save(tmp_path / "art"))):
        with Session(art) as s:
            got = s.run({"x": x})
        assert list(got) == ["probs", clash]
        for name, w in want.items():
            np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6, err_msg=name)
