"""A fused expert matmul (``importer.expert_matmul.FUSE_EXPERT_GATHER`` on) on the GPU under
a memory cap (issue 19): resident it holds its whole expert table in the cap; streamed the
plan copies its whole table (what ``runtime.weight_stream`` copies: the partition's packed
weights) while its compute and its CPU read floor count only the chosen rows.  Then the
plan compiled (in simulation; ``-m cuda`` on a GPU) and run against ONNX Runtime:

    PYTHONPATH=. python -m pytest tests/test_capped_fused_expert.py -q -m cuda  bench/results/capped-moe-fused-plans.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from hetpart import compiler, models
from hetpart.costmodel import CostModel
from moe_cases import TABLE, fused_experts, fused_moe
from onnx_cases import shipped_profile
from hetpart.costmodel.kernel_shape import weight_bytes_read
from hetpart.costmodel.profile_db import KernelFeatures
from hetpart.partitioner import plan_for_assignment
from hetpart.partitioner.evaluate import evaluate
from hetpart.partitioner.problem import STREAM, build_problem

BW = 95.5e9


@pytest.fixture(scope="module")
def moe():
    """zoo:moe:small at one token (top-2 of 8: a step reads a quarter of each table)."""
    return fused_moe()


@pytest.fixture(scope="module")
def costs(moe):
    prof = shipped_profile()
    return CostModel(prof, graph=moe[1], cache_bytes={"cpu": 0}).with_weight_bandwidth({"cpu": BW})


def _fused(graph) -> list[str]:
    out = fused_experts(graph)
    assert len(out) == 6 and all(graph.kernels[k].param_bytes == TABLE for k in out), "2 layers x 3 projections"
    return out


def _placement(problem, fused, where: str) -> dict:
    """``fused`` on ``where``, every other kernel on CUDA where it can run (TopK cannot)."""
    return {k: where if k in fused else "cuda" if "cuda" in problem.allowed[k] else "cpu" for k in problem.order}


def test_fused_expert_reads_rows_but_holds_and_streams_the_whole_table(moe, costs):
    _, graph = moe
    fused = _fused(graph)
    for k in fused:
        kern = graph.kernels[k]
        rows = weight_bytes_read(KernelFeatures.of(kern))
        assert rows == pytest.approx(TABLE / 4, rel=0.05)  # 2 of 8 experts (SwiGLU's epilogue adds < 1/K)
        # the CPU's cold floor: the rows alone (no gathered copy is written)
        assert costs.weight_floor(kern, "cpu") == pytest.approx(costs._overheads("cpu").launch_s + rows / BW)
    problem = build_problem(graph, costs, (), None, stream_weights=True)

    resident = evaluate(problem, _placement(problem, fused, "cuda"))
    on_cuda = [k for k in problem.order if resident.placement[k] == "cuda"]
    assert resident.memory.params == sum(graph.kernels[k].param_bytes for k in on_cuda)  # tables whole in the cap

    e = evaluate(problem, _placement(problem, fused, STREAM))
    lay = e.layout
    streamed = [g for g in lay.streamed_groups]
    assert streamed and {k for g in streamed for k in lay.groups[g].kernels} == set(fused)
    for g in streamed:
        whole = sum(graph.kernels[k].param_bytes for k in lay.groups[g].kernels)
        assert lay.weight_bytes[g] == whole and whole % TABLE == 0
        assert lay.weight_seconds[g] == pytest.approx(problem.weight_copy_s(whole))  # the whole table's copy
    assert lay.stream_slot_bytes >= TABLE
    assert e.memory.params == resident.memory.params - len(fused) * TABLE  # streamed tables not resident
    for k in fused:  # compute priced as when resident: the rows, not the copy
        assert problem.seconds[k]["cuda"] == pytest.approx(costs.kernel_cost(graph.kernels[k], "cuda"))


def test_streamed_and_resident_fused_experts_compile_and_match_onnxruntime(moe, costs):
    _compile_and_run(moe, costs, simulate=True)


@pytest.mark.cuda
def test_streamed_and_resident_fused_experts_match_onnxruntime_on_the_gpu(moe, costs):
    """The same on a real GPU: ``gpu_gathered_gemv`` resident and reading a ring slot."""
    _compile_and_run(moe, costs, simulate=False)


def _compile_and_run(moe, costs, simulate: bool):
    import onnxruntime as ort

    from hetpart.runtime import Session

    model, graph = moe
    fused = _fused(graph)
    problem = build_problem(graph, costs, (), None, stream_weights=True)
    placement = _placement(problem, fused[:3], "cuda") | {k: STREAM for k in fused[3:]}  # layer 0 resident, 1 streamed
    plan = plan_for_assignment(problem, placement)
    assert {k for p in plan.streamed for k in p.kernels} == set(fused[3:])
    compiled = compiler.compile(plan, graph, simulate=simulate, progress=False)
    streamed = [p for p in compiled.partitions if p.weights is not None]
    assert sum(p.weights.nbytes for p in streamed) >= 3 * TABLE  # the runtime copies whole tables too
    feeds = models.example_inputs(model)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with Session(compiled) as session:
        for _ in range(2):  # the ring's second use too
            got = next(iter(session.run(feeds).values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
