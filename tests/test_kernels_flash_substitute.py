"""``hetpart.kernels.flash_substitute``: a marked attention triple runs as the flash kernel on sm_90.

With ``FLASH_ATTENTION`` on, the sm_90 CUDA C of an all-CUDA ``cuda=bf16`` BERT layer calls the
flash kernel and holds none of the three attention kernels' bodies (Q K^T, softmax, P V); nvcc
compiles it for sm_90a without spills.  Q and V are narrowed to bf16 (passed as they are when
already bf16), K^T narrowed and transposed in one kernel.  A TF32 sm_90, a bf16 sm_80 and a CPU
build of the marked module are the module itself.  Off, nothing is marked and the build is
main's (``tools/kernel_code_hash.py --compare``).
With a GPU (``cuda`` mark): Whisper-shaped BERT layer (1500 tokens, 6 heads of 64) all-CUDA bf16
against ONNX Runtime within 2e-2.

``FLASH_MASKED_ATTENTION``: a DistilBERT (``Where``) and a BERT (additive) masked export's chain
becomes the three narrowings, one ``flash_bias`` kernel (``[b, 1, 1, s]``) and the biased flash
call; GPT-2's causal ``Where`` a ``[1, 1, s, s]`` bias; a ``-1e4`` fill is left; off, masked chains
are left; the sm_90 build compiles without spills.  On a GPU: the masked exports (padding per batch
row, a fully padded row) and a GPT-2 layer against ONNX Runtime.

``FUSE_K_NARROWING`` (off by default): the ViT-style layer's K^T copy and the K narrowing become one
``flash_in_k`` call (one call fewer, the copy gone; DistilBERT-style masked too); the fused PrimFunc
alone on the CPU gives the copy-then-narrowing's bf16 bits on +-Inf, NaN, +-0 and negatives; the
sm_90 build compiles with nvcc for sm_90a without spills; a copy read elsewhere or not a layout copy
is left (and then the module is the switch-off one).  On a GPU: the ViT-style layer against ORT.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import te

from attention_cases import masked_attention, masked_feeds, onnx_attention
from nvcc_cases import assert_no_spills
from onnx_cases import cuda_source, special_tensor, torchvision_attention
from precision_cases import all_on, bert_layer, bf16_matches_ort, feeds_with_zeros

from hetpart import importer, kernels
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision_attention as lpq
from hetpart.kernels import flash_substitute
from hetpart.targets import cpu_tvm_target, cuda_available, cuda_tvm_target

BF16 = Precision(cuda="bf16")
KERNEL = r"void (?:__launch_bounds__\(\d+\) )?{}\("


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setattr(flash_substitute, "FLASH_ATTENTION", True)


def _lowered(m, precision=BF16):
    graph = importer.load(m)
    return graph, lower_plan_weights(graph, all_on(graph, "cuda"), precision)


def _triple_funcs(graph) -> list[str]:
    """PrimFunc names of the Q K^T, softmax and P V kernels of ``graph``'s one attention block."""
    sm = next(k for k in graph.kernels.values() if k.op_class == "softmax")
    (pv,) = graph.tensors[sm.outputs[0]].consumers
    return [graph.kernels[graph.tensors[sm.inputs[0]].producer].func, sm.func, graph.kernels[pv].func]


def test_sm90_bf16_bert_layer_runs_the_flash_kernel(on, tmp_path):
    _, low = _lowered(bert_layer(seq_len=384, hidden=384, heads=6, intermediate=1536))
    funcs = _triple_funcs(low)
    src = cuda_source(kernels.build(low.module, cuda_tvm_target("sm_90"), cuda_graph=False))
    assert re.search(KERNEL.format(r"flash_attention_b1_h6_n384_\w+_kernel"), src)
    for f in funcs:  # none of the three kernels' bodies
        assert not re.search(KERNEL.format(re.escape(f) + r"\w*_kernel"), src), f
    assert "mma_sync_aligned_m16n8k16_row_col_f32_bf16_bf16_f32" in src and "ldmatrix" in src
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc")
    assert_no_spills(src, "90a", tmp_path)


def test_chain_becomes_narrowing_and_one_flash_call(on):
    _, low = _lowered(onnx_attention())
    funcs = _triple_funcs(low)
    out = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))
    names = {gv.name_hint for gv in out.get_global_vars()}
    assert not names & set(funcs)  # the three kernels removed: nothing calls them
    main = out["main"].script()
    assert main.count("flash_attention_b1_h2_n40_") == 1 and main.count("flash_in") == 3
    calls = lambda mod: mod["main"].script().count("R.call_tir(")  # noqa: E731
    assert calls(out) == calls(low.module) - 3 + 4  # three kernels -> three narrowings and the flash kernel


def test_bf16_q_and_v_are_passed_as_they_are(on, monkeypatch):
    monkeypatch.setattr(lpq, "STORE_ATTENTION_OPERANDS_BF16", True)
    _, low = _lowered(onnx_attention())
    main = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))["main"].script()
    assert main.count("flash_attention_b1_h2_n40_") == 1
    assert len(re.findall(r"R\.call_tir\(flash_in\w*,", main)) == 1  # K^T's transpose only


@pytest.mark.parametrize("target", [cuda_tvm_target("sm_80"), cpu_tvm_target()], ids=["sm80", "cpu"])
def test_other_targets_ignore_the_marks(on, target):
    _, low = _lowered(onnx_attention())
    assert flash_substitute.substitute(low.module, target) is low.module


def test_tf32_sm90_build_has_nothing_marked(on):
    _, low = _lowered(onnx_attention(), Precision())
    assert flash_substitute.substitute(low.module, cuda_tvm_target("sm_90")) is low.module


def test_off_substitutes_nothing(monkeypatch):
    monkeypatch.setattr(flash_substitute, "FLASH_ATTENTION", False)
    _, low = _lowered(onnx_attention())
    assert flash_substitute.substitute(low.module, cuda_tvm_target("sm_90")) is low.module


def test_key_split_switch(monkeypatch):
    """Off (0, the default) nothing is split; on, a grid under the switch with two key tiles or more."""
    assert flash_substitute.FLASH_KEY_SPLIT_MAX_CTAS == 0 and not flash_substitute.key_split(1, 6, 1500)
    monkeypatch.setattr(flash_substitute, "FLASH_KEY_SPLIT_MAX_CTAS", 145)
    assert flash_substitute.key_split(1, 6, 1500)  # 24 x 6 = 144 CTAs
    assert not flash_substitute.key_split(1, 12, 1500) and not flash_substitute.key_split(1, 2, 64)


@pytest.mark.parametrize("split", [0, 1000])
def test_key_split_chain_runs_the_split_kernel(on, monkeypatch, split):
    monkeypatch.setattr(flash_substitute, "FLASH_KEY_SPLIT_MAX_CTAS", split)
    _, low = _lowered(onnx_attention(tokens=130))
    out = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))
    (name,) = [gv.name_hint for gv in out.get_global_vars() if gv.name_hint.startswith("flash_attention")]
    assert name.endswith("_ks") == bool(split)
    threads = out[name].script().count("T.launch_thread(\"threadIdx.x\", 256)")
    assert threads == (1 if split else 0)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_whisper_shaped_layer_key_split_on_gpu_bf16(on, monkeypatch):
    """The Whisper-shaped layer with ``FLASH_KEY_SPLIT_MAX_CTAS`` on (144 CTAs < 145: the key-split
    kernel) against ONNX Runtime."""
    monkeypatch.setattr(flash_substitute, "FLASH_KEY_SPLIT_MAX_CTAS", 145)
    m = bert_layer(seq_len=1500, hidden=384, heads=6, intermediate=1536)
    bf16_matches_ort(m, feeds_with_zeros(m), simulate=False)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_whisper_shaped_layer_on_gpu_bf16(on):
    """1500 tokens, 6 heads of 64 (Whisper's encoder), the flash kernel on an H100, against ONNX
    Runtime's float32 within 2e-2 (``bf16_matches_ort``)."""
    m = bert_layer(seq_len=1500, hidden=384, heads=6, intermediate=1536)
    bf16_matches_ort(m, feeds_with_zeros(m), simulate=False)


def test_compile_cross_sm90_runs_the_flash_kernel(on, monkeypatch):
    """Through ``compiler.compile`` (cross-compiled for sm_90, all-CUDA ``cuda=bf16``): the partition
    module handed to the build still carries the marks, and the substitution rewrites its chain."""
    from hetpart import compiler
    from precision_cases import hf_attention

    real, seen = flash_substitute.substitute, []

    def spy(mod, target):
        out = real(mod, target)
        seen.append(sorted(gv.name_hint for gv in out.get_global_vars() if gv.name_hint.startswith("flash_attention")))
        return out

    monkeypatch.setattr(flash_substitute, "substitute", spy)
    graph = importer.load(hf_attention(seq=64, width=384, heads=6))
    compiler.compile(all_on(graph, "cuda"), cuda_arch="sm_90", progress=False, jobs=1, precision="cuda=bf16")
    assert seen and all(len(names) == 1 for names in seen), seen


def test_marked_plan_in_simulation_matches_onnxruntime(on):
    """Simulation builds for the CPU: the marks are ignored and the three kernels compute, within 2e-2."""
    m = bert_layer(seq_len=64, hidden=128, heads=2, intermediate=256)
    bf16_matches_ort(m, feeds_with_zeros(m), simulate=True)


# --- masked chains (FLASH_MASKED_ATTENTION) -----------------------------------------------------
@pytest.fixture
def masked_on(on, monkeypatch):
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", True)


@pytest.mark.parametrize("style", ["where", "add"])
def test_masked_chain_becomes_bias_and_flash_call(masked_on, style):
    """The scores, softmax and P V kernels go; the mask kernel stays; one ``flash_bias`` kernel
    (``[b, 1, 1, s]`` float32, from the scores kernel's mask inputs) feeds the biased flash kernel."""
    _, low = _lowered(masked_attention(style, batch=2, seq=100))
    funcs = _triple_funcs(low)
    out = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))
    assert not {gv.name_hint for gv in out.get_global_vars()} & set(funcs)
    main = out["main"].script()
    assert len(re.findall(r"flash_attention_b2_h2_n100_s\w+_bias2x1x1x100, \(\w+, \w+, \w+, \w+\)", main)) == 1
    assert main.count("R.call_tir(flash_bias") == 1 and "R.Tensor((2, 1, 1, 100), dtype=\"float32\")" in main
    calls = lambda mod: mod["main"].script().count("R.call_tir(")  # noqa: E731
    assert calls(out) == calls(low.module) - 3 + 5  # three kernels -> three narrowings, the bias, flash


def test_masked_chain_with_a_small_fill_is_left(masked_on):
    """``Where(mask, -1e4, scores)``: not a mask the additive form reproduces (a fully masked row
    would differ), so the marked kernels stay as they are."""
    _, low = _lowered(masked_attention("where", fill=-1e4))
    assert flash_substitute.substitute(low.module, cuda_tvm_target("sm_90")) is low.module


def test_masked_off_leaves_masked_chains(monkeypatch):
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", False)
    _, low = _lowered(masked_attention("where"))
    assert flash_substitute.substitute(low.module, cuda_tvm_target("sm_90")) is low.module


def test_sm90_bf16_masked_build_compiles(masked_on, tmp_path):
    _, low = _lowered(masked_attention("add", batch=2, seq=128, heads=12))
    src = cuda_source(kernels.build(low.module, cuda_tvm_target("sm_90"), cuda_graph=False))
    assert re.search(KERNEL.format(r"flash_attention_b2_h12_n128_\w+_bias2x1x1x128_kernel"), src)
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc")
    assert_no_spills(src, "90a", tmp_path)


@pytest.mark.parametrize("style", ["where", "add"])
def test_masked_plan_in_simulation_matches_onnxruntime(masked_on, style):
    """Simulation (CPU): the marks ignored, the three kernels compute, within 2e-2.  (No fully padded
    row here: the unsubstituted chain stores the scores in bf16, where finfo.min rounds to -inf, and
    an all -inf row's softmax is NaN; the flash kernel keeps such a row finite: the GPU test.)"""
    m = masked_attention(style, batch=3, seq=70)
    bf16_matches_ort(m, masked_feeds(3, 70), simulate=True)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("style", ["where", "add"])
@pytest.mark.parametrize("batch,seq,heads", [(1, 128, 12), (4, 130, 2)])
def test_masked_layer_on_gpu_bf16(masked_on, style, batch, seq, heads):
    """DistilBERT / BERT-shaped masked attention all-CUDA bf16 on the GPU (the biased flash kernel)
    against ONNX Runtime's float32 within 2e-2: padding per batch row and a fully padded row."""
    m = masked_attention(style, batch=batch, seq=seq, heads=heads)
    bf16_matches_ort(m, masked_feeds(batch, seq, heads * 64, full_pad_row=batch > 1), simulate=False)


def _gpt2(seq=128, layers=1):
    from hetpart import models

    return models.build("gpt2", True, layers=layers, batch=1, seq_len=seq, hidden=128, heads=2, vocab=1000)


def test_gpt2_causal_where_becomes_a_query_by_key_bias(masked_on):
    """The zoo's GPT-2 (``Where(causal, scores, lowest)``, the constant mask ``[1, 1, s, s]``): the
    bias is ``[1, 1, s, s]`` (it varies over queries, not over batch or heads); its three layers
    read the same mask, so one ``flash_bias`` call feeds the three flash calls."""
    _, low = _lowered(_gpt2(layers=3))
    main = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))["main"].script()
    flash = re.findall(r"R\.call_tir\(flash_attention_b1_h2_n128_\w+_bias1x1x128x128, \(\w+, \w+, \w+, (\w+)\)", main)
    assert len(flash) == 3 and len(set(flash)) == 1 and main.count("R.call_tir(flash_bias") == 1


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_gpt2_layer_on_gpu_bf16(masked_on):
    m = _gpt2(seq=200)
    bf16_matches_ort(m, feeds_with_zeros(m), simulate=False)


# --- K^T's layout copy fused into the K narrowing (FUSE_K_NARROWING) ------------------------------
VIT_KT = "fused_strided_slice1_squeeze1_reshape1_transpose2_reshape2_transpose3"  # K^T of the ViT-style layer


@pytest.fixture
def fuse_k(on, monkeypatch):
    monkeypatch.setattr(flash_substitute, "FUSE_K_NARROWING", True)


def _vit(batch=1):
    return _lowered(torchvision_attention(70, 128, 2, batch=batch))[1]


def _calls(mod) -> list[str]:
    return re.findall(r"R\.call_tir\((\w+),", mod["main"].script())


def test_fuse_k_narrowing_is_off_by_default():
    assert flash_substitute.FUSE_K_NARROWING is False


@pytest.mark.parametrize("batch", [1, 2])
def test_fuse_k_vit_layer_has_one_kernel_fewer_on_the_k_path(on, monkeypatch, batch):
    """ViT-style layer: K^T's slice / head split and the K narrowing become one ``flash_in_k`` call
    reading the head split's output; the copy is gone from the module.  Off: as before."""
    low = _vit(batch)
    off = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))
    monkeypatch.setattr(flash_substitute, "FUSE_K_NARROWING", True)
    out = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))
    assert VIT_KT in _calls(off) and VIT_KT not in _calls(out)
    assert VIT_KT not in {gv.name_hint for gv in out.get_global_vars()}
    assert len(_calls(out)) == len(_calls(off)) - 1 and _calls(out).count("flash_in_k") == 1
    assert sum(c.startswith("flash_in") for c in _calls(out)) == 3  # Q, V narrowings and the fused K


def _run_llvm(func, args):
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    out = func.params[-1]
    tensors = [tvm.runtime.tensor(a) for a in args]
    tensors.append(tvm.runtime.empty([int(d) for d in out.shape], str(out.dtype)))
    lib["main"](*tensors)
    return tensors[-1].numpy()


def _k_copy_name(mod) -> str:
    """The K^T layout copy of ``mod``'s one chain (:func:`flash_substitute._chains` with the module)."""
    roles = {gv.name_hint: flash_substitute._role(f) for gv, f in mod.functions_items()
             if flash_substitute._role(f) is not None}
    forms = {n: flash_substitute.flash_bias.scores_form(mod[n]) for n in roles
             if flash_substitute.BIAS_ATTR in mod[n].attrs}
    (chain,) = flash_substitute._chains(mod["main"], roles, forms, mod).values()
    return chain.k_copy[0]


@pytest.mark.parametrize("style", ["vit", "distilbert"])
def test_fused_k_is_bit_identical_to_copy_then_narrowing(style):
    """The fused PrimFunc (llvm, alone) against the copy then the narrowing on a tensor holding
    negatives, +-0, +-Inf and NaN: the same bf16 bits everywhere."""
    low = _vit(2).module if style == "vit" else _lowered(masked_attention("where", batch=2, seq=70))[1].module
    copy = low[_k_copy_name(low)]
    x = special_tensor([int(d) for d in copy.params[0].shape], seed=3)
    assert np.isnan(x).any() and np.isinf(x).any() and (x < 0).any() and (x == 0).any()
    kt = _run_llvm(copy, [x])
    ph = te.placeholder(kt.shape, "float32", "kt")
    narrow = te.create_prim_func([ph, flash_substitute._narrow_transposed(ph)])
    want = _run_llvm(narrow, [kt])
    got = _run_llvm(flash_substitute.fused_k(copy), [x])
    assert got.shape == want.shape == (2, 2, 70, 64)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


def test_fuse_k_sm90_build_compiles(fuse_k, tmp_path):
    src = cuda_source(kernels.build(_vit(2).module, cuda_tvm_target("sm_90"), cuda_graph=False))
    assert re.search(KERNEL.format(r"flash_in_k\w*_kernel"), src)
    assert not re.search(KERNEL.format(re.escape(VIT_KT) + r"\w*_kernel"), src)
    assert re.search(KERNEL.format(r"flash_attention_b2_h2_n70_\w+_kernel"), src)
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc")
    assert_no_spills(src, "90a", tmp_path)


def test_fuse_k_masked_distilbert_style(masked_on, fuse_k):
    """DistilBERT-style: K^T's head split (a reshape and transpose of the K projection) fuses too."""
    _, low = _lowered(masked_attention("where", batch=2, seq=100))
    off_calls = len(_calls(low.module))
    out = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))
    assert _calls(out).count("flash_in_k") == 1
    assert len(_calls(out)) == off_calls - 3 + 5 - 1


def test_fuse_k_leaves_a_copy_with_another_consumer(fuse_k):
    """K^T is a model output too: the copy stays and K's narrowing is the plain ``flash_in``."""
    from onnx import TensorProto, helper

    m = torchvision_attention(70, 128, 2)
    m.graph.output.append(helper.make_tensor_value_info("k_ht", TensorProto.FLOAT, [1, 2, 64, 70]))
    _, low = _lowered(m)
    out = flash_substitute.substitute(low.module, cuda_tvm_target("sm_90"))
    calls = _calls(out)
    assert VIT_KT in calls and "flash_in_k" not in calls and sum(c.startswith("flash_in") for c in calls) == 3


def test_fuse_k_leaves_a_copy_that_is_not_a_layout_copy(fuse_k, monkeypatch):
    low = _vit().module
    want = flash_substitute.substitute(low, cuda_tvm_target("sm_90"))
    assert VIT_KT not in _calls(want)
    monkeypatch.setattr(flash_substitute, "_layout_copy", lambda func: False)
    out = flash_substitute.substitute(low, cuda_tvm_target("sm_90"))
    assert VIT_KT in _calls(out) and "flash_in_k" not in _calls(out) and len(_calls(out)) == len(_calls(want)) + 1
    monkeypatch.setattr(flash_substitute, "FUSE_K_NARROWING", False)
    assert tvm_ffi.structural_equal(out, flash_substitute.substitute(low, cuda_tvm_target("sm_90")))


def test_layout_copy_detection():
    """A copy of slices, reshapes and transposes is one; a cast (the narrowing), a computing kernel
    (the scores) are not -- the chain is then left to the plain narrowing."""
    low = _vit().module
    assert flash_substitute._layout_copy(low[VIT_KT])
    ph = te.placeholder((1, 2, 64, 70), "float32", "kt")
    assert not flash_substitute._layout_copy(te.create_prim_func([ph, flash_substitute._narrow_transposed(ph)]))
    scores = next(f for gv, f in low.functions_items() if gv.name_hint.startswith("fused_matmul"))
    assert not flash_substitute._layout_copy(scores)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("batch", [1, 3])
def test_fuse_k_vit_layer_on_gpu_bf16(fuse_k, batch):
    """The ViT-style layer (``torchvision_attention``, 197 tokens, 2 heads of 64) all-CUDA bf16 with
    the fused K narrowing, against ONNX Runtime within 2e-2 (inputs with zeros)."""
    m = torchvision_attention(197, 128, 2, batch=batch)
    bf16_matches_ort(m, feeds_with_zeros(m), simulate=False)
