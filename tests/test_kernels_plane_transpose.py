"""An NHWC -> NCHW write-back (``[H*W, O] -> [1, H, W, O] -> [1, O, H, W]``, then element-wise:
:mod:`hetpart.importer.qdq_conv`'s integer conv output) under
``cpu_injective.MERGE_PLANE_TRANSPOSE``: the plane's two iterators merged into one and the
nest tiled as a transpose -- the same values as numpy's transpose (data movement and a
ReLU: equal arrays), switch on and off; on, the scheduled block has one plane iterator.
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
