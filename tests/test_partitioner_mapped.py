"""Mapped weights (issue 19): a CUDA kernel whose weights stay in pinned host memory and are read
in place through their mapped device pointer, the partitioner's fourth choice behind
``hetpart.partitioner.streaming.MAPPED_WEIGHTS`` (off by default).

No TVM: chain graphs with table costs.  The references are written here from the documented
model: a mapped kernel's weights are out of the GPU memory (no params, no ring slot), it runs in
a CUDA partition of its own kind, priced at its resident seconds plus its weights' copy at the
link (a table has no ``mapped_cost``), and the plan records ``weights="mapped"``.
"""

from __future__ import annotations

import pytest

from hetpart.errors import PlanError
from hetpart.partitioner import Plan, TableCosts, partition, render_plan
from hetpart.partitioner import streaming
from hetpart.partitioner.choice import MAPPED, device_of
from hetpart.partitioner.evaluate import evaluate
from hetpart.partitioner.plan_report import placement_of
from hetpart.partitioner.problem import STREAM, build_problem, mapped_of, split
from streaming_plans import chain

MB = 10**6
LINK = 50e9  # bytes/s host to device
W = 100 * MB


def _graph():
    return chain([W, 0, W, 0, W], act=256, name="mapped-chain")


def _costs(graph) -> TableCosts:
    """The GPU fast, the CPU far slower than the link (a compute-bound CPU kernel): every
    weighted kernel belongs on CUDA, and weights that do not fit are read over the link."""
    seconds = {k.id: {"cpu": 1.0 if k.param_bytes else 1e-6, "cuda": 10e-6 if k.param_bytes else 1e-6}
               for k in graph.nodes}
    return TableCosts(seconds, link_bytes_per_s=LINK, link_latency_s=5e-6, overhead_s={"cpu": 5e-6, "cuda": 5e-6})


CAP = W + 10 * MB  # one table resident, not two; a table plus a ring slot of one does not fit either


def test_the_switch_is_off_by_default():
    assert streaming.MAPPED_WEIGHTS is False
    g = _graph()
    problem = build_problem(g, _costs(g), (), CAP, True)
    assert all(MAPPED not in streaming.choices(problem, k) for k in problem.order)
    plan = partition(g, "latency", cost_model=_costs(g), gpu_memory=CAP, progress=False, stream_weights=True)
    assert not plan.mapped and {p.weights for p in plan.partitions} <= {"resident", "streamed"}


def test_mapped_is_cuda_and_split_keeps_placements_without_it():
    assert device_of(MAPPED) == "cuda" and device_of(STREAM) == "cuda" and device_of("cpu") == "cpu"
    plain = {"a": "cpu", "b": "cuda"}
    assert split(plain)[0] is plain and mapped_of(plain) == frozenset()
    a, streamed = split({"a": MAPPED, "b": STREAM, "c": "cpu"})
    assert a == {"a": "cuda", "b": "cuda", "c": "cpu"} and streamed == {"b"}
    assert mapped_of({"a": MAPPED, "b": STREAM}) == {"a"}


def test_the_memory_cap_leaves_mapped_weights_out():
    g = _graph()
    problem = build_problem(g, _costs(g), (), CAP, True)
    everything = {k: "cuda" for k in problem.order}
    resident = evaluate(problem, everything)
    assert not resident.fits and resident.memory.params == 3 * W
    mapped = dict(everything, node_2=MAPPED, node_4=MAPPED)
    e = evaluate(problem, mapped)
    assert e.fits and e.memory.params == W and e.memory.stream_buffers == 0
    assert e.mapped == {"node_2", "node_4"} and e.placement == mapped
    # mapped kernels are grouped apart (as a third device); each mapped group pays its weights over the link
    groups = [(g_.device, g_.mapped, g_.kernels) for g_ in e.layout.groups]
    assert groups == [("cuda", False, ("node_0", "node_1")), ("cuda", True, ("node_2",)),
                      ("cuda", False, ("node_3",)), ("cuda", True, ("node_4",))]
    copy = 5e-6 + W / LINK
    for i, g_ in enumerate(e.layout.groups):
        kernels = sum(problem.seconds[k]["cuda"] for k in g_.kernels)
        want = kernels + (copy if g_.mapped else 0.0) + e.layout.group_overhead[i]
        assert e.layout.group_seconds[i] == pytest.approx(want)
    assert e.layout.weight_seconds == [0.0] * 4  # no copy on the copy stream


def test_with_the_switch_on_the_plan_maps_what_does_not_fit_and_records_it(monkeypatch, tmp_path):
    g = _graph()
    off = partition(g, "latency", cost_model=_costs(g), gpu_memory=CAP, progress=False, stream_weights=True)
    monkeypatch.setattr(streaming, "MAPPED_WEIGHTS", True)
    problem = build_problem(g, _costs(g), (), CAP, True)
    assert streaming.choices(problem, "node_0") == ("cpu", "cuda", STREAM, MAPPED)
    assert streaming.choices(problem, "node_1") == ("cpu", "cuda", STREAM)  # no weights: nothing to map
    plan = partition(g, "latency", cost_model=_costs(g), gpu_memory=CAP, progress=False, stream_weights=True)
    mapped = [p for p in plan.partitions if p.weights == "mapped"]
    assert len(mapped) == 2 and all(p.device == "cuda" and p.weight_bytes == W for p in mapped)
    assert plan.predicted["latency_s"] < off.predicted["latency_s"]
    mem = plan.predicted["gpu_memory"]
    assert mem["params"] == W and mem.get("stream_buffers", 0) == 0 and mem["total"] <= CAP
    # each mapped call: its kernel + its table over the link
    for p in mapped:
        assert p.compute_s == pytest.approx(10e-6 + 5e-6 + W / LINK)
    placed = placement_of(plan)
    assert sorted(k for k, d in placed.items() if d == MAPPED) == sorted(k for p in mapped for k in p.kernels)
    assert evaluate(problem, placed).sequential_s == pytest.approx(plan.predicted["latency_s"])
    path = plan.save(tmp_path / "plan.json")
    assert '"version": 5' in path.read_text()
    back = Plan.load(path, g)
    assert [p.weights for p in back.partitions] == [p.weights for p in plan.partitions]
    assert "p" in render_plan(back)  # the report renders a plan with mapped partitions


def test_a_plan_maps_weights_only_on_cuda():
    g = _graph()
    plan = Plan.by_hand(g, {k: "cpu" for k in g.kernels})
    d = plan.to_json()
    d["partitions"][0]["weights"] = "mapped"
    with pytest.raises(PlanError, match="only a CUDA partition"):
        Plan.from_json(d)


def test_mapped_reads_and_weight_copies_take_the_link_in_turns():
    from hetpart.partitioner.timeline import end_time, simulate

    g = _graph()
    problem = build_problem(g, _costs(g), (), None, True)
    placement = {k: "cuda" for k in problem.order}
    placement.update(node_0=STREAM, node_2=MAPPED, node_4=STREAM)
    e = evaluate(problem, placement)
    assert [(x.streamed, x.mapped) for x in e.layout.groups if x.streamed or x.mapped] == \
        [(True, False), (False, True), (True, False)]
    spans = simulate(e.layout, "sequential")
    link = [(s.start, s.end) for s in spans if s.task.kind == "weights"
            or (s.task.kind == "partition" and e.layout.groups[s.task.index].mapped)]
    assert len(link) == 3  # the two streamed partitions' copies and the mapped call
    for (a0, a1), (b0, b1) in zip(sorted(link), sorted(link)[1:]):
        assert a1 <= b0 + 1e-12  # never two at once
    assert end_time(e.layout, "sequential") == pytest.approx(max(s.end for s in spans))
    assert e.sequential_s >= 3 * W / LINK  # two copies and one mapped read, one after another
