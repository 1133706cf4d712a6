"""DynamicQuantizeLinear (:class:`hetpart.importer.integer_ops.DynamicQuantizeLinear`)
against ONNX Runtime and onnx.reference, and the form of its min/max kernels.

Its min/max run as ``lanes`` partial results per row of the last axis read in place
(vectorised, rows in parallel, both in one kernel), then over the partials with the
scale and zero point in a second, the quantisation a third; the values must not change:
scale, zero point and ``y`` equal to ORT's and the reference's on negatives, zeros,
all-positive and all-negative tensors, last axes that are and are not multiples of
the lanes, and extremes at every end of a row.  Where the two references part:
an all-zero tensor (ORT: scale 1, the reference 1/255, the same ``y``: ORT's scale
is asserted), NaN (ORT's min/max skip it, the reference and hetpart give scale NaN,
as ONNX's ReduceMax does).  With an infinity, ``y`` is compared where ``x`` is finite
(``inf / inf`` is NaN: its cast to uint8 is undefined).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from host_isa import WIDTH_TARGETS, width_target
from onnx_cases import compile_on, model, reference

F32, U8 = np.float32, np.uint8
RNG = np.random.default_rng(1811)


def _model(shape):
    return model([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], [("x", shape, F32)],
                 [("y", shape, U8), ("s", (), F32), ("z", (), U8)], opset=13)


@lru_cache(maxsize=None)
def _compiled(shape):
    """The CPU build of ``_model(shape)``, once per shape: the tests of a shape differ only in
    the values they feed it (a Session per run, as ``run_on``)."""
    return compile_on(_model(shape), "cpu", simulate=False)


def _all(shape, x):
    from hetpart.runtime import Session

    m = _model(shape)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want_ort = dict(zip(["y", "s", "z"], sess.run(None, {"x": x})))
    with Session(_compiled(shape)) as s:
        got = s.run({"x": x})
    return got, want_ort, reference(m, {"x": x})


def _values(kind: str, shape) -> np.ndarray:
    x = RNG.standard_normal(shape).astype(F32) * 3
    if kind == "positive":
        x = np.abs(x) + 0.5
    elif kind == "negative":
        x = -np.abs(x) - 0.5
    elif kind == "with-zeros":
        x[..., ::3] = 0.0
    elif kind in ("first", "last"):  # the extremes at one end of the last row / first row
        flat = x.reshape(-1)
        flat[0 if kind == "first" else -1] = 40.0
        flat[-1 if kind == "first" else 0] = -55.0
    return x


SHAPES = [(2, 8, 32), (1, 4, 48), (3, 10), (7,), (2, 5, 33)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["normal", "positive", "negative", "with-zeros", "first", "last"])
def test_matches_onnxruntime_and_reference(shape, kind):
    x = _values(kind, shape)
    got, want, ref = _all(shape, x)
    for name in ("y", "s", "z"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} vs ONNX Runtime")
        np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{name} vs onnx.reference")


def test_all_zeros_has_onnxruntime_scale_and_zero_y():
    """ONNX Runtime's scale 1 (the formula's 0 would make ``y`` NaN / 0)."""
    x = np.zeros((2, 8, 32), F32)
    got, want, ref = _all(x.shape, x)
    np.testing.assert_array_equal(got["s"], want["s"])
    for name in ("y", "z"):
        np.testing.assert_array_equal(got[name], want[name])
        np.testing.assert_array_equal(got[name], ref[name])


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("where", [0, 77, -1])
def test_infinity(sign, where):
    """Scale inf; zero point 0 (+inf) or 255 (-inf: ``-(-inf) / inf`` is NaN, clamped to 255)."""
    x = RNG.standard_normal((2, 8, 32)).astype(F32)
    x.reshape(-1)[where] = sign * np.inf
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        got, want, ref = _all(x.shape, x)
    finite = np.isfinite(x)
    for other, who in ((want, "ONNX Runtime"), (ref, "onnx.reference")):
        np.testing.assert_array_equal(got["s"], other["s"], err_msg=who)
        np.testing.assert_array_equal(got["z"], other["z"], err_msg=who)
        np.testing.assert_array_equal(got["y"][finite], other["y"][finite], err_msg=who)


@pytest.mark.parametrize("where", [0, 77, -1])
def test_nan_gives_nan_scale_as_the_reference(where):
    """ONNX leaves NaN open; hetpart's min/max propagate it as onnx.reference's (numpy's) do."""
    x = RNG.standard_normal((2, 8, 32)).astype(F32)
    x.reshape(-1)[where] = np.nan
    with np.errstate(invalid="ignore"):
        got, _, ref = _all(x.shape, x)
    assert np.isnan(got["s"]) and np.isnan(ref["s"])
    np.testing.assert_array_equal(got["z"], ref["z"])


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
def test_three_kernels_min_max_in_place_as_vectors(cpu):
    """Three kernels a quantisation -- the min/max partials (one pass), the scale and
    zero point, the quantisation (TVM's converter's min, max and scalar arithmetic were
    nine) -- no reshape kernel (a copy of the input per quantisation), and the partials
    vectorised with their rows in parallel, in vectors of the target's width (16 on
    AVX-512, 8 on AVX2; the host's from /proc/cpuinfo)."""
    import tvm

    import hetpart
    from hetpart import kernels

    graph = hetpart.load(_model((1, 16, 64)))
    names = [k.func for k in graph.nodes]
    assert len(names) == 3 and not [n for n in names if n.startswith("reshape")], names
    partials = [n for n in names if "partials" in n]
    assert len(partials) == 1, names
    target, lanes = width_target(cpu)
    func = kernels.schedule(tvm.IRModule({"main": graph.module[partials[0]]}), target)["main"]
    text = func.script()
    assert func.attrs["hetpart.rule"] == "CpuReduction"
    assert f"T.vectorized(T.int64({lanes}))" in text and "T.parallel" in text, text
    assert f"T.vectorized(T.int64({2 * lanes}))" not in text, text
