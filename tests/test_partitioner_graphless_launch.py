"""A plan without CUDA graphs (issue 19, bench/results/capped-launch-price.md): with the switch
``hetpart.partitioner.layout.GRAPHLESS_CUDA_LAUNCH`` on, each CUDA partition of a plan that
streams weights (``layout.cuda_graphs_off``, compiler.extract's rule) lasts at least its host's
kernel-by-kernel launch, ``call + launches * launch``, and one entered from a CPU partition pays
the handoff besides; a plan that streams nothing, and costs without the method, are priced as
before.

No TVM except the view test: table costs (with the method added) on the chains of
``streaming_plans``; the real cost model's values checked against the trace's."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from hetpart.costmodel.cost_model import GRAPHLESS_CUDA_S, GraphlessCuda
from hetpart.partitioner import TableCosts, layout, overlap, timeline
from hetpart.partitioner.evaluate import evaluate
from hetpart.partitioner.grouping import Group
from hetpart.partitioner.problem import STREAM, build_problem, split
from streaming_plans import chain

MiB = 2**20
CALL, LAUNCH, HANDOFF = GRAPHLESS_CUDA_S


class LaunchCosts(TableCosts):
    """Table costs that launch as the cost model does; node_2 is a view (launches nothing)."""

    def graphless_cuda(self):
        return GRAPHLESS_CUDA_S

    def launches(self, kernel):
        return 0 if kernel.id == "node_2" else 1


@pytest.fixture
def switch():
    """The switch on for the test (it is off by default), restored after whatever the test sets."""
    was = layout.GRAPHLESS_CUDA_LAUNCH
    layout.GRAPHLESS_CUDA_LAUNCH = True
    yield
    layout.GRAPHLESS_CUDA_LAUNCH = was


def _problem(n: int = 6, kind=LaunchCosts, cuda_s: float = 20e-6):
    graph = chain([16 * MiB] * n, act=256)
    seconds = {k.id: {"cpu": 1e-3, "cuda": cuda_s} for k in graph.nodes}
    costs = kind(seconds, link_bytes_per_s=50e9, link_latency_s=5e-6, overhead_s={"cpu": 2e-6, "cuda": 3e-6})
    return build_problem(graph, costs, (), None, True)


def test_the_cost_model_launches_as_the_trace_measured():
    """Device step 115's trace (H100 host): 7.2-7.4 us a launched kernel (p27), ~140 us a call
    (p24..p26 less their launches), ~420-450 us a CPU->CUDA handoff (the interleaved gaps)."""
    assert GRAPHLESS_CUDA_S == pytest.approx((140e-6, 7.3e-6, 440e-6))
    assert GRAPHLESS_CUDA_S.host_turn(16) == pytest.approx(140e-6 + 16 * 7.3e-6)
    p = _problem()
    assert p.graphless == GRAPHLESS_CUDA_S and p.views == frozenset({"node_2"})
    t = _problem(kind=TableCosts)
    assert t.graphless == (0.0, 0.0, 0.0) and t.views == frozenset()


def test_a_cuda_partition_lasts_its_launch_or_its_kernels_and_pays_the_handoff_after_the_cpu():
    devices = ["cuda", "cpu", "cuda", "cuda", "cpu", "cuda"]
    compute = [1e-3, 1.0, 10e-6, 10e-6, 1.0, 1e-3]
    launches = [3, 0, 3, 20, 0, 3]
    out = layout.graphless_overheads(devices, compute, [1e-6] * 6, launches, 100e-6, 10e-6, 400e-6)
    # long kernels keep their overhead; short ones last the launch; after a CPU one +handoff
    assert out == pytest.approx([1e-6, 1e-6, 130e-6 - 10e-6 + 400e-6, 300e-6 - 10e-6, 1e-6, 1e-6 + 400e-6])
    assert layout.graphless_overheads(["cpu"], [0.5], [0.25], [0], 1.0, 1.0, 1.0) == [0.25]


def test_graphs_are_off_exactly_where_the_plan_streams():
    g = lambda device, streamed: Group(device, ("k",), streamed)  # noqa: E731
    assert layout.cuda_graphs_off([g("cpu", False), g("cuda", True)])
    assert not layout.cuda_graphs_off([g("cpu", False), g("cuda", False)])


def _laid_out(p, placement):
    a, streamed = split(placement)
    return layout.lay_out(p, a, False, streamed, 16 * MiB)


def test_a_streaming_layout_is_priced_graphless_and_a_resident_one_as_before(switch):
    """cpu | stream | stream | cpu | cuda | cpu, one 16 MiB slot per streamed kernel: three
    one-kernel CUDA partitions (20 us of kernel, under one launch), two of them entered from the
    CPU; node_2 is a view, so its partition launches nothing.  The same placement without
    streaming keeps its overheads; with the switch off the streaming one prices as before."""
    p = _problem()
    streamed = dict(zip(p.order, ["cpu", STREAM, STREAM, "cpu", "cuda", "cpu"]))
    resident = dict(zip(p.order, ["cpu", "cuda", "cuda", "cpu", "cuda", "cpu"]))
    on, plain_on = _laid_out(p, streamed), _laid_out(p, resident)
    layout.GRAPHLESS_CUDA_LAUNCH = False
    off, plain_off = _laid_out(p, streamed), _laid_out(p, resident)
    assert [g.device for g in on.groups] == ["cpu", "cuda", "cuda", "cpu", "cuda", "cpu"]
    assert [g.streamed for g in on.groups] == [False, True, True, False, False, False]
    gpu = 20e-6 + 3e-6  # kernel + the profile's overhead
    want = [0.0, CALL + LAUNCH - gpu + HANDOFF, CALL - gpu, 0.0, CALL + LAUNCH - gpu + HANDOFF, 0.0]
    assert [a - b for a, b in zip(on.group_seconds, off.group_seconds)] == pytest.approx(want)
    assert [a - b for a, b in zip(on.group_overhead, off.group_overhead)] == pytest.approx(want)
    assert plain_on.group_seconds == plain_off.group_seconds  # graphs on: as before
    layout.GRAPHLESS_CUDA_LAUNCH = True
    table = _problem(kind=TableCosts)  # costs without the method: as before, switch on or off
    assert _laid_out(table, streamed).group_seconds == off.group_seconds


def test_long_kernels_outlast_the_launch(switch):
    """5 ms CUDA kernels: the host's launch hides under them, only the handoff shows."""
    p = _problem(cuda_s=5e-3)
    placement = dict(zip(p.order, ["cpu", STREAM, STREAM, "cpu", "cuda", "cpu"]))
    on = _laid_out(p, placement)
    layout.GRAPHLESS_CUDA_LAUNCH = False
    off = _laid_out(p, placement)
    assert [a - b for a, b in zip(on.group_seconds, off.group_seconds)] == pytest.approx(
        [0.0, HANDOFF, 0.0, 0.0, HANDOFF, 0.0])


def test_the_added_seconds_show_in_the_end_where_the_copies_do_not_bind(switch):
    """Each streamed call's copy (16 MiB at 50 GB/s: 0.34 ms) lands during the 1 ms CPU
    partition before it, with a two-slot ring: the sequential end moves by exactly the added
    seconds of the three CUDA partitions."""
    p = _problem()
    placement = dict(zip(p.order, ["cpu", STREAM, STREAM, "cpu", STREAM, "cpu"]))
    on = replace(_laid_out(p, placement), stream_slots=2)
    layout.GRAPHLESS_CUDA_LAUNCH = False
    off = replace(_laid_out(p, placement), stream_slots=2)
    added = sum(on.group_seconds) - sum(off.group_seconds)
    assert added == pytest.approx(3 * (CALL - 23e-6) + 2 * LAUNCH + 2 * HANDOFF)
    assert timeline.end_time(on, "sequential") - timeline.end_time(off, "sequential") == pytest.approx(added)


def test_the_launch_never_makes_a_streaming_plan_faster(switch):
    """Every placement of a small chain ends no earlier with the switch on (each ring's
    sequential end is a max-plus of the task lengths, which only grow; the best ring of
    larger ends is no smaller)."""
    p = _problem(n=4)
    for choice in itertools.product(["cpu", "cuda", STREAM], repeat=4):
        a = dict(zip(p.order, choice))
        layout.GRAPHLESS_CUDA_LAUNCH = False
        before = evaluate(p, a)
        layout.GRAPHLESS_CUDA_LAUNCH = True
        after = evaluate(p, a)
        assert after.sequential_s >= before.sequential_s - 1e-15
        if not any(c == STREAM for c in choice):  # graphs on: priced exactly as before
            assert after.sequential_s == before.sequential_s


def test_the_walk_prices_a_streamed_unit_at_its_launch(switch):
    """One streamed unit of a 10 us kernel after a 1 ms CPU kernel, its copy landed by then: at
    theta 1 the switch off streams it (a 13 us call), on too (handoff + call + one launch,
    0.59 ms, under its 1 ms on the CPU); a 1 ms handoff keeps it on the CPU, as theta 0.3
    does with the fitted one."""
    p = _problem(n=3, cuda_s=10e-6)
    base = dict(zip(p.order, ["cpu"] * 3))
    found = [("node_1",)]
    assert overlap.walk(p, base, found, 2, 1.0)["node_1"] == STREAM
    assert overlap.walk(p, base, found, 2, 0.3)["node_1"] == "cpu"
    p.graphless = GraphlessCuda(CALL, LAUNCH, 1e-3)
    assert overlap.walk(p, base, found, 2, 1.0)["node_1"] == "cpu"
    layout.GRAPHLESS_CUDA_LAUNCH = False
    assert overlap.walk(p, base, found, 2, 0.3)["node_1"] == STREAM


def test_a_reshape_launches_nothing_and_a_kernel_once():
    """CostModel.launches' test: TVM's has_reshape_pattern, which RewriteDataflowReshape
    uses to turn a call_tir into a view."""
    from tvm import te

    from hetpart.costmodel.cost_model import _launches

    x = te.placeholder((4, 8), name="x")
    reshape = te.compute((32,), lambda i: x[i // 8, i % 8], name="r")
    add = te.compute((4, 8), lambda i, j: x[i, j] + 1.0, name="a")
    assert _launches(te.create_prim_func([x, reshape])) == 0
    assert _launches(te.create_prim_func([x, add])) == 1
