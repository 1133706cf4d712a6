"""The planning fast paths give the numbers of the code they replace, to the last bit:
:func:`hetpart.partitioner.timeline.end_time`'s fused sequential walk
(:data:`~hetpart.partitioner.timeline.FAST_SEQUENTIAL`) against :func:`_schedule`, and
:func:`~hetpart.partitioner.grouping.group_kernels` with precomputed parts against
without, on random placements (streamed kernels included) of random graphs."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from hetpart.importer.op_graph import OpGraph
from hetpart.partitioner import timeline
from hetpart.partitioner.evaluate import SLOT_CHOICES, SLOT_MULTIPLES, evaluate
from hetpart.partitioner.grouping import group_kernels, group_parts
from hetpart.partitioner.layout import lay_out
from hetpart.partitioner.problem import STREAM, build_problem, split
from hetpart.partitioner.random_cases import CaseShape, random_case


def _cases(seeds=range(12), n=14):
    for seed in seeds:
        graph, costs = random_case(seed, CaseShape(kernels=n, max_param_bytes=1 << 24, overhead_s=5e-6))
        rng = random.Random(seed)
        kernels = {k: replace(v, param_bytes=rng.choice((0, 1, 1)) * rng.randint(1 << 20, 1 << 24))
                   for k, v in graph.kernels.items()}
        graph = OpGraph(graph.name, kernels, graph.tensors, graph.inputs, graph.outputs)
        problem = build_problem(graph, replace(costs, link_bytes_per_s=32e9), gpu_memory=1 << 26,
                                stream_weights=True)
        for _ in range(15):
            placement = {}
            for k in problem.order:
                opts = problem.allowed[k] + ((STREAM,) if "cuda" in problem.allowed[k] else ())
                placement[k] = rng.choice(opts)
            yield problem, placement


@pytest.mark.parametrize("seeds", [range(0, 6), range(6, 12)])
def test_fast_sequential_end_is_the_scheduled_one(seeds):
    for problem, placement in _cases(seeds):
        a, streamed = split(placement)
        largest = max((problem.graph.kernels[k].param_bytes for k in streamed), default=0)
        for mult in SLOT_MULTIPLES:
            layout = lay_out(problem, a, False, streamed, largest * mult)
            for slots in SLOT_CHOICES:
                ringed = replace(layout, stream_slots=slots, stream_slot_bytes=largest * mult)
                slow = max(timeline._schedule(ringed, "sequential")[3], default=0.0)
                assert timeline._sequential_end(ringed) == slow
                assert timeline.end_time(ringed, "sequential") == slow


def test_group_kernels_with_precomputed_parts_is_the_same():
    for problem, placement in _cases(range(4)):
        a, streamed = split(placement)
        for by_level in (False, True):
            parts = group_parts(problem, a, by_level, streamed)
            for slot in (1 << 24, 1 << 25, 3 << 24):
                assert group_kernels(problem, a, by_level, streamed, slot, parts) == \
                    group_kernels(problem, a, by_level, streamed, slot)


def test_switch_off_prices_the_same(monkeypatch):
    for problem, placement in _cases(range(3)):
        fast = evaluate(problem, placement)
        monkeypatch.setattr(timeline, "FAST_SEQUENTIAL", False)
        slow = evaluate(problem, placement)
        monkeypatch.setattr(timeline, "FAST_SEQUENTIAL", True)
        assert (fast.sequential_s, fast.fits, fast.layout) == (slow.sequential_s, slow.fits, slow.layout)


def test_sequential_ends_of_every_ring_size_at_once():
    for problem, placement in _cases(range(8)):
        a, streamed = split(placement)
        largest = max((problem.graph.kernels[k].param_bytes for k in streamed), default=0)
        layout = lay_out(problem, a, False, streamed, largest * 2)
        want = [max(timeline._schedule(replace(layout, stream_slots=s), "sequential")[3], default=0.0)
                for s in SLOT_CHOICES]
        assert timeline.sequential_ends(layout, SLOT_CHOICES) == want
        assert timeline.sequential_end_times(layout, SLOT_CHOICES) == want


def test_has_cycle_and_group_order_agree_with_networkx():
    import heapq

    import networkx as nx

    from hetpart.partitioner import grouping

    for problem, placement in _cases(range(6)):
        a, _ = split(placement)
        rng = random.Random(len(problem.order))
        for _ in range(5):  # random parts: cycles included
            part = {k: problem.step[k] if rng.random() < 0.5 else 0 for k in problem.order}
            q = grouping._quotient(problem, part)
            assert grouping._has_cycle(problem, part) == (not nx.is_directed_acyclic_graph(q))
        part = grouping._components(problem, a, lambda u, v: True)
        q = grouping._quotient(problem, part)
        if nx.is_directed_acyclic_graph(q):
            indeg = {p: q.in_degree(p) for p in q}
            ready = [p for p, d in indeg.items() if d == 0]
            heapq.heapify(ready)
            want = []
            while ready:
                p = heapq.heappop(ready)
                want.append(p)
                for r in q.successors(p):
                    indeg[r] -= 1
                    if indeg[r] == 0:
                        heapq.heappush(ready, r)
            got = [problem.step[g.kernels[0]] for g in grouping._ordered_groups(problem, a, part)]
            assert got == want


def test_lay_out_with_a_shared_flow_plan_is_the_same():
    from hetpart.partitioner.layout import flow_plan

    for problem, placement in _cases(range(6)):
        a, streamed = split(placement)
        flows = flow_plan(problem, a)
        for by_level in (False, True):
            for slot in (1 << 24, 3 << 24):
                assert lay_out(problem, a, by_level, streamed, slot, flows=flows) == \
                    lay_out(problem, a, by_level, streamed, slot)


def test_a_lazy_makespan_is_the_parallel_end_of_the_layout():
    for problem, placement in _cases(range(3)):
        e = evaluate(problem, placement)
        assert e.makespan_s == timeline.end_time(e.layout, "parallel")
