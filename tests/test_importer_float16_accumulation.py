"""Float16 MatMul, Conv, Softmax and ReduceSum/Mean against ``onnx.reference``.

Caught: TVM accumulated float16 dot products and sums in float16, rounding at every
step, where ONNX rounds each op's result once (numpy and onnxruntime accumulate in
float32): the onnx float16 attention tests came out 1 ulp off in up to 17% of the
elements.  Run through the CPU rules and the GPU rules (simulated on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_cases import assert_matches, model, reference, run_on

F16 = np.float16


def _case():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (8, 512)).astype(F16)
    b = rng.uniform(0, 1, (512, 16)).astype(F16)
    x = rng.uniform(-4, 4, (2, 4, 64)).astype(F16)
    w = rng.uniform(-1, 1, (6, 4, 5)).astype(F16)
    s = rng.uniform(-3, 3, (4, 300)).astype(F16)
    nodes = [helper.make_node("MatMul", ["a", "b"], ["mm"]),
             helper.make_node("Conv", ["x", "w"], ["conv"]),
             helper.make_node("Softmax", ["s"], ["softmax"], axis=-1),
             helper.make_node("ReduceSum", ["s", "axes"], ["sum"], keepdims=0),
             helper.make_node("ReduceMean", ["s"], ["mean"], axes=[1], keepdims=0)]
    outs = [("mm", [8, 16], F16), ("conv", [2, 6, 60], F16), ("softmax", [4, 300], F16),
            ("sum", [4], F16), ("mean", [4], F16)]
    inputs = [("a", [8, 512], F16), ("b", [512, 16], F16), ("x", [2, 4, 64], F16), ("w", [6, 4, 5], F16),
              ("s", [4, 300], F16)]
    return model(nodes, inputs, outs, {"axes": np.array([1], np.int64)}), {"a": a, "b": b, "x": x, "w": w, "s": s}


@pytest.mark.parametrize("device,simulate", [
    pytest.param("cpu", False, id="cpu-rules"), pytest.param("cuda", True, id="gpu-rules"),
    pytest.param("cuda", False, id="real-gpu", marks=pytest.mark.cuda)])
def test_float16_accumulates_as_onnx_reference(device, simulate):
    m, feeds = _case()
    want, got = reference(m, feeds), run_on(m, device, feeds, simulate=simulate)
    for name, w in want.items():
        # the onnx backend tests' tolerance: below float16's resolution (~1e-3), so a
        # result may differ from the reference by rounding at most
        assert_matches(got[name], w, rtol=1e-3, atol=1e-7, what=name)
