"""A softmax over a single row (``[1, N]``, e.g. a classifier's 1000 logits at batch 1)
through the CPU reduction rule, against ONNX Runtime.

The bug: the rule's normal form drops the unit row loop of the last (element-wise)
block, so its only loop -- the one along the row -- was taken for the parallel "row"
loop, vectorised, and the row's max and sum computed inside it: a vector of the
row's width (8 or 16 on AVX2/AVX-512) then failed to build ("VectorizeLoop before
LiftStorageAlloc"), and other widths (N=1000) fell back to the unscheduled kernel.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import helper

from onnx_cases import model
from softmax_cases import fused_softmax

from hetpart import kernels
from hetpart.targets import host_triple


def _softmax_model(n: int):
    return model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [("x", [1, n], np.float32)],
                 [("y", [1, n], np.float32)])


@pytest.mark.parametrize("n", [16, 1000])
def test_single_row_softmax_matches_onnxruntime(n):
    import hetpart

    m = _softmax_model(n)
    graph = hetpart.load(m)
    plan = hetpart.partition(graph, pins=[f"{k.id}=cpu" for k in graph.nodes], progress=False)
    x = np.random.default_rng(n).standard_normal((1, n)).astype(np.float32) * 4
    with hetpart.Session(hetpart.compile(plan, progress=False)) as s:
        got = s.run({"x": x})["y"]
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
@pytest.mark.parametrize("n", [4, 8, 16, 1000])
def test_single_row_softmax_is_scheduled_by_the_reduction_rule(n, mcpu):
    """Build only (the host may lack AVX-512): the reduction rule schedules the row and
    TVM builds it, for rows as wide as one vector and wider."""
    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 16})
    func, mod = fused_softmax(1, n)
    assert str(kernels.schedule_primfunc(func, target).attrs[kernels.RULE_ATTR]) == "CpuReduction"
    kernels.build(mod, target)
