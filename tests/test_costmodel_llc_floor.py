"""The cold-weight floor applies only where a run's weights do not fit in the CPU's
last-level cache (issue 19): the cache size is a hardware fact recorded in the profile
(``cpu_llc_bytes``, read from sysfs when profiling), and a graph whose weights fit is
priced at its hot timings (bench/results/llc-floor.md)."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from hetpart.costmodel import CostModel, Profile
from hetpart.costmodel.fingerprint import this_machine
from hetpart.costmodel.profile_db import KernelFeatures, KernelRecord, Overheads, Timing
from hetpart.errors import ProfileError
from hetpart.importer.op_graph import Kernel

CPU = Overheads(call_s=3e-6, launch_s=1e-6, empty_s=4e-6, switch_s=2e-6, wake_s=1e-4, weight_read_Bps=1e9)
MIB = 1 << 20


def _gemv(i: int, weight_bytes: int) -> Kernel:
    return Kernel(f"node_{i}", f"fused_matmul{i}", ("matmul",), "matmul", (), (), 2 * weight_bytes // 4,
                  weight_bytes + 4096, 4096, weight_bytes, f"gemv-{i}-{weight_bytes}")


def _model(weights: list[int]):
    """A stand-in op graph (what the cost model reads of one: ``kernels``) of GEMVs
    with these weight bytes, each timed hot at 5 us in the returned profile."""
    kernels = {k.id: k for k in (_gemv(i, w) for i, w in enumerate(weights))}
    prof = Profile(this_machine())
    prof.overheads["cpu"] = CPU
    raw = 5e-6 - CPU.launch_s + CPU.empty_s
    for k in kernels.values():
        prof.add_kernel("cpu", KernelRecord(k.signature, KernelFeatures.of(k), "ok", Timing(raw, raw, raw, 5)))
    return SimpleNamespace(kernels=kernels), prof


def _floored(k: Kernel) -> float:
    return CPU.launch_s + k.param_bytes / CPU.weight_read_Bps


def test_a_model_whose_weights_fit_in_the_cache_is_priced_hot_and_a_bigger_one_cold():
    """16 MiB of weights on a 32 MiB L3: the GEMVs read from cache run after run, so
    they cost their 5 us timing, not 16 MiB at the 1 GB/s cold bandwidth (17 ms).
    64 MiB do not fit: each weight comes from memory once a run, and is floored."""
    small, prof = _model([8 * MIB, 8 * MIB])
    prof.cpu_llc_bytes = 32 * MIB
    costs = CostModel(prof, graph=small)
    for k in small.kernels.values():
        assert costs.weights_stay_cached(k, "cpu") and costs.weight_floor(k, "cpu") == 0.0
        assert costs.kernel_cost(k, "cpu") == pytest.approx(5e-6)

    big, prof = _model([32 * MIB, 32 * MIB])
    prof.cpu_llc_bytes = 32 * MIB
    costs = CostModel(prof, graph=big)
    for k in big.kernels.values():
        assert not costs.weights_stay_cached(k, "cpu")
        assert costs.kernel_cost(k, "cpu") == pytest.approx(_floored(k))  # each one alone would fit: the run's set does not


def test_the_rule_compares_the_graphs_whole_weight_set_at_the_boundary():
    graph, prof = _model([10 * MIB, 6 * MIB])
    k = graph.kernels["node_0"]
    for llc, cached in ((16 * MIB, True), (16 * MIB - 1, False)):
        prof.cpu_llc_bytes = llc
        costs = CostModel(prof, graph=graph)
        assert costs.graph_weight_bytes(graph) == 16 * MIB
        assert costs.weights_stay_cached(k, "cpu") is cached
        assert costs.kernel_cost(k, "cpu") == pytest.approx(5e-6 if cached else _floored(k))


def test_without_a_recorded_cache_or_a_known_graph_the_floor_applies_as_before():
    """An older profile (no cache size) and a kernel of no graph given to the cost model:
    nothing bounds the run's weight set, so the floor stays (the shipped H200 profile and
    tools/capped_pricing.py's re-pricing of llama_decode are unchanged)."""
    graph, prof = _model([8 * MIB])
    k = graph.kernels["node_0"]
    assert prof.cpu_llc_bytes is None
    assert CostModel(prof, graph=graph).kernel_cost(k, "cpu") == pytest.approx(_floored(k))
    prof.cpu_llc_bytes = 32 * MIB
    assert CostModel(prof).kernel_cost(k, "cpu") == pytest.approx(_floored(k))  # graph unknown
    assert CostModel(prof).add_graph(graph).kernel_cost(k, "cpu") == pytest.approx(5e-6)
    assert CostModel(prof, graph=graph, cache_bytes={"cpu": 0}).kernel_cost(k, "cpu") == pytest.approx(_floored(k))
    assert CostModel(prof, graph=graph).with_hot_weights().kernel_cost(k, "cpu") == pytest.approx(5e-6)
    assert CostModel(prof, graph=graph).scaled(gpu=2.0).kernel_cost(k, "cpu") == pytest.approx(5e-6)  # kept
    with pytest.raises(ProfileError, match="last-level cache of cpu"):
        CostModel(prof, cache_bytes={"cpu": -1})


def test_the_bound_is_the_largest_graph_holding_the_kernel_and_other_graphs_do_not_count():
    """The partitioner prices a copy of the graph (``with_weight_bytes``: same ids and
    signatures, CUDA's bf16 bytes) besides the graph: the larger weight set bounds the
    kernel.  Another model given to the same cost model (other signatures) does not."""
    graph, prof = _model([8 * MIB])
    other, _ = _model([64 * MIB])
    prof.cpu_llc_bytes = 32 * MIB
    k = graph.kernels["node_0"]
    costs = CostModel(prof, graph=other).add_graph(graph)
    assert costs.weights_stay_cached(k, "cpu") and not costs.weights_stay_cached(other.kernels["node_0"], "cpu")
    copy = SimpleNamespace(kernels={k.id: replace(k, param_bytes=40 * MIB)})
    assert not costs.add_graph(copy).weights_stay_cached(k, "cpu")


def test_partition_prices_a_small_model_all_on_the_cpu_at_its_hot_timings():
    """End to end through `partition` (which gives the graph to the cost model): the
    recorded profile with a slow cold bandwidth prices zoo:mlp:small's all-CPU baseline
    hot once the profile records a cache that holds its weights."""
    from hetpart import importer
    from hetpart.costmodel import resolve_profile
    from hetpart.partitioner import partition

    graph = importer.load("zoo:mlp:small")
    prof = resolve_profile(None)
    prof.overheads = {**prof.overheads, "cpu": replace(prof.overheads["cpu"], weight_read_Bps=1e6)}

    def all_cpu(llc):
        prof.cpu_llc_bytes = llc
        plan = partition(graph, cost_model=CostModel(prof), progress=False)
        return plan.predicted["baselines"]["all_cpu"]["latency_s"]

    hot = partition(graph, cost_model=CostModel(prof, weight_bandwidth={}), progress=False)
    weights = sum(k.param_bytes for k in graph.nodes)
    assert all_cpu(32 * MIB) == pytest.approx(hot.predicted["baselines"]["all_cpu"]["latency_s"])
    assert all_cpu(None) > all_cpu(32 * MIB) + weights / 1e6 / 2  # no cache known: floored, as before
    assert all_cpu(weights // 2) == pytest.approx(all_cpu(None))

    from hetpart.partitioner.problem import build_problem  # a placement priced without partition():

    prof.cpu_llc_bytes = 32 * MIB  # build_problem gives the graph to the cost model itself
    k = next(k for k in graph.nodes if k.param_bytes)
    hot_cost = CostModel(prof, weight_bandwidth={}, graph=graph).kernel_cost(k, "cpu")
    assert build_problem(graph, CostModel(prof)).seconds[k.id]["cpu"] == pytest.approx(hot_cost)


# --- the profile records the cache ---------------------------------------------------
def _saved(tmp_path, llc) -> Profile:
    _, prof = _model([8 * MIB])
    prof.cpu_llc_bytes = llc
    prof.save(tmp_path / f"p{llc}.json")  # a file of its own: a save merges in what the file holds
    return prof


def test_the_cache_size_round_trips_and_profiles_without_it_load(tmp_path):
    prof = _saved(tmp_path, 32 * MIB)
    assert json.loads(prof.path.read_text())["cpu_llc_bytes"] == 32 * MIB
    assert Profile.load(prof.path).cpu_llc_bytes == 32 * MIB
    assert CostModel(Profile.load(prof.path)).last_level_cache("cpu") == 32 * MIB

    prof = _saved(tmp_path, None)
    assert json.loads(prof.path.read_text())["cpu_llc_bytes"] is None
    assert Profile.load(prof.path).cpu_llc_bytes is None

    data = json.loads(prof.path.read_text())
    del data["cpu_llc_bytes"]  # as written before the key existed
    prof.path.write_text(json.dumps(data))
    old = Profile.load(prof.path)
    assert old.cpu_llc_bytes is None and CostModel(old).last_level_cache("cpu") is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, "32M", True])
def test_a_cache_size_that_is_no_whole_number_of_bytes_is_refused(tmp_path, bad):
    prof = _saved(tmp_path, None)
    data = json.loads(prof.path.read_text())
    data["cpu_llc_bytes"] = bad
    prof.path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="cpu_llc_bytes"):
        Profile.load(prof.path)


def test_merging_and_the_recorded_gpu_keep_the_cpus_cache(tmp_path, monkeypatch):
    from hetpart.costmodel import locate

    mine, other = _saved(tmp_path, None), Profile(this_machine(), cpu_llc_bytes=48 * MIB)
    mine.merge_missing(other)
    assert mine.cpu_llc_bytes == 48 * MIB
    cpu_only = Profile(replace(this_machine(), gpu_name=None, gpu_sm_count=None, gpu_driver=None),
                       overheads={"cpu": CPU}, cpu_llc_bytes=32 * MIB)
    assert locate.with_recorded_gpu(cpu_only).cpu_llc_bytes == 32 * MIB


# --- reading it off sysfs --------------------------------------------------------------
def _sysfs(root, caches: dict[int, list[tuple[int, str, str, str]]]):
    """``caches[cpu]`` = ``(level, type, size, shared_cpu_list)`` per cache index."""
    for cpu, entries in caches.items():
        for i, (level, kind, size, shared) in enumerate(entries):
            d = root / f"cpu{cpu}" / "cache" / f"index{i}"
            d.mkdir(parents=True)
            for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
                (d / name).write_text(f"{value}\n")
    return root


def test_the_last_level_cache_is_the_top_levels_distinct_instances_summed(tmp_path):
    from hetpart.costmodel.cpu_cache import last_level_cache_bytes, parse_size

    def cpu(n, l3_group):
        return [(1, "Data", "32K", str(n)), (1, "Instruction", "32K", str(n)), (2, "Unified", "512K", str(n)),
                (3, "Unified", "32768K", l3_group)]

    one = _sysfs(tmp_path / "a", {0: cpu(0, "0-1"), 1: cpu(1, "0-1")})  # this sandbox: one shared L3
    assert last_level_cache_bytes(one) == 32 * MIB
    two = _sysfs(tmp_path / "b", {n: cpu(n, "0-1" if n < 2 else "2-3") for n in range(4)})  # two CCDs
    assert last_level_cache_bytes(two) == 64 * MIB
    l2_only = _sysfs(tmp_path / "c", {0: [(1, "Data", "48K", "0"), (2, "Unified", "2M", "0")],
                                      1: [(1, "Data", "48K", "1"), (2, "Unified", "2M", "1")]})
    assert last_level_cache_bytes(l2_only) == 4 * MIB  # private last levels: one per core
    assert last_level_cache_bytes(tmp_path / "none") is None
    assert [parse_size(s) for s in ("32768K", "1M", "512", "0K", "big", "")] == [32 * MIB, MIB, 512, None, None, None]


def test_profiling_records_the_cache_and_measures_cold_reads_only_for_a_model_that_exceeds_it(monkeypatch):
    from hetpart import importer
    from hetpart.costmodel import cpu_cache, profiler

    monkeypatch.setattr(cpu_cache, "last_level_cache_bytes", lambda root=None: 32 * MIB)
    _, prof = _model([8 * MIB])
    prof.overheads["cpu"] = replace(CPU, weight_read_Bps=None)
    profiler.record_cpu_cache(prof)
    assert prof.cpu_llc_bytes == 32 * MIB
    small = importer.load("zoo:mlp:small")
    big, _ = _model([16 * MIB, 17 * MIB])
    assert not profiler.needs_weight_read(prof, small)
    assert profiler.needs_weight_read(prof, big)
    assert not profiler.needs_weight_read(replace(prof, cpu_llc_bytes=None), big)  # unknown cache: not by default
    prof.overheads["cpu"] = CPU
    assert not profiler.needs_weight_read(prof, big)  # measured already
    monkeypatch.setattr(cpu_cache, "last_level_cache_bytes", lambda root=None: None)
    profiler.record_cpu_cache(prof)
    assert prof.cpu_llc_bytes == 32 * MIB  # sysfs silent: what was recorded stays


def test_profile_measures_cold_reads_by_default_only_when_the_models_weights_exceed_the_cache(tmp_path, monkeypatch):
    """`profile()` (and so `partition profile MODEL`): every kernel here is measured
    already, so only the cache and the cold-read decision are exercised."""
    from hetpart import importer
    from hetpart.costmodel import cpu_cache, profile
    from hetpart.costmodel import weight_read_bench as wrb

    calls = []
    monkeypatch.setattr(wrb, "measure_weight_read",
                        lambda target, dev: calls.append(1) or wrb.WeightReadSample((0.01,), 4, 1 << 28))
    graph = importer.load("zoo:mlp:small")
    weights = sum(k.param_bytes for k in graph.nodes)
    prof = Profile(this_machine(), overheads={"cpu": replace(CPU, weight_read_Bps=None)})
    for k in graph.nodes:
        prof.add_kernel("cpu", KernelRecord(k.signature, KernelFeatures.of(k), "ok", Timing(5e-6, 5e-6, 5e-6, 5)))
    prof.save(tmp_path / "p.json")
    no_builds = SimpleNamespace()  # every kernel and overhead is in the profile: nothing to build

    monkeypatch.setattr(cpu_cache, "last_level_cache_bytes", lambda root=None: weights)  # it fits
    rep = profile(graph, ("cpu",), tmp_path / "p.json", pool=no_builds, progress=False).last_report
    assert rep.weight_read is False and not calls
    assert Profile.load(tmp_path / "p.json").cpu_llc_bytes == weights

    monkeypatch.setattr(cpu_cache, "last_level_cache_bytes", lambda root=None: weights - 1)  # it does not
    rep = profile(graph, ("cpu",), tmp_path / "p.json", pool=no_builds, progress=False).last_report
    assert rep.weight_read is True and len(calls) == 1
    assert Profile.load(tmp_path / "p.json").overheads["cpu"].weight_read_Bps == pytest.approx((1 << 30) / 0.01)
    rep = profile(graph, ("cpu",), tmp_path / "p.json", pool=no_builds, progress=False).last_report
    assert rep.weight_read is False and len(calls) == 1  # measured once


def test_partition_costmodel_shows_the_recorded_cache(tmp_path, capsys):
    from hetpart.cli.main import main

    path = _saved(tmp_path, 32 * MIB).path
    assert main(["costmodel", "--profile", str(path)]) == 0
    assert "last-level cache 32.0 MiB" in capsys.readouterr().out


def test_partition_profile_says_it_measured_cold_reads_for_a_model_past_the_cache(tmp_path, monkeypatch, capsys):
    from hetpart import importer
    from hetpart.cli.main import main
    from hetpart.costmodel import cpu_cache
    from hetpart.costmodel import weight_read_bench as wrb

    monkeypatch.setattr(wrb, "measure_weight_read", lambda target, dev: wrb.WeightReadSample((0.01,), 4, 1 << 28))
    monkeypatch.setattr(cpu_cache, "last_level_cache_bytes", lambda root=None: 1024)  # mlp:small's 3.5 KB exceed it
    graph = importer.load("zoo:mlp:small")
    prof = Profile(this_machine(), overheads={"cpu": replace(CPU, weight_read_Bps=None)})
    for k in graph.nodes:  # measured already: the command builds nothing
        prof.add_kernel("cpu", KernelRecord(k.signature, KernelFeatures.of(k), "ok", Timing(5e-6, 5e-6, 5e-6, 5)))
    path = prof.save(tmp_path / "p.json")
    assert main(["profile", "zoo:mlp:small", "--profile", str(path), "--device", "cpu", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "cpu cold weight reads" in out and "exceed the CPU's last-level cache" in out and "last-level cache 1.0 KiB" in out
    assert Profile.load(path).cpu_llc_bytes == 1024
