"""Where a served request's time goes (RequestTiming on every future), the runs counted
across models, the heap frozen once at the first request, and the GC pause recorder.

Orderings and counts only: runners that block on events make what each batch holds
and what runs beside it deterministic; no test asserts a duration.
"""

from __future__ import annotations

import gc
import json
import threading

import pytest

from hetpart.serving import Server, heap
from hetpart.serving.request import PHASES, Request, RequestTiming

from isolated import assert_clean, run_isolated
from serving_runners import Blocking, Doubler, expect_own, row


@pytest.fixture(autouse=True)
def _thawed():
    """Servers here freeze the heap; leave the test process as it was found."""
    yield
    gc.unfreeze()


def answered_at(future) -> list[float]:
    """A list that gets the perf_counter time the caller saw the answer."""
    import time

    seen: list[float] = []
    future.add_done_callback(lambda f: seen.append(time.perf_counter()))
    return seen


def test_the_phases_of_an_answered_request_sum_to_its_latency():
    with Server({"m": Doubler()}, max_delay=0.001) as server:
        futures = [server.submit("m", row(i)) for i in range(20)]
        seen = [answered_at(f) for f in futures]
        for i, f in enumerate(futures):
            expect_own(f.result(30), i)
    for f, (answered,) in zip(futures, seen):
        t = f.timing
        assert t.submitted <= t.taken <= t.started <= t.ran <= t.settled <= answered
        phases = t.phases_ms(answered, scheduled=t.submitted - 0.001)
        assert list(phases) == ["lag", *PHASES]
        assert phases["lag"] == pytest.approx(1.0)
        assert sum(phases.values()) == pytest.approx((answered - t.submitted + 0.001) * 1e3)
        assert 1 <= t.batch_rows <= 8 and t.concurrent >= 1


def test_requests_queued_behind_a_run_are_taken_after_it_and_stamped_with_their_batch():
    runner = Blocking(max_batch=8)
    with Server({"m": runner}, max_delay=0) as server:
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        rest = [server.submit("m", row(i)) for i in range(1, 4)]
        runner.release.set()
        for i, f in enumerate([first, *rest]):
            expect_own(f.result(30), i)
    assert first.timing.batch_rows == 1
    for f in rest:  # one batch of the three, formed once the first run ended
        assert f.timing.taken >= first.timing.ran
        assert f.timing.batch_rows == 3 and f.timing.started == rest[0].timing.started
        assert f.timing.concurrent == 1


def test_a_run_started_beside_another_models_run_counts_both():
    a, b = Blocking(), Blocking()
    with Server({"a": a, "b": b}) as server:
        fa = server.submit("a", row(1))
        assert a.started.wait(30)
        fb = server.submit("b", row(2))
        assert b.started.wait(30)
        a.release.set()
        b.release.set()
        expect_own(fa.result(30), 1)
        expect_own(fb.result(30), 2)
        assert (fa.timing.concurrent, fb.timing.concurrent) == (1, 2)
        # both ended: the next run starts alone again
        fc = server.submit("a", row(3))
        expect_own(fc.result(30), 3)
        assert fc.timing.concurrent == 1


def test_a_failed_batch_still_stamps_its_requests():
    import hetpart

    runner = Blocking(poison=7.0)
    with Server({"m": runner}) as server:
        f = server.submit("m", row(7))
        runner.release.set()
        with pytest.raises(hetpart.BatchError):
            f.result(30)
    t = f.timing
    assert t.taken is not None and t.started is not None and t.ran is not None and t.settled is not None


def test_a_request_not_yet_run_has_no_phases():
    t = RequestTiming(submitted=1.0, taken=1.5)
    assert t.phases_ms(answered=2.0) is None
    r = Request({}, 1, (), None, arrival=3.0)
    assert r.timing.submitted == 3.0 and r.timing.taken is None


def test_the_heap_is_frozen_once_at_the_first_request_and_not_before(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "freeze", lambda collect=False: calls.append(collect) or 0)
    server = Server({"m": Doubler()})
    server.add_model("n", Doubler())
    assert calls == []  # setup (adding, warming up) is not frozen half-way
    go = threading.Barrier(8)

    def hammer(k):
        go.wait()
        for i in range(10):
            expect_own(server.infer("m" if i % 2 else "n", row(100 * k + i), timeout=30), 100 * k + i)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    server.close()
    assert calls == [False]  # once, without a collection (no pause on the first request)


def test_freeze_heap_false_leaves_the_gc_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "freeze", lambda collect=False: calls.append(collect) or 0)
    with Server({"m": Doubler()}, freeze_heap=False) as server:
        expect_own(server.infer("m", row(1), timeout=30), 1)
    assert calls == []


def test_freeze_moves_what_is_alive_into_the_permanent_generation():
    """In a child with one thread: in this process other tests' parked threads may run
    between two lines, and a frozen object that dies or another freeze moves the count."""
    out = assert_clean(run_isolated("""
        import json
        from hetpart.serving import heap
        keep = [[i] for i in range(1000)]  # tracked objects alive now
        frozen = heap.freeze(collect=True)
        print(json.dumps({"frozen": frozen, "state": heap.state()}))
    """, timeout=60))
    got = json.loads(out.strip().splitlines()[-1])
    assert got["frozen"] >= 1000 and got["state"]["frozen"] == got["frozen"]
    assert set(got["state"]) == {"enabled", "thresholds", "counts", "frozen"}


def test_gc_pauses_are_recorded_per_generation_while_active_only():
    pauses = heap.GcPauses()
    with pauses:
        gc.collect(0)
        gc.collect(2)
    gc.collect(2)  # after: not recorded
    assert pauses._callback not in gc.callbacks
    record = pauses.record()
    assert set(record) == {"gen0", "gen1", "gen2"}
    assert record["gen0"]["count"] >= 1 and record["gen2"]["count"] == 1
    for r in record.values():
        assert r["max_ms"] <= r["total_ms"] or r["count"] == 0
    first, last = pauses.pauses[0][1], pauses.pauses[-1][2]
    assert pauses.overlap_ms(first, last) == pytest.approx(sum(r["total_ms"] for r in record.values()))
    assert pauses.overlap_ms(last + 1, last + 2) == 0.0


def test_a_request_given_back_to_the_queue_is_taken_anew():
    """Kept (1, 4) of builds 1, 2, 4: of two requests queued behind a run, the second is
    taken into the first's batch, given back (batch 2 is dropped), and runs next: its
    queue phase ends when it is taken for the run it is in, not for the one it left."""
    from hetpart.serving import policy

    runner = Blocking(max_batch=4)
    with Server(max_delay=0) as server:
        server.add_model("m", runner, batching=policy.decide({1: 1.0, 2: 1.9, 4: 2.0}))
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        one, two = server.submit("m", row(1)), server.submit("m", row(2))
        runner.release.set()
        for i, f in enumerate([first, one, two]):
            expect_own(f.result(30), i)
    assert runner.batch_sizes == [1, 1, 1]
    assert two.timing.taken >= one.timing.ran and two.timing.batch_rows == 1
