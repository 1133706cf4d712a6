"""The CPU's cold weight-read bandwidth (issue 19): measured with the compiler's own GEMV
over weights no cache holds, recorded in the profile's CPU Overheads, and preferred by
the capped benchmark's cold-weight floor to its torch-sum snapshot
(bench/results/capped-pricing-nvidia-h200.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tvm

from hetpart.bench import capped
from hetpart.bench.capped import Bandwidths, Options
from hetpart.costmodel import CostModel, Profile
from hetpart.costmodel import weight_read_bench as wrb
from hetpart.costmodel.fingerprint import this_machine
from hetpart.costmodel.profile_db import Overheads
from hetpart.errors import ProfileError

CPU = Overheads(1e-6, 3e-7, 1e-6, 8e-7, wake_s=1e-4)


def _profile(tmp_path, cpu: Overheads) -> Profile:
    prof = Profile(this_machine(), path=tmp_path / "p.json")
    prof.overheads["cpu"] = cpu
    prof.overheads["cuda"] = Overheads(1e-6, 4e-6, 6e-6, 5e-6, wake_s=0.0)
    return prof


def _weight_kernel():
    from hetpart import importer

    graph = importer.load("zoo:mlp:small")
    return next(k for k in graph.nodes if k.param_bytes > 0)


def test_the_cold_weight_floor_is_the_profiles_gemv_bandwidth_not_the_runs_torch_sum(tmp_path):
    """The H200 run's torch sum read 66.4 GB/s; priced at it, the memory rules' CPU
    weights cost 10-14 ms more than the run took.  A profile that measured its own
    GEMV over cold weights sets the floor; the torch sum is only the fallback."""
    measured = CostModel(_profile(tmp_path, Overheads(**{**CPU.__dict__, "weight_read_Bps": 100e9})))
    run = Bandwidths(55e9, 66.4e9, {"cpu": "torch sum"})
    floored = capped.cold_weight_costs(measured, run, Options())
    assert floored.weight_bandwidth == {"cpu": 100e9}
    k = _weight_kernel()
    assert floored.weight_floor(k, "cpu") == pytest.approx(CPU.launch_s + k.param_bytes / 100e9)
    bps, source = capped.cold_weight_bandwidth(measured, run)
    assert bps == 100e9 and "weight_read_Bps" in source

    unmeasured = CostModel(_profile(tmp_path, CPU))  # an older profile: the run's torch sum, said so
    assert unmeasured.cold_weight_bandwidth("cpu") is None
    assert capped.cold_weight_costs(unmeasured, run, Options()).weight_bandwidth == {"cpu": 66.4e9}
    assert capped.cold_weight_bandwidth(unmeasured, run) == (66.4e9, "this run's torch sum")


def test_the_weight_read_bandwidth_round_trips_and_older_profiles_load_without_it(tmp_path):
    path = _profile(tmp_path, Overheads(**{**CPU.__dict__, "weight_read_Bps": 9.5e10})).save()
    assert json.loads(path.read_text())["overheads"]["cpu"]["weight_read_Bps"] == 9.5e10
    assert CostModel(Profile.load(path)).cold_weight_bandwidth("cpu") == 9.5e10
    from hetpart.cli.commands.costmodel import render_profile

    assert "cold weights read at 95.0 GB/s" in render_profile(Profile.load(path))
    data = json.loads(path.read_text())
    for oh in data["overheads"].values():  # as written before weight_read_Bps existed
        del oh["weight_read_Bps"]
    path.write_text(json.dumps(data))
    back = Profile.load(path)
    assert back.overheads["cpu"].weight_read_Bps is None and CostModel(back).cold_weight_bandwidth("cpu") is None
    assert CostModel(back).cold_weight_bandwidth("tpu") is None  # no overheads there: nothing measured


@pytest.mark.parametrize("bad", [0.0, -1e9, math.nan, math.inf, "fast"])
def test_a_weight_read_bandwidth_that_is_no_positive_number_is_refused(tmp_path, bad):
    prof = _profile(tmp_path, Overheads(**{**CPU.__dict__, "weight_read_Bps": bad}))
    with pytest.raises(ProfileError, match="weight_read_Bps"):
        CostModel(prof)


def test_the_weight_read_gemv_computes_x_at_w():
    """The measured kernel is the compiler's matmul, right on negatives and zeros (numpy's product)."""
    k, n = 64, 256
    ex = wrb.build_gemv(tvm.target.Target("llvm"), k, n)
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, (1, k)).astype("float32")
    w = rng.uniform(-1, 1, (k, n)).astype("float32")
    x[0, :5] = 0.0
    w[7, :] = 0.0
    args = [tvm.runtime.tensor(w)]
    try:
        args = list(vm["main_transform_params"](args))
    except (AttributeError, KeyError, ValueError, RuntimeError):
        pass  # nothing packed for this target
    got = vm["main"](tvm.runtime.tensor(x), *args).numpy()
    np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-4)


def test_measure_weight_read_sweeps_distinct_weights_and_gives_bytes_per_second():
    k, n = 64, 1024  # 256 KiB each; a 1 MiB sweep holds 4
    ex = wrb.build_gemv(tvm.target.Target("llvm"), k, n)
    s = wrb.measure_weight_read(None, tvm.cpu(), sweep_bytes=1 << 20, k=k, n=n, sweeps=3, executable=ex)
    assert s.copies == 4 and s.weight_bytes == k * n * 4 and s.sweep_bytes == 1 << 20 and len(s.sweeps) == 3
    assert all(v > 0 and math.isfinite(v) for v in s.sweeps)
    assert s.bytes_per_s == pytest.approx(s.sweep_bytes / float(np.median(s.sweeps)))
    assert "GB/s" in s.describe()
    assert wrb.measure_weight_read(None, tvm.cpu(), sweep_bytes=1, k=k, n=n, sweeps=1, executable=ex).copies == 2


def test_measure_weight_read_into_fills_only_a_missing_value(tmp_path, monkeypatch):
    calls = []

    def fake(target, dev):
        calls.append(target)
        return wrb.WeightReadSample((0.01,), 4, 1 << 28)

    monkeypatch.setattr(wrb, "measure_weight_read", fake)
    prof = _profile(tmp_path, CPU)
    assert capped.measure_weight_read_into(prof) is True
    assert prof.overheads["cpu"].weight_read_Bps == pytest.approx((1 << 30) / 0.01) and len(calls) == 1
    assert capped.measure_weight_read_into(prof) is False and len(calls) == 1  # measured once


def test_the_limit_reads_the_cpu_at_the_faster_of_the_torch_sum_and_the_gemv(tmp_path):
    """A lower bound takes the fastest rate measured: at the run's 66.4 GB/s the limit
    (31.65 ms) sat above the ORT-style rule's measured 24.70 ms."""
    run = Bandwidths(55e9, 66.4e9, {"cpu": "torch sum"})
    faster = CostModel(_profile(tmp_path, Overheads(**{**CPU.__dict__, "weight_read_Bps": 100e9})))
    slower = CostModel(_profile(tmp_path, Overheads(**{**CPU.__dict__, "weight_read_Bps": 50e9})))
    assert capped.limit_bandwidths(run, faster).cpu_bytes_per_s == 100e9
    assert capped.limit_bandwidths(run, faster).h2d_bytes_per_s == 55e9
    assert capped.limit_bandwidths(run, slower) is run
    assert capped.limit_bandwidths(run, CostModel(_profile(tmp_path, CPU))) is run  # nothing measured: the run's
    assert capped.limit_s(0.001, 4_400_000_000, 2_200_000_000, capped.limit_bandwidths(run, faster)) < \
        capped.limit_s(0.001, 4_400_000_000, 2_200_000_000, run)


def test_a_cost_model_prices_cold_weights_wherever_its_profile_measured_them(tmp_path):
    """`partition` and the capped bench price one way: a profile with the GEMV sweep floors
    CPU weights in every CostModel built from it (the product's `cost_model_for` too), and
    only an explicit choice (`with_hot_weights`, the bench's --hot-weights) drops it.
    Before, only the bench floored them, so its `hetpart` contender was not the plan a
    user's `partition --gpu-memory` made."""
    from hetpart.partitioner.planning import cost_model_for

    prof = _profile(tmp_path, Overheads(**{**CPU.__dict__, "weight_read_Bps": 100e9}))
    k = _weight_kernel()
    for costs in (CostModel(prof), cost_model_for(prof)):
        assert costs.weight_bandwidth.get("cpu") == 100e9
        assert costs.weight_floor(k, "cpu") == pytest.approx(CPU.launch_s + k.param_bytes / 100e9)
        assert costs.scaled(gpu=2.0).weight_bandwidth.get("cpu") == 100e9  # what-ifs keep it
        hot = costs.with_hot_weights()
        assert hot.weight_bandwidth == {} and hot.weight_floor(k, "cpu") == 0.0
    run = Bandwidths(55e9, 66.4e9, {"cpu": "torch sum"})
    assert capped.cold_weight_costs(CostModel(prof), run, Options(cold_weights=False)).weight_bandwidth == {}
    assert CostModel(_profile(tmp_path, CPU)).weight_bandwidth == {}  # not measured: no floor


def test_partition_profile_weight_read_measures_into_the_profile(tmp_path, monkeypatch, capsys):
    from hetpart.cli.main import main

    monkeypatch.setattr(wrb, "measure_weight_read", lambda target, dev: wrb.WeightReadSample((0.01,), 4, 1 << 28))
    path = _profile(tmp_path, CPU).save()
    assert main(["profile", "--weight-read", "--profile", str(path)]) == 0
    assert Profile.load(path).overheads["cpu"].weight_read_Bps == pytest.approx((1 << 30) / 0.01)
    assert "cold weight reads" in capsys.readouterr().out
    monkeypatch.setattr(wrb, "measure_weight_read", lambda target, dev: wrb.WeightReadSample((0.02,), 4, 1 << 28))
    assert main(["profile", "--weight-read", "--profile", str(path)]) == 0  # asked again: measured again
    assert Profile.load(path).overheads["cpu"].weight_read_Bps == pytest.approx((1 << 30) / 0.02)
