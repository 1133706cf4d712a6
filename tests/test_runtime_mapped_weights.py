"""Mapped weights end to end (issue 19): a plan whose CUDA partitions have ``weights="mapped"``
compiles them with every weight in an external file (``PartitionArtifact.mapped``), and the
runtime binds them from pinned host memory through its mapped device pointer
(``hetpart.runtime.external_weights``): the kernels read them in place, nothing is copied to the
GPU.

zoo:moe:small at one token with the expert Gather fused: layer 0's three expert projections
mapped, layer 1's streamed, the rest resident where CUDA can run it; compiled in simulation
(``-m cuda``: on a GPU) and run twice against ONNX Runtime.  A model without a mapped
partition writes its manifest exactly as before (version 6, no ``mapped`` key).

    PYTHONPATH=. python3 -m pytest -q tests/test_runtime_mapped_weights.py -m cuda
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hetpart import compiler, models
from hetpart.compiler.artifact import MAPPED_VERSION, VERSION
from hetpart.costmodel import CostModel
from moe_cases import TABLE, fused_experts, fused_moe
from onnx_cases import shipped_profile
from hetpart.partitioner import plan_for_assignment
from hetpart.partitioner.choice import MAPPED
from hetpart.partitioner.problem import STREAM, build_problem


@pytest.fixture(scope="module")
def moe():
    model, graph = fused_moe()
    costs = CostModel(shipped_profile(), graph=graph)
    return model, graph, costs


def _plan(graph, costs):
    fused = fused_experts(graph)
    assert len(fused) == 6
    problem = build_problem(graph, costs, (), None, stream_weights=True)
    placement = {k: "cuda" if "cuda" in problem.allowed[k] else "cpu" for k in problem.order}
    placement.update({k: MAPPED for k in fused[:3]})
    placement.update({k: STREAM for k in fused[3:]})
    plan = plan_for_assignment(problem, placement)
    assert {k for p in plan.mapped for k in p.kernels} == set(fused[:3])
    assert {k for p in plan.streamed for k in p.kernels} == set(fused[3:])
    return plan, fused


def _compile_and_run(moe, simulate: bool, tmp_path):
    import onnxruntime as ort

    from hetpart.runtime import Session

    model, graph, costs = moe
    plan, fused = _plan(graph, costs)
    compiled = compiler.compile(plan, graph, simulate=simulate, progress=False)
    mapped = [p for p in compiled.partitions if p.mapped]
    assert {k for p in mapped for k in p.kernels} == set(fused[:3])
    for p in mapped:  # every weight in the external file, none in the library, none streamed
        assert p.device == "cuda" and p.weights is None and p.external is not None
        assert p.external.nbytes >= TABLE * len(p.kernels)
    assert not any(p.mapped for p in compiled.partitions if p.name not in {m.name for m in mapped})
    saved = compiled.save(tmp_path / "moe")
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["version"] == MAPPED_VERSION
    assert [p.get("mapped", False) for p in manifest["partitions"]] == [p.mapped for p in compiled.partitions]
    back = compiler.load_compiled(saved)
    assert [p.mapped for p in back.partitions] == [p.mapped for p in compiled.partitions]
    assert [p.weights for p in back.plan.partitions] == [p.weights for p in plan.partitions]
    feeds = models.example_inputs(model)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    for artifact in (compiled, back):
        with Session(artifact) as session:
            for _ in range(2):
                got = next(iter(session.run(feeds).values()))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_mapped_partitions_compile_external_and_match_onnxruntime(moe, tmp_path):
    _compile_and_run(moe, True, tmp_path)


@pytest.mark.cuda
def test_mapped_partitions_read_pinned_host_memory_on_the_gpu(moe, tmp_path, monkeypatch):
    """On a GPU: the same, and a mapped partition's weights are ``cuda`` views of one mapped
    page-locked host buffer (its device pointer at each weight's offset)."""
    from hetpart.runtime import external_weights

    _compile_and_run(moe, False, tmp_path)
    made = []

    class Recorded(external_weights._PinnedHost):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(external_weights, "_PinnedHost", Recorded)
    model, graph, costs = moe
    plan, _ = _plan(graph, costs)
    compiled = compiler.compile(plan, graph, simulate=False, progress=False)
    art = next(p for p in compiled.partitions if p.mapped)
    bound = external_weights.bind(art, compiled.directory)
    (host,) = made
    assert [int(t.data_ptr()) for t in bound] == [host.device_ptr + w.offset for w in art.external.tensors]
    assert all(t.device.dlpack_device_type() == 2 for t in bound)  # kDLCUDA


def test_a_model_without_mapped_partitions_writes_its_manifest_as_before(moe, tmp_path):
    model, graph, costs = moe
    problem = build_problem(graph, costs, (), None)
    plan = plan_for_assignment(problem, {k: "cpu" for k in problem.order})
    compiled = compiler.compile(plan, graph, simulate=True, progress=False)
    manifest = json.loads((compiled.save(tmp_path / "plain") / "manifest.json").read_text())
    assert manifest["version"] == VERSION == 6
    assert all("mapped" not in p for p in manifest["partitions"])


def test_mapped_cost_is_the_rows_a_call_reads_in_the_cuda_format(moe):
    """``CostModel.mapped_cost``: the kernel's CUDA cost or its rows at the pinned H2D fit; under
    a bf16 CUDA precision, the bf16 kernel's (``PrecisionCosts.mapped_cost``)."""
    from hetpart.contracts.precision import parse
    from hetpart.costmodel.kernel_shape import weight_bytes_read
    from hetpart.costmodel.profile_db import KernelFeatures
    from hetpart.partitioner.precision_costs import with_precision

    _, graph, costs = moe
    k = graph.kernels[fused_experts(graph)[0]]
    fit = costs.profile.transfers.fit("h2d", "pinned")
    rows = weight_bytes_read(KernelFeatures.of(k))
    assert rows * 4 == pytest.approx(k.param_bytes, rel=0.05)  # 2 of 8 experts
    assert costs.mapped_cost(k) == pytest.approx(max(costs.kernel_cost(k, "cuda"),
                                                     fit.latency_s + rows / fit.bandwidth_Bps))
    low = with_precision(costs, graph, parse("cuda=bf16"))
    built = low.lowered["cuda"][k.id]
    assert built.param_bytes * 2 == k.param_bytes
    assert low.mapped_cost(k) == pytest.approx(costs.mapped_cost(built))
