"""tools/cpu_fork_join.py: the kernel of R parallel regions in a row, and the cost of one."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import tvm

_SPEC = importlib.util.spec_from_file_location(
    "cpu_fork_join", Path(__file__).resolve().parents[1] / "tools" / "cpu_fork_join.py")
cpu_fork_join = importlib.util.module_from_spec(_SPEC)
sys.modules["cpu_fork_join"] = cpu_fork_join
_SPEC.loader.exec_module(cpu_fork_join)


def _loops(stmt, out: list) -> list:
    if isinstance(stmt, tvm.tirx.For):
        out.append(stmt)
    for name in ("body", "block"):
        child = getattr(stmt, name, None)
        if child is not None and not isinstance(child, (int, str)):
            _loops(child, out)
    if isinstance(stmt, tvm.tirx.SeqStmt):
        for s in stmt.seq:
            _loops(s, out)
    return out


def test_regions_are_parallel_loops_inside_a_serial_one():
    """R regions: a serial loop of R around one parallel loop of T iterations (each pass
    of the serial loop one TVMBackendParallelLaunch)."""
    loops = _loops(cpu_fork_join.regions_func(5, 16).body, [])
    assert [(int(lp.extent), lp.kind) for lp in loops] == [
        (5, tvm.tirx.ForKind.SERIAL), (16, tvm.tirx.ForKind.PARALLEL)]


def test_fork_join_is_measured():
    per, one = cpu_fork_join.fork_join_us(2, regions=8, calls=3, rounds=1)
    assert math.isfinite(per) and one > 0
