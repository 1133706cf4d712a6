"""``kernels.wgmma_match``: which fused kernels the hand-written ``wgmma`` GEMM could replace.

Every case is a real fused PrimFunc: a small ONNX model imported (weights marked
layout-free as ``kernels.build`` marks them; lowered to bf16 as a bf16 build lowers them),
or a Relax program fused as the importer fuses.  Eligible: ViT-B/16's qkv-sized dense layer
(197 x 768 -> 2304) with a bias, with bias + erf-GELU, without a bias, in a TF32 build
(``tf32r``) and a bf16 one (``f32a``), for sm_90 and sm_90a.  Not: sm_80 targets, TF32 off,
a batched matmul of two activations, a convolution, a symbolic token count, a tanh-GELU or
ReLU epilogue, N not a multiple of 64.  No GPU needed (recognition only).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from tvm import tirx

from onnx_cases import erf_gelu, fused_program, model, projection

from hetpart import importer
from hetpart.importer import low_precision as lp
from hetpart.kernels import weight_prepack, wgmma_match as wm
from hetpart.kernels.options import KernelOptions
from hetpart.targets import cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")
TOKENS, K, N = 197, 768, 2304


def _funcs(m, dtype: str | None = None) -> list:
    """The fused PrimFuncs of ONNX model ``m`` as a build sees them (weights lowered to
    ``dtype``, None: float32; marked layout-free)."""
    graph = importer.load(m)
    if dtype is not None:
        graph = lp.lower_weights(graph, list(graph.kernels), dtype)
    mod = weight_prepack.mark_weights(graph.module)
    return [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]


def _one(m, dtype=None):
    (func,) = _funcs(m, dtype)
    return func


def _dense(tokens: int, k: int, n: int, epilogue: str, seed: int = 0):
    """``y = epilogue(x @ w (+ b))`` on ``[1, tokens, k]``: epilogue one of ``none``, ``bias``,
    ``bias_gelu`` (erf, as exports write it), ``bias_tanh_gelu``, ``bias_relu``."""
    if epilogue in ("bias", "bias_gelu"):
        return projection(tokens, k, n, epilogue == "bias_gelu", seed)
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32),
             "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm" if epilogue != "none" else "y"])]
    if epilogue == "bias_relu":
        nodes += [helper.make_node("Add", ["mm", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    elif epilogue == "bias_tanh_gelu":
        inits.update(c0=np.array(0.7978845608, np.float32), c1=np.array(0.044715, np.float32),
                     one=np.array(1, np.float32), half=np.array(0.5, np.float32), three=np.array(3, np.float32))
        nodes += [helper.make_node("Add", ["mm", "b"], ["c"]), helper.make_node("Pow", ["c", "three"], ["c3"]),
                  helper.make_node("Mul", ["c3", "c1"], ["t1"]), helper.make_node("Add", ["c", "t1"], ["t2"]),
                  helper.make_node("Mul", ["t2", "c0"], ["t3"]), helper.make_node("Tanh", ["t3"], ["t4"]),
                  helper.make_node("Add", ["t4", "one"], ["t5"]), helper.make_node("Mul", ["c", "t5"], ["t6"]),
                  helper.make_node("Mul", ["t6", "half"], ["y"])]
    if epilogue == "none":
        inits.pop("b")
    return model(nodes, [("x", (1, tokens, k), np.float32)], [("y", (1, tokens, n), np.float32)], inits)


# --- eligible ------------------------------------------------------------------------------------
@pytest.mark.parametrize("epilogue", ["bias", "bias_gelu"])
def test_vit_dense_layer_in_a_tf32_build_is_tf32r(epilogue):
    got = wm.match(_one(_dense(TOKENS, K, N, epilogue)), SM90)
    assert got == wm.WgmmaGemm(TOKENS, N, K, "tf32r", epilogue, "KN", activation=0, weight=1, bias=2,
                               weight_dtype="float32", bias_dtype="float32")
    assert got.bn == 128


@pytest.mark.parametrize("epilogue", ["bias", "bias_gelu"])
def test_vit_dense_layer_in_a_bf16_build_is_f32a(epilogue):
    got = wm.match(_one(_dense(TOKENS, K, N, epilogue), "bfloat16"), SM90)
    assert got is not None
    assert (got.m, got.n, got.k, got.precision, got.epilogue, got.weight_layout) == (TOKENS, N, K, "f32a", epilogue, "KN")
    assert (got.weight_dtype, got.bias_dtype) == ("bfloat16", "bfloat16")


def test_dense_without_bias_has_no_epilogue():
    got = wm.match(_one(_dense(TOKENS, K, N, "none")), SM90)
    assert got is not None and got.epilogue is None and got.bias is None and got.precision == "tf32r"


def test_sm_90a_is_eligible_and_n_of_64_takes_the_narrow_tile():
    got = wm.match(_one(_dense(TOKENS, K, 192, "bias")), cuda_tvm_target("sm_90a"))
    assert got is not None and got.n == 192 and got.bn == 64


def test_a_transposed_weight_reaches_the_kernel_folded_as_kn():
    """``x @ W^T`` with W ``[N, K]`` a constant (a Linear's weight): the importer's constant
    folding transposes it before fusion, so the kernel reads ``[K, N]`` like MatMul's."""
    w = np.random.default_rng(0).standard_normal((N, K)).astype(np.float32)

    def body(bb, x):
        from tvm import relax

        return relax.op.matmul(x, relax.op.permute_dims(relax.const(w), [1, 0]))

    mod = weight_prepack.mark_weights(fused_program([("x", (TOKENS, K))], body))
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    got = [wm.match(f, SM90) for f in funcs]
    assert [(g.weight_layout, g.epilogue) for g in got if g is not None] == [("KN", None)]


# --- not eligible --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["sm_80", "sm_89", "sm_100"])
def test_other_archs_are_not_eligible(arch):
    assert wm.match(_one(_dense(TOKENS, K, N, "bias")), cuda_tvm_target(arch)) is None


def test_tf32_off_keeps_float32_weights_off_the_tensor_cores():
    assert wm.match(_one(_dense(TOKENS, K, N, "bias")), SM90, KernelOptions(tf32=False)) is None
    # a bf16 weight does not depend on TF32
    assert wm.match(_one(_dense(TOKENS, K, N, "bias"), "bfloat16"), SM90, KernelOptions(tf32=False)) is not None


@pytest.mark.parametrize("epilogue", ["bias_relu", "bias_tanh_gelu"])
def test_other_epilogues_are_not_eligible(epilogue):
    assert wm.match(_one(_dense(TOKENS, K, N, epilogue)), SM90) is None


def test_n_not_a_multiple_of_64_is_not_eligible():
    assert wm.match(_one(_dense(TOKENS, K, 100, "bias")), SM90) is None


def test_matmul_of_two_activations_is_not_eligible():
    m = model([helper.make_node("MatMul", ["q", "k"], ["y"])],
              [("q", (1, TOKENS, 64), np.float32), ("k", (1, 64, TOKENS), np.float32)],
              [("y", (1, TOKENS, TOKENS), np.float32)])
    assert all(wm.match(f, SM90) is None for f in _funcs(m))


def test_convolution_is_not_eligible():
    w = np.random.default_rng(0).standard_normal((64, 32, 3, 3)).astype(np.float32)
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
              [("x", (1, 32, 16, 16), np.float32)], [("y", (1, 64, 16, 16), np.float32)], {"w": w})
    assert all(wm.match(f, SM90) is None for f in _funcs(m))


def test_symbolic_tokens_are_not_eligible():
    from tvm import relax

    w = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)
    tokens = tirx.Var("tokens", "int64")

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([tokens, K], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.const(w)))
        bb.emit_func_output(out)
    from hetpart.importer.fusion import fuse

    mod = weight_prepack.mark_weights(fuse(bb.get()))
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert funcs and all(wm.match(f, SM90) is None for f in funcs)


def test_the_switch_is_off():
    from hetpart.kernels.options import DEFAULT

    assert wm.WGMMA_GEMM is False and DEFAULT.wgmma is False
