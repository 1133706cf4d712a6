"""The int8 benchmark (hetpart.bench.int8, bench/int8.py) on a small zoo model: one
record per quantisation, compared with ONNX Runtime's int8 output, written in the
corpus schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hetpart import models
from hetpart.bench.int8 import QUANTIZATIONS, run_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("quant", QUANTIZATIONS)
def test_int8_record_of_a_quantised_zoo_model(quant, tmp_path):
    path = tmp_path / "mlp.onnx"
    models.save(models.build("mlp", small=True), path)
    record = run_model("zoo:mlp:small", path, quant, repeat=2, work_dir=tmp_path)
    assert record["status"] == "pass", record
    assert record["precision"] == "int8" and record["quantization"] == quant
    assert record["rel_err"] <= max(1e-3, 1.5 * record["ort_int8_vs_fp32"])
    assert record["hetpart_ms"] > 0 and record["peer"] == "onnxruntime_cpu_int8" and record["peer_ms"] > 0
    assert record["speedup_vs_ort_int8"] == round(record["peer_ms"] / record["hetpart_ms"], 3)
    assert set(record) >= {"model", "batch", "device", "precision", "hetpart_ms", "peer", "peer_ms"}  # the corpus's
    assert (tmp_path / f"mlp.{quant}.onnx").exists()  # the quantised model is cached


def test_threads_and_kernel_table(tmp_path):
    """``threads`` sizes both runtimes' pools (hetpart's through ``Session(cpu_threads=)``);
    ``kernels`` adds the per-kernel table measured on them."""
    path = tmp_path / "mlp.onnx"
    models.save(models.build("mlp", small=True), path)
    record = run_model("zoo:mlp:small", path, "dynamic", repeat=2, work_dir=tmp_path, threads=1, kernels=True)
    assert record["status"] == "pass" and record["threads"] == 1, record
    assert record["kernel_table"].startswith("per-kernel medians, 1 thread(s)"), record["kernel_table"]
    assert "extremum_partials" in record["kernel_table"] and "Quantize" in record["kernel_table"]  # both sides


def test_a_failing_stage_is_an_error_record(tmp_path):
    record = run_model("missing", tmp_path / "missing.onnx", "dynamic", repeat=1, work_dir=tmp_path)
    assert record["status"] == "error" and record["detail"].startswith("quantize:")


@pytest.mark.slow  # the script quantises, builds and times (run_model is tested above)
def test_front_end_writes_the_corpus_schema(tmp_path):
    """bench/int8.py's ``main`` as the script runs it (``runpy``, in this process: a subprocess
    re-imported hetpart and TVM, ~3 s of CI's cores, for the same code)."""
    import runpy

    out = tmp_path / "int8.json"
    front = runpy.run_path(str(ROOT / "bench" / "int8.py"))
    assert front["main"](["--models", "zoo:mlp:small", "--quant", "dynamic", "--repeat", "1",
                          "--export-dir", str(tmp_path), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert (doc["schema"], doc["version"]) == ("hetpart-corpus", 1)
    assert [r["model"] for r in doc["records"]] == ["zoo:mlp:small"]
