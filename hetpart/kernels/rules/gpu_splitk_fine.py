"""GPU rule: split-K in short chunks for batch-1 contractions left on a fraction of the SMs.

At batch 1 the pointwise (1x1) convolutions of MobileNet-v3 and EfficientNet-B0 at
14x14 and 7x7 are GEMMs with M = 196 or 49 rows: 6-40 output tiles of 32x64.
:mod:`.gpu_splitk` splits K only into chunks of at least 256 (its ``MIN_K_CHUNK``),
so with K = 192..1152 it splits in 1-4 and the grid stays at 12-40 blocks on 132 SMs,
every block looping over 12-30 K slices in sequence (dlight's ``Matmul`` where it
does not split: 14 blocks x 8072 serial stores per thread for EfficientNet-B0's
480 -> 80 layer).  Measured on the H200 (issue 17, one-kernel VM-call medians, about
the GPU time for kernels this long): the 16 such launches of EfficientNet-B0 took
10.5-23 us each, 277 us of its 828 us forward, where PyTorch's cuBLAS/CUTLASS GEMMs
for the same layers take 3.5-5.5 us.

This rule runs the same two kernels as :mod:`.gpu_splitk` (partial products, then
their sum through the epilogue, :func:`.gpu_splitk.split_gemm`) with K cut in chunks
as short as :data:`MIN_K_STEPS` slices of 16, as many as it takes to give the grid a
block per SM (at most :data:`MAX_SPLIT`).  The partials it writes and reads back
(S x M x N floats of whole tiles: 1.1 MB for the 480 -> 80 layer split in 10) cost well under a
microsecond of bandwidth, against the serial k-loop they remove.

An epilogue that reads the GEMM's result twice (EfficientNet's SiLU ``y * sigmoid(y)``)
is inlined into the output block first (:func:`.gpu_splitk.inline_epilogue`).

Applies only (:func:`fine_split_factor`) where all of these hold, so every other
contraction keeps its schedule:

* the output's leading extent (the images) is at most :data:`MAX_BATCH`;
* the grid :mod:`.gpu_splitk` would launch (its split, or none) has at most
  ``sm_count / 2`` blocks: half the SMs or more idle (ConvNeXt's 2x2 downsampling
  convolution (75 blocks), ResNet-50's 7x7 1x1 layers (128 blocks) and BERT's /
  ViT's 768-wide projections at 128-197 tokens (144-288 blocks) keep theirs; T5-small's
  512 x 512 projections at 128 tokens, split in 2 on 64 blocks, are taken: 8 chunks,
  256 blocks);
* each of those blocks loops over at least :data:`MIN_SERIAL_STEPS` K slices (a
  short K is not what makes the kernel slow);
* a finer split exists: S divides the K slices, leaves each chunk >= MIN_K_STEPS.

Invariant: each output is the same sum of the same products as the un-split
contraction, its additions in another order (S partial sums added at the end).
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..options import DEFAULT, KernelOptions
from . import gpu_splitk
from .gpu_splitk import K_STEP, TILE_M, TILE_N

MAX_BATCH = 1
"""Images (the output's leading extent) up to which the rule applies: batch 1 is what
was measured starved; at batch 32 the same layers fill the GPU."""

MIN_K_STEPS = 3
"""Shortest chunk, in K slices of ``K_STEP`` (48 of K): each block still stages
three slices of A and B, the partials cost S x M x N floats."""

MAX_SPLIT = 16
"""Most chunks: bounds the partials (S x M x N floats) and the epilogue's sum."""

MIN_SERIAL_STEPS = 12
"""K slices each block of the replaced grid loops over, from which the split pays
(192 of K un-split): below it the kernel is short anyway and the second kernel's
launch is what a split would add."""


def fine_split_factor(m: int, n: int, k: int, sms: int = DEFAULT.sm_count, batch: int = 1) -> int:
    """How many K chunks to compute in parallel for a ``batch`` x (M x N x K) GEMM
    tiled TILE_M x TILE_N; 1 means "leave it to the other rules" (module doc)."""
    blocks = batch * math.ceil(m / TILE_M) * math.ceil(n / TILE_N)
    standard = gpu_splitk.split_factor(batch, m, n, k, sms=sms)
    steps = math.ceil(k / K_STEP)
    if blocks * standard > sms // 2 or steps // standard < MIN_SERIAL_STEPS:
        return 1
    allowed = [s for s in range(2, MAX_SPLIT + 1) if steps % s == 0 and steps // s >= MIN_K_STEPS]
    if not allowed:
        return 1
    pick = next((s for s in allowed if blocks * s >= sms), allowed[-1])
    return pick if pick > standard else 1


class GpuFineSplitK(ScheduleRule):
    """Split-K in short chunks for batch-1 contractions :mod:`.gpu_splitk` leaves on
    under half the SMs (module doc); ``options``: the SM count, and ``split_k``
    (``"off"`` switches this rule off too, ``"conv"`` keeps it to convolutions)."""

    def __init__(self, options: KernelOptions = DEFAULT):
        self.sms = options.sm_count
        self.mode = options.split_k

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not 0 < gpu_splitk.images(func) <= MAX_BATCH:
            return None
        gemm = gpu_splitk.normal_gemm_for(func, target, self.mode)
        if gemm is None:
            return None
        batch, m, n, k = gemm.shape
        s = fine_split_factor(m, n, k, sms=self.sms, batch=batch)
        if s == 1:
            return None
        return gpu_splitk.split_gemm(gemm, s, fork_epilogue=True)
