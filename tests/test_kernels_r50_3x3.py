"""resnet50's 3x3 convs on a 7-wide output all-CPU (issue 18; bench/results/cpu-r50-3x3-2core.md):
a windowed conv under the output-channel tile whose output rows are at most 7 wide and whose
default row count leaves a ragged tile (7 columns as 4 + 3 on AVX2) iterates its output plane
fused, ``q = oh * 7 + ow`` (``cpu_conv2d.FUSED_WINDOW_PLANE``), its window read at ``q // 7``,
``q % 7``: 5 plane rows x 2 vectors on AVX2 (49 = 9 x 5 + 4), whatever the image's layout (the
stride-1 3x3 reads the channels-inner copy, the stride-2 one the image's).

Against ONNX Runtime and onnx.reference (inputs with negatives and zeros; ReLU, residual add +
ReLU at batch 2, bias alone; stride 1 and 2), built for this host; then the schedules with the
switch on and off for AVX2, and AVX-512 (7 rows exact: unchanged).  With the switch off the
schedule tests fail (4-row tiles); the outputs are the same sums in the same order either way.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper

from cpu_tile_cases import as_32_registers, scheduled, tile_shape, update_chains
from onnx_cases import model, scheduled_by
from r50_cases import matches_onnxruntime_and_the_reference

from hetpart.kernels.rules import cpu_conv2d
from hetpart.targets import cpu_tvm_target


def _conv(ic, oc, hw, stride=1, epilogue="relu", batch=1, seed=0):
    """3x3 conv (pad 1, + bias) on ``[batch, ic, hw, hw]``, then ReLU, ``+ r`` then ReLU
    (``add_relu``) or nothing; a fifth of the weights zero."""
    rng = np.random.default_rng(seed + ic * 7 + oc)
    w = (rng.standard_normal((oc, ic, 3, 3)) / np.sqrt(9 * ic)).astype(np.float32)
    w.reshape(-1)[::5] = 0.0
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    out = (hw - 1) // stride + 1
    inputs = [("x", (batch, ic, hw, hw), np.float32)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              strides=[stride, stride])]
    if epilogue == "add_relu":
        nodes += [helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
        inputs.append(("r", (batch, oc, out, out), np.float32))
    elif epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    return model(nodes, inputs, [("y", [batch, oc, out, out], np.float32)], {"w": w, "b": b}, opset=13)


CASES = {
    "3x3 256->256 on 7x7 + relu (channels-inner copy, fused plane)": lambda: _conv(256, 256, 7),
    "3x3 64->32 on 7x7 + residual + relu, batch 2 (image layout, fused plane)":
        lambda: _conv(64, 32, 7, epilogue="add_relu", batch=2),
    "3x3 128->64 s2 on 14x14 -> 7x7 + relu": lambda: _conv(128, 64, 14, stride=2),
    "3x3 48->32 s2 on 13x13 -> 7x7, bias alone": lambda: _conv(48, 32, 13, stride=2, epilogue="none"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_onnxruntime_and_the_reference(case):
    matches_onnxruntime_and_the_reference(CASES[case](), case)


def _fused(func) -> bool:
    """Whether the multiply-accumulate iterates the fused 49-pixel plane (its write-back
    buffer ``*_reindex_global`` indexed ``[q, oc]``)."""
    return "reindex_global" in func.script()


@pytest.mark.parametrize("ic,oc,hw,stride", [(512, 512, 7, 1), (512, 512, 14, 2)],
                         ids=["3x3 on 7x7", "3x3 s2 on 14x14"])
def test_7_wide_3x3_takes_5_plane_rows_on_avx2(ic, oc, hw, stride, monkeypatch):
    """resnet50's 512->512 3x3s: 5 rows x 2 vectors of 8 over the fused plane (before: the
    output's own 7 columns as 4 + 3); with the switch off, 4 rows on the image's rows."""
    m = _conv(ic, oc, hw, stride)
    func = scheduled(m, "haswell")
    assert _fused(func) and tile_shape(func) == (5, 2, 8), func.script()
    monkeypatch.setattr(cpu_conv2d, "FUSED_WINDOW_PLANE", False)
    func = scheduled(m, "haswell")
    assert not _fused(func) and tile_shape(func) == (4, 2, 8)


def test_avx512_and_other_widths_unchanged(monkeypatch):
    """AVX-512's 7 rows divide the 7 columns (no ragged tile): the same schedule either way;
    nor a 14-wide (5 + 5 + 4) or a 5-wide (5 rows) output on AVX2."""
    cases = [(_conv(512, 512, 7), "skylake-avx512"), (_conv(256, 256, 14), "haswell"),
             (_conv(64, 32, 5), "haswell")]
    after = [scheduled(m, mcpu).script() for m, mcpu in cases]
    monkeypatch.setattr(cpu_conv2d, "FUSED_WINDOW_PLANE", False)
    assert [scheduled(m, mcpu).script() for m, mcpu in cases] == after


def _row_tiles(func) -> list[int]:
    """The unrolled row count of each multiply-accumulate nest (not the split-off ragged tile's
    ``*_update_ragged``: the same count under a constant predicate)."""
    return [int([lp for lp in loops if lp.kind == tvm.tirx.ForKind.UNROLLED][0].extent)
            for loops, _ in update_chains(func)]


@pytest.mark.parametrize("ic,oc,hw,stride", [(512, 512, 7, 1), (512, 512, 14, 2)],
                         ids=["3x3 on 7x7", "3x3 s2 on 14x14"])
def test_rows_32_takes_13_plane_rows_on_avx512(ic, oc, hw, stride, monkeypatch):
    """``FUSED_WINDOW_ROWS_32`` (off by default): on AVX-512 the fused plane's 13 rows x 2 x 16
    (49 = 3 x 13 + 10, the ragged tile split off); AVX2 unchanged by it."""
    m = _conv(ic, oc, hw, stride)
    avx2 = scheduled(m, "haswell").script()
    monkeypatch.setattr(cpu_conv2d, "FUSED_WINDOW_ROWS_32", True)
    func = scheduled(m, "skylake-avx512")
    assert _fused(func) and _row_tiles(func) == [13] and "_update_ragged" in func.script(), func.script()
    assert scheduled(m, "haswell").script() == avx2


@pytest.mark.parametrize("case", [c for c in CASES if "7x7 +" in c or "s2 on 14x14" in c])
def test_rows_32_tiles_match_onnxruntime(case, monkeypatch):
    """The 13-row tiles, built here with the rules told 32 registers, against ORT."""
    as_32_registers(monkeypatch)
    monkeypatch.setattr(cpu_conv2d, "FUSED_WINDOW_ROWS_32", True)
    func = scheduled_by(CASES[case](), cpu_tvm_target(), "CpuConv2d")
    assert _fused(func) and _row_tiles(func)[0] == 13, func.script()
    test_matches_onnxruntime_and_the_reference(case)
