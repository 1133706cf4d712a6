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


def _relax_name(graph, tensor: str) -> str:
    """The Relax var name the fused module binds ``tensor``'s producer to (what plans made
    before session 59 called the tensor)."""
    kernel = graph.kernels[graph.tensors[tensor].producer]
    bindings = [b for block in graph.module["main"].body.blocks for b in block.bindings]
    return bindings[kernel.index].var.name


def _old_plan_file(plan, path, renames: dict[str, str]):
    """``plan`` saved with its tensors called ``renames[name]`` (as an old hetpart wrote it)."""
    import json

    d = plan.to_json()
    for p in d["partitions"]:
        p["inputs"] = [renames.get(t, t) for t in p["inputs"]]
        p["outputs"] = [renames.get(t, t) for t in p["outputs"]]
    for c in d["cuts"]:
        c["tensor"] = renames.get(c["tensor"], c["tensor"])
    for s in d["timeline"]:
        if s["kind"] == "copy":
            s["name"] = " ".join(renames.get(w, w) for w in s["name"].split(" "))
    path.write_text(json.dumps(d))
    return path


def test_a_plan_saved_with_relax_output_names_reads_under_the_onnx_names(tmp_path):
    """A plan file made before the importer named outputs by their ONNX names holds the
    Relax name (``gv``); loaded with its graph, it reports (transfers, explain) and equals
    the plan made now: same devices and kernels, the graph's tensor names.  Loaded alone,
    the file cannot say what ``gv`` stood for, and keeps it."""
    from hetpart import importer
    from hetpart.partitioner import Plan, render_plan

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 8])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["logits"], axis=-1)]
    model = helper.make_model(helper.make_graph(nodes, "names", [x], [out]), opset_imports=[helper.make_opsetid("", 17)])
    graph = importer.load(model)
    assert graph.outputs == ("logits",)
    old = _relax_name(graph, "logits")
    assert old != "logits" and old not in graph.tensors
    first, last = graph.topological_order()[0], graph.topological_order()[-1]
    costs = table(graph, dict.fromkeys(graph.kernels, 10), dict.fromkeys(graph.kernels, 10))
    plan = partition(graph, cost_model=costs, pins=[f"{first}=cpu", f"{last}=cuda"], progress=False)
    assert any(c.tensor == "logits" for c in plan.cuts)  # the output crosses to the host
    path = _old_plan_file(plan, tmp_path / "old.json", {"logits": old})
    assert old in path.read_text()

    loaded = Plan.load(path, graph)
    assert loaded == plan
    for text in (render_plan(loaded), explain(loaded)):
        assert not re.search(rf"\b{re.escape(old)}\b", text), text
    assert re.search(r"^  logits +p1_cuda +output \(host\)", render_plan(loaded), re.M)
    assert Plan.load(plan.save(tmp_path / "new.json"), graph) == plan  # a plan with the graph's names: as saved
    alone = Plan.load(path)
    assert [c.tensor for c in alone.cuts if not c.readers] == [old]
    assert alone.assignment == plan.assignment and [p.kernels for p in alone.partitions] == [
        p.kernels for p in plan.partitions]


def test_an_old_plan_where_an_output_took_an_internal_tensors_name_reads_under_the_new_names(tmp_path):
    """The model names its output as Relax named an internal tensor (``lv``): the plan file
    of an older hetpart calls the internal tensor ``lv`` and the output another Relax name;
    loaded with the graph, both read under the graph's names at once (no name taken twice)."""
    from hetpart import importer
    from hetpart.partitioner import Plan

    def chain(out):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [4, 8])
        nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], [out], axis=-1)]
        return helper.make_model(helper.make_graph(nodes, "names", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])

    plain = importer.load(chain("y"))
    first, last = plain.topological_order()[0], plain.topological_order()[-1]
    (internal,) = plain.kernels[first].outputs
    graph = importer.load(chain(internal))
    assert graph.outputs == (internal,)
    relax = {t: _relax_name(graph, t) for t in graph.tensors if graph.tensors[t].producer}
    assert relax[internal] != internal and relax[graph.kernels[first].outputs[0]] == internal
    costs = table(graph, dict.fromkeys(graph.kernels, 10), dict.fromkeys(graph.kernels, 10))
    plan = partition(graph, cost_model=costs, pins=[f"{first}=cpu", f"{last}=cuda"], progress=False)
    assert {c.tensor for c in plan.cuts} == {graph.kernels[first].outputs[0], internal}
    loaded = Plan.load(_old_plan_file(plan, tmp_path / "old.json", relax), graph)
    assert loaded == plan
