"""NonMaxSuppression through hetpart (:mod:`hetpart.importer.non_max_suppression`) against
the ONNX reference evaluator, ONNX Runtime and the onnx package's own node-test data.

Every case is one NonMaxSuppression node of a single model (its limits constants, as
hetpart requires), so one compile covers them all.  The random cases cover what the
node tests do not: ties in score, flipped corners, zero-area boxes, scores <= 0, an
IoU threshold of 0, nothing above the score threshold, max_output_boxes_per_class
of 0 and above the box count, several batches and classes, and more boxes than the
heap's first levels hold, negative coordinates, NaN scores (dropped by the score
threshold) and a NaN threshold (selects nothing), identical boxes, and more kept boxes
than several vectors of the suppression test; and absent optional inputs, against
ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import hetpart.backend

OPSET = 13


def _boxes(rng, batch, n, flip=False, zero_area=0.0, center=False):
    """Random boxes on a 20x20 field, sides 0.5..6 (overlapping often)."""
    lo = rng.uniform(0, 20, (batch, n, 2))
    side = rng.uniform(0.5, 6, (batch, n, 2))
    side[rng.uniform(size=(batch, n)) < zero_area, 0] = 0.0
    if center:
        return np.concatenate([lo + side / 2, side], axis=2).astype(np.float32)  # [xc, yc, w, h]
    boxes = np.concatenate([lo, lo + side], axis=2)  # [y1, x1, y2, x2]
    if flip:
        swap = rng.uniform(size=(batch, n)) < 0.5
        boxes[swap] = boxes[swap][:, [2, 3, 0, 1]]
    return boxes.astype(np.float32)


def _random_cases():
    rng = np.random.default_rng(7)
    ties = lambda *shape: rng.choice([0.2, 0.4, 0.6, 0.8], shape).astype(np.float32)  # noqa: E731
    uniform = lambda lo, hi, *shape: rng.uniform(lo, hi, shape).astype(np.float32)  # noqa: E731
    # name: (boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold, center_point_box)
    return {
        "ties_in_score": (_boxes(rng, 2, 64), ties(2, 3, 64), 8, 0.4, 0.3, 0),
        "flipped_and_zero_area": (_boxes(rng, 2, 30, flip=True, zero_area=0.2), uniform(0, 1, 2, 2, 30), 100, 0.2,
                                  0.0, 0),
        "center_point_box": (_boxes(rng, 1, 40, center=True), ties(1, 2, 40), 6, 0.3, 0.1, 1),
        "nothing_above_score_threshold": (_boxes(rng, 1, 20), uniform(0, 0.9, 1, 2, 20), 5, 0.5, 0.95, 0),
        "max_output_zero": (_boxes(rng, 1, 20), uniform(0, 1, 1, 2, 20), 0, 0.5, 0.0, 0),
        "negative_scores": (_boxes(rng, 1, 40), uniform(-1, 1, 1, 2, 40), 40, 0.3, -0.5, 0),
        "iou_threshold_zero": (_boxes(rng, 1, 40), uniform(0, 1, 1, 2, 40), 40, 0.0, 0.0, 0),
        "many_boxes_one_class": (_boxes(rng, 1, 300), ties(1, 1, 300), 300, 0.5, 0.0, 0),
        "negative_coordinates": (_boxes(rng, 1, 60, flip=True) - 25.0, uniform(0, 1, 1, 2, 60), 30, 0.3, 0.1, 0),
        "nan_scores": (_boxes(rng, 1, 60), _with_nan(rng, uniform(0, 1, 1, 3, 60)), 30, 0.3, 0.2, 0),
        "nan_score_threshold": (_boxes(rng, 1, 20), uniform(0, 1, 1, 2, 20), 5, 0.5, np.nan, 0),
        "identical_boxes": (np.repeat(_boxes(rng, 1, 4), 10, axis=1), ties(1, 2, 40), 40, 0.5, 0.0, 0),
        # sparse boxes: most are kept, so the kept boxes fill several vectors of the suppression test
        "kept_past_several_vectors": (_boxes(rng, 1, 200) * 5.0, uniform(0, 1, 1, 1, 200), 150, 0.1, 0.0, 0),
    }


def _with_nan(rng, scores):
    """``scores`` with about one in five NaN (ONNX Runtime and the reference drop them at the
    score-threshold test: ``NaN > threshold`` is false)."""
    scores[rng.uniform(size=scores.shape) < 0.2] = np.nan
    return scores


def _node_test_cases():
    """The onnx package's NonMaxSuppression node tests: name -> (inputs, expected, center)."""
    from onnx.backend.test.case.node import nonmaxsuppression

    cases = {}

    def capture(node, inputs, outputs, name, **kwargs):
        center = next((a.i for a in node.attribute if a.name == "center_point_box"), 0)
        cases[name] = (inputs, outputs[0], center)

    original = nonmaxsuppression.expect
    nonmaxsuppression.expect = capture
    try:
        for attr in dir(nonmaxsuppression.NonMaxSuppression):
            if attr.startswith("export"):
                getattr(nonmaxsuppression.NonMaxSuppression, attr)()
    finally:
        nonmaxsuppression.expect = original
    return cases


def _model(cases: dict) -> onnx.ModelProto:
    """One NonMaxSuppression node per case: inputs ``<case>.boxes``/``.scores``, limits as
    initializers, output ``<case>``."""
    nodes, inputs, outputs, inits = [], [], [], []
    for name, (boxes, scores, max_out, iou, score, center) in cases.items():
        limits = [f"{name}.max", f"{name}.iou", f"{name}.score"]
        inits += [numpy_helper.from_array(np.array(max_out, np.int64).reshape(1), limits[0]),
                  numpy_helper.from_array(np.array(iou, np.float32).reshape(1), limits[1]),
                  numpy_helper.from_array(np.array(score, np.float32).reshape(1), limits[2])]
        inputs += [helper.make_tensor_value_info(f"{name}.boxes", onnx.TensorProto.FLOAT, boxes.shape),
                   helper.make_tensor_value_info(f"{name}.scores", onnx.TensorProto.FLOAT, scores.shape)]
        outputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [f"{name}.n", 3]))
        nodes.append(helper.make_node("NonMaxSuppression", [f"{name}.boxes", f"{name}.scores", *limits], [name],
                                      name=name, center_point_box=center))
    graph = helper.make_graph(nodes, "nms_cases", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _feeds(cases: dict) -> dict:
    return {f"{n}.{k}": v for n, c in cases.items() for k, v in zip(("boxes", "scores"), c[:2])}


@pytest.fixture(scope="module")
def node_tests():
    return {name: (*inputs[:2], *(np.asarray(x).reshape(-1)[0] for x in inputs[2:]), center)
            for name, (inputs, _, center) in _node_test_cases().items()}, \
        {name: expected for name, (_, expected, _) in _node_test_cases().items()}


# One model holds every case, so one import and compile (~20 s on 2 cores: each case is
# its own kernel) covers them all; the tests reading it are marked slow.
@pytest.fixture(scope="module")
def results(node_tests):
    """hetpart's outputs (every kernel on the CPU) for the random cases and the node tests."""
    cases = {**_random_cases(), **node_tests[0]}
    model = _model(cases)
    rep = hetpart.backend.prepare(model, device="CPU")
    try:
        got = dict(zip(rep.output_names, rep.run(_feeds(cases))))
    finally:
        rep.close()
    return model, cases, got


@pytest.fixture(scope="module")
def reference(results):
    model, cases, _ = results
    names = list(_random_cases())
    return dict(zip(names, ReferenceEvaluator(model).run(names, _feeds(cases))))


@pytest.mark.parametrize("name", list(_random_cases()))
@pytest.mark.slow
def test_matches_the_onnx_reference(results, reference, name):
    _, _, got = results
    want = reference[name]
    np.testing.assert_array_equal(got[name], want, err_msg=f"{name}: hetpart vs onnx.reference")
    assert got[name].dtype == np.int64 and got[name].shape == (len(want), 3)


@pytest.mark.slow
def test_onnxruntime_agrees_on_every_random_case(results):
    """The same rows from ONNX Runtime, a second independent implementation."""
    ort = pytest.importorskip("onnxruntime")
    model, cases, got = results
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = list(_random_cases())
    for name, want in zip(names, session.run(names, _feeds(cases))):
        np.testing.assert_array_equal(got[name], want, err_msg=f"{name}: hetpart vs onnxruntime")


@pytest.mark.slow
def test_onnx_node_test_data(results, node_tests):
    """The onnx package's node tests (their limits made constants): the expected rows."""
    _, _, got = results
    for name, expected in node_tests[1].items():
        np.testing.assert_array_equal(got[name], expected, err_msg=name)


@pytest.mark.slow
def test_the_cases_mean_something(results):
    """Suppression happened, ties and empty outputs occurred: the comparisons above are not vacuous."""
    _, cases, got = results
    assert len(got["nothing_above_score_threshold"]) == 0 and len(got["max_output_zero"]) == 0
    assert len(got["many_boxes_one_class"]) < 300  # IoU suppressed some
    assert 0 < len(got["iou_threshold_zero"]) < 2 * 40
    kept = got["ties_in_score"]
    scores = cases["ties_in_score"][1]
    assert len(np.unique(scores[kept[:, 0], kept[:, 1], kept[:, 2]])) < len(kept)  # kept boxes with tied scores
    assert len(got["kept_past_several_vectors"]) > 48  # more kept boxes than 3 vectors of 16 lanes
    assert len(got["nan_score_threshold"]) == 0 and 0 < len(got["nan_scores"])
    assert len(got["identical_boxes"]) == 8  # each box once per class: its copies suppressed (IoU 1)


def test_flop_estimate_of_the_nms_kernel_is_bounded(zoo_graph):
    """The op graph's ``flops`` (TVM's estimate, a cost-model feature) counts a ``for`` loop
    of data-dependent extent as 2**32 iterations: the kernel keeps such loops ``while``
    loops, so the estimate stays near a few operations per box and class."""
    graph = zoo_graph("detector")  # the session's import of zoo:detector:small
    (nms,) = [k for k in graph.nodes if k.func.startswith("all_class_non_max_suppression")]
    boxes, classes = 128, 4  # the small detector's
    assert 0 < nms.flops < 100 * boxes * classes


# --- absent optional inputs ---------------------------------------------------------------
# ONNX: an absent iou_threshold is 0 (any overlap suppresses), an absent score_threshold
# filters nothing.  TVM's converter read them as 0.5 and 0.0 (dropping every score <= 0).
# onnx.reference cannot run a node with absent inputs, so ONNX Runtime is the reference.
def _absent_inputs_model(boxes, scores):
    inits = [numpy_helper.from_array(np.array([40], np.int64), "k"),
             numpy_helper.from_array(np.array([0.3], np.float32), "iou")]
    forms = {"no_thresholds": ["b", "s", "k"], "empty_names": ["b", "s", "k", "", ""],
             "no_score_threshold": ["b", "s", "k", "iou"]}
    nodes = [helper.make_node("NonMaxSuppression", ins, [name], name=name) for name, ins in forms.items()]
    graph = helper.make_graph(nodes, "nms_absent", [
        helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, boxes.shape),
        helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, scores.shape)],
        [helper.make_tensor_value_info(n, onnx.TensorProto.INT64, [f"{n}.n", 3]) for n in forms], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), list(forms)


@pytest.mark.slow
def test_absent_thresholds_mean_what_onnx_says():
    pytest.importorskip("onnxruntime")
    from hetpart.bench.peers import ort_session

    rng = np.random.default_rng(11)
    boxes = _boxes(rng, 1, 40, flip=True) - 10.0
    scores = rng.uniform(-1, 1, (1, 2, 40)).astype(np.float32)
    scores[0, 0, :3] = -np.inf  # no threshold: kept as candidates, last in order
    model, names = _absent_inputs_model(boxes, scores)
    want = dict(zip(names, ort_session(model).run(names, {"b": boxes, "s": scores})))
    rep = hetpart.backend.prepare(model, device="CPU")
    try:
        got = dict(zip(rep.output_names, rep.run({"b": boxes, "s": scores})))
    finally:
        rep.close()
    for name in names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name}: hetpart vs onnxruntime")
    kept_scores = scores[0, want["no_score_threshold"][:, 1], want["no_score_threshold"][:, 2]]
    assert (kept_scores <= 0).any()  # the case means something: TVM's 0.0 default dropped these


def test_tvms_own_lowering_never_sees_the_no_threshold_marker(monkeypatch):
    """Forms hetpart's kernel does not cover (here float16) keep TVM's legalisation; an
    absent score threshold reaches it as -inf, not as the NaN marker (under which
    ``score > NaN`` would select nothing)."""
    from tvm import relax

    from hetpart.importer import non_max_suppression as nms

    boxes = relax.Var("b", relax.TensorType([1, 30, 4], "float16"))
    scores = relax.Var("s", relax.TensorType([1, 2, 30], "float16"))
    call = relax.op.vision.all_class_non_max_suppression(
        boxes, scores, relax.const(5, "int64"), relax.const(0.5, "float32"),
        relax.const(nms.NO_SCORE_THRESHOLD, "float32"), output_format="onnx")
    seen = []
    original = nms._tvm_legalize
    monkeypatch.setattr(nms, "_tvm_legalize", lambda bb, c: seen.append(float(c.args[4].value.numpy())) or
                        original(bb, c))
    bb = relax.BlockBuilder()
    with bb.function("main", [boxes, scores]):
        bb.emit_func_output(nms.legalize(bb, call))
    assert seen == [float("-inf")]
