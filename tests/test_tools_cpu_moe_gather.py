"""tools/cpu_moe_gather.py: layer 0's three expert projections of zoo:moe:small found off (take,
matmul) and on (one fused kernel), paired, built and timed; the switch is left as it was."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import cpu_moe_gather  # noqa: E402

from hetpart.importer import expert_matmul as em  # noqa: E402


def test_pairs_the_three_projections_and_times_them(capsys):
    default = em.FUSE_EXPERT_GATHER
    _, off = cpu_moe_gather._kernels("zoo:moe:small", False)
    _, on = cpu_moe_gather._kernels("zoo:moe:small", True)
    assert set(off) == set(on) and len(on) == 3  # up, gate + SwiGLU, down
    assert all(pair[0].ops == ("take",) and pair[1].op_class == "matmul" for pair in off.values())
    assert cpu_moe_gather.main(["zoo:moe:small", "--calls", "1", "--rounds", "1", "--cpu-time"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    assert em.FUSE_EXPERT_GATHER is default
