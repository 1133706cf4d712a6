"""Max/min reductions and float ``Mod`` on ±Inf, NaN and zeros, against ``onnx.reference``.

Two bugs these caught: TVM starts a max (min) reduction from the lowest (highest)
*finite* value, so ReduceMax over a row of -inf gave -3.4e38 -- onnx's Attention
function then failed to see a fully masked row (``ReduceMax(bias) == -inf``) and
returned NaN where ONNX defines 0; and TVM computes ``Mod(fmod=0)`` on floats as
``x - floor(x / y) * y``, NaN for an infinite ``y`` (C's and numpy's result: ``x``
or ``y``).  Run through the CPU rules and the GPU rules (simulated on the CPU).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from onnx import helper

from onnx_cases import SPECIAL, assert_matches, model, reference, run_on

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, inside onnx.reference
F32 = np.float32
INF, NAN = np.inf, np.nan


DEVICES = [pytest.param("cpu", False, id="cpu-rules"), pytest.param("cuda", True, id="gpu-rules"),
           pytest.param("cuda", False, id="real-gpu", marks=pytest.mark.cuda)]


def _rows() -> np.ndarray:
    """Rows that end each way a max/min can: all -inf, all +inf, a NaN among
    infinities, a NaN first and last, ordinary values, ±0."""
    return np.array([
        [-INF, -INF, -INF, -INF],
        [INF, INF, INF, INF],
        [-INF, NAN, -INF, -INF],
        [NAN, 1.0, 2.0, 3.0],
        [1.0, 2.0, 3.0, NAN],
        [-3.0, 7.5, -1e30, 2.0],
        [-0.0, 0.0, -0.0, 0.0],
        [INF, -INF, 1.0, -2.0],
    ], dtype=F32)


def _reductions_and_mod():
    x = _rows()
    a, b = SPECIAL.reshape(-1, 1), SPECIAL.reshape(1, -1)
    n = SPECIAL.size
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["max_rows"], axes=[1], keepdims=1),
        helper.make_node("ReduceMin", ["x"], ["min_rows"], axes=[1], keepdims=0),
        helper.make_node("ReduceMax", ["x"], ["max_cols"], axes=[0], keepdims=0),
        helper.make_node("ReduceMin", ["x"], ["min_all"], keepdims=0),
        # the masked-row test of onnx's Attention function body
        helper.make_node("Equal", ["max_rows", "ninf"], ["row_masked"]),
        helper.make_node("Mod", ["a", "b"], ["floor_mod"], fmod=0),
    ]
    outs = [("max_rows", [8, 1], F32), ("min_rows", [8], F32), ("max_cols", [4], F32), ("min_all", [], F32),
            ("row_masked", [8, 1], np.bool_), ("floor_mod", [n, n], F32)]
    inputs = [("x", [8, 4], F32), ("a", [n, 1], F32), ("b", [1, n], F32)]
    return model(nodes, inputs, outs, {"ninf": F32(-INF)}), {"x": x, "a": a, "b": b}


@pytest.mark.parametrize("device,simulate", DEVICES)
def test_extremum_reductions_and_floor_mod_match_onnx_reference(device, simulate):
    m, feeds = _reductions_and_mod()
    want, got = reference(m, feeds), run_on(m, device, feeds, simulate=simulate)
    for name, w in want.items():
        assert_matches(got[name], w, what=name)


@pytest.mark.parametrize("device,simulate", DEVICES)
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float_mod_of_other_float_types_matches_onnx_reference(dtype, device, simulate):
    # float16: CUDA has no half fmod (the GPU build failed); computed in float32
    a, b = SPECIAL.reshape(-1, 1).astype(dtype), SPECIAL.reshape(1, -1).astype(dtype)
    n = SPECIAL.size
    m = model([helper.make_node("Mod", ["a", "b"], [f"fmod{f}"], fmod=f) for f in (0, 1)],
              [("a", [n, 1], dtype), ("b", [1, n], dtype)], [(f"fmod{f}", [n, n], dtype) for f in (0, 1)])
    feeds = {"a": a, "b": b}
    want, got = reference(m, feeds), run_on(m, device, feeds, simulate=simulate)
    for name, w in want.items():
        assert_matches(got[name], w, what=f"{name} {np.dtype(dtype).name}", rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc to cross-compile CUDA code with")
def test_float16_mod_builds_for_a_real_gpu():
    # CUDA has no half fmod: TVM's CUDA codegen refused a float16 Mod outright
    from hetpart import compiler, importer
    from onnx_cases import plan_all_on

    n = SPECIAL.size
    m = model([helper.make_node("Mod", ["a", "b"], [f"fmod{f}"], fmod=f) for f in (0, 1)],
              [("a", [n, 1], np.float16), ("b", [1, n], np.float16)],
              [(f"fmod{f}", [n, n], np.float16) for f in (0, 1)])
    compiler.compile(plan_all_on(importer.load(m), "cuda"), cuda_arch="sm_90", progress=False)


def _clips():
    """Clip with initializer bounds as torch exports ReLU6 (``Clip(x, 0, 6)``), a lower bound
    only, and after a 1x1 Conv (the bound then in the conv's fused write-back)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 1, 1)).astype(F32)
    nodes = [
        helper.make_node("Clip", ["x", "zero", "six"], ["relu6"]),
        helper.make_node("Clip", ["x", "lo"], ["floor"]),
        helper.make_node("Conv", ["img", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Clip", ["c", "zero", "six"], ["conv_relu6"]),
    ]
    n = SPECIAL.size
    outs = [("relu6", [n], F32), ("floor", [n], F32), ("conv_relu6", [1, 4, 5, 5], F32)]
    img = rng.standard_normal((1, 3, 5, 5)).astype(F32) * 8
    img.flat[::7] = 0.0
    img.flat[[3, 11, 40, 60]] = [NAN, INF, -INF, -0.0]
    m = model(nodes, [("x", [n], F32), ("img", [1, 3, 5, 5], F32)], outs,
              {"zero": F32(0.0), "six": F32(6.0), "lo": F32(-1.5), "w": w})
    return m, {"x": SPECIAL.astype(F32), "img": img}


@pytest.mark.parametrize("fold", [False, True])
def test_clip_with_constant_bounds_matches_onnx_reference(fold, monkeypatch):
    """NaN stays NaN, +-inf are clipped, -0.0 and the bounds themselves kept, with the bounds
    read from parameters or folded into one compare-select each
    (nan_semantics.BOUNDS_AS_CONSTANTS)."""
    from hetpart.importer import nan_semantics

    monkeypatch.setattr(nan_semantics, "BOUNDS_AS_CONSTANTS", fold)
    m, feeds = _clips()
    want = reference(m, feeds)
    got = run_on(m, "cpu", feeds)
    for name in want:
        assert np.isnan(want[name]).any() or name == "floor", name
        assert_matches(got[name], want[name], rtol=0, atol=0, what=name)


def test_clip_constant_bounds_are_folded_into_the_kernel(monkeypatch):
    """A ReLU6 after a conv reads no bound buffer and tests no bound for NaN: before, each
    bound was a kernel parameter and the write-back ran ``isnan(x) or isnan(lo) ? x + lo :
    max(x, lo)`` per element (mobilenet_v2 10.84 -> 10.42 ms on 1 thread, AVX2; the switch is
    off by default until the GPU's batch-1 schedules are measured with it)."""
    from onnx_cases import single_cpu_kernel

    from hetpart.importer import nan_semantics

    monkeypatch.setattr(nan_semantics, "BOUNDS_AS_CONSTANTS", True)
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["img", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Clip", ["c", "zero", "six"], ["y"])]
    m = model(nodes, [("img", [1, 8, 16, 16], F32)], [("y", [1, 16, 16, 16], F32)],
              {"zero": F32(0.0), "six": F32(6.0), "w": rng.standard_normal((16, 8, 1, 1)).astype(F32)})
    func = single_cpu_kernel(m)
    text = func.script()
    assert "isnan" not in text and len(func.params) == 3, text  # image, weight, output
