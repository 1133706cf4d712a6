"""Element-wise ``exp``, ``sigmoid`` and ``tanh`` on the CPU (:func:`hetpart.kernels.fast_exp.replace_exp`
in the injective, conv2d and matmul rules) against ONNX Runtime and ``onnx.reference``.

Inputs: negatives, zeros (both signs), +-80, +-1e4, +-inf, NaN, values around exp's
float32 overflow (+-88.8) and subnormal range, a dense grid over [-110, 100] and
random values, in a shape that is no whole number of vectors.

Tolerances:

* against ``onnx.reference`` (numpy's float32 ``exp``): rtol 1e-6 (8 float32 ulps:
  ``fast_exp`` is within 4 of the exact exp, the reference within 1-2, and ``sigmoid``
  adds an add and a division; Tanh rtol 2e-6, 16 ulps: ``1 - exp(-2|x|)`` cancels
  just above ``|x| = 1/16``, below which it is a polynomial); atol 1e-35 -- a sigmoid whose ``exp(-x)`` overflows
  float32 (x < -88.7) is 0, as TVM's libm version gives, where the exact value is a
  subnormal; Elu/Selu atol 1e-6: ``exp(x) - 1`` cancels near 0 (4 ulps of 1).
* against ONNX Runtime: rtol 1e-5, atol 2e-6: ORT's Sigmoid (MLAS) is a rational
  approximation clamped to [-18, 18] with about 5e-8 absolute error, which SiLU
  multiplies by ``|x| <= 18``.
* NaN exactly where the reference has NaN (SiLU of -inf is ``-inf * 0``: NaN in
  hetpart and in the reference, -inf in ONNX Runtime, whose sigmoid of -inf is its
  clamped 1.5e-8 -- that one element is compared with the reference only).
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import helper, numpy_helper

from onnx_cases import assert_matches, reference

from hetpart import kernels, load
from hetpart.backend import forced_plan
from hetpart.bench.cpu_softmax import op_model
from hetpart.kernels.fast_exp import has_exp
from hetpart.targets import cpu_tvm_target

SPECIAL = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, 1.0, -1.0, 80.0, -80.0, 1e4, -1e4, 88.8, -88.8, 87.0,
                    -87.0, -100.0, -17.0, -18.0, -19.0, 1e-30, -1e-30], np.float32)
SHAPE = (1, 4, 33, 31)  # 4092 elements: no whole number of 16-lane vectors per row or in all
REF_ATOL = {"Elu": 1e-6, "Selu": 1e-6}
REF_RTOL = {"Tanh": 2e-6}


def _inputs(shape=SHAPE) -> np.ndarray:
    n = int(np.prod(shape))
    rng = np.random.default_rng(0)
    rand = (rng.standard_normal(n // 2) * 8).astype(np.float32)
    grid = np.linspace(-110.0, 100.0, n - SPECIAL.size - rand.size, dtype=np.float32)
    return np.concatenate([SPECIAL, grid, rand]).astype(np.float32).reshape(shape)


def _hetpart(m: onnx.ModelProto, feeds: dict) -> np.ndarray:
    import hetpart

    graph = load(m)
    with hetpart.Session(hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)) as s:
        return s.run(feeds)["y"]


def _ort(m: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _scheduled(m: onnx.ModelProto) -> list:
    mod = kernels.schedule(load(m).module, cpu_tvm_target())
    return [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]


@pytest.mark.parametrize("op", ["Sigmoid", "SiLU", "Exp", "Tanh", "Elu", "Selu"])
def test_elementwise_exp_matches_onnxruntime_and_the_reference(op):
    x = _inputs()
    m = op_model(op, x.shape)
    got = _hetpart(m, {"x": x})
    with np.errstate(all="ignore"):
        want = reference(m, {"x": x})["y"]
    assert_matches(got, want, rtol=REF_RTOL.get(op, 1e-6), atol=REF_ATOL.get(op, 1e-35), what=f"{op} vs onnx.reference")
    theirs = _ort(m, {"x": x})
    keep = ~((op == "SiLU") & np.isneginf(x))  # ORT: -inf * clamped sigmoid = -inf (docstring)
    assert_matches(got[keep], theirs[keep], rtol=1e-5, atol=2e-6, what=f"{op} vs ONNX Runtime")


@pytest.mark.parametrize("op", ["Sigmoid", "SiLU", "Exp", "Tanh", "Elu"])
def test_injective_rule_leaves_no_libm_exp(op):
    """The scheduled function has no float32 ``T.exp``/``T.sigmoid``/``T.tanh`` left
    (each is one or two scalar libm ``expf`` calls per element in LLVM's code)."""
    funcs = _scheduled(op_model(op, (1, 96, 112, 112)))
    assert [str(f.attrs[kernels.RULE_ATTR]) for f in funcs] == ["CpuInjective"]
    assert not has_exp(funcs[0])


def _asm(mod) -> str:
    out = []
    try:
        out.append(mod.inspect_source("asm"))
    except Exception:  # noqa: BLE001 - a module without assembly (the VM's own)
        pass
    for sub in getattr(mod, "imports", []):
        out.append(_asm(sub))
    return "\n".join(out)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_machine_code_calls_no_expf(op):
    """At the machine-code level: no ``expf`` call (main has 16 per vector of 16 for
    Sigmoid, 32 for Tanh)."""
    target = cpu_tvm_target()
    asm = _asm(kernels.build(load(op_model(op, (1, 96, 112, 112))).module, target).mod)
    assert asm, "no assembly to inspect"
    assert not re.search(r"call\w*\s+\S*expf", asm), re.findall(r"call\w*\s+\S*exp\S*", asm)[:3]


def _conv_silu(c_in: int, c_out: int, k: int, group: int, hw: int, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """``y = SiLU(Conv(x, W, b))`` with weights large enough that the conv's outputs
    reach exp's overflow and underflow."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c_out, c_in // group, k, k)) * 30).astype(np.float32)
    b = (rng.standard_normal(c_out) * 30).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=group, pads=[k // 2] * 4),
             helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv_silu", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c_in, hw, hw])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c_out, hw, hw])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    x = rng.standard_normal((1, c_in, hw, hw)).astype(np.float32)
    x.flat[:2] = [np.nan, 0.0]  # (infinities are the element-wise test's: a conv mixes them into NaN)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), x


CONVS = {  # EfficientNet's SiLU epilogues, by the rule that schedules them
    "3x3 conv (CpuConv2d, output-channel tiles)": ((16, 32, 3, 1, 12), "CpuConv2d"),
    "depthwise 3x3 (CpuConv2d, channel rows)": ((32, 32, 3, 32, 12), "CpuConv2d"),
    "1x1 conv (CpuMatmul)": ((16, 48, 1, 1, 7), "CpuMatmul"),
}


@pytest.mark.parametrize("case", list(CONVS))
def test_conv_silu_epilogue_is_vector_exp_and_matches_onnxruntime(case):
    (c_in, c_out, k, group, hw), rule = CONVS[case]
    m, x = _conv_silu(c_in, c_out, k, group, hw)
    funcs = _scheduled(m)
    assert [str(f.attrs[kernels.RULE_ATTR]) for f in funcs] == [rule]
    assert not has_exp(funcs[0]), f"{case}: a libm exp is left in the epilogue"
    got = _hetpart(m, {"x": x})
    want = _ort(m, {"x": x})
    # The convs sum ~100 terms of size ~100 in another order: absolute rounding ~1e-6 of the largest.
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.nanmax(np.abs(want))), what=case)
