"""1x1 convs on a batch of small planes tiled on one plane of all the batch's pixels (issue 18,
mobilenet_v2 / EfficientNet / MobileNetV3 all-CPU at batch 8 and 32;
hetpart/kernels/rules/cpu_matmul.py ``batch_plane_tile``, switch ``BATCH_PLANE``):

a batch of 7x7 planes (49 pixels: padded per image to 64 they waste 31%) fuses ``n, h, w`` into
one dim of ``n*49`` pixels, zero-padded to whole two-vector tiles where it is none (batch 8: 392
-> 400 with 8 lanes), within 1/16 (batch 2: 98 -> 112, not taken); batch 32 is 1568 = 98
two-vector tiles of 8: no padding, the image copied image by image into ``[ic, n*h*w]``.
14x14 planes keep their tiles.

Against ONNX Runtime (inputs with negatives and zeros; ReLU, residual Add, none; rtol 1e-5, atol
1e-6 of the largest output: ORT sums in another order), built for this host; then the schedules,
for an AVX2 target: the batch plane where the rule applies, the schedule before with the switch
off, batch 1, batch 2 and 14x14 planes unchanged.
"""

from __future__ import annotations

import pytest

from cpu_tile_cases import conv, matches_onnxruntime, scheduled

from hetpart.kernels.rules import cpu_matmul

CASES = {
    "1x1 32->40 on 7x7 + relu, batch 8 (392 -> 400 pixels)": lambda: conv(32, 40, 7, batch=8),
    "1x1 48->24 on 7x7 + add, batch 4 (196 -> 208)": lambda: conv(48, 24, 7, epilogue="add", batch=4),
    "1x1 16->24 on 7x7, no epilogue, batch 32 (1568: unpadded)": lambda: conv(16, 24, 7, epilogue="none", batch=32),
    "1x1 24->16 on 7x7 + add, batch 32": lambda: conv(24, 16, 7, epilogue="add", batch=32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batch_planes_match_onnxruntime(case):
    matches_onnxruntime(CASES[case](), case)


def _batch_plane(func, pixels: int) -> bool:
    """The image copied into ``[ic, pixels]`` (the batch's planes one dim) and the weight broadcast
    (not packed into panels)."""
    script = func.script()
    return f"T.int64({pixels})))" in script and "x_reindex" in script and "layout_rewrite_preproc" not in script


@pytest.mark.parametrize("ic,oc,hw,batch,pixels", [
    (64, 40, 7, 8, 400), (192, 128, 7, 8, 400), (64, 24, 7, 4, 208), (64, 40, 7, 32, 1568),
])
def test_batch_plane_taken_and_switch_restores_the_tile(ic, oc, hw, batch, pixels, monkeypatch):
    m = conv(ic, oc, hw, batch=batch)
    assert _batch_plane(scheduled(m, "haswell"), pixels), scheduled(m, "haswell").script()
    monkeypatch.setattr(cpu_matmul, "BATCH_PLANE", False)
    assert not _batch_plane(scheduled(m, "haswell"), pixels)


def test_batch_1_small_batches_and_14x14_planes_unchanged(monkeypatch):
    """Batch 1, batch 2 of 7x7 (98 -> 112 pixels: 14% padding) and 14x14 planes (over a short sum:
    the weight tile; over 256+ input channels: padded per image, 196 -> 208) schedule as with the
    switch off."""
    ms = [conv(64, 40, 7), conv(96, 24, 7, epilogue="add", batch=2), conv(32, 40, 14, batch=4),
          conv(256, 32, 14, batch=8)]
    after = [scheduled(m, "haswell").script() for m in ms]
    monkeypatch.setattr(cpu_matmul, "BATCH_PLANE", False)
    assert [scheduled(m, "haswell").script() for m in ms] == after


def test_256_input_channels_go_to_the_channels_inner_copy_not_the_batch_plane(monkeypatch):
    """320->128 on a batch of 8 7x7 planes: both rules apply; the channels-inner copy
    (``cpu_matmul._channels_inner_rows``, ``[n, 49, ic]``) was measured 0.83-0.93x the batch
    plane's time at batch 8 on sums this long, so it takes the conv; with it off, the batch plane."""
    from r50_cases import copy_shape

    m = conv(320, 128, 7, batch=8)
    func = scheduled(m, "haswell")
    assert not _batch_plane(func, 400) and copy_shape(func) == (8, 49, 320), func.script()
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    assert _batch_plane(scheduled(m, "haswell"), 400)
