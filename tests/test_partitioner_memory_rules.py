"""The memory-only placement rules (llama.cpp-style, ORT-style) the benchmark of issue 19
compares against: each respects the cap, and each is the rule it claims to be (the
largest GPU share of its kind that fits), checked on random graphs and real models."""

from __future__ import annotations

import pytest

from hetpart.partitioner.capacity import least_gpu
from hetpart.partitioner.gpu_memory import fits, gpu_memory
from hetpart.partitioner.memory_rules import layers, llama_cpp_rule, ort_rule
from hetpart.partitioner.problem import build_problem
from hetpart.partitioner.random_cases import CaseShape, random_case, roofline_costs

SEEDS = range(40)


def _problem(seed: int, share: float):
    """A random case capped at ``share`` of what its all-GPU placement needs."""
    graph, costs = random_case(seed, CaseShape(kernels=14))
    free = build_problem(graph, costs)
    need = gpu_memory(free, {k: "cuda" if "cuda" in free.allowed[k] else "cpu" for k in free.order}).total
    return build_problem(graph, costs, gpu_memory=int(need * share))


def _respects(problem, a):
    assert set(a) == set(problem.order)
    assert all(a[k] in problem.allowed[k] for k in a)
    assert gpu_memory(problem, a).total <= problem.gpu_memory


def _rule_plans(rule, share: float):
    """``(problem, assignment)`` per seed of SEEDS where ``rule`` places ``_problem(seed, share)``,
    each checked by :func:`_respects`; where it places none, the problem cannot fit at all (the
    least GPU placement breaks the cap) -- both asserted here."""
    for seed in SEEDS:
        problem = _problem(seed, share)
        a = rule(problem)
        if a is None:
            assert not fits(problem, least_gpu(problem))
            continue
        _respects(problem, a)
        yield problem, a


@pytest.mark.parametrize("share", [0.25, 0.5, 0.9])
def test_llama_cpp_rule_fits_and_is_the_largest_gpu_suffix(share):
    for problem, a in _rule_plans(llama_cpp_rule, share):
        stack = layers(problem)
        movable = [[k for k in layer if len(problem.allowed[k]) == 2] for layer in stack]
        cpu_layers = [i for i, layer in enumerate(movable) if any(a[k] == "cpu" for k in layer)]
        n = max(cpu_layers) + 1 if cpu_layers else 0
        # The CPU layers are a prefix, and one layer fewer on the CPU would not fit.
        assert all(a[k] == "cpu" for layer in movable[:n] for k in layer)
        assert all(a[k] == "cuda" for layer in movable[n:] for k in layer)
        if n:
            fewer = {k: ("cpu" if any(k in layer for layer in stack[:n - 1]) else "cuda") for k in problem.order}
            fewer = {k: d if d in problem.allowed[k] else problem.allowed[k][0] for k, d in fewer.items()}
            assert not fits(problem, fewer)


@pytest.mark.parametrize("share", [0.25, 0.5, 0.9])
def test_ort_rule_fills_the_gpu_in_order_until_the_cap(share):
    for problem, a in _rule_plans(ort_rule, share):
        movable = [k for k in problem.order if len(problem.allowed[k]) == 2]
        on_gpu = [a[k] == "cuda" for k in movable]
        n = on_gpu.index(False) if False in on_gpu else len(on_gpu)
        assert not any(on_gpu[n:]), "a kernel after the first CPU one went to the GPU"
        if n < len(movable):  # the next kernel would have broken the cap
            assert not fits(problem, dict(a, **{movable[n]: "cuda"}))


def test_rules_say_none_when_nothing_fits():
    problem = _problem(3, 0.5)
    tiny = build_problem(problem.graph, problem.costs, gpu_memory=0)
    if fits(tiny, least_gpu(tiny)):  # the case has no kernel held on the GPU
        pytest.skip("seed 3 holds nothing on the GPU")
    assert llama_cpp_rule(tiny) is None and ort_rule(tiny) is None


def test_layers_of_a_transformer_are_its_blocks(zoo_graph):
    """bert:small has 2 encoder layers: the stack is embeddings+layer 0, layer 1 (+ pooler)."""
    graph = zoo_graph("bert")
    problem = build_problem(graph, roofline_costs(graph))
    stack = layers(problem)
    assert [k for layer in stack for k in layer] == list(problem.order)
    assert len(stack) == 2


def test_llama_cpp_rule_on_a_transformer_moves_whole_layers(zoo_graph):
    graph = zoo_graph("llama")
    costs = roofline_costs(graph)
    free = build_problem(graph, costs)
    everything = gpu_memory(free, {k: "cuda" if "cuda" in free.allowed[k] else "cpu" for k in free.order}).total
    problem = build_problem(graph, costs, gpu_memory=everything * 2 // 3)
    a = llama_cpp_rule(problem)
    _respects(problem, a)
    stack = layers(problem)
    movable = lambda layer: [k for k in layer if len(problem.allowed[k]) == 2]  # noqa: E731
    per_layer = [{a[k] for k in movable(layer)} for layer in stack]
    assert all(len(devices) <= 1 for devices in per_layer), per_layer
    assert per_layer[0] == {"cpu"} and per_layer[-1] == {"cuda"}
