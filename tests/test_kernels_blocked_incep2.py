"""kernels.rules.cpu_blocked_conv's inception_v3 paths on an NCHW16c import
(``load(model, conv_block=16)``):

* ``PLANE_IC_GROUPS``: a batch-1 1x1 conv on a small plane whose tile's weights overrun the bound
  runs its input channels in groups outside the plane's pixel tiles (its ragged last tile split
  off), and matches the tile it replaces and ONNX Runtime;
* ``PLANE_KX1``: a 7x1 conv without column padding takes that plane tile too;
* ``ALL_BLOCKS``: a conv of 5 output chunks and a small weight tiles all 5 at once, and
  ``ALL_BLOCKS_PLANE`` one of 7 (a larger weight) all 7 on its plane under ``PLANE_IC_GROUPS``;

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


def _matches(got, before, model, x) -> None:
    """``got`` (the switch on) equals ``before`` (off: the same sums in the same order, up to
    float rounding) and ONNX Runtime's output of ``model`` on ``x``."""
    want = _ort(model, x)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, before, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


def test_plane_ic_groups_run_channel_groups_outside_pixel_tiles_and_match(monkeypatch):
    """A 64 -> 32 1x1 on 17x17 (289 pixels: a ragged last pixel tile) with the weight bounds lowered
    takes plane_groups_tile with one chunk per group; equal to the tile before (the same sums in
    the same order) and to ONNX Runtime."""
    model, x = _conv_relu(64, 32, 17)
    monkeypatch.setattr(cb, "PLANE_GROUP_MIN_TILE_WEIGHT_BYTES", 1024)
    monkeypatch.setattr(cb, "PLANE_GROUP_WEIGHT_BYTES", 16 * 16 * 4 * 2)
    probes, got = _build(model, x, lambda f, t: (cb.ic_groups_of(f, t), cb.plan_of(f, t)))
    assert [g for g, _ in probes] == [1]
    plan = probes[0][1]
    assert plan.plane and 289 % plan.columns
    monkeypatch.setattr(cb, "PLANE_IC_GROUPS", False)
    off, before = _build(model, x, cb.ic_groups_of)
    assert off == [None]
    _matches(got, before, model, x)


def test_plane_kx1_tiles_the_plane_under_ic_groups_and_matches(monkeypatch):
    """A 32 -> 32 7x1 conv (pads 3, 0) on 17x17 -- no column padding -- with the weight bounds lowered
    takes plane_groups_tile (PLANE_KX1: tap kh reads the plane kh rows on); equal to the row tile
    and to ONNX Runtime."""
    model, x = _conv_relu(32, 32, 17, kernel=(7, 1), pads=(3, 0, 3, 0), seed=4)
    monkeypatch.setattr(cb, "PLANE_GROUP_MIN_TILE_WEIGHT_BYTES", 1024)
    monkeypatch.setattr(cb, "PLANE_GROUP_WEIGHT_BYTES", 7 * 16 * 16 * 4 * 2)
    groups, got = _build(model, x, cb.ic_groups_of)
    assert groups == [1]
    monkeypatch.setattr(cb, "PLANE_KX1", False)
    off, before = _build(model, x, cb.ic_groups_of)
    assert off == [None]
    _matches(got, before, model, x)


def test_all_blocks_tile_five_chunks_at_once_and_match(monkeypatch):
    """A 16 -> 80 1x1 on 13x13 (5 output chunks: a prime past MAX_BLOCKS_WIDE, a 5 KiB weight)
    takes one tile of all 5 blocks on a 32-register CPU (ALL_BLOCKS; its 13 columns ragged);
    equal to the one-block tile and to ONNX Runtime."""
    from hetpart.kernels.analysis import cpu_shape
    from hetpart.targets import cpu_tvm_target

    if cpu_shape(cpu_tvm_target(1)).registers < 32:
        import pytest

        pytest.skip("ALL_BLOCKS is for 32 vector registers (AVX-512)")
    model, x = _conv_relu(16, 80, 13, seed=5)
    plans, got = _build(model, x, cb.plan_of)
    assert plans[0].blocks == 5 and plans[0].columns >= 4
    monkeypatch.setattr(cb, "ALL_BLOCKS", False)
    plans_off, before = _build(model, x, cb.plan_of)
    assert plans_off[0].blocks == 1
    _matches(got, before, model, x)


def test_all_blocks_plane_tiles_seven_chunks_under_ic_groups_and_match(monkeypatch):
    """A 32 -> 112 1x1 on 14x14 (7 output chunks: no 4 columns of 7 blocks fit the registers) with
    the group bounds lowered takes ALL_BLOCKS_PLANE -- 7 blocks x 3 plane pixels (196: ragged)
    under PLANE_IC_GROUPS; equal to the one-block tile and to ONNX Runtime."""
    from hetpart.kernels.analysis import cpu_shape
    from hetpart.targets import cpu_tvm_target

    if cpu_shape(cpu_tvm_target(1)).registers < 32:
        import pytest

        pytest.skip("ALL_BLOCKS_PLANE is for 32 vector registers (AVX-512)")
    model, x = _conv_relu(32, 112, 14, seed=6)
    monkeypatch.setattr(cb, "PLANE_GROUP_MIN_TILE_WEIGHT_BYTES", 1024)
    monkeypatch.setattr(cb, "PLANE_GROUP_WEIGHT_BYTES", 16 * 7 * 16 * 4)
    probes, got = _build(model, x, lambda f, t: (cb.ic_groups_of(f, t), cb.plan_of(f, t)))
    groups, plan = probes[0]
    assert groups == 1 and plan.blocks == 7 and plan.plane and 196 % plan.columns
    monkeypatch.setattr(cb, "ALL_BLOCKS_PLANE", False)
    plans_off, before = _build(model, x, cb.plan_of)
    assert plans_off[0].blocks == 1
    _matches(got, before, model, x)
