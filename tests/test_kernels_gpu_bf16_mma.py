"""``gpu_tensor_core.LOW_PRECISION_MMA`` (issue 17; off until device step 136): a contraction
whose weight is stored in bf16/fp16 multiplies in that dtype -- the activation tile narrowed
as each warp loads its fragments, ``mma.sync`` m16n8k16 bf16/fp16 with float32 accumulators,
the epilogue in float32 -- as ``torch.autocast(bfloat16)`` runs its GEMMs.

Without a GPU: the m16n8k16 fragment layouts are the PTX ISA's; the CUDA C of ViT's
projections (197 tokens, 768 -> 768 split-K, 768 -> 3072 + GELU) in a bf16/fp16 build has
the narrow ``mma`` and no TF32 rounding or widening of either operand (switch on), the TF32
``mma`` as before (switch off; a float32 build is the same either way); the rule's whole
schedule, its three tensor-core intrinsics replaced by CPU loops of the same ``desc``
(:func:`narrow_emulated_intrinsics`), built for the CPU, computes exactly the narrow GEMM
(activation and weight rounded to the dtype, float32 sums: numpy within float32 rounding)
and ONNX Runtime's float32 result within issue 17's 2e-2 -- split-K and un-split matmuls, split-K and
un-split (batch 2) convolutions (their im2col activation narrowed once: the unscheduled
function on the bf16-rounded input); nvcc
sm_90 compiles the kernels without spilling.  With a GPU (``cuda`` mark): the projections
built all-CUDA in bf16 and fp16 with the switch on match ONNX Runtime within 2e-2.

Expected error (bf16): each operand rounded once to 8 significant bits (relative <= 2^-9),
products exact and sums in float32: per output ~2^-9 of the typical product magnitude times
sqrt(K) (random signs) -- a few 1e-3 of the output's maximum for one layer (this file's
CPU emulation: the measured values are asserted below 1e-2); the float32-activation bf16
build rounded only the weight, so the error grows by about sqrt(2).  fp16 (11 bits): 8x
smaller.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from onnx import numpy_helper
from tvm import tirx

from onnx_cases import VIT_PROJECTIONS, cuda_source, onnxruntime_outputs, projection
from tensor_core_cases import narrow_emulated_intrinsics
from tir_loops import serial_everywhere

from hetpart import importer, kernels
from hetpart.importer import low_precision as lp
from hetpart.kernels import tf32, weight_prepack
from hetpart.kernels.options import KernelOptions
from hetpart.kernels.rules import gpu_tensor_core as tc
from hetpart.targets import cuda_available, cuda_tvm_target

pytestmark = pytest.mark.usefixtures("without_wgmma")  # the mma.sync rule's code, on sm_90 too

SM90 = cuda_tvm_target("sm_90")
REL_TOL = 2e-2
"""Issue 17's tolerance for bf16/fp16 builds."""
CTYPES = {"bfloat16": "nv_bfloat16", "float16": "half"}
PTX = {"bfloat16": "bf16", "float16": "f16"}

LAYERS = VIT_PROJECTIONS


def _module(m, dtype: str | None):
    """``m``'s fused module as the compiler schedules it: weights lowered to ``dtype`` (None:
    float32) and marked layout-free."""
    graph = importer.load(m)
    if dtype is not None:
        graph = lp.lower_weights(graph, list(graph.kernels), dtype)
    return weight_prepack.mark_weights(graph.module)


def _matmul_func(m, dtype: str | None) -> tirx.PrimFunc:
    (func,) = [f for gv, f in _module(m, dtype).functions_items()
               if isinstance(f, tirx.PrimFunc) and "matmul" in gv.name_hint]
    return func


def _main_kernel(source: str) -> str:
    """The CUDA C of the contraction's (first) kernel."""
    parts = re.split(r'(?=extern "C" __global__)', source)
    (main,) = [p for p in parts if re.search(r"void (?:__launch_bounds__\(\d+\) )?\w+_prepacked_kernel\(", p)
               and "mma.sync" in p]
    return main


@pytest.fixture
def mma_on(monkeypatch):
    monkeypatch.setattr(tc, "LOW_PRECISION_MMA", True)


# --- the layouts -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [tf32.mma_a_layout, tf32.mma_b_layout])
def test_fragment_layouts_cover_each_element_once(layout):
    slots = {layout(i, k) for i in range(16) for k in range(16)}
    assert slots == {(lane, r) for lane in range(32) for r in range(8)}


def test_fragment_layouts_are_the_ptx_isa_ones():
    # mma.m16n8k16 .bf16/.f16 (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point
    # type"): g = lane/4, t = lane%4; A: a0,a1 (g, 2t..2t+1), a2,a3 (g+8, 2t..), a4,a5 (g, 2t+8..),
    # a6,a7 (g+8, 2t+8..); B (K x N): b0,b1 (k=2t..2t+1, n=g), b2,b3 (k=2t+8.., n=g) -- the second
    # n8 half (columns 8-15 of the 16-column tile) in registers 4-7.
    for lane in range(32):
        g, t = lane // 4, lane % 4
        a = [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1),
             (g, 2 * t + 8), (g, 2 * t + 9), (g + 8, 2 * t + 8), (g + 8, 2 * t + 9)]
        assert [tf32.mma_a_layout(i, k) for i, k in a] == [(lane, r) for r in range(8)]
        for half in (0, 1):
            b = [(k, g + 8 * half) for k in (2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9)]
            assert [tf32.mma_b_layout(n, k) for k, n in b] == [(lane, 4 * half + r) for r in range(4)]


# --- the CUDA C ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", sorted(CTYPES))
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_narrow_mma_with_the_activation_narrowed_at_the_fragment_load(case, dtype, mma_on):
    main = _main_kernel(cuda_source(kernels.build(_module(projection(*LAYERS[case]), dtype), SM90,
                                                  cuda_graph=False)))
    ctype, ptx = CTYPES[dtype], PTX[dtype]
    assert f"mma.sync.aligned.m16n8k16.row.col.f32.{ptx}.{ptx}.f32" in main
    assert "m16n8k8" not in main and "__float_to_tf32" not in main, "no TF32 step left"
    assert re.search(rf"= \(\({ctype}\)\(\(float\*\)buf_dyn_shmem_ptr\)\[", main), \
        "the float32 activation narrowed as its fragment is loaded"
    assert not re.search(rf"\(float\)\(\({ctype}\*\)buf_dyn_shmem_ptr\)", main), "nothing widened"
    assert re.search(rf"= \(\({ctype}\*\)buf_dyn_shmem_ptr\)\[", main), "the weight's fragment copied as staged"
    packed = re.search(rf"{ctype}\* __restrict__ (\w*reindex\w*_ptr)", main).group(1)
    assert re.search(rf"ptx_cp_async\w*_8_2_2\(buf_dyn_shmem_ptr, [^;]*{packed}", main), \
        "the weight staged by cp.async in its own dtype"


@pytest.mark.parametrize("dtype", sorted(CTYPES))
def test_switch_off_keeps_the_tf32_mma(dtype):
    assert tc.LOW_PRECISION_MMA is False, "off by default until device step 136"
    main = _main_kernel(cuda_source(kernels.build(_module(projection(*LAYERS["vit qkv 197"]), dtype), SM90,
                                                  cuda_graph=False)))
    assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in main and "m16n8k16" not in main
    assert "__float_to_tf32(((float*)buf_dyn_shmem_ptr)" in main


def test_float32_build_is_the_same_either_way(monkeypatch):
    mod = _module(projection(*LAYERS["vit qkv 197"]), None)
    before = cuda_source(kernels.build(mod, SM90, cuda_graph=False))
    monkeypatch.setattr(tc, "LOW_PRECISION_MMA", True)
    assert cuda_source(kernels.build(mod, SM90, cuda_graph=False)) == before


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_kernels_compile_without_spilling(case, tmp_path, mma_on):
    from hetpart.kernels import cuda_compile

    (tmp_path / "k.cu").write_text(cuda_source(kernels.build(_module(projection(*LAYERS[case]), "bfloat16"),
                                                             SM90, cuda_graph=False)))
    cmd = cuda_compile.nvcc_command("90", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr


# --- the schedule's numerics on the CPU: the narrow intrinsics emulated -----------------------
# name -> (tokens, k, n, SMs): a split-K projection (2 tiles on 4 "SMs": K cut in 4) and an un-split one
SMALL = {"split 48x512x64": (48, 512, 64, 4), "short-k 48x128x64": (48, 128, 64, 132)}


@pytest.mark.parametrize("dtype", sorted(CTYPES))
@pytest.mark.parametrize("case", sorted(SMALL))
def test_schedule_computes_the_narrow_gemm_on_the_cpu(case, dtype, mma_on, monkeypatch):
    tokens, k, n, sms = SMALL[case]
    m = projection(tokens, k, n, False, seed=3)
    func = _matmul_func(m, dtype)
    names = narrow_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    with SM90:
        sch = tc.GpuTensorCoreSplitK(KernelOptions(sm_count=sms)).apply(func, SM90)
    assert sch is not None
    assert ("rfactor" in str(sch.trace)) == case.startswith("split")
    assert f"hetpart_test_emu_narrow_mma_compute_{dtype}" in str(sch.trace)

    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, tokens, k)).astype(np.float32)
    x.flat[::7] = 0.0
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    w = lp.to_low(inits["w"], dtype)
    stored = {}  # the weight [k, n] and the bias [n], each in the dtype the function takes it in
    lib = tvm.compile(tvm.IRModule({"main": serial_everywhere(sch.mod["main"]).with_attr("global_symbol", "main")}),
                      target="llvm")
    params = [tvm.runtime.tensor(x)]
    for p in func.params[1:-1]:
        src = inits["w"] if len(p.shape) == 2 else inits["b"]
        stored[len(p.shape)] = lp.to_low(src, dtype) if str(p.dtype) == dtype else src
        params.append(tvm.runtime.tensor(stored[len(p.shape)]))
    params.append(tvm.runtime.empty((1, tokens, n), "float32"))
    lib["main"](*params)
    got = params[-1].numpy()

    bias = stored[1].astype(np.float64)
    narrow = lp.to_low(x, dtype).astype(np.float64) @ w.astype(np.float64) + bias  # both operands narrowed
    np.testing.assert_allclose(got, narrow, rtol=1e-5, atol=1e-5 * np.abs(narrow).max())
    want = onnxruntime_outputs(m, {"x": x})[0]
    err = float(np.abs(got - want).max() / np.abs(want).max())
    weight_only = x.astype(np.float64) @ w.astype(np.float64) + bias
    err_weight_only = float(np.abs(weight_only - want).max() / np.abs(want).max())
    assert err <= (1e-2 if dtype == "bfloat16" else 2e-3) <= REL_TOL, (err, err_weight_only)


# --- on the GPU ------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_projections_match_onnxruntime_on_gpu(case, fmt, mma_on):
    from onnx_cases import projection_error_on_gpu

    err = projection_error_on_gpu(*LAYERS[case], fmt)
    assert err <= REL_TOL, f"{case} {fmt}: max error {err:.2e}"


# name -> (cin, size, cout, k, stride, batch, SMs, rule): implicit-GEMM convolutions, the windowed
# activation staged along its rows (NCHW), split-K at batch 1 and un-split at batch 2
CONVS = {"3x3 64->64 8x8 split": (64, 8, 64, 3, 1, 1, 4, "ConvSplitK"),
         "3x3 32->64 8x8 b2": (32, 8, 64, 3, 1, 2, 1, "Gemm")}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_conv_schedule_computes_the_narrow_conv_on_the_cpu(case, mma_on, monkeypatch):
    """The same for a convolution: the scheduled function on input ``x`` equals the unscheduled
    one (bf16 weights widened exactly, float32 sums) on ``x`` rounded to bf16 -- the activation
    narrowed once, wherever the im2col gather puts each element -- and ONNX Runtime within 2e-2."""
    from tensor_core_cases import conv_relu

    cin, size, cout, k, stride, batch, sms, rule = CONVS[case]
    m = conv_relu(cin, size, cout, k, stride, False, batch=batch, seed=2)
    graph = lp.lower_weights(importer.load(m), list(importer.load(m).kernels), "bfloat16")
    (func,) = [f for gv, f in weight_prepack.mark_weights(graph.module).functions_items()
               if isinstance(f, tirx.PrimFunc) and "conv" in gv.name_hint]
    names = narrow_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    with SM90:
        sch = getattr(tc, f"GpuTensorCore{rule}")(KernelOptions(sm_count=sms)).apply(func, SM90)
    assert sch is not None and "hetpart_test_emu_narrow_mma_compute_bfloat16" in str(sch.trace)
    assert ("rfactor" in str(sch.trace)) == (rule == "ConvSplitK")

    x = np.random.default_rng(5).standard_normal((batch, cin, size, size)).astype(np.float32)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}

    def run(f, xin):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target="llvm")
        params = [tvm.runtime.tensor(xin)]
        for p in f.params[1:-1]:
            src = inits["w"] if int(p.shape[0]) == cout and len(p.shape) == 4 and int(p.shape[1]) == cin \
                else inits["b"].reshape([int(d) for d in p.shape])
            params.append(tvm.runtime.tensor(lp.to_low(src, "bfloat16") if str(p.dtype) == "bfloat16" else src))
        params.append(tvm.runtime.empty([int(d) for d in f.params[-1].shape], "float32"))
        lib["main"](*params)
        return params[-1].numpy()

    got = run(serial_everywhere(sch.mod["main"]), x)
    narrow = run(func, lp.to_low(x, "bfloat16").astype(np.float32))
    np.testing.assert_allclose(got, narrow, rtol=1e-5, atol=1e-5 * np.abs(narrow).max())
    want = onnxruntime_outputs(m, {"x": x})[0]
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-2


def test_convolutions_stay_tf32_where_their_switch_is_off(mma_on, monkeypatch):
    from tensor_core_cases import conv_relu

    monkeypatch.setattr(tc, "LOW_PRECISION_MMA_CONVOLUTIONS", False)
    m = conv_relu(64, 56, 64, 3, 1, False)  # ResNet-50 3x3 at 56x56, batch 1: split-K on the tensor cores
    graph = lp.lower_weights(importer.load(m), list(importer.load(m).kernels), "bfloat16")
    src = cuda_source(kernels.build(weight_prepack.mark_weights(graph.module), SM90, cuda_graph=False))
    assert "m16n8k8.row.col.f32.tf32.tf32" in src and "m16n8k16" not in src
    proj = cuda_source(kernels.build(_module(projection(64, 256, 256, False), "bfloat16"), SM90, cuda_graph=False))
    assert "m16n8k16.row.col.f32.bf16" in proj, "matmuls keep the bf16 mma"
