"""resnet50's 56x56 1x1 convs at batch 1 on AVX-512 (issue 18; bench/results/cpu-r50-avx512-1core.md):

* ``cpu_matmul.PLANE_CHUNK_B1``: one image's plane tile (output-channel rows broadcast from the
  weight x plane vectors) on a 32-register target runs in chunks of
  ``RESIDUAL_CHUNK_TILES`` vector tiles, residual or not (before: only with a residual at batch
  2+), so each row tile covers a contiguous run of pixels, not 32 pixels of every channel (from
  7 tiles, the 14x14 planes: there the whole plane);
* ``register_tile.IMAGE_ROWS_WIDTH_IN_PIXELS``: a 1x1 conv's weight tile loops the image's rows
  outside the weight's panels from 32-pixel rows (before: two panels wide, 64 pixels with
  AVX-512's 16 lanes, which left the 56-wide 256->64 / 256->128 streaming their image once per
  panel).

Against ONNX Runtime and onnx.reference, built for this host (the rules told 32 registers, so an
AVX2 host runs the chunked tiles too); then the schedules with each switch on and off for AVX2
(``haswell``: unchanged) and AVX-512 (``skylake-avx512``: changed), built here, not run.
"""

from __future__ import annotations

import pytest
import tvm

from cpu_tile_cases import as_32_registers
from onnx_cases import scheduled_by
from r50_cases import conv1x1, matches_onnxruntime_and_the_reference

from hetpart.kernels import register_tile
from hetpart.kernels.rules import cpu_matmul
from hetpart.targets import host_triple

CASES = {
    "1x1 32->64 on 32x32 + residual + relu (chunked plane)": lambda: conv1x1(32, 64, 32, "add_relu"),
    "1x1 32->48 on 16x16, bias alone (chunked plane, 8 tiles)": lambda: conv1x1(32, 48, 16, "none"),
    "1x1 128->64 on 32x32 + relu (image rows outside the panels)": lambda: conv1x1(128, 64, 32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_onnxruntime_and_the_reference(case, monkeypatch):
    as_32_registers(monkeypatch)
    matches_onnxruntime_and_the_reference(CASES[case](), case)


def _script(m, mcpu: str) -> str:
    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 16})
    return scheduled_by(m, target, "CpuMatmul", "CpuConv2d").script()


@pytest.mark.parametrize("module,switch,m", [
    (cpu_matmul, "PLANE_CHUNK_B1", lambda: conv1x1(64, 256, 56, "add_relu")),
    (cpu_matmul, "PLANE_CHUNK_B1", lambda: conv1x1(64, 256, 56, "none")),
    (cpu_matmul, "PLANE_CHUNK_B1", lambda: conv1x1(256, 1024, 14, "add_relu")),
    (register_tile, "IMAGE_ROWS_WIDTH_IN_PIXELS", lambda: conv1x1(256, 64, 56)),
])
def test_the_switch_changes_avx512_alone(module, switch, m, monkeypatch):
    """resnet50's 64->256 on 56x56 (+ residual + ReLU; the projection), 256->1024 on 14x14 +
    residual + ReLU (the chunk the whole 7-tile plane) and 256->64: with the switch off the AVX-512 schedule differs, the AVX2 one is the same text."""
    on = {mcpu: _script(m(), mcpu) for mcpu in ("haswell", "skylake-avx512")}
    monkeypatch.setattr(module, switch, False)
    off = {mcpu: _script(m(), mcpu) for mcpu in ("haswell", "skylake-avx512")}
    assert on["haswell"] == off["haswell"]
    assert on["skylake-avx512"] != off["skylake-avx512"]


def test_no_chunks_at_batch_2_on_a_short_plane_or_few_channels():
    """The batch-1 chunk leaves batch 2 (its own rule: a residual, RESIDUAL_CHUNK_MIN_BATCH), a
    plane of fewer than PLANE_CHUNK_B1_MIN_TILES vector tiles (10x10: 100 pixels) and fewer than
    PLANE_CHUNK_B1_MIN_CHANNELS output channels (mobilenet_v2's 96->24 on 56x56) alone."""
    for m in (conv1x1(64, 256, 56, "none", batch=2), conv1x1(64, 128, 10, "none"), conv1x1(96, 24, 56, "none")):
        on = _script(m, "skylake-avx512")
        cpu_matmul.PLANE_CHUNK_B1 = False
        try:
            assert _script(m, "skylake-avx512") == on
        finally:
            cpu_matmul.PLANE_CHUNK_B1 = True
