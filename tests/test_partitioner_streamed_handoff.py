"""A streaming plan's CUDA handoff (issue 19, bench/results/capped-decode-trace.md): in a plan
that streams weights each CUDA partition costs the cost model's ``streamed_cuda_handoff()`` call
more, and one entered from a CPU partition its wake more again (switch
``hetpart.partitioner.layout.STREAMED_CUDA_HANDOFF``); a plan that streams nothing, and costs
without the method, are priced as before.

No TVM: table costs (with the method added) on the chains of ``streaming_plans``; the real
cost model's values checked against the trace's."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hetpart.costmodel.cost_model import STREAMED_CUDA_HANDOFF_S
from hetpart.partitioner import TableCosts, layout, timeline
from hetpart.partitioner.evaluate import evaluate
from hetpart.partitioner.problem import STREAM, build_problem, split
from streaming_plans import chain

MiB = 2**20
C, W = STREAMED_CUDA_HANDOFF_S


class HandoffCosts(TableCosts):
    """Table costs that hand off as the cost model does."""

    def streamed_cuda_handoff(self):
        return STREAMED_CUDA_HANDOFF_S


@pytest.fixture
def switch():
    """The switch on for the test (it is off by default), restored after whatever the test sets."""
    was = layout.STREAMED_CUDA_HANDOFF
    layout.STREAMED_CUDA_HANDOFF = True
    yield
    layout.STREAMED_CUDA_HANDOFF = was


def _problem(n: int = 6, kind=HandoffCosts):
    graph = chain([16 * MiB] * n, act=256)
    seconds = {k.id: {"cpu": 1e-3, "cuda": 20e-6} for k in graph.nodes}
    costs = kind(seconds, link_bytes_per_s=50e9, link_latency_s=5e-6, overhead_s={"cpu": 2e-6, "cuda": 3e-6})
    return build_problem(graph, costs, (), None, True)


def test_the_cost_model_hands_off_as_the_trace_measured():
    """The trace's medians (bench/results/capped-decode-trace.md): 218 us a streamed CUDA span
    less its 10-17 us predicted, 134 us from a CPU partition's end to the CUDA start."""
    assert STREAMED_CUDA_HANDOFF_S == pytest.approx((200e-6, 130e-6))
    assert _problem().stream_handoff == STREAMED_CUDA_HANDOFF_S
    assert _problem(kind=TableCosts).stream_handoff == (0.0, 0.0)


def test_each_cuda_partition_pays_the_call_and_one_after_the_cpu_the_wake():
    devices = ["cuda", "cpu", "cuda", "cuda", "cpu", "cuda"]
    assert layout.streamed_handoffs(devices, [1.0] * 6, C, W) == pytest.approx(
        [1 + C, 1.0, 1 + C + W, 1 + C, 1.0, 1 + C + W])
    assert layout.streamed_handoffs(["cpu", "cpu"], [0.5, 0.5], C, W) == [0.5, 0.5]


def _laid_out(p, placement):
    a, streamed = split(placement)
    return layout.lay_out(p, a, False, streamed, 16 * MiB)


def test_a_streaming_layout_is_priced_with_the_handoff_and_a_resident_one_without(switch):
    """cpu | stream | stream | cpu | cuda | cpu, one 16 MiB slot per streamed kernel: three CUDA
    partitions, two of them entered from the CPU.  The same placement without streaming keeps
    its overheads; with the switch off the streaming one prices as before."""
    p = _problem()
    streamed = dict(zip(p.order, ["cpu", STREAM, STREAM, "cpu", "cuda", "cpu"]))
    resident = dict(zip(p.order, ["cpu", "cuda", "cuda", "cpu", "cuda", "cpu"]))
    on, plain_on = _laid_out(p, streamed), _laid_out(p, resident)
    layout.STREAMED_CUDA_HANDOFF = False
    off, plain_off = _laid_out(p, streamed), _laid_out(p, resident)
    assert [g.device for g in on.groups] == ["cpu", "cuda", "cuda", "cpu", "cuda", "cpu"]
    assert [g.streamed for g in on.groups] == [False, True, True, False, False, False]
    added = [a - b for a, b in zip(on.group_overhead, off.group_overhead)]
    assert added == pytest.approx([0.0, C + W, C, 0.0, C + W, 0.0])
    assert [a - b for a, b in zip(on.group_seconds, off.group_seconds)] == pytest.approx(added)
    assert plain_on.group_overhead == plain_off.group_overhead
    assert plain_on.group_seconds == plain_off.group_seconds
    layout.STREAMED_CUDA_HANDOFF = True
    table = _problem(kind=TableCosts)  # costs without the method: as before, switch on or off
    assert _laid_out(table, streamed).group_seconds == off.group_seconds


def test_the_added_seconds_show_in_the_end_where_the_copies_do_not_bind(switch):
    """Each streamed call's copy (16 MiB at 50 GB/s: 0.34 ms) lands during the 1 ms CPU
    partition before it, with a two-slot ring: the sequential end moves by exactly the
    handoffs, 3 calls + 2 wakes."""
    p = _problem()
    placement = dict(zip(p.order, ["cpu", STREAM, STREAM, "cpu", STREAM, "cpu"]))
    on = replace(_laid_out(p, placement), stream_slots=2)
    layout.STREAMED_CUDA_HANDOFF = False
    off = replace(_laid_out(p, placement), stream_slots=2)
    assert timeline.end_time(on, "sequential") - timeline.end_time(off, "sequential") == \
        pytest.approx(3 * C + 2 * W)


def test_the_handoff_never_makes_a_streaming_plan_faster(switch):
    """Every placement of a small chain ends no earlier with the switch on (each ring's
    sequential end is a max-plus of the task lengths, which only grow; the best ring of
    larger ends is no smaller)."""
    import itertools

    p = _problem(n=4)
    for choice in itertools.product(["cpu", "cuda", STREAM], repeat=4):
        a = dict(zip(p.order, choice))
        layout.STREAMED_CUDA_HANDOFF = False
        before = evaluate(p, a)
        layout.STREAMED_CUDA_HANDOFF = True
        after = evaluate(p, a)
        assert after.sequential_s >= before.sequential_s - 1e-15
