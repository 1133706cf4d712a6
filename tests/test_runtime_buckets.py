"""A symbolic-batch model compiled per shape bucket and run through BucketedSession.

Checked against independent references: onnxruntime and ``onnx.reference`` on the
unpadded feed, and a static hetpart build of the exact shape (padding and slicing
must give what that build gives).  Models: tests/bucket_models.py (hand-built,
seeded weights).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import hetpart
from bucket_models import batch_model, feeds, seq_model
from hetpart.compiler.bucketed import SCHEMA, BucketedModel
from hetpart.runtime import BucketedSession

TOL = dict(rtol=1e-5, atol=1e-6)

# Every test here but the first compiles (the shared two-bucket build alone takes ~5 s
# on 2 cores), so they are marked slow; the pure logic (bucket choice, spec, JSON) is
# tested fast in test_contracts_buckets.py and test_importer_symbolic.py.
slow = pytest.mark.slow


def test_padding_and_slicing_follow_the_bucketed_axes():
    """Zeros after the feed's rows/positions along each bucketed axis, nothing else
    changed; outputs cut back along their bucketed axes only (no model is run)."""
    from hetpart.compiler.bucketed import Bucket
    from hetpart.contracts.buckets import BucketSpec

    spec = BucketSpec(sizes={"batch": (4,), "seq": (8,)}, input_axes={"ids": {0: "batch", 1: "seq"}},
                      output_axes={"h": {0: "batch", 1: "seq"}, "pooled": {0: "batch"}}, batch="batch")
    model = BucketedModel(spec=spec, buckets=[Bucket({"batch": 4, "seq": 8}, "b", compiled=None)],
                          inputs=[], outputs=[], output_names=["h", "pooled"])
    runner = BucketedSession(model)
    ids = np.arange(1, 16, dtype=np.int64).reshape(3, 5)
    actual = runner._actual_sizes({"ids": ids, "mask": np.ones(2)})
    assert actual == {"batch": 3, "seq": 5}
    padded = runner._padded({"ids": ids, "mask": "untouched"}, {"batch": 4, "seq": 8})
    assert padded["mask"] == "untouched" and padded["ids"].shape == (4, 8) and padded["ids"].dtype == np.int64
    np.testing.assert_array_equal(padded["ids"][:3, :5], ids)
    assert not padded["ids"][3:].any() and not padded["ids"][:, 5:].any()
    h, pooled = np.random.rand(4, 8, 2), np.random.rand(4, 6)
    np.testing.assert_array_equal(runner._sliced("h", h, actual, {"batch": 4, "seq": 8}), h[:3, :5])
    np.testing.assert_array_equal(runner._sliced("pooled", pooled, actual, {"batch": 4, "seq": 8}), pooled[:3])


@pytest.fixture(scope="module")
def bucketed():
    return hetpart.compile_buckets(batch_model(), {"batch": [1, 4]}, simulate=True)


@pytest.fixture(scope="module")
def session(bucketed):
    with hetpart.Session(bucketed) as s:
        yield s


def _onnxruntime(model, feed):
    pytest.importorskip("onnxruntime")
    from hetpart.bench.peers import ort_session  # an IR version any ONNX Runtime reads

    sess = ort_session(model)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


@slow
def test_session_of_a_bucketed_model_is_the_runner_interface(session, bucketed):
    assert isinstance(session, BucketedSession)
    assert session.buckets == [{"batch": 1}, {"batch": 4}] and session.max_batch == 4
    assert [t.shape for t in bucketed.inputs] == [("batch", 8), ("batch", 1)]


@slow
@pytest.mark.parametrize("n, bucket", [(1, 1), (2, 4), (3, 4), (4, 4)])
def test_padded_runs_match_onnxruntime_and_onnx_reference(session, n, bucket):
    feed = feeds(n, seed=n)
    got = session.run(feed)
    assert session.last_bucket == {"batch": bucket}
    want = _onnxruntime(batch_model(), feed)
    ref = dict(zip(["y", "p"], ReferenceEvaluator(batch_model()).run(None, feed)))
    assert got["y"].shape == (n, 4) and got["p"].shape == (n, 1)
    for name in ("y", "p"):
        np.testing.assert_allclose(got[name], want[name], **TOL)
        np.testing.assert_allclose(got[name], ref[name], **TOL)


@slow
def test_padded_run_equals_a_static_build_of_the_exact_shape(session):
    graph = hetpart.load(batch_model(), {"x": [3, 8], "s": [3, 1]})
    static = hetpart.compile(hetpart.partition(graph), graph, simulate=True, progress=False)
    feed = feeds(3, seed=7)
    with hetpart.Session(static) as s:
        want = s.run(feed)
    got = session.run(feed)
    assert session.last_bucket == {"batch": 4}  # padded 3 -> 4
    for name in ("y", "p"):
        np.testing.assert_allclose(got[name], want[name], **TOL)


@slow
def test_a_feed_larger_than_the_largest_bucket_is_a_shape_error(session):
    with pytest.raises(hetpart.ShapeError, match=r"'batch' is 5.*batch=1,4"):
        session.run(feeds(5))


@slow
def test_a_closed_bucketed_session_refuses_a_with_block(bucketed):
    s = hetpart.Session(bucketed)
    s.close()
    s.close()  # closing twice is harmless
    with pytest.raises(hetpart.RuntimeFailure, match="closed"):
        with s:
            pass


@slow
def test_inputs_that_disagree_on_a_dim_are_refused(session):
    bad = dict(feeds(2), s=np.ones((3, 1), np.float32))
    with pytest.raises(hetpart.RuntimeFailure, match="dim 'batch' is 2 in one input and 3"):
        session.run(bad)


@slow
@pytest.mark.parametrize("change, words", [
    ({"x": np.ones((3, 9), np.float32)}, "input 'x' has shape [3, 9], the model expects ['batch', 8]"),
    ({"x": np.ones((3,), np.float32)}, "input 'x' has shape [3], the model expects ['batch', 8]"),
    ({"x": None}, "missing input(s) 'x'"),
])
def test_bad_feeds_are_described_as_fed_not_as_padded(session, change, words):
    bad = {**feeds(3), **change}
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(hetpart.RuntimeFailure) as info:
        session.run(bad)
    assert words in str(info.value) and "[4, 8]" not in str(info.value), str(info.value)


@slow
def test_many_threads_get_their_own_rows(session):
    """Runs of different sizes at once land in different buckets; each caller gets its own result."""
    errors = []

    def one(i):
        try:
            n = 1 + i % 4
            feed = feeds(n, seed=100 + i)
            got = session.run(feed)
            np.testing.assert_allclose(got["y"], ReferenceEvaluator(batch_model()).run(None, feed)[0], **TOL)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@slow
def test_submit_and_multisession_run_buckets_concurrently(session, bucketed):
    futures = [session.submit(feeds(n, seed=n)) for n in (3, 1, 4, 2)]
    for n, f in zip((3, 1, 4, 2), futures):
        want = ReferenceEvaluator(batch_model()).run(None, feeds(n, seed=n))[0]
        np.testing.assert_allclose(f.result()["y"], want, **TOL)
        assert f.stats is not None
    with hetpart.MultiSession([bucketed, bucketed]) as multi:
        a, b = multi.run([feeds(3, seed=1), feeds(1, seed=2)])
    np.testing.assert_allclose(a["y"], ReferenceEvaluator(batch_model()).run(None, feeds(3, seed=1))[0], **TOL)
    assert b["y"].shape == (1, 4)


@slow
def test_manifest_round_trip(bucketed, tmp_path):
    bucketed.save(tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["schema"] == SCHEMA and manifest["version"] == 1
    assert [b["directory"] for b in manifest["buckets"]] == ["batch=1", "batch=4"]
    loaded = hetpart.load_compiled(tmp_path / "art")
    assert isinstance(loaded, BucketedModel) and loaded.spec == bucketed.spec
    assert loaded.manifest() == bucketed.manifest()
    # each bucket is an ordinary artifact too
    assert not isinstance(hetpart.load_compiled(tmp_path / "art" / "batch=4"), BucketedModel)
    feed = feeds(3, seed=3)
    with hetpart.Session(loaded) as s:
        got = s.run(feed)
    np.testing.assert_allclose(got["y"], ReferenceEvaluator(batch_model()).run(None, feed)[0], **TOL)


@slow
def test_a_manifest_whose_buckets_do_not_match_its_spec_is_refused(bucketed, tmp_path):
    bucketed.save(tmp_path / "art")
    path = tmp_path / "art" / "manifest.json"
    data = json.loads(path.read_text())
    data["buckets"] = data["buckets"][:1]
    path.write_text(json.dumps(data))
    with pytest.raises(hetpart.CompileError, match="spec makes"):
        hetpart.load_compiled(tmp_path / "art")


@slow
def test_a_bucket_directory_outside_the_artifact_is_refused(bucketed, tmp_path):
    bucketed.save(tmp_path / "art")
    path = tmp_path / "art" / "manifest.json"
    data = json.loads(path.read_text())
    data["buckets"][0]["directory"] = "../elsewhere"
    path.write_text(json.dumps(data))
    with pytest.raises(hetpart.CompileError, match="not a file directly inside"):
        hetpart.load_compiled(tmp_path / "art")


@slow
def test_same_partition_code_is_built_once(bucketed):
    """A second compile of the same plan through one LibraryCache reuses every library
    (here the only way two partitions have the same code: every kernel of this model
    has the batch in its shapes) and the copies run."""
    from hetpart.compiler import LibraryCache

    graph = hetpart.load(batch_model(), {"x": [2, 8], "s": [2, 1]})
    plan = hetpart.partition(graph)
    cache = LibraryCache()
    hetpart.compile(plan, graph, simulate=True, progress=False, library_cache=cache)
    again = hetpart.compile(plan, graph, simulate=True, progress=False, library_cache=cache)
    assert (cache.misses, cache.hits) == (len(plan.partitions), len(plan.partitions))
    assert bucketed.build_stats["libraries_reused"] == 0  # batch 1 and 4 share no partition code
    feed = feeds(2, seed=9)
    with hetpart.Session(again) as s:
        got = s.run(feed)
    np.testing.assert_allclose(got["y"], ReferenceEvaluator(batch_model()).run(None, feed)[0], **TOL)


@slow
def test_a_sequence_dim_asked_for_is_padded_and_sliced_back():
    """Positions are independent in this model, so padding ``seq`` is exact here (the
    caveat: a model that mixes positions without masking would change)."""
    model = hetpart.compile_buckets(seq_model(), {"batch": [2], "seq": [8]}, simulate=True)
    x = np.random.default_rng(5).standard_normal((2, 5, 8)).astype(np.float32)
    with hetpart.Session(model) as s:
        got = s.run({"x": x})
        assert s.last_bucket == {"batch": 2, "seq": 8}
    want = ReferenceEvaluator(seq_model()).run(None, {"x": x})[0]
    assert got["y"].shape == (2, 5, 4)
    np.testing.assert_allclose(got["y"], want, **TOL)


@slow
@pytest.mark.cuda
def test_buckets_with_a_gpu_partition_match_onnxruntime():
    """On the GPU machine: each bucket's MatMul kernel pinned to CUDA (a CPU/GPU plan per
    bucket), padded runs checked against onnxruntime."""
    model = hetpart.compile_buckets(batch_model(), {"batch": [1, 4, 8]}, pins=["node_0=cuda"],
                                    simulate=not hetpart.cuda_available())
    assert all(any(p.device == "cuda" for p in b.compiled.partitions) for b in model.buckets)
    with hetpart.Session(model) as s:
        for n in (1, 3, 4, 7):
            feed = feeds(n, seed=n)
            got = s.run(feed)
            want = _onnxruntime(batch_model(), feed)
            for name in ("y", "p"):
                np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


@slow
def test_warm_up_opens_and_runs_every_bucket_then_answers_match_onnxruntime(bucketed):
    with BucketedSession(bucketed) as runner:
        assert runner.open_buckets == []
        assert runner.warm_up() == [{"batch": 1}, {"batch": 4}]
        assert runner.open_buckets == [{"batch": 1}, {"batch": 4}]
        feed = feeds(3, seed=11)
        got = runner.run(feed)  # warming left nothing behind in the buckets' buffers
        want = _onnxruntime(batch_model(), feed)
        for name in ("y", "p"):
            np.testing.assert_allclose(got[name], want[name], **TOL)


@slow
def test_a_server_warms_every_bucket_when_the_model_is_added(bucketed):
    from hetpart.serving import Server

    with BucketedSession(bucketed) as runner, Server(max_delay=0) as server:
        server.add_model("m", runner)
        assert runner.open_buckets == [{"batch": 1}, {"batch": 4}]
