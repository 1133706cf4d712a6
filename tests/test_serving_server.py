"""hetpart.serving.Server with fake runners: no mixing or dropping under a many-thread
hammer, batching that follows the load, typed errors confined to their batch or
request, and a shutdown that answers or rejects every pending request.

Batching is made deterministic where it matters: a runner that blocks on an event
holds the batcher while requests queue, so what the next batch holds does not depend
on timing.  No test asserts a duration.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

import hetpart
from hetpart.serving import Server
from hetpart.serving.gate import Gate

from serving_runners import Blocking, Doubler, expect_own, queue_behind_busy, row


# --- correctness under many threads -------------------------------------------------


def _hammer(server, runners, threads: int, per_thread: int, max_rows: int) -> dict:
    """``threads`` clients each submit ``per_thread`` requests of 1..``max_rows`` distinct
    rows to model "a" or "b" of ``server`` (open) at random and check every answer holds
    exactly its own rows; asserts none got another's and no row ran twice; returns the
    server's stats."""
    failures: list[str] = []

    def client(t):
        rng = random.Random(t)
        futures = []
        for i in range(per_thread):
            pid = t * 10_000 + i + 1
            rows = rng.randint(1, max_rows)
            x = np.stack([np.arange(4, dtype=np.float64) + pid * 10 + r for r in range(rows)])
            x[:, 0] = pid * 10 + np.arange(rows)
            futures.append((server.submit(rng.choice("ab"), {"x": x}), x))
        for fut, x in futures:
            out = fut.result(timeout=60)
            if not (np.array_equal(out["y"], 2 * x + 1) and np.array_equal(out["s"], x.sum(axis=1))):
                failures.append(f"thread {t}: payload {x[0, 0]} got someone else's answer")
    pool = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not failures, failures[:5]
    seen = runners["a"].rows_seen + runners["b"].rows_seen
    assert len(seen) == len(set(seen)), "a row ran twice"
    return server.stats()


def test_hammer_every_response_is_its_own_requests():
    """16 threads x 200 requests over two models (one with three batchers), 1-3 rows
    each, distinct payloads: each answer holds exactly its own rows, and every row ran
    exactly once."""
    runners = {"a": Doubler(max_batch=8), "b": Doubler(max_batch=5)}
    threads, per_thread = 16, 200
    server = Server({"a": runners["a"]}, max_delay=0.001)
    server.add_model("b", runners["b"], instances=3)  # three batches of b may run at once
    with server:
        stats = _hammer(server, runners, threads, per_thread, max_rows=3)
    assert sum(s["completed"] for s in stats.values()) == threads * per_thread
    assert sum(s["submitted"] for s in stats.values()) == threads * per_thread
    assert max(runners["a"].batch_sizes) <= 8 and max(runners["b"].batch_sizes) <= 5


@pytest.mark.parametrize("instances", [1, 3])
def test_hammer_behind_a_one_slot_gate_tops_up_without_mixing(instances):
    """The same hammer behind a 1-slot gate across the models (batches top up once their
    slot is granted, :meth:`Lane._top_up`; with 3 batchers of b, one may be forming as
    another tops up): every answer its own, every row once, no batch over its max."""
    runners = {"a": Doubler(max_batch=8), "b": Doubler(max_batch=5)}
    threads, per_thread = 8, 150
    server = Server({"a": runners["a"]}, max_delay=0.001, max_concurrent_batches=1)
    server.add_model("b", runners["b"], instances=instances)
    with server:
        stats = _hammer(server, runners, threads, per_thread, max_rows=3)
    assert sum(s["completed"] for s in stats.values()) == threads * per_thread
    assert max(runners["a"].batch_sizes) <= 8 and max(runners["b"].batch_sizes) <= 5


def test_requests_queued_behind_a_busy_runner_are_batched_up_to_max_batch():
    runner = Blocking(max_batch=8)
    with Server({"m": runner}, max_delay=0) as server:
        queue_behind_busy(server, "m", runner, 10)
        stats = server.stats()["m"]
    assert runner.batch_sizes == [1, 8, 2]
    assert stats["batch_requests"] == {1: 1, 2: 1, 8: 1} and stats["batches"] == 3
    assert stats["mean_batch_rows"] == 11 / 3
    assert stats["queue_wait_ms"]["p50"] <= stats["queue_wait_ms"]["p99"]
    assert stats["run_ms"]["p99"] is not None


def test_one_request_at_a_time_runs_alone():
    runner = Doubler(max_batch=8)
    with Server({"m": runner}) as server:
        for i in range(20):
            expect_own(server.infer("m", row(i), timeout=30), i)
        assert server.stats()["m"]["batch_rows"] == {1: 20}
    assert runner.batch_sizes == [1] * 20


def test_a_lone_request_does_not_wait_for_max_delay():
    """The first request on an idle server has no recent arrivals: it goes at once
    (with max_delay an hour, waiting would time the result out)."""
    with Server({"m": Doubler()}, max_delay=3600) as server:
        expect_own(server.submit("m", row(7)).result(timeout=60), 7)


def test_requests_of_different_shapes_are_batched_apart():
    runner = Blocking(max_batch=8)
    with Server({"m": runner}, max_delay=0) as server:
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        narrow = [server.submit("m", row(i, width=3)) for i in range(1, 4)]
        wide = [server.submit("m", row(i, width=5)) for i in range(4, 7)]
        runner.release.set()
        first.result(30)
        for i, f in enumerate(narrow, start=1):
            expect_own(f.result(30), i, width=3)
        for i, f in enumerate(wide, start=4):
            expect_own(f.result(30), i, width=5)
    assert runner.batch_sizes == [1, 3, 3]


# --- errors -------------------------------------------------------------------------
def test_a_failing_batch_fails_exactly_its_requests():
    runner = Blocking(max_batch=4, poison=5.0)
    with Server({"m": runner}, max_delay=0) as server:
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        futures = [server.submit("m", row(i)) for i in range(1, 11)]  # batches [1-4] [5-8] [9-10]
        runner.release.set()
        expect_own(first.result(30), 0)
        for i, fut in enumerate(futures, start=1):
            if 5 <= i <= 8:
                with pytest.raises(hetpart.BatchError) as info:
                    fut.result(30)
                assert isinstance(info.value, hetpart.RuntimeFailure)
                assert "poisoned row" in str(info.value) and info.value.partition == "p0"
                assert isinstance(info.value.__cause__, hetpart.RuntimeFailure)
            else:
                expect_own(fut.result(30), i)
        expect_own(server.infer("m", row(42), timeout=30), 42)  # still serving
        stats = server.stats()["m"]
    assert stats["failed"] == 4 and stats["completed"] == 8


def test_a_runner_bug_is_a_typed_batch_error():
    class Broken:
        max_batch = 2

        def run(self, feeds):
            raise ZeroDivisionError("oops")

    with Server({"m": Broken()}) as server:
        with pytest.raises(hetpart.BatchError, match="ZeroDivisionError: oops"):
            server.infer("m", row(1), timeout=30)


def test_outputs_without_the_batch_rows_fail_the_batch():
    class NoBatchDim(Blocking):
        def run(self, feeds):
            super().run(feeds)
            return {"total": np.float32(feeds["x"].sum())}

    runner = NoBatchDim(max_batch=4)
    with Server({"m": runner}, max_delay=0) as server:
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        pair = [server.submit("m", row(1)), server.submit("m", row(2))]
        runner.release.set()
        assert first.result(30)["total"] == 0  # alone: the outputs as they are
        for fut in pair:
            with pytest.raises(hetpart.BatchError, match="max_batch=1"):
                fut.result(30)


class Unreadable:
    """Like a GPU tensor: claims to be an array, but numpy cannot read it."""

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")


def test_bad_feeds_are_refused_at_submit_naming_the_input():
    from hetpart.compiler.artifact import TensorSpec

    runner = Doubler(max_batch=4, inputs=[TensorSpec("x", (4, 3), "float32")])
    with Server({"m": runner}) as server:
        cases = {
            "wrong name": ({"z": np.zeros((1, 3), np.float32)}, ["x", "z"]),
            "wrong shape": ({"x": np.zeros((1, 5), np.float32)}, ["x"]),
            "wrong dtype": ({"x": np.zeros((1, 3), np.int64)}, ["x"]),
            "too many rows": ({"x": np.zeros((5, 3), np.float32)}, ["x"]),
            "no batch dim": ({"x": np.float32(1)}, ["x"]),
            "not an array": ({"x": "text"}, ["x"]),
            "unreadable": ({"x": Unreadable()}, ["x"]),
        }
        for what, (feeds, named) in cases.items():
            with pytest.raises(hetpart.BadRequestError) as info:
                server.submit("m", feeds)
            assert sorted(info.value.inputs) == named, what
            assert "'x'" in str(info.value), what
        with pytest.raises(hetpart.BadRequestError, match="no model named 'nope'"):
            server.submit("nope", row(1))
        expect_own(server.infer("m", row(3), timeout=30), 3)
        assert server.stats()["m"]["rejected"] == len(cases)
    assert runner.rows_seen == [3.0]


def test_inputs_that_disagree_on_rows_are_refused():
    class Two(Doubler):
        def run(self, feeds):
            return {"y": feeds["x"] + feeds["w"]}

    with Server({"m": Two()}) as server:
        with pytest.raises(hetpart.BadRequestError, match="disagree on the batch dim"):
            server.submit("m", {"x": np.zeros((1, 3)), "w": np.zeros((2, 3))})


def test_a_cancelled_request_is_not_run():
    runner = Blocking(max_batch=8)
    with Server({"m": runner}, max_delay=0) as server:
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        doomed = server.submit("m", row(1))
        kept = server.submit("m", row(2))
        assert doomed.cancel()
        runner.release.set()
        first.result(30)
        expect_own(kept.result(30), 2)
        with pytest.raises(CancelledError):
            doomed.result(0)
    assert 1.0 not in runner.rows_seen


# --- shutdown -----------------------------------------------------------------------
def _stuck_server(queued: int):
    """A Server (no delay) over a Blocking runner (batches of 4) whose first request, row 0, has
    started and is held until ``runner.release``, with ``queued`` more (rows 1..queued) submitted
    behind it.  Output: ``(runner, server, first future, the queued futures)``."""
    runner = Blocking(max_batch=4)
    server = Server({"m": runner}, max_delay=0)
    first = server.submit("m", row(0))
    assert runner.started.wait(30)
    return runner, server, first, [server.submit("m", row(i)) for i in range(1, queued + 1)]


def test_close_answers_every_pending_request():
    runner, server, first, pending = _stuck_server(9)
    closer = threading.Thread(target=server.close)
    closer.start()
    runner.release.set()
    closer.join(60)
    assert not closer.is_alive()
    for i, fut in enumerate([first] + pending):
        expect_own(fut.result(0), i)
    with pytest.raises(hetpart.ServerClosedError):
        server.submit("m", row(99))


def test_close_with_a_timeout_rejects_what_it_cannot_answer():
    runner, server, first, pending = _stuck_server(9)
    assert server.close(timeout=0.05) is False  # the runner is stuck: nothing more can finish
    for fut in [first] + pending:
        assert fut.done()
        with pytest.raises(hetpart.ServerClosedError):
            fut.result(0)
    runner.release.set()  # the stuck run ends; its late answer is dropped, not raised
    assert server.stats()["m"]["shut_down"] == 10


def test_close_without_drain_rejects_the_queue_and_finishes_the_running_batch():
    runner, server, first, queued = _stuck_server(4)
    closer = threading.Thread(target=server.close, kwargs={"drain": False})
    closer.start()
    for fut in queued:
        with pytest.raises(hetpart.ServerClosedError):
            fut.result(30)
    runner.release.set()
    closer.join(60)
    expect_own(first.result(0), 0)
    assert runner.batch_sizes == [1]


# --- priority -----------------------------------------------------------------------
def test_gate_hands_a_freed_slot_to_the_highest_priority_then_the_oldest():
    gate = Gate(1)
    gate.acquire(0, 0.0)
    order, threads = [], []
    for name, priority, arrival in [("low-old", 0, 1.0), ("high", 5, 3.0), ("low-new", 0, 2.0), ("mid", 2, 4.0)]:
        def take(name=name, priority=priority, arrival=arrival):
            gate.acquire(priority, arrival)
            order.append(name)
            gate.release()
        threads.append(threading.Thread(target=take))
        threads[-1].start()
    while len(gate._waiting) < 4:  # every one queued before the slot frees
        threading.Event().wait(0.001)
    gate.release()
    for t in threads:
        t.join(30)
    assert order == ["high", "mid", "low-old", "low-new"]


def test_one_slot_across_models_runs_one_batch_at_a_time():
    active, peak, lock = [0], [0], threading.Lock()

    class Counting(Doubler):
        def run(self, feeds):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                threading.Event().wait(0.001)
                return super().run(feeds)
            finally:
                with lock:
                    active[0] -= 1

    server = Server(max_concurrent_batches=1)
    server.add_model("a", Counting(), priority=1)
    server.add_model("b", Counting())
    with server:
        futures = [(server.submit("ab"[i % 2], row(i)), i) for i in range(60)]
        for fut, i in futures:
            expect_own(fut.result(30), i)
    assert peak[0] == 1


def test_a_batch_waiting_for_the_gate_takes_the_requests_queued_meanwhile():
    """Behind a 1-slot gate, model b's batch (row 100) forms at once and waits while a's
    run holds the slot; rows 101-103 queue meanwhile.  Once the slot is b's, they join
    that batch: one run of 4 rows, each answer its own (without the top-up: runs of 1 and 3)."""
    a, b = Blocking(), Doubler()
    server = Server(max_delay=0.0, max_concurrent_batches=1)
    server.add_model("a", a)
    server.add_model("b", b)
    with server:
        first = server.submit("a", row(0))
        assert a.started.wait(30)
        waiting = server.submit("b", row(100))
        lane = server._lane("b")
        for _ in range(3000):  # until b's batcher holds its batch (formed, waiting for the gate)
            with lane._cond:
                if lane._in_flight:
                    break
            threading.Event().wait(0.001)
        later = [server.submit("b", row(i)) for i in range(101, 104)]
        a.release.set()
        expect_own(first.result(30), 0)
        for fut, i in zip([waiting, *later], range(100, 104)):
            expect_own(fut.result(30), i)
    assert b.batch_sizes == [4]


def test_max_batch_below_the_runners_own_is_respected():
    runner = Blocking(max_batch=8)
    server = Server(max_delay=0)
    server.add_model("m", runner, max_batch=3)
    with server:
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        rest = [server.submit("m", row(i)) for i in range(1, 7)]
        runner.release.set()
        for i, fut in enumerate([first] + rest):
            expect_own(fut.result(30), i)
        with pytest.raises(hetpart.BadRequestError, match="1..3 rows"):
            server.submit("m", {"x": np.zeros((4, 3), np.float32)})
    assert runner.batch_sizes == [1, 3, 3]


def test_close_while_clients_submit_leaves_no_future_pending():
    """Clients keep submitting while the server closes: once close() returns, every
    future a submit gave is done, each with its own answer or ServerClosedError, and
    a submit after it raises ServerClosedError."""
    server = Server({"m": Doubler(max_batch=4)}, max_delay=0.0005)
    futures, refused, stop = [], [0], threading.Event()
    lock = threading.Lock()

    def client(t):
        i = 0
        while not stop.is_set():
            pid = t * 100_000 + i
            try:
                fut = server.submit("m", row(pid))
            except hetpart.ServerClosedError:
                with lock:
                    refused[0] += 1
                return
            with lock:
                futures.append((fut, pid))
            i += 1

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    while len(futures) < 500:
        threading.Event().wait(0.001)
    server.close()
    stop.set()
    for th in threads:
        th.join(30)
    with pytest.raises(hetpart.ServerClosedError):
        server.submit("m", row(-1))
    for fut, pid in futures:
        assert fut.done()
        if fut.exception() is None:
            expect_own(fut.result(), pid)
        else:
            assert isinstance(fut.exception(), hetpart.ServerClosedError)


# --- warm-up ---------------------------------------------------------------------
class WarmCounting(Doubler):
    def __init__(self, max_batch=8):
        super().__init__(max_batch)
        self.warmed = 0

    def warm_up(self):
        self.warmed += 1


def test_a_runner_is_warmed_before_it_takes_requests_unless_told_not_to():
    """A bucketed session's first run of each bucket loads code and captures CUDA graphs
    (tens of ms): on the H200 that landed on live requests and broke p99.  The server
    warms a runner that can be warmed when the model is added, capped or not."""
    warm, cold, capped = WarmCounting(), WarmCounting(), WarmCounting(max_batch=8)
    with Server(max_delay=0) as server:
        server.add_model("warm", warm)
        server.add_model("cold", cold, warm_up=False)
        server.add_model("capped", capped, max_batch=2)
        assert (warm.warmed, cold.warmed, capped.warmed) == (1, 0, 1)
        expect_own(server.infer("warm", row(5), timeout=30), 5)
    assert warm.rows_seen == [5.0]  # warming ran nothing through the batcher


def test_a_session_runner_warms_its_session_once_on_zeros():
    from hetpart.serving.runner import SessionRunner

    class FakeSession:
        class compiled:  # noqa: N801 - a stand-in for CompiledModel's attributes
            inputs = [hetpart.compiler.artifact.TensorSpec("x", (4, 3), "float32")]
            plan = None

        def __init__(self):
            self.feeds = []

        def run(self, feeds):
            self.feeds.append(feeds)
            return {"y": feeds["x"]}

    session = FakeSession()
    assert SessionRunner(session).warm_up() is True
    assert len(session.feeds) == 1 and session.feeds[0]["x"].shape == (4, 3) and not session.feeds[0]["x"].any()
    FakeSession.compiled.inputs = [hetpart.compiler.artifact.TensorSpec("x", ("batch", 3), "float32")]
    symbolic = FakeSession()
    assert SessionRunner(symbolic, max_batch=4).warm_up() is False and symbolic.feeds == []


class NmsLike(Blocking):
    """A Blocking runner whose output ``sel`` is NonMaxSuppression-like: per row i of x
    (payload id in column 0) two detections (i, class c, box id*10 + c), sorted by class."""

    batch_columns = {"sel": 0}

    def run(self, feeds):
        super().run(feeds)  # blocks the first run; records the batch
        ids = feeds["x"][:, 0].astype(np.int64)
        sel = np.array([[i, c, ids[i] * 10 + c] for c in (0, 1) for i in range(len(ids))], dtype=np.int64)
        return {"y": feeds["x"] * 2, "sel": sel}


def test_an_output_split_by_its_batch_column_reaches_each_request_renumbered():
    """A detector batched: its NonMaxSuppression rows (batch, class, box) are sorted by
    class, not by request; each request must get exactly its own, numbered from 0."""
    runner = NmsLike()
    with Server(max_delay=0) as server:
        server.add_model("det", runner, warm_up=False)
        first = server.submit("det", row(1))
        assert runner.started.wait(30)
        queued = [server.submit("det", {"x": np.full((n, 3), float(i), np.float32)}) for i, n in ((2, 1), (3, 2), (4, 1))]
        runner.release.set()
        results = [f.result(30) for f in [first] + queued]
    assert runner.batch_sizes == [1, 4]  # the three queued requests ran as one batch
    for (pid, n), res in zip(((1, 1), (2, 1), (3, 2), (4, 1)), results):
        want = np.array([[r, c, pid * 10 + c] for c in (0, 1) for r in range(n)], dtype=np.int64)
        np.testing.assert_array_equal(res["sel"], want)
        np.testing.assert_array_equal(res["y"], np.full((n, 3), 2.0 * pid, np.float32))


# --- holding a partial batch while another batch of its model runs (batcher hold) ----------


class BlocksRowZero(Doubler):
    """A Doubler whose runs holding row 0 wait for ``release`` (``started`` set when one begins)."""

    def __init__(self, max_batch=8):
        super().__init__(max_batch)
        self.started, self.release = threading.Event(), threading.Event()

    def run(self, feeds):
        if (feeds["x"][:, 0] == 0).any():
            self.started.set()
            assert self.release.wait(30)
        return super().run(feeds)


def test_a_partial_batch_is_held_while_another_batch_of_its_model_runs():
    """Two instances, hold an hour: row 0 runs (blocked); rows 1-3 arrive meanwhile and the
    free instance holds them as one batch until row 0's batch ends, then runs them together
    (without hold it would have run row 1 alone at once)."""
    runner = BlocksRowZero()
    with Server(max_delay=0, hold=3600) as server:
        server.add_model("m", runner, instances=2)
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        rest = [server.submit("m", row(i)) for i in (1, 2, 3)]
        assert not any(f.done() for f in rest)
        runner.release.set()
        for i, fut in enumerate([first, *rest]):
            expect_own(fut.result(30), i)
    assert runner.batch_sizes == [1, 3]


def test_a_held_batch_goes_when_its_hold_has_passed_though_the_other_still_runs():
    runner = BlocksRowZero()
    with Server(max_delay=0, hold=0.05) as server:
        server.add_model("m", runner, instances=2)
        first = server.submit("m", row(0))
        assert runner.started.wait(30)
        expect_own(server.submit("m", row(1)).result(30), 1)  # row 0's batch still blocked
        assert not first.done()
        runner.release.set()
        expect_own(first.result(30), 0)
    assert runner.batch_sizes == [1, 1]


def test_hold_never_delays_a_lone_request_nor_a_single_instance_model():
    with Server(max_delay=0, hold=3600) as server:
        server.add_model("two", Doubler(), instances=2)
        server.add_model("one", Blocking(), instances=1)
        expect_own(server.submit("two", row(5)).result(timeout=60), 5)  # nothing else runs: not held
        assert server._lane("one").hold == 0.0 and server._lane("two").hold == 3600


def test_hold_defaults_to_the_module_switch_and_refuses_a_negative_value(monkeypatch):
    from hetpart.serving import batcher

    monkeypatch.setattr(batcher, "HOLD_WHILE_BUSY", 0.01)
    with Server() as server:
        server.add_model("m", Doubler(), instances=2)
        server.add_model("n", Doubler(), instances=2, hold=0.5)
        assert server._lane("m").hold == 0.01 and server._lane("n").hold == 0.5
    with pytest.raises(hetpart.ServingError, match="hold"):
        Server(hold=-1)


def test_hammer_with_hold_every_response_is_its_own_and_none_is_dropped():
    """12 threads x 150 requests, two models of three instances each, a 2 ms hold and a
    runner that takes a little time: every answer is its own rows and every row ran once."""

    class Slow(Doubler):
        def run(self, feeds):
            threading.Event().wait(0.0005)
            return super().run(feeds)

    runners = {"a": Slow(max_batch=8), "b": Slow(max_batch=4)}
    threads, per_thread = 12, 150
    with Server(max_delay=0.001, hold=0.002) as server:
        for name, r in runners.items():
            server.add_model(name, r, instances=3)
        stats = _hammer(server, runners, threads, per_thread, max_rows=2)
    assert sum(s["completed"] for s in stats.values()) == threads * per_thread
    assert max(runners["a"].batch_sizes) <= 8 and max(runners["b"].batch_sizes) <= 4
