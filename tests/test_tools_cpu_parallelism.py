"""tools/cpu_parallelism.py's static model: loop nests of a scheduled PrimFunc, their
parallel extents, and the efficiency at T threads (ideal / modelled time)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import tvm
from tvm import te

_SPEC = importlib.util.spec_from_file_location(
    "cpu_parallelism", Path(__file__).resolve().parents[1] / "tools" / "cpu_parallelism.py")
cpu_parallelism = importlib.util.module_from_spec(_SPEC)
sys.modules["cpu_parallelism"] = cpu_parallelism  # dataclasses look their module up there
_SPEC.loader.exec_module(cpu_parallelism)


def _scheduled(rows: int, parallel: bool):
    """``y = x * 2`` over [rows, 64], the row loop parallel or not, then ``z = y + 1`` serial."""
    x = te.placeholder((rows, 64), name="x")
    y = te.compute(x.shape, lambda i, j: x[i, j] * 2.0, name="y")
    z = te.compute(x.shape, lambda i, j: y[i, j] + 1.0, name="z")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, z]))
    if parallel:
        sch.parallel(sch.get_loops(sch.get_sblock("y"))[0])
    return sch.mod["main"]


def test_nests_count_work_and_parallel_extent():
    nests = cpu_parallelism.nests_of(_scheduled(7, parallel=True))
    assert [(n.work, n.extent) for n in nests] == [(7 * 64, 7), (7 * 64, 0)]


@pytest.mark.parametrize("rows, threads, expected", [(7, 16, 7 / 16), (32, 16, 1.0), (35, 16, 35 / 48), (7, 2, 7 / 8)])
def test_efficiency_is_ideal_over_modelled(rows, threads, expected):
    """One parallel nest of E iterations: each thread runs ceil(E/T) of them."""
    kp = cpu_parallelism.KernelParallelism("k", "rule", [cpu_parallelism.Nest(rows * 64, rows)])
    assert kp.efficiency(threads) == pytest.approx(expected)
    assert kp.main_extent == rows


def test_a_serial_nest_costs_its_whole_time():
    """Half the work serial: at 16 threads (1/2 + 1/32) / ... = (1/16) / (1/2 + 1/32)."""
    kp = cpu_parallelism.KernelParallelism("k", "rule", cpu_parallelism.nests_of(_scheduled(32, parallel=True)))
    assert kp.serial_share == pytest.approx(0.5)
    assert kp.efficiency(16) == pytest.approx((1 / 16) / (0.5 + 0.5 / 16))
