"""GPU rule: split-K in short chunks for batch-1 contractions left on a fraction of the SMs.

At batch 1 the pointwise (1x1) convolutions of MobileNet-v3 and EfficientNet-B0 at
14x14 and 7x7 are GEMMs with M = 196 or 49 rows: 6-40 output tiles of 32x64.
:mod:`.gpu_splitk` splits K only into chunks of at least 256 (its ``MIN_K_CHUNK``),
so with K = 192..1152 it splits in 1-4 and the grid stays at 12-40 blocks on 132 SMs,
every block looping over 12-30 K slices in sequence (dlight's ``Matmul`` where it
does not split: 14 blocks x 8072 serial stores per thread for EfficientNet-B0's
480 -> 80 layer).  Measured on the H200 (issue 17, as the cost model's microbenchmark
read them): those layers took 10-23 us each, ~360 us of EfficientNet-B0's 828 us
forward, where cuBLAS's split-K GEMMs for the same layers take 3-6 us.

This rule runs the same two kernels as :mod:`.gpu_splitk` (partial products, then
their sum through the epilogue, :func:`.gpu_splitk.split_gemm`) with K cut in chunks
as short as :data:`MIN_K_STEPS` slices of 16, as many as it takes to give the grid a
block per SM (at most :data:`MAX_SPLIT`).  The partials it writes and reads back
(S x M x N floats: 0.6 MB for the 480 -> 80 layer split in 10) cost well under a
microsecond of bandwidth, against the serial k-loop they remove.

It also takes an epilogue that is no single chain -- SiLU ``y * sigmoid(y)`` and
GELU read the GEMM's result twice -- which :func:`.gpu_splitk.schedule_sum_epilogue`
declines: every element-wise block after the sum is inlined into the output block
(:func:`_inline_epilogue`), and the sum stays one register per thread, read twice.

Applies only (:func:`fine_split_factor`) where all of these hold, so every other
contraction keeps its schedule:

* the output's leading extent (the images) is at most :data:`MAX_BATCH`;
* the grid :mod:`.gpu_splitk` would launch (its split, or none) has at most
  ``sm_count / 2`` blocks: half the SMs or more idle (ConvNeXt's 2x2 downsampling
  convolution (75 blocks), ResNet-50's 7x7 1x1 layers (128 blocks) and every
  transformer projection at sequence 128-197 (144-288 blocks) keep theirs);
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

from ..analysis import is_gpu
from ..options import DEFAULT, KernelOptions
from . import gpu_splitk
from .gpu_gemm import as_normal_gemm
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
        if self.mode == "off" or not is_gpu(target) or target.kind.name != "cuda":
            return None
        if not 0 < _images(func) <= MAX_BATCH:
            return None
        gemm = as_normal_gemm(func, plain=self.mode == "all")
        if gemm is None:
            return None
        batch, m, n, k = gemm.shape
        s = fine_split_factor(m, n, k, sms=self.sms, batch=batch)
        if s == 1:
            return None
        if gpu_splitk.consumer_chain(gemm.sch, gemm.block) is None and not _inline_epilogue(gemm.sch, gemm.block):
            return None
        return gpu_splitk.split_gemm(gemm, s)


def _images(func: tirx.PrimFunc) -> int:
    """The leading extent of ``func``'s output (0 if not static)."""
    shape = getattr(func.params[-1], "shape", None) or ()
    return int(shape[0]) if len(shape) and isinstance(shape[0], tirx.IntImm) else 0


def _inline_epilogue(sch: s_tir.Schedule, main) -> bool:
    """Inline every block after ``main`` but the function's output block into the
    blocks that read it, so what follows ``main`` is one chain (its write-back, then
    the output block); False (the schedule may be half changed: the caller declines)
    when a block is not element-wise, the blocks after ``main`` end in more than one
    output, or TVM refuses an inlining."""
    after = _reachable(sch, main)
    outputs = [b for b in after if not sch.get_consumers(b)]
    if len(outputs) != 1:
        return False
    for blk in after:
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
            return False
    writeback = sch.get_consumers(main)
    if len(writeback) != 1:
        return False
    out = sch.get(outputs[0]).name_hint
    keep = {sch.get(writeback[0]).name_hint, out}
    for name in [sch.get(b).name_hint for b in after]:
        if name in keep:
            continue
        try:
            sch.compute_inline(sch.get_sblock(name))
        except Exception:  # noqa: BLE001 - TVM refuses with several error types
            return False
    return gpu_splitk.consumer_chain(sch, main) is not None


def _reachable(sch: s_tir.Schedule, block) -> list:
    """The blocks that read, directly or not, what ``block`` writes (in schedule order)."""
    seen, todo, names = [], [block], set()
    while todo:
        for c in sch.get_consumers(todo.pop()):
            name = sch.get(c).name_hint
            if name not in names:
                names.add(name)
                seen.append(c)
                todo.append(c)
    order = {sch.get(b).name_hint: i for i, b in enumerate(sch.get_child_blocks(sch.get_sblock("root")))}
    return sorted(seen, key=lambda b: order.get(sch.get(b).name_hint, len(order)))
