"""hetpart.bucket_batches: models compiled at fixed batches served as one bucketed model.

The run is checked against onnxruntime on the unpadded feed (an independent
reference); the shape checks with stand-in builds (no compile).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import hetpart
from bucket_models import batch_model, feeds
from hetpart.compiler.artifact import TensorSpec
from hetpart.errors import ShapeError


def _fake(batch: int, out_shape=None, x_cols: int = 8):
    """A stand-in compiled model of tests/bucket_models.batch_model at ``batch``."""
    return SimpleNamespace(
        inputs=[TensorSpec("x", (batch, x_cols), "float32"), TensorSpec("s", (batch, 1), "float32")],
        outputs=[TensorSpec("t_y", (batch, 4), "float32"), TensorSpec("t_p", out_shape or (batch, 1), "float32")],
        model_output_names=["y", "p"], plan=SimpleNamespace(model="m"), compile_seconds=1.0)


def test_spec_follows_the_batch_of_every_build():
    model = hetpart.bucket_batches({4: _fake(4), 1: _fake(1), 2: _fake(2)})
    assert model.spec.sizes == {"batch": (1, 2, 4)} and [b.sizes for b in model.buckets] == [
        {"batch": 1}, {"batch": 2}, {"batch": 4}]
    assert model.spec.input_axes == {"x": {0: "batch"}, "s": {0: "batch"}}
    assert model.spec.output_axes == {"y": {0: "batch"}, "p": {0: "batch"}}
    assert [t.shape for t in model.inputs] == [("batch", 8), ("batch", 1)]
    assert model.spec.max_batch == 4 and model.compile_seconds == 3.0


def test_an_output_without_the_batch_is_kept_whole_when_alike():
    model = hetpart.bucket_batches({1: _fake(1, out_shape=(7,)), 2: _fake(2, out_shape=(7,))})
    assert model.spec.output_axes == {"y": {0: "batch"}}


@pytest.mark.parametrize("builds, words", [
    ({1: _fake(1), 2: _fake(2, x_cols=9)}, "input 'x' is [2, 9]"),
    ({1: _fake(1, out_shape=(3,)), 2: _fake(2, out_shape=(5,))}, "output 'p' changes shape"),
    ({}, "at least one build"),
])
def test_builds_that_are_not_one_model_are_refused(builds, words):
    with pytest.raises(ShapeError, match=words.replace("[", r"\[").replace("]", r"\]")):
        hetpart.bucket_batches(builds)


def test_a_misnumbered_build_is_refused():
    with pytest.raises(ShapeError, match="lead with its batch"):
        hetpart.bucket_batches({1: _fake(1), 4: _fake(2)})


@pytest.mark.slow
def test_fixed_batch_builds_run_any_batch_like_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    builds = {b: hetpart.compile(hetpart.partition(g := hetpart.load(batch_model(b))), g, simulate=True,
                                 progress=False) for b in (1, 4)}
    proto = batch_model()
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    with hetpart.Session(hetpart.bucket_batches(builds)) as s:
        for rows in (1, 3, 4):
            x = feeds(rows, seed=rows)
            x["x"][0, :3] = [0.0, -1.5, -0.0]  # zeros and negatives through the Relu
            got = s.run(x)
            assert s.last_bucket == {"batch": 1 if rows == 1 else 4}
            for name, want in zip(["y", "p"], ref.run(None, x)):
                assert got[name].shape == want.shape
                np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)


def test_nms_batch_columns_names_the_outputs_nonmaxsuppression_writes():
    from hetpart import models

    assert hetpart.nms_batch_columns(models.build("detector", small=True)) == {"selected_indices": 0}
    assert hetpart.nms_batch_columns(batch_model()) == {}


def test_an_output_named_as_batch_column_must_exist():
    with pytest.raises(ShapeError, match="nosuch"):
        hetpart.bucket_batches({1: _fake(1), 2: _fake(2)}, batch_columns={"nosuch": 0})


@pytest.mark.slow
def test_a_batched_detector_gives_each_image_its_own_detections_like_onnxruntime():
    """The zoo detector at batch 1 and 4 as one bucketed model: three images run
    padded to 4, and each image's NonMaxSuppression rows (its batch column renumbered,
    the padding image's rows dropped) and top-k are what ONNX Runtime gives it alone.
    (Which bucket a feed takes among more is test_contracts_buckets' choose test.)"""
    pytest.importorskip("onnxruntime")
    from hetpart import models
    from hetpart.bench.peers import ort_session

    protos = {b: models.build("detector", small=True, batch=b) for b in (1, 4)}
    builds = {b: hetpart.compile(hetpart.partition(g := hetpart.load(p)), g, simulate=True, progress=False)
              for b, p in protos.items()}
    model = hetpart.bucket_batches(builds, batch_columns=hetpart.nms_batch_columns(protos[1]))
    images = [models.example_inputs(protos[1], seed=20 + i) for i in range(3)]
    name = next(iter(images[0]))
    images[1][name][0, 0, :4, :4] = 0.0  # zeros and negatives in one image
    images[2][name] *= -1.0
    ref = ort_session(protos[1])
    with hetpart.Session(model) as s:
        got = s.run({name: np.concatenate([im[name] for im in images])})
        assert s.last_bucket == {"batch": 4}
    out_names = [o.name for o in ref.get_outputs()]
    for i, im in enumerate(images):
        want = dict(zip(out_names, ref.run(None, im)))
        mine = got["selected_indices"][got["selected_indices"][:, 0] == i].copy()
        mine[:, 0] = 0
        assert mine.shape == want["selected_indices"].shape
        np.testing.assert_array_equal(np.sort(mine, axis=0), np.sort(want["selected_indices"], axis=0))
        np.testing.assert_allclose(got["topk_scores"][i], want["topk_scores"][0], rtol=1e-5, atol=1e-6)
    assert got["selected_indices"][:, 0].max() <= 2  # nothing of the padding image
