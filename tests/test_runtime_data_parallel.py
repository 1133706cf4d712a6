"""A batch split between a GPU build and a CPU build (simulated GPU), checked against ONNX Runtime
on the whole batch; the planning entry points on stub costs; typed errors for models without
a batch dim.

Models are hand-built (tests/data_parallel_cases.py, seeded weights): ``x [batch, 8]`` with a shared ``scale [1, 4]``
input (no batch axis: both sides get it whole), outputs ``y [batch, 4]`` and ``yt [4, batch]``
(the batch on axis 1: merged along it).  Costs are stubs (seconds per byte a kernel touches),
so which split is chosen is decided by the test, not by this machine's profile.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

import hetpart
from hetpart.compiler.data_parallel import DataParallelModel
from hetpart.compiler.loader import load_compiled
from hetpart.data_parallel import explain_data_parallel, partition_data_parallel, plan_data_parallel
from hetpart.partitioner.data_parallel_plan import DataParallelPlan
from hetpart.runtime.data_parallel_session import DataParallelSession

from data_parallel_cases import EVEN, PerByteCosts, TOL, compile_split, feeds, onnxruntime_by_name, split_model

CPU_SLOW = PerByteCosts(cuda=1e-6, cpu=1e-3)  # the CPU 1000x slower: no split


# --- planning (no compile) ------------------------------------------------------------------
def test_equal_devices_get_a_split_and_it_is_chosen():
    dp = plan_data_parallel(split_model(), 16, cost_model=EVEN)
    assert isinstance(dp, DataParallelPlan) and dp.chosen and dp.split
    assert dp.b_gpu + dp.b_cpu == 16 and abs(dp.b_gpu - dp.b_cpu) <= 2
    assert {p.device for p in dp.gpu.partitions} == {"cuda"} and {p.device for p in dp.cpu.partitions} == {"cpu"}
    assert dp.axes.inputs == {"x": 0, "scale": None} and dp.axes.outputs == {"y": 0, "yt": 1}
    assert dp.predicted["latency_s"] < dp.predicted["per_kernel_s"]
    assert partition_data_parallel(split_model(), 16, cost_model=EVEN).chosen
    text = explain_data_parallel(dp)
    assert "SPLIT" in text and "best per-kernel plan" in text


def test_no_gain_returns_the_per_kernel_plan_with_both_predictions():
    plan = partition_data_parallel(split_model(), 16, cost_model=CPU_SLOW)
    assert isinstance(plan, hetpart.Plan)
    assert {p.device for p in plan.partitions} == {"cuda"}
    dp = plan.predicted["data_parallel"]
    assert not dp["chosen"] and dp["b_cpu"] == 0 and dp["b_gpu"] == 16
    assert json.loads(json.dumps(plan.to_json()))["predicted"]["data_parallel"] == dp  # still plain JSON
    text = explain_data_parallel(plan)
    assert "no split" in text and "per-kernel" in text


def test_a_busy_gpu_turns_no_split_into_a_split():
    """The CPU 20x slower per byte: no split with the whole GPU; with a tenth of it (another
    model busy on it) the CPU's rows pay, and the GPU side gets the larger share still."""
    costs = PerByteCosts(cuda=1e-6, cpu=20e-6)
    assert not plan_data_parallel(split_model(), 16, cost_model=costs).chosen
    busy = plan_data_parallel(split_model(), 16, cost_model=costs, gpu_share=0.1)
    assert busy.chosen and busy.split and busy.b_gpu > busy.b_cpu
    assert busy.predicted["gpu_share"] == 0.1 and "busy GPU" in explain_data_parallel(busy)
    with pytest.raises(hetpart.PlanError, match="GPU share"):
        plan_data_parallel(split_model(), 16, cost_model=costs, gpu_share=0.0)


def test_a_given_split_and_a_required_split_are_priced_as_asked():
    """What the benchmark measures where the rule declines: the split it is told, or the best
    that gives both devices rows."""
    forced = plan_data_parallel(split_model(), 16, cost_model=CPU_SLOW, rows=(10, 6))
    assert (forced.b_gpu, forced.b_cpu) == (10, 6) and not forced.chosen and len(forced.candidates) == 1
    required = plan_data_parallel(split_model(), 16, cost_model=CPU_SLOW, require_split=True)
    assert required.b_gpu > 0 and required.b_cpu > 0 and required.b_gpu + required.b_cpu == 16
    with pytest.raises(hetpart.PlanError, match="not a split"):
        plan_data_parallel(split_model(), 16, cost_model=EVEN, rows=(10, 5))


def test_model_without_a_batch_dim_is_refused_with_a_typed_error():
    with pytest.raises(hetpart.NoBatchDimError, match="fixed shape"):
        plan_data_parallel(split_model(batch=16), 16, cost_model=EVEN)
    with pytest.raises(hetpart.ShapeError, match="give the batch"):
        plan_data_parallel(split_model(), cost_model=EVEN)
    with pytest.raises(hetpart.ShapeError, match="cannot be split"):
        plan_data_parallel(split_model(), 1, cost_model=EVEN)


def test_an_output_without_a_batch_axis_is_refused():
    model = split_model()
    model.graph.node.append(helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, []))
    with pytest.raises(hetpart.NoBatchDimError, match="output 'total' has no batch axis"):
        plan_data_parallel(model, 8, cost_model=EVEN)


# --- running (compiles) ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def split_build():
    return compile_split()


def test_split_run_equals_onnxruntime_on_the_whole_batch(split_build):
    with DataParallelSession(split_build) as s:
        assert [d for d, _ in s.split] == ["cuda", "cpu"]
        for seed in (1, 2):
            feed = feeds(16, seed)
            got = s.run(feed)
            want = onnxruntime_by_name(split_model(), feed)
            assert got["y"].shape == (16, 4) and got["yt"].shape == (4, 16)
            for name in ("y", "yt"):
                np.testing.assert_allclose(got[name], want[name], **TOL)
            assert set(s.last_side_seconds) == {"cuda", "cpu"}


def test_rows_come_back_in_order_not_swapped(split_build):
    """Each row's output depends on its row only: a feed and the same feed with its halves
    swapped give outputs swapped the same way."""
    b = split_build.plan.b_gpu
    feed = feeds(16, 3)
    swapped = dict(feed, x=np.concatenate([feed["x"][b:], feed["x"][:b]]))
    with DataParallelSession(split_build) as s:
        a, c = s.run(feed)["y"], s.run(swapped)["y"]
    np.testing.assert_array_equal(c, np.concatenate([a[b:], a[:b]]))


def test_a_feed_of_more_than_the_batch_is_refused(split_build):
    """Fewer rows run (tests/test_runtime_data_parallel_serving.py); more do not."""
    with DataParallelSession(split_build) as s:
        with pytest.raises(hetpart.RuntimeFailure, match="1..16 rows"):
            s.run(feeds(20))
    with pytest.raises(hetpart.RuntimeFailure, match="closed"):
        s.run(feeds(16))


def test_save_and_load_round_trip(split_build, tmp_path):
    split_build.save(tmp_path / "dp")
    manifest = json.loads((tmp_path / "dp" / "manifest.json").read_text())
    assert manifest["schema"] == "hetpart-data-parallel" and manifest["version"] == 1
    loaded = load_compiled(tmp_path / "dp")
    assert isinstance(loaded, DataParallelModel) and loaded.plan == split_build.plan
    feed = feeds(16, 4)
    with DataParallelSession(loaded) as s:
        got = s.run(feed)
    np.testing.assert_allclose(got["y"], onnxruntime_by_name(split_model(), feed)["y"], **TOL)


def test_one_sided_plan_runs_one_build():
    dp = plan_data_parallel(split_model(), 8, cost_model=CPU_SLOW)
    assert (dp.b_gpu, dp.b_cpu) == (8, 0) and not dp.chosen
    model = hetpart.compile_data_parallel(dp, simulate=True)
    assert model.cpu is None
    feed = feeds(8, 5)
    with DataParallelSession(model) as s:
        got = s.run(feed)
    np.testing.assert_allclose(got["yt"], onnxruntime_by_name(split_model(), feed)["yt"], **TOL)


def test_a_plan_read_from_json_compiles_with_the_model_given(split_build, tmp_path):
    path = split_build.plan.save(tmp_path / "dp.json")
    plan = DataParallelPlan.load(path)
    with pytest.raises(hetpart.PlanError, match="model="):
        hetpart.compile_data_parallel(plan, simulate=True)
    model = hetpart.compile_data_parallel(plan, model=split_model(), simulate=True)
    feed = feeds(16, 6)
    with DataParallelSession(model) as s:
        np.testing.assert_allclose(s.run(feed)["y"], onnxruntime_by_name(split_model(), feed)["y"], **TOL)
