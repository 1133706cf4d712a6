"""The VNNI int8 matmul rule's fused epilogue (:mod:`hetpart.kernels.rules.cpu_int8_matmul`)
on what ONNX Runtime's ``quantize_dynamic`` makes of a transformer's MLP:
``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scales) -> Add(bias) -> GELU``.

* GPT-2's ``gelu_new`` (``Pow(x, 3)``, ``Tanh``): no ``T.pow`` and no ``T.tanh`` left in
  the scheduled kernel -- LLVM made each a scalar libm call per element in the
  vectorised write-back (GPT-2 small's ``[128, 768] x [768, 3072]`` + GELU: 7.8 ms
  against 0.5 ms without the GELU, 2 threads);
* BERT's erf GELU (``x / sqrt 2`` read three times): the whole epilogue in the tile's
  write-back, no float tensor of the product's size stored and read back;
* the values against ONNX Runtime's int8 run of the same file, on inputs with negatives
  and zeros (structure on a fixed VNNI target; values on the host where it has VNNI).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi

import hetpart
from hetpart import kernels, load
from hetpart.kernels.rules.cpu_int8_matmul import has_vnni
from hetpart.models import save
from hetpart.models.gpt2 import gelu_new
from hetpart.models.graph_builder import GraphBuilder
from hetpart.targets import cpu_tvm_target
from int8_cases import target_4_cores
from onnx_cases import plan_all_on

quantization = pytest.importorskip("onnxruntime.quantization")

ROWS, K, N = 16, 64, 96


def _mlp(gelu: str) -> onnx.ModelProto:
    """``gelu(x @ W + b)``, W ``[K, N]``; ``gelu``: ``tanh`` (GPT-2's), ``erf`` (BERT's) or ``none``."""
    b = GraphBuilder(f"mlp_{gelu}", 0)
    y = b.dense(b.input("x", (1, ROWS, K)), "fc", K, N)
    if gelu == "tanh":
        y = gelu_new(b, y, "act")
    elif gelu == "erf":
        y = b.gelu(y, "act")
    return b.finish({"y": y})


def _quantized(gelu: str, tmp_path) -> onnx.ModelProto:
    src, dst = tmp_path / "float.onnx", tmp_path / "dynamic.onnx"
    save(_mlp(gelu), src)
    quantization.quantize_dynamic(str(src), str(dst))
    return onnx.load(str(dst))


def _int8_kernel(graph, target) -> tvm.tirx.PrimFunc:
    """The scheduled kernel of ``graph`` that holds the MatMulInteger (VNNI rule asserted)."""
    name = next(k.func for k in graph.nodes if k.op_class == "matmul")
    func = kernels.schedule_primfunc(graph.module[name], target)
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuInt8Matmul", name
    return func


def _calls(func, op: str) -> int:
    found = []
    tvm_ffi.structural_walk(func.body, (tvm.ir.Call, lambda c: found.append(c)
                                        if isinstance(c.op, tvm.ir.Op) and c.op.name == op else None))
    return len(found)


def _float_buffers(func) -> list[str]:
    """The float32 buffers the scheduled kernel allocates (the epilogue's intermediates)."""
    out = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, lambda blk: out.extend(
        b.name for b in blk.alloc_buffers if str(b.dtype) == "float32")))
    return out


def test_gpt2_gelu_epilogue_has_no_libm_pow_or_tanh(tmp_path):
    q = _quantized("tanh", tmp_path)
    func = _int8_kernel(hetpart.load(q), target_4_cores("cascadelake"))
    assert _calls(func, "tirx.pow") == 0 and _calls(func, "tirx.tanh") == 0
    assert _float_buffers(func) == []


def test_bert_gelu_epilogue_is_one_write_back(tmp_path):
    q = _quantized("erf", tmp_path)
    func = _int8_kernel(hetpart.load(q), target_4_cores("cascadelake"))
    assert _float_buffers(func) == []


@pytest.mark.skipif(not has_vnni(cpu_tvm_target()), reason="the host has no AVX-512 VNNI")
@pytest.mark.parametrize("gelu", ["none", "tanh", "erf"])
def test_matches_onnxruntime_int8_on_the_host(gelu, tmp_path):
    import onnxruntime as ort

    q = _quantized(gelu, tmp_path)
    graph = hetpart.load(q)
    _int8_kernel(graph, cpu_tvm_target())
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((1, ROWS, K)) * 3).astype(np.float32)
    x[..., ::5] = 0.0
    x[0, 0, :] = -np.abs(x[0, 0, :])  # a row of negatives and zeros
    with hetpart.Session(hetpart.compile(plan_all_on(graph, "cpu"), graph, progress=False)) as s:
        got = s.run({"x": x})["y"]
    want = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (want < 0).any() and (want > 0).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_integer_powers_are_products():
    """``T.pow(x, n)`` of a whole constant 2..4 as ``x * ... * x`` (bound once), others kept:
    the values of float32 ``x**n`` within two roundings."""
    from tvm.script import tirx as T

    from hetpart.kernels.rules.cpu_int8_matmul import _integer_powers

    @T.prim_func(s_tir=True)
    def powers(x: T.Buffer((8,), "float32"), y: T.Buffer((4, 8), "float32")):
        for i in range(8):
            with T.sblock("p"):
                v = T.axis.remap("S", [i])
                y[0, v] = T.pow(x[v], T.float32(2.0))
                y[1, v] = T.pow(x[v], T.float32(3.0))
                y[2, v] = T.pow(x[v], T.float32(2.5))
                y[3, v] = T.pow(x[v], T.float32(5.0))

    func = _integer_powers(powers)
    assert _calls(func, "tirx.pow") == 2  # 2.5 and 5 kept
    lib = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    x = np.array([-3.5, -1.0, -0.0, 0.0, 0.7, 2.0, 1e-20, 1e13], np.float32)
    y = tvm.runtime.tensor(np.zeros((4, 8), np.float32))
    lib["main"](tvm.runtime.tensor(x), y)
    with np.errstate(over="ignore", under="ignore"):
        want = np.stack([x ** 2, x ** 3, np.abs(x) ** 2.5 * np.where(x < 0, math.nan, 1), x ** 5]).astype(np.float32)
    got = y.numpy()
    np.testing.assert_allclose(got[[0, 1, 3]], want[[0, 1, 3]], rtol=3e-7)
    np.testing.assert_array_equal(np.signbit(got[1]), np.signbit(want[1]))


def test_the_int8_rule_leaves_float_kernels_untouched(tmp_path):
    """The VNNI rule rewrites (powers, exps) only functions with 8-bit integer buffers:
    rewriting every float kernel before declining went with an intermittent heap
    corruption in a float BERT build (tests/test_runtime_indices.py's bert case)."""
    from hetpart.kernels.rules import cpu_int8_matmul

    floats = load(_mlp("tanh"))
    quant = load(_quantized("tanh", tmp_path))
    matmul = lambda g: g.module[next(k.func for k in g.nodes if k.op_class == "matmul")]  # noqa: E731
    assert not cpu_int8_matmul._reads_uint8(matmul(floats))
    assert cpu_int8_matmul._reads_uint8(matmul(quant))


def test_the_int8_rule_declines_an_elementwise_int8_kernel_before_inlining_it(monkeypatch):
    """An int8 kernel with no reduction (opset 21's blocked Quantize/DequantizeLinear) is
    declined before :func:`_inline_epilogue`: inlined into one block its expression repeats
    its ``isnan``/``max`` arms, and dlight's normal form of that took seconds to find no
    multiply-accumulate.  A matmul still reaches the inlining (and the rule)."""
    from onnx import helper

    from hetpart.kernels.rules import cpu_int8_matmul
    from onnx_cases import model

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1, block_size=2),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=1, block_size=2)]
    m = model(nodes, [("x", (4, 5), np.float32), ("s", (4, 3), np.float32), ("z", (4, 3), np.int8)],
              [("q", (4, 5), np.int8), ("d", (4, 5), np.float32)], opset=21)
    graph = load(m)
    funcs = [graph.module[k.func] for k in graph.nodes]
    assert funcs and all(cpu_int8_matmul._reads_uint8(f) for f in funcs)
    assert not any(cpu_int8_matmul._reduces(f) for f in funcs)
    target = target_4_cores("cascadelake")
    assert has_vnni(target)

    def inlined(sch):
        raise AssertionError("an elementwise kernel was inlined")

    monkeypatch.setattr(cpu_int8_matmul, "_inline_epilogue", inlined)
    assert all(cpu_int8_matmul.CpuInt8Matmul().apply(f, target) is None for f in funcs)
    w = np.arange(64 * 32).reshape(64, 32).astype(np.int8)
    mmi = load(model([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], [("a", (16, 64), np.uint8)],
                     [("y", (16, 32), np.int32)], {"w": w}, opset=13))
    mm = mmi.module[next(k.func for k in mmi.nodes if k.op_class == "matmul")]
    assert cpu_int8_matmul._reduces(mm)
    with pytest.raises(AssertionError, match="inlined"):
        cpu_int8_matmul.CpuInt8Matmul().apply(mm, target)
