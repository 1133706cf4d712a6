"""kernels.rules.cpu_blocked_conv.PLAIN_INPUT and
cpu_matmul.GEMV_ROW_STREAM on an NCHW16c import (``load(model, conv_block=16)``):

* a 7x7 stride-2 stem on a 3-channel image (``conv2d_NCHW_to_NCHWc``, blocked_sink's
  ``MAX_STEM_WINDOW``) takes the blocked tile (one-channel input blocks) and writes blocked:
  the max pool after it runs blocked, no transform between them;
* a batch-1 Gemm of a 2 MB weight takes the row-streaming schedule;

and each build matches the build with the switch off (the tile it replaces) and ONNX Runtime,
on inputs with negatives and zeros."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetpart.importer import blocked_sink
from hetpart.kernels.rules import cpu_blocked_conv as cb
from hetpart.kernels.rules import cpu_matmul


def _model(hw: int = 20):
    """x[1, 3, hw, hw] -> 7x7 s2 pad 3 3->32 + relu -> maxpool 3x3 s2 pad 1 -> 3x3 pad 1 32->48
    + relu -> global pool -> Gemm 48 -> 16 (transB) -> Gemm 16 -> 1000 (transB: 64 KB, the
    register tile) ; and z[1, 512] -> Gemm 512 -> 1000 (2 MB: row stream)."""
    rng = np.random.default_rng(7)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("w1", (32, 3, 7, 7)), init("b1", (32,)), init("w2", (48, 32, 3, 3), 0.1), init("b2", (48,)),
             init("f1", (16, 48)), init("g1", (16,)), init("f2", (1000, 16)), init("g2", (1000,)),
             init("f3", (1000, 512), 0.05), init("g3", (1000,))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[3, 3, 3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["fl"]),
        helper.make_node("Gemm", ["fl", "f1", "g1"], ["h1"], transB=1),
        helper.make_node("Gemm", ["h1", "f2", "g2"], ["y"], transB=1),
        helper.make_node("Gemm", ["z", "f3", "g3"], ["v"], transB=1),
    ]
    g = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw]),
                                          helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 512])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000]),
                           helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 1000])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _feeds():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 20, 20)).astype(np.float32)
    z = rng.standard_normal((1, 512)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    z.reshape(-1)[::7] = 0.0
    return {"x": x, "z": z}


def _run(graph, feeds):
    import tvm
    from tvm import relax

    from hetpart import kernels
    from hetpart.targets import cpu_tvm_target

    vm = relax.VirtualMachine(kernels.build(graph.module, cpu_tvm_target()), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(feeds["x"]), tvm.runtime.tensor(feeds["z"]))
    return [o.numpy() for o in out]


def _unrolled_extents(func) -> list[int]:
    """Extents (> 1) of every unrolled loop of ``func`` (loops, sequences, branches, blocks)."""
    import tvm
    from tvm import tirx

    found = []

    def visit(stmt):
        if isinstance(stmt, tirx.For):
            if stmt.kind == tirx.ForKind.UNROLLED and int(stmt.extent) > 1:
                found.append(int(stmt.extent))
            visit(stmt.body)
        elif isinstance(stmt, tirx.SeqStmt):
            for x in stmt.seq:
                visit(x)
        elif isinstance(stmt, tirx.IfThenElse):
            visit(stmt.then_case)
            if stmt.else_case is not None:
                visit(stmt.else_case)
        elif isinstance(stmt, tvm.s_tir.SBlockRealize):
            visit(stmt.block.body)
        elif hasattr(stmt, "body"):
            visit(stmt.body)

    visit(func.body)
    return found


def test_stem_conv_and_gemv_match_the_tiles_they_replace_and_ort(monkeypatch):
    import onnxruntime as ort
    from tvm import tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    model, feeds = _model(), _feeds()
    target = cpu_tvm_target()
    graph = load(model, conv_block=16)
    funcs = {gv.name_hint: f for gv, f in graph.module.functions_items() if isinstance(f, tirx.PrimFunc)}
    stem = [n for n in funcs if "conv2d_NCHW_to_NCHWc" in n]
    assert len(stem) == 1
    plan = cb.plan_of(funcs[stem[0]], target)
    assert plan is not None and plan.blocks == 2  # 32 channels: both blocks, one tile
    ops = [op for k in graph.kernels.values() for op in k.ops]
    assert "te_layout_transform" not in ops[:ops.index("max_pool2d")]  # the pool reads the stem's blocks
    scheduled = kernels.schedule(graph.module, target)
    streamed = {gv.name_hint: cpu_matmul.GEMV_ROWS in _unrolled_extents(f) for gv, f in scheduled.functions_items()
                if "matmul" in gv.name_hint}
    assert sorted(streamed.values()) == [False, False, True]  # the 2 MB weight's rows streamed together, alone
    assert "T.int64(512), T.int64(1000)" in scheduled[next(n for n, s in streamed.items() if s)].script()
    got = _run(graph, feeds)

    monkeypatch.setattr(cb, "PLAIN_INPUT", False)
    monkeypatch.setattr(cpu_matmul, "GEMV_ROW_STREAM", False)
    monkeypatch.setattr(blocked_sink, "MAX_STEM_WINDOW", 9)
    before = _run(load(model, conv_block=16), feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, b, w in zip(got, before, want):
        scale = float(np.abs(w).max())
        np.testing.assert_allclose(g, b, rtol=1e-5, atol=1e-5 * scale)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale)


def test_ragged_1x1_runs_along_the_fused_plane_and_matches(monkeypatch):
    """A 1x1 conv 32 -> 48 on 17x17 (inception_v3's ragged plane) + a residual-free ReLU takes
    the fused-plane tile (PLANE_1X1: columns over oh * ow, the ragged last tile split off) and
    matches the row tile and ONNX Runtime."""
    import onnxruntime as ort
    import tvm
    from tvm import relax, tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((48, 32, 1, 1)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(48).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "plane", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 17, 17])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48, 17, 17])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.standard_normal((1, 32, 17, 17)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    target = cpu_tvm_target()

    def run():
        graph = load(model, conv_block=16)
        funcs = [f for _, f in graph.module.functions_items()
                 if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in str(f)]
        plans = [cb.plan_of(f, target) for f in funcs]
        vm = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())
        return [p for p in plans if p is not None], vm["main"](tvm.runtime.tensor(x)).numpy()

    plans, got = run()
    assert len(plans) == 1 and plans[0].plane and 289 % plans[0].columns  # ragged: the split tile
    monkeypatch.setattr(cb, "PLANE_1X1", False)
    plans_before, before = run()
    assert not plans_before[0].plane
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, before, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("kind,hw", [("max", 9), ("avg", 9), ("max", 2), ("avg", 3)])
def test_blocked_3x3_pools_are_separable_and_match(kind, hw, monkeypatch):
    """separable_pool.BLOCKED: a 3x3 stride-1 pad-1 MaxPool / AveragePool (count_include_pad)
    between two 1x1 convs of 32 channels runs blocked as :func:`blocked_func` (two- and
    three-row images: every row a border row) and matches the window reduction it replaces and
    ONNX Runtime (negative inputs: the max's padding never read)."""
    import onnxruntime as ort
    import tvm
    from tvm import relax, tirx

    from hetpart import kernels, load
    from hetpart.kernels import separable_pool
    from hetpart.targets import cpu_tvm_target

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 32, 1, 1)) * 0.3).astype(np.float32), n)
             for n in ("w1", "w2")]
    pool = (helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1)
            if kind == "max" else
            helper.make_node("AveragePool", ["a"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), pool, helper.make_node("Conv", ["p", "w2"], ["y"])]
    g = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, hw, hw])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.standard_normal((1, 32, hw, hw)).astype(np.float32)
    target = cpu_tvm_target()

    def run():
        graph = load(model, conv_block=16)
        pools = [f for gv, f in graph.module.functions_items() if isinstance(f, tirx.PrimFunc) and "pool" in gv.name_hint]
        vm = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())
        return pools, vm["main"](tvm.runtime.tensor(x)).numpy()

    pools, got = run()
    assert len(pools) == 1 and len(pools[0].params[0].ty.shape) == 5  # the pool reads the blocked image
    spec = separable_pool.match(pools[0])
    assert spec is not None and spec.kind == kind and len(spec.shape) == 5
    monkeypatch.setattr(separable_pool, "BLOCKED", False)
    assert separable_pool.match(pools[0]) is None
    _, before = run()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, before, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
