"""The data-parallel benchmark (bench/data_parallel.py, hetpart.bench.data_parallel) on the CPU:
the decision and its ratios from hand-made records, and the whole script in --simulate mode
on a small zoo model (records, checks against ONNX Runtime, results file).  No assertion
depends on how fast this machine is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from hetpart.bench import data_parallel as dp

ROOT = Path(__file__).resolve().parent.parent


def _record(way, ms, b_gpu, b_cpu):
    return dp.Record("m", 64, way, b_gpu, b_cpu, ms, predicted_ms=1.0, max_abs_err=0.0)


def _plan(b_gpu, b_cpu, chosen):
    return SimpleNamespace(batch=64, b_gpu=b_gpu, b_cpu=b_cpu, chosen=chosen,
                           predicted={"latency_s": 1e-3, "per_kernel_s": 2e-3})


def test_decision_ratios_are_single_device_over_split():
    records = {"all-cuda": _record("all-cuda", 3.0, 64, 0), "all-cpu": _record("all-cpu", 4.0, 0, 64),
               "split": _record("split", 2.0, 40, 24)}
    d = dp.decision("m", _plan(40, 24, True), _plan(40, 24, True), records)
    assert d["all_cuda_over_split"] == pytest.approx(1.5) and d["all_cpu_over_split"] == pytest.approx(2.0)
    assert d["pays"] and d["predicted_pays"] and d["measured_split"] == [40, 24]
    assert "pays: yes" in dp.line(d)


def test_a_split_slower_than_one_device_does_not_pay():
    records = {"all-cuda": _record("all-cuda", 1.0, 64, 0), "all-cpu": _record("all-cpu", 9.0, 0, 64),
               "split": _record("split", 2.0, 56, 8)}
    d = dp.decision("m", _plan(64, 0, False), _plan(56, 8, False), records)
    assert not d["pays"] and d["rule_split"] == [64, 0] and d["measured_split"] == [56, 8]
    assert d["all_cuda_over_split"] == pytest.approx(0.5)
    assert "pays: no" in dp.line(d)


@pytest.mark.slow  # three simulated builds and ONNX Runtime (~6 s on 2 cores; ~9 s with a busy "GPU")
@pytest.mark.parametrize("busy", ["", "zoo:mlp:small"])
def test_the_script_runs_in_simulation_and_writes_its_records(tmp_path, capsys, busy):
    pytest.importorskip("onnxruntime")
    spec = importlib.util.spec_from_file_location("bench_data_parallel", ROOT / "bench" / "data_parallel.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "dataparallel.json"
    extra = ["--busy", busy] if busy else []
    assert script.main(["--models", "zoo:mlp:small", "--batches", "8", "--simulate", "--tiny",
                        "--out", str(out), *extra]) == 0
    data = json.loads(out.read_text())
    assert data["schema"] == dp.SCHEMA and data["version"] == dp.VERSION
    ways = {r["way"]: r for r in data["records"]}
    assert set(ways) == set(dp.WAYS)
    for r in data["records"]:
        assert r["b_gpu"] + r["b_cpu"] == 8 and r["ms"] > 0 and r["max_abs_err"] < 1e-4
        assert r["busy"] == busy and (r["busy_runs_per_s"] is not None) == bool(busy)
    assert (ways["all-cuda"]["b_gpu"], ways["all-cpu"]["b_cpu"]) == (8, 8)
    assert ways["split"]["b_gpu"] > 0 and ways["split"]["b_cpu"] > 0  # a split is measured even if not chosen
    assert set(ways["split"]["side_ms"]) == {"cuda", "cpu"}
    (d,) = data["decisions"]
    assert d["gpu_share"] == (0.5 if busy else 1.0) and d["busy"] == busy
    assert d["all_cuda_over_split"] == pytest.approx(ways["all-cuda"]["ms"] / ways["split"]["ms"])
    assert d["pays"] == (ways["split"]["ms"] < min(ways["all-cuda"]["ms"], ways["all-cpu"]["ms"]))
    printed = capsys.readouterr().out
    assert "all-CUDA/split" in printed and f"wrote {out}" in printed
