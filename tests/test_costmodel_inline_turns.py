"""Inline turns (issue 19): with :data:`hetpart.costmodel.cost_model.INLINE_TURNS` a device
change is priced as an inline run has it -- a CPU partition entered from CUDA resumes
(7 us, no pool wake), a CUDA partition entered from the CPU pays the host's pre-launch
work -- through the wake cost the partitioner already charges per boundary; off, the
profile's wake (or the 200 us default) on the CPU and nothing on CUDA.  A pricing rule:
no kernel or result changes, so no run is checked against the unscheduled result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hetpart.costmodel import CostModel, Profile
from hetpart.costmodel import cost_model as cm_mod
from hetpart.partitioner import overlap
from hetpart.partitioner.layout import partition_overheads
from hetpart.partitioner.memory_rules import RULES
from hetpart.partitioner.problem import STREAM, build_problem, wake_costs
from chain_cases import alternating_chain, decode_chain, decode_costs, half_cap

H200 = Path(__file__).resolve().parents[1] / "bench/results/profile-capped-nvidia-h200.json"


@pytest.fixture(scope="module")
def h200():
    return CostModel(Profile.load(H200))


def test_off_the_wake_is_the_profiles_or_the_default(h200, monkeypatch):
    monkeypatch.setattr(cm_mod, "INLINE_TURNS", False)
    assert wake_costs(h200) == {"cpu": cm_mod.DEFAULT_WAKE_S["cpu"], "cuda": 0.0}
    assert "not measured" in h200.wake_origin("cpu")


def test_on_each_device_change_costs_the_inline_turn(h200, monkeypatch):
    monkeypatch.setattr(cm_mod, "INLINE_TURNS", True)
    turn = cm_mod.INLINE_TURN_S
    assert wake_costs(h200) == {"cpu": turn["cpu"], "cuda": turn["cuda"]}
    assert 0 < turn["cpu"] < 20e-6 and 50e-6 < turn["cuda"] < 300e-6  # the traced run's scale
    assert "inline" in h200.wake_origin("cuda") and "inline" in h200.wake_origin("cpu")
    # the partitioner charges them per boundary, cyclically: CPU after CUDA, CUDA after CPU
    graph, costs = alternating_chain(4)
    problem = build_problem(graph, replace(costs, overhead_s={"cpu": 1.0, "cuda": 2.0}, wake_s=wake_costs(h200)))
    got = partition_overheads(problem, ["cpu", "cuda", "cuda", "cpu"])
    assert got == pytest.approx([1.0, 2.0 + turn["cuda"], 2.0, 1.0 + turn["cpu"]])
    # an interleaved turn CPU -> CUDA -> CPU costs the two, not the 200 us CPU wake
    assert turn["cuda"] + turn["cpu"] < cm_mod.DEFAULT_WAKE_S["cpu"]


def test_the_switch_is_off_by_default():
    assert cm_mod.INLINE_TURNS is False


@pytest.mark.parametrize("cuda_wake,streams", [(0.0, True), (2e-3, False)])
def test_the_overlap_walk_charges_a_streamed_unit_entered_from_the_cpu_its_cuda_wake(cuda_wake, streams):
    """A streamed unit entered from a CPU kernel pays ``wake["cuda"]`` in the walk as in the
    layout: at 2 ms no such unit is worth streaming (no CPU wake here), at 0 some are."""
    graph = decode_chain(4)
    costs = replace(decode_costs(graph), wake_s={"cpu": 0.0, "cuda": cuda_wake})
    problem = build_problem(graph, costs, gpu_memory=half_cap(graph), stream_weights=True)
    bases = [rule(problem) for rule in RULES.values()]
    seeds = [seed for base in bases for _, seed in overlap.seeds_of(problem, base)]
    assert seeds
    entered = [any(seed[k] == STREAM and seed[j] == "cpu" for j, k in zip(problem.order, problem.order[1:]))
               for seed in seeds]
    assert any(entered) == streams
