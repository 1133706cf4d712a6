"""Device-resident state in the partitioner (``partition(state=)``, issue 19's caches):
a bound input starts on its writer's device and its paired output stays there, so
neither pays a host copy per step; a cross-device read of the state is priced once.
References are computed from the graph and the cost table directly."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from hetpart.errors import PlanError
from hetpart.importer.op_graph import OpGraph
from hetpart.partitioner import Plan, partition
from hetpart.partitioner.costs import TableCosts
from hetpart.partitioner.mincut import solve_min_cut
from hetpart.partitioner.problem import build_problem
from hetpart.partitioner.random_cases import CaseShape, random_case
from partition_graphs import US, make_graph, table

CACHE_PAIR = {"present.0.key": "past.0.key"}


@pytest.fixture(scope="module")
def cache_step():
    """The one-cache decode step (tests/state_models.py) with llama_decode's names; a
    cost table whose GPU runs each kernel 30x faster and whose link is slow (1 MB/s),
    so the 512-byte cache's copies (522 us each way) decide where its write runs."""
    from state_models import cache_step_model

    from hetpart import importer

    graph = importer.load(cache_step_model(past="past.0.key", present="present.0.key"))
    costs = TableCosts({k: {"cpu": 300 * US, "cuda": 10 * US} for k in graph.kernels}, link_bytes_per_s=1e6)
    return graph, costs


def _writer(graph) -> str:
    (kernel,) = graph.tensors["past.0.key"].consumers
    return kernel


def test_with_state_the_cache_write_runs_on_the_gpu(cache_step):
    graph, costs = cache_step
    writer = _writer(graph)
    assert graph.tensors[graph.outputs[graph.output_names.index("present.0.key")]].producer == writer
    plain = partition(graph, cost_model=costs, progress=False)
    bound = partition(graph, cost_model=costs, progress=False, state=CACHE_PAIR)
    assert plain.assignment[writer] == "cpu"  # the cache through the host costs more than the GPU saves
    assert bound.assignment[writer] == "cuda"
    assert bound.state == CACHE_PAIR and plain.state == {}
    assert not any(c.tensor in ("past.0.key", graph.outputs[1]) for c in bound.cuts)  # no cache copy
    assert bound.predicted["latency_s"] < plain.predicted["latency_s"]


def test_state_removes_exactly_the_cache_copies(cache_step):
    """On the all-GPU placement, state saves the cache's host-to-device and
    device-to-host copies and nothing else."""
    graph, costs = cache_step
    on_gpu = {k: "cuda" for k in graph.kernels}
    plain, bound = build_problem(graph, costs), build_problem(graph, costs, state=CACHE_PAIR)
    cache = graph.tensors["past.0.key"].nbytes
    both_ways = costs.transfer_cost(cache, "cpu", "cuda") + costs.transfer_cost(cache, "cuda", "cpu")
    assert plain.transfer_s(on_gpu) - bound.transfer_s(on_gpu) == pytest.approx(both_ways, rel=1e-12)
    assert plain.compute_s(on_gpu) == bound.compute_s(on_gpu)


def test_a_state_read_on_the_other_device_is_copied_once_per_step():
    """node_0 reads the state x, node_1 writes its pair "out": on one device nothing
    moves; split, x crosses once (from its writer's device), "out" never to the host."""
    g = make_graph({"node_0": (("add",), ("x",)), "node_1": (("add",), ("t_node_0",))})
    costs = table(g, {"node_0": 50, "node_1": 50}, {"node_0": 5, "node_1": 5})
    p = build_problem(g, costs, state={"out": "x"})
    copy = costs.transfer_cost(4000, "cpu", "cuda")
    for device in ("cpu", "cuda"):
        assert p.transfer_s({"node_0": device, "node_1": device}) == 0.0
    assert p.transfer_s({"node_0": "cuda", "node_1": "cpu"}) == pytest.approx(2 * copy)  # x, t_node_0
    flow = next(f for f in p.flows if f.name == "x")
    assert p.copies(flow, {"node_0": "cpu", "node_1": "cuda"}) == ["cpu"]  # from the writer's GPU
    plan = partition(g, cost_model=costs, progress=False, state={"out": "x"})
    assert set(plan.assignment.values()) == {"cuda"} and plan.cuts == []


def _with_state(graph: OpGraph, out: str) -> OpGraph:
    """``graph`` with input x0 the shape of output ``out`` (so the two can be a pair)."""
    tensors = dict(graph.tensors)
    tensors["x0"] = dataclasses.replace(tensors["x0"], shape=tensors[out].shape)
    return dataclasses.replace(graph, tensors=tensors)


def _brute_force(graph: OpGraph, costs, out: str) -> float:
    """Minimum over every allowed assignment that runs x0's readers on the device of
    ``out``'s producer (the runtime binds nothing else) of compute plus copies, with x0
    starting on that device and ``out`` never copied to the host."""
    ids = list(graph.kernels)
    writer, readers = graph.tensors[out].producer, graph.tensors["x0"].consumers
    best = float("inf")
    for devices in itertools.product(("cpu", "cuda"), repeat=len(ids)):
        a = dict(zip(ids, devices))
        if not all(costs.supports(graph.kernels[k], d)[0] for k, d in a.items()):
            continue
        if any(a[r] != a[writer] for r in readers):
            continue
        total = sum(costs.kernel_cost(graph.kernels[k], d) for k, d in a.items())
        for t in graph.tensors.values():
            src = a[graph.tensors[out].producer] if t.name == "x0" else (
                "cpu" if t.producer is None else a[t.producer])
            needed = {a[c] for c in t.consumers} | ({"cpu"} if t.is_output and t.name != out else set())
            total += sum(costs.transfer_cost(t.nbytes, src, d) for d in needed if d != src)
        best = min(best, total)
    return best


@pytest.mark.parametrize("seed", [12, 16, 20, 25, 33, 38, 56, 58])
def test_the_cut_with_state_is_the_brute_force_optimum(seed):
    """The minimum cut prices a state input from its writer (both directions), and the
    latency plan (no overheads: the cut) predicts the same optimum."""
    graph, costs = random_case(seed, CaseShape(kernels=8, unsupported_share=0.0))
    out = graph.outputs[-1]
    graph = _with_state(graph, out)
    best = _brute_force(graph, costs, out)
    problem = build_problem(graph, costs, state={out: "x0"})
    assert problem.linear_cost(solve_min_cut(problem)) == pytest.approx(best, rel=1e-9, abs=1e-9)
    plan = partition(graph, cost_model=costs, progress=False, state={out: "x0"})
    assert plan.predicted["latency_s"] == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_a_plan_with_state_round_trips_through_json(cache_step, tmp_path):
    graph, costs = cache_step
    plan = partition(graph, cost_model=costs, progress=False, state=CACHE_PAIR)
    assert plan.to_json()["version"] == 4 and plan.to_json()["state"] == CACHE_PAIR
    again = Plan.load(plan.save(tmp_path / "plan.json"), graph)
    assert again == plan and again.state == CACHE_PAIR


def test_a_plan_without_state_writes_the_json_it_wrote_before(cache_step):
    """Default plans: version 3 and no "state" key, so older readers still read them."""
    graph, costs = cache_step
    d = partition(graph, cost_model=costs, progress=False).to_json()
    assert d["version"] == 3 and "state" not in d
    assert Plan.from_json(d).state == {}


def test_a_plan_file_with_a_malformed_state_is_refused(cache_step):
    graph, costs = cache_step
    d = partition(graph, cost_model=costs, progress=False, state=CACHE_PAIR).to_json()
    with pytest.raises(PlanError, match="state"):
        Plan.from_json({**d, "state": ["present.0.key"]})


@pytest.mark.parametrize("state,match", [
    ({"present.9.key": "past.0.key"}, "not an output"),
    ({"present.0.key": "past.9.key"}, "not an input"),
    ({"present.0.key": "x"}, "shape and dtype"),
    ({"present.0.key": "past.0.key", "y": "past.0.key"}, "bound to two outputs"),
])
def test_bad_state_pairs_are_refused_by_name(cache_step, state, match):
    graph, costs = cache_step
    with pytest.raises(PlanError, match=match):
        partition(graph, cost_model=costs, progress=False, state=state)


def test_state_on_the_gpu_holds_its_two_buffers_through_every_step():
    """The runtime keeps a bound pair in two device buffers for the whole step: the
    input x and its output "out" (4000 bytes each) both count at every step, where
    without state each lives only from its first to its last use there."""
    from hetpart.partitioner.gpu_memory import gpu_memory

    g = make_graph({"node_0": (("add",), ("x",)), "node_1": (("add",), ("t_node_0",))})
    costs = table(g, {"node_0": 50, "node_1": 50}, {"node_0": 5, "node_1": 5})
    on_gpu = {"node_0": "cuda", "node_1": "cuda"}
    assert gpu_memory(build_problem(g, costs), on_gpu).peak_activations == 8000  # x + t_node_0, t_node_0 + out
    assert gpu_memory(build_problem(g, costs, state={"out": "x"}), on_gpu).peak_activations == 12000
    on_cpu = {"node_0": "cpu", "node_1": "cpu"}
    assert gpu_memory(build_problem(g, costs, state={"out": "x"}), on_cpu).peak_activations == 0


def test_a_pin_on_the_writer_holds_the_readers_and_the_report_says_so():
    """node_1 writes "out", node_0 reads its pair x: pinning the writer to the CPU holds
    the reader there too (the runtime binds a state on one device only), the plan's
    constraints say why, and the report and explain say the pair was kept together."""
    from hetpart.partitioner.plan_report import explain, render_plan

    g = make_graph({"node_0": (("add",), ("x",)), "node_1": (("add",), ("t_node_0",))})
    costs = table(g, {"node_0": 50, "node_1": 50}, {"node_0": 5, "node_1": 5})
    plan = partition(g, cost_model=costs, progress=False, state={"out": "x"}, pins=["node_1=cpu"])
    assert plan.assignment == {"node_0": "cpu", "node_1": "cpu"}
    assert "kept on cpu with node_1 (pinned by --pin node_1=cpu)" in plan.constraints["node_0"]
    line = next(x for x in render_plan(plan).splitlines() if x.strip().startswith("out -> x"))
    assert "kept together on cpu" in line and "writer node_1" in line and "readers node_0" in line
    assert "move together" in explain(plan)


def test_state_cannot_be_pipelined(cache_step):
    """A step reads what the previous one wrote: the throughput objective's overlapped
    micro-batches would price steps the runtime runs one at a time."""
    graph, costs = cache_step
    with pytest.raises(PlanError, match="throughput.*latency"):
        partition(graph, "throughput", cost_model=costs, progress=False, state=CACHE_PAIR)
    assert partition(graph, "makespan", cost_model=costs, progress=False, state=CACHE_PAIR).state == CACHE_PAIR
