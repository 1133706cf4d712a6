"""GPU->CPU crossings a GPU contraction reads are copied, not mapped (handoff.COPY_GPU_CONTRACTION_READS).

The model: ``x -> MatMul(W0) [cpu] -> Softmax = n [cuda] -> MatMul(n, W1) = g [cuda]``, and
``Softmax(n) = s`` on the CPU.  ``n`` is the llama_decode layer partition's norm output in
small: written by one kernel of the CUDA partition, read by a GEMV of the same partition and
by the CPU.  Mapped, it lives in pinned host memory and the GEMV reads it through PCIe once per
thread block (bench/results/stream-gpu-partitions-2core.md).  Simulated (the CUDA partition
built for the CPU): the handoff mode each way, results the unpartitioned build's either way,
and the streamed partition's CUDA kernels the resident one's (no other schedule for a weight
that is a parameter).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetpart import compile as compile_plan
from hetpart import importer
from hetpart.compiler import extract
from hetpart.runtime import Session, handoff

ASSIGNMENT = {"node_0": "cpu", "node_1": "cuda", "node_2": "cuda", "node_3": "cpu"}


def _model():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((64, 64)).astype(np.float32)
    w1 = rng.standard_normal((64, 96)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h"]), helper.make_node("Softmax", ["h"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "W1"], ["g"]), helper.make_node("Softmax", ["n"], ["s"], axis=-1)]
    graph = helper.make_graph(
        nodes, "reread", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 96]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(w0, "W0"), numpy_helper.from_array(w1, "W1")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def graph():
    # node_0 matmul -> lv, node_1 softmax -> lv1, node_2 matmul -> g, node_3 softmax -> s (outputs: the model's names)
    return importer.load(_model())


@pytest.fixture(scope="module")
def compiled(graph, plan_for):
    return compile_plan(plan_for(graph, ASSIGNMENT), graph, simulate=True, progress=False, jobs=1)


def test_extract_records_what_a_contraction_reads(graph, plan_for):
    """The CUDA partition's softmax output (an output: the CPU reads it) is read by its
    matmul; the CPU partitions record none (their reads never cross to the GPU)."""
    programs = {p.name: p for p in extract(graph, plan_for(graph, ASSIGNMENT))}
    cuda = programs["p1_cuda"]
    assert [t.name for t in cuda.outputs] == ["lv1", "g"]
    assert cuda.contraction_reads == ("lv1",)
    assert programs["p0_cpu"].contraction_reads == ("x",)  # recorded, unused: a CPU partition's
    assert programs["p2_cpu"].contraction_reads == ()


@pytest.mark.parametrize("on", [True, False])
def test_reread_crossing_is_copied_and_results_are_unchanged(compiled, graph, reference_tvm, monkeypatch, on):
    """On: ``lv1`` (read by the GEMV) is copied to the host, ``g`` (written once) still
    mapped; off: both mapped, as before.  Results the unpartitioned build's either way."""
    monkeypatch.setattr(handoff, "COPY_GPU_CONTRACTION_READS", on)
    assert compiled.partition("p1_cuda").contraction_reads == ["lv1"]
    x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
    with Session(compiled) as s:
        out = s.run({"x": x})
        stats = s.last_run_stats
        modes = {n: r.mode for n, r in s.routes.items() if r.crosses and r.home == "cuda"}
    assert modes == {"lv1": "copy" if on else "mapped", "g": "mapped"}
    assert stats.edge_for("lv1").mode == modes["lv1"]
    g_ref, s_ref = reference_tvm(graph, {"x": x})
    np.testing.assert_allclose(out["g"], g_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["s"], s_ref, rtol=1e-5, atol=1e-5)


def test_an_old_artifact_maps_as_before(compiled, monkeypatch):
    """An artifact without ``contraction_reads`` (before version 6) reads as none: mapped."""
    import dataclasses

    monkeypatch.setattr(handoff, "COPY_GPU_CONTRACTION_READS", True)
    old = dataclasses.replace(compiled, partitions=[dataclasses.replace(p, contraction_reads=[])
                                                    for p in compiled.partitions])
    routes = handoff.plan_routes(old)
    assert routes["lv1"].mode == "mapped"


def test_streamed_partition_compiles_the_resident_kernels(graph, plan_for):
    """The streamed CUDA partition's kernels (weights as parameters from a ring slot) are
    scheduled exactly as the resident partition's (weights as constants): same rules, same
    TIR but for the ``layout_free_buffers`` note only a prepacking rule reads (sm_90 build)."""
    import re

    import tvm
    from tvm import tirx

    from hetpart import kernels
    from hetpart.kernels import weight_prepack

    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90", "max_num_threads": 1024,
                                "thread_warp_size": 32, "host": {"kind": "llvm"}})

    def scheduled(streamed: bool) -> dict[str, str]:
        plan = plan_for(graph, ASSIGNMENT)
        for p in plan.partitions:
            if p.device == "cuda" and streamed:
                p.weights = "streamed"
        if streamed:
            plan.stream_slots, plan.stream_slot_bytes = 2, 64 * 96 * 4
        program = next(p for p in extract(graph, plan) if p.device == "cuda")
        assert bool(program.weights) == streamed
        mod = kernels.schedule(weight_prepack.mark_weights(program.module), target, kernels.DEFAULT)
        strip = lambda text: re.sub(r'"layout_free_buffers": \[[0-9, ]*\], ', "", text)  # noqa: E731
        return {gv.name_hint: (str(f.attrs["hetpart.rule"]), strip(f.script()))
                for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}

    resident, streamed = scheduled(False), scheduled(True)
    assert resident == streamed


@pytest.mark.cuda
def test_on_gpu_the_copied_crossing_gives_the_same_results_and_its_span(tmp_path, monkeypatch, reference_tvm):
    """On the GPU, llama_decode's shape: a CPU GEMV 2048 -> 2048, then on the GPU a softmax
    (8 KB out, also read by the CPU) feeding a 46 MB GEMV 2048 -> 5632.  Both ways the
    unpartitioned build's results (full float32); the CUDA partition's GPU span of a traced
    run each way is printed (``-s``): mapped, the GEMV reads the 8 KB vector through PCIe
    once per thread block (device step 125 reads these lines)."""
    from hetpart.kernels.options import KernelOptions

    rng = np.random.default_rng(1)
    w0 = (rng.standard_normal((2048, 2048)) / 45).astype(np.float32)
    w1 = (rng.standard_normal((2048, 5632)) / 45).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h"]), helper.make_node("Softmax", ["h"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "W1"], ["g"]), helper.make_node("Softmax", ["n"], ["s"], axis=-1)]
    onnx_graph = helper.make_graph(
        nodes, "reread_gpu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2048])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 5632]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 2048])],
        [numpy_helper.from_array(w0, "W0"), numpy_helper.from_array(w1, "W1")])
    g = importer.load(helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17)]))
    from hetpart.partitioner import Plan

    plan = Plan.by_hand(g, ASSIGNMENT, "reread", origin="test")
    built = compile_plan(plan, g, progress=False, options=KernelOptions(tf32=False))
    x = rng.standard_normal((1, 2048)).astype(np.float32)
    g_ref, s_ref = reference_tvm(g, {"x": x})
    for on in (False, True):
        monkeypatch.setattr(handoff, "COPY_GPU_CONTRACTION_READS", on)
        with Session(built) as s:
            for _ in range(20):
                out = s.run({"x": x})
            spans = []
            for i in range(10):
                s.run({"x": x}, trace=str(tmp_path / f"t{on}{i}.json"))
                spans.append(s.last_run_stats.partition_seconds().get("p1_cuda", float("nan")))
            mode = s.routes["lv1"].mode
        assert mode == ("copy" if on else "mapped")
        np.testing.assert_allclose(out["g"], g_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["s"], s_ref, rtol=1e-4, atol=1e-6)
        print(f"STEP125 p1_cuda GPU span, lv1 {mode}: median {np.median(spans) * 1e6:.1f} us "
              f"[{min(spans) * 1e6:.1f}-{max(spans) * 1e6:.1f}] over {len(spans)} traced runs")
