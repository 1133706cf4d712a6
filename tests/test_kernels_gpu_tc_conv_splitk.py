"""The batch-1 tensor-core split-K rule for convolutions (``GpuTensorCoreConvSplitK`` in
hetpart/kernels/rules/gpu_tensor_core.py): ResNet-50's layers at batch 1, whose 32 x 64 tile
grids (16-112 tiles) leave most of 132 SMs idle, which the SIMT split-K rules took before.

Without a GPU: the scheduled functions compute on the CPU what the unscheduled ones do (within
float32 rounding), with the tensor-core intrinsics emulated by plain loops of the same meaning
(:func:`tensor_core_cases.tf32_emulated_intrinsics`: their own ``desc`` semantics, no TF32
rounding) and every thread loop serial -- tiling, window-offset chunks, partials in ``[s, b, J, I]`` and their sum through the
epilogue all checked; the split factors of ResNet-50's batch-1 shapes (chunks at window offsets,
at least 4 slices, a block per SM or two); what the rule leaves alone (batch 32, grids a
tile fills, K too short to split, matmuls, the switch ``CONV_SPLIT_B1``, TF32 off, split-K
off); its schedules of 3x3 (stride 1 and 2, 56x56 to 7x7) and 1x1 (stride 1 and 2, ReLU
and residual epilogues) layers pass TVM's GPU-code verifier with H200 limits and launch
two kernels (the partials on S x tiles blocks, then their sum through the epilogue); the
built CUDA C issues TF32 ``mma.sync``, stores the partials 4 floats at a time and compiles
with hetpart's nvcc flags without spilling.  With a GPU (``cuda`` mark): the same layers
against ONNX Runtime (CPU), within TF32's precision.

    PYTHONPATH=. python3 -m pytest tests/test_kernels_gpu_tc_conv_splitk.py -q -m cuda
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import helper
from tvm import s_tir, tirx

from gpu_schedule_cases import H200_LIMITS, grid_blocks, run_cpu
from onnx_cases import cuda_source, model, onnxruntime_outputs, run_on
from tensor_core_cases import conv_relu, tf32_emulated_intrinsics
from tir_loops import serial_everywhere

from hetpart import kernels, load
from hetpart.bench.switches import switched
from hetpart.kernels.options import KernelOptions
from hetpart.kernels import tf32
from hetpart.kernels.rules import GpuTensorCoreConvSplitK
from hetpart.kernels.rules.gpu_tensor_core import CONV_SPLIT_TILE, conv_split_factor
from hetpart.targets import cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")
SWITCH = "hetpart.kernels.rules.gpu_tensor_core.CONV_SPLIT_B1"
TF32_RTOL = 5e-3

# name -> (cin, size, cout, kernel, stride, residual): ResNet-50's batch-1 layers (torchvision v1.5)
LAYERS = {
    "3x3 56x56 64": (64, 56, 64, 3, 1, False),
    "3x3 s2 56->28 128": (128, 56, 128, 3, 2, False),
    "3x3 14x14 256": (256, 14, 256, 3, 1, False),
    "3x3 7x7 512": (512, 7, 512, 3, 1, False),
    "1x1 14x14 1024->256": (1024, 14, 256, 1, 1, False),
    "1x1 7x7 512->2048 residual": (512, 7, 2048, 1, 1, True),
    "1x1 s2 14->7 1024->2048": (1024, 14, 2048, 1, 2, False),
}


def _func(m: onnx.ModelProto) -> tirx.PrimFunc:
    funcs = [f for gv, f in load(m).module.functions_items() if isinstance(f, tirx.PrimFunc) and "conv" in gv.name_hint]
    assert len(funcs) == 1, "conv, bias and epilogue are one fused function"
    return funcs[0]


def _apply(func, options=KernelOptions()):
    with SM90:
        return GpuTensorCoreConvSplitK(options).apply(func, SM90)


def test_split_factors_of_resnet50_at_batch_1():
    # (batch, M, N, K, k_run) -> S; 32 x 64 tiles on 132 SMs
    assert conv_split_factor(1, 3136, 64, 576, 64) == 3  # 98 tiles -> 294; chunks of 3 window offsets
    assert conv_split_factor(1, 784, 128, 1152, 128) == 9  # 50 -> 450 (3 chunks: 150, under 2 per SM)
    assert conv_split_factor(1, 196, 256, 2304, 256) == 9  # 28 -> 252, the most window-aligned chunks
    assert conv_split_factor(1, 49, 512, 4608, 512) == 9  # 16 -> 144
    assert conv_split_factor(1, 196, 256, 1024, 1024) == 8  # 1x1: 28 -> 224, chunks of 4 slices
    assert conv_split_factor(1, 49, 512, 2048, 2048) == 16  # 16 -> 256
    assert conv_split_factor(1, 196, 1024, 256, 256) == 2  # 112 -> 224
    # Left alone: grids a tile fills (the stem, 56x56 expansions), K of 2 slices, a split that
    # stays under a block per SM (a 5x5 window of 64 channels: 25 offsets, no 2..16 chunks of
    # whole offsets), split-K off; a smaller GPU needs fewer chunks.
    assert conv_split_factor(1, 3136, 256, 64, 64) == 1
    assert conv_split_factor(1, 3136, 64, 64, 64) == 1
    assert conv_split_factor(1, 196, 64, 1600, 64) == 1
    assert conv_split_factor(1, 196, 256, 2304, 256, KernelOptions(split_k="off")) == 1
    assert conv_split_factor(1, 196, 256, 2304, 256, KernelOptions(sm_count=40)) == 3  # 84 tiles: 2 per SM


def test_rule_declines_batch_32_filled_grids_short_k_matmuls_and_the_switches():
    cin, size, cout, k, stride, residual = LAYERS["3x3 14x14 256"]
    one = _func(conv_relu(cin, size, cout, k, stride, residual))
    assert _apply(_func(conv_relu(cin, size, cout, k, stride, residual, batch=32))) is None
    assert _apply(_func(conv_relu(3, 224, 64, 7, 2, False))) is None  # the stem: 392 tiles
    assert _apply(_func(conv_relu(64, 56, 64, 1, 1, False))) is None  # K = 64: 2 slices
    assert _apply(one, KernelOptions(tf32=False)) is None
    assert _apply(one, KernelOptions(split_k="off")) is None
    with switched([f"{SWITCH}=0"]):
        assert _apply(one) is None
    with cuda_tvm_target("sm_75"):
        assert GpuTensorCoreConvSplitK().apply(one, cuda_tvm_target("sm_75")) is None
    mm = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (1, 128, 768), np.float32)],
               [("y", (1, 128, 768), np.float32)], {"w": np.ones((768, 768), np.float32)})
    (mfunc,) = [f for f in load(mm).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert _apply(mfunc) is None  # matmuls are GpuTensorCoreSplitK's


@pytest.mark.parametrize("case", list(LAYERS))
def test_layers_split_on_tensor_cores_in_two_verified_kernels(case):
    cin, size, cout, k, stride, residual = LAYERS[case]
    sch = _apply(_func(conv_relu(cin, size, cout, k, stride, residual)))
    assert sch is not None
    scheduled = sch.mod["main"]
    assert s_tir.analysis.verify_gpu_code(scheduled, H200_LIMITS)
    out = (size + 2 * (k // 2) - k) // stride + 1
    m, kk = out * out, cin * k * k
    partials, summed = grid_blocks(scheduled)
    tiles = CONV_SPLIT_TILE.blocks(1, m, cout)
    assert partials == tiles * conv_split_factor(1, m, cout, kk, cin if k > 1 else kk)
    assert partials >= 132 and summed * 256 >= m * cout


def test_rule_is_chosen_and_builds_tf32_mma_with_vector_partial_stores():
    cin, size, cout, k, stride, residual = LAYERS["1x1 7x7 512->2048 residual"]
    mod = load(conv_relu(cin, size, cout, k, stride, residual)).module
    assert "GpuTensorCoreConvSplitK" in kernels.rules_applied(kernels.schedule(mod, SM90)).values()
    source = cuda_source(kernels.build(mod, SM90, cuda_graph=True))
    assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in source
    # Partials as [chunk, channel, pixel]: stored 4 pixels at a time, read along the pixels.
    assert re.search(r"\*\(float4\*\)\(\w*_rf_ptr \+", source)


# --- the schedules' meaning on the CPU: tensor-core intrinsics emulated -------------------------------
@pytest.mark.parametrize("case", list(LAYERS))
def test_schedules_compute_what_the_unscheduled_functions_compute(case, monkeypatch):
    func = _func(conv_relu(*LAYERS[case]))
    names = tf32_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    sch = _apply(func)
    assert sch is not None and "rfactor" in str(sch.trace)
    want = run_cpu(func)
    got = run_cpu(serial_everywhere(sch.mod["main"]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("case", ["3x3 7x7 512", "1x1 14x14 1024->256"])
def test_kernels_compile_with_hetparts_nvcc_flags_without_spilling(tmp_path, case):
    from hetpart.kernels import cuda_compile

    m = conv_relu(*LAYERS[case])
    (tmp_path / "k.cu").write_text(cuda_source(kernels.build(load(m).module, SM90, cuda_graph=False)))
    cmd = cuda_compile.nvcc_command("90", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert len(spills) >= 2 and set(spills) == {"0"}, done.stderr


def _feeds(m: onnx.ModelProto, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in m.graph.input:
        x = rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        x.flat[::7] = 0.0
        feeds[i.name] = x
    return feeds


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(LAYERS))
def test_against_onnxruntime_on_the_gpu(case):
    m = conv_relu(*LAYERS[case])
    assert "GpuTensorCoreConvSplitK" in kernels.rules_applied(
        kernels.schedule(load(m).module, cuda_tvm_target())).values()
    feeds = _feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    got = run_on(m, "cuda", feeds, simulate=False)["y"]
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < TF32_RTOL, f"{case}: max error {err:.2e} of the output's magnitude"
