"""Global pools (and means over the innermost axes) reduce each output's row along memory
(issue 18: EfficientNet's 17 squeeze-excite / head pools at batch 8 were 1.42x ONNX Runtime;
hetpart/kernels/rules/cpu_reduction.py ``CpuReduction._global_rows``, switch
``GLOBAL_POOL_ROWS``):

an NCHW global pool reduces each ``(n, c)`` plane, ``h*w`` contiguous elements; the one-reduction
schedule vectorised the output's last axis (the channels), every step a gather of ``lanes``
elements a plane apart.  Now the reduced axes are one row, reduced in vector partials (a guarded
last step where the row is no whole vectors: 14x14 = 196, 7x7 = 49), the rows in parallel.

Against ONNX Runtime (inputs with negatives and zeros; a max pool too, over all-negative rows),
built for this host; then the schedules: the row partials where the rule applies (sums: average
pools, ReduceMean over h, w), not with the switch off; a mean over the channels (no contiguous
row) and a global max pool (NaN-propagating select: no rfactor) unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cpu_tile_cases import matches_onnxruntime, mcpu_target
from onnx_cases import model, scheduled_by

from hetpart.kernels.rules import cpu_reduction


def _pool(shape, op="GlobalAveragePool", silu=False, axes=None, keepdims=1):
    """``op`` over ``x`` of ``shape`` (``ReduceMean`` over ``axes``), after ``x * sigmoid(x)``
    where ``silu`` (the squeeze-excite pool's producer, inlined into the pool)."""
    n, c = shape[:2]
    nodes, src = [], "x"
    if silu:
        nodes += [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["m"])]
        src = "m"
    if op == "ReduceMean":
        nodes.append(helper.make_node(op, [src], ["y"], axes=axes, keepdims=keepdims))
        out = [d for i, d in enumerate(shape) if i not in axes or keepdims]
        out = [1 if i in axes else d for i, d in enumerate(shape)] if keepdims else out
    else:
        nodes.append(helper.make_node(op, [src], ["y"]))
        out = [n, c, 1, 1]
    return model(nodes, [("x", tuple(shape), np.float32)], [("y", out, np.float32)], {}, opset=13)


CASES = {
    "average 2x48x14x14 (196: 24 vectors and a guarded step)": lambda: _pool((2, 48, 14, 14)),
    "average 3x40x7x7 (49)": lambda: _pool((3, 40, 7, 7)),
    "average 1x16x56x56 (3136: two chains)": lambda: _pool((1, 16, 56, 56)),
    "average of x*sigmoid(x) 2x32x14x14": lambda: _pool((2, 32, 14, 14), silu=True),
    "max 2x24x7x7": lambda: _pool((2, 24, 7, 7), op="GlobalMaxPool"),
    "ReduceMean over h, w, keepdims 0, 2x24x10x10": lambda: _pool((2, 24, 10, 10), op="ReduceMean", axes=[2, 3],
                                                                keepdims=0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_global_pools_match_onnxruntime(case):
    matches_onnxruntime(CASES[case](), case)


def test_max_pool_of_negative_rows_matches_onnxruntime():
    """Every element below 0 (and rows not whole vectors): the guarded step must combine -inf."""
    import onnxruntime as ort

    from cpu_tile_cases import build_and_run
    from hetpart.targets import cpu_tvm_target

    m = _pool((2, 16, 7, 7), op="GlobalMaxPool")
    x = -1.0 - np.random.default_rng(3).random((2, 16, 7, 7)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(build_and_run(m, {"x": x}, cpu_tvm_target()), want)


def _rows(func) -> bool:
    """Row partials: a ``*_rf`` buffer, and no vector loop over the output's channels reading the
    input a plane apart (the schedule before: ``*_red_global`` accumulators per channel vector)."""
    script = func.script()
    return "_rf = T.sblock_alloc_buffer" in script and "_red_global" not in script


@pytest.mark.parametrize("shape,op,axes", [((8, 96, 14, 14), "GlobalAveragePool", None),
                                           ((8, 64, 7, 7), "GlobalAveragePool", None),
                                           ((1, 32, 112, 112), "GlobalAveragePool", None),
                                           ((2, 24, 10, 10), "ReduceMean", [2, 3])])
def test_rows_taken_and_switch_restores_the_channel_vectors(shape, op, axes, monkeypatch):
    m = _pool(shape, op=op, axes=axes)
    func = scheduled_by(m, mcpu_target("haswell"), "CpuReduction")
    assert _rows(func), func.script()
    monkeypatch.setattr(cpu_reduction, "GLOBAL_POOL_ROWS", False)
    assert not _rows(scheduled_by(m, mcpu_target("haswell"), "CpuReduction"))


@pytest.mark.parametrize("case", ["mean over channels", "max"])
def test_not_taken_schedules_unchanged(case, monkeypatch):
    """A mean over the channels (axis 1: each output's elements a plane apart) and a global max
    pool (its NaN-propagating select is no combiner ``rfactor`` takes) keep their schedules."""
    m = (_pool((2, 32, 14, 14), op="ReduceMean", axes=[1]) if case == "mean over channels"
         else _pool((2, 24, 7, 7), op="GlobalMaxPool"))
    after = scheduled_by(m, mcpu_target("haswell"), "CpuReduction").script()
    monkeypatch.setattr(cpu_reduction, "GLOBAL_POOL_ROWS", False)
    assert scheduled_by(m, mcpu_target("haswell"), "CpuReduction").script() == after


def test_lone_sum_over_h_w_takes_the_rows_and_matches_onnxruntime():
    """ReduceSum over h, w: the reduction block alone (no divide after it), so the rows are the
    combine block's own spatial loops."""
    m = model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], [("x", (2, 24, 7, 7), np.float32)],
              [("y", [2, 24, 1, 1], np.float32)], {"axes": np.array([2, 3], np.int64)}, opset=13)
    assert _rows(scheduled_by(m, mcpu_target("haswell"), "CpuReduction"))
    matches_onnxruntime(m, "ReduceSum over h, w")
