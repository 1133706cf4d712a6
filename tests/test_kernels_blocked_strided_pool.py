"""separable_pool.BLOCKED_STRIDED (off by default) on an NCHW16c import (``load(model, conv_block=16)``):
a 3x3 stride-2 MaxPool of a blocked image -- resnet50's stem pool (pad 1), googlenet's ``ceil_mode``
ones (pad 0, one column and row past the image), an unpadded one -- is matched as a stride-2
:class:`~hetpart.kernels.separable_pool.PoolSpec` and computed by ``blocked_strided_func``.

* The pool alone: ``blocked_strided_func`` equals the unscheduled TOPI pool exactly (max is exact),
  on inputs with negatives and zeros, at batch 1 and 2, even and odd image sizes (a right border
  column and a bottom border row: the clipped path).
* In a model (a 7x7 s2 stem + ReLU, or a 1x1 conv, then the pool, then a 1x1 conv): the build with
  the switch on equals the unscheduled module (legalised, no rule) and ONNX Runtime; switched off
  the pool is not matched (the window reduction of ``cpu_reduction``, as before).
* An AveragePool 3x3 s2 pad 1 (count_include_pad=1) takes it too and matches (within rounding).
* zoo:resnet50 (small, 16-channel stem, one bottleneck per stage) with the switch on matches ONNX Runtime.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_cases import onnxruntime_outputs, run_vm

from hetpart.kernels import separable_pool


def _pool_node(pad: int, ceil: int):
    return helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[pad] * 4,
                            ceil_mode=ceil)


def _model(hw: int, batch: int, pad: int, ceil: int, stem: bool):
    """``x[batch, 3 | 32, hw, hw]`` -> a 7x7 s2 pad-3 stem 3->32 + ReLU (``stem``) or a 1x1 32->32 conv
    -> MaxPool 3x3 s2 (``pad``, ``ceil``) -> a 1x1 32->32 conv; and its output shape."""
    rng = np.random.default_rng(hw + 3 * pad + ceil + stem)
    ci = 3 if stem else 32
    k = 7 if stem else 1
    inits = [numpy_helper.from_array((rng.standard_normal((32, ci, k, k)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((32, 32, 1, 1)) * 0.3).astype(np.float32), "w2")]
    first = (helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[3] * 4, strides=[2, 2]) if stem
             else helper.make_node("Conv", ["x", "w1", "b1"], ["c"]))
    nodes = [first, helper.make_node("Relu", ["c"], ["a"]) if stem else helper.make_node("Identity", ["c"], ["a"]),
             _pool_node(pad, ceil), helper.make_node("Conv", ["p", "w2"], ["y"])]
    a = (hw + 6 - 7) // 2 + 1 if stem else hw
    span = a + 2 * pad - 3
    out = (-(-span // 2) if ceil else span // 2) + 1
    g = helper.make_graph(nodes, "strided_pool",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, ci, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


CASES = {  # name: (hw, pad, ceil, stem)
    "resnet50's stem pool (7x7 s2 stem, pool pad 1), 40x40": (40, 1, 0, True),
    "stem, odd 37x37 (pool input 19x19: a bottom row and right column of two)": (37, 1, 0, True),
    "googlenet's ceil_mode pool on 16x16": (16, 0, 1, False),
    "ceil_mode on 15x15 (exact: no border column)": (15, 0, 1, False),
    "unpadded on 17x17": (17, 0, 0, False),
    "pad 1 on 14x14": (14, 1, 0, False),
}


@lru_cache(maxsize=None)
def _graph(case: str, batch: int):
    """``(model, its NCHW16c import)`` of ``CASES[case]`` at ``batch``, imported once for the tests
    of the pool alone and of the model (the import reads no switch of ``separable_pool``: only
    ``match`` does, when a test asks)."""
    from hetpart import load

    hw, pad, ceil, stem = CASES[case]
    model = _model(hw, batch, pad, ceil, stem)
    return model, load(model, conv_block=16)


def _input(m, seed: int = 2) -> np.ndarray:
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    return x


def _pools(graph):
    from tvm import tirx

    return [f for gv, f in graph.module.functions_items() if isinstance(f, tirx.PrimFunc) and "pool" in gv.name_hint]


def _compile_alone(func):
    import tvm

    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_the_strided_pool_alone_equals_the_unscheduled_pool(case, batch, monkeypatch):
    import tvm

    hw, pad, ceil, stem = CASES[case]
    monkeypatch.setattr(separable_pool, "BLOCKED_STRIDED", True)
    (pool,) = _pools(_graph(case, batch)[1])
    spec = separable_pool.match(pool)
    assert spec is not None and spec.stride == 2 and len(spec.shape) == 5 and spec.pad_before == (pad, pad)
    shape = [int(d) for d in pool.params[0].ty.shape]
    out_shape = [int(d) for d in pool.params[1].ty.shape]
    rng = np.random.default_rng(batch + hw)
    x = rng.standard_normal(shape).astype(np.float32) - 0.5
    x.reshape(-1)[::5] = 0.0
    x[..., :2, :2, :] = -3.0  # a corner window of negatives only: the padding (lowest float) never wins
    outs = []
    for f in (separable_pool.blocked_strided_func(spec), pool):
        y = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
        _compile_alone(f)["main"](tvm.runtime.tensor(x), y)
        outs.append(y.numpy())
    assert (outs[1] < 0).any() and (outs[1] == 0).any()
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_the_model_with_the_switch_equals_the_unscheduled_module_and_onnxruntime(case, batch, monkeypatch):
    from hetpart import kernels
    from hetpart.targets import cpu_tvm_target

    model, graph = _graph(case, batch)
    x = _input(model)
    monkeypatch.setattr(separable_pool, "BLOCKED_STRIDED", True)
    (pool,) = _pools(graph)
    assert len(pool.params[0].ty.shape) == 5  # the pool reads the blocked image
    assert separable_pool.match(pool) is not None
    assert 'T.sblock("separable_pool")' in next(
        f.script() for gv, f in kernels.schedule(graph.module, cpu_tvm_target()).functions_items()
        if "pool" in gv.name_hint)
    _assert_equals_unscheduled_and_onnxruntime(graph, model, x)
    monkeypatch.setattr(separable_pool, "BLOCKED_STRIDED", False)
    assert separable_pool.match(pool) is None


def test_stride_1_and_2x2_pools_are_not_taken_as_strided(monkeypatch):
    """The switch takes 3x3 stride-2 windows only: googlenet's 2x2 s2 ceil_mode pool keeps the window
    reduction; a 3x3 stride-1 pad-1 pool stays ``blocked_func``'s (stride 1)."""
    from hetpart import load

    monkeypatch.setattr(separable_pool, "BLOCKED_STRIDED", True)
    m = _model(16, 1, 0, 1, False)
    m.graph.node[2].CopyFrom(helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2],
                                              ceil_mode=1))
    assert separable_pool.match(_pools(load(m, conv_block=16))[0]) is None
    m.graph.node[2].CopyFrom(helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], pads=[1] * 4))
    m.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 16
    m.graph.output[0].type.tensor_type.shape.dim[3].dim_value = 16
    spec = separable_pool.match(_pools(load(m, conv_block=16))[0])
    assert spec is not None and spec.stride == 1


def test_resnet50_with_the_switch_matches_onnxruntime(monkeypatch):
    """zoo:resnet50 (small, a 16-channel stem on 64x64: its stem pool 32x32 -> 16x16 blocked) with
    the switch on matches ONNX Runtime.  One bottleneck per stage: the stem pool is the model's one
    strided pool whatever the depth, and each stage keeps its downsampling block (4 blocks to build,
    not the small variant's 16)."""
    import onnxruntime as ort

    from hetpart import kernels, load, models
    from hetpart.targets import cpu_tvm_target

    monkeypatch.setattr(separable_pool, "BLOCKED_STRIDED", True)
    model = models.build("resnet50", small=True, width=16, image_size=64, layers=(1, 1, 1, 1))
    graph = load(model, conv_block=16)
    assert any(separable_pool.match(f) is not None and separable_pool.match(f).stride == 2 for f in _pools(graph))
    x = _input(model)
    got = run_vm(kernels.build(graph.module, cpu_tvm_target()), [x])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("hw", [15, 16])
def test_a_strided_average_pool_equals_the_unscheduled_module(hw, monkeypatch):
    """AveragePool 3x3 s2 pad 1 with ``count_include_pad=1`` (a divisor of 9 everywhere) of a blocked
    image takes the strided window too (sums of the window's elements in the image / 9) and matches
    the unscheduled module and ORT at batch 2 (sums in another order: within rounding)."""
    from hetpart import load

    model = _model(hw, 2, 1, 0, False)
    model.graph.node[2].CopyFrom(helper.make_node("AveragePool", ["a"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                                                  pads=[1] * 4, count_include_pad=1))
    monkeypatch.setattr(separable_pool, "BLOCKED_STRIDED", True)
    graph = load(model, conv_block=16)
    (pool,) = _pools(graph)
    spec = separable_pool.match(pool)
    assert spec is not None and spec.kind == "avg" and spec.stride == 2
    _assert_equals_unscheduled_and_onnxruntime(graph, model, _input(model))


def _assert_equals_unscheduled_and_onnxruntime(graph, model, x):
    """``graph`` built by hetpart's rules on ``x`` (input ``"x"``) equals its unscheduled
    (legalized) build within rounding and ONNX Runtime's output of ``model`` within 1e-4."""
    from tvm import relax

    from hetpart import kernels
    from hetpart.targets import cpu_tvm_target

    target = cpu_tvm_target()
    got = run_vm(kernels.build(graph.module, target), [x])
    ref = run_vm(relax.build(relax.transform.LegalizeOps()(graph.module), target), [x])
    want = onnxruntime_outputs(model, {"x": x})[0]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
