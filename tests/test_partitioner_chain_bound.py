"""The chain bound (:mod:`hetpart.partitioner.chain_bound`): a lower bound on the predicted
latency of every placement under a cap.  References: brute force over every placement of
small graphs (``evaluate``'s sequential latency, the latency objective), and a case
solved by hand.  No TVM."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetpart.importer.op_graph import OpGraph
from hetpart.partitioner import TableCosts, partition
from hetpart.partitioner.chain_bound import chain_bound
from hetpart.partitioner.evaluate import evaluate
from hetpart.partitioner.problem import STREAM, build_problem
from hetpart.partitioner.random_cases import CaseShape, random_case
import streaming_plans

SETTINGS = dict(derandomize=True, deadline=None, database=None)
MiB = 2**20


def chain(params: list[int]) -> OpGraph:
    """node_0 -> node_1 -> ... with ``params[i]`` weight bytes, tiny activations."""
    return streaming_plans.chain(params, act=4)


def case(seed: int, n: int):
    """Random DAGs whose weights (8-16 MiB at 32 GB/s) cost about what kernels do, so
    resident, streamed and CPU all compete."""
    graph, costs = random_case(seed, CaseShape(kernels=n, max_param_bytes=1 << 24, max_elements=1 << 16,
                                               overhead_s=5e-6))
    rng = random.Random(seed)
    kernels = {k: replace(v, param_bytes=rng.choice((0, 1, 1, 1)) * rng.randint(8 * MiB, 16 * MiB))
               for k, v in graph.kernels.items()}
    return OpGraph(graph.name, kernels, graph.tensors, graph.inputs, graph.outputs), \
        replace(costs, link_bytes_per_s=32e9)


def choices(problem, k):
    return problem.allowed[k] + ((STREAM,) if "cuda" in problem.allowed[k] else ())


@settings(max_examples=25, **SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5), squeeze=st.floats(0.0, 1.0))
def test_the_bound_is_at_most_every_fitting_placement(seed, n, squeeze):
    graph, costs = case(seed, n)
    total = sum(k.param_bytes for k in graph.nodes)
    problem = build_problem(graph, costs, gpu_memory=int(total * squeeze) + 1)
    best = min((e.sequential_s for combo in itertools.product(*(choices(problem, k) for k in problem.order))
                if (e := evaluate(problem, dict(zip(problem.order, combo)))).fits), default=None)
    bound = chain_bound(problem)
    if best is not None:
        assert bound.seconds <= best * (1 + 1e-9)
    # never below the trivial bound: each kernel on its cheaper device, nothing copied
    trivial = sum(min(problem.seconds[k].values()) for k in problem.order)
    assert bound.seconds >= trivial * (1 - 1e-9)


def test_the_bound_solved_by_hand():
    """Four 16 MiB kernels, none resident (the cap holds one slot): a share f of each
    streamed, the rest on the CPU.  Chain 4 (f g + (1 - f) p), copies 4 f w / h; equal at
    f = p / (w/h - g + p)."""
    w, g, p, h = 16 * MiB, 20e-6, 900e-6, 32e9
    graph = chain([w] * 4)
    costs = TableCosts({k: {"cpu": p, "cuda": g} for k in graph.kernels}, link_bytes_per_s=h, link_latency_s=0.0)
    bound = chain_bound(build_problem(graph, costs, gpu_memory=w))
    f = p / (w / h - g + p)
    assert bound.seconds == pytest.approx(4 * f * w / h, rel=1e-6)
    assert bound.slot_bytes == w and bound.resident_bytes == 0


def test_without_pressure_the_bound_is_the_cheaper_device_per_kernel():
    graph = chain([MiB, 0, 2 * MiB])
    secs = {"node_0": {"cpu": 3e-3, "cuda": 1e-4}, "node_1": {"cpu": 1e-5, "cuda": 2e-5},
            "node_2": {"cpu": 5e-4, "cuda": 9e-4}}
    costs = TableCosts(secs, link_bytes_per_s=1e9, link_latency_s=0.0)
    bound = chain_bound(build_problem(graph, costs, gpu_memory=None))
    assert bound.seconds == pytest.approx(1e-4 + 1e-5 + 5e-4, rel=1e-9)


@pytest.mark.parametrize("seed", [3, 11, 16, 40])
def test_the_plan_is_never_below_the_bound(seed):
    graph, costs = case(seed, 10)
    cap = sum(k.param_bytes for k in graph.nodes) // 3
    plan = partition(graph, cost_model=costs, gpu_memory=cap, progress=False, stream_weights=True)
    assert chain_bound(build_problem(graph, costs, gpu_memory=cap)).seconds <= plan.predicted["latency_s"] * (1 + 1e-9)
