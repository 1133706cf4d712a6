"""tools/parallel_audit.py: a kernel's per-core ms turned into its modelled ms at T threads
(serial nests whole, a parallel nest as TVM splits it, a fork/join per region) and the ms it
loses over the ideal; the rows of a small model's NCHW and blocked builds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, _TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


cpu_parallelism = _load("cpu_parallelism")
parallel_audit = _load("parallel_audit")


def _row(nests, t1=1.0, count=1):
    kp = cpu_parallelism.KernelParallelism("k", "rule", [cpu_parallelism.Nest(w, e) for w, e in nests])
    return parallel_audit.Row(kp, count, flops=0, bytes=0, t1_ms=t1)


@pytest.mark.parametrize("nests, threads, fork_us, ms", [
    ([(100, 0)], 16, 5.0, 1.0),                          # serial: all of it, no fork
    ([(700, 7)], 16, 0.0, 1.0 / 7),                      # 7 iterations on 16 threads: one each
    ([(320, 32)], 16, 5.0, 2 / 32 + 0.005),              # even: 2 iterations a thread, one fork
    ([(100, 0), (900, 9)], 2, 0.0, 0.1 + 0.9 * 5 / 9),   # a serial part and a parallel one
])
def test_modelled_ms(nests, threads, fork_us, ms):
    assert _row(nests).modelled_ms(threads, fork_us) == pytest.approx(ms)


def test_lost_ms_counts_every_occurrence():
    r = _row([(700, 7)], t1=1.6, count=3)
    assert r.lost_ms(16, 0.0) == pytest.approx(3 * (1.6 / 7 - 1.6 / 16))


def test_rows_of_a_small_blocked_model():
    """Static per-core guesses; the blocked build's convs are there (this small, some run serial: E = 1)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from blocked_conv_cases import small_densenet

    rows = parallel_audit.rows_of(small_densenet(), 8, 16, measure=False, calls=1, rounds=1, gflops=100, gbs=10)
    convs = [r for r in rows if "conv2d_NCHWc" in r.kp.name]
    assert convs and all(r.t1_ms > 0 and r.kp.main_extent >= 1 for r in convs)
    assert all(r.kp.main_extent == 1 for r in rows if r.kp.serial_share == 1.0)
    text = "\n".join(parallel_audit.report(rows, 16, 5.0, 5))
    assert "lost ms@16" in text and text.count("\n| ") >= 5
