"""The benchmark harness: timing, plans it measures, results/JSON, goals, the CLI.

End-to-end tests run ``zoo:mlp:small`` with CUDA simulated on the CPU and a roofline
cost table (CI has no GPU and no profile), with the fewest repeats that still run
every path.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetpart import bench
from hetpart.bench import goals
from hetpart.partitioner import candidates
from hetpart.bench.harness import Options, Workload, bench_workload, spearman
from hetpart.bench.peers import PEERS, PeerModel, PeerUnavailable
from hetpart.bench.results import BenchReport, Candidate, ConcurrentResult, Row, WorkloadResult
from hetpart.bench.timing import Settings, Stats, time_calls
from hetpart.partitioner.capacity import least_gpu
from hetpart.partitioner.evaluate import evaluate
from hetpart.partitioner.problem import build_problem
from hetpart.partitioner.random_cases import random_case, roofline_costs


# --- timing ---------------------------------------------------------------------------
def test_stats_of_known_samples():
    s = Stats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median_s, s.mean_s, s.n) == (3.0, 3.0, 5)
    assert s.p10_s == pytest.approx(1.4) and s.p90_s == pytest.approx(4.6)


@given(st.lists(st.floats(1e-6, 10.0), min_size=1, max_size=50))
def test_stats_are_ordered(samples):
    s = Stats.of(samples)
    assert min(samples) <= s.p10_s <= s.median_s <= s.p90_s <= max(samples)
    assert s.n == len(samples)


def test_time_calls_counts_warmup_and_repeats():
    calls = []
    s = time_calls(lambda: calls.append(1), Settings(warmup=3, min_repeats=5, max_repeats=5, budget_s=0.0))
    assert len(calls) == 8 and s.n == 5


def test_time_calls_stops_at_budget_after_min_repeats():
    s = time_calls(lambda: None, Settings(warmup=0, min_repeats=4, max_repeats=10_000, budget_s=0.0))
    assert s.n == 4


# --- the plans a benchmark measures ---------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_random_plans_honour_capabilities_and_cap(seed):
    graph, costs = random_case(seed)
    free = build_problem(graph, costs)
    floor = evaluate(free, least_gpu(free)).memory.total
    most = evaluate(free, candidates.random_valid_assignments(free, 1, seed)[0]).memory.total
    problem = build_problem(graph, costs, gpu_memory=(floor + most) // 2)
    found = candidates.random_valid_assignments(problem, 5, seed)
    assert len(found) == 5
    for a in found:
        assert set(a) == set(problem.order)
        assert all(a[k] in problem.allowed[k] for k in problem.order)
        assert evaluate(problem, a).fits
    if floor > 0:  # below the least GPU memory any assignment needs: nothing is valid
        assert candidates.random_valid_assignments(build_problem(graph, costs, gpu_memory=floor - 1), 5, seed) == []


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_oracle_candidates_are_distinct_feasible_and_start_with_the_chosen(seed):
    graph, costs = random_case(seed)
    problem = build_problem(graph, costs)
    chosen = candidates.single_device_assignments(problem)[0].assignment
    top, randoms = candidates.oracle_candidates(problem, [chosen], top=4, n_random=3, seed=seed)
    keys = [candidates.assignment_key(a) for a in top + randoms]
    assert len(keys) == len(set(keys))
    assert top[0] == chosen and len(top) <= 4 and len(randoms) <= 3
    assert all(evaluate(problem, a).fits for a in top + randoms)
    assert [evaluate(problem, a).sequential_s for a in top[1:]] == sorted(evaluate(problem, a).sequential_s
                                                                           for a in top[1:])


def test_infeasible_all_cuda_says_why(zoo_graph):
    graph = zoo_graph("mlp")
    problem = build_problem(graph, roofline_costs(graph), gpu_memory=1)
    by_name = {b.name: b for b in candidates.single_device_assignments(problem)}
    assert by_name["all_cuda"].assignment is None
    assert "all-CUDA infeasible: exceeds --gpu-memory" in by_name["all_cuda"].note
    assert by_name["all_cpu"].assignment is not None
    with pytest.raises(Exception, match="exceeds --gpu-memory"):
        candidates.plan_for_assignment(problem, {k: "cuda" for k in problem.order})


# --- results, goals, markdown -------------------------------------------------------------
def _row(name, kind, median, predicted=None, rate=None, label=None):
    return Row(name, label or name, kind, latency=Stats(median, median, median, median, 3), items_per_s=rate,
               predicted_latency_s=predicted)


def _workload(rows, hetero=False, simulated=False):
    return WorkloadResult("w", "zoo:x", 1, None, 3, simulated, rows, heterogeneous=hetero)


def _report(workloads, concurrent=()):
    return BenchReport("2026-01-01", {"gpu": "NVIDIA H200"}, ["cmd"], {}, list(workloads), list(concurrent))


def test_goals_pass_and_fail_on_known_numbers():
    ok = _workload([_row("hetpart:latency", "plan", 0.0102, predicted=0.0100),
                    _row("hetpart:throughput", "plan", 0.011, rate=99.0),
                    _row("tvm:all_cpu", "single_device", 0.020, rate=50.0),
                    _row("tvm:all_cuda", "single_device", 0.010, rate=100.0)], hetero=True)
    g = {x["id"]: x for x in goals.evaluate(_report([ok], [ConcurrentResult("a+b", ["a", "b"],
                                                          Stats.of([2.0]), Stats.of([1.0]))]))}
    assert g["no_regression"]["status"] == "pass"  # +2 % and +1 % are within noise
    assert g["no_regression"]["worst"] == pytest.approx(0.02)
    assert g["prediction_error"]["status"] == "pass"
    assert g["heterogeneous_speedup"]["status"] == "fail"  # 0.98x on w
    assert g["heterogeneous_speedup"]["worst"] == pytest.approx(0.010 / 0.0102)

    slow = _workload([_row("hetpart:latency", "plan", 0.012, predicted=0.008),
                      _row("tvm:all_cuda", "single_device", 0.010),
                      _row("tvm:all_cuda_uncapped", "single_device", 0.001)])
    g = {x["id"]: x for x in goals.evaluate(_report([slow]))}
    assert g["no_regression"]["status"] == "fail" and g["no_regression"]["worst"] == pytest.approx(0.2)
    assert g["prediction_error"]["status"] == "fail" and g["prediction_error"]["worst"] == pytest.approx(0.5)


def test_goals_are_not_applicable_when_simulated():
    w = _workload([_row("hetpart:latency", "plan", 0.5, predicted=0.1), _row("tvm:all_cpu", "single_device", 0.1)],
                  simulated=True)
    assert {g["status"] for g in goals.evaluate(_report([w]))} == {"n/a"}


def test_report_json_round_trip_and_markdown():
    w = _workload([_row("hetpart:latency", "plan", 0.002, predicted=0.001, label="hetpart (latency)"),
                   Row("peer:torch_cuda", "PyTorch eager (CUDA)", "peer", skipped="PyTorch not installed")])
    report = _report([w], [ConcurrentResult("a+b", ["a", "b"], None, None, skipped="not measured: b")])
    report.goals = goals.evaluate(report)
    data = json.loads(json.dumps(report.to_json()))
    assert (data["schema"], data["version"]) == ("hetpart-bench", 1)
    assert data["workloads"][0]["rows"][0]["error"] == pytest.approx(1.0)
    assert BenchReport.from_json(data) == report
    md = bench.render_markdown(report)
    assert "| hetpart (latency) |" in md and "+100.0%" in md
    assert "skipped: PyTorch not installed" in md and "skipped: not measured: b" in md
    assert "## Goals" in md


def test_spearman_of_agreeing_and_opposite_rankings():
    agree = [Candidate(str(i), "", float(i), float(i) * 2) for i in range(4)]
    opposite = [Candidate(str(i), "", float(i), float(10 - i)) for i in range(4)]
    assert spearman(agree) == pytest.approx(1.0) and spearman(opposite) == pytest.approx(-1.0)
    assert spearman(agree[:2]) is None


def test_gpu_slug():
    assert bench.gpu_slug({"gpu": "NVIDIA H200"}) == "nvidia-h200"
    assert bench.gpu_slug({"gpu": "NVIDIA H100 80GB HBM3"}) == "nvidia-h100"  # the files' name on every host
    assert bench.gpu_slug({"gpu": "NVIDIA A100-SXM4-40GB"}) == "nvidia-a100-sxm4"
    assert bench.gpu_slug({"gpu": "none"}) == "cpu-only"


# --- peers -----------------------------------------------------------------------------------
def test_torch_peers_skip_with_a_reason_for_zoo_models(zoo_onnx):
    model = PeerModel("mlp", zoo_onnx("mlp"), ["input"])
    with pytest.raises(PeerUnavailable, match="PyTorch not installed|no PyTorch twin"):
        PEERS["torch_cpu"].make(model, False)
    with pytest.raises(PeerUnavailable, match="under --simulate"):
        PEERS["torch_cuda"].make(model, True)


def test_onnxruntime_peer_matches_the_zoo_model(zoo_onnx, reference_tvm, zoo_graph):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed")
    from hetpart import models

    model = zoo_onnx("mlp")
    feeds = models.example_inputs(model)
    outs = PEERS["onnxruntime_cpu"].make(PeerModel("mlp", model, list(feeds)), False)(feeds)
    graph = zoo_graph("mlp")
    ref = reference_tvm(graph, dict(zip(graph.inputs, feeds.values())))
    assert outs[0] == pytest.approx(ref[0], rel=1e-4, abs=1e-4)


# --- end to end, simulated ---------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_costs():
    from hetpart import importer

    return roofline_costs(importer.load("zoo:mlp:small"))


@pytest.mark.slow
def test_bench_workload_end_to_end_simulated(mlp_costs):
    options = Options(settings=Settings.tiny(), simulate=True, cost_model=mlp_costs, progress=False)
    result, _ = bench_workload(Workload("mlp", "zoo:mlp:small", oracle=True), options)
    rows = {r.name: r for r in result.rows}
    assert set(rows) >= {"hetpart:latency", "hetpart:makespan", "hetpart:throughput", "tvm:all_cpu",
                         "tvm:all_cuda", "baseline:greedy", "peer:torch_cuda", "peer:onnxruntime_cpu"}
    for name in ("hetpart:latency", "tvm:all_cpu", "tvm:all_cuda"):
        r = rows[name]
        assert r.skipped is None and r.latency.median_s > 0 and r.items_per_s > 0 and r.error is not None
    assert rows["tvm:all_cpu"].placement.startswith("cpu 3 kernels")
    assert rows["tvm:all_cuda"].label == "TVM all-CUDA (simulated)"
    assert rows["peer:torch_cuda"].skipped == "no GPU used under --simulate"
    # plans with one placement share one build and one measurement
    by_build = {}
    for r in result.rows:
        if r.build:
            by_build.setdefault(r.build, set()).add(r.latency)
    assert all(len(v) == 1 for v in by_build.values())
    assert result.oracle is not None and result.oracle.candidates[0].origin == "chosen (latency)"
    assert result.oracle.best_s <= result.oracle.chosen_s


@pytest.mark.slow
def test_capped_workload_adds_cap_lifted_all_cuda(mlp_costs):
    options = Options(settings=Settings.tiny(), simulate=True, cost_model=mlp_costs, progress=False,
                      objectives=("latency",), peers=())
    result, _ = bench_workload(Workload("mlp capped", "zoo:mlp:small", gpu_memory=1), options)
    rows = {r.name: r for r in result.rows}
    assert rows["tvm:all_cuda"].skipped.startswith("all-CUDA infeasible: exceeds --gpu-memory")
    assert rows["tvm:all_cuda_uncapped"].latency is not None
    assert rows["hetpart:latency"].placement.startswith("cpu 3 kernels")


@pytest.mark.slow
def test_cli_bench_writes_json_and_markdown(tmp_path, monkeypatch, mlp_costs, capsys):
    from hetpart.cli.main import main

    monkeypatch.setattr(Options, "costs", lambda self: mlp_costs)
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    rc = main(["bench", "zoo:mlp:small", "zoo:mlp:small", "--simulate", "--repeats", "2", "--warmup", "1",
               "--objective", "latency", "--no-peers", "--together", "--json", str(js), "--md", str(md)])
    assert rc == 0
    data = json.loads(js.read_text())
    assert data["schema"] == "hetpart-bench" and len(data["workloads"]) == 2
    assert data["concurrent"][0]["speedup"] > 0
    assert "| TVM all-CPU |" in md.read_text() and "## Several models at once" in md.read_text()
    assert "# partition bench" in capsys.readouterr().out


def test_cli_bench_unknown_peer_is_a_user_error(capsys):
    from hetpart.cli.main import main

    assert main(["bench", "zoo:mlp:small", "--simulate", "--peer", "tensorrt"]) == 1
    assert "unknown peer(s) tensorrt" in capsys.readouterr().err


# --- on a real GPU ------------------------------------------------------------------------
@pytest.mark.cuda
def test_bench_on_the_gpu(mlp_costs):
    options = Options(settings=Settings.tiny(), cost_model=mlp_costs, progress=False, objectives=("latency",))
    result, _ = bench_workload(Workload("mlp", "zoo:mlp:small"), options)
    rows = {r.name: r for r in result.rows}
    assert rows["tvm:all_cuda"].skipped is None and rows["tvm:all_cuda"].latency.median_s > 0
    assert rows["tvm:all_cuda"].label == "TVM all-CUDA"


def test_plans_alike_in_placement_but_not_in_partitions_get_their_own_builds(monkeypatch, zoo_graph):
    """A makespan plan may split one device's kernels into more partitions than the
    latency plan of the same assignment: it must not be measured on the other's build."""
    from conftest import plan_from_assignment

    from hetpart.bench.builds import Build, BuildCache
    from hetpart.partitioner import Partition

    graph = zoo_graph("mlp")
    order = graph.topological_order()
    joined = plan_from_assignment(graph, dict.fromkeys(order, "cpu"))
    split = plan_from_assignment(graph, dict.fromkeys(order, "cpu"))
    split.partitions = [Partition(f"p{i}_cpu", "cpu", [k]) for i, k in enumerate(order)]
    cache = BuildCache(graph)
    monkeypatch.setattr(cache, "_compile", lambda plan, name, build, jobs: Build(build, plan, 0.0, name))
    assert cache.get(joined, "latency").compiled is joined
    assert cache.get(split, "makespan").compiled is split
    assert cache.get(plan_from_assignment(graph, dict.fromkeys(order, "cpu")), "greedy").plan_name == "latency"


def test_a_build_cache_keeps_precisions_of_one_placement_apart(monkeypatch, zoo_graph):
    """Two plans of the same assignment and partitions in different number formats compile
    to different libraries (bf16 weights): one must not be measured on the other's build
    (``tools/capped_rules_ab.py`` shares one cache among its contenders)."""
    import dataclasses

    from conftest import plan_from_assignment

    from hetpart.bench.builds import Build, BuildCache
    from hetpart.contracts.precision import coerce

    graph = zoo_graph("mlp")
    order = graph.topological_order()
    fp32 = plan_from_assignment(graph, dict.fromkeys(order, "cpu"))
    bf16 = dataclasses.replace(plan_from_assignment(graph, dict.fromkeys(order, "cpu")),
                               precision=coerce("cuda=bf16,cpu=bf16"))
    cache = BuildCache(graph)
    monkeypatch.setattr(cache, "_compile", lambda plan, name, build, jobs: Build(build, plan, 0.0, name))
    assert cache.get(fp32, "fp32").compiled is fp32
    assert cache.get(bf16, "bf16").compiled is bf16


def test_the_package_imports_its_public_names_on_first_use_and_peers_needs_no_tvm():
    """``hetpart.bench``'s names come from their modules when first used; ``peers`` (the
    ONNX Runtime session a corpus prepare worker opens) imports no TVM, which the harness's
    importer would (~1.3 CPU-s per such process).  A fresh interpreter: what was imported
    is the point."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import hetpart.bench.peers; assert 'tvm' not in sys.modules, 'tvm imported'; "
            "from hetpart.bench import Options, run, gpu_slug; from hetpart import bench; "
            "assert bench.Settings.__module__ == 'hetpart.bench.timing' and callable(run) and Options")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr
    assert sorted(bench.__all__) == sorted(["OBJECTIVES", "BenchReport", "Options", "Pair", "Settings", "Workload",
                                            "bench_workload", "gpu_slug", "machine", "render_markdown", "run",
                                            "write"])
    with pytest.raises(AttributeError):
        bench.no_such_name
