"""Register tiles of up to 14 rows on 32-register (AVX-512) targets (issue 18,
``register_tile._rows_for_32_registers``; bench/results/cpu-r50-threads-analysis.md).

A one-loop reduction (1x1 conv, matmul) of 256+ steps on a target with 32 vector
registers takes the largest exact row count up to 14 (28 accumulators of 2 vectors),
where the tile loop then splits as evenly over the target's ``num-cores`` threads;
windowed convolutions, short reductions, 7-wide images and 16-register targets keep
their rows.  The decisions are read from the TIR scheduled for ``sapphirerapids`` (built
here, not run); the results are checked against ONNX Runtime and onnx.reference on this
host with the rules told its ISA has 32 registers (the same tile with this host's lanes:
LLVM spills what does not fit, the sums are the same), inputs with negatives and zeros.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm

from asm_cases import fma_blocks_stack_moves, llvm_asm
from cpu_tile_cases import as_32_registers, avx512_target, build_and_run, conv, matmul, random_feeds, tile_shape
from onnx_cases import assert_matches, onnxruntime_outputs, reference

from hetpart import kernels, load
from hetpart.kernels import register_tile, weight_prepack
from hetpart.kernels.rules import cpu_matmul
from hetpart.targets import host_cpu_name, host_triple


@pytest.fixture(autouse=True)
def _weight_tile(monkeypatch):
    """These tests are of the weight tile's rows.  At batch 1 the plane tile
    (``cpu_matmul.RAGGED_PLANE_MIN_BATCH`` = 1) takes a 14x14 1x1 conv of 8+ channel panels
    first (:func:`test_the_plane_tile_takes_14x14_first_at_batch_1`); here it is held to
    batch 2 as before it, so the same shapes exercise the row choice."""
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_MIN_BATCH", 2)


def _host() -> tvm.target.Target:
    """This host's CPU at 2 cores: the cases below take 14 rows there with 8 lanes (AVX2,
    told 32 registers) and with 16 (an AVX-512 host such as the GPU machine's Xeon)."""
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": host_cpu_name(), "num-cores": 2})


def _rows(m: onnx.ModelProto, target: tvm.target.Target) -> int:
    """Rows of the tile of ``m``'s one conv or matmul kernel scheduled for ``target``."""
    mod = kernels.schedule(weight_prepack.mark_weights(load(m).module), target)
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)
               and str(f.attrs.get(kernels.RULE_ATTR, "")) in ("CpuMatmul", "CpuConv2d")]
    return tile_shape(func)[0]


@pytest.mark.parametrize("case,rows", [
    ((1024, 256, 14), 14),  # resnet50's 1024->256 on 14x14: 7 rows before
    ((512, 64, 28), 14),
    ((512, 32, 28), 7),  # one panel: 112 tiles of 7 rows split evenly over 16 cores, 56 of 14 do not
    ((256, 64, 56), 14),  # K = 256: the least reduction the rule takes
    ((512, 32, 7), 7),  # 7-wide: no divisor above 7
    ((128, 32, 14), 7),  # K = 128 < ROWS_32_MIN_REDUCTION
])
def test_one_loop_reductions_take_up_to_14_rows_on_avx512(case, rows):
    ic, oc, hw = case
    assert _rows(conv(ic, oc, hw), avx512_target()) == rows


def test_windowed_conv_and_the_switch_off_keep_the_rows(monkeypatch):
    """A 3x3 window keeps 7 rows (28 accumulators spilled beside its indices); with
    ROWS_32_REGISTERS off a 1x1 conv is back at 7 (fails without the rule)."""
    assert _rows(conv(256, 32, 14, k=3, pad=1), avx512_target()) == 7
    monkeypatch.setattr(register_tile, "ROWS_32_REGISTERS", False)
    assert _rows(conv(1024, 256, 14), avx512_target()) == 7


def test_rows_widen_only_where_the_tiles_split_as_evenly_over_the_cores():
    """1024->256 on 14x14, 32-channel panels: 224 tiles of 7 rows, 112 of 14.  At 16
    cores both split evenly (14 rows); at 48 the 112 run in 3 rounds for 2.33 of work
    (0.78) against 224 in 5 for 4.67 (0.93): 7 rows kept."""
    assert register_tile.thread_efficiency(224, 48) == pytest.approx(224 / 240)
    assert register_tile.thread_efficiency(112, 48) == pytest.approx(112 / 144)
    assert register_tile.thread_efficiency(112, 16) == 1.0
    m = conv(1024, 256, 14)
    assert _rows(m, avx512_target(16)) == 14
    assert _rows(m, avx512_target(48)) == 7


CASES = {
    "1x1 256->32 on 14x14 + relu": lambda: conv(256, 32, 14),
    "1x1 512->64 on 28x28 + add, batch 2": lambda: conv(512, 64, 28, epilogue="add", batch=2),
    "1x1 256->32 s2 28x28 -> 14x14": lambda: conv(256, 32, 28, stride=2, epilogue="none"),
    "[28, 512] @ [512, 32] + add": lambda: matmul(28, 512, 32, epilogue="add"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wide_rows_match_onnxruntime_and_the_reference(case, monkeypatch):
    as_32_registers(monkeypatch)
    m = CASES[case]()
    assert _rows(m, _host()) == 14, "the 14-row tile is the one tested"
    feeds = random_feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    if "relu" in case:
        assert (want == 0).any() and (want > 0).any(), "the clamp is exercised"
    got = build_and_run(m, feeds, _host())
    tol = dict(rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
    assert_matches(got, want, what=f"{case} against ONNX Runtime", **tol)
    (ref,) = reference(m, feeds).values()
    assert_matches(got, ref, what=f"{case} against onnx.reference", **tol)


def _asm(m: onnx.ModelProto, target: tvm.target.Target) -> str:
    """The assembly of ``m``'s build for ``target`` (cross-built: not run here)."""
    return llvm_asm(kernels.build(load(m).module, target))


def test_the_14_row_tile_keeps_its_accumulators_in_registers():
    """Built for sapphirerapids: the 1x1 conv's reduction loop holds the 14 x 2 FMAs and
    no vector move to the stack (a 3x3 window beside them spilled 46-73 a loop)."""
    fmas, spills = fma_blocks_stack_moves(_asm(conv(1024, 256, 14), avx512_target()))
    assert fmas >= 28 and spills == 0, (fmas, spills)


def test_the_plane_tile_takes_14x14_first_at_batch_1(monkeypatch):
    """With the defaults, resnet50's 1x1 1024->256 on 14x14 at batch 1 takes the plane
    tile (8 rows of the padded 224-wide plane), not the 14-row weight tile; a 28x28 one
    keeps the weight tile's 14 rows on AVX-512 (the plane's long sums are AVX2's only)."""
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_MIN_BATCH", 1)
    assert _rows(conv(1024, 256, 14), avx512_target()) == 8
    assert _rows(conv(512, 64, 28), avx512_target()) == 14
