"""Compiling with a precision (issue 17): weights stored in bf16/fp16 per device.

Reference: ONNX Runtime on the float32 ONNX model (an independent implementation).
The stated tolerance (:data:`REL_TOL`, the issue's): for every output, the largest
absolute difference is at most 2e-2 of the largest absolute reference value.
CUDA partitions run in simulation (``simulate=True``: built for the CPU with their
low-precision weights); the ``cuda``-marked test runs them on the GPU.

Also: the manifest and the plan record the precision and read back; the weights a
partition holds or streams take half the bytes; a manifest of version 2 reads as the
default precision.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hetpart import compiler, importer, models
from hetpart.contracts.precision import DEFAULT, Precision
from hetpart.errors import PlanError
from hetpart.importer.low_precision import param_bytes

from conftest import random_feeds, run_composed
from precision_cases import REL_TOL, all_on, ort_outputs, relative_error
from streaming_plans import plan_with_devices

INDEX_AGREEMENT = 0.95
"""Integer outputs (the detector's NMS box indices) are chosen by comparing scores:
rounded weights reorder near-tied boxes (bf16: 5 of 240 indices, two swapped pairs),
so they must agree on this share of elements rather than all."""

FAST = ("mlp", "bert")
FP16 = ("mlp", "bert", "resnet18", "mobilenet", "t5enc", "dlrm", "detector")
"""The models also built with float16 weights.  bf16 and fp16 storage share every code
path (:mod:`hetpart.importer.low_precision`: one conversion, the dtype a parameter; the
one fp16-only branch, weights past 65504 kept float32, no small zoo model reaches), so
fp16 runs on one model of each kind of converted kernel: dense and attention matmuls and
an embedding gather (bert), convolutions (resnet18), depthwise / grouped ones (mobilenet),
embedding-bag gathers (dlrm), integer outputs (detector), and the largest fp16 error
measured (t5enc); every model runs in bf16, whose error is the larger."""
CASES = [pytest.param(fmt, m, marks=() if m in FAST else pytest.mark.slow)
         for fmt in ("bf16", "fp16") for m in models.names() if fmt == "bf16" or m in FP16]
"""Measured (small zoo, seed 0, 2026-12-03): largest relative error bf16 8.4e-3 (bert),
fp16 1.6e-3 (t5enc); float32 itself 8.6e-7."""


def _check_against_ort(onnx_model, graph, compiled, seed=0):
    feeds = random_feeds(graph, seed)
    got = run_composed(compiled, feeds)
    want = ort_outputs(onnx_model, feeds)
    assert len(got) == len(want)
    for g, w, spec in zip(got, want, compiled.outputs):
        assert g.dtype == w.dtype, f"output {spec.name} is {g.dtype}, ONNX says {w.dtype}"
        if np.issubdtype(w.dtype, np.floating):
            assert relative_error(g, w) <= REL_TOL, f"{spec.name}: relative error {relative_error(g, w):.3g}"
        else:
            assert g.shape == w.shape and np.mean(g == w) >= INDEX_AGREEMENT, f"{spec.name}: {np.mean(g == w):.3f}"


@pytest.mark.parametrize("fmt, name", CASES)
def test_low_precision_cuda_matches_onnxruntime(fmt, name, zoo_graph, zoo_onnx):
    """Every kernel on (simulated) CUDA in bf16/fp16 stays within REL_TOL of ORT's float32."""
    graph = zoo_graph(name)
    compiled = compiler.compile(all_on(graph, "cuda"), simulate=True, progress=False,
                                precision=f"cuda={fmt}")
    assert compiled.precision.cuda == fmt
    _check_against_ort(zoo_onnx(name), graph, compiled)
    if (fmt, name) == ("bf16", "bert"):  # this build is the one the weight-bytes check reads
        _assert_partition_weight_bytes_halve(graph, compiled)


def test_cpu_bf16_and_mixed_boundaries_match_onnxruntime(zoo_graph, zoo_onnx):
    """CPU in bf16 (LLVM's bfloat16 loads) and alternating CPU fp32 / CUDA bf16
    partitions: every boundary crosses precisions; the model's dtypes stay ONNX's."""
    graph = zoo_graph("bert")
    cpu = compiler.compile(all_on(graph, "cpu"), simulate=True, progress=False, precision="cpu=bf16")
    _check_against_ort(zoo_onnx("bert"), graph, cpu, seed=1)
    alternating = {k: ("cpu", "cuda")[i % 2] for i, k in enumerate(graph.topological_order())}
    from conftest import plan_from_assignment

    mixed = compiler.compile(plan_from_assignment(graph, alternating), simulate=True, progress=False,
                             precision="cuda=bf16,cpu=fp32")
    _check_against_ort(zoo_onnx("bert"), graph, mixed, seed=2)


def test_bf16_is_not_float32(zoo_graph):
    """The conversion happens: bf16 results differ from the float32 build's (a test of
    the tolerance alone would pass on a build that ignored the precision)."""
    graph = zoo_graph("mlp")
    feeds = random_feeds(graph, 3)
    plan = all_on(graph, "cuda")
    fp32 = run_composed(compiler.compile(plan, simulate=True, progress=False), feeds)
    bf16 = run_composed(compiler.compile(plan, simulate=True, progress=False, precision="cuda=bf16"), feeds)
    assert any(not np.array_equal(a, b) for a, b in zip(fp32, bf16))


def test_manifest_and_plan_record_the_precision(zoo_graph, tmp_path):
    graph = zoo_graph("mlp")
    compiled = compiler.compile(all_on(graph, "cuda"), simulate=True, progress=False, precision="cuda=fp16")
    out = compiled.save(tmp_path / "art")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] >= 3  # precision since version 3
    assert manifest["precision"] == {"cpu": "fp32", "cuda": "fp16"}
    assert json.loads((out / "plan.json").read_text())["precision"] == {"cpu": "fp32", "cuda": "fp16"}
    loaded = compiler.load_compiled(out)
    assert loaded.precision == Precision(cuda="fp16")
    assert loaded.plan.precision == Precision(cuda="fp16")


def test_version_2_manifest_reads_as_default_precision(zoo_graph, tmp_path):
    graph = zoo_graph("mlp")
    out = compiler.compile(all_on(graph, "cpu"), simulate=True, progress=False).save(tmp_path / "art")
    for name, version in (("manifest.json", 2), ("plan.json", 2)):
        data = json.loads((out / name).read_text())
        data["version"] = version
        data.pop("precision")
        (out / name).write_text(json.dumps(data))
    loaded = compiler.load_compiled(out)
    assert loaded.precision == DEFAULT and loaded.plan.precision == DEFAULT


def _assert_partition_weight_bytes_halve(graph, compiled):
    """A bf16 plan's CUDA partitions hold half the float32 weight bytes of the same
    kernels, up to the small constants left in float32 (biases under 16 elements).
    Checked on test_low_precision_cuda_matches_onnxruntime[bf16-bert]'s build (all of
    BERT on CUDA in bf16; it had a test of its own that compiled the same again)."""
    full = sum(graph.kernels[k].param_bytes for k in graph.kernels)
    half = sum(p.weight_bytes for p in compiled.plan.partitions)
    assert half < 0.52 * full
    assert half == sum(param_bytes(graph, "bfloat16").get(k, graph.kernels[k].param_bytes) for k in graph.kernels)


def test_streamed_weights_are_stored_in_bf16(tmp_path):
    """Issue 19: a streamed partition's weights file holds bfloat16 (half the bytes),
    and the session streams and runs it (simulated streams check the ordering)."""
    from hetpart.runtime import Session

    onnx_model = models.build("mlp", small=True, hidden=(32, 32, 32))
    graph = importer.load(onnx_model)
    plan = plan_with_devices(graph, ["cuda", "cuda", "cpu", "cuda"], streamed=True)
    fp32 = compiler.compile(plan, simulate=True, progress=False)
    bf16 = compiler.compile(plan, simulate=True, progress=False, precision="cuda=bf16")
    for a, b in zip(fp32.partitions, bf16.partitions):
        if a.weights is None:
            continue
        big = [t for t in b.weights.tensors if t.dtype == "bfloat16"]
        assert big and all(t.nbytes * 2 == s.nbytes for t, s in zip(b.weights.tensors, a.weights.tensors)
                           if t.dtype == "bfloat16")
    feeds = random_feeds(graph, 4)
    with Session(bf16) as session:
        got = session.run(feeds)
    want = ort_outputs(onnx_model, feeds)
    for g, w in zip(got.values(), want):
        assert relative_error(g, w) <= REL_TOL


def test_plan_made_for_another_precision_is_refused(zoo_graph):
    graph = zoo_graph("mlp")
    plan = dataclasses.replace(all_on(graph, "cuda"), precision=Precision(cuda="bf16"))
    with pytest.raises(PlanError, match="precision"):
        compiler.compile(plan, simulate=True, progress=False, precision="cuda=fp16")


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["mlp", "bert", "resnet18", "llama"])
def test_bf16_on_the_gpu_matches_onnxruntime(name, zoo_graph, zoo_onnx):
    """On a real GPU (TF32 tensor cores on bf16 weights where the rule takes them)."""
    graph = zoo_graph(name)
    compiled = compiler.compile(all_on(graph, "cuda"), progress=False, precision="cuda=bf16")
    _check_against_ort(zoo_onnx(name), graph, compiled)


def test_runtime_views_bfloat16_memory():
    """The streamed-weight views (runtime.dlpack.tensor_view) take bfloat16: numpy has
    no bfloat16 kind (ml_dtypes' is "V"), DLPack's code is kDLBfloat."""
    import ml_dtypes

    from hetpart.runtime.dlpack import tensor_view

    data = np.arange(24, dtype=np.float32).reshape(4, 6).astype(ml_dtypes.bfloat16)
    view = tensor_view(data.ctypes.data, data.shape, "bfloat16", owner=data)
    assert str(view.dtype) == "bfloat16"
    np.testing.assert_array_equal(view.numpy().astype(np.float32), data.astype(np.float32))


def test_partitioned_plan_compiles_in_its_precision(zoo_graph, zoo_onnx):
    """partition(precision=) -> compile(plan): the plan's precision is the build's;
    ``cuda=fp32`` builds without TF32."""
    from hetpart.partitioner import partition

    from partition_graphs import mlp_favouring_gpu

    graph = zoo_graph("mlp")
    plan = partition(graph, cost_model=mlp_favouring_gpu(graph), progress=False, precision="cuda=bf16")
    assert any(p.device == "cuda" for p in plan.partitions)
    compiled = compiler.compile(plan, simulate=True, progress=False)
    assert compiled.precision == Precision(cuda="bf16") and compiled.kernel_options.tf32
    _check_against_ort(zoo_onnx("mlp"), graph, compiled, seed=5)
    fp32 = compiler.compile(all_on(graph, "cuda"), simulate=True, progress=False, precision="cuda=fp32")
    assert not fp32.kernel_options.tf32
