"""hetpart.bench.conformance: judging against the table, and crash/hang isolation."""

from __future__ import annotations

import os
import time

import pytest

from hetpart.bench import conformance


class _Dies:
    """Unpickles (in the worker) by killing the worker process."""

    name = "dies"

    def __reduce__(self):
        return (os._exit, (3,))


class _Hangs:
    """Unpickles (in the worker) by sleeping past any time limit."""

    name = "hangs"

    def __reduce__(self):
        return (time.sleep, (600,))


def test_judge_against_the_expected_failure_table():
    table = {"t": ("tvm-op", "TVM lacks the op"), "p": ("precision", "just outside the tolerance")}
    assert conformance.judge("t", "typed-error", "x", table).status == "expected-fail"
    assert conformance.judge("t", "pass", "", table).status == "unexpected-pass"
    assert conformance.judge("t", "wrong", "x", table).status == "wrong"  # listed, but failing another way
    assert conformance.judge("t", "internal-error", "x", table).status == "internal-error"
    assert conformance.judge("p", "wrong", "x", table).status == "expected-fail"
    assert conformance.judge("new", "typed-error", "x", table).status == "typed-error"


@pytest.mark.slow
def test_a_crashing_worker_costs_its_case_not_the_run():
    got = []
    left = conformance._run_chunk({"dies": _Dies()}, "CPU", None, {}, 60.0, 0, got.append)
    assert left == [] and [(r.name, r.status) for r in got] == [("dies", "crash")]
    assert "exit code 3" in got[0].detail


@pytest.mark.slow
def test_a_hanging_worker_is_killed_after_the_time_limit():
    got = []
    start = time.monotonic()
    left = conformance._run_chunk({"hangs": _Hangs()}, "CPU", None, {}, 3.0, 0, got.append)
    assert left == [] and [(r.name, r.status) for r in got] == [("hangs", "hang")]
    assert time.monotonic() - start < 60
