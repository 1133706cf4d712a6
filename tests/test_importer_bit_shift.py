"""BitShift by every amount, in range and out of it, against ``onnx.reference``.

ONNX (opset 28) defines a shift by a negative amount or by at least the bit width:
the sign fill alone (-1 for a right shift of a negative value, else 0).  LLVM's
``shl``/``ashr``/``lshr`` by such amounts are poison (x86 masks the amount), so
``-1 << 32`` came out as -1.  Run through the CPU rules and the GPU rules
(simulated on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_cases import model, reference, run_on

DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.uint32]


def _case(dtype):
    bits = np.iinfo(dtype).bits
    info = np.iinfo(dtype)
    x = np.array([info.min, -8, -1, 0, 1, 5, info.max], dtype=np.int64)
    x = x[(x >= info.min) & (x <= info.max)].astype(dtype).reshape(-1, 1)
    y = np.array([-bits - 3, -1, 0, 1, bits - 1, bits, bits + 1, 2 * bits + 5], dtype=np.int64)
    y = y[(y >= info.min) & (y <= info.max)].astype(dtype).reshape(1, -1)
    # every pair broadcast, and again as two flat vectors; the first three pairs
    # out of range are a vector too short to vectorise (x86's scalar shifts mask
    # the amount, its vector shifts give 0)
    xf, yf = (v.ravel() for v in np.broadcast_arrays(x, y))
    out = (yf.astype(np.int64) < 0) | (yf.astype(np.int64) >= bits)
    xs, ys = xf[out & (xf != 0)][:3].copy(), yf[out & (xf != 0)][:3].copy()
    shape, flat = [x.shape[0], y.shape[1]], [xf.size]
    nodes, outs = [], []
    for d in ("LEFT", "RIGHT"):
        nodes += [helper.make_node("BitShift", ["x", "y"], [d], direction=d),
                  helper.make_node("BitShift", ["xf", "yf"], [d + "_flat"], direction=d),
                  helper.make_node("BitShift", ["xs", "ys"], [d + "_short"], direction=d)]
        outs += [(d, shape, dtype), (d + "_flat", flat, dtype), (d + "_short", [3], dtype)]
    inputs = [("x", list(x.shape), dtype), ("y", list(y.shape), dtype), ("xf", flat, dtype), ("yf", flat, dtype),
              ("xs", [3], dtype), ("ys", [3], dtype)]
    return model(nodes, inputs, outs, opset=28), {"x": x, "y": y, "xf": xf.copy(), "yf": yf.copy(), "xs": xs, "ys": ys}


@pytest.mark.parametrize("device,simulate", [
    pytest.param("cpu", False, id="cpu-rules"), pytest.param("cuda", True, id="gpu-rules"),
    pytest.param("cuda", False, id="real-gpu", marks=pytest.mark.cuda)])
def test_bit_shift_by_any_amount_matches_onnx_reference(device, simulate):
    bad = []
    for dtype in DTYPES:
        m, feeds = _case(dtype)
        want, got = reference(m, feeds), run_on(m, device, feeds, simulate=simulate)
        for name, w in want.items():
            wrong = got[name] != w
            if wrong.any():
                i = np.flatnonzero(wrong)[0]
                pair = {"flat": ("xf", "yf"), "short": ("xs", "ys")}.get(name.partition("_")[2], ("x", "y"))
                x, y = (np.broadcast_to(feeds[k], w.shape).flat[i] for k in pair)
                bad.append(f"{np.dtype(dtype).name} {name}: {wrong.sum()} wrong, e.g. {x} by {y}: "
                           f"{got[name].flat[i]}, want {w.flat[i]}")
    assert not bad, "\n".join(bad)
