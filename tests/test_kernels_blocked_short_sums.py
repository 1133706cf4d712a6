"""kernels.rules.cpu_blocked_conv.SHORT_SUMS_NARROW (off by default): on a 32-register CPU a
channel-blocked 1x1 of 128-255 input channels keeps the 3-spare tile (2 blocks x 7 columns)
where FEWER_SPARE_WIDE gave it 2 x 14 from 128 steps.  The build with the switch on matches the
build with it off bit for bit and ONNX Runtime, on inputs holding +-Inf, NaN, +-0 and negatives;
the tile is 2 x 7 with it, 2 x 14 without, and 384-step 1x1s keep 2 x 14 either way."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetpart.kernels.rules import cpu_blocked_conv as cb
from onnx_cases import special_tensor, update_unrolls

SWITCH = "SHORT_SUMS_NARROW"


def _model(batch: int, mid: int):
    """x[b, 16, 28, 28] -> 1x1 16->mid + ReLU -> 1x1 mid->32 (+ bias) -> + a 1x1 16->32 of x (the
    residual; mobilenet_v2's projection into 32 channels)."""
    rng = np.random.default_rng(11)
    shapes = {"wa": (mid, 16, 1, 1), "wb": (32, mid, 1, 1), "wc": (32, 16, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[1])).astype(np.float32), n)
             for n, s in shapes.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(s[0]).astype(np.float32), "b" + n) for n, s in shapes.items()]

    def conv(x, w, y):
        return helper.make_node("Conv", [x, w, "b" + w], [y])

    nodes = [conv("x", "wa", "a"), helper.make_node("Relu", ["a"], ["r"]), conv("r", "wb", "p"),
             conv("x", "wc", "q"), helper.make_node("Add", ["p", "q"], ["y"])]
    g = helper.make_graph(nodes, "proj", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32, 28, 28])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _build(model, target, on: bool, monkeypatch):
    import tvm
    from tvm import relax, tirx

    from hetpart import kernels, load

    monkeypatch.setattr(cb, SWITCH, on)
    graph = load(model, conv_block=16)
    scheduled = kernels.schedule(graph.module, target)
    tiles = {gv.name_hint: update_unrolls(f) for gv, f in scheduled.functions_items()
             if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint}
    vm = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())
    return vm, tiles


def _projection(tiles: dict, mid: int) -> list[int]:
    """The unrolled extents of the mid->32 projection's update (the one conv whose name holds two
    adds: the bias and the residual)."""
    (name,) = [n for n in tiles if n.count("add") == 2]
    return tiles[name]


@pytest.mark.parametrize("batch,mid", [(1, 144), (2, 192)])
def test_short_sums_match_and_take_seven_columns(batch, mid, monkeypatch):
    import onnxruntime as ort
    import tvm

    from hetpart.targets import cpu_tvm_target

    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
    host = cpu_tvm_target()
    model = _model(batch, mid)
    x = special_tensor((batch, 16, 28, 28), seed=4) * np.float32(2)
    # the tiles for a 32-register target (the Xeon's ISA; this host's, when it has AVX-512)
    _, wide = _build(model, target, False, monkeypatch)
    _, narrow = _build(model, target, True, monkeypatch)
    assert _projection(wide, mid) == [2, 14] and _projection(narrow, mid) == [2, 7]
    # the outputs on this host, both ways
    outs = []
    for on in (False, True):
        vm, _ = _build(model, host, on, monkeypatch)
        outs.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    np.testing.assert_array_equal(outs[1], outs[0])  # the same sums in the same order, NaN where NaN
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    finite = np.isfinite(want)
    assert finite.mean() > 0.3 and (~finite).any()
    np.testing.assert_array_equal(np.isnan(outs[1]), np.isnan(want))
    np.testing.assert_allclose(outs[1][finite], want[finite], rtol=1e-4,
                               atol=1e-4 * float(np.abs(want[finite]).max()))


def test_spare_registers_by_reduction(monkeypatch):
    from hetpart.kernels.analysis import CpuShape

    wide, ymm = CpuShape(512, 32, 2), CpuShape(256, 16, 2)
    monkeypatch.setattr(cb, SWITCH, True)
    assert [cb.spare_registers(wide, s) for s in (64, 128, 255, 256, 384)] == [3, 3, 3, 1, 1]
    assert cb.spare_registers(ymm, 384) == 3  # 16 registers: unchanged
    monkeypatch.setattr(cb, SWITCH, False)
    assert [cb.spare_registers(wide, s) for s in (64, 128, 255, 256, 384)] == [3, 1, 1, 1, 1]
