"""The CPU thread pool's wake cost (issue 19): measured by the overhead benchmark,
recorded in the profile's Overheads, and read back -- also from profiles older than it."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tvm

from hetpart.costmodel import CostModel, Profile
from hetpart.costmodel import overhead_bench as ob
from hetpart.costmodel.cost_model import DEFAULT_WAKE_S
from hetpart.costmodel.fingerprint import this_machine
from hetpart.costmodel.profile_db import Overheads
from hetpart.errors import ProfileError


def test_the_wake_kernel_is_parallel_and_computes_2x_plus_1():
    prim = ob.wake_kernel(64)
    assert "parallel" in prim.script()
    exe = tvm.compile(ob.wake_module(64), "llvm")
    vm = tvm.relax.VirtualMachine(exe, tvm.cpu())
    x = np.array(np.linspace(-3, 3, 64), dtype="float32")
    x[5] = 0.0
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), x * 2 + 1, rtol=1e-6)


def test_measure_wake_gives_a_finite_non_negative_cost():
    exe = tvm.compile(ob.wake_module(1 << 12), "llvm")
    slept = []
    s = ob.measure_wake(exe, tvm.cpu(), idle_s=0.002, rounds=3, hot_calls=6, n=1 << 12, sleep=slept.append)
    assert slept == [0.002] * 3 and len(s.cold) == 3 and len(s.hot) == 6
    assert all(math.isfinite(v) and v > 0 for v in (*s.cold, *s.hot))
    assert math.isfinite(s.wake_s) and s.wake_s >= 0 and s.wake_s == max(s.cold_s - s.hot_s, 0.0)
    assert "wake" in s.describe()


def test_wake_sample_is_cold_median_minus_hot_median_never_negative():
    assert ob.WakeSample((1.0, 2.0, 9.0), (5.0, 6.0, 7.0), 0.25).wake_s == 4.0
    assert ob.WakeSample((5.0,), (1.0,), 0.25).wake_s == 0.0


def test_measure_overheads_records_the_wake_on_the_cpu(monkeypatch):
    monkeypatch.setattr(ob, "WAKE_IDLE_S", 0.001)
    monkeypatch.setattr(ob, "WAKE_ROUNDS", 2)
    monkeypatch.setattr(ob, "WAKE_HOT_CALLS", 4)
    samples = []
    real = ob.measure_wake
    monkeypatch.setattr(ob, "measure_wake", lambda *a, **kw: samples.append(real(*a, **kw)) or samples[-1])
    oh = ob.measure_overheads(tvm.target.Target("llvm"), tvm.cpu(), ob.MeasureSettings(repeat=2, min_repeat_ms=1))
    assert oh.wake_s is not None and math.isfinite(oh.wake_s) and 0 <= oh.wake_s < 1.0
    # the wake recorded is the one measured, with the settings as they are at the call
    # (not 7 x 0.25 s of idling bound when the module was imported)
    [sample] = samples
    assert oh.wake_s == sample.wake_s and sample.idle_s == 0.001 and len(sample.cold) == 2


def _profile(tmp_path, oh: Overheads) -> Profile:
    prof = Profile(this_machine(), path=tmp_path / "p.json")
    prof.overheads["cpu"] = oh
    prof.overheads["cuda"] = Overheads(1e-6, 4e-6, 6e-6, 5e-6, wake_s=0.0)
    return prof


def test_the_wake_round_trips_through_the_profile_file(tmp_path):
    prof = _profile(tmp_path, Overheads(1e-6, 3e-7, 1e-6, 8e-7, wake_s=4.5e-4))
    path = prof.save()
    assert json.loads(path.read_text())["overheads"]["cpu"]["wake_s"] == 4.5e-4
    back = Profile.load(path)
    assert back.overheads["cpu"].wake_s == 4.5e-4
    cm = CostModel(back)
    assert cm.wake_cost("cpu") == 4.5e-4 and cm.wake_cost("cuda") == 0.0 and cm.wake_origin("cpu") == "measured"


def test_a_profile_older_than_the_wake_loads_and_is_priced_with_the_default(tmp_path):
    path = _profile(tmp_path, Overheads(1e-6, 3e-7, 1e-6, 8e-7)).save()
    data = json.loads(path.read_text())
    for oh in data["overheads"].values():  # as written before wake_s existed
        del oh["wake_s"]
    data["overheads"]["cpu"]["some_future_key"] = 1.0  # a newer hetpart's addition: ignored
    path.write_text(json.dumps(data))
    back = Profile.load(path)
    assert back.overheads["cpu"].wake_s is None and back.overheads["cuda"].wake_s is None
    cm = CostModel(back)
    assert cm.wake_cost("cpu") == DEFAULT_WAKE_S["cpu"] > 0 and cm.wake_cost("cuda") == 0.0
    assert "not measured" in cm.wake_origin("cpu")
    from hetpart.cli.commands.costmodel import render_profile

    shown = render_profile(back)
    assert "wake not measured (older profile; priced at the default 200 us)" in shown


def test_the_recorded_h200_capped_profile_still_loads():
    back = Profile.load(Path(__file__).resolve().parents[1] / "bench/results/profile-capped-nvidia-h200.json")
    assert back.overheads["cpu"].wake_s is None
    assert CostModel(back).wake_cost("cpu") == DEFAULT_WAKE_S["cpu"]


@pytest.mark.parametrize("bad", [-1e-6, math.nan, math.inf])
def test_an_unusable_wake_is_never_written(tmp_path, bad):
    prof = _profile(tmp_path, replace(Overheads(1e-6, 3e-7, 1e-6, 8e-7), wake_s=bad))
    with pytest.raises(ProfileError, match="wake_s"):
        prof.save()
