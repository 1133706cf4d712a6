"""CPU sharing (hetpart.runtime.cpu_share): CPU partitions of sessions running at once
go to process-wide lanes (``gate``: one, ``split:N``: N on disjoint CPUs) instead of
each calling thread's own TVM pool.  Checked: the policy values and their errors, the
cut of the CPUs, the lanes' pool sizes and affinities, that a gate never lets two CPU
partitions run at once (and that without it they do), that a many-thread hammer over
several sessions neither deadlocks nor crosses results (each answer = ONNX Runtime's
for its own input), and that a failing partition reaches its caller through a lane."""

from __future__ import annotations

import os
import threading

import numpy as np
import onnxruntime as ort
import pytest

import hetpart
from hetpart import RuntimeFailure, Session, models
from hetpart.backend import forced_plan
from hetpart.cpu_cores import pool_size
from hetpart.runtime import cpu_share
from hetpart.runtime.cpu_share import CpuSharing, core_sets, parse, resolve
from hetpart.runtime.synthetic import chain, chain_reference
from hetpart.runtime.threads import os_thread_names

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


# --- the policy value ----------------------------------------------------------------
@pytest.mark.parametrize("text, want", [("gate", CpuSharing("gate", 1)), ("none", CpuSharing("none", 0)),
                                        ("split", CpuSharing("split", 2)), ("split:3", CpuSharing("split", 3)),
                                        (" Split:4 ", CpuSharing("split", 4))])
def test_parse_reads_every_form_and_names_it_back(text, want):
    got = parse(text)
    assert got == want and parse(got.name) == got


@pytest.mark.parametrize("bad", ["gates", "split:1", "split:x", "split:", "", 3, None])
def test_parse_refuses_other_values_naming_the_valid_ones(bad):
    with pytest.raises(RuntimeFailure, match="gate"):
        parse(bad)


def test_resolve_defaults_to_none_for_a_session_opened_alone():
    """A lone session pays a lane's hand-off for nothing: MultiSession asks for the gate."""
    assert resolve(None, None).name == "none"
    assert resolve(None, 4).name == "none"  # cpu_threads: the session's own pools
    assert resolve("split:2", None).name == "split:2"
    assert resolve("none", 4).name == "none"
    with pytest.raises(RuntimeFailure, match="cpu_threads"):
        resolve("gate", 4)


def test_core_sets_are_disjoint_contiguous_and_even():
    cpus = list(range(16))
    for ways in (2, 3, 5, 16):
        sets = core_sets(cpus, ways)
        assert len(sets) == ways and sorted(c for s in sets for c in s) == cpus
        assert max(map(len, sets)) - min(map(len, sets)) <= 1
        assert all(list(s) == list(range(s[0], s[0] + len(s))) for s in sets)
    with pytest.raises(RuntimeFailure, match="at least 3 CPUs"):
        core_sets([0, 1], 3)


# --- lanes: pool sizes and affinities -------------------------------------------------------
def test_gate_lane_pool_is_the_default_pool():
    share = cpu_share.share_for(parse("gate"))
    assert share is cpu_share.share_for(CpuSharing("gate", 1))  # one per policy per process
    (lane,) = share.lanes
    assert lane.pool_size == pool_size()  # what an inline run on the caller's pool had
    assert share.threads_per_lane == lane.pool_size
    assert cpu_share.share_for(parse("none")) is None


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
def test_split_lanes_are_pinned_to_disjoint_cpus_with_pools_of_their_size():
    share = cpu_share.share_for(parse("split:2"))
    sets = core_sets(CPUS, 2)
    names = os_thread_names()
    seen = set()
    for lane, cpus in zip(share.lanes, sets):
        assert lane.cpus == cpus and lane.pool_size == len(cpus)
        tids = [tid for tid, comm in names.items() if comm == lane.os_name]
        assert lane.thread.native_id in tids and lane.pinned == len(tids) >= 1
        for tid in tids:  # the lane and every TVM worker it made
            assert os.sched_getaffinity(tid) == set(cpus)
        assert not seen & set(cpus)
        seen |= set(cpus)
    record = share.record()
    assert record["policy"] == "split:2" and [r["cpus"] for r in record["lanes"]] == [list(s) for s in sets]


# --- sessions -------------------------------------------------------------------------------
SHAPE = (16, 64)


def _feeds(seed):
    return {"x": np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)}


def test_session_records_its_policy_and_refuses_it_with_cpu_threads():
    hetero = chain(["cpu", "cuda", "cpu"], SHAPE, work=2)
    with Session(hetero) as s:  # alone: no lane's hand-off
        assert s.cpu_sharing.name == "none"
    with Session(hetero, cpu_sharing="gate") as s:
        assert s.cpu_sharing.name == "gate"
        share = cpu_share.share_for(s.cpu_sharing)
        assert s.pool_threads_used == {"p0_cpu": share.threads_per_lane, "p2_cpu": share.threads_per_lane}
        before = share.calls
        out = s.run(_feeds(1))
        assert share.calls == before + 2  # both CPU partitions went through the gate lane
    np.testing.assert_allclose(out["t2"], chain_reference(_feeds(1)["x"], 3, 2), rtol=1e-5, atol=1e-5)
    with Session(chain(["cpu"], SHAPE)) as s:
        assert s.cpu_sharing.name == "none"
    with pytest.raises(RuntimeFailure, match="cpu_threads"):
        Session(hetero, cpu_threads=1, cpu_sharing="gate")


def _blocking_spy(session, stage_index: int, inside: dict):
    """Make the stage's partition block inside its call until released; ``inside``
    (shared by several spies) counts the partitions inside now and at most."""
    runner = session._stages[stage_index].runner
    inner = getattr(runner, "_runner", runner)
    state = {"entered": threading.Event(), "release": threading.Event()}
    original = inner.call

    def call(*a, **k):
        with inside["lock"]:
            inside["now"] += 1
            inside["max"] = max(inside["max"], inside["now"])
        try:
            state["entered"].set()
            state["release"].wait(20)
            return original(*a, **k)
        finally:
            with inside["lock"]:
                inside["now"] -= 1

    inner.call = call
    return state


@pytest.mark.parametrize("policy, together", [("gate", 1), ("none", 2)])
def test_gate_runs_one_cpu_partition_at_a_time_without_it_two_overlap(policy, together):
    """Two sessions, one blocked inside its CPU partition: under the gate the other's CPU
    partition waits for the lane; under none it runs beside it (the oversubscription)."""
    model = chain(["cpu", "cuda"], SHAPE, work=2)
    with Session(model, cpu_sharing=policy) as a, Session(model, cpu_sharing=policy) as b:
        a.run(_feeds(0)), b.run(_feeds(0))
        inside = {"lock": threading.Lock(), "now": 0, "max": 0}
        spy_a, spy_b = _blocking_spy(a, 0, inside), _blocking_spy(b, 0, inside)
        spy_b["release"].set()
        share = cpu_share.share_for(a.cpu_sharing)
        waited = share.waited if share else 0
        ta = threading.Thread(target=lambda: a.run(_feeds(1)))
        ta.start()
        assert spy_a["entered"].wait(20)
        got = {}
        tb = threading.Thread(target=lambda: got.setdefault("b", b.run(_feeds(2))))
        tb.start()
        if policy == "gate":
            for _ in range(2000):  # b reaches the gate and waits there
                if share.waited > waited:
                    break
                threading.Event().wait(0.01)
            assert share.waited == waited + 1 and not spy_b["entered"].is_set()
        else:
            assert spy_b["entered"].wait(20)
        spy_a["release"].set()
        ta.join(30), tb.join(30)
        assert not ta.is_alive() and not tb.is_alive()
        assert inside["max"] == together
    np.testing.assert_allclose(got["b"]["t1"], chain_reference(_feeds(2)["x"], 2, 2), rtol=1e-5, atol=1e-5)


def test_a_failing_partition_reaches_its_caller_through_the_lane_and_the_session_stays_usable():
    model = chain(["cpu", "cuda"], SHAPE, work=1)
    with Session(model, cpu_sharing="gate") as s:
        inner = s._stages[0].runner._runner
        original = inner.call
        inner.call = lambda *a, **k: (_ for _ in ()).throw(ValueError("boom"))
        with pytest.raises(RuntimeFailure, match="boom"):
            s.run(_feeds(0))
        inner.call = original
        np.testing.assert_allclose(s.run(_feeds(3))["t1"], chain_reference(_feeds(3)["x"], 2, 1), rtol=1e-5,
                                   atol=1e-5)


# --- hammer: several sessions, many threads, answers = ONNX Runtime's -------------------------
@pytest.fixture(scope="module")
def mlp():
    graph = hetpart.load("zoo:mlp:small:batch=1")
    proto = models.build("mlp", small=True, batch=1)
    cpu = hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return cpu, ref


@pytest.mark.parametrize("policy", ["gate", "split:2", "none"])
def test_hammer_many_threads_over_several_sessions_never_deadlocks_or_crosses(mlp, policy):
    if policy.startswith("split") and len(CPUS) < 2:
        pytest.skip("needs two CPUs")
    compiled, ref = mlp
    rng = np.random.default_rng(5)
    rows = [rng.standard_normal((1, 32)).astype(np.float32) for _ in range(48)]
    want = [ref.run(None, {"input": r})[0] for r in rows]
    hetero = chain(["cpu", "cuda", "cpu"], SHAPE, work=2)
    chain_rows = [_feeds(100 + k) for k in range(24)]
    chain_want = [chain_reference(f["x"], 3, 2) for f in chain_rows]
    sessions = [Session(compiled, cpu_sharing=policy) for _ in range(3)]
    hetero_session = Session(hetero, cpu_sharing=policy)
    share = cpu_share.share_for(parse(policy))
    errors, done = [], []

    def client(t):
        try:
            for k in range(t, len(rows), 8):
                s = sessions[k % len(sessions)]
                out = s.submit({"input": rows[k]}).result(60) if k % 2 else s.run({"input": rows[k]})
                np.testing.assert_allclose(out["logits"], want[k], rtol=1e-5, atol=1e-5)
                j = k % len(chain_rows)
                got = hetero_session.run(chain_rows[j])["t2"]
                np.testing.assert_allclose(got, chain_want[j], rtol=1e-5, atol=1e-5)
                done.append(k)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    try:
        threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a caller never came back (deadlock)"
        assert not errors, errors[0]
        assert sorted(done) == list(range(len(rows)))
        if share is not None:
            assert 1 <= share.max_busy <= len(share.lanes)
    finally:
        for s in sessions + [hetero_session]:
            s.close()


def test_a_process_exits_with_a_gate_session_left_open_in_a_global():
    """A session left open is closed by its finaliser while the interpreter shuts down,
    when daemon threads (its workers) no longer run: waiting for them hung the exit."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import numpy as np\n"
              "from hetpart import Session\n"
              "from hetpart.runtime.synthetic import chain\n"
              "s = Session(chain(['cpu', 'cuda'], (16, 64), work=1), cpu_sharing='gate')\n"
              "s.run({'x': np.ones((16, 64), np.float32)})\n"
              "print('ran')\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ran", done.stderr[-2000:]


def test_multi_session_and_bucketed_sessions_pass_the_policy_on():
    from hetpart import bucket_batches
    from hetpart.runtime import MultiSession

    a = chain(["cpu", "cuda"], SHAPE, work=1, model="a")
    b = chain(["cuda", "cpu"], SHAPE, work=1, model="b")
    with MultiSession([a, b], cpu_sharing="none") as multi:
        assert [s.cpu_sharing.name for s in multi.sessions] == ["none", "none"]
        outs = multi.run([_feeds(1), _feeds(2)])
    np.testing.assert_allclose(outs[0]["t1"], chain_reference(_feeds(1)["x"], 2, 1), rtol=1e-5, atol=1e-5)
    with MultiSession([a, b]) as multi:  # sessions that run at once: the gate by default
        assert [s.cpu_sharing.name for s in multi.sessions] == ["gate", "gate"]
    bucketed = bucket_batches({16: a}, model="a")
    with Session(bucketed, cpu_sharing="none") as s:
        s.run(_feeds(3))
        assert [inner.cpu_sharing.name for inner in s._sessions.values()] == ["none"]


def test_a_caller_interrupted_while_waiting_for_a_lane_leaves_the_line():
    """A waiter that raises (KeyboardInterrupt) inside the wait must leave the line: its
    ticket at the head blocked every later caller for good."""
    share = cpu_share.CpuShare(CpuSharing("gate", 1))
    inside, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=lambda: share.run(lambda: (inside.set(), release.wait(20))))
    holder.start()
    assert inside.wait(20)
    original = share._cond.wait
    share._cond.wait = lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())  # the next waiter is interrupted
    with pytest.raises(KeyboardInterrupt):
        share.run(lambda: None)
    share._cond.wait = original
    release.set()
    holder.join(20)
    got = []
    later = threading.Thread(target=lambda: got.append(share.run(lambda: 7)), daemon=True)
    later.start()
    later.join(20)
    assert got == [7] and not share._waiting


def test_a_share_sums_the_time_its_lanes_were_held_and_callers_waited():
    """busy_s: each call's time on its lane (at least what the calls slept); wait_s: the
    time callers spent in line (a call queued behind a 50 ms one waits about that long)."""
    share = cpu_share.CpuShare(CpuSharing("gate", 1))
    before = share.record()
    assert before["busy_s"] == 0.0 and before["wait_s"] == 0.0
    go = threading.Event()
    first = threading.Thread(target=lambda: share.run(lambda: go.wait(30) and threading.Event().wait(0.05)))
    first.start()
    for _ in range(2000):
        if share.calls == 1:
            break
        threading.Event().wait(0.001)
    second = threading.Thread(target=lambda: share.run(lambda: threading.Event().wait(0.01)))
    second.start()
    for _ in range(2000):  # the second call is in line behind the first
        if share.waited == 1:
            break
        threading.Event().wait(0.001)
    go.set()
    first.join(30), second.join(30)
    rec = share.record()
    assert rec["calls"] == 2 and rec["waited"] == 1
    assert rec["busy_s"] >= 0.06 and rec["wait_s"] >= 0.05
