"""``partition MODEL`` on a model with a symbolic batch and no --shape: it plans (and
compiles) every shape bucket and says which, one line each."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import hetpart
from bucket_models import batch_model, feeds, seq_model
from hetpart.cli.main import main


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "sym.onnx"
    onnx.save(batch_model(batch="N"), str(path))
    return path


@pytest.mark.slow
def test_buckets_flag_plans_one_line_per_bucket(capsys, model_file, tmp_path):
    rc, out, err = cli(capsys, model_file, "--buckets", "batch=1,2", "-o", tmp_path / "out")
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("bucket ")]
    assert [ln.split(":")[0] for ln in lines] == ["bucket N=1", "bucket N=2"]
    assert "building 2 shape buckets: N=1,2 (the batch dim)" in out
    for b in ("N=1", "N=2"):
        assert json.loads((tmp_path / "out" / b / "plan.json").read_text())["schema"] == "hetpart-plan"
    # a second run may replace OUT (its bucket directories are ours)
    assert cli(capsys, model_file, "--buckets", "batch=1", "-o", tmp_path / "out")[0] == 0
    assert not (tmp_path / "out" / "N=2").exists()


@pytest.mark.slow
def test_without_shape_the_default_batch_buckets_are_built(capsys, model_file):
    rc, out, err = cli(capsys, model_file)
    assert rc == 0, err
    assert [ln.split(":")[0] for ln in out.splitlines() if ln.startswith("bucket ")] == \
        [f"bucket N={n}" for n in (1, 2, 4, 8, 16, 32)]


@pytest.mark.slow
def test_compile_writes_a_bucketed_artifact_the_session_runs(capsys, model_file, tmp_path):
    out_dir = tmp_path / "out"
    rc, out, err = cli(capsys, model_file, "--buckets", "batch=2,4", "--simulate", "-o", out_dir, "--compile")
    assert rc == 0, err
    feed = feeds(3)
    with hetpart.Session(hetpart.load_compiled(out_dir)) as s:
        got = s.run(feed)
        assert s.last_bucket == {"N": 4}
    np.testing.assert_allclose(got["y"], ReferenceEvaluator(batch_model()).run(None, feed)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("argv, words", [
    (["--buckets", "batch"], ["--buckets 'batch'", "DIM=N,N"]),
    (["--buckets", "tokens=1,2"], ["--buckets", "tokens", "N", "{model}"]),  # the file, not "<in-memory model>"
    (["--buckets", "batch=1", "--run", "--trace", "-o", "{out}"], ["--trace", "--shape"]),
])
def test_bucket_mistakes_are_one_line_errors(capsys, model_file, tmp_path, argv, words):
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in argv]
    rc, out, err = cli(capsys, model_file, *argv)
    assert rc == 1, err
    assert err.startswith("partition: error:") and err.count("\n") == 1, err
    for w in words:
        assert w.replace("{model}", str(model_file)) in err


def test_a_sequence_dim_without_buckets_says_how_to_give_them(capsys, tmp_path):
    path = tmp_path / "seq.onnx"
    onnx.save(seq_model(), str(path))
    rc, out, err = cli(capsys, path)
    assert rc == 1 and "--buckets" in err and "seq" in err and "--shape" in err, err
    assert str(path) in err and "in-memory" not in err, err


def test_shape_still_builds_one_static_plan(capsys, model_file):
    rc, out, err = cli(capsys, model_file, "--shape", "x=2,8", "--shape", "s=2,1")
    assert rc == 0, err
    assert "shape bucket" not in out


def test_a_bucket_directory_holding_a_foreign_file_keeps_out_refused(capsys, model_file, tmp_path):
    """OUT is replaced whole: a ``batch=1``-like directory counts as hetpart's only when
    it holds only files hetpart writes."""
    (tmp_path / "out" / "N=1").mkdir(parents=True)
    (tmp_path / "out" / "N=1" / "notes.txt").write_text("mine")
    rc, out, err = cli(capsys, model_file, "--buckets", "batch=1", "-o", tmp_path / "out")
    assert rc == 1 and "N=1" in err and out == "", err
    assert (tmp_path / "out" / "N=1" / "notes.txt").read_text() == "mine"
