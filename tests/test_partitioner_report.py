"""What ``partition MODEL`` prints: --explain's parts add up to its total, partitions
list the kernels they hold, baselines are "same" only when they are, op classes are right."""

from __future__ import annotations

import re

import onnx
import pytest
from onnx import TensorProto, helper

from hetpart.partitioner import Partition, explain, partition
from hetpart.partitioner.plan_report import _partition_table, _versus, kernel_ranges
from partition_graphs import DIAMOND, US, make_graph, table

SECONDS = r"([+-][\d.]+ (?:us|ms|s)|0|-)"


def parse_seconds(text: str) -> float:
    if text in ("0", "-"):
        return 0.0
    value, unit = text.split()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def explain_rows(text: str) -> list[tuple[str, list[float]]]:
    """(name, [d compute, d copies, d overheads, d overlap, total]) of every row that moved."""
    rows = []
    for line in text.splitlines():
        m = re.match(rf"\s+(\S+)\s+(?:cpu|cuda)\s+\S+ \S+\s+\S+ \S+\s+" + r"\s+".join([SECONDS] * 5) + r"\s", line)
        if m:
            rows.append((m.group(1), [parse_seconds(g) for g in m.groups()[1:]]))
    return rows


@pytest.fixture
def overhead_plan():
    """A diamond whose kernels all run faster on CUDA, with per-partition overheads and
    node_1 pinned to the CPU: moving a kernel changes compute, copies *and* partitions."""
    g = make_graph(DIAMOND)
    costs = table(g, dict.fromkeys(g.kernels, 100), dict.fromkeys(g.kernels, 10),
                  overhead_s={"cpu": 30 * US, "cuda": 50 * US})
    return g, costs


@pytest.mark.parametrize("objective", ["latency", "makespan", "throughput"])
def test_explain_parts_add_up_to_the_total(overhead_plan, objective):
    g, costs = overhead_plan
    plan = partition(g, cost_model=costs, objective=objective, pins=["node_1=cpu"], progress=False)
    rows = explain_rows(explain(plan))
    assert len(rows) >= 3, explain(plan)
    for name, (compute, copies, overheads, overlap, total) in rows:
        assert compute + copies + overheads + overlap == pytest.approx(total, abs=0.25 * US), name
    if objective == "latency":  # one after another: nothing overlaps, the work adds up alone
        assert all(abs(row[3]) < 0.05 * US for _, row in rows)
        assert any(abs(row[2]) >= 30 * US for _, row in rows), "no move changed the partition overheads"


def test_explain_overheads_are_whole_partition_calls(overhead_plan):
    g, costs = overhead_plan
    plan = partition(g, cost_model=costs, pins=["node_1=cpu"], progress=False)
    assert [p.device for p in plan.partitions].count("cpu") == 1  # node_1 alone on the CPU
    rows = dict(explain_rows(explain(plan)))
    # node_2 to the CPU: a CPU call of its own (node_0 keeps p0_cuda): one more partition.
    assert rows["node_2"][2] == pytest.approx(30 * US, abs=0.1 * US)
    # node_3 to the CPU joins node_1's partition: p2_cuda's call is saved.
    assert rows["node_3"][2] == pytest.approx(-50 * US, abs=0.1 * US)


def test_kernel_ranges_show_runs_not_a_span():
    assert kernel_ranges(["node_0", "node_1", "node_2", "node_7", "node_9", "node_10"]) == \
        "node_0..node_2, node_7, node_9..node_10"
    assert kernel_ranges(["node_4"]) == "node_4"
    many = [f"node_{i}" for i in range(0, 40, 2)]
    assert kernel_ranges(many, limit=3) == "node_0, node_2, node_4, ... (17 more kernels)"


def test_partition_table_lists_a_non_contiguous_partition_as_it_is():
    class P:  # the table needs only the partitions
        partitions = [Partition("p0_cpu", "cpu", ["node_0", "node_1", "node_5"]),
                      Partition("p1_cuda", "cuda", ["node_2", "node_3", "node_4"])]

    table_text = "\n".join(_partition_table(P))
    assert "node_0..node_1, node_5" in table_text
    assert "node_0 .. node_5" not in table_text


def test_baseline_is_same_only_when_its_placement_is():
    plan = {"latency_s": 1.001e-3}
    assert _versus(plan, {"latency_s": 1.0e-3, "same_placement": True}, False) == "same placement as the plan"
    other = _versus(plan, {"latency_s": 1.0e-3, "same_placement": False}, False)
    assert "same" not in other and "another placement" in other


def test_plan_marks_baselines_with_its_own_placement(overhead_plan):
    g, costs = overhead_plan
    plan = partition(g, cost_model=costs, progress=False)  # every kernel on CUDA
    assert set(plan.assignment.values()) == {"cuda"}
    assert plan.predicted["baselines"]["all_cuda"]["same_placement"] is True
    assert plan.predicted["baselines"]["all_cpu"]["same_placement"] is False


def test_where_is_an_elementwise_kernel_not_a_sort(tmp_path):
    from hetpart import importer

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("Less", ["x", "zero"], ["neg"]),
             helper.make_node("Where", ["neg", "zero", "x"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "where", [x], [y], [zero]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "where.onnx"
    onnx.save(model, path)
    graph = importer.load(str(path))
    classes = {k.op_class for k in graph.nodes if any("where" in op for op in k.ops)}
    assert classes == {"injective"}
