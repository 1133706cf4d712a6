"""The CPU wake cost in the partitioner (issue 19): a CPU partition entered from the GPU
pays it; a plan's predicted latency grows with its GPU->CPU boundaries, and a dear wake
turns the planner from a fragmented placement to a contiguous one.  No TVM."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from hetpart.partitioner import partition
from hetpart.partitioner.evaluate import evaluate
from hetpart.partitioner.layout import partition_overheads, wake_count
from hetpart.partitioner.problem import build_problem
from hetpart.partitioner.random_cases import CaseShape, random_case

from chain_cases import US, alternating_chain


def boundaries_into_cpu(plan) -> int:
    devices = [p.device for p in plan.partitions]
    return sum(1 for i, d in enumerate(devices) if d == "cpu" and len(devices) > 1 and devices[i - 1] != d)


def test_partition_overheads_charge_each_entry_into_a_device_cyclically():
    graph, costs = alternating_chain(4)
    problem = build_problem(graph, replace(costs, overhead_s={"cpu": 1.0, "cuda": 2.0}, wake_s={"cpu": 10.0}))
    assert partition_overheads(problem, ["cpu"]) == [1.0]  # one device: never wakes
    assert partition_overheads(problem, ["cpu", "cpu"]) == [1.0, 1.0]
    assert partition_overheads(problem, ["cpu", "cuda"]) == [11.0, 2.0]  # after the last run's CUDA partition
    assert partition_overheads(problem, ["cuda", "cpu", "cuda", "cpu"]) == [2.0, 11.0, 2.0, 11.0]
    assert wake_count(["cuda", "cpu", "cuda", "cpu"]) == 2 and wake_count(["cpu"]) == 0


def test_a_costs_without_wake_cost_prices_no_wake():
    class Old:  # a Costs written before the wake cost: no wake_cost method
        def __init__(self, table):
            self.table = table

        def __getattr__(self, name):
            if name == "wake_cost":
                raise AttributeError(name)
            return getattr(self.table, name)

    graph, costs = alternating_chain(4)
    assert build_problem(graph, Old(replace(costs, wake_s={"cpu": 1.0}))).wake == {"cpu": 0.0, "cuda": 0.0}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 14), wake=st.sampled_from([1e-6, 50e-6, 400e-6]),
       flips=st.lists(st.booleans(), min_size=14, max_size=14))
def test_predicted_latency_grows_by_the_wake_per_boundary_into_the_cpu(seed, n, wake, flips):
    graph, costs = random_case(seed, CaseShape(kernels=n, unsupported_share=0.0, max_param_bytes=16))
    cold = build_problem(graph, replace(costs, wake_s={"cpu": wake}))
    hot = build_problem(graph, costs)
    a = {k: ("cuda" if flips[i] else "cpu") for i, k in enumerate(cold.order)}
    e_cold, e_hot = evaluate(cold, a), evaluate(hot, a)
    wakes = wake_count([g.device for g in e_cold.layout.groups])
    assert e_cold.layout.groups == e_hot.layout.groups
    assert abs(e_cold.sequential_s - e_hot.sequential_s - wakes * wake) <= 1e-12 + 1e-9 * e_hot.sequential_s
    # more boundaries, more wake: the same assignment with one more CPU island costs more
    assert e_cold.sequential_s >= e_hot.sequential_s


def test_a_dear_wake_turns_the_plan_from_fragmented_to_contiguous():
    graph, costs = alternating_chain(8)
    found = {}
    for wake_us in (0, 5, 20, 100, 400):
        plan = partition(graph, "latency", cost_model=replace(costs, wake_s={"cpu": wake_us * US}), progress=False)
        found[wake_us] = (len(plan.partitions), boundaries_into_cpu(plan), plan.predicted["latency_s"])
    assert found[0][0] == 8 and found[0][1] == 4  # free wakes: every kernel where it is cheapest
    assert found[400][1] == 0 and found[400][0] <= 2  # dear wakes: no CPU island after CUDA work
    assert [f[1] for f in found.values()] == sorted((f[1] for f in found.values()), reverse=True)
    # the fragmented plan's price includes its wakes: at 100 us it is no longer the best
    assert found[100][2] < 8 * 100 * US + 4 * 100 * US


def test_the_plan_reports_its_cpu_wakes_and_their_overheads():
    graph, costs = alternating_chain(8)
    plan = partition(graph, "latency", cost_model=replace(costs, wake_s={"cpu": 1 * US}), progress=False)
    assert plan.predicted["cpu_wakes"] == boundaries_into_cpu(plan) == 4
    assert abs(plan.predicted["overhead_s"] - 4 * US) < 1e-12
    assert sum(p.overhead_s for p in plan.partitions) == plan.predicted["overhead_s"]
