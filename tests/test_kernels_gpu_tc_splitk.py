"""The batch-1 tensor-core split-K rule for matmuls (``GpuTensorCoreSplitK`` in
hetpart/kernels/rules/gpu_tensor_core.py): transformer projections at 128-197 tokens
(DistilBERT / BERT-base at seq 128, ViT-B/16's 197 tokens -- an M no tile divides) and
attention's short-K products.

Without a GPU: which matmuls the rule takes and how it splits them (the corpus shapes,
and those it must leave alone: batch 32 -- a classifier whose rows are the batch --,
convolutions, grids a tile already fills twice over, an M = 1 classifier, TF32 off,
split-K not ``all``, sm_75; a 2-D ``Gemm`` whose rows are tokens, ViT's attention
out-projection as torch exports it, is taken); its schedules of the projection epilogues
(bias, bias + residual, bias + erf-GELU) pass TVM's GPU-code verifier with H200 limits
and launch two kernels (partials on two blocks per SM or more, then their sum through
the epilogue); attention's ``P V`` runs as one un-split kernel; the built CUDA C issues
TF32 ``mma.sync``, stores the partials 4 floats at a time and (with nvcc here) compiles
with hetpart's flags without spilling registers.  With a GPU (``cuda``
mark): those functions built as the compiler builds them, against ONNX Runtime (CPU),
negatives and zeros in the inputs, within TF32's precision (5e-3 of the output's
magnitude).

    PYTHONPATH=. python3 -m pytest tests/test_kernels_gpu_tc_splitk.py -q -m cuda
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import helper
from tvm import s_tir, tirx

from gpu_schedule_cases import H200_LIMITS, grid_blocks
from onnx_cases import cuda_source, erf_gelu, model, onnxruntime_outputs, run_on

from hetpart import kernels, load
from hetpart.kernels.options import KernelOptions
from hetpart.kernels.rules import GpuTensorCoreSplitK
from hetpart.kernels.rules.gpu_tensor_core import MATMUL_SPLIT_TILE, matmul_split_factor, short_k_unsplit
from hetpart.targets import cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")

TF32_RTOL = 5e-3
"""Error bound relative to the output's magnitude (as tests/test_kernels_tensor_core.py)."""

# name -> (tokens, k, n, epilogue): batch-1 projections of the corpus transformers
LAYERS = {
    "bert qkv 128": (128, 768, 768, "bias"),
    "bert out-proj 128 residual": (128, 768, 768, "residual"),
    "bert ffn-down 128 residual": (128, 3072, 768, "residual"),
    "bert ffn-up 128 gelu": (128, 768, 3072, "gelu"),
    "vit qkv 197": (197, 768, 768, "bias"),
    "vit ffn-down 197 residual": (197, 3072, 768, "residual"),
    "convnext stage-4 ffn-up 49 gelu": (49, 768, 3072, "gelu"),
}


def _projection(batch: int, tokens: int, k: int, n: int, epilogue: str, seed: int = 0) -> onnx.ModelProto:
    """``x @ W + b`` on ``[batch, tokens, k]`` then a residual add of ``r``, the erf form
    of GELU (as BERT's and ViT's exports spell it), or nothing."""
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32),
             "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["c"])]
    inputs = [("x", (batch, tokens, k), np.float32)]
    if epilogue == "residual":
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
        inputs.append(("r", (batch, tokens, n), np.float32))
    elif epilogue == "gelu":
        nodes += erf_gelu("c", "y", inits)
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    return model(nodes, inputs, [("y", (batch, tokens, n), np.float32)], inits)


# name -> (heads, tokens, head_dim): attention's probabilities times V at batch 1 (K = tokens)
ATTENTION = {
    "bert attention PV 128": (12, 128, 64),
    "vit attention PV 197": (12, 197, 64),
}


def _attention_pv(heads: int, tokens: int, dim: int) -> onnx.ModelProto:
    """``P @ V`` of two inputs, ``[1, heads, tokens, tokens] x [1, heads, tokens, dim]``."""
    return model([helper.make_node("MatMul", ["p", "v"], ["y"])],
                 [("p", (1, heads, tokens, tokens), np.float32), ("v", (1, heads, tokens, dim), np.float32)],
                 [("y", (1, heads, tokens, dim), np.float32)])


def _func(m: onnx.ModelProto) -> tirx.PrimFunc:
    funcs = [f for gv, f in load(m).module.functions_items()
             if isinstance(f, tirx.PrimFunc) and "matmul" in gv.name_hint]
    assert len(funcs) == 1, "matmul, bias and epilogue are one fused function"
    return funcs[0]


def _apply(func, options=KernelOptions()):
    with SM90:
        return GpuTensorCoreSplitK(options).apply(func, SM90)


def _feeds(m: onnx.ModelProto, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in m.graph.input:
        x = rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        x.flat[::7] = 0.0  # zeros beside the negatives
        feeds[i.name] = x
    return feeds


def test_split_factors_of_the_corpus_projections():
    # (batch, M, N, K) -> S; 32x64 tiles: BERT's 48, ViT's 84, ConvNeXt stage 4's 96
    assert matmul_split_factor(1, 128, 768, 768) == 6  # 288 blocks, chunks of 4 slices (128 of K)
    assert matmul_split_factor(1, 128, 768, 3072) == 6  # 288 blocks, chunks of 512
    assert matmul_split_factor(1, 197, 768, 768) == 4  # 336 blocks (7 row tiles: 224 rows, 197 real)
    assert matmul_split_factor(1, 197, 768, 3072) == 4
    assert matmul_split_factor(1, 49, 3072, 768) == 3  # 288 blocks
    assert matmul_split_factor(1, 128, 3072, 768) == 2  # FFN up: 192 tiles (1.45 per SM) -> 384, chunks of 12
    # Left alone: a tile grid with two blocks per SM (ViT's FFN up at 197 tokens: 336 tiles; batch 32),
    # an M = 1 classifier, attention's K of 64 / 128 (2-4 slices), split-K not "all", a split
    # that stays under a block per SM (T5-small's 512 x 512 at 128 tokens: 32 tiles x 4 chunks
    # = 128 blocks; gpu_splitk_fine's 256 SIMT blocks keep it).
    assert matmul_split_factor(1, 128, 512, 512) == 1
    assert matmul_split_factor(1, 197, 3072, 768) == 1
    assert matmul_split_factor(1, 4096, 768, 768) == 1
    assert matmul_split_factor(1, 1, 1000, 768) == 1
    assert matmul_split_factor(12, 128, 128, 64) == 1
    assert matmul_split_factor(12, 128, 64, 128) == 1
    assert matmul_split_factor(1, 128, 768, 768, KernelOptions(split_k="conv")) == 1
    # A smaller GPU needs fewer chunks; a GPU the tiles fill twice over, none.
    assert matmul_split_factor(1, 128, 768, 768, KernelOptions(sm_count=66)) == 3
    assert matmul_split_factor(1, 128, 768, 768, KernelOptions(sm_count=24)) == 1


def test_short_k_matmuls_under_a_block_per_sm_run_unsplit():
    # attention's P V: (batch = heads, M = tokens, N = head dim, K = tokens)
    assert short_k_unsplit(12, 128, 64, 128)  # 48 tiles, 4 K slices
    assert short_k_unsplit(12, 197, 64, 197)  # 84 tiles, 7 K slices (K padded to 224)
    assert matmul_split_factor(12, 197, 64, 197) == 1  # 7 slices: no chunks of 4
    assert short_k_unsplit(12, 128, 128, 64)  # Q K^T at 128 tokens: 96 tiles, 2 K slices
    assert not short_k_unsplit(12, 197, 197, 64)  # ViT's Q K^T: 336 tiles, GpuTensorCoreGemm's
    assert not short_k_unsplit(1, 128, 768, 768)  # long K: split instead
    assert not short_k_unsplit(1, 16, 64, 128)  # under a tile's 32 rows
    assert not short_k_unsplit(12, 128, 64, 128, KernelOptions(sm_count=40))  # 48 tiles fill 40 SMs


@pytest.mark.parametrize("case", list(ATTENTION))
def test_attention_pv_at_batch_1_runs_unsplit_on_tensor_cores(case):
    m = _attention_pv(*ATTENTION[case])
    (func,) = [f for f in load(m).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    sch = _apply(func)
    assert sch is not None
    scheduled = sch.mod["main"]
    assert s_tir.analysis.verify_gpu_code(scheduled, H200_LIMITS)
    heads, tokens, dim = ATTENTION[case]
    assert grid_blocks(scheduled) == [heads * math.ceil(tokens / 32) * math.ceil(dim / 64)]  # one kernel, no partials
    assert "mma.sync.aligned.m16n8k8" in cuda_source(kernels.build(load(m).module, SM90, cuda_graph=False))


@pytest.mark.parametrize("case", list(LAYERS))
def test_batch_1_projections_split_on_tensor_cores_with_a_block_per_sm(case):
    tokens, k, n, epilogue = LAYERS[case]
    func = _func(_projection(1, tokens, k, n, epilogue))
    sch = _apply(func)
    assert sch is not None
    scheduled = sch.mod["main"]
    assert s_tir.analysis.verify_gpu_code(scheduled, H200_LIMITS)
    partials, summed = grid_blocks(scheduled)
    tile = MATMUL_SPLIT_TILE
    assert partials == math.ceil(tokens / tile.m) * math.ceil(n / tile.n) * matmul_split_factor(1, tokens, n, k)
    assert partials >= 132 and summed * 256 >= tokens * n


def _gemm_2d(rows: int, k: int, n: int) -> onnx.ModelProto:
    """ONNX ``Gemm`` of ``[rows, k]`` by a ``[k, n]`` weight, with a bias."""
    rng = np.random.default_rng(0)
    return model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])], [("x", (rows, k), np.float32)],
                 [("y", (rows, n), np.float32)],
                 {"w": (rng.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32),
                  "b": rng.standard_normal(n).astype(np.float32)})


def test_rows_lead_the_output_only_for_token_matrices_not_a_batch_32_classifier():
    # torchvision ViT's attention out-projection as torch exports nn.MultiheadAttention:
    # [L * N, E] at batch 1 -- its leading extent is the 197 tokens: taken.
    assert _apply(_func(_gemm_2d(197, 768, 768))) is not None
    # ResNet-50's classifier at batch 32: 32 rows, the batch -- keeps its rule (GpuSplitKGemm).
    assert _apply(_func(_gemm_2d(32, 2048, 1000))) is None


def test_rule_declines_batch_32_convolutions_and_the_switches():
    tokens, k, n, epilogue = LAYERS["bert qkv 128"]
    assert _apply(_func(_projection(32, tokens, k, n, epilogue))) is None  # 4096 rows: GpuTensorCoreGemm's
    one = _func(_projection(1, tokens, k, n, epilogue))
    assert _apply(one, KernelOptions(tf32=False)) is None
    assert _apply(one, KernelOptions(split_k="conv")) is None
    assert _apply(one, KernelOptions(split_k="off")) is None
    with cuda_tvm_target("sm_75"):
        assert GpuTensorCoreSplitK().apply(one, cuda_tvm_target("sm_75")) is None  # no TF32 mma
    conv = model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])],
                 [("x", (1, 768, 8, 16), np.float32)], [("y", (1, 768, 8, 16), np.float32)],
                 {"w": np.ones((768, 768, 1, 1), np.float32)})
    (cfunc,) = [f for f in load(conv).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert _apply(cfunc) is None  # convolutions keep their rules


def test_rule_is_chosen_for_the_projections_and_builds_tf32_mma_in_two_kernels():
    tokens, k, n, epilogue = LAYERS["vit ffn-down 197 residual"]
    mod = load(_projection(1, tokens, k, n, epilogue)).module
    assert set(kernels.rules_applied(kernels.schedule(mod, SM90)).values()) == {"GpuTensorCoreSplitK"}
    source = cuda_source(kernels.build(mod, SM90, cuda_graph=True))
    assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in source
    names = set(re.findall(r'extern "C" __global__ void __launch_bounds__\(\d+\) (\w+)\(', source))
    assert len(names) == 2, names  # partial products, then sum + epilogue (the weight packed at compile time)
    # Partials stored along the output's columns, 4 floats at a time (coalesced for the sum kernel).
    assert re.search(r"\*\(float4\*\)\(\w*_rf_ptr \+", source)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_kernels_compile_with_hetparts_nvcc_flags_without_spilling(tmp_path):
    # ViT's FFN down-projection: split in 4, rows past 197 zero-filled, both kernels.
    from hetpart.kernels import cuda_compile

    tokens, k, n, epilogue = LAYERS["vit ffn-down 197 residual"]
    m = _projection(1, tokens, k, n, epilogue)
    (tmp_path / "k.cu").write_text(cuda_source(kernels.build(load(m).module, SM90, cuda_graph=False)))
    cmd = cuda_compile.nvcc_command("90", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert len(spills) == 2 and set(spills) == {"0"}, done.stderr


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(ATTENTION))
def test_attention_pv_against_onnxruntime_on_the_gpu(case):
    m = _attention_pv(*ATTENTION[case])
    feeds = _feeds(m)
    feeds["p"] = np.abs(feeds["p"])  # probabilities: non-negative, zeros kept
    _split_rule_matches_onnxruntime_on_the_gpu(m, feeds, case)


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(LAYERS))
def test_against_onnxruntime_on_the_gpu(case):
    tokens, k, n, epilogue = LAYERS[case]
    _split_rule_matches_onnxruntime_on_the_gpu(_projection(1, tokens, k, n, epilogue), label=case)


@pytest.mark.cuda
def test_token_rows_gemm_against_onnxruntime_on_the_gpu():
    # ViT's attention out-projection as nn.MultiheadAttention exports it
    _split_rule_matches_onnxruntime_on_the_gpu(_gemm_2d(197, 768, 768), label="token rows")


def _split_rule_matches_onnxruntime_on_the_gpu(m, feeds=None, label=""):
    """Every function of ``m`` takes GpuTensorCoreSplitK, and its output ``y`` on the GPU
    is within TF32_RTOL of the output's magnitude from ONNX Runtime (``feeds``: default
    :func:`_feeds`, negatives and zeros)."""
    assert set(kernels.rules_applied(kernels.schedule(load(m).module, cuda_tvm_target())).values()) \
        == {"GpuTensorCoreSplitK"}
    feeds = _feeds(m) if feeds is None else feeds
    (want,) = onnxruntime_outputs(m, feeds)
    got = run_on(m, "cuda", feeds, simulate=False)["y"]
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < TF32_RTOL, f"{label}: max error {err:.2e} of the output's magnitude"
