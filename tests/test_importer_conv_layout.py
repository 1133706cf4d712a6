"""importer.conv_layout: ``load(model, conv_block=8)`` imports the convolutions in NCHW8c (an
all-CPU build's opt-in, recorded on the graph and in the compiled manifest), compiles on the
CPU and matches ONNX Runtime; the default import is unchanged (NCHW); a bad block or a plan
placing a partition of such a graph on the GPU is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blocked_conv_cases import four_conv_model  # noqa: E402

from hetpart.errors import ModelLoadError, PlanError  # noqa: E402


def _all_cpu(graph, plan_for):
    """``graph`` compiled with every kernel on the CPU."""
    from hetpart import compiler

    return compiler.compile(plan_for(graph, {k: "cpu" for k in graph.kernels}), progress=False)


def _matches_ort(model, graph, cm, compose, shape: tuple, seed: int) -> None:
    """``cm`` (``graph``, ``model`` imported blocked, compiled) matches ONNX Runtime on a seeded
    standard normal input of ``shape`` with every 7th value zero (rtol 1e-4; atol 1e-4 of the
    output's largest magnitude)."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = compose(cm, {graph.inputs[0]: x})[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_conv_block_compiles_for_the_cpu_and_matches_ort(plan_for, compose, tmp_path):
    import hetpart

    model = four_conv_model(2, 7)
    graph = hetpart.load(model, conv_block=8)
    funcs = [k.func for k in graph.kernels.values()]
    assert graph.conv_block == 8
    assert sum("conv2d_NCHWc" in f for f in funcs) == 4
    assert sum("layout_transform" in f for f in funcs) == 2  # the model's two ends
    plain = hetpart.load(model)
    assert plain.conv_block is None and not any("NCHWc" in k.func or "layout" in k.func for k in plain.kernels.values())

    cm = _all_cpu(graph, plan_for)
    assert cm.conv_block == 8 and cm.manifest()["conv_block"] == 8
    assert hetpart.load_compiled(cm.save(tmp_path / "c")).conv_block == 8
    _matches_ort(model, graph, cm, compose, (2, 8, 7, 7), seed=2)


def test_conv_block_refuses_gpu_partitions_and_bad_blocks(plan_for):
    import hetpart
    from hetpart import compiler

    graph = hetpart.load(four_conv_model(1, 7), conv_block=8)
    order = graph.topological_order()
    plan = plan_for(graph, {k: ("cuda" if k == order[-1] else "cpu") for k in order})
    with pytest.raises(PlanError, match="conv_block=8"):
        compiler.compile(plan, simulate=True, progress=False)
    for bad in (4, 12, True, "8"):
        with pytest.raises(ModelLoadError, match="conv_block"):
            hetpart.load(four_conv_model(1, 7), conv_block=bad)


def _dense_block():
    """densenet's first dense block in small: a 3-channel stem conv (stays NCHW: 3 is no
    multiple of 8), two growth convs whose outputs two later concats read, the first
    concat input the stem's output (so the concats keep NCHW and the growth outputs go back)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    shapes = {"w0": (8, 3, 3, 3), "w1": (8, 8, 3, 3), "w2": (8, 16, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in shapes.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["s"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Conv", ["r", "w1"], ["g1"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["s", "g1"], ["c1"], axis=1),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["g2"]),
        helper.make_node("Concat", ["s", "g1", "g2"], ["y"], axis=1),
    ]
    g = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 7, 7])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_tensor_two_consumers_need_in_nchw_is_converted_once(monkeypatch):
    """g1 (NCHW8c, a blocked conv's output) feeds two NCHW concats: one transform back, not
    one per consumer (conv_layout.SHARED_TRANSFORMS; transforms left unfused to count them)."""
    import hetpart
    from hetpart.importer import blocked_regions, blocked_sink, conv_layout

    monkeypatch.setattr(conv_layout, "FUSED_TRANSFORMS", False)
    monkeypatch.setattr(blocked_regions, "WIDEN_BLOCKED", False)  # ConvertLayout's transforms as it leaves them
    monkeypatch.setattr(blocked_sink, "BLOCKED_DEPTHWISE", False)  # (on, the block runs blocked throughout: below)
    graph = hetpart.load(_dense_block(), conv_block=8)
    # to NCHW8c: r, relu(c1) (the convs' inputs); back: g1 (once for both concats), g2
    assert sum("layout_transform" in k.func for k in graph.kernels.values()) == 4


def test_layout_transforms_fuse_with_their_injective_neighbours(plan_for, compose, monkeypatch):
    """conv_layout.FUSED_TRANSFORMS: the ReLU and the concat + ReLU before a blocked conv write
    NCHW8c themselves, the last concat reads g2 blocked; only g1's transform back (two
    consumers) runs alone.  The build matches ORT on inputs with negatives and zeros."""
    import hetpart
    from hetpart.importer import blocked_regions, blocked_sink

    monkeypatch.setattr(blocked_regions, "WIDEN_BLOCKED", False)  # ConvertLayout's transforms as it leaves them
    monkeypatch.setattr(blocked_sink, "BLOCKED_DEPTHWISE", False)
    model = _dense_block()
    graph = hetpart.load(model, conv_block=8)
    funcs = [k.func for k in graph.kernels.values()]
    assert sum(f.startswith("te_layout_transform") for f in funcs) == 1, funcs
    assert sum(f.startswith("fused_") and "layout_transform" in f for f in funcs) == 3, funcs
    _matches_ort(model, graph, _all_cpu(graph, plan_for), compose, (1, 3, 7, 7), seed=4)


def test_a_dense_block_runs_blocked_from_its_stem(plan_for, compose):
    """blocked_sink.BLOCKED_STEM + the concats of sink_blocked: the 3-channel 3x3 stem writes
    NCHW8c, the concats and their ReLUs run blocked, so the only transform is the output's
    (densenet121's first dense block stayed NCHW before, 14 transforms).  Matches ORT."""
    import hetpart

    model = _dense_block()
    graph = hetpart.load(model, conv_block=8)
    funcs = [k.func for k in graph.kernels.values()]
    assert sum("layout_transform" in f for f in funcs) == 1, funcs
    assert any("conv2d_NCHW_to_NCHWc" in f for f in funcs) and any("concatenate" in f for f in funcs)
    _matches_ort(model, graph, _all_cpu(graph, plan_for), compose, (1, 3, 7, 7), seed=4)


def test_the_host_block_is_the_cpus_float_lanes():
    """``auto`` (CLI, corpus): 16 on AVX-512, 8 on AVX2 -- a wider block than the lanes is
    correct but slower (NCHW16c on AVX2 1.16x of NCHW)."""
    from tvm.target import Target

    from hetpart.importer.conv_layout import host_block

    def x86(mcpu):
        return Target({"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": mcpu})

    assert host_block(x86("skylake-avx512")) == 16
    assert host_block(x86("znver3")) == 8 and host_block(x86("haswell")) == 8
    assert host_block(Target({"kind": "llvm", "mtriple": "aarch64-unknown-linux-gnu"})) == 8  # 4 lanes: at least 8
