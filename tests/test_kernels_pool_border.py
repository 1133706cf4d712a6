"""MaxPool over a padded input in border and interior parts (issue 18; rules/cpu_reduction.py,
``POOL_BORDER_PARTS``): the output rows and row vectors are partitioned at the interior's
bounds, so the padding's bounds test (an ``if_then_else`` per element, inlined) is left only in
the border parts.  Before, every window step of every vector tested its lanes: resnet50's /
densenet121's 3x3 stride-2 stem pool (pad 1) took 1.8x ONNX Runtime's time.

Against ONNX Runtime and onnx.reference (inputs with negatives, zeros and all-negative
windows -- the padding is -inf, not 0; no NaN: ORT, onnx.reference and hetpart's max each
treat a NaN in a window differently, before this change too; stride 1 and 2, pads 1 and 2, ceil_mode,
a batch of 2, rows of 4, 2 and 8 lanes, 16+ planes); then the schedule: the interior parts' loops start
past the border with the switch on, none do with it off; unpadded pools and pools of fewer
than 16 planes are unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_cases import assert_matches, model, onnxruntime_outputs, reference, run_on, scheduled_by

from hetpart.kernels.rules import cpu_reduction
from cpu_tile_cases import mcpu_target


def _pool(c, hw, k=3, stride=2, pad=1, ceil=0, batch=1):
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[stride, stride],
                            pads=[pad] * 4, ceil_mode=ceil)
    span = hw + 2 * pad - k
    out = (-(-span // stride) if ceil else span // stride) + 1
    return model([node], [("x", (batch, c, hw, hw), np.float32)], [("y", [batch, c, out, out], np.float32)], opset=13)


CASES = {
    "3x3 s2 pad 1 on 32x32 (resnet50's stem, smaller)": lambda: _pool(16, 32),
    "3x3 s1 pad 1 on 28x28 (googlenet's branch pool)": lambda: _pool(16, 28, stride=1),
    "3x3 s1 pad 1 on 14x14": lambda: _pool(17, 14, stride=1),
    "5x5 s1 pad 2 on 24x24": lambda: _pool(16, 24, k=5, stride=1, pad=2),
    "3x3 s2 pad 1 ceil_mode on 56x56": lambda: _pool(16, 56, ceil=1),
    "3x3 s2 pad 1 on 32x32, batch 2": lambda: _pool(8, 32, batch=2),
}


def _feeds(m) -> dict:
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    x[..., :4, :4] = -5.0 - rng.random(x[..., :4, :4].shape).astype(np.float32)  # all-negative corner windows
    return {"x": x}


@pytest.mark.parametrize("case", list(CASES))
def test_padded_max_pool_matches_onnxruntime_and_the_reference(case):
    m = CASES[case]()
    feeds = _feeds(m)
    got = run_on(m, "cpu", feeds)["y"]
    (want,) = onnxruntime_outputs(m, feeds)
    assert (want < 0).any(), "a corner window of negatives: the padding must not win"
    assert_matches(got, want, rtol=0, atol=0, what=case)
    assert_matches(got, reference(m, feeds)["y"], rtol=0, atol=0, what=case)


def _scheduled(m, mcpu: str = "haswell"):
    func = scheduled_by(m, mcpu_target(mcpu), "CpuReduction")
    return func.script()


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
def test_interior_parts_start_past_the_border(mcpu, monkeypatch):
    """The stem pool's rows 1..55 and vectors 1.. of a row are loops of their own (their
    ``range`` starts at 1); with the switch off, one nest.  (With ``SEPARABLE_POOL``, the
    default, this pool is the separable window instead: tests/test_kernels_separable_pool.py.)"""
    monkeypatch.setattr(cpu_reduction, "SEPARABLE_POOL", False)
    m = _pool(16, 112)
    assert "range(T.int64(1), T.int64(56))" in _scheduled(m, mcpu)
    monkeypatch.setattr(cpu_reduction, "POOL_BORDER_PARTS", False)
    assert "range(T.int64(1)," not in _scheduled(m, mcpu)


@pytest.mark.parametrize("m", [lambda: _pool(16, 37, pad=0), lambda: _pool(8, 112)],
                         ids=["no padding", "8 planes: too few for the parallel loop over planes alone"])
def test_other_pools_unchanged(m, monkeypatch):
    """inception's 3x3 stride-2 pool with no padding has no bounds test, and a pool of fewer
    than POOL_BORDER_MIN_PLANES planes keeps its parallel rows: scheduled as before."""
    monkeypatch.setattr(cpu_reduction, "SEPARABLE_POOL", False)
    model_ = m()
    after = _scheduled(model_)
    monkeypatch.setattr(cpu_reduction, "POOL_BORDER_PARTS", False)
    assert _scheduled(model_) == after
