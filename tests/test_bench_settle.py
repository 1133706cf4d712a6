"""hetpart.bench.settle: waiting out the other runtime's spinning pool threads."""

from __future__ import annotations

import threading
import time

from hetpart.bench.settle import SettleLog, others_cpu_s, settle


class FakeClock:
    """A clock that ``sleep`` advances; ``cpu`` is what a probe reads at each time."""

    def __init__(self, cpu_at):
        self.t = 0.0
        self.cpu_at = cpu_at

    def clock(self):
        return self.t

    def sleep(self, dt):
        self.t += dt

    def probe(self):
        return self.cpu_at(self.t)


def test_returns_after_the_first_quiet_window():
    # the other threads burn one whole core until t = 0.1, then nothing
    f = FakeClock(lambda t: min(t, 0.1))
    s = settle(window_s=0.02, quiet_cores=0.05, cap_s=3, probe=f.probe, clock=f.clock, sleep=f.sleep)
    assert s.quiet
    assert 0.1 <= s.waited_s <= 0.14  # the window after the spin ended is the quiet one
    assert s.busy_cores == 0.0


def test_already_quiet_waits_one_window():
    f = FakeClock(lambda t: 5.0)
    s = settle(window_s=0.02, probe=f.probe, clock=f.clock, sleep=f.sleep)
    assert s.quiet and abs(s.waited_s - 0.02) < 1e-12


def test_cap_reached_while_busy_is_reported_not_quiet():
    f = FakeClock(lambda t: 2 * t)  # two cores busy for ever
    s = settle(window_s=0.02, cap_s=0.5, probe=f.probe, clock=f.clock, sleep=f.sleep)
    assert not s.quiet
    assert 0.5 <= s.waited_s < 0.53
    assert abs(s.busy_cores - 2.0) < 1e-9


def test_no_proc_means_no_wait_and_says_so():
    s = settle(probe=lambda: None, sleep=lambda dt: (_ for _ in ()).throw(AssertionError("slept")))
    assert not s.quiet and s.waited_s == 0.0


def test_others_cpu_counts_a_busy_thread_but_not_the_caller():
    before = others_cpu_s()
    if before is None:  # no /proc: nothing to check here
        return
    stop = threading.Event()
    done = threading.Event()

    def spin():
        x = 0
        while not stop.is_set():
            x += 1
        done.set()

    t = threading.Thread(target=spin)
    t.start()
    try:
        # The caller sleeps: its own time does not grow, the spinner's does.  On a loaded
        # box (CI: two workers on two cores) the spinner may get little CPU in a fixed
        # 0.3 s, so it spins until its time shows or 10 s have passed.
        deadline = time.monotonic() + 10.0
        during = others_cpu_s()
        while during - before <= 0.01 and time.monotonic() < deadline:
            stop.wait(0.1)
            during = others_cpu_s()
    finally:
        stop.set()
        t.join()
    assert during - before > 0.01


def test_others_cpu_sums_every_task_but_the_excluded_one(tmp_path):
    """The caller's own time is never counted: read on a task list written here (the
    real process may hold other busy threads, e.g. TVM pool workers still spinning
    after an earlier test, so a timing of the caller's own work there could not tell)."""
    for tid, ns in ((101, 2_000_000_000), (102, 500_000_000), (103, 250_000_000)):
        (tmp_path / str(tid)).mkdir()
        (tmp_path / str(tid) / "schedstat").write_text(f"{ns} 0 0\n")
    assert others_cpu_s(exclude_tid=101, tasks=str(tmp_path)) == 0.75
    assert others_cpu_s(exclude_tid=999, tasks=str(tmp_path)) == 2.75


def test_real_settle_waits_out_onnxruntime_workers():
    """After an ORT run on 2 intra-op threads its worker spins; settle returns quiet."""
    import numpy as np
    import pytest

    from hetpart.bench.cpu_layers import LAYERS
    from hetpart.bench.peers import ort_session
    from hetpart.models import example_inputs

    if others_cpu_s() is None:
        pytest.skip("no /proc task list")
    model = LAYERS["r50_1x1_14"]()
    session = ort_session(model, threads=2)
    feeds = example_inputs(model, seed=0)
    for _ in range(3):
        session.run(None, feeds)
    s = settle(cap_s=5.0)
    assert s.quiet
    assert np.isfinite(s.busy_cores) and s.busy_cores <= 0.05


def test_log_sums_its_waits():
    log = SettleLog()
    f = FakeClock(lambda t: min(t, 0.1))
    log(probe=f.probe, clock=f.clock, sleep=f.sleep)
    g = FakeClock(lambda t: 3 * t)
    log(probe=g.probe, clock=g.clock, sleep=g.sleep, cap_s=0.1)
    j = log.to_json()
    assert j["settles"] == 2 and j["settle_not_quiet"] == 1
    assert j["settle_max_ms"] >= 100
    assert "1 still busy" in log.summary()


def test_kernel_table_settles_before_each_side(monkeypatch):
    """kernel_table.measure waits for quiet before hetpart's runs and before ORT's, and says so."""
    from hetpart.bench import kernel_table
    from hetpart.bench.cpu_layers import LAYERS
    from hetpart.bench.settle import Settled
    from hetpart.models import example_inputs

    calls = []
    monkeypatch.setattr(kernel_table, "settle", lambda: calls.append(1) or Settled(0.125, True, 0.0))
    model = LAYERS["inc_1x3"]()
    t = kernel_table.measure(model, example_inputs(model, seed=0), threads=1, runs=2)
    assert len(calls) == 2 and t.settle_ms == (125.0, 125.0)
    assert "settled 125 ms before hetpart's runs, 125 ms before ORT's" in t.render()
