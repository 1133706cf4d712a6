"""The host cost of a streaming plan's CPU->CUDA->CPU turn (issue 19, tools/turn_cost.py).

What a run computes once per session instead of per call must equal the per-call
computation it replaces; runs with fewer stream markers (executor.LEAN_MARKERS) must
give the same results, and traced runs the same stream spans.  All in simulation.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from hetpart.runtime import Session, executor
from hetpart.runtime.executor import RunContext

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import turn_cost  # noqa: E402


@pytest.fixture(scope="module")
def model():
    """An mlp cut cpu, cuda (streamed), cuda (streamed), cpu, ... 2 turns, simulated."""
    args = argparse.Namespace(model="mlp", width=16, layers=2, cpu_kernels=2, cuda_parts=2, streamed="every",
                              simulate=True)
    return turn_cost.build(args)


def _run(compiled, feeds, *, trace=None, lean=True, monkeypatch=None):
    monkeypatch.setattr(executor, "LEAN_MARKERS", lean)
    with Session(compiled) as s:
        records = [0]
        real = s._stream.record

        def counted():
            records[0] += 1
            return real()

        s._stream.record = counted
        s.run(feeds)  # warm (the first run may be threaded)
        records[0] = 0
        out = s.run(feeds, trace=trace)
        stats = s.last_run_stats
    return out, stats, records[0]


def test_stage_precomputed_fields_match_the_artifact(model):
    compiled, _ = model
    with Session(compiled) as s:
        for stage in s._stages:
            art = stage.artifact
            assert stage.input_names == tuple(t.name for t in art.inputs)
            assert stage.output_names == tuple(t.name for t in art.outputs)
            assert stage.launches_in_order == any(stage.runner.dynamic_outputs)
            assert stage.launch_label == f"launch {art.name}" and stage.host_label == f"host {art.name}"
        for name, route in s.routes.items():
            for kind in ("h2d", "d2h", "d2d", "mapped"):
                assert route.label(kind) == f"{kind} {name}"


def test_lean_markers_same_results_fewer_markers(model, monkeypatch):
    compiled, feeds = model
    lean, _, lean_records = _run(compiled, feeds, lean=True, monkeypatch=monkeypatch)
    full, _, full_records = _run(compiled, feeds, lean=False, monkeypatch=monkeypatch)
    assert lean.keys() == full.keys()
    for k in lean:
        np.testing.assert_array_equal(lean[k], full[k])
    # per turn: no marker after the CPU->GPU copy, the mapped output read on the launch's
    assert lean_records < full_records, (lean_records, full_records)


def test_traced_runs_record_every_marker(model, monkeypatch, tmp_path):
    """A traced run is the same with the switch on or off: the same stream spans."""
    compiled, feeds = model
    _, on, on_records = _run(compiled, feeds, trace=tmp_path / "on.json", lean=True, monkeypatch=monkeypatch)
    _, off, off_records = _run(compiled, feeds, trace=tmp_path / "off.json", lean=False, monkeypatch=monkeypatch)
    assert on_records == off_records

    def names(stats):
        return sorted((sp.track, sp.name) for sp in stats.spans)

    assert names(on) == names(off)


class _Marker:
    def __init__(self, log):
        self.log, self.synced = log, False

    def synchronize(self):
        self.synced = True
        self.log.append("sync")

    def release(self):
        pass


class _Stream:
    def __init__(self):
        self.log = []

    def record(self):
        self.log.append("record")
        return _Marker(self.log)


def _context(stream, timed=False):
    from hetpart.runtime.handoff import Slot

    return RunContext(0, {}, Slot(0), stream, stages=0, timed=timed)


def test_an_unmarked_last_operation_is_waited_for_at_the_end(monkeypatch):
    monkeypatch.setattr(executor, "LEAN_MARKERS", True)
    stream = _Stream()
    ctx = _context(stream)
    assert ctx.enqueue(lambda: stream.log.append("copy"), "h2d x", "copy", mark=False) is None
    ctx.wait_device_idle()
    assert stream.log == ["copy", "record", "sync"]  # a fence recorded after it, then waited on
    # a marked operation after it: its marker is the fence, nothing more is recorded
    stream = _Stream()
    ctx = _context(stream)
    ctx.enqueue(lambda: stream.log.append("copy"), "h2d x", "copy", mark=False)
    ctx.enqueue(lambda: stream.log.append("launch"), "p1", "partition")
    ctx.wait_device_idle()
    assert stream.log == ["copy", "launch", "record", "sync"]


def test_timed_or_switched_off_every_operation_is_marked(monkeypatch):
    for lean, timed, expect in ((True, True, ["record", "copy", "record"]), (False, False, ["copy", "record"])):
        monkeypatch.setattr(executor, "LEAN_MARKERS", lean)
        stream = _Stream()
        ctx = _context(stream, timed=timed)
        assert ctx.enqueue(lambda: stream.log.append("copy"), "h2d x", "copy", mark=False) is not None
        assert stream.log == expect


def test_unmarked_operations_from_two_threads_still_fence(monkeypatch):
    """An unmarked op enqueued by another thread after the fence's record makes the end record one more."""
    monkeypatch.setattr(executor, "LEAN_MARKERS", True)
    stream = _Stream()
    ctx = _context(stream)
    ctx.enqueue(lambda: None, "p1", "partition")
    t = threading.Thread(target=lambda: ctx.enqueue(lambda: stream.log.append("copy"), "h2d", "copy", mark=False))
    t.start()
    t.join()
    ctx.wait_device_idle()
    assert stream.log[-3:] == ["copy", "record", "sync"]


def test_turn_cost_tool_runs(tmp_path):
    out = tmp_path / "tc.json"
    assert turn_cost.main(["--layers", "2", "--width", "16", "--cpu-kernels", "2", "--runs", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["result"]
    assert result["turns"] == 2 and result["inline_runs"] > 0
    assert result["host_per_turn_us"] > 0 and result["stream_calls_per_run"]["record"] > 0


# --- cuda_api.DRIVER_CALLS: the turn's stream calls through libcuda (a stand-in lib here) ---
class _FakeLib:
    """libcuda's entry points used by cuda_api._Driver, recording their calls."""

    def __init__(self, current=1, fail=0):
        import ctypes

        self.calls, self.current, self.fail = [], current, fail

        def entry(name, result=None):
            def f(*args):
                self.calls.append((name, args))
                return result() if result else self.fail
            return f

        def ctx_get_current(ptr):
            self.calls.append(("cuCtxGetCurrent", ()))
            ptr._obj.value = self.current
            return 0

        def error_string(code, out):
            out._obj.value = b"an error"
            return 0

        for name in ("cuEventRecord", "cuStreamWaitEvent", "cuEventSynchronize", "cuMemcpyAsync"):
            setattr(self, name, entry(name))
        self.cuCtxGetCurrent = ctx_get_current
        self.cuGetErrorString = error_string
        self._ctypes = ctypes


def _driver_on(monkeypatch, lib):
    """cuda_api with DRIVER_CALLS on and ``lib`` as libcuda: (the module, the driver a stream gets)."""
    from hetpart.runtime import cuda_api

    driver = cuda_api._Driver(lib)
    monkeypatch.setattr(cuda_api, "_driver", lambda: driver)
    monkeypatch.setattr(cuda_api, "DRIVER_CALLS", True)
    return cuda_api, cuda_api.stream_driver()


def test_driver_calls_go_to_libcuda(monkeypatch):
    lib = _FakeLib()
    api, d = _driver_on(monkeypatch, lib)
    assert d is not None
    api.event_record(11, 22, d)
    api.stream_wait_event(22, 11, d)
    api.event_synchronize(11, d)
    api.memcpy_async(100, 200, 64, api.H2D, 22, d)
    made = [c for c in lib.calls if c[0] != "cuCtxGetCurrent"]
    assert made == [("cuEventRecord", (11, 22)), ("cuStreamWaitEvent", (22, 11, 0)), ("cuEventSynchronize", (11,)),
                    ("cuMemcpyAsync", (100, 200, 64, 22))]
    # the context is looked for once per thread
    assert sum(c[0] == "cuCtxGetCurrent" for c in lib.calls) == 1


def test_driver_errors_raise_as_the_bindings_do(monkeypatch):
    from hetpart.errors import RuntimeFailure

    api, d = _driver_on(monkeypatch, _FakeLib(fail=700))
    with pytest.raises(api.CudaCallError, match="cuEventRecord failed: an error \\(700\\)"):
        api.event_record(1, 2, d)
    api, d = _driver_on(monkeypatch, _FakeLib(fail=2))
    with pytest.raises(RuntimeFailure, match="ran out of memory in cuMemcpyAsync"):
        api.memcpy_async(1, 2, 3, api.D2H, 4, d)


def test_driver_calls_off_or_pageable_or_no_context_use_the_bindings(monkeypatch):
    """The switch off when the stream is made, no driver given (a pageable copy), or a thread
    with no context after the runtime's call: no libcuda call."""
    from hetpart.runtime import cuda_api

    lib = _FakeLib()
    api, d = _driver_on(monkeypatch, lib)
    monkeypatch.setattr(cuda_api, "cudart", lambda: (_ for _ in ()).throw(RuntimeError("bindings")))
    with pytest.raises(RuntimeError, match="bindings"):
        api.memcpy_async(1, 2, 3, api.H2D, 4)  # pageable: the stream passes no driver
    monkeypatch.setattr(cuda_api, "DRIVER_CALLS", False)
    assert cuda_api.stream_driver() is None
    with pytest.raises(RuntimeError, match="bindings"):
        api.event_record(1, 2, cuda_api.stream_driver())
    lib = _FakeLib(current=0)  # no context, and the runtime's call cannot make one
    api, d = _driver_on(monkeypatch, lib)
    with pytest.raises(RuntimeError, match="bindings"):
        api.event_synchronize(1, d)
    assert not [c for c in lib.calls if c[0] != "cuCtxGetCurrent"]


def test_ring_fill_destinations_cached_equal_fresh_ones(model):
    compiled, feeds = model
    with Session(compiled) as s:
        for _ in range(3):
            s.run(feeds)
        ring = s._ring
        assert ring._dsts and len(ring._dsts) <= ring.per_run * ring.n_slots
        for (k, si), dst in ring._dsts.items():
            fresh = ring._destination(ring.parts[k], ring.slots[si])
            assert (dst.spec, dst.side, dst.ptr, dst.nbytes) == (fresh.spec, fresh.side, fresh.ptr, fresh.nbytes)
            assert np.shares_memory(dst.array, ring.slots[si].array) and dst.array.nbytes == fresh.array.nbytes


def test_stats_crossed_is_count_and_edge():
    from hetpart.runtime.stats import EdgeHandoff, RunStats

    a, b = RunStats(), RunStats()
    for kind, n in (("h2d", 64), ("d2h", 32), ("mapped", 0)):
        edge = EdgeHandoff(f"t_{kind}", "h2d", "copy", n, copies=1)
        a.crossed(kind, n, edge)
        b.count(kind, n)
        b.edge(edge)
    assert a == b


@pytest.mark.cuda
def test_driver_calls_and_lean_markers_on_gpu_same_results():
    """On a real GPU: the streaming mlp's outputs, bit for bit, with cuda_api.DRIVER_CALLS and
    executor.LEAN_MARKERS each on and off (a session keeps the switches it opened with), and
    close to ONNX Runtime's reference; traced runs too."""
    from onnx.reference import ReferenceEvaluator

    from hetpart import models
    from hetpart.runtime import cuda_api

    args = argparse.Namespace(model="mlp", width=64, layers=2, cpu_kernels=2, cuda_parts=2, streamed="every",
                              simulate=False)
    compiled, feeds = turn_cost.build(args)
    kernels = args.layers * (args.cpu_kernels + args.cuda_parts) + 1
    onnx_model = models.build("mlp", in_features=64, hidden=(64,) * (kernels - 1), num_classes=64)
    want = ReferenceEvaluator(onnx_model).run(None, feeds)[0]
    got = {}
    for driver in (False, True):
        for lean in (False, True):
            old = cuda_api.DRIVER_CALLS, executor.LEAN_MARKERS
            cuda_api.DRIVER_CALLS, executor.LEAN_MARKERS = driver, lean
            try:
                s = Session(compiled)
            finally:
                cuda_api.DRIVER_CALLS, executor.LEAN_MARKERS = old
            with s:
                assert (s._stream._driver is not None) == driver
                outs = [s.run(feeds)["logits"] for _ in range(4)]
                outs.append(s.run(feeds, trace=None)["logits"])
                s.profile = True
                outs.append(s.run(feeds)["logits"])  # timed: every marker
            got[(driver, lean)] = outs
    first = got[(False, False)][0]
    np.testing.assert_allclose(first, want, rtol=1e-3, atol=1e-3)
    for key, outs in got.items():
        for out in outs:
            np.testing.assert_array_equal(out, first, err_msg=str(key))


# --- handoff.GROUPED_H2D: a CPU partition's GPU-bound outputs in one block, one copy -------
@pytest.fixture(scope="module")
def decode():
    """The small llama_decode cut cpu / cuda / cuda (streamed), its CPU partitions with 2-3 outputs to the GPU."""
    args = argparse.Namespace(model="llama_decode", width=16, layers=6, cpu_kernels=3, cuda_parts=2,
                              streamed="every", simulate=True)
    return turn_cost.build(args)


def _stepping(compiled, feeds, monkeypatch, grouped):
    from hetpart.bench import capped
    from hetpart.runtime import handoff

    monkeypatch.setattr(handoff, "GROUPED_H2D", grouped)
    return capped.open_stepping(compiled, feeds)


def test_grouped_outputs_views_lie_apart_in_their_blocks(decode, monkeypatch):
    from hetpart.runtime.handoff import grouped_outputs
    from hetpart.runtime.memory import ALIGNMENT

    compiled, feeds = decode
    s, _, _ = _stepping(compiled, feeds, monkeypatch, True)
    with s:
        want = grouped_outputs(s.routes, s.state.tensors if s.state else frozenset())
        assert want, "the plan has a CPU partition with two outputs to the GPU"
        for slot in s._slots:
            assert {p: g.names for p, g in slot.groups.items()} == want
            for g in slot.groups.values():
                for side, block in (("cpu", g.host), ("cuda", g.device)):
                    spans = []
                    for name in g.names:
                        view, route = slot.buffers[(name, side)], s.routes[name]
                        assert (view.ptr - block.ptr) % ALIGNMENT == 0 and view.spec == route.spec
                        assert view.ptr >= block.ptr and view.ptr + route.nbytes <= block.ptr + block.nbytes
                        spans.append((view.ptr, view.ptr + route.nbytes))
                    spans.sort()
                    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # no overlap
                    assert spans[-1][1] == block.ptr + block.nbytes  # the copy stops at the last byte used
        for name, route in s.routes.items():  # what is grouped: CPU-made, copied to the GPU, static, not state
            grouped = any(name in g.members for g in s._slots[0].groups.values())
            if grouped:
                assert route.home == "cpu" and route.mode == "copy" and "cuda" in route.sides and not route.dynamic


def test_grouped_h2d_same_results_fewer_copies(decode, monkeypatch):
    compiled, feeds = decode
    got, copies = {}, {}
    for grouped in (False, True):
        s, step, _ = _stepping(compiled, feeds, monkeypatch, grouped)
        with s:
            n = [0]
            real = s._stream.copy

            def counted(dst, src, kind, real=real, n=n):
                n[0] += kind == "h2d"
                return real(dst, src, kind)

            s._stream.copy = counted
            got[grouped] = [s.run(step) for _ in range(3)]
            stats = s.last_run_stats
            copies[grouped] = n[0] / 3
            counts = (stats.h2d, stats.bytes_h2d, sorted((e.tensor, e.copies) for e in stats.edges))
            copies[(grouped, "stats")] = counts
    for a, b in zip(got[False], got[True]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert copies[True] < copies[False]
    assert copies[(True, "stats")] == copies[(False, "stats")]  # counted per tensor either way


def test_a_group_whose_output_is_elsewhere_is_copied_tensor_by_tensor(decode, monkeypatch):
    from hetpart.runtime.executor import _copy_group

    compiled, feeds = decode
    s, step, _ = _stepping(compiled, feeds, monkeypatch, True)
    with s:
        slot = s._slots[0]
        producer, group = next(iter(slot.groups.items()))
        stage = next(st for st in s._stages if st.name == producer)
        ctx = RunContext(0, s.routes, slot, s._stream, 0, False)  # no stages: its end waits for the stream only
        outputs = [slot.buffers.get((n, "cpu")) for n in stage.output_names]
        assert _copy_group(ctx, stage, outputs) == group.members
        elsewhere = [s._memory.pinned(b.spec) if b is not None else None for b in outputs]
        assert _copy_group(ctx, stage, elsewhere) == frozenset()
        ctx.wait_device_idle()


@pytest.mark.cuda
def test_grouped_h2d_on_gpu_same_results(monkeypatch):
    """On a real GPU: the small llama_decode's steps (caches on device) bit for bit with
    handoff.GROUPED_H2D on and off, with DRIVER_CALLS on."""
    from hetpart.runtime import cuda_api

    args = argparse.Namespace(model="llama_decode", width=16, layers=2, cpu_kernels=3, cuda_parts=2,
                              streamed="every", simulate=False)  # 7 partitions: p0_cpu's two outputs grouped
    compiled, feeds = turn_cost.build(args)
    monkeypatch.setattr(cuda_api, "DRIVER_CALLS", True)
    got = {}
    for grouped in (False, True):
        s, step, _ = _stepping(compiled, feeds, monkeypatch, grouped)
        with s:
            assert bool(s._slots[0].groups) == grouped
            got[grouped] = [s.run(step) for _ in range(3)]
    for a, b in zip(got[False], got[True]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
