"""tools/partition_switched.py: the partition CLI with module switches held for the call
(zoo:moe:small's expert matmuls fused: 69 kernels, not 75), restored after."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import partition_switched  # noqa: E402

from hetpart.importer import expert_matmul as em  # noqa: E402

SWITCH = "hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER"


def _kernels(out: str) -> int:
    line = next(s for s in out.splitlines() if "fused kernels" in s)
    return int(line.split(":")[1].split()[0])


def test_the_switch_holds_for_the_call_and_is_restored(capsys):
    default = em.FUSE_EXPERT_GATHER
    assert partition_switched.main(["--set", f"{SWITCH}=0", "--", "plan", "zoo:moe:small", "--summary-only"]) == 0
    off = _kernels(capsys.readouterr().out)
    assert em.FUSE_EXPERT_GATHER is default
    assert partition_switched.main(["--set", f"{SWITCH}=1", "--", "plan", "zoo:moe:small", "--summary-only"]) == 0
    on = _kernels(capsys.readouterr().out)
    assert em.FUSE_EXPERT_GATHER is default
    assert (off, on) == (75, 69)  # 2 layers x 3 takes fused into their matmuls
