"""ViT-B/16's layer at batch 1 on the tensor cores (issue 17, bench/results/gpu-vit-b1-static.md):
``gpu_tensor_core.WIDEN_IN_FRAGMENTS`` (a bf16/fp16-stored weight staged in its own dtype by
``cp.async`` and widened at the fragment load) and ``gpu_tensor_core.DEEP_PIPELINE`` (3-stage K
pipeline for batch-1 plain matmuls on starved grids).

Without a GPU: the CUDA C of ViT's projections (197 tokens, 768 -> 768 split-K; 768 -> 3072 + GELU,
un-split) in a bf16/fp16 build copies the packed weight into shared memory with 8-byte
``cp.async`` (4 elements) and widens it in the fragment loads, where the switch off widens it in a
global load + convert + shared store per slice (the exposed latency the analysis found); the
TF32 build's K loop keeps two copies in flight (``cp.async.wait_group 2``) with DEEP_PIPELINE, one
without; which grids get 3 stages (:func:`pipeline_stages`: batch-1 plain matmuls up to 4 blocks
per SM, not a convolution, not batch 32); the switches off give main's TIR; the rule's own steps
for a narrow weight (pad, pack in its dtype, widen inlined into the operand copy, the staged copy
in the narrow dtype), built for the CPU, compute the projection (ONNX Runtime's float32 within
issue 17's 2e-2; the unscheduled function's within float32 rounding); the kernels compile with
nvcc without spilling.  With a GPU (``cuda`` mark): the projections built all-CUDA in TF32, bf16
and fp16, and attention's scores ``Q K^T / 8`` in TF32, with both switches on, match ONNX Runtime
(attention's ``P V``: tests/test_kernels_gpu_tc_splitk.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from onnx import helper
from tvm import tirx

from onnx_cases import VIT_PROJECTIONS, cuda_source, model, onnxruntime_outputs, projection

from hetpart import importer, kernels
from hetpart.importer import low_precision as lp
from hetpart.kernels import weight_prepack
from hetpart.kernels.rules import gpu_tensor_core as tc
from hetpart.targets import cuda_available, cuda_tvm_target

pytestmark = pytest.mark.usefixtures("without_wgmma")  # the mma.sync rule's code, on sm_90 too

SM90 = cuda_tvm_target("sm_90")
REL_TOL = 2e-2
"""Issue 17's tolerance for bf16/fp16 builds."""
TF32_RTOL = 5e-3
CTYPES = {"bfloat16": "nv_bfloat16", "float16": "half"}

LAYERS = VIT_PROJECTIONS


def _module(case: str, dtype: str | None):
    """The projection's fused module as the compiler schedules it: weights lowered to
    ``dtype`` (None: float32) and marked layout-free."""
    graph = importer.load(projection(*LAYERS[case]))
    if dtype is not None:
        graph = lp.lower_weights(graph, list(graph.kernels), dtype)
    return weight_prepack.mark_weights(graph.module)


def _main_kernel(source: str) -> str:
    """The CUDA C of the contraction's (first) kernel: ``*_prepacked_kernel``."""
    parts = re.split(r'(?=extern "C" __global__)', source)
    (main,) = [p for p in parts if re.search(r"void (?:__launch_bounds__\(\d+\) )?\w+_prepacked_kernel\(", p)
               and "mma.sync" in p]
    return main


@pytest.fixture(autouse=True)
def switches_on(monkeypatch):
    """Both switches on: what this file tests (they are off by default until device step 135
    measures them); a test that wants one off sets it after this."""
    monkeypatch.setattr(tc, "WIDEN_IN_FRAGMENTS", True)
    monkeypatch.setattr(tc, "DEEP_PIPELINE", True)


@pytest.fixture
def widen_off(monkeypatch):
    monkeypatch.setattr(tc, "WIDEN_IN_FRAGMENTS", False)


@pytest.fixture
def deep_off(monkeypatch):
    monkeypatch.setattr(tc, "DEEP_PIPELINE", False)


# --- the bf16/fp16 weight: cp.async, widened at the fragment load --------------------------------
@pytest.mark.parametrize("dtype", sorted(CTYPES))
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_narrow_weight_is_copied_async_and_widened_in_the_fragment_loads(case, dtype):
    main = _main_kernel(cuda_source(kernels.build(_module(case, dtype), SM90, cuda_graph=False)))
    ctype = CTYPES[dtype]
    packed = re.search(rf"{ctype}\* __restrict__ (\w*reindex\w*_ptr)", main).group(1)
    assert re.search(rf"ptx_cp_async\w*_8_2_2\(buf_dyn_shmem_ptr, [^;]*{packed}", main), \
        "4 weight elements (8 bytes) per cp.async into shared memory"
    assert re.search(rf"= \(\(float\)\(\({ctype}\*\)buf_dyn_shmem_ptr\)\[", main), "widened at the fragment load"
    assert not re.search(rf"\*\({ctype}4\*\)\({packed} \+", main), "no synchronous global load of the weight"
    assert "__float_to_tf32(((float*)buf_dyn_shmem_ptr)" in main, "the activations still rounded to TF32"


@pytest.mark.parametrize("dtype", sorted(CTYPES))
def test_switch_off_widens_in_the_staging_copy_as_before(dtype, widen_off):
    main = _main_kernel(cuda_source(kernels.build(_module("vit qkv 197", dtype), SM90, cuda_graph=False)))
    ctype = CTYPES[dtype]
    packed = re.search(rf"{ctype}\* __restrict__ (\w*reindex\w*_ptr)", main).group(1)
    assert re.search(rf"\*\({ctype}4\*\)\({packed} \+", main), "a global load per 4 elements, widened, then stored"
    assert not re.search(r"ptx_cp_async\w*_8_2_2", main)


# --- the pipeline's depth ------------------------------------------------------------------------
def test_pipeline_depth_by_grid_and_batch():
    sms = 132
    assert tc.pipeline_stages(1, 336, False, sms) == 3  # ViT's split projections: 2.5 blocks per SM
    assert tc.pipeline_stages(1, 84, False, sms) == 3  # attention's P V
    assert tc.pipeline_stages(1, 4 * sms + 1, False, sms) == 2  # a grid that hides latency by occupancy
    assert tc.pipeline_stages(32, 336, False, sms) == 2  # batch 32 keeps its measured schedule
    assert tc.pipeline_stages(1, 336, True, sms) == 2  # a convolution's (transposed) partials


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_tf32_k_loop_keeps_two_slices_in_flight(case):
    main = _main_kernel(cuda_source(kernels.build(_module(case, None), SM90, cuda_graph=False)))
    waits = {int(w) for w in re.findall(r"wait_group_(\d)\(\)", main)}
    assert max(waits) == tc.DEEP_PIPELINE_STAGES - 1


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_switch_off_keeps_one_slice_in_flight(case, deep_off):
    main = _main_kernel(cuda_source(kernels.build(_module(case, None), SM90, cuda_graph=False)))
    waits = {int(w) for w in re.findall(r"wait_group_(\d)\(\)", main)}
    assert max(waits) == 1


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_switches_off_schedule_as_before(dtype, monkeypatch):
    """Both switches off: the TIR is the one whose schedule the switches change (every
    block, loop and annotation) minus exactly their changes -- checked through what they
    add: no 3-stage annotation, no narrow shared buffer."""
    monkeypatch.setattr(tc, "WIDEN_IN_FRAGMENTS", False)
    monkeypatch.setattr(tc, "DEEP_PIPELINE", False)
    mod = kernels.schedule(_module("vit qkv 197", dtype), SM90)
    (func,) = [f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and "matmul" in gv.name_hint]
    text = func.script()
    assert '"software_pipeline_stage": [0, 0, 1]' in text
    assert not re.search(r'T\.sblock_alloc_buffer\([^)]*"(bfloat16|float16)", scope="shared\.dyn"', text)


# --- the rule's steps for a narrow weight, on the CPU --------------------------------------------
@pytest.mark.parametrize("dtype", sorted(CTYPES))
def test_narrow_staging_steps_compute_the_projection_on_the_cpu(dtype):
    """:class:`GpuTensorCoreSplitK`'s steps up to the GPU tiling, for a small projection
    (48 tokens, 64 -> 64): normal form, tile padding, the weight packed in its dtype
    (:func:`tc._mark_weight_packs`), :func:`tc._narrow_weight` finding the widening, then the
    operand's fragment copy (a ``local`` stand-in for the warp buffer) with the widening
    inlined and its staged copy in the narrow dtype (a ``global`` stand-in for shared
    memory) -- the data flow of the GPU kernel.  Built for the CPU: ONNX Runtime's float32
    result within 2e-2; the unscheduled function's within float32 rounding."""
    from hetpart.kernels.rules.gpu_gemm import as_normal_gemm

    tokens, k, n = 48, 64, 64
    m = projection(tokens, k, n, False, seed=3)
    graph = importer.load(m)
    low = lp.lower_weights(graph, list(graph.kernels), dtype)
    (func,) = [f for gv, f in weight_prepack.mark_weights(low.module).functions_items()
               if isinstance(f, tirx.PrimFunc) and "matmul" in gv.name_hint]
    sch, main, _, _, _ = as_normal_gemm(func, channels_last=True)
    sch.pad_einsum(main, [1, 32, 64, 32])
    tc._mark_weight_packs(sch, main, func)
    narrow = tc._narrow_weight(sch, main, 1)
    assert narrow is not None and narrow[1] == dtype
    frag = sch.cache_read(main, 1, "local")
    sch.compute_inline(narrow[0])
    staged = sch.cache_read(frag, 0, "global")
    assert str(sch.get(staged).writes[0].source.dtype) == dtype, "staged in the weight's own dtype"
    assert str(sch.get(frag).writes[0].source.dtype) == "float32", "widened by the fragment copy"

    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, tokens, k)).astype(np.float32)
    x.flat[::7] = 0.0  # negatives and zeros
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}

    def run(f):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target="llvm")
        params = [tvm.runtime.tensor(x)]
        for p in f.params[1:-1]:  # the weight [k, n], the bias [n]: in the stored dtype
            src = inits["w"] if len(p.shape) == 2 else inits["b"]
            params.append(tvm.runtime.tensor(lp.to_low(src, dtype) if str(p.dtype) == dtype else src))
        params.append(tvm.runtime.empty((1, tokens, n), "float32"))
        lib["main"](*params)
        return params[-1].numpy()

    got, unscheduled = run(sch.mod["main"]), run(func)
    want = onnxruntime_outputs(m, {"x": x})[0]
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= REL_TOL
    np.testing.assert_allclose(got, unscheduled, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_kernels_compile_without_spilling(dtype, tmp_path):
    from hetpart.kernels import cuda_compile

    (tmp_path / "k.cu").write_text(cuda_source(kernels.build(_module("vit ffn-up 197 gelu", dtype), SM90,
                                                             cuda_graph=False)))
    cmd = cuda_compile.nvcc_command("90", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr


# --- on the GPU -----------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("fmt", ["tf32", "bf16", "fp16"])
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_projections_match_onnxruntime_on_gpu(case, fmt):
    from onnx_cases import projection_error_on_gpu

    err = projection_error_on_gpu(*LAYERS[case], fmt)
    assert err <= (TF32_RTOL if fmt == "tf32" else REL_TOL), f"{case} {fmt}: max error {err:.2e}"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_attention_scores_match_onnxruntime_on_gpu():
    """ViT's ``Q K^T / 8`` (12 heads x 197 x 197, K = 64: 2 slices, a 3-stage pipeline's
    prologue only) in TF32."""
    from onnx_cases import relative_error_on_cuda

    m = model([helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["y"])],
              [("q", (1, 12, 197, 64), np.float32), ("kt", (1, 12, 64, 197), np.float32)],
              [("y", (1, 12, 197, 197), np.float32)], {"scale": np.array(0.125, np.float32)})
    rng = np.random.default_rng(5)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in (("q", (1, 12, 197, 64)), ("kt", (1, 12, 64, 197)))}
    err = relative_error_on_cuda(m, feeds)
    assert err < TF32_RTOL, f"max error {err:.2e} of the output's magnitude"
