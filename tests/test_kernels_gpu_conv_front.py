"""The Whisper encoder's convolutional front end on the tensor cores (issue 17, session 57): two
switches of ``hetpart/kernels/rules/gpu_tensor_core.py``, both off until a device A/B measures them.

* ``CONV_SPLIT_PARTIAL_WAVES``: :class:`GpuTensorCoreConvSplitK` also splits a batch-1 convolution of
  long K whose 32 x 64 tile grid has a block per SM but under
  ``CONV_SPLIT_PARTIAL_WAVES_BLOCKS_PER_SM`` -- the stride-2 Conv1d 384 -> 384 (k3, 3000 -> 1500
  frames), which :class:`GpuTensorCoreGemm` ran as 144 blocks of 64 x 64 looping over 36 K slices
  (68.6 us on the H100, device step 159), becomes 282 x 3 = 846 blocks of 12 slices (one window
  offset each) and the sum kernel through the GELU epilogue;
* ``LOW_PRECISION_MMA_CONVOLUTIONS_ONLY``: the convolutions with a bf16 weight multiply in bf16
  (``LOW_PRECISION_MMA``'s fragment path) while the matmuls stay TF32;
* ``CONV_B1_SMALL_TILE``: :class:`GpuTensorCoreGemm` runs a batch-1 windowed convolution whose 64 x 64
  grid is under ``CONV_B1_SMALL_TILE_BLOCKS_PER_SM`` on the 32 x 64 tile -- the stride-1 Conv1d
  80 -> 384 on 3000 frames (45.9 us): 282 -> 564 blocks.

Without a GPU: the split factors (the stride-1 80 -> 384 layer, K = 240, and ResNet-50's batch-1
layers unchanged); the rule on the full-size front end, off and on; the schedules, tensor-core
intrinsics emulated on the CPU (:mod:`tensor_core_cases`), against the unscheduled functions and a
numpy Conv1d + erf-GELU on inputs with negatives and zeros (bf16: the activation rounded once, within
1e-2 of float32); the CUDA C (bf16 ``mma`` for the convolutions only) and nvcc sm_90 without spills.

    PYTHONPATH=. python -m pytest -q -p no:cacheprovider tests/test_kernels_gpu_conv_front.py
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import tirx

from gpu_schedule_cases import grid_blocks
from onnx_cases import cuda_source, projection
from tensor_core_cases import conv1d_gelu, narrow_emulated_intrinsics, tf32_emulated_intrinsics, whisper_conv_front
from tir_loops import serial_everywhere

from hetpart import importer, kernels
from hetpart.importer import low_precision as lp
from hetpart.kernels import tf32, weight_prepack
from hetpart.kernels.options import KernelOptions
from hetpart.kernels.rules import gpu_tensor_core as tc
from hetpart.targets import cpu_tvm_target, cuda_tvm_target

pytestmark = pytest.mark.usefixtures("without_wgmma")

SM90 = cuda_tvm_target("sm_90")
SPLIT, BF16, SMALL_TILE = "CONV_SPLIT_PARTIAL_WAVES", "LOW_PRECISION_MMA_CONVOLUTIONS_ONLY", "CONV_B1_SMALL_TILE"
FRONT_1 = (1, 3000, 384, 3 * 80, 80)  # (batch, M, N, K, k_run): Conv1d 80 -> 384, 3000 frames
FRONT_2 = (1, 1500, 384, 3 * 384, 384)  # Conv1d 384 -> 384 stride 2, 1500 frames out


def _module(m, dtype: str | None = "bfloat16"):
    """``m``'s fused module as a ``cuda=bf16`` build schedules it: weights lowered to ``dtype``
    (None: float32) and marked layout-free."""
    graph = importer.load(m)
    if dtype is not None:
        graph = lp.lower_weights(graph, list(graph.kernels), dtype)
    return weight_prepack.mark_weights(graph.module)


def _convs(m, dtype: str | None = "bfloat16") -> list[tirx.PrimFunc]:
    """The convolution functions of ``m`` (conv + bias + GELU fused), in graph order."""
    funcs = {gv.name_hint: f for gv, f in _module(m, dtype).functions_items()
             if isinstance(f, tirx.PrimFunc) and "conv" in gv.name_hint}
    return [funcs[n] for n in sorted(funcs, key=lambda n: (len(n.split("_")[1]), n))]


def test_switches_are_off_by_default():
    assert getattr(tc, SPLIT) is False and getattr(tc, BF16) is False and getattr(tc, SMALL_TILE) is False


# --- the split factors ---------------------------------------------------------------------------
def test_partial_waves_split_factor_of_the_front_end(monkeypatch):
    assert tc.conv_split_factor(*FRONT_2) == 1, "off: 282 tiles of 32 x 64 fill 132 SMs, declined"
    monkeypatch.setattr(tc, SPLIT, True)
    assert tc.conv_split_factor(*FRONT_2) == 3  # 846 blocks; S = 2 would start a chunk mid-window
    assert tc.conv_split_factor(*FRONT_1) == 1  # 564 tiles: 4.3 per SM already (and K = 240 has no split)
    assert tc.conv_split_factor(*FRONT_2, options=KernelOptions(split_k="off")) == 1


def test_partial_waves_chunks_start_at_window_offsets(monkeypatch):
    monkeypatch.setattr(tc, SPLIT, True)
    assert tc._conv_chunkings(1152, 384) == [3]
    assert tc._conv_chunkings(240, 80) == []
    monkeypatch.setattr(tc, "CONV_SPLIT_PARTIAL_WAVES_BLOCKS_PER_SM", 8)
    assert tc.conv_split_factor(*FRONT_2) == 3, "the largest allowed where none reaches the target"


def test_resnet50_batch_1_factors_unchanged_with_the_switch(monkeypatch):
    monkeypatch.setattr(tc, SPLIT, True)
    assert tc.conv_split_factor(1, 3136, 64, 576, 64) == 3
    assert tc.conv_split_factor(1, 784, 128, 1152, 128) == 9
    assert tc.conv_split_factor(1, 49, 512, 4608, 512) == 9
    # its grids of a block per SM or more have short K: the 1x1 256 -> 128 at 56x56 (196 tiles, 8
    # slices) and 64 -> 256 (392 tiles, 2 slices) stay un-split
    assert tc.conv_split_factor(1, 3136, 128, 256, 256) == 1
    assert tc.conv_split_factor(1, 3136, 256, 64, 64) == 1


# --- the rule on the full-size front end --------------------------------------------------------
@pytest.fixture(scope="module")
def front_convs():
    return _convs(whisper_conv_front())


def _apply(func, options=KernelOptions()):
    with SM90:
        return tc.GpuTensorCoreConvSplitK(options).apply(func, SM90)


def test_rule_takes_the_stride_2_layer_only_with_the_switch(front_convs, monkeypatch):
    conv1, conv2 = front_convs
    assert _apply(conv1) is None and _apply(conv2) is None
    monkeypatch.setattr(tc, SPLIT, True)
    assert _apply(conv1) is None, "564 tiles and K = 240: left to GpuTensorCoreGemm"
    sch = _apply(conv2)
    assert sch is not None and "rfactor" in str(sch.trace)
    assert grid_blocks(sch.mod["main"])[0] == 282 * 3


def test_schedule_picks_the_rules(monkeypatch):
    mod = _module(whisper_conv_front())
    rules = sorted(kernels.rules_applied(kernels.schedule(mod, SM90)).values())
    assert rules == ["GpuTensorCoreGemm", "GpuTensorCoreGemm"]
    monkeypatch.setattr(tc, SPLIT, True)
    rules = sorted(kernels.rules_applied(kernels.schedule(mod, SM90)).values())
    assert rules == ["GpuTensorCoreConvSplitK", "GpuTensorCoreGemm"]


def test_small_tile_for_the_stride_1_layer(front_convs, monkeypatch):
    conv1, conv2 = front_convs
    with SM90:
        assert grid_blocks(tc.GpuTensorCoreGemm().apply(conv1, SM90).mod["main"]) == [282]
        monkeypatch.setattr(tc, SMALL_TILE, True)
        assert grid_blocks(tc.GpuTensorCoreGemm().apply(conv1, SM90).mod["main"]) == [564]
        assert grid_blocks(tc.GpuTensorCoreGemm().apply(conv2, SM90).mod["main"]) == [282]  # 144 before
    assert tc.conv_b1_tile(tc.CONV_TILES[0], 1, 3000, 384, 132) == tc.CONV_TILES[-1]
    assert tc.conv_b1_tile(tc.CONV_TILES[0], 1, 12544, 384, 132) == tc.CONV_TILES[0], "1176 tiles: 8.9 per SM"


# --- the schedules' meaning on the CPU: tensor-core intrinsics emulated ---------------------------
SMALL = dict(cin=256, frames=128, cout=64, stride=2)
"""A stride-2 layer whose 32 x 64 grid (2 tiles) has 1-4 blocks per SM on 1 SM, K = 768 (24 slices,
3 window offsets of 256): the partial-waves split in 3."""


def _inputs(func: tirx.PrimFunc, seed: int = 3) -> list[np.ndarray]:
    """Standard normal values (negatives) with a tenth exactly zero, one per parameter but the output."""
    rng = np.random.default_rng(seed)
    out = []
    for p in func.params[:-1]:
        x = rng.standard_normal([int(d) for d in p.shape]).astype(np.float32)
        x[rng.random(x.shape) < 0.1] = 0
        out.append(x)
    return out


def _run(func: tirx.PrimFunc, inputs: list[np.ndarray]) -> np.ndarray:
    """``func`` built for the CPU on ``inputs`` (bf16 parameters given their values rounded)."""
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=cpu_tvm_target())
    args = [tvm.runtime.tensor(lp.to_low(x, str(p.dtype)) if str(p.dtype) in ("bfloat16", "float16") else x)
            for p, x in zip(func.params[:-1], inputs)]
    args.append(tvm.runtime.empty([int(d) for d in func.params[-1].shape], "float32"))
    lib["main"](*args)
    return args[-1].numpy()


def _numpy_conv1d_gelu(x, w, b, stride: int) -> np.ndarray:
    """Conv1d (k3, pad 1) + bias, then exact erf-GELU, in float64."""
    x, w = x.astype(np.float64).reshape(x.shape[-2:]), w.astype(np.float64)
    xp = np.pad(x, ((0, 0), (1, 1)))
    out = (xp.shape[1] - 3) // stride + 1
    cols = np.stack([xp[:, kx: kx + stride * (out - 1) + 1: stride] for kx in range(3)], axis=1)  # [cin, 3, T]
    y = np.einsum("ckt,ock->ot", cols, w) + b.astype(np.float64).reshape(-1, 1)
    erf = np.vectorize(math.erf)
    return (y * (1 + erf(y / math.sqrt(2))) / 2)[None]


def _roles(func, inputs):
    """(x, w, b) among ``inputs`` by shape: x ``[1, cin, T]``, w ``[cout, cin, 3]``, b the rest."""
    x = next(a for a in inputs if a.ndim == 3 and a.shape[0] == 1 and a.shape[-1] != 3)
    w = next(a for a in inputs if a.ndim == 3 and a.shape[-1] == 3)
    b = next(a for a in inputs if a is not x and a is not w)
    return x, w, b


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_partial_waves_split_computes_the_conv(dtype, monkeypatch):
    (func,) = _convs(conv1d_gelu(**SMALL), dtype)
    names = tf32_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    opts = KernelOptions(sm_count=1)
    assert _apply(func, opts) is None, "off: declined"
    monkeypatch.setattr(tc, SPLIT, True)
    sch = _apply(func, opts)
    assert sch is not None and "rfactor" in str(sch.trace)
    assert grid_blocks(sch.mod["main"])[0] == 2 * 3
    inputs = _inputs(func)
    want = _run(func, inputs)
    got = _run(serial_everywhere(sch.mod["main"]), inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    x, w, b = _roles(func, inputs)
    if dtype:
        w = lp.to_low(w, dtype).astype(np.float32)
    ref = _numpy_conv1d_gelu(x, w, b, SMALL["stride"])
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < 1e-4  # fast_erf against math.erf


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_small_tile_computes_the_conv(dtype, monkeypatch):
    (func,) = _convs(conv1d_gelu(80, 256, 128), dtype)  # stride 1, k_run 80: slices straddle window offsets
    names = tf32_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    monkeypatch.setattr(tc, SMALL_TILE, True)
    with SM90:
        sch = tc.GpuTensorCoreGemm(KernelOptions(sm_count=4)).apply(func, SM90)  # 8 tiles of 64 x 64: under 16
    assert sch is not None and grid_blocks(sch.mod["main"]) == [16]
    inputs = _inputs(func)
    want = _run(func, inputs)
    got = _run(serial_everywhere(sch.mod["main"]), inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    x, w, b = _roles(func, inputs)
    ref = _numpy_conv1d_gelu(x, lp.to_low(w, dtype).astype(np.float32) if dtype else w, b, 1)
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < 1e-4


@pytest.mark.parametrize("split", [False, True])
def test_bf16_convolutions_compute_the_narrow_conv(split, monkeypatch):
    """``LOW_PRECISION_MMA_CONVOLUTIONS_ONLY`` (with and without the split): the scheduled function
    on ``x`` equals the unscheduled one on ``x`` rounded to bf16 (the activation narrowed once) and
    the float32 conv within 1e-2."""
    (func,) = _convs(conv1d_gelu(**SMALL), "bfloat16")
    names = narrow_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    monkeypatch.setattr(tc, BF16, True)
    monkeypatch.setattr(tc, SPLIT, split)
    opts = KernelOptions(sm_count=1)
    with SM90:
        sch = (tc.GpuTensorCoreConvSplitK if split else tc.GpuTensorCoreGemm)(opts).apply(func, SM90)
    assert sch is not None and "hetpart_test_emu_narrow_mma_compute_bfloat16" in str(sch.trace)
    assert ("rfactor" in str(sch.trace)) == split
    inputs = _inputs(func)
    got = _run(serial_everywhere(sch.mod["main"]), inputs)
    x, w, b = _roles(func, inputs)
    narrow_inputs = [lp.to_low(a, "bfloat16").astype(np.float32) if a is x else a for a in inputs]
    want = _run(func, narrow_inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    ref = _numpy_conv1d_gelu(x, lp.to_low(w, "bfloat16").astype(np.float32), b, SMALL["stride"])
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert 0 < err < 1e-2, err


# --- the CUDA C ---------------------------------------------------------------------------------
def _kernels(source: str) -> dict[str, str]:
    parts = re.split(r'(?=extern "C" __global__)', source)
    return {re.search(r"void (?:__launch_bounds__\(\d+\) )?(\w+)\(", p).group(1): p
            for p in parts[1:] if "{" in p.split("\n", 1)[0]}


def test_bf16_mma_for_the_convolutions_only(monkeypatch):
    monkeypatch.setattr(tc, BF16, True)
    opts = KernelOptions(sm_count=4)  # 8 tiles of 64 x 64: GpuTensorCoreGemm's
    src = cuda_source(kernels.build(_module(conv1d_gelu(80, 256, 128)), SM90, cuda_graph=False, options=opts))
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in src and "m16n8k8" not in src
    proj = cuda_source(kernels.build(_module(projection(64, 256, 256, False)), SM90, cuda_graph=False, options=opts))
    assert "m16n8k8.row.col.f32.tf32.tf32" in proj and "m16n8k16" not in proj, "matmuls stay TF32"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("switches", [(SPLIT,), (BF16,), (SMALL_TILE,), (SPLIT, BF16, SMALL_TILE)])
def test_front_end_compiles_without_spilling(switches, tmp_path, monkeypatch):
    from hetpart.kernels import cuda_compile

    for name in switches:
        monkeypatch.setattr(tc, name, True)
    source = cuda_source(kernels.build(_module(whisper_conv_front()), SM90, cuda_graph=False))
    assert ("m16n8k16" in source) == (BF16 in switches)
    assert bool(re.search(r"_rf_ptr", source)) == (SPLIT in switches)
    (tmp_path / "k.cu").write_text(source)
    cmd = cuda_compile.nvcc_command("90", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert len(spills) >= 2 and set(spills) == {"0"}, done.stderr
