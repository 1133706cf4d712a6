"""Tests of the tensor-core rule's register prefetch (``gpu_tensor_core.REGISTER_PREFETCH``,
issue 17's batch-32 analysis: bench/results/gpu-b32-conv-analysis.md).

Without a GPU: which convolutions get it -- those whose K loop is not ``cp.async``-pipelined
(bounds-tested loads on a grid above ``PIPELINE_MAX_BLOCKS_PER_SM_PREDICATED`` blocks per
SM) with at most ``REGISTER_PREFETCH_MAX_BLOCKS_PER_SM`` blocks per SM: ResNet-50's 3x3
layers at 28x28-7x7 (the split-K one included) and its 1x1 stride-2 layer at 14x14 (bounds
tests from M's padding) at batch 32, not its 3x3 at 56x56 (1568 blocks) nor the pipelined
ones; with the switch off none does.  The CUDA C: each thread's share of a K slice in a
register array of its own steps (64x64 tile, 4 warps: 16 floats of A, 4 float4 of B), the
K loop storing slice i from those registers into shared memory, then loading slice i+1 into
them, then the MMAs of slice i; ptxas keeps the arrays in registers (no stack frame) and the
kernel under 128 registers per thread.  The numerics cannot run here (``mma.sync``): with a
GPU (``cuda`` mark) the prefetched convolutions at batch 32 match ONNX Runtime (CPU) within
TF32's precision, inputs with negatives and zeros.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from tvm import s_tir, tirx

from onnx_cases import cuda_source

from hetpart import kernels, load
from hetpart.kernels.analysis import contains
from hetpart.kernels.rules import gpu_tensor_core
from hetpart.targets import cuda_available, cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")
TF32_RTOL = 5e-3
"""Error bound relative to the output's magnitude (as tests/test_kernels_tensor_core.py):
TF32 keeps 10 mantissa bits per operand; random-sign sums grow it by ~sqrt(K)."""

CONVS = {  # name -> (cin, image, cout, kernel, stride, pad), batch 32; prefetched?
    "3x3 256->256 @14 (392 blocks)": ((256, 14, 256, 3, 1, 1), True),
    "3x3 s2 128->128 @56 (784 blocks)": ((128, 56, 128, 3, 2, 1), True),
    "3x3 512->512 @7 (split in 3: 600 blocks)": ((512, 7, 512, 3, 1, 1), True),
    "1x1 s2 1024->2048 @14 (M padded: 800 blocks)": ((1024, 14, 2048, 1, 2, 0), True),
    "3x3 64->64 @56 (1568 blocks)": ((64, 56, 64, 3, 1, 1), False),
    "3x3 64->512 @7 (200 blocks: cp.async)": ((64, 7, 512, 3, 1, 1), False),
    "1x1 512->128 @28 (unpadded: cp.async)": ((512, 28, 128, 1, 1, 0), False),
}
PREFETCHED = sorted(c for c, (_, on) in CONVS.items() if on)


def _onnx_conv(cin, size, cout, k, stride, pad, n=32, seed=0):
    """ONNX ``relu(Conv(x, w, b))`` at batch ``n``."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.1).astype("float32"), "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype("float32"), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride] * 2,
                              pads=[pad] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    o = (size + 2 * pad - k) // stride + 1
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, cin, size, size])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, cout, o, o])
    graph = helper.make_graph(nodes, "conv", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _module(case):
    return load(_onnx_conv(*CONVS[case][0])).module


def _conv_func(mod) -> tirx.PrimFunc:
    (func,) = [f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and "conv" in gv.name_hint]
    return func


def _prefetched(func: tirx.PrimFunc) -> bool:
    return contains(func.body, s_tir.SBlock, lambda b: gpu_tensor_core.MANIFEST_LOCAL_STAGE in b.annotations)


@pytest.fixture
def prefetch_off(monkeypatch):
    monkeypatch.setattr(gpu_tensor_core, "REGISTER_PREFETCH", False)


# --- which kernels ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CONVS))
def test_prefetch_taken_by_unpipelined_grids_of_at_most_8_blocks_per_sm(case):
    func = kernels.schedule_primfunc(_conv_func(_module(case)), SM90)
    assert str(func.attrs["hetpart.rule"]) == "GpuTensorCoreGemm"
    assert _prefetched(func) == CONVS[case][1]


@pytest.mark.parametrize("case", PREFETCHED)
def test_switch_off_schedules_without_prefetch(case, prefetch_off):
    func = kernels.schedule_primfunc(_conv_func(_module(case)), SM90)
    assert str(func.attrs["hetpart.rule"]) == "GpuTensorCoreGemm"
    assert not _prefetched(func)
    assert "software_pipeline_stage" not in func.script()  # as before: load, store, MMAs per slice


# --- the CUDA C -----------------------------------------------------------------------------------
CASE = "3x3 256->256 @14 (392 blocks)"
STORE = re.compile(r"buf_dyn_shmem_ptr\)[^\n]*\] = \w+_local_ptr\[")  # registers -> shared
LOAD = re.compile(r"\w+_local_ptr\[[^\]\n]*\] = ")  # global -> registers


def test_kernel_stores_slice_i_then_loads_slice_i_plus_1_into_registers_then_multiplies():
    source = cuda_source(kernels.build(_module(CASE), SM90, cuda_graph=False))
    t = gpu_tensor_core.CONV_TILES[0]
    steps_a = t.m * t.k // (t.warps * gpu_tensor_core.WARP)  # one float per step (along the rows)
    steps_b = t.n * t.k // (t.warps * gpu_tensor_core.WARP * gpu_tensor_core.VEC)  # one float4
    assert re.search(rf"float \w+_local_ptr\[{steps_a}\];", source)
    assert re.search(rf"float4 \w+_local_ptr\[{steps_b}\];", source)
    prologue = LOAD.search(source)
    store = STORE.search(source)
    assert prologue and store and prologue.start() < store.start(), "slice 0 loaded before the K loop"
    load_next = LOAD.search(source, store.end())
    assert load_next, "the K loop loads the next slice"
    mma = source.index("mma.sync", load_next.end())
    assert not STORE.search(source, load_next.end(), mma), "no store between the next slice's loads and the MMAs"
    assert "cp.async" not in source


def test_switch_off_kernel_has_no_register_stage(prefetch_off):
    source = cuda_source(kernels.build(_module(CASE), SM90, cuda_graph=False))
    assert "_local_ptr[" not in source


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_register_stage_compiles_to_registers(tmp_path):
    path = tmp_path / "k.cu"
    path.write_text(cuda_source(kernels.build(_module(CASE), SM90, cuda_graph=False)))
    out = subprocess.run(["nvcc", "--cubin", "-O3", "-arch=sm_90", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"),
                          str(path)], capture_output=True, text=True, check=True).stderr
    info = out.split("Compiling entry function '")
    (main,) = [s for s in info if s.split("'")[0].endswith("_prepacked_kernel")]
    assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in main
    regs = int(re.search(r"Used (\d+) registers", main).group(1))
    assert regs <= 128, f"{regs} registers: fewer than 4 blocks of 128 threads per SM"


# --- on the GPU --------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", PREFETCHED)
def test_prefetched_convolutions_match_onnxruntime_on_gpu(case):
    from onnx_cases import relative_error_on_cuda

    cin, size = CONVS[case][0][:2]
    m = _onnx_conv(*CONVS[case][0])
    assert _prefetched(kernels.schedule_primfunc(_conv_func(load(m).module), cuda_tvm_target()))
    x = np.random.default_rng(1).standard_normal((32, cin, size, size)).astype("float32")
    x.flat[::7] = 0.0  # negatives and zeros
    err = relative_error_on_cuda(m, {"x": x})
    assert err < TF32_RTOL, f"{case}: max error {err:.2e} of the output's magnitude"
