"""hetpart.bench.cpu_pool: the thread-pool A/B grid, its summary, and one real run."""

from __future__ import annotations

import json

from hetpart.bench import cpu_pool


def test_grid_has_every_core_and_one_free_pinned_and_not_then_ort():
    grid = cpu_pool.variants(16)
    assert [v.label for v in grid] == ["hetpart 16 pinned", "hetpart 16 unpinned", "hetpart 15 pinned",
                                       "hetpart 15 unpinned", "ORT 16"]
    assert grid[0].env == {"TVM_NUM_THREADS": "16", "TVM_BIND_THREADS": "1"}
    assert grid[3].env == {"TVM_NUM_THREADS": "15", "TVM_BIND_THREADS": "0"}
    assert grid[-1].ort and grid[-1].threads == 16


def test_one_core_has_no_smaller_pool():
    assert [v.label for v in cpu_pool.variants(1)] == ["hetpart 1 pinned", "hetpart 1 unpinned", "ORT 1"]


def test_summary_is_the_median_over_rounds():
    s = cpu_pool.summarize({"a": [{"median_ms": 1.0, "min_ms": 0.5}, {"median_ms": 3.0, "min_ms": 0.7},
                                  {"median_ms": 2.0, "min_ms": 0.9}], "b": []})
    assert s == {"a": {"median_ms": 2.0, "min_ms": 0.7, "rounds": 3}}


def test_runs_every_variant_in_its_own_process(tmp_path, capsys):
    out = tmp_path / "pool.json"
    assert cpu_pool.main(["zoo:mlp:small", "--rounds", "1", "--runs", "2", "--cores", "1",
                          "--json", str(out)]) == 0
    report = json.loads(out.read_text())["models"]["zoo:mlp:small"]
    assert report["errors"] == {}
    assert set(report["variants"]) == {"hetpart 1 pinned", "hetpart 1 unpinned", "ORT 1"}
    assert "x ORT" in capsys.readouterr().out


def test_worker_reports_the_pool_its_environment_gave(monkeypatch, tmp_path):
    cpu_pool.build("zoo:mlp:small", tmp_path / "cpu")
    r = cpu_pool._run_variant(cpu_pool.Variant("x", 1, {"TVM_NUM_THREADS": "1", "TVM_BIND_THREADS": "0"}),
                              "zoo:mlp:small", tmp_path / "cpu", runs=2, timeout=120)
    assert isinstance(r, dict), r
    assert r["pool"] == 1 and r["bind"] == "0"
