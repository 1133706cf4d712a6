"""importer.blocked_sink.sink_blocked + kernels.rules.cpu_blocked_conv.depthwise_tile: in an
NCHW8c import (``load(model, conv_block=8)``) depthwise convs (3x3 stride 1, 5x5 stride 2,
7x7), ReLU6 (Clip with initializer bounds, as torch exports it), hard-swish, swish, a
squeeze-excite (global pool, two 1x1 FCs, sigmoid gate) and a residual add stay blocked --
only the model's two ends are transformed -- each depthwise conv takes the column tile, and
the build matches ONNX Runtime on inputs with negatives and zeros, batch 1 and 2."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetpart.importer import blocked_sink
from hetpart.kernels.rules import cpu_blocked_conv as cb
from blocked_conv_cases import conv, relu6_conv_inits
from onnx_cases import update_unrolls


def _model(batch: int, hw: int):
    """x[b, 16, hw, hw] -> 1x1 + ReLU6 -> dw 3x3 + ReLU6 -> dw 5x5 s2 + hard-swish -> swish
    -> squeeze-excite gate -> dw 7x7 -> 1x1 + residual add (the gated tensor)."""
    rng = np.random.default_rng(3)
    shapes = {"w0": (16, 16, 1, 1), "w1": (16, 1, 3, 3), "w2": (16, 1, 5, 5), "f1": (8, 16, 1, 1),
              "f2": (16, 8, 1, 1), "w3": (16, 1, 7, 7), "w4": (16, 16, 1, 1)}
    inits = relu6_conv_inits(rng, shapes)
    nodes = [
        conv("x", "w0", "c0"), helper.make_node("Clip", ["c0", "lo", "hi"], ["r0"]),
        conv("r0", "w1", "c1", group=16, pads=[1, 1, 1, 1]), helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        conv("r1", "w2", "c2", group=16, pads=[2, 2, 2, 2], strides=[2, 2]), helper.make_node("HardSwish", ["c2"], ["h2"]),
        helper.make_node("Sigmoid", ["h2"], ["s2"]), helper.make_node("Mul", ["h2", "s2"], ["m2"]),
        helper.make_node("GlobalAveragePool", ["m2"], ["p"]), conv("p", "f1", "q1"), helper.make_node("Relu", ["q1"], ["q2"]),
        conv("q2", "f2", "q3"), helper.make_node("Sigmoid", ["q3"], ["g"]), helper.make_node("Mul", ["m2", "g"], ["se"]),
        conv("se", "w3", "c3", group=16, pads=[3, 3, 3, 3]), conv("c3", "w4", "c4"),
        helper.make_node("Add", ["c4", "se"], ["y"]),
    ]
    out = (hw - 1) // 2 + 1
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 16, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("batch,hw", [(1, 14), (2, 12)])
def test_depthwise_nets_stay_blocked_take_the_tile_and_match_ort(batch, hw, monkeypatch):
    import onnxruntime as ort
    import tvm
    from tvm import relax, tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    if batch > 1:
        monkeypatch.setattr(cb, "PARALLEL_MIN_ELEMENTS", 1)
    model = _model(batch, hw)
    graph = load(model, conv_block=8)
    funcs = [k.func for k in graph.kernels.values()]
    assert sum("depthwise_conv2d_NCHWc" in f for f in funcs) == 3
    assert sum("layout_transform" in f for f in funcs) == 2  # the model's two ends only
    target = cpu_tvm_target()
    scheduled = kernels.schedule(graph.module, target)
    dws = [f for gv, f in scheduled.functions_items() if isinstance(f, tirx.PrimFunc) and "depthwise" in gv.name_hint]
    assert len(dws) == 3
    for f in dws:
        assert len(update_unrolls(f)) >= 1 and max(update_unrolls(f)) > 1  # columns unrolled (generic: none)

    x = np.random.default_rng(1).standard_normal((batch, 16, hw, hw)).astype(np.float32) * 3
    x.reshape(-1)[::7] = 0.0
    vm = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (want < 0).any() and (want > 0).any()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_without_the_switch_depthwise_convs_keep_nchw(monkeypatch):
    from hetpart import load

    monkeypatch.setattr(blocked_sink, "BLOCKED_DEPTHWISE", False)
    funcs = [k.func for k in load(_model(1, 14), conv_block=8).kernels.values()]
    assert not any("depthwise_conv2d_NCHWc" in f for f in funcs)
    assert sum("layout_transform" in f for f in funcs) > 2


def test_depthwise_plans_fit_the_registers():
    """AVX2 (16 registers, 8-channel blocks): 8 columns on 112/56, 7 on 28/14/7; AVX-512 (32,
    16-channel blocks): 16 on 112, 14 on 56/28/14, 7 on 7; 16-channel blocks on AVX2: two
    vectors a column."""
    from tvm import tirx

    from hetpart.kernels.analysis import CpuShape

    class _Mac:
        def __init__(self, extents):
            self.extents = extents

    def plan(width, block, registers, lanes):
        ow, lane = tirx.Var("ow", "int64"), tirx.Var("lane", "int64")
        conv = cb.BlockedDepthwise(None, None, None, ow, lane, (), 0)
        return cb.depthwise_plan(_Mac({ow: width, lane: block}), conv, CpuShape(registers * 16, registers, 1), lanes)

    assert [plan(w, 8, 16, 8).columns for w in (112, 56, 28, 14, 7)] == [8, 8, 7, 7, 7]
    assert [plan(w, 16, 32, 16).columns for w in (112, 56, 28, 14, 7)] == [16, 14, 14, 14, 7]
    two = plan(56, 16, 16, 8)
    assert two.vectors == 2 and two.columns * 2 + 2 + 1 <= 16 - cb.SPARE_REGISTERS


def _convnext_block():
    """x[1, 16, 8, 8] -> 1x1 -> dw 7x7 -> NHWC, LayerNorm, MatMul -> NCHW -> + the 1x1's output
    -> dw 3x3 -> 1x1 (ConvNeXt's channels-last MLP between depthwise convs)."""
    rng = np.random.default_rng(9)
    w = {"w0": (16, 16, 1, 1), "w1": (16, 1, 7, 7), "w2": (16, 1, 3, 3), "w3": (16, 16, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n) for n, s in w.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), n) for n in ("g", "b")]
    inits += [numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.3).astype(np.float32), "m")]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"]),
        helper.make_node("Conv", ["c0", "w1"], ["c1"], group=16, pads=[3, 3, 3, 3]),
        helper.make_node("Transpose", ["c1"], ["t1"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["t1", "g", "b"], ["n1"], axis=-1),
        helper.make_node("MatMul", ["n1", "m"], ["l1"]),
        helper.make_node("Transpose", ["l1"], ["t2"], perm=[0, 3, 1, 2]),
        helper.make_node("Add", ["t2", "c0"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["c2"], group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "w3"], ["y"]),
    ]
    g = helper.make_graph(nodes, "cnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_convnext_permutes_read_and_write_the_blocked_layout(monkeypatch):
    """blocked_sink.BLOCKED_PERMUTES: the first depthwise conv's output goes channels-last straight
    from NCHW8c and the MLP's result comes back into NCHW8c for the residual add and the second
    depthwise conv: the permutes are the transforms, no NCHW copy between; matches ORT."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    model = _convnext_block()
    funcs = [k.func for k in load(model, conv_block=8).kernels.values()]
    assert sum("depthwise_conv2d_NCHWc" in f for f in funcs) == 2
    assert sum("layout_transform" in f for f in funcs) == 4, funcs  # in, out, the two permutes as transforms
    assert not any("transpose" in f for f in funcs), funcs
    monkeypatch.setattr(blocked_sink, "BLOCKED_PERMUTES", False)  # each permute beside a transform back to NCHW
    assert any("transpose" in k.func for k in load(model, conv_block=8).kernels.values())
    monkeypatch.undo()

    graph = load(model, conv_block=8)
    x = np.random.default_rng(2).standard_normal((1, 16, 8, 8)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    target = cpu_tvm_target()
    got = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def _mixed_model():
    """x[1, 32, 14, 14] -> 1x1 32->32 -> 1x1 32->24 -> 1x1 24->96 + ReLU6 -> dw 3x3 -> 1x1 96->24 +
    the first 24-channel tensor -> 1x1 24->16 + swish (efficientnet's 24-channel stage, in small)."""
    rng = np.random.default_rng(13)
    w = {"w5": (32, 32, 1, 1), "w0": (24, 32, 1, 1), "w1": (96, 24, 1, 1), "w2": (96, 1, 3, 3), "w3": (24, 96, 1, 1),
         "w4": (16, 24, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in w.items()]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0))]
    nodes = [
        helper.make_node("Conv", ["x", "w5"], ["x5"]),
        helper.make_node("Conv", ["x5", "w0"], ["a"]), helper.make_node("Conv", ["a", "w1"], ["b"]),
        helper.make_node("Clip", ["b", "lo", "hi"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["d"], group=96, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d", "w3"], ["p"]), helper.make_node("Add", ["p", "a"], ["s"]),
        helper.make_node("Conv", ["s", "w4"], ["e"]), helper.make_node("Sigmoid", ["e"], ["g"]),
        helper.make_node("Mul", ["e", "g"], ["y"]),
    ]
    g = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 14, 14])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 14, 14])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_channels_the_block_does_not_divide_run_in_nchw8c(monkeypatch):
    """blocked_sink.MIXED_BLOCKS: in an NCHW16c import the 24-channel tensors are NCHW8c (the
    convs reading 16 and writing 8 or the reverse), so only the model's ends are transformed;
    matches ORT on inputs with negatives and zeros."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    model = _mixed_model()
    graph = load(model, conv_block=16)
    funcs = [k.func for k in graph.kernels.values()]
    assert sum("layout_transform" in f for f in funcs) == 2, funcs
    assert sum("depthwise_conv2d_NCHWc" in f for f in funcs) == 1
    monkeypatch.setattr(blocked_sink, "MIXED_BLOCKS", False)
    assert not any("NCHWc" in k.func for k in load(model, conv_block=16).kernels.values()
                   if k.func.startswith(("depthwise", "fused_depthwise")))  # off: the 24-channel stage NCHW
    monkeypatch.undo()
    x = np.random.default_rng(6).standard_normal((1, 32, 14, 14)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = relax.VirtualMachine(kernels.build(graph.module, cpu_tvm_target()), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_a_one_block_1x1_with_swish_takes_the_blocked_tile(monkeypatch):
    """cpu_blocked_conv.PLAIN_ONE_BLOCK: a 16->32 1x1 + swish in NCHW16c (one input block: both
    operands read plain) gets the blocked tile's unrolled blocks x columns, not the matmul rule."""
    from tvm import tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 16, 1, 1)) * 0.3).astype(np.float32), "w0"),
             numpy_helper.from_array((rng.standard_normal((32, 16, 1, 1)) * 0.3).astype(np.float32), "w1")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"]), helper.make_node("Conv", ["a", "w1"], ["e"]),
             helper.make_node("Sigmoid", ["e"], ["g"]), helper.make_node("Mul", ["e", "g"], ["y"])]
    g = helper.make_graph(nodes, "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 28, 28])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    graph = load(model, conv_block=16)

    def rules():
        s = kernels.schedule(graph.module, cpu_tvm_target())
        return {gv.name_hint: str(f.attrs["hetpart.rule"]) for gv, f in s.functions_items()
                if isinstance(f, tirx.PrimFunc) and "sigmoid" in gv.name_hint}

    assert set(rules().values()) == {"CpuConv2d"}
    monkeypatch.setattr(cb, "PLAIN_ONE_BLOCK", False)
    assert set(rules().values()) == {"CpuMatmul"}
