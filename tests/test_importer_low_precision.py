"""Weights stored in bf16/fp16 per kernel (:mod:`hetpart.importer.low_precision`).

What is converted (contraction and gather weights of at least 16 elements, finite in
the format), what is kept (small constants, float16 overflows, norms' parameters),
that the op graph keeps its kernels and boundaries, and that the built modules hold
half the weight bytes -- on the CPU, and for CUDA through the tensor-core rule, whose
weight packing must not widen a bf16 weight back to float32 (cross-compiled, no GPU;
tests/test_kernels_tensor_core_low_precision.py checks the packed values).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tvm
from onnx import helper
from tvm import relax

from hetpart import importer, kernels
from hetpart.importer import low_precision as lp
from hetpart.kernels import cuda_compile, weight_prepack
from hetpart.kernels.analysis import RULE_ATTR
from hetpart.targets import cpu_tvm_target, cuda_tvm_target

from onnx_cases import model


def _const(array):
    return relax.const(tvm.runtime.tensor(np.asarray(array)))


def test_convertible_weights():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((4, 8)).astype(np.float32)
    assert lp.convertible(_const(big), "bfloat16") and lp.convertible(_const(big), "float16")
    assert not lp.convertible(_const(big[:1, :4]), "bfloat16"), "under MIN_ELEMENTS stays float32"
    assert not lp.convertible(_const(big.astype(np.int32)), "bfloat16")
    mask = np.full((4, 8), -1e9, np.float32)
    assert lp.convertible(_const(mask), "bfloat16"), "bf16 has float32's range"
    assert not lp.convertible(_const(mask), "float16"), "-1e9 overflows float16: kept"


def test_to_low_rounds_to_nearest():
    x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 3.0e-3], np.float32)
    got = lp.to_low(x, "bfloat16").astype(np.float32)
    np.testing.assert_array_equal(got[:3], [1.0, 1.0, 1.0 + 2 ** -6])  # ties to even, then up
    assert abs(got[3] - x[3]) <= x[3] * 2 ** -8


def _gemm(m=1024, k=256, n=1024):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((k, n)) / 16).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    g = importer.load(model([helper.make_node("MatMul", ["x", "w"], ["y0"]),
                             helper.make_node("Add", ["y0", "b"], ["y1"]),
                             helper.make_node("LayerNormalization", ["y1", "gamma", "beta"], ["y"], axis=-1)],
                            [("x", [m, k], np.float32)], [("y", [m, n], np.float32)],
                            {"w": w, "b": b, "gamma": np.ones(n, np.float32), "beta": np.zeros(n, np.float32)}))
    return g, w


def test_graph_keeps_kernels_and_boundaries_and_halves_weights():
    graph, w = _gemm(64, 32, 64)
    low = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    assert list(low.kernels) == list(graph.kernels)
    assert {n: (t.shape, t.dtype) for n, t in low.tensors.items()} == \
        {n: (t.shape, t.dtype) for n, t in graph.tensors.items()}
    matmul = next(k for k in graph.kernels.values() if k.op_class == "matmul")
    norm = next(k for k in graph.kernels.values() if k.op_class == "norm")
    assert low.kernels[matmul.id].param_bytes == matmul.param_bytes // 2
    assert low.kernels[norm.id].param_bytes == norm.param_bytes, "norm parameters stay float32"
    assert lp.param_bytes(graph, "bfloat16") == {matmul.id: matmul.param_bytes // 2}
    assert lp.with_weight_bytes(graph, "bfloat16").kernels[matmul.id].param_bytes == matmul.param_bytes // 2
    call = lp.kernel_calls(low)[matmul.id]
    assert {str(a.value.dtype) for a in call.args[1].fields if isinstance(a, tvm.ir.GenericConst)} == {"bfloat16"}
    assert graph.module["main"].same_as(graph.module["main"]) and lp.kernel_calls(graph)[matmul.id] is not call
    assert lp.lower_weights(graph, [], "bfloat16") is graph
    assert lp.lower_weights(graph, list(graph.kernels), "float32") is graph


def test_cpu_build_holds_bf16_weights_and_computes_with_them():
    graph, w = _gemm(16, 32, 64)
    low = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    x = np.random.default_rng(2).standard_normal((16, 32)).astype(np.float32)
    outs = []
    for g in (graph, low):
        vm = relax.VirtualMachine(kernels.build(g.module, cpu_tvm_target()), tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    assert not np.array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=2e-2 * np.abs(outs[0]).max())


def _constants(mod) -> dict[str, int]:
    by: dict[str, int] = {}
    seen: set = set()

    def visit(e):
        if isinstance(e, tvm.ir.GenericConst) and e not in seen:
            seen.add(e)
            by[str(e.value.dtype)] = by.get(str(e.value.dtype), 0) + e.value.numpy().nbytes

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return by


def test_tensor_core_rule_takes_bf16_weights_and_keeps_them_bf16():
    """The TF32 tensor-core rule schedules the widened matmul (bf16 values are exact in
    TF32), and packs the weight in bf16 (widened after the packing): the GPU holds bf16."""
    target = cuda_tvm_target("sm_90")
    graph, w = _gemm()
    low = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    scheduled = kernels.schedule(weight_prepack.mark_weights(low.module), target)
    rules = {gv.name_hint: str(f.attrs.get(RULE_ATTR)) for gv, f in scheduled.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and RULE_ATTR in f.attrs}
    assert [r for n, r in rules.items() if "matmul" in n] == ["GpuTensorCoreGemm"], rules
    folded = weight_prepack.split_and_fold(scheduled, tvm.target.Target(weight_prepack.HOST_TARGET))
    held = _constants(folded)
    n = w.shape[1]
    assert held == {"bfloat16": (w.nbytes + 4 * n) // 2, "float32": 2 * 4 * n}, held  # norm's gamma, beta


@pytest.mark.skipif(shutil.which("nvcc") is None and not cuda_compile.nvrtc_available(),
                    reason="no CUDA compiler (nvcc or NVRTC) on this machine")
def test_bf16_tensor_core_kernel_compiles_for_sm90(without_wgmma):
    """The mma.sync rule's bf16 kernel (the wgmma GEMM, built for sm_90a, has its own tests)."""
    graph, _ = _gemm()
    low = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    ex = kernels.build(low.module, cuda_tvm_target("sm_90"), cuda_graph=False)
    sources = [s for s in _sources(ex.mod) if "__global__" in s]
    assert sources and "nv_bfloat16" in sources[0] and "mma" in sources[0]
    assert cuda_compile.compile_source(sources[0], arch="90", fmt="ptx")


def _sources(mod) -> list[str]:
    out = []
    for imp in mod.imports:
        try:
            out.append(imp.inspect_source())
        except Exception:  # noqa: BLE001 - modules without source (the host's)
            pass
        out += _sources(imp)
    return out


def test_converted_kernels_replace_their_float32_functions():
    """The module keeps no PrimFunc that no kernel calls (a build schedules every one)
    and the kernels name the functions they call."""
    graph, _ = _gemm(64, 32, 64)
    low = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    prims = {gv.name_hint for gv, f in low.module.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert prims == {k.func for k in low.kernels.values()}
    matmul = next(k for k in graph.kernels.values() if k.op_class == "matmul")
    assert low.kernels[matmul.id].func == f"{matmul.func}_bf16w"
    assert low.kernels[matmul.id].signature != matmul.signature
