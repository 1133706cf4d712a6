"""bench/corpus.py, the public model corpus script, on its CPU path: what the GPU run
depends on (comparison, records, resuming, a failing stage) without torch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parent.parent / "bench" / "corpus.py"


@pytest.fixture(scope="module")
def corpus():
    spec = importlib.util.spec_from_file_location("bench_corpus", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rel_err_is_max_abs_diff_over_max_abs_reference(corpus):
    b = np.array([1.0, -4.0, 2.0], np.float32)
    a = np.array([1.5, -4.0, 2.0], np.float32)
    assert corpus.rel_err(a, b) == pytest.approx(0.5 / 4.0)
    assert corpus.rel_err(b, b) == 0.0


def test_nan_the_reference_lacks_is_wrong_even_when_small(corpus):
    b = np.linspace(-3, 3, 8, dtype=np.float32)
    a = b.copy()
    a[0] = np.nan  # the GPU Pow-on-negatives symptom
    result = corpus.compare([a], [b])
    assert result["status"] == "wrong" and "NaN/Inf" in result["detail"]
    assert corpus.compare([b], [b])["status"] == "pass"


def test_tolerance_follows_tf32(corpus, monkeypatch):
    b = np.ones(4, np.float32)
    a = b * (1 + 1e-3)
    assert corpus.compare([a], [b])["status"] == "pass"
    monkeypatch.setenv("HETPART_TF32", "0")
    assert corpus.compare([a], [b])["status"] == "wrong"


def test_low_precision_builds_are_held_to_their_own_tolerance(corpus):
    b = np.ones(4, np.float32)
    a = b * (1 + 1.5e-2)
    assert corpus.compare([a], [b])["status"] == "wrong"  # float32 with TF32: 1e-2
    assert corpus.compare([a], [b], "bf16")["status"] == "pass"  # bf16 weights: 2e-2 (issue 17)
    assert corpus.compare([b * 1.03], [b], "bf16")["status"] == "wrong"


@pytest.mark.slow
def test_a_bf16_cuda_record_sits_beside_the_fp32_one(corpus, tmp_path):
    """--precision bf16 (simulated CUDA): its own record, its own key, within 2e-2."""
    out = tmp_path / "corpus.json"
    common = ["--models", "zoo:mlp:small", "--devices", "cuda", "--simulate", "--out", str(out),
              "--export-dir", str(tmp_path / "exports")]
    assert corpus.main(common) == 0
    assert corpus.main([*common, "--precision", "bf16", "--skip-done", str(out)]) == 0
    records = {r["precision"]: r for r in json.loads(out.read_text())["records"]}
    assert set(records) == {"fp32", "bf16"}
    assert records["bf16"]["status"] == "pass" and 0 < records["bf16"]["rel_err"] <= 2e-2
    assert records["fp32"]["rel_err"] < records["bf16"]["rel_err"]  # the weights were rounded


def test_shape_mismatch_is_wrong(corpus):
    assert corpus.compare([np.zeros(3)], [np.zeros(4)])["status"] == "wrong"


@pytest.mark.slow
def test_cpu_run_records_resumes_and_reports_errors(corpus, tmp_path):
    out = tmp_path / "corpus.json"
    common = ["--devices", "cpu", "--out", str(out), "--export-dir", str(tmp_path / "exports"), "--timeout", "300"]
    assert corpus.main(["--models", "zoo:mlp:small", *common]) == 0
    assert corpus.main(["--onnx", f"missing={tmp_path / 'nope.onnx'}", "--skip-done", str(out), *common]) == 0
    data = json.loads(out.read_text())
    assert (data["schema"], data["version"]) == ("hetpart-corpus", 1)
    by_model = {r["model"]: r for r in data["records"]}
    assert by_model["zoo:mlp:small"]["status"] == "pass" and by_model["zoo:mlp:small"]["rel_err"] <= 1e-4
    assert by_model["missing"]["status"] == "error" and "prepare" in by_model["missing"]["detail"]
    assert "| zoo:mlp:small | 1 | cpu | fp32 | – | pass |" in out.with_suffix(".md").read_text()
    # Resuming skips what is recorded: the record (and its file) stay as they were.
    before = out.read_text()
    assert corpus.main(["--models", "zoo:mlp:small", "--skip-done", str(out), *common]) == 0
    assert out.read_text() == before


def test_budget_cut_leaves_no_record(corpus, tmp_path):
    """A stage cut by --budget is not an error record: the next call runs it again;
    a stage cut by --timeout is."""
    import time

    args = corpus._parser().parse_args(["--devices", "cpu", "--export-dir", str(tmp_path), "--timeout", "0.5"])
    assert corpus.run_model("zoo:mlp:small", 1, ["cpu"], args, None, deadline=time.monotonic() + 0.5) == []
    (timed_out,) = corpus.run_model("zoo:mlp:small", 1, ["cpu"], args, None)
    assert timed_out["status"] == "error" and "timed out" in timed_out["detail"]
    out = tmp_path / "corpus.json"
    assert corpus.main(["--models", "zoo:mlp:small", "--budget", "10", "--out", str(out), *["--devices", "cpu"]]) == 0
    assert json.loads(out.read_text())["records"] == []  # under 30 s left: nothing started
