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


@pytest.mark.parametrize("extent, threads, expected", [(112, 16, 1.0), (35, 16, 48 / 35), (7, 16, 16 / 7), (25, 2, 26 / 25)])
def test_balance_is_the_busiest_thread_over_the_mean(extent, threads, expected):
    assert cpu_parallelism.balance(extent, threads) == pytest.approx(expected)


def test_report_counts_regions_and_small_ones():
    """Two kernels: a 2-region one (twice) and a serial one; at 16 threads the 7-iteration
    nest of 7 Ki runs 1 Ki a thread (small), the 448-iteration one of 1.75 Mi 112 Ki."""
    k = cpu_parallelism.KernelParallelism
    n = cpu_parallelism.Nest
    rows = [(k("conv", "CpuConv2d", [n(7 << 10, 7), n(448 << 12, 448)], "14x2x16"), 2),
            (k("reshape", "CpuInjective", [n(64, 0)]), 1)]
    lines = cpu_parallelism.report(rows, [16, 2], top=5)
    assert lines[0].endswith("per inference 4 parallel regions, 1 serial nests")
    assert "2 parallel regions with under 64 K" in lines[2]
    table = [ln for ln in lines if ln.startswith("| conv ")]
    assert table and "| 14x2x16 | 2 |" in table[0]


def test_analyse_schedules_for_the_cpu_named():
    """``mcpu`` schedules for that CPU (built, not run): a 1x1 512->64 conv on 28x28 at
    16 cores on sapphirerapids is 2 panels of 32 channels x 56 tiles of 14 rows
    (register_tile._rows_for_32_registers), recorded as the kernel's tile."""
    from cpu_tile_cases import conv

    ((kp, count),) = [r for r in cpu_parallelism.analyse(conv(512, 64, 28), 16, "sapphirerapids")
                      if r[0].rule in ("CpuConv2d", "CpuMatmul")]
    assert (kp.tile, kp.main_extent, count) == ("14x2x16", 2 * 56, 1)
    assert kp.efficiency(16) == 1.0


def test_a_parallel_loop_under_a_serial_one_forks_once_per_iteration():
    """Nest.forks: ``y[n, r, j]`` with a serial batch loop of 4 around a parallel row loop of 8
    enters its parallel region 4 times; the same loops fused and parallel once; serial 0."""
    x = te.placeholder((4, 8, 64), name="x")
    y = te.compute(x.shape, lambda n, i, j: x[n, i, j] * 2.0, name="y")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    n, r, _ = sch.get_loops(sch.get_sblock("y"))
    sch.parallel(r)
    assert [(k.extent, k.forks) for k in cpu_parallelism.nests_of(sch.mod["main"])] == [(8, 4)]
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    n, r, _ = sch.get_loops(sch.get_sblock("y"))
    sch.parallel(sch.fuse(n, r))
    assert [(k.extent, k.forks) for k in cpu_parallelism.nests_of(sch.mod["main"])] == [(32, 1)]
    assert [(k.extent, k.forks) for k in cpu_parallelism.nests_of(_scheduled(7, parallel=False))] == [(0, 0)] * 2
