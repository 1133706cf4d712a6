"""Unit tests of the partitioner's modules on small hand-built graphs (no TVM)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from hetpart.errors import PlanError
from hetpart.partitioner import OBJECTIVES, Pin, Plan, explain, objective, parse_pins, partition
from hetpart.partitioner import render_plan, write_svg, write_trace
from hetpart.partitioner.gpu_memory import gpu_memory
from hetpart.partitioner.pins import resolve_pins
from hetpart.partitioner.problem import build_problem

from partition_graphs import DIAMOND, US, make_graph, table


# --- pins ---------------------------------------------------------------------------------
def test_parse_pins_accepts_ops_and_nodes_and_rejects_junk():
    assert parse_pins(["Gather=cpu", " node_17 = CUDA "]) == (Pin("Gather", "cpu"), Pin("node_17", "cuda"))
    for bad in ("Gather", "=cpu", "Gather=tpu"):
        with pytest.raises(PlanError, match="--pin"):
            parse_pins([bad])


def test_one_pin_given_alone_is_one_pin_not_its_letters():
    assert parse_pins("Gather=cpu") == parse_pins(Pin("Gather", "cpu")) == (Pin("Gather", "cpu"),)
    g = make_graph(DIAMOND)
    assert resolve_pins(g, "Gather=cpu") == {"node_1": ("cpu", "pinned by --pin Gather=cpu")}


def test_resolve_pins_onnx_and_tvm_names_and_node_pins_win():
    g = make_graph(DIAMOND)
    assert resolve_pins(g, ["Gather=cpu"]) == {"node_1": ("cpu", "pinned by --pin Gather=cpu")}
    assert set(resolve_pins(g, ["TAKE=cuda"])) == {"node_1"}
    assert set(resolve_pins(g, ["Conv=cpu"])) == {"node_0"}
    assert set(resolve_pins(g, ["Gemm=cuda"])) == {"node_2"}
    assert set(resolve_pins(g, ["add=cpu"])) == {"node_2", "node_3"}  # any fused op matches
    mixed = resolve_pins(g, ["add=cpu", "node_2=cuda"])
    assert mixed["node_2"][0] == "cuda" and mixed["node_3"][0] == "cpu"


def test_unknown_pin_lists_close_matches():
    g = make_graph(DIAMOND)
    with pytest.raises(PlanError, match="close matches: .*gather"):
        resolve_pins(g, ["Gathr=cpu"])
    with pytest.raises(PlanError, match="node_1"):
        resolve_pins(g, ["node_11=cpu"])
    with pytest.raises(PlanError, match="close matches") as e:  # 'matmul' is a TVM op and an ONNX op
        resolve_pins(g, ["mm=cpu"])
    close = str(e.value).split("close matches: ")[1].split(".")[0].split(", ")
    assert "matmul" in close and len(close) == len(set(close)), close
    with pytest.raises(PlanError, match="pinned to both"):
        resolve_pins(g, ["node_1=cpu", "fused_node_1=cuda"])


def test_a_gather_pin_on_a_model_whose_gathers_became_slices_says_so():
    """A constant-index Gather imports as a strided slice (importer.constant_take), so
    ``--pin Gather=...`` can match nothing on a model that has Gathers: the error says why."""
    g = make_graph({"node_0": (("strided_slice", "squeeze", "reshape"), ("x",))})
    with pytest.raises(PlanError, match="imported as a slice.*pin it as Slice"):
        resolve_pins(g, ["Gather=cpu"])
    assert set(resolve_pins(g, ["Slice=cpu"])) == {"node_0"}


def test_pin_to_a_device_the_kernel_cannot_use_is_an_error():
    g = make_graph(DIAMOND)
    costs = table(g, dict.fromkeys(g.kernels, 10), dict.fromkeys(g.kernels, 1),
                  unsupported={("node_1", "cuda"): "no CUDA take for int8"})
    with pytest.raises(PlanError, match="node_1 .*cannot run on cuda: no CUDA take for int8"):
        partition(g, cost_model=costs, pins=["Gather=cuda"], progress=False)


# --- the cut: costs, copies once, capability --------------------------------------------------
def test_tensor_read_by_two_gpu_kernels_is_copied_once():
    g = make_graph(DIAMOND, sizes={"t_node_0": 3_000_000})
    costs = table(g, {"node_0": 10, "node_1": 900, "node_2": 900, "node_3": 10},
                  {"node_0": 5000, "node_1": 10, "node_2": 10, "node_3": 500}, link_bytes_per_s=12e9)
    plan = partition(g, cost_model=costs, progress=False)
    copy = 10 * US + 12e6 / 12e9
    # node_1 and node_2 on CUDA share one 12 MB copy (1 ms); two copies (2 ms) would lose to the CPU (1.8 ms).
    assert plan.assignment == {"node_0": "cpu", "node_1": "cuda", "node_2": "cuda", "node_3": "cpu"}
    [big] = [c for c in plan.cuts if c.tensor == "t_node_0"]
    assert big.seconds == pytest.approx(copy) and big.readers == ["p1_cuda", "p2_cuda"]  # two partitions, one copy
    assert plan.predicted["transfer_s"] == pytest.approx(copy + 2 * (10 * US + 4000 / 12e9))


def test_unsupported_kernel_is_pinned_with_reason_and_shown_in_explain():
    g = make_graph(DIAMOND)
    costs = table(g, dict.fromkeys(g.kernels, 100), dict.fromkeys(g.kernels, 1),
                  unsupported={("node_1", "cuda"): "no CUDA schedule for take"})
    plan = partition(g, cost_model=costs, progress=False)
    assert plan.assignment["node_1"] == "cpu"
    assert plan.constraints["node_1"] == "cannot run on cuda: no CUDA schedule for take"
    assert "stays: cannot run on cuda: no CUDA schedule for take" in explain(plan)


def test_kernel_no_device_can_run_is_an_error():
    g = make_graph(DIAMOND)
    costs = table(g, dict.fromkeys(g.kernels, 1), dict.fromkeys(g.kernels, 1),
                  unsupported={("node_2", "cuda"): "a", ("node_2", "cpu"): "b"})
    with pytest.raises(PlanError, match="node_2 .*can run on no device"):
        partition(g, cost_model=costs, progress=False)


# --- partitions ------------------------------------------------------------------------------
def test_cyclic_same_device_group_is_split():
    # node_0 (cpu) feeds node_1 (cuda) and node_2 (cpu); node_1 also feeds node_2.
    # {node_0, node_2} is connected but would depend on node_1 both ways: split it.
    spec = {"node_0": (("add",), ("x",)), "node_1": (("matmul",), ("t_node_0",)),
            "node_2": (("add",), ("t_node_0", "t_node_1"))}
    g = make_graph(spec)
    costs = table(g, {"node_0": 1, "node_1": 1000, "node_2": 1}, {"node_0": 1000, "node_1": 1, "node_2": 1000})
    plan = partition(g, cost_model=costs, progress=False)
    assert [(p.device, p.kernels) for p in plan.partitions] == [
        ("cpu", ["node_0"]), ("cuda", ["node_1"]), ("cpu", ["node_2"])]
    assert [p.name for p in plan.partitions] == ["p0_cpu", "p1_cuda", "p2_cpu"]


def test_independent_same_device_kernels_merge_when_no_cycle():
    # node_0 -> node_1 (cuda) ; node_0 -> node_2 (cpu) -> node_3 ; node_1 -> node_3: all cpu but node_1.
    spec = {"node_0": (("add",), ("x",)), "node_1": (("matmul",), ("t_node_0",)),
            "node_2": (("add",), ("t_node_0",)), "node_3": (("add",), ("t_node_1", "t_node_2"))}
    g = make_graph(spec)
    costs = table(g, {"node_0": 1, "node_1": 5000, "node_2": 1, "node_3": 1},
                  {"node_0": 900, "node_1": 1, "node_2": 900, "node_3": 900})
    plan = partition(g, cost_model=costs, progress=False)
    kernels = [p.kernels for p in plan.partitions]
    assert ["node_0", "node_2"] in kernels and ["node_3"] in kernels and ["node_1"] in kernels


# --- memory ------------------------------------------------------------------------------------
def test_gpu_memory_model_by_hand():
    chain = {"node_0": (("add",), ("x",)), "node_1": (("matmul",), ("t_node_0",)),
             "node_2": (("add",), ("t_node_1", "t_node_0"))}
    g = make_graph(chain, sizes={"x": 10, "t_node_0": 100, "t_node_1": 1000, "out": 1},
                   params={"node_1": 7000, "node_2": 50})
    p = build_problem(g, table(g, dict.fromkeys(g.kernels, 1), dict.fromkeys(g.kernels, 1)))
    mem = gpu_memory(p, {"node_0": "cpu", "node_1": "cuda", "node_2": "cpu"})
    # step 0: t_node_0 copied over (400 B); step 1: + t_node_1 (4000 B); node_2 on the CPU.
    assert (mem.params, mem.peak_activations) == (7000, 4400)
    mem = gpu_memory(p, {"node_0": "cuda", "node_1": "cuda", "node_2": "cuda"})
    # x (40) from step 0 to 0; t_node_0 to step 2; t_node_1 steps 1-2; out (4) at step 2.
    assert (mem.params, mem.peak_activations) == (7050, 400 + 4000 + 4)


def test_infeasible_cap_is_reported_with_numbers():
    g = make_graph(DIAMOND, params={"node_2": 10_000_000})
    costs = table(g, dict.fromkeys(g.kernels, 100), dict.fromkeys(g.kernels, 1))
    with pytest.raises(PlanError, match=r"cap 1\.0 MiB cannot be met.*node_2 \(pinned by --pin node_2=cuda\)"
                                        r".*Raise gpu_memory"):
        partition(g, cost_model=costs, pins=["node_2=cuda"], gpu_memory=2**20, progress=False)


@pytest.mark.parametrize("cap", ["512MB", "4GiB", True, [1]])
def test_a_gpu_memory_that_is_no_byte_count_is_a_plan_error(cap):
    g = make_graph(DIAMOND)
    costs = table(g, dict.fromkeys(g.kernels, 100), dict.fromkeys(g.kernels, 1))
    with pytest.raises(PlanError, match=r"gpu_memory.*bytes.*2\*\*30"):
        partition(g, cost_model=costs, gpu_memory=cap, progress=False)


def test_cap_moves_the_heavy_kernel_and_reports_all_cuda_infeasible():
    g = make_graph(DIAMOND, params={"node_1": 50_000_000})
    costs = table(g, dict.fromkeys(g.kernels, 1000), dict.fromkeys(g.kernels, 10))
    free = partition(g, cost_model=costs, progress=False)
    assert set(free.assignment.values()) == {"cuda"}
    capped = partition(g, cost_model=costs, gpu_memory=2**20, progress=False)
    assert capped.assignment == {"node_0": "cuda", "node_1": "cpu", "node_2": "cuda", "node_3": "cuda"}
    assert capped.predicted["gpu_memory"]["total"] <= 2**20
    assert capped.predicted["baselines"]["all_cuda"] is None
    assert "infeasible" in capped.predicted["baseline_notes"]["all_cuda"]
    assert "over the cap" in render_plan(capped)


# --- timelines ---------------------------------------------------------------------------------
def _diamond_plans(node_1_on_cuda_us: float):
    """Latency and makespan plans of DIAMOND with free transfers: all-CPU takes
    1 + 400 + 300 + 1 us; node_1 on CUDA can run beside node_2 on the CPU."""
    g = make_graph(DIAMOND, sizes={"x": 1, "t_node_0": 1, "t_node_1": 1, "t_node_2": 1, "out": 1})
    costs = table(g, {"node_0": 1, "node_1": 400, "node_2": 300, "node_3": 1},
                  {"node_0": 1000, "node_1": node_1_on_cuda_us, "node_2": 1000, "node_3": 1000},
                  link_latency_s=0.0)
    return g, partition(g, cost_model=costs, progress=False), partition(g, "makespan", cost_model=costs, progress=False)


def test_sequential_and_parallel_timelines():
    g, lat, mk = _diamond_plans(450)
    # one after another: 1 + 400 + 300 + 1 on the CPU is best
    assert lat.predicted["latency_s"] == pytest.approx(702 * US, rel=1e-6)
    # overlapping, node_1 on CUDA (slower there) runs beside node_2 on the CPU: 1 + max(450, 300) + 1
    assert mk.assignment == {"node_0": "cpu", "node_1": "cuda", "node_2": "cpu", "node_3": "cpu"}
    assert mk.predicted["latency_s"] == pytest.approx(452 * US, rel=1e-3)
    assert mk.predicted["sequential_s"] > lat.predicted["sequential_s"]
    tracks = {s.track for s in mk.timeline}
    assert {"cpu", "cuda", "h2d", "d2h"} == tracks


def test_makespan_keeps_the_latency_plan_unless_overlap_gains_more_than_noise():
    g, lat, mk = _diamond_plans(699)  # overlapped: 1 + max(699, 300) + 1 = 701 against 702 all-CPU
    assert mk.assignment == lat.assignment == {k: "cpu" for k in g.kernels}


def test_pipelined_period_discounts_plans_that_span_both_devices():
    """A two-stage chain that splits evenly: the busiest-track bound says a split doubles
    throughput, but measured pipelines reach about half the bound (timeline docstring), so
    the throughput objective keeps a single device unless a split wins by more than that."""
    from hetpart.partitioner.timeline import SPLIT_PIPELINE_EFFICIENCY

    chain = {"node_0": (("matmul",), ("x",)), "node_1": (("matmul",), ("t_node_0",))}
    g = make_graph(chain, sizes={"x": 1, "t_node_0": 1, "out": 1})
    even = table(g, {"node_0": 100, "node_1": 100}, {"node_0": 100, "node_1": 100}, link_latency_s=0.0)
    tp = partition(g, "throughput", cost_model=even, progress=False)
    assert len(set(tp.assignment.values())) == 1 and tp.predicted["period_s"] == pytest.approx(200 * US, rel=1e-3)
    # a CPU stage 4x cheaper than the GPU's whole chain: the split wins even discounted
    lopsided = table(g, {"node_0": 10, "node_1": 1000}, {"node_0": 400, "node_1": 10}, link_latency_s=0.0)
    tp = partition(g, "throughput", cost_model=lopsided, progress=False)
    assert tp.assignment == {"node_0": "cpu", "node_1": "cuda"}
    assert tp.predicted["period_s"] == pytest.approx(10 * US / SPLIT_PIPELINE_EFFICIENCY, rel=0.05)


# --- objectives registry ---------------------------------------------------------------------------
def test_unknown_objective_lists_choices():
    g = make_graph(DIAMOND)
    with pytest.raises(PlanError, match="latency, makespan, throughput"):
        partition(g, "speed", cost_model=table(g, dict.fromkeys(g.kernels, 1), dict.fromkeys(g.kernels, 1)))


def test_a_model_file_instead_of_its_graph_says_to_load_it_first(tmp_path):
    for model in ("model.onnx", tmp_path / "model.onnx", "zoo:mlp:small"):
        with pytest.raises(PlanError, match=r"import the model first.*hetpart\.load\(model\)"):
            partition(model)


def test_a_new_objective_is_one_decorated_function():
    @objective("all_on_cpu_test", metric="sequential_s", timeline="sequential")
    def everything_on_cpu(problem, progress=False):
        return {k: "cpu" for k in problem.order}

    try:
        g = make_graph(DIAMOND)
        plan = partition(g, "all_on_cpu_test", cost_model=table(g, dict.fromkeys(g.kernels, 5),
                                                                dict.fromkeys(g.kernels, 1)), progress=False)
        assert set(plan.assignment.values()) == {"cpu"} and plan.objective == "all_on_cpu_test"
    finally:
        del OBJECTIVES["all_on_cpu_test"]


# --- files and text --------------------------------------------------------------------------------
@pytest.fixture
def split_plan():
    spec = {"node_0": (("add",), ("x",)), "node_1": (("matmul",), ("t_node_0",)),
            "node_2": (("take",), ("t_node_0", "t_node_1"))}
    g = make_graph(spec)
    costs = table(g, {"node_0": 1, "node_1": 1000, "node_2": 1}, {"node_0": 1000, "node_1": 1, "node_2": 1000})
    return partition(g, cost_model=costs, pins=["Gather=cpu"], progress=False)


def test_trace_is_chrome_trace_events(split_plan, tmp_path):
    doc = json.loads(write_trace(split_plan, tmp_path / "plan.trace.json").read_text())
    assert doc["schema"] == "hetpart-trace" and doc["version"] == 2
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert names == {"cpu", "cuda", "h2d", "d2h"}
    complete = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == len(split_plan.timeline)
    last = max(e["ts"] + e["dur"] for e in complete)
    assert last == pytest.approx(split_plan.predicted["latency_s"] * 1e6)


def test_svg_colours_kernels_and_marks_cuts(split_plan, tmp_path):
    from hetpart.partitioner.svg import COLOURS, CUT, draw_svg

    root = ET.fromstring(draw_svg(split_plan))
    ns = "{http://www.w3.org/2000/svg}"
    fills = [r.get("fill") for r in root.iter(f"{ns}rect") if r.get("rx")]
    assert sorted(fills) == sorted(COLOURS[d] for d in split_plan.assignment.values())
    cut_lines = [ln for ln in root.iter(f"{ns}line") if ln.get("stroke") == CUT and ln.find(f"{ns}title") is not None]
    crossing = [(u, v) for u, v, _ in split_plan.graph.edges() if split_plan.assignment[u] != split_plan.assignment[v]]
    assert len(cut_lines) == len(crossing) == 2
    assert write_svg(split_plan, tmp_path / "plan.svg").read_text().startswith("<")


def test_render_and_explain_say_where_and_why(split_plan):
    text = render_plan(split_plan)
    for needle in ("p0_cpu", "p1_cuda", "p2_cpu", "all_cpu", "all_cuda", "greedy", "transfers at the cuts"):
        assert needle in text
    why = explain(split_plan)
    assert "stays: pinned by --pin Gather=cpu" in why
    assert "p1_cuda" in why and "slower on cpu" in why


def test_plan_file_errors(split_plan, tmp_path):
    with pytest.raises(PlanError, match="does not exist"):
        Plan.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "hetpart-profile", "version": 1}))
    with pytest.raises(PlanError, match="not a hetpart plan"):
        Plan.load(bad)
    bad.write_text(json.dumps({**split_plan.to_json(), "version": 99}))
    with pytest.raises(PlanError, match="version 99"):
        Plan.load(bad)
    path = split_plan.save(tmp_path / "plan.json")
    with pytest.raises(PlanError, match="different model"):
        Plan.load(path, make_graph(DIAMOND))
    assert Plan.load(path, split_plan.graph) == split_plan


def test_version_1_plan_reads_as_all_resident_and_a_streamed_partition_must_fit_the_ring(split_plan, tmp_path):
    old = {k: v for k, v in split_plan.to_json().items() if k not in ("stream_slots", "stream_slot_bytes")}
    old["version"] = 1
    old["partitions"] = [{k: v for k, v in p.items() if k not in ("weights", "weight_bytes")}
                         for p in old["partitions"]]
    assert Plan.from_json(old) == split_plan and not split_plan.streamed
    gpu = next(p for p in split_plan.to_json()["partitions"] if p["device"] == "cuda")
    streamed = {**split_plan.to_json(), "stream_slots": 2, "stream_slot_bytes": 100}
    streamed["partitions"] = [{**p, "weights": "streamed", "weight_bytes": 64} if p is not None and p["name"] == gpu["name"]
                              else p for p in streamed["partitions"]]
    assert [p.name for p in Plan.from_json(streamed).streamed] == [gpu["name"]]
    too_big = {**streamed, "stream_slot_bytes": 32}
    with pytest.raises(PlanError, match="streams 64 bytes"):
        Plan.from_json(too_big)


def test_the_real_cost_model_has_every_method_the_partitioner_calls():
    costmodel = pytest.importorskip("hetpart.costmodel", reason="hetpart.costmodel is not importable yet")
    from hetpart.partitioner.costs import Costs

    wanted = [m for m in dir(Costs) if not m.startswith("_")]
    assert wanted and all(callable(getattr(costmodel.CostModel, m, None)) for m in wanted)


def test_partition_is_public_on_the_package():
    import hetpart

    assert hetpart.partition is partition and hetpart.Plan is Plan


# --- plans placed by hand -------------------------------------------------------------------
def test_a_plan_by_hand_is_the_maximal_same_device_runs_in_topological_order():
    g = make_graph(DIAMOND)
    order = g.topological_order()
    devices = dict(zip(order, ["cpu", "cuda", "cuda", "cpu"]))
    plan = Plan.by_hand(g, devices, "alternating", origin="test")
    assert [(p.name, p.device, p.kernels) for p in plan.partitions] == [
        ("p0_cpu", "cpu", [order[0]]), ("p1_cuda", "cuda", order[1:3]), ("p2_cpu", "cpu", [order[3]])]
    assert plan.assignment == devices and plan.assignment is not devices
    assert (plan.objective, plan.profile_origin, plan.graph) == ("alternating", "test", g)
    assert (plan.cuts, plan.timeline, plan.predicted) == ([], [], {})
    assert sum(len(p.kernels) for p in Plan.by_hand(g, dict.fromkeys(order, "cuda")).partitions) == 4
    assert len(Plan.by_hand(g, dict.fromkeys(order, "cuda")).partitions) == 1
