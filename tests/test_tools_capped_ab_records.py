"""tools/capped_ab_records.py: tools/capped_rules_ab.py's A/B JSON as records of the capped
benchmark's schema (issue 19), merged by key into a ``capped-<gpu>.json`` the way the benchmark
merges.  Synthetic A/B files in both forms (before branch capped-records: rounds and summary
only; after: with ``meta``); no GPU, no workload import (fast)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from hetpart.bench import capped

_TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ab_records = _load("capped_ab_records")


def _round(r: int, gemv: float, **medians) -> dict:
    names = list(medians)
    row = {"round": r, "order": names if r % 2 == 0 else names[::-1], "gemv_gbps": gemv}
    row.update({n: {"median_ms": ms, "p10_ms": ms * 0.95, "n": 20} for n, ms in medians.items()})
    return row


def old_ab() -> dict:
    """An A/B file as steps 105-119 wrote it: no meta."""
    names = ("hetpart", "llama.cpp-style rule", "hetpart before")
    rounds = [_round(0, 96.1, **{"hetpart": 25.9, "llama.cpp-style rule": 29.1, "hetpart before": 24.3}),
              _round(1, 99.9, **{"hetpart": 25.8, "llama.cpp-style rule": 27.1, "hetpart before": 26.0}),
              _round(2, 96.2, **{"hetpart": 25.1, "llama.cpp-style rule": 25.0})]  # 'hetpart before' failed here
    summary = {n: {"measured_median_ms": 0.0, "predicted_ms": {"96.1": 23.0, "96.2": 22.9, "99.9": 22.7},
                   "partitions": 20, "streamed_partitions": 11} for n in names}
    return {"rounds": rounds, "summary": summary, "profile_weight_read_Bps": None, "failed": {}}


def new_ab(date: str = "2026-12-07 10:00 UTC", hetpart_ms: float = 20.0) -> dict:
    ab = old_ab()
    for row in ab["rounds"]:
        row["hetpart"]["median_ms"] = hetpart_ms
    ab["meta"] = {"workload": "llama_decode", "workload_arg": "zoo:llama_decode", "cap": "1/2", "cap_bytes": 1000,
                  "weight_bytes": 2000, "gpu": "nvidia-h100", "date": date, "profile": "p.json", "note": "",
                  "limit_ms": 15.0, "limit_bandwidths": {"h2d_bytes_per_s": 5e10, "cpu_bytes_per_s": 1e11, "how": {}},
                  "contenders": {"hetpart": {"predicted_ms": 19.5, "placement": "cpu 1 + cuda 2 kernels, 2 partitions",
                                             "variant": ""},
                                 "llama.cpp-style rule": {"predicted_ms": 27.0, "placement": "p", "variant": ""},
                                 "hetpart before": {"predicted_ms": 21.0, "placement": "p",
                                                    "variant": "plan made with M.X=0"}}}
    return ab


def test_an_old_ab_file_becomes_one_record_a_contender():
    recs = ab_records.records_of(old_ab(), workload="llama_decode", cap_bytes=1000, limit_ms=15.0, source="s",
                                 variants={"hetpart before": "the GRAPHLESS_CUDA_LAUNCH=0 plan"})
    by = {r.contender: r for r in recs}
    assert list(by) == ["hetpart", "llama.cpp-style rule", "hetpart before"]
    assert by["hetpart"].ms == pytest.approx(25.8)  # the median of the rounds' medians
    assert by["hetpart before"].ms == pytest.approx((24.3 + 26.0) / 2)  # the rounds it ran
    assert by["hetpart"].variant == by["llama.cpp-style rule"].variant == ""  # issue 19's names: columns
    assert by["hetpart before"].variant == "the GRAPHLESS_CUDA_LAUNCH=0 plan"  # its own name, marked a variant
    # no plan prediction in the file: the repricing nearest the rounds' median GEMV (96.2), said so
    assert by["hetpart"].predicted_ms == 22.9 and "96.2 GB/s" in by["hetpart"].note
    assert by["hetpart"].host_gemv_gbps == pytest.approx(96.2)
    assert {r.limit_ms for r in recs} == {15.0} and {r.source for r in recs} == {"s"}
    assert by["hetpart"].placement == "20 partitions, 11 streamed"


def test_a_variant_without_words_says_so_and_the_rules_keep_their_names():
    assert ab_records.contender_of("hetpart", {}) == ("hetpart", "")
    assert ab_records.contender_of("ORT-style rule", {}) == ("ORT-style rule", "")
    name, variant = ab_records.contender_of("hetpart graphs", {})
    assert name == "hetpart graphs" and "not recorded" in variant


def test_a_meta_gives_the_plans_prediction_and_variant():
    recs = {r.contender: r for r in ab_records.records_of(new_ab(), workload="llama_decode", cap_bytes=1000,
                                                           limit_ms=15.0, source="s")}
    assert recs["hetpart"].predicted_ms == 19.5 and recs["hetpart"].note == ""
    assert recs["hetpart"].placement.startswith("cpu 1 + cuda 2")
    assert recs["hetpart before"].variant == "plan made with M.X=0"


def test_records_merge_by_key_into_the_benchmarks_file(tmp_path):
    out = tmp_path / "capped-nvidia-h100.json"
    results = capped.new_results("nvidia-h100")
    results["version"] = 6  # a file before the A/B records
    results["records"] = [
        {"workload": "llama_decode", "cap_bytes": 1000, "contender": "hetpart", "ms": 99.0, "predicted_ms": None,
         "limit_ms": 15.0, "placement": "", "skipped": "", "note": ""},
        {"workload": "llama_decode", "cap_bytes": 1000, "contender": "torch_cpu", "ms": 50.0, "predicted_ms": None,
         "limit_ms": 15.0, "placement": "", "skipped": "", "note": ""}]
    out.write_text(json.dumps(results))
    recs = ab_records.records_of(old_ab(), workload="llama_decode", cap_bytes=1000, limit_ms=15.0,
                                 source="capped_rules_ab x.json, committed 2026-12-06 12:06 UTC")
    data = ab_records.fold(out, "nvidia-h100", recs, {"source": "x", "bandwidths": None, "costs": "p"})
    assert data["version"] == capped.VERSION
    by = {r["contender"]: r for r in json.loads(out.read_text())["records"]}
    assert by["hetpart"]["ms"] == pytest.approx(25.8)  # replaced by key
    assert by["torch_cpu"]["ms"] == 50.0 and by["torch_cpu"]["variant"] == "" and by["torch_cpu"]["source"] == ""
    md = out.with_suffix(".md").read_text()
    assert "| 25.80 |" in md and "| 27.10 |" in md  # hetpart and the rule in their columns
    assert "Variants" in md and "`hetpart before`" in md and "committed 2026-12-06 12:06 UTC" in md


def test_the_cli_folds_the_newest_file_of_a_workload_and_cap(tmp_path, capsys):
    older, newer = tmp_path / "a-ab.json", tmp_path / "b-ab.json"
    older.write_text(json.dumps(new_ab("2026-12-07 09:00 UTC", 30.0)))
    newer.write_text(json.dumps(new_ab("2026-12-07 10:00 UTC", 20.0)))
    out = tmp_path / "rec.json"
    assert ab_records.main([str(newer), str(older), "--out", str(out)]) == 0
    assert "a-ab.json (2026-12-07 09:00 UTC): older" in capsys.readouterr().out
    data = json.loads(out.read_text())
    hp = next(r for r in data["records"] if r["contender"] == "hetpart")
    assert hp["ms"] == 20.0 and hp["limit_ms"] == 15.0 and hp["cap_bytes"] == 1000
    assert hp["source"] == ("capped_rules_ab b-ab.json, 2026-12-07 10:00 UTC, 3 rounds interleaved, "
                            "host GEMV 96.1-99.9 GB/s")
    assert data["gpu"] == "nvidia-h100" and data["runs"][-1]["source"] == hp["source"]
    # --all: oldest first, so the newest still wins every key
    assert ab_records.main([str(newer), str(older), "--out", str(out), "--all"]) == 0
    hp = next(r for r in json.loads(out.read_text())["records"] if r["contender"] == "hetpart")
    assert hp["ms"] == 20.0


def test_an_old_file_needs_its_workload_and_cap(tmp_path):
    f = tmp_path / "capped-x-ab-nvidia-h100.json"
    f.write_text(json.dumps(old_ab()))
    with pytest.raises(SystemExit, match="give --workload and --cap"):
        ab_records.main([str(f), "--out", str(tmp_path / "o.json")])
    assert ab_records.gpu_of(f, old_ab()) == "nvidia-h100"
    assert ab_records.gpu_of(f, new_ab()) == "nvidia-h100"


def test_record_names_meet_the_benchmarks():
    assert capped.record_name("zoo:llama_decode") == "llama_decode"
    assert capped.record_name(capped.MOE_SPEC) == "moe"
    assert capped.record_name("zoo:mlp:small") == "zoo:mlp:small"
    assert capped.NAMED["moe"]  # the named workloads are still there
    assert set(capped.NAMED) >= {"bert_large", "llama_prefill", "llama_decode", "moe", "dlrm"}


def test_the_profile_limit_is_limit_s_at_the_links_bandwidth():
    from hetpart import importer
    from hetpart.partitioner.random_cases import roofline_costs

    graph = importer.load("zoo:mlp:small")
    costs = roofline_costs(graph)
    weights = sum(k.param_bytes for k in graph.nodes)
    ms, bw = capped.profile_limit_ms(graph, weights, weights // 2, costs, 50e9)
    want = capped.limit_s(capped.gpu_compute_s(graph, costs), weights, weights // 2, bw, None,
                          capped.read_share(graph)) * 1e3
    assert ms == pytest.approx(want) and bw.cpu_bytes_per_s == 50e9
    assert bw.h2d_bytes_per_s == pytest.approx((1 << 30) / costs.transfer_cost(1 << 30, "cpu", "cuda"))


def test_the_ab_tool_names_what_a_variant_changes():
    ab_tool = _load("capped_rules_ab")

    class Args:
        before, session_before, build_before = [], ["hetpart.runtime.handoff.COPY_TO_GPU=0"], []

    assert ab_tool.variant_text("hetpart", Args, {}) == ""
    assert ab_tool.variant_text("hetpart before", Args, {}) == (
        "hetpart's plan; session opened with hetpart.runtime.handoff.COPY_TO_GPU=0")
    assert ab_tool.variant_text("hetpart graphs", Args, {"hetpart graphs": ["M.STATIC=0"]}) == (
        "hetpart's plan built with M.STATIC=0")
