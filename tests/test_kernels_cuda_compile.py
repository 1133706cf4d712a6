"""hetpart compiles TVM's CUDA C with IEEE math (:mod:`hetpart.kernels.cuda_compile`).

TVM 0.27's own compile callback passes ``--use_fast_math``: ``powf`` became
``__powf`` = exp2(y * log2(x)), NaN for every negative base, so GPT-2 (``x**3`` in
gelu_new), T5 and LLaMA-style models (``x**2`` in RMSNorm) gave all-NaN outputs on
the GPU.  CI checks the flags and that hetpart's callback is the one TVM calls (and
with a CUDA compiler on the machine, the PTX); the ``cuda`` tests run ``Pow`` and the
two blocks on a real GPU against ``onnx.reference``:

    PYTHONPATH=. python3 -m pytest tests/test_kernels_cuda_compile.py -q -m cuda
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tvm_ffi
from onnx import helper

from onnx_cases import accept_ieee_pow, assert_matches, model, reference, run_on

from hetpart.kernels import cuda_compile


def test_compile_options_have_no_fast_math_and_keep_tvms_other_flags():
    nvrtc = cuda_compile.nvrtc_options("sm_90", ["/cuda/include"])
    nvcc = cuda_compile.nvcc_command("90", "fatbin", "k.cu", "k.fatbin")
    for flags in (nvrtc, nvcc):
        assert not cuda_compile.FAST_MATH_FLAGS & set(flags), flags
        assert not any("fast_math" in f or "fast-math" in f for f in flags), flags
        assert set(cuda_compile.IEEE_FLAGS) <= set(flags)
    # Every -U flag TVM's compiler passes (half/bfloat16 operators), hetpart passes too:
    # a drift check against the installed TVM's source.
    import tvm.support.nvcc as tvm_nvcc

    tvm_macros = set(re.findall(r'"(-U__[A-Z0-9_]+__)"', Path(tvm_nvcc.__file__).read_text()))
    assert len(tvm_macros) >= 6
    assert tvm_macros <= set(nvrtc) and tvm_macros <= set(nvcc), tvm_macros - set(nvrtc) - set(nvcc)


def test_nvrtc_source_defines_the_tensor_map_type_only_where_code_names_it():
    """NVRTC does not read cuda.h: a TMA kernel's ``CUtensorMap`` parameters get cuda.h's layout (as
    TVM's own NVRTC path gives them, a drift check against its source); any other code is compiled
    exactly as before (prelude, then the code)."""
    import tvm.support.nvcc as tvm_nvcc

    plain = 'extern "C" __global__ void k(float* x) { x[0] = INFINITY; }'
    assert cuda_compile.nvrtc_source(plain) == cuda_compile._NVRTC_PRELUDE + plain  # noqa: SLF001
    tma = 'extern "C" __global__ void k(float* x, const __grid_constant__ CUtensorMap tma_a) {}'
    src = cuda_compile.nvrtc_source(tma)
    assert src.endswith(tma) and src.index("struct alignas(64) CUtensorMap_st {") < src.index(tma)
    assert "unsigned long long opaque[16];" in src and "typedef struct CUtensorMap_st CUtensorMap;" in src
    tvm_text = Path(tvm_nvcc.__file__).read_text()
    assert all(line in tvm_text for line in ("struct alignas(64) CUtensorMap_st", "unsigned long long opaque[16]",
                                             "typedef struct CUtensorMap_st CUtensorMap;"))


def test_tvms_cuda_compile_callback_is_hetparts():
    import hetpart.kernels  # noqa: F401 - installs the callback

    assert cuda_compile.is_installed()
    current = tvm_ffi.get_global_func(cuda_compile.CALLBACK)
    assert current.same_as(tvm_ffi.get_global_func(cuda_compile.CALLBACK))


def test_build_reinstalls_the_callback_when_someone_replaced_it():
    import tvm

    from hetpart import importer, kernels

    graph = importer.load(model([helper.make_node("Pow", ["x", "c"], ["y"])], [("x", [8], np.float32)],
                                [("y", [8], np.float32)], {"c": np.float32(3)}))
    tvm_ffi.register_global_func(cuda_compile.CALLBACK, lambda code: b"", override=True)
    assert not cuda_compile.is_installed()
    kernels.build(graph.module, tvm.target.Target({"kind": "cuda", "arch": "sm_90", "host": {"kind": "llvm"}}))
    assert cuda_compile.is_installed()


def _pow_source() -> str:
    """The CUDA C TVM generates for ``b = a ** 3`` (cross-compiled: no GPU needed)."""
    import tvm
    from tvm.script import tirx as T

    @T.prim_func
    def cube(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "float32")):
        for i in T.thread_binding(64, "threadIdx.x"):
            b[i] = T.pow(a[i], T.float32(3))

    lib = tvm.tirx.build(cube, target=tvm.target.Target({"kind": "cuda", "arch": "sm_90", "host": {"kind": "llvm"}}))
    return lib.imports[0].inspect_source()


@pytest.mark.skipif(shutil.which("nvcc") is None and not cuda_compile.nvrtc_available(),
                    reason="no CUDA compiler (nvcc or NVRTC) on this machine")
def test_powf_compiles_to_an_exact_power_not_exp2_of_log2():
    source = _pow_source()
    assert "powf" in source
    ptx = cuda_compile.compile_source(source, arch="90", fmt="ptx").decode()
    # fast math's __powf is lg2.approx then ex2.approx: NaN for a negative base
    assert "lg2.approx" not in ptx, "powf was compiled as exp2(y*log2(x))"


# --- on a real GPU ------------------------------------------------------------------
EXPONENTS = [2.0, 3.0, -1.0, 0.0, 0.5, -2.5, 1.0, 4.0, -2.0, -3.0, 5.0]


def _pow_model(n: int):
    """``pow_xy = Pow(x[n,1], y[1,E])`` (every exponent at once) and, as exporters
    write it, ``Pow(x, c)`` with a constant exponent for 2, 3 and 0.5."""
    consts = {f"c{i}": np.float32(c) for i, c in enumerate([2.0, 3.0, 0.5])}
    nodes = [helper.make_node("Pow", ["x", "y"], ["pow_xy"])]
    nodes += [helper.make_node("Pow", ["x", name], [f"pow_{name}"]) for name in consts]
    outputs = [("pow_xy", [n, len(EXPONENTS)], np.float32)] + [(f"pow_{c}", [n, 1], np.float32) for c in consts]
    return model(nodes, [("x", [n, 1], np.float32), ("y", [1, len(EXPONENTS)], np.float32)], outputs, consts)


def _pow_feeds(n: int):
    from onnx_cases import special_values

    x = np.concatenate([special_values(21), np.linspace(-3, 3, n - 21, dtype=np.float32)])
    return {"x": x.reshape(n, 1), "y": np.array([EXPONENTS], dtype=np.float32)}


def _gelu_new_model(n: int):
    """GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))."""
    c = {"three": np.float32(3), "k": np.float32(0.044715), "s": np.float32(math.sqrt(2 / math.pi)),
         "one": np.float32(1), "half": np.float32(0.5)}
    nodes = [helper.make_node("Pow", ["x", "three"], ["x3"]), helper.make_node("Mul", ["x3", "k"], ["kx3"]),
             helper.make_node("Add", ["x", "kx3"], ["inner"]), helper.make_node("Mul", ["inner", "s"], ["si"]),
             helper.make_node("Tanh", ["si"], ["t"]), helper.make_node("Add", ["t", "one"], ["t1"]),
             helper.make_node("Mul", ["x", "t1"], ["xt"]), helper.make_node("Mul", ["xt", "half"], ["y"])]
    return model(nodes, [("x", [n, 64], np.float32)], [("y", [n, 64], np.float32)], c)


def _rmsnorm_model(n: int, d: int = 64):
    """LLaMA/T5's RMSNorm: x / sqrt(mean(x**2, -1) + eps) * w."""
    c = {"two": np.float32(2), "eps": np.float32(1e-6), "w": np.linspace(0.5, 1.5, d, dtype=np.float32)}
    nodes = [helper.make_node("Pow", ["x", "two"], ["x2"]),
             helper.make_node("ReduceMean", ["x2"], ["ms"], axes=[-1], keepdims=1),
             helper.make_node("Add", ["ms", "eps"], ["mse"]), helper.make_node("Sqrt", ["mse"], ["rms"]),
             helper.make_node("Div", ["x", "rms"], ["xn"]), helper.make_node("Mul", ["xn", "w"], ["y"])]
    return model(nodes, [("x", [n, d], np.float32)], [("y", [n, d], np.float32)], c)


def _block_feeds(n: int, d: int = 64):
    return {"x": np.random.default_rng(0).uniform(-3, 3, (n, d)).astype(np.float32)}


def _ieee_pow(want: dict, got: dict, feeds: dict) -> dict:
    """onnx.reference's Pow, with (-inf) ** y for a positive non-integer y allowed to be
    +inf (IEEE 754, CUDA, onnxruntime) as well as NaN (numpy): see accept_ieee_pow."""
    consts = {"pow_c0": 2.0, "pow_c1": 3.0, "pow_c2": 0.5}
    return {name: accept_ieee_pow(w, got[name], feeds["x"], feeds["y"] if name == "pow_xy" else consts[name])
            for name, w in want.items()}


CASES = {
    "pow": (lambda: _pow_model(256), lambda: _pow_feeds(256), dict(rtol=1e-5, atol=1e-6), _ieee_pow),
    "gelu_new": (lambda: _gelu_new_model(32), lambda: _block_feeds(32), dict(rtol=1e-5, atol=1e-6), None),
    "rmsnorm": (lambda: _rmsnorm_model(32), lambda: _block_feeds(32), dict(rtol=1e-5, atol=1e-5), None),
}


def _run_case(case: str, *, simulate: bool):
    make_model, make_feeds, tol, fix = CASES[case]
    m, feeds = make_model(), make_feeds()
    want, got = reference(m, feeds), run_on(m, "cuda", feeds, simulate=simulate)
    return got, fix(want, got, feeds) if fix else want, tol


@pytest.mark.parametrize("case", sorted(CASES))
def test_simulated_cuda_rules_match_onnx_reference(case):
    """The same models on the GPU rules, simulated (CPU execution): what CI can check."""
    got, want, tol = _run_case(case, simulate=True)
    for name, w in want.items():
        assert_matches(got[name], w, what=f"{case}:{name}", **tol)


@pytest.mark.cuda
@pytest.mark.parametrize("case", sorted(CASES))
def test_all_cuda_on_a_real_gpu_matches_onnx_reference(case):
    got, want, tol = _run_case(case, simulate=False)
    for name, w in want.items():
        assert_matches(got[name], w, what=f"{case}:{name}", **tol)
