"""The batch-1 tensor-core split-K rule for convolutions (``GpuTensorCoreConvSplitK`` in
hetpart/kernels/rules/gpu_tensor_core.py): ResNet-50's layers at batch 1, whose 32 x 64 tile
grids (16-112 tiles) leave most of 132 SMs idle, which the SIMT split-K rules took before.

Without a GPU: the scheduled functions compute on the CPU what the unscheduled ones do (within
float32 rounding), with the tensor-core intrinsics emulated by plain loops of the same meaning
(:func:`_emulated_intrinsics`: their own ``desc`` semantics, no TF32 rounding) and every thread loop
serial -- tiling, window-offset chunks, partials in ``[s, b, J, I]`` and their sum through the
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

import math
import re
import shutil
import subprocess
import threading

import numpy as np
import onnx
import pytest
from onnx import helper
from tvm import s_tir, tirx

from gpu_schedule_cases import H200_LIMITS, grid_blocks, run_cpu
from onnx_cases import cuda_source, model, onnxruntime_outputs, run_on
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


def _conv(cin: int, size: int, cout: int, k: int, stride: int, residual: bool, batch: int = 1,
          seed: int = 0) -> onnx.ModelProto:
    """Conv (bias, pads k // 2) then ReLU, or a residual add and ReLU."""
    rng = np.random.default_rng(seed)
    out = (size + 2 * (k // 2) - k) // stride + 1
    inits = {"w": (rng.standard_normal((cout, cin, k, k)) / math.sqrt(cin * k * k)).astype(np.float32),
             "b": rng.standard_normal(cout).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], pads=[k // 2] * 4,
                              strides=[stride, stride])]
    inputs = [("x", (batch, cin, size, size), np.float32)]
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
        inputs.append(("r", (batch, cout, out, out), np.float32))
        nodes.append(helper.make_node("Relu", ["s"], ["y"]))
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    return model(nodes, inputs, [("y", (batch, cout, out, out), np.float32)], inits)


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
    one = _func(_conv(cin, size, cout, k, stride, residual))
    assert _apply(_func(_conv(cin, size, cout, k, stride, residual, batch=32))) is None
    assert _apply(_func(_conv(3, 224, 64, 7, 2, False))) is None  # the stem: 392 tiles
    assert _apply(_func(_conv(64, 56, 64, 1, 1, False))) is None  # K = 64: 2 slices
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
    sch = _apply(_func(_conv(cin, size, cout, k, stride, residual)))
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
    mod = load(_conv(cin, size, cout, k, stride, residual)).module
    assert "GpuTensorCoreConvSplitK" in kernels.rules_applied(kernels.schedule(mod, SM90)).values()
    source = cuda_source(kernels.build(mod, SM90, cuda_graph=True))
    assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in source
    # Partials as [chunk, channel, pixel]: stored 4 pixels at a time, read along the pixels.
    assert re.search(r"\*\(float4\*\)\(\w*_rf_ptr \+", source)


# --- the schedules' meaning on the CPU: tensor-core intrinsics emulated -------------------------------
_EMULATED = {"load_a": "hetpart_test_emu_load_a", "load_b": "hetpart_test_emu_load_b",
             "compute": "hetpart_test_emu_mma"}
_emu_lock = threading.Lock()
_emu_registered = False


def _inverse_a(lane, r):
    return lane // 4 + 8 * (r % 2), lane % 4 + 4 * (r // 2)


def _inverse_b(lane, r):
    return lane // 4 + 8 * (r // 2), lane % 4 + 4 * (r % 2)


def _emulated_intrinsics() -> dict[str, str]:
    """tf32's intrinsic names, with the fragment loads and the MMA replaced by intrinsics of the
    same ``desc`` whose impls are plain loops (no ``mma.sync``, no TF32 rounding, no lane
    binding): tensorized by the same rule code, runnable on a CPU."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    from hetpart.kernels.tf32 import K, M, N, SCOPE, WARP, a_layout, b_layout, c_layout

    def load_impl(rows, inverse):
        regs = rows * K // WARP

        @T.prim_func(s_tir=True)
        def impl(a: T.handle, c: T.handle) -> None:
            s0 = T.int32()
            s1 = T.int32()
            A = T.match_buffer(a, (rows, K), "float32", align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
            C = T.match_buffer(c, (WARP, regs), "float32", align=64, offset_factor=1, scope="warp")
            with T.sblock("root"):
                T.reads(A[0:rows, 0:K])
                T.writes(C[0:WARP, 0:regs])
                for lane, r in T.grid(WARP, regs):
                    row, col = T.meta_var(inverse(lane, r))
                    C[lane, r] = A[row, col]

        return impl

    @T.prim_func(s_tir=True)
    def mma_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (WARP, 4), "float32", align=64, offset_factor=1, scope="warp")
        B = T.match_buffer(b, (WARP, 4), "float32", align=64, offset_factor=1, scope="warp")
        C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(C[0:WARP, 0:8], A[0:WARP, 0:4], B[0:WARP, 0:4])
            T.writes(C[0:WARP, 0:8])
            for i, j, k in T.grid(M, N, K):
                lc, rc = T.meta_var(c_layout(i, j))
                la, ra = T.meta_var(a_layout(i, k))
                lb, rb = T.meta_var(b_layout(j, k))
                C[lc, rc] = C[lc, rc] + A[la, ra] * B[lb, rb]

    global _emu_registered
    names = tf32.intrinsics()
    with _emu_lock:
        if not _emu_registered:
            TensorIntrin.register(_EMULATED["load_a"], tf32._load_intrin(M, a_layout, _inverse_a)[0],
                                  load_impl(M, _inverse_a))
            TensorIntrin.register(_EMULATED["load_b"], tf32._load_intrin(N, b_layout, _inverse_b)[0],
                                  load_impl(N, _inverse_b))
            TensorIntrin.register(_EMULATED["compute"], tf32._mma_intrin()[0], mma_impl)
            _emu_registered = True
    return {**names, **_EMULATED}



@pytest.mark.parametrize("case", list(LAYERS))
def test_schedules_compute_what_the_unscheduled_functions_compute(case, monkeypatch):
    func = _func(_conv(*LAYERS[case]))
    names = _emulated_intrinsics()
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

    m = _conv(*LAYERS[case])
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
    m = _conv(*LAYERS[case])
    assert "GpuTensorCoreConvSplitK" in kernels.rules_applied(
        kernels.schedule(load(m).module, cuda_tvm_target())).values()
    feeds = _feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    got = run_on(m, "cuda", feeds, simulate=False)["y"]
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < TF32_RTOL, f"{case}: max error {err:.2e} of the output's magnitude"
