"""``partition MODEL --precision DEVICE=FORMAT,...``: parsed before any work, recorded
in the plan and the compiled artifact's manifest."""

from __future__ import annotations

import json

from hetpart.cli.main import main


def cli(capsys, *argv):
    rc = main([*argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_precision_reaches_plan_and_manifest(capsys, tmp_path):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "plan", "zoo:mlp:small", "--precision", "cuda=bf16,cpu=bf16", "--simulate",
                     "-o", str(out), "--compile")
    assert rc == 0, err
    want = {"cpu": "bf16", "cuda": "bf16"}
    assert json.loads((out / "plan.json").read_text())["precision"] == want
    assert json.loads((out / "manifest.json").read_text())["precision"] == want


def test_bad_precision_fails_before_import_naming_the_formats(capsys, tmp_path):
    rc, out, err = cli(capsys, "plan", "zoo:mlp:small", "--precision", "cuda=int4", "-o", str(tmp_path / "o"))
    assert rc == 1 and "fp32, tf32, bf16, fp16" in err and "op graph" not in out
    assert not (tmp_path / "o").exists()


def test_shape_buckets_are_built_in_the_precision(capsys, tmp_path):
    """Each bucket's plan and artifact carry the precision; the bucketed session runs
    and stays within issue 17's tolerance of float32 onnx.reference."""
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    import hetpart
    from bucket_models import batch_model, feeds

    path = tmp_path / "sym.onnx"
    onnx.save(batch_model(batch="N"), str(path))
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "plan", str(path), "--buckets", "batch=2", "--precision", "cpu=bf16,cuda=bf16",
                     "--simulate", "-o", str(out), "--compile")
    assert rc == 0, err
    want = {"cpu": "bf16", "cuda": "bf16"}
    assert json.loads((out / "N=2" / "plan.json").read_text())["precision"] == want
    assert json.loads((out / "N=2" / "manifest.json").read_text())["precision"] == want
    feed = feeds(2)
    with hetpart.Session(hetpart.load_compiled(out)) as s:
        got = s.run(feed)["y"]
    ref = ReferenceEvaluator(batch_model()).run(None, feed)[0]
    assert np.abs(got - ref).max() <= 2e-2 * np.abs(ref).max()
