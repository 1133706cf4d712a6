"""Runtime orchestration in simulation mode (the "GPU" partitions built for the CPU).

Uses hand-built synthetic partitions (hetpart.runtime.synthetic), so it needs neither
the importer nor the compiler; results are checked against numpy references.
"""

from __future__ import annotations

import gc
import json
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hetpart.compiler.artifact import CompiledModel, TensorSpec
from hetpart.errors import RuntimeFailure
from hetpart.runtime import MultiSession, Session, TransferCosts, choose_mode
from hetpart.runtime.dlpack import live_views
from hetpart.runtime.threads import parked_threads
from hetpart.runtime.handoff import plan_routes
from hetpart.runtime.memory import aligned_array
from hetpart.runtime.synthetic import build_partition, chain, chain_reference, plan_of

SHAPE = (16, 32)


@pytest.fixture(scope="module")
def cpu_gpu_cpu():
    return chain(["cpu", "cuda", "cpu"], SHAPE, work=2, predicted_s=1e-3)


@pytest.fixture(scope="module")
def gpu_cpu_gpu():
    return chain(["cuda", "cpu", "cuda"], SHAPE)


def feeds(seed=0, shape=SHAPE):
    """Random input in a 64-byte aligned array (what TVM kernels take without a copy)."""
    x = aligned_array(TensorSpec("x", shape, "float32"))
    x[...] = np.random.default_rng(seed).standard_normal(shape)
    return {"x": x}


# --- correctness ---------------------------------------------------------------------
@pytest.mark.parametrize("handoff", ["copy", "mapped"])
@pytest.mark.parametrize("devices", [["cpu"], ["cuda"], ["cpu", "cuda"], ["cuda", "cpu"], ["cpu", "cuda", "cpu", "cuda"]])
def test_chain_matches_reference(devices, handoff):
    model = chain(devices, SHAPE, work=1)
    f = feeds(1)
    with Session(model, handoff=handoff) as s:
        out = s.run(f)
    np.testing.assert_allclose(out[f"t{len(devices) - 1}"], chain_reference(f["x"], len(devices), 1), rtol=1e-5, atol=1e-5)


def test_dag_with_multi_output_and_host_reuse():
    """p0 (cpu) makes a, b; p1 (cuda) reads b; p2 (cpu) reads a (CPU->CPU) and c (GPU->CPU)."""
    from tvm import te

    n = SHAPE
    x, a, b, c, y = (TensorSpec(name, n, "float32") for name in "xabcy")
    p0 = build_partition("p0_cpu", "cpu", [x], [a, b],
                         lambda i: [te.compute(n, lambda r, s: i[0][r, s] + 1, name="a"),
                                    te.compute(n, lambda r, s: i[0][r, s] * 2, name="b")])
    p1 = build_partition("p1_cuda", "cuda", [b], [c], lambda i: [te.compute(n, lambda r, s: i[0][r, s] * 3, name="c")])
    p2 = build_partition("p2_cpu", "cpu", [a, c], [y],
                         lambda i: [te.compute(n, lambda r, s: i[0][r, s] - i[1][r, s], name="y")])
    model = CompiledModel(plan_of("dag", [p0, p1, p2]), [p0, p1, p2], [x], [y, c])
    f = feeds(2)
    with Session(model, handoff="copy") as s:
        out = s.run(f)
        stats = s.last_run_stats
    np.testing.assert_allclose(out["y"], (f["x"] + 1) - 6 * f["x"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["c"], 6 * f["x"], rtol=1e-5)
    assert (stats.h2d, stats.d2h) == (1, 1)  # b up once; c down once, read by p2 and returned
    assert stats.output_copies == 1 and stats.staging == 0  # y is written straight into the result


# --- handoff: pinned buffers, pointer identity, copy counts ------------------------------
def test_cpu_output_is_the_pinned_buffer(cpu_gpu_cpu):
    with Session(cpu_gpu_cpu, handoff="copy", slots=1) as s:
        captured = {}
        p0 = s._stages[0]
        original = p0.runner.call

        def spy(inputs, outputs, stats, *a):
            captured["out_ptr"] = outputs[0].ptr
            captured["tensor_ptr"] = int(outputs[0].tensor.data_ptr())
            return original(inputs, outputs, stats, *a)

        p0.runner.call = spy
        s.run(feeds())
        pinned = s._slots[0].buffers[("t0", "cpu")]
        assert pinned.pinned
        assert captured["tensor_ptr"] == captured["out_ptr"] == pinned.ptr == pinned.array.ctypes.data
        edge = s.last_run_stats.edge_for("t0")
        assert (edge.direction, edge.mode, edge.copies, edge.staging_copies) == ("h2d", "copy", 1, 0)


def test_copy_counts_per_run(cpu_gpu_cpu):
    with Session(cpu_gpu_cpu, handoff="copy") as s:
        for seed in range(3):  # the same counts every run: buffers are reused, not re-made
            s.run(feeds(seed))
            st_ = s.last_run_stats
            assert (st_.h2d, st_.d2h, st_.staging, st_.mapped, st_.feed_copies, st_.output_copies) == (1, 1, 0, 0, 0, 0)
            assert st_.bytes_h2d == st_.bytes_d2h == 16 * 32 * 4


def test_mapped_handoff_makes_no_copy(cpu_gpu_cpu):
    with Session(cpu_gpu_cpu, handoff="mapped") as s:
        s.run(feeds())
        st_ = s.last_run_stats
        assert (st_.h2d, st_.d2h, st_.mapped) == (0, 0, 2)
        slot = s._slots[0]
        assert slot.buffers[("t0", "cuda")].ptr == slot.buffers[("t0", "cpu")].ptr  # GPU reads the pinned bytes


@pytest.mark.parametrize("on", [True, False])
def test_auto_copies_what_the_gpu_reads_and_maps_what_it_writes(cpu_gpu_cpu, monkeypatch, on):
    """handoff.COPY_TO_GPU: under "auto" the small CPU->GPU crossing is one h2d copy (a
    kernel may read it many times), the GPU->CPU one still mapped; off, both mapped (before).
    Either way the result is the unscheduled chain's."""
    from hetpart.runtime import handoff

    monkeypatch.setattr(handoff, "COPY_TO_GPU", on)
    with Session(cpu_gpu_cpu) as s:
        out = s.run(feeds(4))
        st_ = s.last_run_stats
    np.testing.assert_allclose(out["t2"], chain_reference(feeds(4)["x"], 3, 2), rtol=1e-5, atol=1e-5)
    assert (st_.edge_for("t0").mode, st_.edge_for("t1").mode) == ("copy" if on else "mapped", "mapped")
    assert (st_.h2d, st_.d2h, st_.mapped) == ((1, 0, 1) if on else (0, 0, 2))


def test_auto_copies_every_crossing_to_the_gpu_once_as_the_partitioner_prices_it(gpu_cpu_gpu, monkeypatch):
    """The partitioner prices a tensor the GPU reads from the host as one h2d copy
    (Problem.flows' copy_s, whatever its size); under "auto" the runtime makes exactly that
    copy for every CPU->GPU crossing -- the feed and the CPU partition's output -- even where
    choose_mode, asked, would map it (a 1 s copy latency); GPU->CPU crossings still follow it."""
    from hetpart.runtime import handoff

    monkeypatch.setattr(handoff, "COPY_TO_GPU", True)
    mapped_wins = TransferCosts(copy_latency_s=1.0)
    assert choose_mode(1 << 20, mapped_wins) == "mapped"
    routes = plan_routes(gpu_cpu_gpu, "auto", mapped_wins)
    to_gpu = {n: r.mode for n, r in routes.items() if r.crosses and r.home == "cpu"}
    to_host = {n: r.mode for n, r in routes.items() if r.crosses and r.home == "cuda"}
    assert to_gpu == {"x": "copy", "t1": "copy"} and set(to_host.values()) == {"mapped"}
    with Session(gpu_cpu_gpu, transfer_costs=mapped_wins) as s:
        out = s.run(feeds(5))
        st_ = s.last_run_stats
    np.testing.assert_allclose(out["t2"], chain_reference(feeds(5)["x"], 3), rtol=1e-5, atol=1e-5)
    assert (st_.h2d, st_.mapped) == (2, len(to_host))
    assert all(st_.edge_for(n).copies == 1 for n in to_gpu)


def test_gpu_feed_is_staged_once_into_pinned_memory(gpu_cpu_gpu):
    with Session(gpu_cpu_gpu, handoff="copy") as s:
        out = s.run(feeds(3))
        st_ = s.last_run_stats
    np.testing.assert_allclose(out["t2"], chain_reference(feeds(3)["x"], 3), rtol=1e-5, atol=1e-5)
    assert (st_.feed_copies, st_.h2d, st_.d2h, st_.output_copies) == (1, 2, 2, 1)


def test_without_dps_outputs_are_copied_once_each():
    model = chain(["cpu", "cuda"], SHAPE, dps=False)
    with Session(model, handoff="copy") as s:
        out = s.run(feeds())
        assert s.last_run_stats.staging == 2
    np.testing.assert_allclose(out["t1"], chain_reference(feeds()["x"], 2), rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 1 << 28), st.floats(1e-7, 1e-4), st.floats(4e9, 5e10))
def test_transfer_mode_is_monotone_in_size(nbytes, latency, bandwidth):
    """Zero-copy wins below a crossover size and never above it (whenever a mapped byte
    costs at least a copied byte, as the default 4 bus passes per byte make it)."""
    costs = TransferCosts(copy_latency_s=latency, copy_bandwidth=bandwidth)
    if choose_mode(nbytes, costs) == "mapped":
        assert choose_mode(max(1, nbytes // 2), costs) == "mapped"
    else:
        assert choose_mode(nbytes * 2, costs) == "copy"


def test_routes_cover_every_cut(cpu_gpu_cpu):
    routes = plan_routes(cpu_gpu_cpu, "copy")
    assert {n for n, r in routes.items() if r.crosses} == {"t0", "t1"}
    assert routes["t0"].home == "cpu" and routes["t1"].home == "cuda" and not routes["t2"].crosses


# --- validation ------------------------------------------------------------------------
@pytest.mark.parametrize("bad, words", [
    ({}, "missing input(s) 'x'"),
    ({"x": np.zeros(SHAPE, "float32"), "y": np.zeros(1)}, "unknown input(s) 'y'"),
    ({"x": np.zeros((2, 2), "float32")}, "has shape [2, 2], the model expects [16, 32]"),
    ({"x": np.zeros(SHAPE, "float64")}, "has dtype float64, the model expects float32"),
    ({"x": [[1.0]]}, "must be a numpy array, a numpy scalar or a DLPack tensor"),
])
def test_bad_feeds_are_rejected_up_front(cpu_gpu_cpu, bad, words):
    with Session(cpu_gpu_cpu) as s:
        with pytest.raises(RuntimeFailure, match="bad feeds") as info:
            s.run(bad)
        assert words in str(info.value) and "'x' [16, 32] float32" in str(info.value)
        assert s.run(feeds())  # still usable


def test_unaligned_and_strided_feeds_are_copied_correctly(cpu_gpu_cpu):
    x = np.asfortranarray(feeds(4)["x"])
    with Session(chain(["cpu"], SHAPE)) as s:
        out = s.run({"x": x})
        assert s.last_run_stats.feed_copies == 1
    np.testing.assert_allclose(out["t0"], chain_reference(np.ascontiguousarray(x), 1), rtol=1e-6)


# --- errors ------------------------------------------------------------------------------
def test_partition_error_names_partition_and_session_recovers(cpu_gpu_cpu):
    with Session(cpu_gpu_cpu, slots=2) as s:
        stage = s._stages[1]
        original = stage.runner.call
        stage.runner.call = lambda *a: (_ for _ in ()).throw(ValueError("kernel exploded"))
        for _ in range(3):  # more failures than slots: every slot comes back
            with pytest.raises(RuntimeFailure, match="p1_cuda.*kernel exploded") as info:
                s.run(feeds())
            assert info.value.partition == "p1_cuda"
        stage.runner.call = original
        out = s.run(feeds(5))
    np.testing.assert_allclose(out["t2"], chain_reference(feeds(5)["x"], 3, 2), rtol=1e-5, atol=1e-5)


def test_real_tvm_error_is_reported(cpu_gpu_cpu):
    """A library that disagrees with the manifest fails inside TVM, named."""
    other = chain(["cpu", "cuda", "cpu"], (8, 8))
    import copy

    broken = copy.copy(cpu_gpu_cpu)
    broken.partitions = list(cpu_gpu_cpu.partitions)
    broken.partitions[2] = copy.copy(cpu_gpu_cpu.partitions[2])
    broken.partitions[2].module = other.partitions[2].module
    with Session(broken) as s:
        with pytest.raises(RuntimeFailure, match="partition 'p2_cpu' \\(cpu\\) failed") as info:
            s.run(feeds())
        assert info.value.partition == "p2_cpu"


def test_closed_session_refuses_to_run(cpu_gpu_cpu):
    s = Session(cpu_gpu_cpu)
    s.close()
    with pytest.raises(RuntimeFailure, match="closed"):
        s.run(feeds())
    s.close()  # closing twice is harmless
    with pytest.raises(RuntimeFailure, match="closed"):  # a `with` block on it fails at once, not at its first run
        with s:
            pass


# --- concurrency and pipelining -----------------------------------------------------------
def test_many_concurrent_callers_get_their_own_results(cpu_gpu_cpu):
    results, errors = {}, []
    with Session(cpu_gpu_cpu, slots=2) as s:
        def caller(i):
            try:
                for j in range(3):
                    f = feeds(100 * i + j)
                    results[(i, j)] = (f["x"], s.run(f)["t2"])
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and len(results) == 24
    for x, y in results.values():
        np.testing.assert_allclose(y, chain_reference(x, 3, 2), rtol=1e-5, atol=1e-5)


def test_pipelined_results_in_order_and_buffers_alternate(cpu_gpu_cpu):
    batches = [feeds(i) for i in range(8)]
    with Session(cpu_gpu_cpu, slots=2, handoff="copy", profile=True) as s:
        slots_used = []
        original = s._finish

        def spy(ctx, fut):
            slots_used.append(ctx.slot.index)
            original(ctx, fut)

        s._finish = spy
        out = s.run_pipelined(batches)
    for f, o in zip(batches, out):
        np.testing.assert_allclose(o["t2"], chain_reference(f["x"], 3, 2), rtol=1e-5, atol=1e-5)
    assert set(slots_used) == {0, 1}


def test_pipelining_overlaps_cpu_of_next_batch_with_gpu_of_this_one():
    model = chain(["cpu", "cuda"], (64, 256), work=48)
    with Session(model, slots=2) as s:
        s.run(feeds(0, (64, 256)))  # warm the VMs
        # 12 batches: on a loaded box (the fast loop's -n auto) a starved thread can serialise a
        # few neighbours, but pipelining that works overlaps some pair; without it none ever does
        n = 12
        futures = [s.submit(feeds(i, (64, 256)), timed=True) for i in range(n)]
        stats = [f.result() and f.stats for f in futures]
    cpu = [next(sp for sp in st_.spans if sp.name == "p0_cpu") for st_ in stats]
    gpu = [next(sp for sp in st_.spans if sp.name == "p1_cuda") for st_ in stats]
    # batch i+1's CPU stage starts before batch i's GPU stage ends: they overlap
    assert any(cpu[i + 1].start < gpu[i].end for i in range(n - 1))
    # and a stage never runs two batches at once, in batch order
    assert all(cpu[i].end <= cpu[i + 1].start for i in range(n - 1))
    assert all(gpu[i].end <= gpu[i + 1].start for i in range(n - 1))


def test_multisession_runs_models_concurrently(cpu_gpu_cpu, gpu_cpu_gpu):
    with MultiSession([cpu_gpu_cpu, gpu_cpu_gpu]) as ms:
        f = [feeds(7), feeds(8)]
        a, b = ms.run(f)
        np.testing.assert_allclose(a["t2"], chain_reference(f[0]["x"], 3, 2), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b["t2"], chain_reference(f[1]["x"], 3), rtol=1e-5, atol=1e-5)
        assert ms.sessions[0]._stream is not ms.sessions[1]._stream
        report = ms.benchmark(f, rounds=4, warmup=1)
    assert report.concurrent_rounds_per_s > 0 and len(report.concurrent_latency_s) == 2
    assert "rounds/s" in report.render()


# --- traces and reports ---------------------------------------------------------------------
def test_trace_has_measured_and_predicted_tracks(cpu_gpu_cpu, tmp_path):
    path = tmp_path / "run.trace.json"
    with Session(cpu_gpu_cpu, handoff="copy") as s:
        s.run(feeds(), trace=path)
    doc = json.loads(path.read_text())
    assert (doc["schema"], doc["version"]) == ("hetpart-trace", 2)
    assert doc["otherData"]["model"] == cpu_gpu_cpu.plan.model
    names = {(e["pid"], e["args"]["name"]) for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert {(1, "cpu: p0_cpu"), (1, "cpu: p2_cpu"), (1, "cuda stream (simulated)")} <= names
    assert any(pid == 2 for pid, _ in names)
    spans = {e["name"]: e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 1}
    assert {"p0_cpu", "p1_cuda", "p2_cpu", "h2d t0", "d2h t1"} <= set(spans)
    # the measured timeline respects the data flow
    assert spans["p0_cpu"]["ts"] + spans["p0_cpu"]["dur"] <= spans["h2d t0"]["ts"] + 1
    assert spans["p1_cuda"]["ts"] + spans["p1_cuda"]["dur"] <= spans["p2_cpu"]["ts"] + 1
    predicted = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 2]
    assert [e["name"] for e in predicted] == ["p0_cpu", "p1_cuda", "p2_cpu"]
    assert predicted[1]["ts"] == pytest.approx(1000.0)  # 1 ms each, one after the other


def test_run_once_and_report_prints_measured_vs_predicted(cpu_gpu_cpu, tmp_path, capsys):
    from hetpart.runtime import run_once_and_report

    result = run_once_and_report(cpu_gpu_cpu, trace=tmp_path / "t.json")
    text = capsys.readouterr().out
    assert "p1_cuda" in text and "predicted ms" in text and "1.000" in text
    assert set(result["partitions"]) == {"p0_cpu", "p1_cuda", "p2_cpu"}
    assert (tmp_path / "t.json").exists()


# --- lifetime -------------------------------------------------------------------------------
def working_threads() -> int:
    """Python threads alive less those parked for reuse (runtime.threads.lease: a
    session's host threads outlive it, parked, because TVM never frees a thread's pool)."""
    return threading.active_count() - parked_threads()


def test_nothing_leaks_after_close(cpu_gpu_cpu):
    """Every thread the session used is parked again at close, and a second session
    reuses them: the count before does not depend on which tests ran first (alone,
    this test used to see 5 new parked threads as leaks: 6 == 1)."""
    gc.collect()
    views_before, threads_before = live_views(), working_threads()
    with Session(cpu_gpu_cpu, slots=3) as s:
        s.run_pipelined([feeds(i) for i in range(4)])
        assert s.buffer_bytes > 0 and s.threads_alive == 4
    assert s.buffer_bytes == 0 and s.threads_alive == 0
    del s
    gc.collect()
    assert working_threads() == threads_before
    parked, alive = parked_threads(), threading.active_count()
    with Session(cpu_gpu_cpu, slots=3) as s:
        s.run_pipelined([feeds(i) for i in range(4)])
    del s
    gc.collect()
    assert (parked_threads(), threading.active_count()) == (parked, alive), "the second session reuses the parked threads"
    assert live_views() == views_before


# --- inline runs (Session.run on an idle session runs on the calling thread) ------------------
def _stats_key(st_):
    return (st_.h2d, st_.d2h, st_.staging, st_.mapped, st_.feed_copies, st_.output_copies,
            st_.transient_buffers, st_.bytes_h2d, st_.bytes_d2h,
            sorted((e.tensor, e.direction, e.mode, e.nbytes, e.copies) for e in st_.edges))


@pytest.mark.parametrize("devices, handoff", [(["cpu"], "copy"), (["cpu", "cuda", "cpu"], "copy"),
                                              (["cuda", "cpu", "cuda"], "mapped")])
def test_inline_and_threaded_runs_agree(devices, handoff):
    """The same results and the same copies whichever way a run goes; an unaligned feed's
    aligned copy is reused run after run and still counted."""
    model = chain(devices, SHAPE, work=2)
    out_name = f"t{len(devices) - 1}"
    with Session(model, handoff=handoff) as fast, Session(model, handoff=handoff, inline=False) as slow:
        for seed in range(3):
            f = feeds(seed)
            unaligned = {"x": np.zeros(SHAPE[0] * SHAPE[1] + 1, "float32")[1:].reshape(SHAPE)}
            unaligned["x"][...] = f["x"]
            for fd in (f, unaligned):
                a, b = fast.run(fd), slow.run(fd)
                np.testing.assert_array_equal(a[out_name], b[out_name])
                np.testing.assert_allclose(a[out_name], chain_reference(f["x"], len(devices), 2), rtol=1e-5, atol=1e-5)
                assert _stats_key(fast.last_run_stats) == _stats_key(slow.last_run_stats)
        assert fast.inline_runs == 6 and slow.inline_runs == 0
        # results handed out earlier are the callers' own: later runs never overwrite them
        r1 = fast.run(feeds(10))[out_name].copy()
        kept = fast.run(feeds(10))[out_name]
        fast.run(feeds(11))
        np.testing.assert_array_equal(kept, r1)


def test_inline_run_error_names_partition_and_session_recovers(cpu_gpu_cpu):
    with Session(cpu_gpu_cpu, slots=1) as s:
        stage = s._stages[1]
        original = stage.runner.call
        stage.runner.call = lambda *a: (_ for _ in ()).throw(ValueError("kernel exploded"))
        for _ in range(2):
            with pytest.raises(RuntimeFailure, match="p1_cuda.*kernel exploded") as info:
                s.run(feeds())
            assert info.value.partition == "p1_cuda"
        stage.runner.call = original
        assert s.inline_runs == 2 and s._in_flight == 0 and s._free.qsize() == 1
        out = s.run(feeds(5))
    np.testing.assert_allclose(out["t2"], chain_reference(feeds(5)["x"], 3, 2), rtol=1e-5, atol=1e-5)


def test_cuda_partitions_are_first_called_on_the_session_workers(cpu_gpu_cpu):
    """On a GPU the first call of a CUDA partition captures its CUDA graph with workspace
    from the calling thread's pool: it must be a leased worker thread, which never exits
    (a server lane thread that captured and exited left the graph writing freed memory:
    the serving bench's illegal address on the H200).  Simulation stands in for a GPU
    here by marking the session uncaptured, as a real-GPU session starts."""
    seen: list[str] = []
    with Session(cpu_gpu_cpu) as s:
        s._captured = False  # what a real-GPU session starts with
        call = s._stages[1].runner.call
        s._stages[1].runner.call = lambda *a, **k: seen.append(threading.current_thread().name) or call(*a, **k)
        caller = threading.Thread(target=lambda: s.run(feeds()), name="short-lived caller")
        caller.start()
        caller.join()
        assert s.inline_runs == 0 and seen and seen[0] != "short-lived caller"
        out = s.run(feeds(3))  # captured: later runs may go inline
        assert s.inline_runs == 1
    np.testing.assert_allclose(out["t2"], chain_reference(feeds(3)["x"], 3, 2), rtol=1e-5, atol=1e-5)


def test_callers_while_an_inline_run_is_in_flight_go_threaded_and_never_share_a_vm():
    """While one caller's run is inline (held inside its CPU partition), other callers'
    runs and submits go through the workers; no VM is ever entered by two threads at once."""
    model = chain(["cpu", "cuda", "cpu"], SHAPE, work=2)
    # cpu_sharing="none": the CPU partition runs on the inline caller's own thread (under
    # the default gate it runs on the gate lane's, tests/test_runtime_cpu_share.py)
    with Session(model, slots=2, cpu_sharing="none") as s:
        inside = {"now": 0, "max": 0}
        guard = threading.Lock()
        entered, release = threading.Event(), threading.Event()
        s.run(feeds(0))  # warm: the partition's VM function is made and cached
        stage = s._stages[0]
        runner = stage.runner
        name = "main_dps" if runner.dps else runner.artifact.function
        original = runner._functions[(0, name)]  # (ring slot, function)
        inline_thread = []

        def spy(*a):  # inside the VM: the runner's lock is held here
            with guard:
                inside["now"] += 1
                inside["max"] = max(inside["max"], inside["now"])
            try:
                if threading.current_thread() in inline_thread:
                    entered.set()
                    release.wait(10)
                return original(*a)
            finally:
                with guard:
                    inside["now"] -= 1

        runner._functions[(0, name)] = spy
        results, errors = {}, []

        def first():
            try:
                f = feeds(1)
                results["first"] = (f["x"], s.run(f)["t2"])
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=first)
        inline_thread.append(t)
        t.start()
        assert entered.wait(10)
        assert s.inline_runs == 2
        # the session is busy: these runs take the threaded way, concurrently with the inline one
        fut = s.submit(feeds(2))

        def other(i):
            try:
                f = feeds(100 + i)
                results[i] = (f["x"], s.run(f)["t2"])
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        others = [threading.Thread(target=other, args=(i,)) for i in range(3)]
        for o in others:
            o.start()
        release.set()
        t.join()
        for o in others:
            o.join()
        out2 = fut.result()
        assert not errors
        np.testing.assert_allclose(out2["t2"], chain_reference(feeds(2)["x"], 3, 2), rtol=1e-5, atol=1e-5)
        for x, y in results.values():
            np.testing.assert_allclose(y, chain_reference(x, 3, 2), rtol=1e-5, atol=1e-5)
        assert len(results) == 4
        assert inside["max"] == 1  # the partition's lock: one thread inside its VM at a time
        assert s._in_flight == 0 and s._free.qsize() == 2


def test_close_waits_for_an_inline_run():
    model = chain(["cpu", "cuda"], SHAPE, work=2)
    s = Session(model)
    stage = s._stages[0]
    original = stage.runner.call
    entered, release = threading.Event(), threading.Event()

    def slow(*a):
        entered.set()
        release.wait(10)
        return original(*a)

    stage.runner.call = slow
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", s.run(feeds(3))))
    t.start()
    assert entered.wait(10)
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waiting for the inline run
    release.set()
    t.join()
    closer.join()
    np.testing.assert_allclose(box["out"]["t1"], chain_reference(feeds(3)["x"], 2, 2), rtol=1e-5, atol=1e-5)
    assert s.buffer_bytes == 0 and s.threads_alive == 0
    with pytest.raises(RuntimeFailure, match="closed"):
        s.run(feeds())


# --- the session's own cost per partition (simulated here; real on the GPU machine) ---------
def test_session_overheads_fit_one_cost_per_partition_and_device():
    from hetpart.runtime.overhead import CHAINS, session_overheads

    assert {d for c in CHAINS for d in c} == {"cpu", "cuda"}
    per = session_overheads(simulate=True, repeats=20)
    assert set(per) == {"cpu", "cuda"}
    # runs cost something, nothing costs a second (noise may pull one device's fit to 0)
    assert all(0.0 <= s < 1.0 for s in per.values()) and sum(per.values()) > 0, per


# --- thread placement and pipeline measurement (issue 6) -------------------------------------
def test_pool_threads_policy_reserves_cores_only_next_to_a_gpu():
    from hetpart.runtime.threads import pool_threads

    assert pool_threads(None, has_gpu=True, default=16, cpus=16) == 14  # two CPUs feed the GPU
    assert pool_threads(None, has_gpu=True, default=16, cpus=16, reserve=1) == 15
    assert pool_threads(None, has_gpu=True, default=8, cpus=16) is None  # already leaves room
    assert pool_threads(None, has_gpu=False, default=16, cpus=16) is None
    assert pool_threads(None, has_gpu=True, default=2, cpus=2) == 1  # never below one
    assert pool_threads(None, has_gpu=True, default=1, cpus=2) is None
    assert pool_threads(6, has_gpu=False, default=16, cpus=16) == 6  # asked for: as asked
    assert pool_threads(16, has_gpu=True, default=16, cpus=16) is None
    with pytest.raises(RuntimeFailure, match="at least 1"):
        pool_threads(0, has_gpu=True)
    for bad in ("4", 2.5, True):
        with pytest.raises(RuntimeFailure, match=f"cpu_threads is a number of threads .* got {type(bad).__name__}"):
            pool_threads(bad, has_gpu=True)
    assert pool_threads(np.int64(6), has_gpu=False, default=16, cpus=16) == 6


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="no CPU affinity API")
def test_session_threads_do_not_inherit_a_pinned_creator():
    """TVM pins a thread that runs a parallel kernel; threads it then creates inherit the
    mask.  The session's threads start with the whole process mask instead."""
    import os

    from hetpart.runtime.threads import PROCESS_CPUS

    if len(PROCESS_CPUS) < 2:
        pytest.skip("needs two CPUs")
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(PROCESS_CPUS)})  # as TVM leaves a pool's calling thread
    try:
        with Session(chain(["cpu", "cuda"], SHAPE), inline=False) as s:
            s.run(feeds())
            threads = [st.worker._thread for st in s._stages] + [s._collector._thread]
            masks = {t.name: os.sched_getaffinity(t.native_id) for t in threads}
    finally:
        os.sched_setaffinity(0, before)
    assert all(m == set(PROCESS_CPUS) for m in masks.values()), masks


def test_cpu_threads_sizes_the_cpu_workers_pool():
    from hetpart.cpu_cores import pool_size

    model = chain(["cpu", "cuda"], SHAPE, work=[2, 0], parallel=True)
    wanted = pool_size() + 1  # differs from TVM's default, so it is applied (TVM caps it)
    with Session(model, cpu_threads=wanted, inline=False) as s:
        out = s.run(feeds(5))
        used = s.pool_threads_used["p0_cpu"]
    assert isinstance(used, int) and 1 <= used <= wanted
    np.testing.assert_allclose(out["t1"], chain_reference(feeds(5)["x"], 2, [2, 0]), rtol=1e-5, atol=1e-5)
    with Session(model, cpu_threads=pool_size()) as s:
        assert s.pool_threads_used == {"p0_cpu": None}  # TVM's default: nothing to change


def test_cpu_threads_applies_to_runs_on_an_idle_session_too():
    """An all-CPU session asked for a pool size other than TVM's default runs each run on
    its CPU worker, whose pool has that size: an inline run would use the caller's pool
    (it did, so ``cpu_threads`` was ignored by every run of an idle session)."""
    from hetpart.cpu_cores import pool_size

    if pool_size() < 2:
        pytest.skip("needs a default pool of two threads or more")
    model = chain(["cpu"], SHAPE, work=[2], parallel=True)
    with Session(model, cpu_threads=1) as s:
        out = s.run(feeds(5))
        assert s.inline_runs == 0 and s.pool_threads_used == {"p0_cpu": 1}
    np.testing.assert_allclose(out["t0"], chain_reference(feeds(5)["x"], 1, [2]), rtol=1e-5, atol=1e-5)
    with Session(model) as s:  # the default pool: inline as before
        s.run(feeds(5))
        assert s.inline_runs == 1


def test_measure_pipeline_interleaves_rounds_and_reports_the_spread():
    from hetpart.runtime import measure_pipeline

    with Session(chain(["cpu", "cuda"], SHAPE, work=[2, 1]), slots=2) as s:
        report = measure_pipeline(s, feeds(), batches=4, warmup=1, rounds=3, alone=2)
        assert s.inline_runs == 0  # every run through the workers, warm-up included
    assert len(report.rounds) == 3 and all(r.batches == 4 for r in report.rounds)
    assert set(report.stage_seconds) == {"cpu: p0_cpu", "cuda stream (simulated)"}
    low, high = report.efficiency_range
    assert 0 < low <= high
    assert report.seconds == pytest.approx(float(np.median([r.seconds for r in report.rounds])))
    with pytest.raises(RuntimeFailure, match="rounds"):
        measure_pipeline(s, feeds(), rounds=0)
