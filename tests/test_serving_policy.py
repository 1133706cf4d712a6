"""hetpart.serving.policy: which bucket builds a model is batched on (only those whose
per-request time beats batch 1's by the threshold), and a Server that follows it: a
model no build pays for runs every request alone, with no max_delay wait; a batch
that would land on a dropped build is cut back to a kept one.  Latencies are given or
come from a fake clock; no test asserts a duration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hetpart.errors import ServingError
from hetpart.serving import BatchingPolicy, Server, policy
from serving_runners import Blocking, Doubler, expect_own, queue_behind_busy, row

LINEAR = {1: 0.010, 2: 0.020, 4: 0.041, 8: 0.083}  # a detector: every build costs per image what b1 does
CHEAP = {1: 0.004, 2: 0.0045, 4: 0.005, 8: 0.007}  # a ResNet: batching is nearly free


# --- deciding -----------------------------------------------------------------------
def test_a_model_whose_builds_scale_linearly_is_served_unbatched():
    p = policy.decide(LINEAR)
    assert p.sizes == (1,) and not p.batches and p.max_batch == 1
    assert p.source == policy.MEASURED and p.threshold == policy.PAYS


def test_a_model_whose_builds_pay_keeps_them_all():
    p = policy.decide(CHEAP)
    assert p.sizes == (1, 2, 4, 8) and p.batches and p.max_batch == 8


def test_the_threshold_edge_is_kept_and_just_above_it_dropped():
    # latency(2)/2 == 0.8 x latency(1) exactly: kept; a hair slower: dropped
    assert policy.decide({1: 1.0, 2: 1.6}, threshold=0.8).sizes == (1, 2)
    assert policy.decide({1: 1.0, 2: 1.6 * (1 + 1e-9)}, threshold=0.8).sizes == (1,)
    assert policy.decide({1: 1.0, 2: 1.9}, threshold=0.95).sizes == (1, 2)


def test_a_dropped_middle_build_is_never_run_but_the_builds_above_it_are():
    p = policy.decide({1: 1.0, 2: 1.9, 4: 2.0, 8: 3.0})  # b2 0.95x: dropped; b4 0.5x, b8 0.375x: kept
    assert p.sizes == (1, 4, 8)
    assert [p.runs(n) for n in range(1, 9)] == [True, False, True, True, True, True, True, True]


def test_the_record_is_json_and_says_what_was_measured():
    p = policy.decide({1: 0.002, 2: 0.002, 4: 0.008})
    rec = json.loads(json.dumps(p.record()))
    assert rec["sizes"] == [1, 2] and rec["source"] == "measured" and rec["threshold"] == 0.8
    assert rec["latency_ms"] == {"1": 2.0, "2": 2.0, "4": 8.0}
    assert rec["per_request_ratio"]["2"] == 0.5 and rec["per_request_ratio"]["4"] == 1.0
    assert p.describe().startswith("batches 1,2 (measured") and "b4 1.00x" in p.describe()
    assert policy.decide(LINEAR).describe().startswith("unbatched")


def test_an_explicit_list_is_the_policy_as_given():
    p = policy.explicit([8, 2])
    assert p.sizes == (1, 2, 8) and p.source == policy.EXPLICIT and not p.latencies_ms
    assert all(p.runs(n) for n in range(1, 9))  # nothing dropped: any batch up to 8


def test_bad_inputs_are_refused_saying_why():
    with pytest.raises(ServingError, match="batch 1's latency"):
        policy.decide({2: 1.0, 4: 1.0})
    with pytest.raises(ServingError, match="threshold"):
        policy.decide({1: 1.0}, threshold=1.5)
    with pytest.raises(ServingError, match="start at 1"):
        BatchingPolicy((2, 4))


def test_measure_times_each_build_of_the_runner_on_the_row(monkeypatch):
    """A fake clock advanced by the runner: the latencies are exactly its costs."""
    clock = [0.0]
    monkeypatch.setattr(policy.time, "perf_counter", lambda: clock[0])

    class Linear(Doubler):
        def run(self, feeds):
            clock[0] += LINEAR[len(feeds["x"])] if len(feeds["x"]) in LINEAR else 1.0
            return super().run(feeds)

    runner = Linear(max_batch=4)
    p = policy.measure(runner, row(3), repeats=2)
    assert p.sizes == (1,) and p.latencies_ms == pytest.approx({1: 10.0, 2: 20.0, 3: 1000.0, 4: 41.0})
    assert set(runner.batch_sizes) == {1, 2, 3, 4}


# --- the server following a policy --------------------------------------------------
def test_a_model_no_build_pays_for_never_waits_max_delay():
    """Requests queue behind a busy run at a short gap: a batching lane would wait up
    to max_delay (an hour: the results would time out) to fill a batch; with the
    policy each request runs alone at once."""
    runner = Blocking(max_batch=8)
    with Server(max_delay=3600) as server:
        server.add_model("det", runner, batching=policy.decide(LINEAR))
        queue_behind_busy(server, "det", runner, 4)
        stats = server.stats()["det"]
    assert runner.batch_sizes == [1] * 5
    assert stats["batch_rows"] == {1: 5} and stats["batching"]["sizes"] == [1]
    assert stats["batching"]["latency_ms"]["8"] == pytest.approx(83.0)


def test_an_unbatched_model_still_takes_a_request_of_several_rows():
    with Server(max_delay=3600) as server:
        server.add_model("m", Doubler(max_batch=4), batching=policy.decide(LINEAR))
        x = {"x": np.full((3, 3), 7.0, np.float32)}
        expect_own(server.infer("m", x, timeout=30), 7, rows=3)


def test_a_batch_that_would_land_on_a_dropped_build_is_cut_back_to_a_kept_one():
    """Kept (1, 4) of builds 1, 2, 4: two queued requests would run on the dropped
    batch-2 build, so they run alone; five run as four (the batch-4 build) and one."""
    keep_4 = policy.decide({1: 1.0, 2: 1.9, 4: 2.0})
    for queued, expected in ((2, [1, 1, 1]), (5, [1, 4, 1])):
        runner = Blocking(max_batch=4)
        with Server(max_delay=0) as server:
            server.add_model("m", runner, batching=keep_4)
            queue_behind_busy(server, "m", runner, queued)
        assert runner.batch_sizes == expected, queued


def test_an_explicit_size_list_wins_and_caps_the_batch():
    runner = Blocking(max_batch=8)
    with Server(max_delay=0) as server:
        server.add_model("m", runner, batching=[1, 2])
        queue_behind_busy(server, "m", runner, 5)
        assert server.stats()["m"]["batching"]["source"] == "explicit"
    assert runner.batch_sizes == [1, 2, 2, 1]


def test_without_a_policy_the_stats_say_so():
    with Server({"m": Doubler()}) as server:
        assert server.stats()["m"]["batching"] is None
