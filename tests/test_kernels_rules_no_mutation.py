"""Every registered schedule rule leaves the PrimFunc it is given as it was (``gpu_layout_copy``'s
schedule of a simplified module once wrote through shared statements into the caller's function:
a single-block add came back thread-bound to the next rule in the chain).

For each rule of :func:`hetpart.kernels.rules.cpu_rules` (host target and a VNNI one) /
:func:`.gpu_rules` (sm_90, the off-by-default GPU switches on so their rules get past their first
check) and representative PrimFuncs (element-wise, single-block add, sigmoid, reduction, softmax,
transpose, matmul in float32 / float16 / uint8 x int8, GEMV, conv2d, depthwise, and imported ONNX
dense layers and squeeze-excite blocks that reach the tensor-core, split-K, small-contraction and
broadcast-epilogue rules),
``rule.apply`` -- whether it accepts, declines or raises midway -- must leave its input structurally
equal to a copy taken before (and its printed text unchanged).  ``cpu_int8_matmul`` broke this
too: its schedule of the power/exp-rewritten function (which shares the input's statements)
renamed the input's loops in place; it now schedules a deep copy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import tvm
from onnx import helper
from tvm import te, tirx, topi

from int8_cases import target_4_cores
from onnx_cases import model

from hetpart import load
from hetpart.importer import low_precision as lp
from hetpart.kernels.rules import cpu_rules, gpu_layout_copy, gpu_rules, gpu_small_contraction
from hetpart.kernels.rules import rule_name
from hetpart.targets import cpu_tvm_target, cuda_tvm_target


def _add():
    a, b = te.placeholder((4, 64), name="a"), te.placeholder((4, 64), name="b")
    return te.create_prim_func([a, b, te.compute((4, 64), lambda i, j: a[i, j] + b[i, j], name="add")])


def _bias_relu():
    a, b = te.placeholder((2, 32, 64), name="a"), te.placeholder((64,), name="b")
    s = te.compute(a.shape, lambda i, j, k: a[i, j, k] + b[k], name="bias")
    return te.create_prim_func([a, b, topi.nn.relu(s)])


def _row_sum():
    a = te.placeholder((16, 256), name="a")
    return te.create_prim_func([a, topi.sum(a, axis=1)])


def _softmax():
    a = te.placeholder((8, 128), name="a")
    return te.create_prim_func([a, topi.nn.softmax(a, axis=-1)])


def _transpose():
    a = te.placeholder((2, 37, 4, 64), name="a")
    return te.create_prim_func([a, topi.transpose(a, (0, 2, 1, 3))])


def _matmul(dtype="float32", m=128, n=256, k=512):
    a, b = te.placeholder((m, k), dtype, name="a"), te.placeholder((k, n), dtype, name="b")
    r = te.reduce_axis((0, k), name="k")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r].astype("float32") * b[r, j].astype("float32"), axis=r),
                   name="matmul")
    return te.create_prim_func([a, b, c])


def _gemv():
    return _matmul(m=1, n=512, k=768)


def _conv():
    x, w = te.placeholder((1, 32, 14, 14), name="x"), te.placeholder((64, 32, 3, 3), name="w")
    return te.create_prim_func([x, w, topi.nn.conv2d_nchw(x, w, 1, 1, 1)])


def _depthwise():
    x, w = te.placeholder((1, 32, 14, 14), name="x"), te.placeholder((32, 1, 3, 3), name="w")
    return te.create_prim_func([x, w, topi.nn.depthwise_conv2d_nchw(x, w, 1, 1, 1)])


def _sigmoid():
    a = te.placeholder((4, 256), name="a")
    return te.create_prim_func([a, topi.sigmoid(a)])


def _onnx(nodes, inputs, outputs, inits, name, dtype=None):
    """The fused PrimFunc of an ONNX graph whose name contains ``name`` (weights in ``dtype``
    when given: :func:`hetpart.importer.low_precision.lower_weights`)."""
    graph = load(model(nodes, inputs, outputs, inits))
    if dtype is not None:
        graph = lp.lower_weights(graph, list(graph.kernels), dtype)
    (func,) = [f for gv, f in graph.module.functions_items() if isinstance(f, tirx.PrimFunc) and name in gv.name_hint]
    return func


def _dense(m, k, n, dtype=None):
    """``relu(x @ W + b)``, W a constant [k, n]."""
    rng = np.random.default_rng(0)
    inits = {"w": (rng.standard_normal((k, n)) * 0.05).astype(np.float32),
             "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "b"], ["q"]),
             helper.make_node("Relu", ["q"], ["y"])]
    return _onnx(nodes, [("x", (m, k), np.float32)], [("y", (m, n), np.float32)], inits, "matmul", dtype)


def _se(n, cin, cout, size):
    """Squeeze-excite's FC, sigmoid gate and multiply (``size`` 1: the FC and SiLU alone)."""
    rng = np.random.default_rng(1)
    inits = {"w": (rng.standard_normal((cout, cin, 1, 1)) * 0.1).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"])]
    if size == 1:
        nodes.append(helper.make_node("Mul", ["c", "s"], ["y"]))
        return _onnx(nodes, [("p", (n, cin, 1, 1), np.float32)], [("y", (n, cout, 1, 1), np.float32)], inits, "conv")
    nodes.append(helper.make_node("Mul", ["x", "s"], ["y"]))
    return _onnx(nodes, [("p", (n, cin, 1, 1), np.float32), ("x", (n, cout, size, size), np.float32)],
                 [("y", (n, cout, size, size), np.float32)], inits, "conv")


def _int8_matmul(m=64, k=256, n=128):
    """``float(A @ W) * 0.5`` of uint8 A and int8 W (:mod:`.cpu_int8_matmul`'s VNNI kernel)."""
    a, w = te.placeholder((m, k), "uint8", name="a"), te.placeholder((k, n), "int8", name="w")
    r = te.reduce_axis((0, k), name="k")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r].astype("int32") * w[r, j].astype("int32"), axis=r),
                   name="matmul")
    return te.create_prim_func([a, w, te.compute((m, n), lambda i, j: c[i, j].astype("float32") * 0.5)])


FUNCS = {"add": _add, "bias relu": _bias_relu, "row sum": _row_sum, "softmax": _softmax, "transpose": _transpose,
         "matmul": _matmul, "matmul fp16": lambda: _matmul("float16", 64, 128, 256), "gemv": _gemv, "conv2d": _conv,
         "depthwise": _depthwise, "sigmoid": _sigmoid,
         "dense b1": lambda: _dense(128, 768, 768),  # tensor-core split-K at batch 1
         "dense b32": lambda: _dense(4096, 768, 768),  # a tile grid that fills the GPU
         "dense bf16 weights": lambda: _dense(4096, 768, 768, "bfloat16"),
         "se fc b32": lambda: _se(32, 1152, 48, 1),  # gpu_small_contraction
         "se gate b1": lambda: _se(1, 8, 32, 56),  # gpu_broadcast_epilogue
         "int8 matmul": _int8_matmul}
TARGETS = {"cpu": (cpu_tvm_target, cpu_rules),
           "cpu vnni": (lambda: target_4_cores("cascadelake"), cpu_rules),  # CpuInt8Matmul's target
           "gpu": (lambda: cuda_tvm_target("sm_90"), gpu_rules)}


@pytest.mark.parametrize("case", sorted(FUNCS))
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_no_rule_mutates_its_input(monkeypatch, kind, case):
    """Each rule in the chain, tried in order on the same function (as ``schedule_primfunc`` does),
    leaves it structurally equal to a fresh build, whatever it returns or raises."""
    monkeypatch.setattr(gpu_layout_copy, "LAYOUT_COPY", True)
    monkeypatch.setattr(gpu_layout_copy, "VECTOR_ELEMENTWISE", True)
    monkeypatch.setattr(gpu_small_contraction, "SMALL_CONTRACTIONS", True)
    make_target, rules = TARGETS[kind]
    target, build = make_target(), FUNCS[case]
    func = build()
    before, expected = func.script(), copy.deepcopy(func)
    accepted = []
    for rule in rules():
        try:
            with target:
                sch = rule.apply(func, target, False)
        except Exception:  # noqa: BLE001 - a rule that raises declines, as in schedule_primfunc
            sch = None
        if sch is not None:
            accepted.append(rule_name(rule))
        assert func.script() == before, f"{rule_name(rule)} changed its input"
        tvm.ir.assert_structural_equal(func, expected)
    assert accepted, "the catch-all rule takes every function"
