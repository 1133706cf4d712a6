"""Copy contention (issue 19): a streamed weight copy and a CPU partition's cold weight reads
both read host memory.  The profile records each one's rate beside the other
(:mod:`hetpart.costmodel.contention_bench`), the timeline slows the two where they overlap
(:data:`hetpart.partitioner.timeline.COPY_CONTENTION`), and without the measurement nothing
changes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetpart.costmodel import CostModel, Profile
from hetpart.costmodel.fingerprint import this_machine
from hetpart.costmodel.profile_db import Overheads
from hetpart.costmodel.transfer_model import TransferModel, TransferPoint
from hetpart.errors import NoGPUError, ProfileError
from hetpart.partitioner import TableCosts, timeline
from hetpart.partitioner.evaluate import evaluate
from hetpart.partitioner.grouping import Group
from hetpart.partitioner.layout import Layout
from hetpart.partitioner.problem import STREAM, build_problem

from chain_cases import decode_chain, decode_costs, half_cap, plan

MS = 1e-3


def _layout(devices, seconds, read, weight_s, slots, contention):
    groups = [Group(d, (f"k{i}",), streamed=w > 0) for i, (d, w) in enumerate(zip(devices, weight_s))]
    n = len(groups)
    return Layout({}, groups, list(seconds), [], [(i - 1,) if i and devices[i - 1] == devices[i] else ()
                                                  for i in range(n)],
                  [1 if w else 0 for w in weight_s], list(weight_s), stream_slots=slots if any(weight_s) else 0,
                  group_overhead=[0.0] * n, contention=contention, read_seconds=list(read))


def _ends(layout, mode="sequential"):
    return {(s.task.kind, s.task.index): s.end for s in timeline.simulate(layout, mode)}


def test_a_cpu_partition_and_a_weight_copy_that_overlap_both_slow_down():
    """cuda(copy 2) | cpu 4 ms of weight reads | cuda(copy 2), ring of 2: the second copy
    overlaps the CPU partition for 1 ms without contention.  At half rate each, the overlap
    o solves o = 1 + o/2 (2 ms): the CPU partition lasts 5 ms, the end moves 8 -> 9 ms."""
    args = (["cuda", "cpu", "cuda"], [1 * MS, 4 * MS, 1 * MS], [0, 4 * MS, 0], [2 * MS, 0, 2 * MS], 2)
    free = _layout(*args, None)
    slowed = _layout(*args, (0.5, 0.5))
    assert timeline.end_time(free, "sequential") == pytest.approx(8 * MS)
    assert timeline.end_time(slowed, "sequential") == pytest.approx(9 * MS, rel=2e-3)
    ends = _ends(slowed)
    assert ends[("partition", 1)] == pytest.approx(8 * MS, rel=2e-3)
    assert ends[("weights", 2)] > 4 * MS


def test_one_track_busy_alone_keeps_its_time():
    """No CPU weight reads beside the copy (a CUDA partition there, or a CPU one whose weights
    stay cached), or a profile without the measurement, or the switch off: the same schedule."""
    base = (["cuda", "cpu", "cuda"], [1 * MS, 4 * MS, 1 * MS], [0, 4 * MS, 0], [2 * MS, 0, 2 * MS], 2)
    free = _ends(_layout(*base, None))
    assert _ends(_layout(["cuda", "cuda", "cuda"], *base[1:], (0.5, 0.5))) == \
        _ends(_layout(["cuda", "cuda", "cuda"], *base[1:], None))
    assert _ends(_layout(base[0], base[1], [0, 0, 0], *base[3:], (0.5, 0.5))) == free
    assert _ends(_layout(*base, (1.0, 1.0))) == pytest.approx(free)
    layout = _layout(*base, (0.5, 0.5))
    try:
        timeline.COPY_CONTENTION = False
        assert _ends(layout) == free
    finally:
        timeline.COPY_CONTENTION = True


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["cpu", "cuda"]), st.floats(0.0, 5.0), st.floats(0.0, 1.0),
                          st.floats(0.0, 3.0)), min_size=1, max_size=12),
       st.integers(1, 3), st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.sampled_from(["sequential", "parallel"]))
def test_contention_never_makes_a_task_end_earlier(rows, slots, r_cpu, r_copy, mode):
    devices = [d for d, *_ in rows]
    seconds = [s * MS for _, s, _, _ in rows]
    read = [f * s * MS if d == "cpu" else 0.0 for d, s, f, _ in rows]
    weight_s = [w * MS if d == "cuda" else 0.0 for d, _, _, w in rows]
    free = _ends(_layout(devices, seconds, read, weight_s, slots, None), mode)
    slowed = _ends(_layout(devices, seconds, read, weight_s, slots, (r_cpu, r_copy)), mode)
    assert free.keys() == slowed.keys()
    for key, end in free.items():
        assert slowed[key] >= end - 1e-15, key


class _ContendedCosts(TableCosts):
    """The decode chain's table with a measured contention and every CPU weight read cold."""

    def copy_contention(self):
        return (0.5, 0.6)

    def weight_floor(self, kernel, device):
        return kernel.param_bytes / 95.5e9 if device == "cpu" else 0.0


def test_the_interleaved_decode_plan_is_priced_slower_and_unmeasured_costs_change_nothing(monkeypatch):
    """The overlap seeds' plan of the decode chain runs CPU GEMVs beside weight copies: with
    the contention measured it is predicted slower than the same assignment without; the
    table without ``copy_contention`` plans exactly as with the switch off."""
    graph = decode_chain(4)
    costs, cap = decode_costs(graph), half_cap(graph)
    on = plan(graph, costs, cap)
    monkeypatch.setattr(timeline, "COPY_CONTENTION", False)
    off = plan(graph, costs, cap)
    monkeypatch.setattr(timeline, "COPY_CONTENTION", True)
    assert json.dumps(on.predicted, sort_keys=True) == json.dumps(off.predicted, sort_keys=True)
    assert on.assignment == off.assignment and on.streamed

    contended = _ContendedCosts(costs.seconds, link_bytes_per_s=55e9, link_latency_s=5e-6,
                                overhead_s={"cpu": 2e-6, "cuda": 7e-6}, wake_s={"cpu": 200e-6})
    free_p = build_problem(graph, costs, gpu_memory=cap, stream_weights=True)
    slow_p = build_problem(graph, contended, gpu_memory=cap, stream_weights=True)
    assert free_p.contention is None and slow_p.contention == (0.5, 0.6)
    streamed = {k for p in on.streamed for k in p.kernels}
    a = {k: STREAM if k in streamed else d for k, d in on.assignment.items()}
    assert evaluate(free_p, a).sequential_s == pytest.approx(on.predicted["latency_s"])
    assert evaluate(slow_p, a).sequential_s > 1.05 * evaluate(free_p, a).sequential_s


def _profile(tmp_path, **cpu) -> Profile:
    prof = Profile(this_machine(), path=tmp_path / "p.json")
    prof.overheads["cpu"] = Overheads(1e-6, 3e-7, 1e-6, 8e-7, wake_s=1e-4, **cpu)
    prof.overheads["cuda"] = Overheads(1e-6, 4e-6, 6e-6, 5e-6, wake_s=0.0)
    prof.transfers = TransferModel.from_points([TransferPoint("h2d", "pinned", n, 5e-6 + n / 50e9, 0, 0, 3)
                                                for n in (4096, 1 << 20, 1 << 26)])
    return prof


def test_the_contended_rates_round_trip_and_give_the_kept_fractions(tmp_path):
    prof = _profile(tmp_path, weight_read_Bps=80e9, contended_weight_read_Bps=40e9, contended_h2d_Bps=30e9)
    path = prof.save()
    back = Profile.load(path)
    assert back.overheads["cpu"].contended_weight_read_Bps == 40e9
    assert back.overheads["cpu"].contended_h2d_Bps == 30e9
    r_cpu, r_copy = CostModel(back).copy_contention()
    assert r_cpu == pytest.approx(0.5) and r_copy == pytest.approx(0.6, rel=1e-3)
    assert CostModel(_profile(tmp_path, weight_read_Bps=80e9)).copy_contention() is None  # not measured
    faster = _profile(tmp_path, weight_read_Bps=80e9, contended_weight_read_Bps=90e9, contended_h2d_Bps=60e9)
    assert CostModel(faster).copy_contention() == (1.0, 1.0)  # never priced faster than alone


def test_a_recorded_profile_has_no_contention_and_plans_byte_identically(monkeypatch):
    """The capped profile the device steps plan with (no contended rates): the same plan and
    the same predictions with the switch on and off."""
    from pathlib import Path

    from hetpart import importer, models
    from hetpart.partitioner import partition

    path = Path(__file__).parent.parent / "bench/results/profile-capped-nvidia-h200.json"
    if not path.exists():
        pytest.skip("no capped profile")
    graph = importer.load(models.build("llama_decode", True, cache_len=64, hidden=256, heads=4, kv_heads=2,
                                       intermediate=512, layers=2, vocab=64))
    cm = CostModel(Profile.load(path), graph=graph).with_weight_bandwidth({"cpu": 62e9})
    assert cm.copy_contention() is None
    cap = sum(k.param_bytes for k in graph.nodes) // 2
    out = []
    for switch in (True, False):
        monkeypatch.setattr(timeline, "COPY_CONTENTION", switch)
        p = partition(graph, cost_model=cm, gpu_memory=cap, progress=False, stream_weights=True)
        out.append((p.assignment, json.dumps(p.predicted, sort_keys=True), len(p.streamed)))
    assert out[0] == out[1]


def test_measuring_without_a_gpu_raises_a_typed_error():
    import tvm

    from hetpart.costmodel.contention_bench import measure_contention
    from hetpart.targets import cpu_tvm_target, cuda_available

    if cuda_available():
        pytest.skip("a GPU is here: the device step measures it")
    with pytest.raises((NoGPUError, ProfileError)):
        measure_contention(cpu_tvm_target(), tvm.cpu(), rounds=1)
