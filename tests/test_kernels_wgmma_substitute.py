"""``kernels.wgmma_substitute`` behind ``wgmma_match.WGMMA_GEMM``: ViT-sized dense layers built
by ``kernels.build`` for sm_90 call the hand-written ``wgmma`` GEMM with the switch on, and
are built exactly as before with it off.

Without a GPU: the CUDA C cross-compiled for sm_90 (nvcc, sm_90a when substituted) holds
``wgmma.mma_async`` of the build's precision (tf32 with the activation rounded by
``cvt.rna``; bf16 for a bf16 build), split-K's reduction where ``choose_split`` splits, and
the layout :func:`~hetpart.kernels.wgmma_variant.choose` picks (a bf16 build: 128B-swizzled
descriptors, two consumer warpgroups; a TF32 build: the first spike's unswizzled one); the
Relax ``main`` calls the new kernels on reshaped views with the weight packed ``[N, K]``
(tf32-rounded) and no call of the fused kernel left; off (and on for sm_80), the CUDA C is
byte-identical to a build without the substitution step.  With a GPU (``cuda`` mark, for the
lead): the same layers all-CUDA against ONNX Runtime.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from tvm import tirx

from onnx_cases import cuda_source, projection
from tensor_core_cases import compiled_cuda_library

from hetpart import importer, kernels
from hetpart.importer import low_precision as lp
from hetpart.kernels import weight_prepack, wgmma_layout as lay, wgmma_match as wm, wgmma_substitute as ws
from hetpart.kernels import wgmma_variant as wv
from hetpart.kernels.options import DEFAULT, KernelOptions
from hetpart.targets import cuda_available, cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
QKV = (197, 768, 2304, True)  # ViT-B/16's qkv shape, with the bias + GELU epilogue of fc1
PROJ = (197, 768, 768, False)  # proj: 24 CTAs unsplit, split-K 6


@pytest.fixture
def wgmma_on(monkeypatch):
    """The module switch on, and the KernelOptions made after it (``wgmma`` True by default)."""
    monkeypatch.setattr(wm, "WGMMA_GEMM", True)
    options = KernelOptions()
    assert options.wgmma and not DEFAULT.wgmma  # DEFAULT: the source's switch, at import
    return options


def _module(layer, dtype=None):
    graph = importer.load(projection(*layer))
    if dtype is not None:
        graph = lp.lower_weights(graph, list(graph.kernels), dtype)
    return graph.module


def test_round_tf32_is_nearest_ties_away():
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -10)  # tf32's unit at 1
    x = np.array([1 + 2.0 ** -11, -(1 + 2.0 ** -11), 1 + 2.0 ** -11 - 2.0 ** -23, 3.0, np.inf, -np.inf],
                 np.float32)
    got = ws.round_tf32(x)
    np.testing.assert_array_equal(got, np.array([one + ulp, -(one + ulp), one, 3.0, np.inf, -np.inf], np.float32))
    assert np.isnan(ws.round_tf32(np.array([np.nan], np.float32))[0])


def test_off_returns_the_module_itself():
    mod = weight_prepack.mark_weights(_module(QKV))
    assert ws.substitute(mod, SM90) is mod


def test_on_rewrites_main_with_a_packed_weight(wgmma_on):
    mod = weight_prepack.mark_weights(_module(PROJ))
    assert ws.substitute(mod, SM90) is mod  # DEFAULT (made at import): off, whatever the switch says now
    out = ws.substitute(mod, SM90, wgmma_on)
    names = sorted(gv.name_hint for gv, f in out.functions_items() if isinstance(f, tirx.PrimFunc))
    assert names == ["fused_matmul_add_wgmma", "fused_matmul_add_wgmma_reduce"]  # split-K 6, fused kernel gone
    text = out["main"].script(show_meta=False)
    assert 'R.call_pure_packed("vm.builtin.reshape", x, R.shape([197, 768])' in text  # views, no copy
    assert "(1182, 768)" in text  # partials: 6 x 197 rows
    assert ws.has_substituted(out)
    assert ws.substitute(mod, cuda_tvm_target("sm_80"), wgmma_on) is mod


@needs_nvcc
@pytest.mark.parametrize("dtype,instruction", [(None, "m64n128k8.f32.tf32.tf32"), ("bfloat16", "m64n128k16.f32.bf16.bf16")])
def test_on_the_sm90_build_runs_wgmma(wgmma_on, dtype, instruction):
    src = cuda_source(kernels.build(_module(QKV, dtype), SM90, cuda_graph=False, options=wgmma_on))
    assert f"wgmma.mma_async.sync.aligned.{instruction}" in src
    assert ("cvt.rna.tf32.f32" in src) == (dtype is None)
    assert "mma.sync" not in src
    # the layout wgmma_variant.choose picks: bf16 (f32a) 128B-swizzled, two consumers; tf32 as before
    swizzled = dtype is not None
    descriptors = _descriptors(src)
    want = [SWIZZLE_128B_FIELDS if swizzled else (d[0], 8, 0) for d in descriptors]  # unswizzled: LBO rows x 16 B
    assert descriptors and descriptors == want, descriptors
    assert (lay.ALIGN_PAD in src) == swizzled
    assert _gemm_threads(src) == {256 if swizzled else 128}


_PLAN_128B = lay.PipelinePlan(lay.precision("f32a"), 128, 4, "128b", 2)
SWIZZLE_128B_FIELDS = (*_PLAN_128B.a_fields, _PLAN_128B.tvm_swizzle)
"""(LBO, SBO, TVM's swizzle code) of every swizzled descriptor: (1, 64, 3)."""


def _descriptors(src: str) -> list[tuple[int, int, int]]:
    """(LBO, SBO, swizzle) of every ``encode_matrix_descriptor`` call in the CUDA C ``src``."""
    return [tuple(map(int, c)) for c in re.findall(r"ptx_wgmma_encode_matrix_descriptor\(.*, (\d+), (\d+), (\d+)\);",
                                                     src)]


def _gemm_threads(src: str) -> set[int]:
    """The ``__launch_bounds__`` of the substituted GEMM kernels (not split-K's reductions)."""
    return {int(t) for t, name in re.findall(r"__launch_bounds__\((\d+)\) (\w+)", src)
            if name.endswith("_wgmma_kernel")}


def test_swizzled_fields_are_the_isas():
    assert SWIZZLE_128B_FIELDS == (1, 64, 3)  # LBO 1 (unused), SBO 1024 bytes, TVM's SWIZZLE_128B


@needs_nvcc
def test_a_bf16_mlp_gets_the_rules_variants(wgmma_on):
    """ViT's MLP in a bf16 build (float32 activations: the ``f32a`` family): fc1 (3072 x 768,
    bias + GELU) unsplit and fc2 (768 x 3072) split 8, both bn 128, two consumers, 128B swizzle,
    4 stages, the pair store (``PAIR_STORE_ROWS`` 192 <= 197) -- what :func:`wgmma_variant.choose` says --
    in ``main`` and in the CUDA C."""
    assert wv.choose(197, 3072, 768, "f32a") == wv.Variant("f32a", 128, 4, "128b", 2, 1, store="pairs")
    assert wv.choose(197, 768, 3072, "f32a") == wv.Variant("f32a", 128, 4, "128b", 2, 8, store="pairs")
    graph = importer.load(_mlp())
    graph = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    out = ws.substitute(weight_prepack.mark_weights(graph.module), SM90, wgmma_on)
    text = out["main"].script(show_meta=False)
    assert "(1576, 768)" in text  # fc2's partials: 8 x 197 rows
    names = sorted(gv.name_hint for gv, f in out.functions_items() if isinstance(f, tirx.PrimFunc))
    assert [n.rsplit("_bf16w_", 1)[-1] for n in names] == ["wgmma", "wgmma_reduce", "wgmma"], names
    src = cuda_source(kernels.build(graph.module, SM90, cuda_graph=False, options=wgmma_on))
    descriptors = _descriptors(src)
    assert descriptors and set(descriptors) == {SWIZZLE_128B_FIELDS}
    plan = lay.PipelinePlan(lay.precision("f32a"), 128, 4, "128b", 2)
    assert f"(pad_ptr[0] + {plan.b_base})" in src  # B's tiles after the four stages of 128-row A tiles
    assert _gemm_threads(src) == {256}
    assert "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16" in src and "mma.sync" not in src


def test_packing_a_weight_parameter_rounds_as_the_host_does():
    """The cost model's one-call modules pass weights as parameters: packed by a TE kernel
    (lifted into ``main_transform_params``) that must equal :func:`round_tf32`."""
    import tvm
    from tvm import te

    w = te.placeholder((64, 32), "float32", name="w")
    f = tvm.compile(te.create_prim_func([w, ws._round_tf32_te(w)]), target="llvm")
    x = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    x.flat[:4] = [1 + 2.0 ** -11, -(1 + 2.0 ** -11), np.inf, 65504.0]
    out = tvm.runtime.tensor(np.zeros_like(x))
    f(tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), ws.round_tf32(x))


@needs_nvcc
def test_the_cost_models_one_kernel_module_measures_the_wgmma_kernel(wgmma_on):
    """measured == compiled: ``kernel_bench``'s module (weights as parameters) is substituted
    too, its weight packed once in ``main_transform_params``."""
    from hetpart.costmodel import kernel_bench

    graph = importer.load(projection(*QKV))
    kmod = kernel_bench.single_kernel_module(graph, next(iter(graph.kernels.values())))
    exe = kernel_bench.build_module(kmod.mod, SM90, wgmma_on)
    src = cuda_source(exe)
    assert "wgmma.mma_async" in src and "round_tf32" in src and "mma.sync" not in src


@needs_nvcc
@pytest.mark.parametrize("layer", [QKV, PROJ])
def test_off_the_build_is_byte_identical(monkeypatch, layer):
    """Switch off: the CUDA C is the build's without the substitution step (main's code)."""
    off = cuda_source(kernels.build(_module(layer), SM90, cuda_graph=False))
    monkeypatch.setattr(ws, "substitute", lambda mod, target, options=None: mod)
    assert cuda_source(kernels.build(_module(layer), SM90, cuda_graph=False)) == off
    assert "wgmma" not in off


def _mlp(tokens: int = 197, d: int = 768, ff: int = 3072, scales: tuple = (30, 60)):
    """A transformer's MLP block at batch 1 (default ViT's): fc1 (d -> ff) + bias + erf-GELU,
    fc2 (ff -> d) + bias; the weights standard normal over ``scales``."""
    from onnx import helper

    from onnx_cases import erf_gelu, model

    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((d, ff)).astype(np.float32) / np.float32(scales[0]),
             "b1": rng.standard_normal(ff).astype(np.float32),
             "w2": rng.standard_normal((ff, d)).astype(np.float32) / np.float32(scales[1]),
             "b2": rng.standard_normal(d).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["h"])]
    nodes += erf_gelu("h", "g", inits)
    nodes += [helper.make_node("MatMul", ["g", "w2"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["y"])]
    return model(nodes, [("x", (1, tokens, d), np.float32)], [("y", (1, tokens, d), np.float32)], inits)


@needs_nvcc
def test_a_compiled_partition_calls_wgmma_for_both_layers(wgmma_on, monkeypatch):
    """Through ``compiler.compile`` (sm_90, no GPU): fc1 and fc2 are substituted -- fc2, the
    partition's output, in ``main_dps`` too (written in place): no ``mma.sync`` left."""
    data, _ = compiled_cuda_library(_mlp(), monkeypatch, wgmma_on)
    assert data.count(b"wgmma.mma_async") >= 1 and data.count(b"mma.sync") == 0
    assert b"_wgmma" in data  # the kernel names the GPU test (cubin, no PTX text) looks for


# (tokens, k, n, bias + GELU): the partition's output by a split-K reduction (split 6) and by
# the GEMM itself (split 1: 256 CTAs)
LAST = [PROJ, (4096, 256, 1024, True)]


@needs_nvcc
@pytest.mark.parametrize("layer", LAST)
def test_a_partition_output_layer_is_substituted_in_place(wgmma_on, monkeypatch, layer):
    """measured == compiled for a partition's output kernel: ``main_dps`` calls its last wgmma
    kernel (the reduction, or the GEMM at split 1) with ``call_tir_inplace`` on a ``[M, N]`` view
    of the destination, the library holds no ``mma.sync``, and the cost model's one-kernel
    module of the same kernel is substituted as well."""
    from hetpart.costmodel import kernel_bench

    from hetpart.kernels import wgmma_splitk

    tokens, k, n, _ = layer
    last = "_wgmma_reduce" if wgmma_splitk.choose_split(tokens, n, k, 128, "tf32r", sms=132) > 1 else "_wgmma"
    data, scripts = compiled_cuda_library(projection(*layer), monkeypatch, wgmma_on)
    assert b"wgmma.mma_async" in data and b"mma.sync" not in data
    dps = scripts["main_dps"]
    assert f'R.call_pure_packed("vm.builtin.reshape", y_out, R.shape([{tokens}, {n}])' in dps
    inplace = [line for line in dps.splitlines() if "R.call_tir_inplace(" in line]
    assert len(inplace) == 1 and f"{last}, (" in inplace[0]
    assert all("_wgmma" in line for line in dps.splitlines() if "R.call_tir" in line)  # the fused kernel gone
    graph = importer.load(projection(*layer))
    kmod = kernel_bench.single_kernel_module(graph, next(iter(graph.kernels.values())))
    src = cuda_source(kernel_bench.build_module(kmod.mod, SM90, wgmma_on))
    assert "wgmma.mma_async" in src and "mma.sync" not in src


def _dense_softmax():
    """ViT's qkv-sized dense layer (197 x 768 -> 2304, bias) inside the graph: a softmax after it
    (a reduction: not fused into its epilogue), so the layer is no partition output."""
    from onnx import helper

    from onnx_cases import model

    rng = np.random.default_rng(0)
    inits = {"w": (rng.standard_normal((768, 2304)) / np.sqrt(768)).astype(np.float32),
             "b": rng.standard_normal(2304).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["c"]),
             helper.make_node("Softmax", ["c"], ["y"], axis=-1)]
    return model(nodes, [("x", (1, 197, 768), np.float32)], [("y", (1, 197, 2304), np.float32)], inits)


def _proj_last():
    """ViT's proj (197 x 768 -> 768, bias) alone: the partition's output, by split-K's reduction."""
    return projection(*PROJ)


def _whisper_mlp():
    """Whisper's encoder MLP (corpus ``whisper_encoder``: 1500 tokens, 384 -> 1536 -> 384): in a bf16
    build fc1 unsplit, fc2 split 4 (K = 4 N), bn 128, two consumers, 128B swizzle."""
    return _mlp(1500, 384, 1536, (20, 80))


def _distilbert_proj():
    """DistilBERT's attention output projection (128 tokens, 768 -> 768, bias; split 6 in bf16)."""
    return projection(128, 768, 768, False)


def _fc1_last():
    """A 4096 x 256 -> 1024 dense + bias + erf-GELU alone: the partition's output, by the GEMM (split 1)."""
    return projection(*LAST[1])


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("fmt", [None, "bf16"])
@pytest.mark.parametrize("make", [_mlp, _dense_softmax, _proj_last, _fc1_last, _whisper_mlp, _distilbert_proj])
def test_substituted_layers_match_onnxruntime_on_gpu(wgmma_on, make, fmt):
    """On the GPU with the switch on: the build holds the wgmma kernel (a partition output's
    too: ``main_dps`` writes it in place; bf16: :func:`wgmma_variant.choose`'s 128B-swizzled
    two-consumer variants, split-K where K >= N), and its output is within
    1e-2 (TF32, both operands rounded) / 2e-2 (bf16 weights, issue 17's tolerance) of ONNX Runtime."""
    from onnx_cases import wgmma_error_on_gpu

    err = wgmma_error_on_gpu(make(), f"cuda={fmt}" if fmt else None, wgmma_on)
    assert err <= (2e-2 if fmt else 1e-2), f"{make.__name__} {fmt}: max error {err:.2e}"
