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

import pytest
import tvm

from cpu_tile_cases import as_32_registers, scheduled, tile_shape, update_chains
from onnx_cases import scheduled_by
from r50_cases import channels_inner_copy, conv1x1, copy_shape, matches_onnxruntime_and_the_reference

from hetpart.kernels.rules import cpu_matmul
from hetpart.targets import host_triple


CASES = {
    "1x1 256->80 on 7x7 + relu (channels inner, 10 row tiles)": lambda: conv1x1(256, 80, 7),
    "1x1 256->64 on 7x7 + residual + relu, batch 2": lambda: conv1x1(256, 64, 7, "add_relu", batch=2),
    "1x1 320->48 on 5x5, bias alone": lambda: conv1x1(320, 48, 5, "none"),
    "1x1 256->128 on 14x14 + relu (padded plane, 6 ragged rows)": lambda: conv1x1(256, 128, 14),
    "1x1 32->64 on 56x56 + residual + relu (fused plane, 6 ragged rows)": lambda: conv1x1(32, 64, 56, "add_relu"),
    "1x1 256->160 on 28x28 + relu (long-sum plane)": lambda: conv1x1(256, 160, 28),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_onnxruntime_and_the_reference(case):
    matches_onnxruntime_and_the_reference(CASES[case](), case)


@pytest.mark.parametrize("mcpu,tile", [("haswell", (5, 2, 8)), ("skylake-avx512", (7, 2, 16))])
def test_7x7_reads_its_image_channels_inner(mcpu, tile, monkeypatch):
    """2048->512 and 512->2048 + residual on 7x7: the copy ``[49, ic]`` and the weight tile of
    plane rows (5 rows on AVX2, 49 = 9 x 5 + 4; 7 on AVX-512); with the switch off, 7 rows on
    the image's own rows (AVX2: or the padded plane with the residual) and no such copy."""
    for ic, oc, epilogue in [(2048, 512, "relu"), (512, 2048, "add_relu")]:
        m = conv1x1(ic, oc, 7, epilogue)
        func = scheduled(m, mcpu)
        assert copy_shape(func) == (49, ic), func.script()
        assert tile_shape(func) == tile
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    func = scheduled(conv1x1(2048, 512, 7), mcpu)
    assert channels_inner_copy(func) is None
    assert tile_shape(func)[0] == 7


@pytest.mark.parametrize("ic,oc,hw", [(160, 512, 7), (512, 128, 14), (512, 64, 8)],
                         ids=["K = 160 under the bound", "14-wide rows", "8-wide rows (whole vectors)"])
def test_other_1x1_unchanged(ic, oc, hw, monkeypatch):
    m = conv1x1(ic, oc, hw)
    after = scheduled(m, "haswell").script()
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    assert scheduled(m, "haswell").script() == after


def _target16(mcpu: str, cores: int):
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": cores})


def test_transposed_copy_blocks_run_in_parallel_on_16_cores():
    """512 x 7 x 7 (25 Ki elements): channel blocks of 16 outside the plane, in parallel at 16
    cores, serial on one; each block's vector along the channels."""
    m = conv1x1(512, 2048, 7, "add_relu")
    for cores, kinds in [(16, [tvm.tirx.ForKind.PARALLEL, tvm.tirx.ForKind.SERIAL]),
                         (1, [tvm.tirx.ForKind.SERIAL, tvm.tirx.ForKind.SERIAL])]:
        _, loops = channels_inner_copy(scheduled_by(m, _target16("sapphirerapids", cores), "CpuMatmul"))
        assert [lp.kind for lp in loops] == kinds + [tvm.tirx.ForKind.VECTORIZED]
        assert [int(lp.extent) for lp in loops] == [32, 49, 16]


@pytest.mark.parametrize("ic,oc,hw", [(1024, 256, 14), (512, 128, 28), (256, 64, 56)],
                         ids=["padded 14x14 plane", "28x28 long sum", "56-wide odd-vector rows"])
def test_plane_tiles_take_6_ragged_rows_with_16_registers(ic, oc, hw, monkeypatch):
    """The plane tile (two 8-lane plane vectors) holds 6 output-channel rows on AVX2 (the last
    tile ragged), 4 with the switch off; AVX-512's tiles do not change."""
    m = conv1x1(ic, oc, hw)
    assert tile_shape(scheduled(m, "haswell")) == (6, 2, 8)
    avx512 = scheduled(m, "skylake-avx512").script()
    monkeypatch.setattr(cpu_matmul, "PLANE_RAGGED_ROWS", False)
    assert tile_shape(scheduled(m, "haswell")) == (4, 2, 8)
    assert scheduled(m, "skylake-avx512").script() == avx512


def test_plane_rows_keep_a_divisor_of_10_accumulators_or_little_padding():
    """40 channels keep 5 rows (10 accumulators); 32 would pad to 36 (12%, past 1/16): 4 rows."""
    assert tile_shape(scheduled(conv1x1(512, 40, 28), "haswell"))[0] == 5
    assert tile_shape(scheduled(conv1x1(512, 32, 28), "haswell"))[0] == 4


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
    m = conv1x1(2048, 512, 7)
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
