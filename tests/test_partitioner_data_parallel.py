"""The data-parallel split rule (hetpart.partitioner.data_parallel) on stub side costs, and
the DataParallelPlan's invariant and JSON (no TVM, no model).

The stubs are functions ``(device, rows) -> seconds``; the expected splits are worked
out by hand from them, never by calling hetpart.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetpart.contracts.batch_axes import BatchAxes
from hetpart.errors import PlanError
from hetpart.partitioner.data_parallel import (SplitCosts, beats, candidate_rows, choose_split, price,
                                               proportional_rows)
from hetpart.partitioner.data_parallel_plan import DataParallelPlan
from hetpart.partitioner.plan import Partition, Plan

NO_MERGE = SplitCosts(fixed_s=0.0, copy_bytes_per_s=1e30)


def linear(gpu_per_row: float, cpu_per_row: float, gpu_fixed: float = 0.0, cpu_fixed: float = 0.0):
    """Side seconds linear in rows: ``fixed + rows * per_row``."""
    per = {"cuda": (gpu_fixed, gpu_per_row), "cpu": (cpu_fixed, cpu_per_row)}
    return lambda device, rows: per[device][0] + rows * per[device][1]


# --- the choice ---------------------------------------------------------------------------------
def test_equal_devices_split_the_batch_in_half():
    best, _ = choose_split(64, linear(1e-6, 1e-6), costs=NO_MERGE)
    assert (best.b_gpu, best.b_cpu) == (32, 32)
    assert best.latency_s == pytest.approx(32e-6)


def test_split_is_proportional_to_throughput():
    """The GPU three times as fast per row gets three quarters of the rows (both finish together)."""
    best, _ = choose_split(64, linear(1e-6, 3e-6), costs=NO_MERGE)
    assert (best.b_gpu, best.b_cpu) == (48, 16)
    assert best.gpu_s == pytest.approx(48e-6) and best.cpu_s == pytest.approx(48e-6)
    assert proportional_rows(64, 64e-6, 192e-6) == pytest.approx(16.0)


def test_a_much_faster_gpu_gets_the_whole_batch():
    """CPU 100x slower per row and a fixed cost per call: any CPU rows only add time."""
    best, priced = choose_split(64, linear(1e-6, 100e-6, cpu_fixed=20e-6), costs=NO_MERGE)
    assert (best.b_gpu, best.b_cpu) == (64, 0) and best.merge_s == 0.0
    assert any(c.b_cpu > 0 for c in priced)  # the splits were priced, and lost


def test_merge_overhead_is_charged_only_to_real_splits():
    costs = SplitCosts(fixed_s=10e-6, copy_bytes_per_s=1e9)
    assert costs.merge_s(64, 0, 10**6) == 0.0 and costs.merge_s(0, 64, 10**6) == 0.0
    assert costs.merge_s(32, 32, 10**6) == pytest.approx(10e-6 + 1e-3)
    c = price(64, 32, linear(1e-6, 1e-6), costs, 10**6)
    assert c.latency_s == pytest.approx(32e-6 + 10e-6 + 1e-3)


def test_merge_overhead_larger_than_the_gain_keeps_the_batch_whole():
    """Halves save 32 us; a 100 us merge eats it."""
    best, _ = choose_split(64, linear(1e-6, 1e-6), costs=SplitCosts(fixed_s=100e-6, copy_bytes_per_s=1e30))
    assert best.b_gpu == 0 or best.b_cpu == 0


def test_infeasible_gpu_side_puts_everything_on_the_cpu():
    side = lambda d, rows: None if d == "cuda" and rows > 16 else rows * 1e-6  # noqa: E731 - capped GPU
    best, priced = choose_split(64, side, costs=NO_MERGE)
    assert (best.b_gpu, best.b_cpu) == (0, 64)
    assert any(c.latency_s is None for c in priced)


def test_no_feasible_side_is_a_plan_error():
    with pytest.raises(PlanError, match="neither"):
        choose_split(8, lambda d, rows: None)
    with pytest.raises(PlanError, match="at least 1 row"):
        choose_split(0, linear(1e-6, 1e-6))


def test_candidate_rows_bracket_the_estimate_and_keep_both_ends():
    assert candidate_rows(64, 20.0, 8) == [0, 16, 20, 24, 64]
    assert candidate_rows(64, 20.0, 8, window=2) == [0, 8, 16, 20, 24, 32, 64]
    assert candidate_rows(64, 0.0, 8) == [0, 64]
    assert candidate_rows(5, 2.5, 1) == [0, 2, 3, 5]
    with pytest.raises(PlanError):
        candidate_rows(8, 4.0, 0)


# --- the decision -------------------------------------------------------------------------------
def test_gain_means_split_and_no_gain_means_no_split():
    assert beats(50e-6, 100e-6)            # twice as fast: split
    assert not beats(100e-6, 100e-6)       # a tie: no split
    assert not beats(98e-6, 100e-6)        # 2% is under the 5% margin
    assert beats(98e-6, 100e-6, min_gain=0.0)
    assert beats(1.0, None)                # no per-kernel plan fits at all


# --- the invariant, as a property ---------------------------------------------------------------
@settings(max_examples=200, deadline=None, derandomize=True)
@given(batch=st.integers(1, 512), gpu_row=st.floats(1e-8, 1e-3), cpu_row=st.floats(1e-8, 1e-3),
       gpu_fixed=st.floats(0, 1e-3), cpu_fixed=st.floats(0, 1e-3), fixed=st.floats(0, 1e-3),
       step=st.one_of(st.none(), st.integers(1, 64)), window=st.integers(1, 3))
def test_every_split_priced_covers_the_batch_exactly(batch, gpu_row, cpu_row, gpu_fixed, cpu_fixed, fixed, step,
                                                     window):
    side = linear(gpu_row, cpu_row, gpu_fixed, cpu_fixed)
    best, priced = choose_split(batch, side, costs=SplitCosts(fixed_s=fixed), merge_bytes=4 * batch, step=step,
                                window=window)
    for c in priced:
        assert c.b_gpu + c.b_cpu == batch and c.b_gpu >= 0 and c.b_cpu >= 0
    assert {(c.b_gpu, c.b_cpu) for c in priced} >= {(batch, 0), (0, batch)}
    assert best.latency_s == min(c.latency_s for c in priced)
    assert best.latency_s <= min(side("cuda", batch), side("cpu", batch))  # never worse than one device


# --- the plan -----------------------------------------------------------------------------------
def side_plan(device: str, rows: int) -> Plan:
    part = Partition(f"p0_{device}", device, ["node_0"], predicted_s=rows * 1e-6, compute_s=rows * 1e-6)
    return Plan(model="m", objective="latency", assignment={"node_0": device}, partitions=[part], cuts=[],
                timeline=[], predicted={"latency_s": rows * 1e-6, "baselines": {}}, profile_origin="stub")


def dp_plan(b_gpu=40, b_cpu=24) -> DataParallelPlan:
    return DataParallelPlan(model="m", batch=b_gpu + b_cpu, b_gpu=b_gpu, b_cpu=b_cpu,
                            gpu=side_plan("cuda", b_gpu) if b_gpu else None,
                            cpu=side_plan("cpu", b_cpu) if b_cpu else None,
                            axes=BatchAxes({"x": 0, "scale": None}, {"y": 0, "h": 1}),
                            predicted={"latency_s": 4e-5, "gpu_s": 4e-5, "cpu_s": 2.4e-5, "merge_s": 0.0,
                                       "per_kernel_s": 6.4e-5, "per_kernel_objective": "latency", "gain": 1.6,
                                       "rows_per_s": 1.6e6},
                            candidates=[{"b_gpu": 64, "b_cpu": 0, "gpu_s": 6.4e-5, "cpu_s": 0.0, "merge_s": 0.0,
                                         "latency_s": 6.4e-5}], chosen=True, rule="r", profile_origin="stub")


def test_plan_json_round_trips(tmp_path):
    for plan in (dp_plan(), dp_plan(64, 0), dp_plan(0, 64)):
        text = json.dumps(plan.to_json())
        back = DataParallelPlan.from_json(json.loads(text))
        assert back == plan
        assert json.loads(text)["schema"] == "hetpart-data-parallel-plan" and json.loads(text)["version"] == 1
    path = dp_plan().save(tmp_path / "sub" / "dp.json")
    assert DataParallelPlan.load(path) == dp_plan()


def test_plan_refuses_rows_that_do_not_add_up_and_sides_without_plans():
    with pytest.raises(PlanError, match="not a split"):
        DataParallelPlan(model="m", batch=64, b_gpu=40, b_cpu=20, gpu=side_plan("cuda", 40),
                         cpu=side_plan("cpu", 20), axes=BatchAxes({"x": 0}, {"y": 0}), predicted={})
    with pytest.raises(PlanError, match="no plan"):
        DataParallelPlan(model="m", batch=64, b_gpu=40, b_cpu=24, gpu=side_plan("cuda", 40), cpu=None,
                         axes=BatchAxes({"x": 0}, {"y": 0}), predicted={})


def test_plan_file_of_another_schema_or_version_is_refused(tmp_path):
    d = dp_plan().to_json()
    with pytest.raises(PlanError, match="not a hetpart data-parallel plan"):
        DataParallelPlan.from_json({**d, "schema": "hetpart-plan"})
    with pytest.raises(PlanError, match="version 9"):
        DataParallelPlan.from_json({**d, "version": 9})
    with pytest.raises(PlanError, match="malformed"):
        DataParallelPlan.from_json({k: v for k, v in d.items() if k != "axes"})
    with pytest.raises(PlanError, match="does not exist"):
        DataParallelPlan.load(tmp_path / "none.json")
