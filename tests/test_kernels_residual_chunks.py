"""Plane tiles whose write-back reads a residual, in chunks of the plane (issue 18: ResNet-50's
1x1 64->256 on 56x56 + residual add + ReLU at batch 8, 1.1x ONNX Runtime alone and 1.5x in
the model): ``cpu_matmul.RESIDUAL_CHUNK_TILES`` (``TilePlan.chunk``) runs the output-channel
row tiles within a chunk of 16 plane tiles, not every row tile per plane tile (a residual
and an output stream per output channel, past what the prefetchers follow).

Against ONNX Runtime (inputs with negatives and zeros; rtol 1e-5, atol 1e-6 of the largest
output) for a fused 56x56 plane and a padded 14x14 one at batch 2, with chunks that divide
the plane's tiles and one that does not; then the tile order along the parallel loop, and
the convs left as they were (batch 1, no residual, a 7x7 plane of 4 tiles).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_tile_cases import build_and_run, conv, indices_along_tile_loop, random_feeds, scheduled
from onnx_cases import assert_matches, onnxruntime_outputs

from hetpart.kernels.rules import cpu_matmul
from hetpart.targets import cpu_tvm_target

CASES = {
    "1x1 64->48 on 56x56 + add, batch 2 (fused plane)": lambda: conv(64, 48, 56, epilogue="add", batch=2),
    "1x1 256->32 on 14x14 + add, batch 2 (padded plane)": lambda: conv(256, 32, 14, epilogue="add", batch=2),
}


@pytest.mark.parametrize("chunk", [16, 5])
@pytest.mark.parametrize("case", list(CASES))
def test_residual_chunks_match_onnxruntime(case, chunk, monkeypatch):
    monkeypatch.setattr(cpu_matmul, "RESIDUAL_CHUNK_TILES", chunk)
    m = CASES[case]()
    feeds = random_feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    got = build_and_run(m, feeds, cpu_tvm_target())
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=f"{case}, chunk {chunk}")


def _order(func, steps: int) -> tuple[list[int], list[int]]:
    """(output channel, pixel) of the update block's first lane along the first ``steps``
    iterations of the parallel tile loop (block iterators 1 and 2: ``oc``, the plane)."""
    channels, pixels = indices_along_tile_loop(func, (1, 2), steps)
    return [int(v.value) for v in channels], [int(v.value) for v in pixels]


def test_row_tiles_run_within_a_chunk_of_the_plane():
    """56x56 at batch 2 (3136 pixels, 196 tiles of 16 with AVX2, in chunks of 14: the largest
    divisor up to 16): the first 14 tiles of the parallel loop are one row tile's (6 output
    channels) over 14 plane tiles, then the next row tile's over the same 14; before, one
    plane tile's over every row tile (8 for 48 channels)."""
    oc, px = _order(scheduled(CASES["1x1 64->48 on 56x56 + add, batch 2 (fused plane)"](), "haswell"), 15)
    assert oc == [0] * 14 + [6] and px == [16 * i for i in range(14)] + [0], (oc, px)


@pytest.mark.parametrize("m", [
    lambda: conv(64, 48, 56, epilogue="add"),
    lambda: conv(64, 48, 56, epilogue="relu", batch=2),
    lambda: conv(512, 32, 7, epilogue="add", batch=2),
], ids=["batch 1", "no residual", "7x7: 4 tiles"])
def test_no_chunks_at_batch_1_without_a_residual_nor_on_few_tiles(m, monkeypatch):
    model_ = m()
    after = scheduled(model_, "haswell").script()
    monkeypatch.setattr(cpu_matmul, "RESIDUAL_CHUNK_TILES", 1)
    assert scheduled(model_, "haswell").script() == after
