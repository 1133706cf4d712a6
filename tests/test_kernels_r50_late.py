"""resnet50's 1x1 convs all-CPU at batch 1 (issue 18; bench/results/cpu-r50-late-2core.md):

* a stride-1 1x1 conv on an image of rows at most 7 wide (the 7x7 stage) with 256+ input
  channels reads a per-call copy of its image with the channels innermost, its plane fused
  (``X'[n, h*w, ic]``), under a weight tile of plane rows that need not divide 49
  (``cpu_matmul.CHANNELS_INNER_ROWS``: 5 rows x 2 vectors on AVX2, the last tile ragged;
  7 x 2 x 16 on AVX-512; before: 7 rows on the image's own rows, 17 of AVX2's 16 registers,
  or the padded plane with a residual); the copy a blocked transpose, parallel at 16 cores;
  with ``cpu_matmul.CHANNELS_INNER_ROWS_32`` (off: unmeasured, AVX-512 only) 13 rows on a
  32-register target, the ragged last tile split off;
* a tile along an activation's plane (output-channel rows broadcast from the weight) on a
  16-register target takes 6 rows with a ragged last tile where the channels have no divisor
  5-6 (``cpu_matmul.PLANE_RAGGED_ROWS``: 12 accumulators, before 4 rows: 8).

Against ONNX Runtime and onnx.reference (inputs with negatives and zeros; ReLU, residual add +
ReLU, bias alone; batch 1 and 2), built for this host; then the schedules with the switches on
and off, for AVX2 and AVX-512 targets (built here, not run).  With either switch off its schedule
tests fail; the outputs are the same sums in the same order either way (the ORT tests guard the
new tiles' ragged rows and the transposed copy, not the switch).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper

from cpu_tile_cases import as_32_registers, scheduled, tile_shape, update_chains
from onnx_cases import assert_matches, block_nests, model, onnxruntime_outputs, reference, run_on, scheduled_by

from hetpart.kernels.rules import cpu_matmul
from hetpart.targets import host_triple


def _conv(ic, oc, hw, epilogue="relu", batch=1, seed=0):
    """1x1 conv (+ bias) on ``[batch, ic, hw, hw]``, then ReLU, ``+ r`` then ReLU
    (``add_relu``: resnet's block end) or nothing; a fifth of the weights zero."""
    rng = np.random.default_rng(seed + ic * 7 + oc)
    w = (rng.standard_normal((oc, ic, 1, 1)) / np.sqrt(ic)).astype(np.float32)
    w.reshape(-1)[::5] = 0.0
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    inputs = [("x", (batch, ic, hw, hw), np.float32)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1])]
    if epilogue == "add_relu":
        nodes += [helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
        inputs.append(("r", (batch, oc, hw, hw), np.float32))
    elif epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    return model(nodes, inputs, [("y", [batch, oc, hw, hw], np.float32)], {"w": w, "b": b}, opset=13)


CASES = {
    "1x1 256->80 on 7x7 + relu (channels inner, 10 row tiles)": lambda: _conv(256, 80, 7),
    "1x1 256->64 on 7x7 + residual + relu, batch 2": lambda: _conv(256, 64, 7, "add_relu", batch=2),
    "1x1 320->48 on 5x5, bias alone": lambda: _conv(320, 48, 5, "none"),
    "1x1 256->128 on 14x14 + relu (padded plane, 6 ragged rows)": lambda: _conv(256, 128, 14),
    "1x1 32->64 on 56x56 + residual + relu (fused plane, 6 ragged rows)": lambda: _conv(32, 64, 56, "add_relu"),
    "1x1 256->160 on 28x28 + relu (long-sum plane)": lambda: _conv(256, 160, 28),
}


def _feeds(m) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    feeds = {}
    for i in m.graph.input:
        a = (rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 2).astype(np.float32)
        a.reshape(-1)[::7] = 0.0
        feeds[i.name] = a
    return feeds


def matches_onnxruntime_and_the_reference(m, case: str) -> None:
    """``m`` all-CPU on seeded inputs (negatives, every 7th element 0) against ONNX Runtime and
    onnx.reference, within 1e-5 relative (1e-6 of the largest output absolute: another order of
    sums); a case named "relu" must exercise the clamp.  Shared with test_kernels_r50_3x3."""
    feeds = _feeds(m)
    got = run_on(m, "cpu", feeds)["y"]
    (want,) = onnxruntime_outputs(m, feeds)
    if "relu" in case:
        assert (want == 0).any() and (want > 0).any(), "the clamp is exercised"
    tol = dict(rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
    assert_matches(got, want, what=f"{case} against ONNX Runtime", **tol)
    assert_matches(got, reference(m, feeds)["y"], what=f"{case} against onnx.reference", **tol)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_onnxruntime_and_the_reference(case):
    matches_onnxruntime_and_the_reference(CASES[case](), case)


def _copy(func):
    """The channels-inner copy's block and loops (``*_reindex_reindex`` writing a
    ``[.., h*w, ic]`` buffer), or None."""
    for realize, loops in block_nests(func):
        if realize.block.name_hint.endswith("_reindex_reindex"):
            return realize.block, loops
    return None


def _copy_shape(func) -> tuple[int, ...] | None:
    found = _copy(func)
    return None if found is None else tuple(int(d) for d in found[0].writes[0].source.shape)


@pytest.mark.parametrize("mcpu,tile", [("haswell", (5, 2, 8)), ("skylake-avx512", (7, 2, 16))])
def test_7x7_reads_its_image_channels_inner(mcpu, tile, monkeypatch):
    """2048->512 and 512->2048 + residual on 7x7: the copy ``[49, ic]`` and the weight tile of
    plane rows (5 rows on AVX2, 49 = 9 x 5 + 4; 7 on AVX-512); with the switch off, 7 rows on
    the image's own rows (AVX2: or the padded plane with the residual) and no such copy."""
    for ic, oc, epilogue in [(2048, 512, "relu"), (512, 2048, "add_relu")]:
        m = _conv(ic, oc, 7, epilogue)
        func = scheduled(m, mcpu)
        assert _copy_shape(func) == (49, ic), func.script()
        assert tile_shape(func) == tile
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    func = scheduled(_conv(2048, 512, 7), mcpu)
    assert _copy(func) is None
    assert tile_shape(func)[0] == 7


@pytest.mark.parametrize("ic,oc,hw", [(160, 512, 7), (512, 128, 14), (512, 64, 8)],
                         ids=["K = 160 under the bound", "14-wide rows", "8-wide rows (whole vectors)"])
def test_other_1x1_unchanged(ic, oc, hw, monkeypatch):
    m = _conv(ic, oc, hw)
    after = scheduled(m, "haswell").script()
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    assert scheduled(m, "haswell").script() == after


def _target16(mcpu: str, cores: int):
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": cores})


def test_transposed_copy_blocks_run_in_parallel_on_16_cores():
    """512 x 7 x 7 (25 Ki elements): channel blocks of 16 outside the plane, in parallel at 16
    cores, serial on one; each block's vector along the channels."""
    m = _conv(512, 2048, 7, "add_relu")
    for cores, kinds in [(16, [tvm.tirx.ForKind.PARALLEL, tvm.tirx.ForKind.SERIAL]),
                         (1, [tvm.tirx.ForKind.SERIAL, tvm.tirx.ForKind.SERIAL])]:
        _, loops = _copy(scheduled_by(m, _target16("sapphirerapids", cores), "CpuMatmul"))
        assert [lp.kind for lp in loops] == kinds + [tvm.tirx.ForKind.VECTORIZED]
        assert [int(lp.extent) for lp in loops] == [32, 49, 16]


@pytest.mark.parametrize("ic,oc,hw", [(1024, 256, 14), (512, 128, 28), (256, 64, 56)],
                         ids=["padded 14x14 plane", "28x28 long sum", "56-wide odd-vector rows"])
def test_plane_tiles_take_6_ragged_rows_with_16_registers(ic, oc, hw, monkeypatch):
    """The plane tile (two 8-lane plane vectors) holds 6 output-channel rows on AVX2 (the last
    tile ragged), 4 with the switch off; AVX-512's tiles do not change."""
    m = _conv(ic, oc, hw)
    assert tile_shape(scheduled(m, "haswell")) == (6, 2, 8)
    avx512 = scheduled(m, "skylake-avx512").script()
    monkeypatch.setattr(cpu_matmul, "PLANE_RAGGED_ROWS", False)
    assert tile_shape(scheduled(m, "haswell")) == (4, 2, 8)
    assert scheduled(m, "skylake-avx512").script() == avx512


def test_plane_rows_keep_a_divisor_of_10_accumulators_or_little_padding():
    """40 channels keep 5 rows (10 accumulators); 32 would pad to 36 (12%, past 1/16): 4 rows."""
    assert tile_shape(scheduled(_conv(512, 40, 28), "haswell"))[0] == 5
    assert tile_shape(scheduled(_conv(512, 32, 28), "haswell"))[0] == 4


def _rows_of_chains(func) -> list[int]:
    """The unrolled row loop's extent around each ``*_update`` block (of a split ragged tile, the
    whole tiles' branch)."""
    out = []
    for loops, _ in update_chains(func):
        unrolled = [lp for lp in loops if lp.kind == tvm.tirx.ForKind.UNROLLED]
        out.append(int(unrolled[0].extent))
    return out


def test_13_rows_on_32_registers_with_the_switch(monkeypatch):
    """``CHANNELS_INNER_ROWS_32``: 2048->512 on 7x7 built for sapphirerapids at 16 cores takes 13
    rows (4 tiles; 64 split evenly over 16 threads as 112 did), the ragged 10-row tile its own
    branch; off (the default), 7 rows; AVX2 unchanged either way."""
    m = _conv(2048, 512, 7)
    target = _target16("sapphirerapids", 16)
    assert _rows_of_chains(scheduled_by(m, target, "CpuMatmul")) == [7]
    avx2 = scheduled(m, "haswell").script()
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS_32", True)
    func = scheduled_by(m, target, "CpuMatmul")
    assert _rows_of_chains(func) == [13]
    assert "T.int64(13) + T.int64(13) <= T.int64(49)" in func.script()  # the whole tiles' branch
    assert scheduled(m, "haswell").script() == avx2


@pytest.mark.parametrize("case", ["1x1 256->80 on 7x7 + relu (channels inner, 10 row tiles)",
                                  "1x1 256->64 on 7x7 + residual + relu, batch 2"])
def test_13_row_tiles_match_onnxruntime(case, monkeypatch):
    """The 13-row tile and its split ragged tile, built on this host with the rules told it has
    32 registers (this host's lanes; LLVM spills what does not fit, the sums are the same)."""
    as_32_registers(monkeypatch)
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS_32", True)
    test_matches_onnxruntime_and_the_reference(case)
