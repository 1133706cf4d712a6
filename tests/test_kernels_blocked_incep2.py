"""kernels.rules.cpu_blocked_conv's inception_v3 paths on an NCHW16c import
(``load(model, conv_block=16)``):

* ``PLANE_IC_GROUPS``: a batch-1 1x1 conv on a small plane whose tile's weights overrun the bound
  runs its input channels in groups outside the plane's pixel tiles (its ragged last tile split
  off), and matches the tile it replaces and ONNX Runtime;

on inputs with negatives and zeros.  Bounds are lowered (monkeypatch) so small models take the
paths, and the target has one core (the block groups then fill it)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from hetpart.kernels.rules import cpu_blocked_conv as cb


def _conv_relu(cin: int, cout: int, hw: int, kernel=(1, 1), pads=(0, 0, 0, 0), seed: int = 3):
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, *kernel)) * 0.2).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=list(pads)), helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "incep2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, hw, hw])], inits)
    x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), x


def _build(model, x, probe):
    """``(probe(func, target) per blocked conv, output)`` of the NCHW16c build on one core."""
    import tvm
    from tvm import relax, tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    target = cpu_tvm_target(1)
    graph = load(model, conv_block=16)
    funcs = [f for _, f in graph.module.functions_items() if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in str(f)]
    vm = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())
    return [probe(f, target) for f in funcs], vm["main"](tvm.runtime.tensor(x)).numpy()


def _ort(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_plane_ic_groups_run_channel_groups_outside_pixel_tiles_and_match(monkeypatch):
    """A 64 -> 32 1x1 on 17x17 (289 pixels: a ragged last pixel tile) with the weight bounds lowered
    takes plane_groups_tile with one chunk per group; equal to the tile before (the same sums in
    the same order) and to ONNX Runtime."""
    model, x = _conv_relu(64, 32, 17)
    monkeypatch.setattr(cb, "PLANE_GROUP_MIN_TILE_WEIGHT_BYTES", 1024)
    monkeypatch.setattr(cb, "PLANE_GROUP_WEIGHT_BYTES", 16 * 16 * 4 * 2)
    groups, got = _build(model, x, cb.ic_groups_of)
    assert groups == [1]
    plans, _ = _build(model, x, cb.plan_of)
    assert plans[0].plane and 289 % plans[0].columns
    monkeypatch.setattr(cb, "PLANE_IC_GROUPS", False)
    off, before = _build(model, x, cb.ic_groups_of)
    assert off == [None]
    want = _ort(model, x)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, before, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
