"""Softplus, Mish and Tanh near 0 and far out, against ``onnx.reference``.

Caught: TVM computes ``log(1 + exp(x))`` (Softplus, Mish) and ``tanh`` (as
``(1 - e) / (1 + e)``) with the cancellation that loses a small argument's digits:
Mish(-10) was 1.3e-3 relative off, tanh(1e-6) 1.3e-2.  Run through the CPU rules
and the GPU rules (simulated on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_cases import SPECIAL, assert_matches, model, reference, run_on

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, inside onnx.reference
F32 = np.float32


def _values() -> np.ndarray:
    mags = np.geomspace(1e-30, 30.0, 200)
    return np.concatenate([SPECIAL, mags, -mags]).astype(F32)


@pytest.mark.parametrize("device,simulate", [
    pytest.param("cpu", False, id="cpu-rules"), pytest.param("cuda", True, id="gpu-rules"),
    pytest.param("cuda", False, id="real-gpu", marks=pytest.mark.cuda)])
def test_softplus_mish_tanh_keep_their_digits(device, simulate):
    x = _values()
    ops = ("Softplus", "Mish", "Tanh")
    m = model([helper.make_node(op, ["x"], [op]) for op in ops], [("x", [x.size], F32)],
              [(op, [x.size], F32) for op in ops], opset=18)
    want, got = reference(m, {"x": x}), run_on(m, device, {"x": x}, simulate=simulate)
    for op in ops:
        assert_matches(got[op], want[op], rtol=2e-6, atol=1e-37, what=op)


def test_float16_softplus_matches_onnx_reference():
    x = _values().astype(np.float16)
    m = model([helper.make_node("Softplus", ["x"], ["y"])], [("x", [x.size], np.float16)],
              [("y", [x.size], np.float16)])
    assert_matches(run_on(m, "cpu", {"x": x}, simulate=False)["y"], reference(m, {"x": x})["y"],
                   rtol=1e-3, atol=1e-7, what="float16 Softplus")
