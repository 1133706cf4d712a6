"""Measuring kernels on this machine: real timings, reuse, resume, valid random inputs.

CPU tests run everywhere (CI: 2 cores, no GPU); ``cuda`` tests run on the GPU machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm

from hetpart.costmodel import CostModel, Profile, kernel_bench, measure_transfers, profile
from hetpart.costmodel.kernel_bench import MeasureSettings, index_bounds, random_array, single_kernel_module
from hetpart.costmodel.profiler import is_dynamic

QUICK = MeasureSettings(repeat=3, min_repeat_ms=1)


@pytest.fixture(scope="module")
def measured(tmp_path_factory, zoo_graph):
    """mlp:small (built in this process) then dlrm:small (built by 2 worker processes)
    measured on the CPU into one profile file."""
    path = tmp_path_factory.mktemp("prof") / "cpu.json"
    first = profile(zoo_graph("mlp"), ("cpu",), path, settings=QUICK, progress=False, jobs=1).last_report
    prof = profile(zoo_graph("dlrm"), ("cpu",), path, settings=QUICK, progress=False, jobs=2)
    return path, first, prof


@pytest.mark.slow
def test_cpu_kernels_of_small_models_are_measured(measured, zoo_graph):
    path, _, prof = measured
    for name in ("mlp", "dlrm"):
        graph = zoo_graph(name)
        for k in graph.nodes:
            rec = prof.record("cpu", k.signature)
            assert rec is not None, f"{k.id} ({k.func}) not measured"
            assert rec.ok, rec.error
            t = rec.timing
            assert 0 < t.min_s <= t.median_s <= t.max_s < 1.0 and t.count == QUICK.repeat
            assert (rec.features.flops, rec.features.op_class) == (k.flops, k.op_class)
    oh = prof.overheads["cpu"]
    assert 0 < oh.empty_s < 1e-3 and oh.launch_s >= 0 and oh.call_s >= 0
    assert oh.wake_s is not None and 0 <= oh.wake_s < 1.0  # measured with the others
    on_disk = Profile.load(path)
    assert on_disk == prof and sorted(on_disk.models) == ["dlrm_small", "mlp_small"]
    assert json.loads(path.read_text())["settings"]["repeat"] == QUICK.repeat


@pytest.mark.slow
def test_each_measured_kernel_records_its_schedule_rule(measured, zoo_graph):
    """The rule is the one hetpart's build stamps on the kernel for the CPU target."""
    from hetpart import kernels
    from hetpart.costmodel.schedule_rule import kernel_rule

    _, _, prof = measured
    target = tvm.target.Target(prof.targets["cpu"])
    for name in ("mlp", "dlrm"):
        graph = zoo_graph(name)
        for k in graph.nodes:
            rec = prof.record("cpu", k.signature)
            built = kernels.schedule(kernel_bench.single_kernel_module(graph, k).mod, target)
            assert rec.rule == kernel_rule(graph, k, target) == kernels.rules_applied(built)[k.func], k.func
            assert rec.rule.startswith("Cpu")
    assert Profile.load(prof.path).kernels == prof.kernels  # and the rules are saved


@pytest.mark.slow
def test_each_measured_kernel_records_its_access_pattern(measured, zoo_graph):
    """The access pattern of the kernel's PrimFunc, known for every kernel with one."""
    from hetpart.costmodel.access_pattern import kernel_access

    _, _, prof = measured
    seen = set()
    for name in ("mlp", "dlrm"):
        graph = zoo_graph(name)
        for k in graph.nodes:
            rec = prof.record("cpu", k.signature)
            assert rec.access == kernel_access(graph, k), k.func
            seen.add(rec.access)
    assert "contiguous" in seen and seen <= {"contiguous", "strided", ""}
    assert Profile.load(prof.path).kernels == prof.kernels  # and the patterns are saved


@pytest.mark.slow
def test_identical_signatures_are_measured_once(measured, zoo_graph):
    _, first, prof = measured
    mlp, dlrm = zoo_graph("mlp"), zoo_graph("dlrm")
    assert first.measured["cpu"] == len({k.signature for k in mlp.nodes})
    shared = {k.signature for k in mlp.nodes} & {k.signature for k in dlrm.nodes}
    assert prof.last_report.reused["cpu"] == len(shared)
    assert prof.last_report.measured["cpu"] == len({k.signature for k in dlrm.nodes}) - len(shared)
    again = profile(dlrm, ("cpu",), prof.path, settings=QUICK, progress=False, jobs=1).last_report
    assert again.measured == {"cpu": 0}


@pytest.mark.slow
def test_cost_model_reads_measured_costs(measured, zoo_graph):
    _, _, prof = measured
    cm = CostModel(prof, predict=False)
    oh = prof.overheads["cpu"]
    for k in zoo_graph("dlrm").nodes:
        rec = prof.record("cpu", k.signature)
        assert not cm.is_predicted(k, "cpu")
        assert cm.kernel_cost(k, "cpu") == pytest.approx(max(rec.timing.median_s - oh.empty_s, 0) + oh.launch_s)
    assert cm.partition_overhead("cpu") == pytest.approx(oh.call_s + oh.switch_s)


@pytest.mark.slow
def test_interrupted_profiling_resumes_without_losing_measurements(tmp_path, zoo_graph, monkeypatch):
    graph = zoo_graph("dlrm")
    path = tmp_path / "p.json"
    real = kernel_bench.measure
    calls = []

    def interrupt_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernel_bench, "measure", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        profile(graph, ("cpu",), path, settings=QUICK, progress=False, chunk=4, jobs=1)
    saved = Profile.load(path)
    assert len(saved.kernels["cpu"]) == 3 and "cpu" in saved.overheads
    monkeypatch.setattr(kernel_bench, "measure", real)
    prof = profile(graph, ("cpu",), path, settings=QUICK, progress=False, jobs=1)
    distinct = len({k.signature for k in graph.nodes})
    assert prof.last_report.measured["cpu"] == distinct - 3
    assert len(Profile.load(path).kernels["cpu"]) == distinct
    # What was measured before the interruption is kept as it was, not re-measured.
    for sig, rec in saved.kernels["cpu"].items():
        assert prof.record("cpu", sig) == rec


def test_gather_indices_stay_in_range_and_floats_are_never_zero(zoo_graph):
    graph = zoo_graph("dlrm")
    takes = [k for k in graph.nodes if k.op_class == "gather"]
    assert takes
    rng = np.random.default_rng(0)
    for k in takes:
        kmod = single_kernel_module(graph, k)
        prim = next(f for _, f in kmod.mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
        bounds = index_bounds(prim)
        for pos, spec in enumerate(kmod.args):
            value = random_array(spec, rng)
            assert value.shape == spec.shape
            if np.issubdtype(value.dtype, np.floating):
                assert np.all(value != 0)
            elif spec.value is None and pos in bounds:
                # every index is inside the dimension it indexes
                assert value.min() >= 0 and (bounds[pos] == 0 or value.max() < bounds[pos])
        assert any(b > 1 for b in bounds.values()) or any(s.value is not None for s in kmod.args), \
            f"{k.func}: no index bound found and no constant indices"


@pytest.mark.slow
def test_kernels_with_data_dependent_shapes_are_recorded_as_dynamic(tmp_path, zoo_graph, seeded_profile):
    graph = zoo_graph("detector")
    dyn = [k for k in graph.nodes if is_dynamic(graph, k)]
    assert dyn, "the detector's NMS output has a data-dependent size"
    prof = profile(graph, ("cpu",), seeded_profile(tmp_path / "p.json"), settings=QUICK, progress=False, jobs=1)
    cm = CostModel(prof)
    for k in dyn:
        assert prof.record("cpu", k.signature).status == "dynamic"
        assert cm.supports(k, "cpu") == (True, "") and cm.is_predicted(k, "cpu")
        assert 0 < cm.kernel_cost(k, "cpu") < 1.0
    assert all(prof.record("cpu", k.signature).ok for k in graph.nodes if k not in dyn)


@pytest.mark.cuda
def test_cuda_kernels_overheads_and_transfers_are_measured(tmp_path, zoo_graph):
    graph = zoo_graph("mlp")
    prof = profile(graph, ("cpu", "cuda"), tmp_path / "gpu.json", settings=QUICK, progress=False)
    for k in graph.nodes:
        assert prof.record("cuda", k.signature).ok
    oh = prof.overheads["cuda"]
    assert oh.empty_s > 0 and oh.launch_s > 0
    tm = measure_transfers(sizes=(4096, 1 << 20, 16 << 20), repeats=5, progress=False)
    for direction in ("h2d", "d2h"):
        fit = tm.fit(direction, "pinned")
        assert 1e-7 < fit.latency_s < 1e-3 and 1e9 < fit.bandwidth_Bps < 1e12
    prof.transfers = tm
    cm = CostModel(prof)
    assert cm.transfer_cost(1 << 20, "cpu", "cuda") > cm.transfer_cost(4096, "cpu", "cuda") > 0
