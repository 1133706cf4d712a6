"""tools/decode_gemv_gbs.py --precision: each weight kernel also built with bf16 weights (half
the bytes), and a MoE expert kernel's GB/s counts only the chosen experts' rows."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import decode_gemv_gbs  # noqa: E402

SPEC = "zoo:moe:layers=1,hidden=256,intermediate=1024,vocab=1000"  # 8 experts x 1 MiB: >= MIN_WEIGHT_BYTES


def test_weight_kernels_pairs_each_kernel_with_its_bf16_build():
    found = decode_gemv_gbs.weight_kernels(SPEC, "bfloat16")
    experts = [f for f in found if "gathered_matmul" in f[0].ops[0]]
    assert len(experts) == 3  # gate (with SwiGLU), up, down
    for _, kmod, wb, (low, low_wb) in found:
        assert low_wb * 2 == wb
        assert [a.dtype for a in low.args if a.weight] == ["bfloat16"]


def test_run_times_the_low_side_and_counts_the_chosen_rows():
    rows = decode_gemv_gbs.run(SPEC, [], sweeps=1, sweep_mb=8, clock=time.perf_counter, only="gathered_matmul1",
                               low="bfloat16")
    (expert,) = rows  # the probe's name does not match ``only``
    assert expert["rule"] == "CpuGatheredMatmul"
    assert 0 < expert["low_rel"] < 1e-2 and expert["low_us"] > 0
    # the down projection's table is 8 x 1024 x 256 floats; top-2 reads 1 or 2 of its 8 experts
    table = expert["weight_mb"] * 1e6
    read = expert["now_gbs"] * 1e9 * expert["now_us"] * 1e-6
    assert round(read / (table / 8)) in (1, 2)
