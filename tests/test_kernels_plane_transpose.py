"""An NHWC -> NCHW write-back (``[H*W, O] -> [1, H, W, O] -> [1, O, H, W]``, then element-wise:
:mod:`hetpart.importer.qdq_conv`'s integer conv output) under
``cpu_injective.MERGE_PLANE_TRANSPOSE``: the plane's two iterators merged into one and the
nest tiled as a transpose -- the same values as numpy's transpose (data movement and a
ReLU: equal arrays), switch on and off; on, the scheduled block has one plane iterator.  A plane
that merges but is then no tile (7x7 with a per-channel scale): with ``MERGE_PLANE_FLAT`` off the
schedule is the one without the merge, on it keeps the merged plane; equal values either way.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper

from onnx_cases import model, run_on

from hetpart import load
from hetpart.kernels.rules import cpu_injective
from hetpart.kernels.rules.cpu_injective import CpuInjective
from hetpart.targets import cpu_tvm_target

F32 = np.float32


def _case(h, w, o):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Relu", ["t"], ["y"])]
    return model(nodes, [("x", (h * w, o), F32)], [("y", (1, o, h, w), F32)],
                 {"shape": np.array([1, h, w, o], np.int64)}, opset=13)


@pytest.mark.parametrize("h,w,o", [(14, 14, 32), (7, 7, 48), (8, 16, 16)])
@pytest.mark.parametrize("merge", [True, False])
def test_plane_transpose_values(monkeypatch, h, w, o, merge):
    monkeypatch.setattr(cpu_injective, "MERGE_PLANE_TRANSPOSE", merge)
    m = _case(h, w, o)
    x = np.random.default_rng(h + o).standard_normal((h * w, o)).astype(F32)
    x[::5] = 0.0
    got = run_on(m, "cpu", {"x": x}, simulate=False)["y"]
    want = np.maximum(x.reshape(1, h, w, o).transpose(0, 3, 1, 2), 0)
    np.testing.assert_array_equal(got, want)


def test_plane_is_merged_and_tiled(monkeypatch):
    monkeypatch.setattr(cpu_injective, "MERGE_PLANE_TRANSPOSE", True)
    graph = load(_case(8, 16, 32))  # a plane of whole vectors: the tile vectorised
    (kernel,) = [k for k in graph.kernels.values() if "transpose" in k.func]
    sch = CpuInjective().apply(graph.module[kernel.func], cpu_tvm_target())
    blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root"))]
    (block,) = blocks
    assert len(sch.get(block).iter_vars) == 3  # n, o, and the merged plane h * w
    kinds = [sch.get(lp).kind for lp in sch.get_loops(block)]
    assert tvm.tirx.ForKind.VECTORIZED in kinds


def _scaled_case(h, w, o):
    """The write-back times a per-channel scale (``[1, O, 1, 1]``: a read that is no transpose),
    on a plane of no whole vectors: the plane merges, but the merged nest is no tile
    (``MIXED_TRANSPOSE_TILES`` takes whole-vector tiles only)."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["t", "scale"], ["y"])]
    scale = np.linspace(0.5, 2.0, o, dtype=F32).reshape(1, o, 1, 1)
    return model(nodes, [("x", (h * w, o), F32)], [("y", (1, o, h, w), F32)],
                 {"shape": np.array([1, h, w, o], np.int64), "scale": scale}, opset=13), scale


def _scheduled(monkeypatch, m, **switches):
    for name, value in switches.items():
        monkeypatch.setattr(cpu_injective, name, value, raising=False)
    graph = load(m)
    (kernel,) = [k for k in graph.kernels.values() if "transpose" in k.func]
    return CpuInjective().apply(graph.module[kernel.func], cpu_tvm_target())


def test_failed_tile_leaves_no_merged_plane(monkeypatch):
    """MERGE_PLANE_FLAT off: a merge whose tile then fails leaves the schedule as without the
    merge (the same module as MERGE_PLANE_TRANSPOSE off); on: the plane stays merged."""
    m, _ = _scaled_case(7, 7, 48)
    without = _scheduled(monkeypatch, m, MERGE_PLANE_TRANSPOSE=False)
    kept = _scheduled(monkeypatch, m, MERGE_PLANE_TRANSPOSE=True, MERGE_PLANE_FLAT=False)
    tvm.ir.assert_structural_equal(kept.mod, without.mod)
    flat = _scheduled(monkeypatch, m, MERGE_PLANE_TRANSPOSE=True, MERGE_PLANE_FLAT=True)
    (block,) = flat.get_child_blocks(flat.get_sblock("root"))
    assert len(flat.get(block).iter_vars) == 3  # n, o, and the merged plane h * w
    (block,) = without.get_child_blocks(without.get_sblock("root"))
    assert len(without.get(block).iter_vars) == 4  # n, o, h, w


@pytest.mark.parametrize("flat", [True, False])
def test_failed_tile_values(monkeypatch, flat):
    monkeypatch.setattr(cpu_injective, "MERGE_PLANE_FLAT", flat, raising=False)
    m, scale = _scaled_case(7, 7, 48)
    x = np.random.default_rng(7).standard_normal((49, 48)).astype(F32)
    got = run_on(m, "cpu", {"x": x}, simulate=False)["y"]
    np.testing.assert_array_equal(got, x.reshape(1, 7, 7, 48).transpose(0, 3, 1, 2) * scale)
