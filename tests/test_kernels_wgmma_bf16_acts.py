"""The ``wgmma`` GEMM with bf16 activations (issue 17): ``low_precision_activations.STORE_GEMM_INPUTS_BF16``
and ``wgmma_match.WGMMA_GEMM`` both on.

Without a GPU:

* a ViT-B-shaped encoder block (``torchvision_attention(197, 768, 12, block=True)``) lowered for an
  all-CUDA bf16 plan: qkv, proj, fc1 and fc2 -- each reading a bf16 A widened in the kernel -- match
  as the ``bf16`` family (A passed to the wgmma kernel as bf16), fc1 (whose bias + GELU output is
  rounded to bf16 in the fused kernel's last store: fc2 reads it) with ``out_dtype`` bfloat16, the
  others float32; with the activation switch off the same four match as ``f32a`` with float32
  outputs; a second rounding (a cast to bf16 anywhere but the last store's outermost node) is
  declined;
* the substituted module calls fc1's wgmma GEMM with a bf16 result, which fc2's GEMM reads as its
  bf16 A (no float32 tensor read as bf16);
* ``kernels.build`` for sm_90 (nvcc): the four GEMMs are wgmma kernels taking A as ``nv_bfloat16``;
  fc1's stores ``(nv_bfloat16)(...)`` into a bf16 ``C``; a split-K reduction with a bf16 output
  stores bf16; nvcc sm_90a compiles both kernel kinds without spills;
* a chain ``(x @ w1) @ w2``: the first GEMM (float32 A: ``f32a``) with no epilogue and a bf16 output,
  the second ``bf16``; built, both wgmma kernels, the first storing bf16; at K = N the first splits and,
  with no epilogue operand, keeps its fused kernel (Relax cannot inspect a lone reduction call);
* ``out_dtype`` float32 (the default) builds the very kernel built without the argument.

With a GPU (``cuda`` mark, device step 154): the block, both switches on, against ONNX Runtime
within 2e-2 (issue 17's bf16 tolerance).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import tirx

from onnx_cases import plan_all_on, torchvision_attention

from hetpart import importer, kernels
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision_activations as lpa
from hetpart.kernels import weight_prepack, wgmma_gemm as wg, wgmma_match as wm, wgmma_splitk as sk
from hetpart.kernels import wgmma_substitute as ws, wgmma_variant as wv
from hetpart.kernels.options import KernelOptions
from hetpart.targets import cuda_available, cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")
TOKENS = 197
LAYERS = {(2304, 768): "qkv", (768, 768): "proj", (3072, 768): "fc1", (768, 3072): "fc2"}
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")


@pytest.fixture
def both_on(monkeypatch):
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", True)
    monkeypatch.setattr(wm, "WGMMA_GEMM", True)
    options = KernelOptions()
    assert options.wgmma
    return options


def _vit_block():
    return torchvision_attention(TOKENS, 768, 12, block=True)


def _lowered():
    graph = importer.load(_vit_block())
    return lower_plan_weights(graph, plan_all_on(graph, "cuda"), Precision(cuda="bf16"))


def _matched(mod, options) -> dict:
    """``{layer name: (kernel name, WgmmaGemm)}`` of the block's four projections."""
    out = {}
    for gv, f in mod.functions_items():
        if isinstance(f, tirx.PrimFunc):
            got = wm.match(f, SM90, options)
            if got is not None:
                out[LAYERS[(got.n, got.k)]] = (gv.name_hint, got)
    return out


def test_a_vit_block_with_bf16_activations_matches_the_bf16_family(both_on):
    mod = weight_prepack.mark_weights(_lowered().module)
    found = _matched(mod, both_on)
    assert sorted(found) == ["fc1", "fc2", "proj", "qkv"]
    for name, (kernel, g) in found.items():
        assert (g.precision, g.activation_dtype) == ("bf16", "bfloat16"), name
        assert str(mod[kernel].params[g.activation].dtype) == "bfloat16"
        want = "bfloat16" if name == "fc1" else "float32"
        assert g.out_dtype == want == str(mod[kernel].params[-1].dtype), name
    assert found["fc1"][1].epilogue == "bias_gelu" and found["fc2"][1].epilogue == "bias_residual"


def test_float32_activations_match_the_f32a_family(monkeypatch):
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", False)
    found = _matched(weight_prepack.mark_weights(_lowered().module), KernelOptions(wgmma=True))
    assert sorted(found) == ["fc1", "fc2", "proj", "qkv"]
    assert {(g.precision, g.activation_dtype, g.out_dtype) for _, g in found.values()} == \
        {("f32a", "float32", "float32")}


def _substituted_layers(mod) -> list[str]:
    """The names of ``mod``'s kernels that are ``wgmma`` GEMMs (split-K's reductions left out)."""
    return sorted(gv.name_hint for gv, f in mod.functions_items()
                  if isinstance(f, tirx.PrimFunc) and gv.name_hint.endswith("_wgmma"))


def test_a_bf16_build_substitutes_the_bf16_family_by_default(monkeypatch):
    """With ``KernelOptions.wgmma`` off (every build's default), :data:`wgmma_match.WGMMA_BF16` (on)
    substitutes the four bf16-A projections of a ViT block with bf16 activations, and
    :data:`wgmma_match.WGMMA_F32A` (off) none of them with float32 activations, until it is on."""
    monkeypatch.setattr(wm, "WGMMA_BF16", True)
    monkeypatch.setattr(wm, "WGMMA_F32A", False)
    options = KernelOptions(wgmma=False)
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", True)
    assert len(_substituted_layers(ws.substitute(weight_prepack.mark_weights(_lowered().module), SM90, options))) == 4
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", False)
    f32a = weight_prepack.mark_weights(_lowered().module)
    assert ws.substitute(f32a, SM90, options) is f32a
    monkeypatch.setattr(wm, "WGMMA_F32A", True)
    assert len(_substituted_layers(ws.substitute(f32a, SM90, options))) == 4
    monkeypatch.setattr(wm, "WGMMA_BF16", False)
    monkeypatch.setattr(wm, "WGMMA_F32A", False)
    assert ws.substitute(f32a, SM90, options) is f32a


def test_a_gemm_of_one_tile_of_rows_is_left_by_the_family_switches(monkeypatch):
    """128 tokens (DistilBERT's): one 128-row tile, measured slower substituted -- the switches leave
    it (``wgmma_match.ONE_TILE_ROWS``); ``KernelOptions.wgmma`` still substitutes it."""
    monkeypatch.setattr(wm, "WGMMA_BF16", True)
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", True)
    graph = importer.load(torchvision_attention(wm.ONE_TILE_ROWS, 768, 12, block=True))
    mod = weight_prepack.mark_weights(lower_plan_weights(graph, plan_all_on(graph, "cuda"),
                                                         Precision(cuda="bf16")).module)
    assert {g.precision for _, g in _matched(mod, KernelOptions(wgmma=True)).values()} == {"bf16"}
    assert ws.substitute(mod, SM90, KernelOptions(wgmma=False)) is mod
    assert len(_substituted_layers(ws.substitute(mod, SM90, KernelOptions(wgmma=True)))) == 4


def test_a_rounding_before_the_last_store_is_not_matched(both_on):
    mod = weight_prepack.mark_weights(_lowered().module)
    kernel, _ = _matched(mod, both_on)["fc1"]
    text = mod[kernel].script()
    last = re.search(r'T\.Cast\("bfloat16", (\w+)\[v_ax0, v_ax1, v_ax2\] \* T\.float32\(0\.5\)\)', text)
    assert last, text[-600:]
    buf = last.group(1)
    again = tvm.script.from_source(text)
    assert wm.match(again, SM90, both_on).out_dtype == "bfloat16"
    twice = text.replace(last.group(0), f'T.Cast("bfloat16", T.Cast("float32", T.Cast("bfloat16", '
                                         f'{buf}[v_ax0, v_ax1, v_ax2])) * T.float32(0.5))')
    assert wm.match(tvm.script.from_source(twice), SM90, both_on) is None


def test_the_substituted_fc1_result_is_bf16_and_fc2_reads_it(both_on):
    mod = weight_prepack.mark_weights(_lowered().module)
    found = _matched(mod, both_on)
    out = ws.substitute(mod, SM90, both_on)
    text = out["main"].script(show_meta=False)
    fc1 = found["fc1"][0] + "_wgmma"
    (call,) = [line for line in text.splitlines() if f"R.call_tir({fc1}, (" in line]
    assert 'out_ty=R.Tensor((197, 3072), dtype="bfloat16")' in call, call
    assert [str(p.dtype) for p in out[fc1].params] == ["bfloat16", "bfloat16", "float32", "bfloat16"]
    fc2 = found["fc2"][0] + "_wgmma"  # split: the GEMM reads A, the reduction stores float32
    assert str(out[fc2].params[0].dtype) == "bfloat16"
    assert str(out[fc2 + "_reduce"].params[-1].dtype) == "float32"
    # no tensor is viewed in a dtype other than its own
    for view in re.finditer(r'R\.Tensor\(\(([\d, ]+)\), dtype="(\w+)"\) = R\.call_pure_packed\("vm\.builtin\.reshape", '
                            r'(\w+),', text):
        src = re.search(rf'\b{view.group(3)}: R\.Tensor\(\([\d, ]+\), dtype="(\w+)"\)', text)
        assert src is None or src.group(1) == view.group(2), view.group(0)


def _chain(hidden=1536):
    """``y = (x @ w1) @ w2`` on ``[1, 197, 768]`` through ``hidden`` features: the first GEMM reads the
    float32 input (``f32a``), its output -- read only as the second's A -- is rounded to bf16 in its
    store (no epilogue), the second reads it as a bf16 A (``bf16``)."""
    from onnx import helper

    from onnx_cases import model

    rng = np.random.default_rng(0)
    inits = {"w1": (rng.standard_normal((768, hidden)) / 28).astype(np.float32),
             "w2": (rng.standard_normal((hidden, 768)) / 40).astype(np.float32)}
    mk = helper.make_node
    return model([mk("MatMul", ["x", "w1"], ["h"]), mk("MatMul", ["h", "w2"], ["y"])],
                 [("x", (1, TOKENS, 768), np.float32)], [("y", (1, TOKENS, 768), np.float32)], inits)


def _chain_module(hidden=1536):
    graph = importer.load(_chain(hidden))
    return lower_plan_weights(graph, plan_all_on(graph, "cuda"), Precision(cuda="bf16"))


def test_a_float32_a_with_a_bf16_output_is_f32a_and_the_next_gemm_bf16(both_on):
    """Both switches on: the chain's first GEMM (A a float32 input) is ``f32a`` with no epilogue and a
    bf16 output stored by the wgmma GEMM (unsplit: K < N), the second ``bf16`` with a float32 one."""
    mod = weight_prepack.mark_weights(_chain_module().module)
    found = {gv.name_hint: wm.match(f, SM90, both_on)
             for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    got = sorted((g.precision, g.activation_dtype, g.out_dtype, g.epilogue) for g in found.values() if g is not None)
    assert got == [("bf16", "bfloat16", "float32", None), ("f32a", "float32", "bfloat16", None)]
    out = ws.substitute(mod, SM90, both_on)
    (first,) = [name for name, g in found.items() if g is not None and g.precision == "f32a"]
    assert [str(p.dtype) for p in out[first + "_wgmma"].params] == ["float32", "bfloat16", "bfloat16"]
    assert not any(gv.name_hint.endswith("_wgmma_reduce") for gv, _ in out.functions_items())


def test_a_split_gemm_without_an_epilogue_operand_keeps_its_kernel(both_on):
    """At K = N the ``f32a`` GEMM splits; with no bias or residual its reduction would be a call_tir of
    the partials alone, which Relax's RewriteDataflowReshape cannot inspect (a function without
    blocks): the fused kernel is kept (matched, not substituted); the second (``bf16``, unsplit) is."""
    mod = weight_prepack.mark_weights(_chain_module(768).module)
    found = {gv.name_hint: wm.match(f, SM90, both_on)
             for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    (first,) = [name for name, g in found.items() if g is not None and g.precision == "f32a"]
    assert wv.choose(TOKENS, 768, 768, "f32a").split > 1
    names = {gv.name_hint for gv, _ in ws.substitute(mod, SM90, both_on).functions_items()}
    assert first in names and first + "_wgmma" not in names
    assert any(n.endswith("_wgmma") for n in names)


def test_the_default_out_dtype_builds_the_same_kernel():
    for split, bn in ((1, 64), (8, 128)):
        a = sk.gemm_module(TOKENS, 768, 3072, bn, stages=4, precision="bf16", split=split, epilogue="bias",
                           swizzle="128b", consumers=2)
        b = sk.gemm_module(TOKENS, 768, 3072, bn, stages=4, precision="bf16", split=split, epilogue="bias",
                           swizzle="128b", consumers=2, out_dtype="float32")
        tvm.ir.assert_structural_equal(a, b)
    with pytest.raises(ValueError):
        wg.wgmma_gemm(TOKENS, 768, 3072, 128, stages=4, split=8, out_dtype="bfloat16")
    with pytest.raises(ValueError):
        sk.reduce(TOKENS, 768, 8, out_dtype="float16")


def _source(m, n, k, bn, split, epilogue) -> str:
    try:
        return wg.cuda_source(sk.build(m, n, k, bn, stages=4, precision="bf16", split=split, epilogue=epilogue,
                                       swizzle="128b", consumers=2, out_dtype="bfloat16"))
    except tvm.error.TVMError as e:
        if "cuda" in str(e).lower() and "not enabled" in str(e).lower():
            pytest.skip(f"TVM has no CUDA codegen here: {e}")
        raise


CASES = [(TOKENS, 3072, 768, 64, 1, "bias_gelu"), (TOKENS, 768, 3072, 128, 8, "bias_residual"),
         (TOKENS, 768, 3072, 128, 8, "bias")]


@needs_nvcc
@pytest.mark.parametrize("m,n,k,bn,split,epilogue", CASES)
def test_bf16_output_kernels_store_bf16_and_compile_without_spills(m, n, k, bn, split, epilogue, tmp_path):
    from hetpart.kernels import cuda_compile

    src = _source(m, n, k, bn, split, epilogue)
    name = "wgmma_gemm_kernel" if split == 1 else "wgmma_splitk_reduce_kernel"
    assert re.search(rf"{name}\([^)]*nv_bfloat16\* __restrict__ C_ptr", src), src[:2000]
    if split == 1:
        assert "C_ptr[" in src and all("= ((nv_bfloat16)(" in line for line in src.splitlines() if "C_ptr[" in line)
    else:  # four bf16 stored at once
        assert re.search(r"\*\(nv_bfloat164\*\)\(C_ptr \+", src)
        assert re.search(r"wgmma_gemm_kernel\([^)]*float\* __restrict__ P_ptr", src)
    cu = tmp_path / "k.cu"
    cu.write_text(src)
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(cu), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr


@needs_nvcc
def test_the_block_builds_with_bf16_a_and_a_bf16_fc1_store(both_on):
    from onnx_cases import cuda_source

    src = cuda_source(kernels.build(_lowered().module, SM90, cuda_graph=False, options=both_on))
    heads = re.findall(r'extern "C" __global__ void __launch_bounds__\(\d+\) (\w+_wgmma(?:_reduce)?_kernel)\(([^)]*)\)',
                       src)
    gemms = {name: args for name, args in heads if name.endswith("_wgmma_kernel")}
    assert len(gemms) == 4, sorted(gemms)
    assert all("nv_bfloat16* __restrict__ A_ptr" in args for args in gemms.values()), gemms
    bf16_out = [name for name, args in gemms.items() if "nv_bfloat16* __restrict__ C_ptr" in args]
    assert len(bf16_out) == 1 and "fast_erf" in bf16_out[0], bf16_out
    assert "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16" in src


@needs_nvcc
@pytest.mark.parametrize("hidden", [1536, 768])
def test_the_chain_builds(both_on, hidden):
    """Through ``kernels.build``: 1536 -- both GEMMs wgmma kernels, the first storing bf16 with no
    epilogue; 768 -- the split one without an epilogue operand keeps its fused kernel, the build
    compiles."""
    from onnx_cases import cuda_source

    src = cuda_source(kernels.build(_chain_module(hidden).module, SM90, cuda_graph=False, options=both_on))
    heads = dict(re.findall(r'extern "C" __global__ void __launch_bounds__\(\d+\) (\w+_wgmma_kernel)\(([^)]*)\)', src))
    assert len(heads) == (2 if hidden == 1536 else 1), sorted(heads)
    if hidden == 1536:
        assert sum("nv_bfloat16* __restrict__ C_ptr" in args for args in heads.values()) == 1
        assert "mma.sync" not in src


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU: the wgmma kernels run on an sm_90 device only")
def test_the_block_matches_onnxruntime_on_gpu(both_on):
    """All-CUDA bf16, both switches on: the build holds the wgmma kernels and its output is within
    2e-2 (relative to max |y|) of ONNX Runtime float32."""
    from onnx_cases import wgmma_error_on_gpu

    err = wgmma_error_on_gpu(_vit_block(), "cuda=bf16", both_on)
    assert err <= 2e-2, f"max error {err:.2e}"
