"""Conv rows whose largest divisor up to the tile's rows is half of them (inception_v3's 147-wide
stem rows: 3 x 49 with AVX2's 6 rows) in full ragged tiles (issue 18;
``register_tile.RAGGED_OVER_HALF_DIVISOR``): a 6-row tile padded 147 -> 150, not a 3-row one (6
accumulators).  Against ONNX Runtime (inputs with negatives and zeros; a ragged last tile of 3
rows under its predicate); the row counts; the schedule with the switch on and off; AVX-512 (8
rows: 147 takes 7) unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_cases import assert_matches, model, onnxruntime_outputs, run_on, scheduled_by

from hetpart.kernels import register_tile
from cpu_tile_cases import mcpu_target


def _conv(c_in=4, c_out=16, h=5, w=149, pads=(0, 0, 0, 0)):
    rng = np.random.default_rng(11)
    wt = (rng.standard_normal((c_out, c_in, 3, 3)) / 6).astype(np.float32)
    b = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
    oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=list(pads)),
             helper.make_node("Relu", ["c"], ["y"])]
    return model(nodes, [("x", (1, c_in, h, w), np.float32)], [("y", [1, c_out, oh, ow], np.float32)],
                 initializers={"w": wt, "b": b})


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1)], ids=["149 -> 147 wide", "147 wide, pad 1"])
def test_ragged_rows_match_onnxruntime(pads):
    m = _conv(w=149 if pads[1] == 0 else 147, pads=pads)
    rng = np.random.default_rng(2)
    x = rng.standard_normal([d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = run_on(m, "cpu", {"x": x})["y"]
    (want,) = onnxruntime_outputs(m, {"x": x})
    assert_matches(got, want, rtol=1e-5, atol=1e-5, what=str(pads))


def test_row_counts(monkeypatch):
    assert register_tile._row_count(147, 6) == 6  # 3 divides it: half the rows, padded 147 -> 150 instead
    assert register_tile._row_count(35, 6) == 5  # a divisor over half: kept
    assert register_tile._row_count(147, 8) == 7  # AVX-512's rows
    assert register_tile._row_count(28, 8) == 7
    assert register_tile._row_count(27, 6) == 3  # 27 -> 30 would pad a ninth: kept
    monkeypatch.setattr(register_tile, "RAGGED_OVER_HALF_DIVISOR", 0)
    assert register_tile._row_count(147, 6) == 3


def _script(m, mcpu):
    func = scheduled_by(m, mcpu_target(mcpu), "CpuConv2d")
    return func.script()


def test_the_switch_takes_six_rows_on_avx2_only(monkeypatch):
    m = _conv()
    assert "T.unroll(T.int64(6))" in _script(m, "haswell")
    avx512 = _script(m, "skylake-avx512")
    monkeypatch.setattr(register_tile, "RAGGED_OVER_HALF_DIVISOR", 0)
    assert "T.unroll(T.int64(6))" not in _script(m, "haswell")
    assert _script(m, "skylake-avx512") == avx512
