"""NonMaxSuppression's candidate selection (:data:`hetpart.importer.non_max_suppression.SELECT_CANDIDATES`)
against the ONNX reference evaluator, and against the kernel with the switch off.

Each case builds :func:`~hetpart.importer.non_max_suppression.nms_primfunc` alone for its sizes
(about a second each) with the switch on and off and runs both.  The cases are the ones that
stress the selection: ties in score (the coarse key cannot split them), heavy suppression
(more rounds than one), nothing above the score threshold, all boxes identical, zero-area
boxes, ``max_output_boxes_per_class`` 0, 1 and above the box count, box counts that are not
whole vectors, -0.0 beside 0.0, infinite and denormal scores; and, against the switch off only
(the reference does not define them), NaN scores and no score threshold.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hetpart.importer import non_max_suppression as nms


def _run(boxes, scores, max_out, iou, score, select: bool) -> np.ndarray:
    """The kernel's selected rows for corner-form ``boxes``, with the switch as ``select``."""
    import tvm

    from hetpart.targets import cpu_tvm_target

    b, n, _ = boxes.shape
    c = scores.shape[1]
    keep = min(max(int(max_out), 0), n)
    old = nms.SELECT_CANDIDATES
    nms.SELECT_CANDIDATES = select
    try:
        func = nms.nms_primfunc(b, n, c, keep, iou, score)
    finally:
        nms.SELECT_CANDIDATES = old
    exe = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=cpu_tvm_target())
    rows = tvm.runtime.tensor(np.zeros((b * c * keep, 3), np.int64))
    count = tvm.runtime.tensor(np.zeros(1, np.int64))
    exe["main"](tvm.runtime.tensor(boxes), tvm.runtime.tensor(scores), rows, count)
    return rows.numpy()[:int(count.numpy()[0])]


def _reference(boxes, scores, max_out, iou, score) -> np.ndarray:
    node = helper.make_node("NonMaxSuppression", ["b", "s", "k", "iou", "thr"], ["out"])
    inits = [numpy_helper.from_array(np.array([max_out], np.int64), "k"),
             numpy_helper.from_array(np.array([iou], np.float32), "iou"),
             numpy_helper.from_array(np.array([score], np.float32), "thr")]
    graph = helper.make_graph([node], "nms", [
        helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, boxes.shape),
        helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, scores.shape)],
        [helper.make_tensor_value_info("out", onnx.TensorProto.INT64, ["n", 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return ReferenceEvaluator(model).run(None, {"b": boxes, "s": scores})[0]


def _boxes(rng, batch, n, field=20.0, side=(0.5, 6.0)):
    lo = rng.uniform(0, field, (batch, n, 2))
    sides = rng.uniform(*side, (batch, n, 2))
    return np.concatenate([lo, lo + sides], axis=2).astype(np.float32)


def _clusters(rng, batch, clusters, per):
    """``clusters`` far-apart boxes, each repeated ``per`` times with a jitter (IoU ~0.9):
    one box per cluster survives, so most popped boxes are suppressed."""
    base = _boxes(rng, batch, clusters, field=400.0, side=(8.0, 12.0))
    out = np.repeat(base, per, axis=1) + rng.uniform(-0.2, 0.2, (batch, clusters * per, 4))
    return out.astype(np.float32)


def _cases():
    rng = np.random.default_rng(131)
    u = lambda *shape: rng.uniform(0, 1, shape).astype(np.float32)  # noqa: E731
    ties = lambda *shape: rng.choice([0.25, 0.5, 0.75], shape).astype(np.float32)  # noqa: E731
    zero_area = _boxes(rng, 1, 50)
    zero_area[0, ::3, 2] = zero_area[0, ::3, 0]
    signed_zero = np.where(rng.uniform(size=(1, 2, 70)) < 0.5, np.float32(0.0), np.float32(-0.0)).astype(np.float32)
    signed_zero[0, :, ::7] = 0.5
    extreme = u(1, 2, 90)
    extreme[0, 0, :5] = np.inf
    extreme[0, 0, 5:10] = 1e-42  # denormal
    extreme[0, 1, :30] = np.float32(3e38)
    # name: (boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold)
    return {
        "detector_like": (_boxes(rng, 2, 300, field=100.0, side=(3.0, 30.0)), u(2, 3, 300), 40, 0.5, 0.05),
        "all_tied": (_boxes(rng, 1, 200), np.full((1, 2, 200), 0.5, np.float32), 60, 0.5, 0.1),
        "three_score_levels": (_boxes(rng, 1, 120), ties(1, 3, 120), 30, 0.4, 0.3),
        "heavy_suppression_many_rounds": (_clusters(rng, 1, 40, 12), u(1, 2, 480), 35, 0.5, 0.0),
        "clusters_keep_all_survivors": (_clusters(rng, 2, 25, 8), u(2, 2, 200), 200, 0.5, 0.0),
        "nothing_above_threshold": (_boxes(rng, 1, 64), u(1, 2, 64) * 0.5, 10, 0.5, 0.9),
        "few_above_threshold": (_boxes(rng, 1, 64), u(1, 2, 64), 50, 0.5, 0.95),
        "identical_boxes": (np.repeat(_boxes(rng, 1, 1), 40, axis=1), u(1, 2, 40), 40, 0.5, 0.0),
        "zero_area_boxes": (zero_area, u(1, 2, 50), 50, 0.1, 0.0),
        "max_output_zero": (_boxes(rng, 1, 30), u(1, 2, 30), 0, 0.5, 0.0),
        "max_output_one": (_boxes(rng, 1, 30), u(1, 2, 30), 1, 0.5, 0.0),
        "max_output_above_boxes": (_boxes(rng, 1, 37), u(1, 2, 37), 1000, 0.3, 0.2),
        "fewer_boxes_than_a_vector": (_boxes(rng, 1, 5), u(1, 3, 5), 3, 0.5, 0.0),
        "one_box": (_boxes(rng, 1, 1), u(1, 2, 1), 5, 0.5, 0.0),
        "signed_zero_scores": (_boxes(rng, 1, 70, field=60.0), signed_zero, 40, 0.5, -0.5),
        "infinite_and_denormal_scores": (_boxes(rng, 1, 90, field=60.0), extreme, 60, 0.5, 0.0),
        "negative_scores_and_threshold": (_boxes(rng, 1, 33), u(1, 2, 33) * 2 - 1, 20, 0.3, -0.6),
        "iou_threshold_zero": (_boxes(rng, 1, 60), u(1, 2, 60), 60, 0.0, 0.0),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_selection_matches_the_onnx_reference(name):
    boxes, scores, max_out, iou, score = CASES[name]
    want = _reference(boxes, scores, max_out, iou, score)
    got = _run(boxes, scores, max_out, iou, score, select=True)
    np.testing.assert_array_equal(got, want, err_msg=f"{name}: select on vs onnx.reference")
    np.testing.assert_array_equal(_run(boxes, scores, max_out, iou, score, select=False), want,
                                  err_msg=f"{name}: select off vs onnx.reference")


def test_cases_mean_something():
    """The heavy-suppression case needs several rounds; ties and empty outputs occur."""
    boxes, scores, max_out, iou, score = CASES["heavy_suppression_many_rounds"]
    kept = _reference(boxes, scores, max_out, iou, score)
    want = max_out + max_out // nms.SLACK_DIV + nms.SLACK_ADD
    per_class = np.bincount(kept[:, 1])
    assert (per_class == max_out).all() and len(boxes[0]) // 12 > max_out  # 40 clusters, 35 kept
    # a round holds at most 1.5x want boxes (no ties), ~1 in 12 of which is kept: several rounds
    assert want * 1.5 / 12 < max_out
    assert len(_reference(*CASES["nothing_above_threshold"])) == 0
    assert len(_reference(*CASES["identical_boxes"])) == 2


@pytest.mark.parametrize("name", ["nan_scores", "no_score_threshold"])
def test_nan_and_no_threshold_as_with_the_switch_off(name):
    """NaN scores (dropped by a threshold; without one, ordered above +inf) and the
    absent threshold (:data:`NO_SCORE_THRESHOLD`): the same rows with the switch on and off."""
    rng = np.random.default_rng(5)
    boxes = _boxes(rng, 1, 75)
    scores = rng.uniform(-1, 1, (1, 3, 75)).astype(np.float32)
    scores[rng.uniform(size=scores.shape) < 0.2] = np.nan
    scores[0, 0, :4] = -np.inf
    scores[0, 1, :4] = -np.nan
    threshold = 0.1 if name == "nan_scores" else nms.NO_SCORE_THRESHOLD
    on = _run(boxes, scores, 50, 0.3, threshold, select=True)
    np.testing.assert_array_equal(on, _run(boxes, scores, 50, 0.3, threshold, select=False))
    assert len(on) > 0


@pytest.mark.parametrize("name", ["heavy_suppression_many_rounds", "three_score_levels", "detector_like",
                                  "clusters_keep_all_survivors"])
def test_rounds_of_the_fewest_boxes(name, monkeypatch):
    """Rounds as small as the bisection allows (``need`` to 1.5x ``need`` boxes): many rounds
    per class, each starting below the last one's threshold; still the reference's rows."""
    monkeypatch.setattr(nms, "SLACK_DIV", 2**30)
    monkeypatch.setattr(nms, "SLACK_ADD", 0)
    boxes, scores, max_out, iou, score = CASES[name]
    np.testing.assert_array_equal(_run(boxes, scores, max_out, iou, score, select=True),
                                  _reference(boxes, scores, max_out, iou, score))


def test_a_kernel_is_parsed_once_per_form_and_settings(monkeypatch):
    """``nms_primfunc`` hands back the kernel it parsed for the same sizes, thresholds (a NaN
    one too) and settings -- the same as a fresh parse --, and parses anew when a setting
    the kernel reads changes (the switch and the slack, as the tests above set them)."""
    import tvm_ffi

    a = nms.nms_primfunc(1, 40, 2, 10, 0.5, nms.NO_SCORE_THRESHOLD)
    assert nms.nms_primfunc(1, 40, 2, 10, 0.5, float("nan")) is a
    assert tvm_ffi.structural_equal(a, nms._nms_primfunc(1, 40, 2, 10, 0.5, nms.NO_SCORE_THRESHOLD))
    assert nms.nms_primfunc(1, 40, 2, 10, 0.5, 0.1) is not a
    monkeypatch.setattr(nms, "SELECT_CANDIDATES", not nms.SELECT_CANDIDATES)
    assert not tvm_ffi.structural_equal(nms.nms_primfunc(1, 40, 2, 10, 0.5, nms.NO_SCORE_THRESHOLD), a)
