"""tools/nchwc_ab.py: a conv -> relu -> conv chain imported in NCHW8c (layout transforms at
the chain's two ends only), legalised by TOPI's NCHWc compute, built by hetpart and matching
ONNX Runtime; hetpart's import restored after the block."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import nchwc_ab  # noqa: E402


def _chain(c=16, hw=6) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = [numpy_helper.from_array(rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.2, f"w{i}") for i in (1, 2)]
    b = [numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), f"b{i}") for i in (1, 2)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, hw, hw])], w + b)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_chain_in_nchw8c_builds_and_matches_ort():
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from hetpart import kernels, load
    from hetpart.importer import fusion
    from hetpart.targets import cpu_tvm_target

    model = _chain()
    before = (fusion.propagate_nan, fusion.LEGALIZE)
    with nchwc_ab.nchwc_import(8):
        graph = load(model)
    assert (fusion.propagate_nan, fusion.LEGALIZE) == before
    funcs = [k.func for k in graph.kernels.values()]
    assert sum("conv2d_NCHWc" in f for f in funcs) == 2
    assert sum("layout_transform" in f for f in funcs) == 2  # the chain's two ends, none between
    assert not nchwc_ab.relax_op_counts(graph.module)  # every conv legalised
    rules = dict(nchwc_ab.kernel_rules(graph.module, cpu_tvm_target()))
    convs = {r for f, r in rules.items() if "conv2d" in f}  # the blocked tile, its columns the host's
    assert len(convs) == 1 and convs.pop().startswith("CpuConv2d [2 oc blocks x 1x8 lanes x ")

    x = np.random.default_rng(0).standard_normal((2, 16, 6, 6)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    vm = relax.VirtualMachine(kernels.build(graph.module, cpu_tvm_target()), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5

    pairs = nchwc_ab.conv_pairs(load(model), graph)
    assert [n for _, _, n in pairs] == [1, 1] and all("NCHWc" in b.func for _, b, _ in pairs)


def test_per_kernel_times_each_conv_in_both_layouts():
    import time

    from hetpart import load

    model = _chain(c=8, hw=4)
    base = load(model)
    with nchwc_ab.nchwc_import(8):
        blocked = load(model)
    seen = []
    rows = nchwc_ab.per_kernel(base, blocked, calls=1, rounds=1, clock=time.perf_counter,
                               before=("hetpart.kernels.rules.cpu_blocked_conv.BLOCKED_TILE=0",), on_row=seen.append)
    assert seen == rows  # each row reported as it is done
    convs = [r for r in rows if "n" in r]
    assert len(convs) == 2 and all(len(r["ms"]) == 3 and min(r["ms"]) > 0 for r in convs)  # NCHW, NCHWc, before
    from hetpart.kernels.rules import cpu_blocked_conv
    assert cpu_blocked_conv.BLOCKED_TILE  # the switch restored
    other = {k: v for r in rows if "n" not in r for k, v in r.items() if k.startswith("other")}
    assert other["other_nchw"] == 0.0 and other["other_nchwc"] > 0  # only the NCHWc side transforms
