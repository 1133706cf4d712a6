"""docs/SERVING.md's example of several models sharing one GPU runs as written: two
zoo models planned together under one cap, compiled in simulation, opened with
their quotas and priorities and served.  Its printed numbers are checked against
the joint plan the same call makes here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "SERVING.md").read_text(), flags=re.S | re.M)
    (block,) = [b for b in blocks if "partition_together" in b]
    return block


@pytest.mark.slow
def test_the_joint_example_runs_as_written(capsys):
    scope = {"__name__": "__main__"}
    exec(compile(example(), "docs/SERVING.md", "exec"), scope)  # noqa: S102 - our own doc
    lines = capsys.readouterr().out.strip().splitlines()
    joint = scope["joint"]
    shares = [line.split(" ", 2) for line in lines[:2]]
    assert [(name, int(quota)) for name, quota, _ in shares] == [(m.name, m.quota_bytes) for m in joint.models]
    assert sum(m.quota_bytes for m in joint.models) <= 96 << 10
    devices = {name: set(ast.literal_eval(d)) for name, _, d in shares}
    assert devices["dlrm"] == {"cpu", "cuda"}  # as the comment says: split to fit its quota
    quota, priority = lines[2].split()
    assert int(quota) == joint.share("dlrm").quota_bytes and int(priority) == 1
    assert lines[3] == "(1, 4)"
