"""Row counts of a row-major matmul's CPU tile on 16-register (AVX2) targets (issue 18).

A matmul ``x[b, M, K] @ W[K, N]`` is tiled rows of ``M`` x vectors of ``N``, written back row
by row.  Where ``M`` has no divisor from 2 to 6 but 7 (CLIP text's 77 tokens, a 49-token
case here) ``register_tile._exact_wide_rows`` took 7 rows x 2 vectors, which spilled its 14
accumulators on AVX2 (CLIP's MLP 1.75x ONNX Runtime); with
``register_tile.WIDE_ROWS_ROW_MAJOR`` off such a tile keeps the default 6 rows (the last tile
ragged).  A 1x1 convolution (vectors along the channels, rows along the plane: a transposed
write-back) keeps its 7 rows, and AVX-512 (32 registers) its wider tiles.

Against ONNX Runtime (inputs with negatives and zeros; bias + quick_gelu and bias + gelu_new
epilogues as CLIP and GPT-2 export them; rtol 1e-5), built for ``haswell`` and the host.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cpu_tile_cases import build_and_run, conv, host_has_avx2, mcpu_target, random_feeds, scheduled, tile_rows
from onnx_cases import assert_matches, model, onnxruntime_outputs

from hetpart.kernels import register_tile
from hetpart.kernels.rules import cpu_matmul
from hetpart.targets import cpu_tvm_target


def _linear(m=49, k=512, n=32, act="quick", batch=1):
    """``x[batch, m, k] @ W[k, n] + b`` then CLIP's quick_gelu, GPT-2's gelu_new or nothing."""
    rng = np.random.default_rng(m * 7 + k + n)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = (rng.standard_normal(n) * 0.5).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["a"])]
    consts = {"w": w, "b": b}
    if act == "quick":
        nodes += [helper.make_node("Mul", ["a", "q"], ["aq"]), helper.make_node("Sigmoid", ["aq"], ["g"]),
                  helper.make_node("Mul", ["a", "g"], ["y"])]
        consts["q"] = np.array(1.702, np.float32)
    elif act == "tanh":
        nodes += [helper.make_node("Pow", ["a", "three"], ["c"]), helper.make_node("Mul", ["c", "k"], ["ck"]),
                  helper.make_node("Add", ["a", "ck"], ["i"]), helper.make_node("Mul", ["i", "s"], ["si"]),
                  helper.make_node("Tanh", ["si"], ["t"]), helper.make_node("Add", ["t", "one"], ["p"]),
                  helper.make_node("Mul", ["a", "half"], ["h"]), helper.make_node("Mul", ["h", "p"], ["y"])]
        consts.update(three=np.array(3.0, np.float32), k=np.array(0.044715, np.float32),
                      s=np.array(np.sqrt(2 / np.pi), np.float32), one=np.array(1.0, np.float32),
                      half=np.array(0.5, np.float32))
    else:
        nodes.append(helper.make_node("Identity", ["a"], ["y"]))
    return model(nodes, [("x", (batch, m, k), np.float32)], [("y", [batch, m, n], np.float32)], consts, opset=13)


CASES = {
    "49x512 @ 512x32 + quick_gelu": lambda: _linear(),
    "2x49x512 @ 512x32 + gelu_new": lambda: _linear(act="tanh", batch=2),
    "77x512 @ 512x16 (one vector)": lambda: _linear(77, 512, 16, act="none"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mcpu", ["haswell", "host"])
def test_row_major_tiles_match_onnxruntime(case, mcpu):
    if mcpu == "haswell" and not host_has_avx2():
        pytest.skip("an AVX2 build needs an AVX2 host to run")
    m = CASES[case]()
    feeds = random_feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    assert (want < 0).any() and (want > 0).any()
    got = build_and_run(m, feeds, cpu_tvm_target() if mcpu == "host" else mcpu_target(mcpu))
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=f"{case} ({mcpu})")


def test_row_major_matmul_keeps_default_rows_on_avx2(monkeypatch):
    """49 rows on AVX2: the default (ragged) row count, as with no wide rows at all, not the 7
    the wide rows took; AVX-512 keeps its 7 (register_tile._rows_for_32_registers)."""
    m = _linear()
    rows = tile_rows(scheduled(m, "haswell"))
    assert tile_rows(scheduled(m, "skylake-avx512")) == 7
    monkeypatch.setattr(register_tile, "WIDE_ROWS_MIN_REDUCTION", 10**9)
    assert rows == tile_rows(scheduled(m, "haswell")) < 7


def test_switch_on_restores_wide_rows(monkeypatch):
    monkeypatch.setattr(register_tile, "WIDE_ROWS_ROW_MAJOR", True)
    assert tile_rows(scheduled(_linear(), "haswell")) == 7


def test_transposed_write_back_keeps_wide_rows(monkeypatch):
    """A 1x1 conv on 7x7 (rows along the plane, the tile written back transposed): 7 rows (its
    channels-inner plane, cpu_matmul.CHANNELS_INNER_ROWS, off: test_kernels_r50_late.py)."""
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    assert tile_rows(scheduled(conv(512, 32, 7), "haswell")) == 7
