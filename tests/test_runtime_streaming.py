"""Streamed weights (issue 19): compiled as parameters, copied into a ring of device slots.

In simulation (``simulate=True``) the CUDA partitions run on the CPU, but the streaming
schedule is the product's: pinned weights, a copy stream, ring slots and event waits,
on simulated streams that check the ordering (:mod:`hetpart.runtime.weight_stream`).
Outputs are checked against ``onnx.reference`` and against the all-resident build.
The ``cuda``-marked test at the end runs the same on a real GPU:

    PYTHONPATH=. python -m pytest tests/test_runtime_streaming.py -q -m cuda
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import threading

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from hetpart import compiler, importer, kernels, models
from hetpart.compiler.artifact import WEIGHT_ALIGNMENT
from hetpart.errors import CompileError, InternalError, RuntimeFailure
from hetpart.runtime import Session
from hetpart.runtime import executor, weight_stream
from hetpart.runtime.weight_stream import HazardChecker, StreamHazard

from streaming_plans import plan_with_devices

EXTRACT = importlib.import_module("hetpart.compiler.extract")  # the module (compiler.extract is its function)

TVM_TOL = dict(rtol=1e-5, atol=1e-6)
ONNX_TOL = dict(rtol=1e-4, atol=1e-5)
# four Gemm(+Relu) kernels: three CUDA partitions, two back to back, a CPU one between
HIDDEN = (32, 32, 32)
DEVICES = ["cuda", "cuda", "cpu", "cuda"]
STREAMED = ["p0_cuda", "p1_cuda", "p3_cuda"]


@pytest.fixture(scope="module")
def mlp():
    onnx_model = models.build("mlp", small=True, hidden=HIDDEN)
    return onnx_model, importer.load(onnx_model)


_BUILT: dict = {}


def compiled(graph, streamed: bool, slots: int = 2):
    """The model compiled (once per residency and graph switches; the ring's size is
    only read by the session), as a fresh copy: saving one moves its directory."""
    key = (streamed, EXTRACT.STREAMED_CUDA_GRAPHS, EXTRACT.STATIC_IO_CUDA_GRAPHS)
    if key not in _BUILT:
        plan = plan_with_devices(graph, DEVICES, streamed=streamed, slots=slots)
        _BUILT[key] = compiler.compile(plan, simulate=True, progress=False)
    model = _BUILT[key]
    return dataclasses.replace(model, plan=dataclasses.replace(model.plan, stream_slots=slots))


def feeds(graph, seed):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(graph.tensors[n].shape).astype(graph.tensors[n].dtype) for n in graph.inputs}


# --- compiler --------------------------------------------------------------------------
def test_streamed_partition_takes_weights_as_parameters(mlp):
    _, graph = mlp
    plan = plan_with_devices(graph, DEVICES, streamed=True)
    programs = {p.name: p for p in compiler.extract(graph, plan)}
    for part in plan.partitions:
        prog = programs[part.name]
        if part.weights == "streamed":
            main = prog.module["main"]
            assert len(main.params) == len(prog.inputs) + len(prog.weights) and prog.weights
            assert sum(v.nbytes for v in prog.weight_values) == part.weight_bytes
            consts = []
            import tvm
            from tvm import relax

            relax.analysis.post_order_visit(
                main.body, lambda e: consts.append(e) if isinstance(e, tvm.ir.GenericConst) else None)
            assert consts == [], f"{part.name} still bakes weights into its module"
        else:
            assert prog.weights == ()


def test_resident_partitions_are_built_as_before(mlp, monkeypatch):
    """Marking some partitions streamed leaves the others' modules identical (without
    STATIC_IO_CUDA_GRAPHS, which fixes their parameters: tests/test_runtime_static_io.py)."""
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", False)
    _, graph = mlp
    streamed = {p.name: p for p in compiler.extract(graph, plan_with_devices(graph, DEVICES, streamed=True))}
    resident = {p.name: p for p in compiler.extract(graph, plan_with_devices(graph, DEVICES, streamed=False))}
    for name, prog in resident.items():
        same = prog.module.script() == streamed[name].module.script()
        assert same == (not streamed[name].weights), name
    # and their libraries are the same bytes (the build is deterministic)
    # CUDA graphs for the resident ones (the switches: the next test)
    assert [n for n, p in streamed.items() if p.cuda_graph] == ["p2_cpu"]
    assert all(p.cuda_graph for p in resident.values())
    libraries = {p.name: p.sha256 for p in compiled(graph, streamed=False).partitions}
    for p in compiled(graph, streamed=True).partitions:
        assert (p.sha256 == libraries[p.name]) == (p.weights is None), p.name


def test_partitions_of_a_streaming_plan_get_graphs_under_the_switches(mlp, monkeypatch):
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", False)  # the switches before it
    _, graph = mlp
    plan = plan_with_devices(graph, DEVICES, streamed=True)
    plan.partitions[0].weights = "resident"

    def built():
        return {p.name: (p.cuda_graph, p.slot_graphs) for p in compiler.extract(graph, plan)}

    assert built() == {"p0_cuda": (True, False), "p1_cuda": (False, False), "p2_cpu": (True, False),
                       "p3_cuda": (False, False)}  # the defaults: resident partitions only
    monkeypatch.setattr(EXTRACT, "STREAMED_CUDA_GRAPHS", True)
    assert built() == {"p0_cuda": (True, False), "p1_cuda": (True, True), "p2_cpu": (True, False),
                       "p3_cuda": (True, True)}
    monkeypatch.setattr(EXTRACT, "STREAMING_CUDA_GRAPHS", False)  # before: none in a plan that streams
    assert not any(g for g, _ in built().values())


@pytest.mark.parametrize("streamed_graphs", [True, False])
def test_partitions_of_a_streaming_plan_compile_to_a_graph_capture(monkeypatch, streamed_graphs):
    """Built for CUDA here (no GPU needed): the resident partition's VM calls TVM's capture
    builtin (its middle kernel reads only its own buffers and constants); the streamed one's
    too where its weights are fixed parameters (slot_graph_signature: the middle kernel's
    weights are fixed), else not (its weights arrive in a different slot call after call)."""
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", False)  # the switches before it
    from hetpart.compiler.extract import slot_graph_signature
    from hetpart.targets import cuda_tvm_target

    monkeypatch.setattr(EXTRACT, "STREAMED_CUDA_GRAPHS", streamed_graphs)
    graph = importer.load(models.build("mlp", small=True, hidden=(32,) * 5))
    plan = plan_with_devices(graph, ["cuda", "cuda"], streamed=True)
    plan.partitions[0].weights = "resident"
    built = {}
    for prog in compiler.extract(graph, plan):
        assert len(prog.kernels) == 3
        lift = slot_graph_signature(prog) if prog.slot_graphs else None  # as build_partition does
        text = kernels.build(prog.module, cuda_tvm_target("sm_90"), cuda_graph=prog.cuda_graph, lift=lift).as_text()
        built[prog.name] = "vm.builtin.cuda_graph.run_or_capture" in text
    assert built == {"p0_cuda": True, "p1_cuda": streamed_graphs}


def test_the_capture_run_calls_one_partition_at_a_time(mlp, monkeypatch):
    """Session._capture_graphs (on a GPU, where a streaming plan has graphs) forced in
    simulation: the partitions' tasks never overlap (no thread's CUDA call meets a
    capture), the ring's order is checked, and the runs after it are right, inline."""
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", False)  # the switches before it
    onnx_model, graph = mlp
    real, lock, active, calls, overlapped = executor.run_stage, threading.Lock(), [0], [], []

    def run_stage(ctx, stage):
        with lock:
            active[0] += 1
            calls.append(stage.name)
            overlapped.extend([stage.name] if active[0] > 1 else [])
        try:
            real(ctx, stage)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(Session, "_needs_capture_run", lambda self: True)
    monkeypatch.setattr(executor, "run_stage", run_stage)
    monkeypatch.setattr(EXTRACT, "STREAMED_CUDA_GRAPHS", True)
    model = compiled(graph, streamed=True, slots=2)  # as if built for a GPU: graphs in every CUDA partition
    model = dataclasses.replace(model, partitions=[dataclasses.replace(a, cuda_graph=a.device == "cuda")
                                                   for a in model.partitions])
    with Session(model) as s:
        # 3 streamed partitions, 2 slots: each reads slot 0 one run, 1 the next, so two runs
        assert s._ring.capture_runs() == 2
        assert calls == ["p0_cuda", "p1_cuda", "p2_cpu", "p3_cuda"] * 2 and not overlapped
        assert s._ring._reserved == 2 * len(STREAMED) and s.last_run_stats is None
        for stage in s._stages:  # a VM per slot where the weights are streamed (and fixed per VM)
            assert sorted(stage.runner._vms) == ([0, 1] if stage.name in STREAMED else [0]), stage.name
        for seed in range(3):
            f = feeds(graph, seed)
            np.testing.assert_allclose(s.run(f)["logits"], ReferenceEvaluator(onnx_model).run(None, f)[0],
                                       **ONNX_TOL)
        assert s.inline_runs == 3


def test_artifact_holds_packed_weights_and_round_trips(mlp, tmp_path):
    _, graph = mlp
    model = compiled(graph, streamed=True)
    model.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["version"] >= 2  # version 2 added streamed weights (3: precision)
    for part in manifest["partitions"]:
        if part["device"] == "cpu":
            assert part["weights"] is None
            continue
        w = part["weights"]
        assert (tmp_path / w["file"]).stat().st_size == w["nbytes"]
        assert all(t["offset"] % WEIGHT_ALIGNMENT == 0 for t in w["tensors"])
        ends = [t["offset"] + t["nbytes"] for t in w["tensors"]]
        assert ends == sorted(ends) and ends[-1] <= w["nbytes"]
    loaded = compiler.load_compiled(tmp_path)
    f = feeds(graph, 3)
    with Session(loaded) as s, Session(compiled(graph, streamed=False)) as r:
        np.testing.assert_allclose(s.run(f)["logits"], r.run(f)["logits"], **TVM_TOL)


def test_corrupt_weights_file_is_refused(mlp, tmp_path):
    _, graph = mlp
    compiled(graph, streamed=True).save(tmp_path)
    path = next(tmp_path.glob("*.weights.bin"))
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CompileError, match="corrupt or was modified"):
        compiler.load_compiled(tmp_path)


class _ShortReads:
    """A weights file whose every ``readinto`` returns at most 4 KiB, as a read of
    past ~2 GiB does on Linux (and any read may)."""

    def __init__(self, f):
        self._f = f

    def readinto(self, view):
        return self._f.readinto(memoryview(view)[:4096])

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_streamed_weights_load_whole_from_short_reads(mlp, tmp_path, monkeypatch):
    """The pinned copy of a streamed partition's weights is filled by as many reads as
    the file takes (one read used to be trusted to return them all: a file past ~2 GiB
    was refused as corrupt); the outputs still match onnx.reference."""
    from hetpart.runtime import external_weights

    onnx_model, graph = mlp
    compiled(graph, streamed=True).save(tmp_path)
    assert max(p.stat().st_size for p in tmp_path.glob("*.weights.bin")) > 4096
    monkeypatch.setattr(external_weights, "open", lambda *a, **k: _ShortReads(open(*a, **k)), raising=False)
    monkeypatch.setattr(weight_stream, "open", lambda *a, **k: _ShortReads(open(*a, **k)), raising=False)
    f = feeds(graph, 5)
    expected = ReferenceEvaluator(onnx_model).run(None, f)
    with Session(compiler.load_compiled(tmp_path)) as s:
        np.testing.assert_allclose(s.run(f)["logits"], expected[0], **TVM_TOL)


def test_version_1_manifest_still_reads(mlp, tmp_path):
    _, graph = mlp
    compiled(graph, streamed=False).save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["version"] = 1
    for p in manifest["partitions"]:
        del p["weights"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    loaded = compiler.load_compiled(tmp_path)
    assert all(p.weights is None for p in loaded.partitions)


# --- runtime ---------------------------------------------------------------------------
@pytest.mark.parametrize("slots", [1, 2])
def test_streamed_outputs_match_resident_and_onnx(mlp, slots):
    onnx_model, graph = mlp
    reference = ReferenceEvaluator(onnx_model)
    with Session(compiled(graph, streamed=True, slots=slots)) as s, \
            Session(compiled(graph, streamed=False)) as resident:
        for seed in range(3):  # several runs: the ring wraps round many times
            f = feeds(graph, seed)
            out = s.run(f)["logits"]
            np.testing.assert_allclose(out, resident.run(f)["logits"], **TVM_TOL)
            np.testing.assert_allclose(out, reference.run(None, f)[0], **ONNX_TOL)
        stats = s.last_run_stats
        streamed = [p for p in s.compiled.partitions if p.weights is not None]
        assert stats.weight_copies == len(streamed) == len(STREAMED)
        assert stats.bytes_weights == sum(p.weights.nbytes for p in streamed)


@pytest.mark.parametrize("slots", [1, 2])
def test_concurrent_runs_share_the_ring(mlp, slots):
    """Runs in flight at once (threaded, pipelined) each read their own copies."""
    onnx_model, graph = mlp
    reference = ReferenceEvaluator(onnx_model)
    batches = [feeds(graph, seed) for seed in range(6)]
    with Session(compiled(graph, streamed=True, slots=slots), slots=3) as s:
        futures = [s.submit(f) for f in batches]
        for f, fut in zip(batches, futures):
            np.testing.assert_allclose(fut.result()["logits"], reference.run(None, f)[0], **ONNX_TOL)
        for f, out in zip(batches, s.run_pipelined(batches)):
            np.testing.assert_allclose(out["logits"], reference.run(None, f)[0], **ONNX_TOL)


def test_trace_has_the_copy_stream(mlp, tmp_path):
    _, graph = mlp
    with Session(compiled(graph, streamed=True)) as s:
        s.run(feeds(graph, 0), trace=tmp_path / "run.trace.json")
        spans = s.last_run_stats.spans
    copies = [sp for sp in spans if sp.track == s.copy_track]
    assert sorted(sp.name for sp in copies) == [f"weights {p}" for p in STREAMED]
    assert all(sp.kind == "copy" and sp.end >= sp.start for sp in copies)
    events = json.loads((tmp_path / "run.trace.json").read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert s.copy_track in tracks and s.stream_track in tracks


@pytest.mark.slow  # BERT's six partitions take ~15 s to build
def test_bert_streamed_matches_onnx():
    """Embedding tables, attention and layer-norm weights streamed, ring of 2."""
    onnx_model = models.build("bert", small=True)
    graph = importer.load(onnx_model)
    plan = plan_with_devices(graph, ["cuda", "cuda", "cpu", "cuda", "cuda", "cpu"], streamed=True, slots=2)
    model = compiler.compile(plan, simulate=True, progress=False)
    assert sum(p.weights is not None for p in model.partitions) == 4
    f = {n: (np.random.default_rng(0).integers(0, 10, graph.tensors[n].shape) if "int" in graph.tensors[n].dtype
             else np.random.default_rng(0).standard_normal(graph.tensors[n].shape)).astype(graph.tensors[n].dtype)
         for n in graph.inputs}
    expected = ReferenceEvaluator(onnx_model).run(None, f)
    with Session(model) as s:
        for _ in range(2):
            out = s.run(f)
            for name, ref in zip(model.model_output_names, expected):
                np.testing.assert_allclose(out[name], ref, **ONNX_TOL)


def test_close_frees_the_ring(mlp):
    """Pinned weights, ring slots and the views of them are all freed by close()."""
    import gc

    from hetpart.runtime.dlpack import live_views

    _, graph = mlp
    before = live_views()
    s = Session(compiled(graph, streamed=True))
    s.run(feeds(graph, 0))
    assert s.buffer_bytes >= sum(p.weights.nbytes for p in s.compiled.partitions if p.weights is not None)
    s.close()
    gc.collect()
    assert s.buffer_bytes == 0 and live_views() == before


@pytest.mark.parametrize("throttled", [False, True])
@pytest.mark.parametrize("fault", ["call does not wait for its copy", "copy does not wait for the last reader"])
def test_a_missing_event_wait_is_caught(mlp, monkeypatch, fault, throttled):
    """The product's schedule with one of its two event waits removed: the checking
    streams raise instead of computing with weights that may not have landed (also with
    THROTTLED_REFILLS, where the copier thread meets the hazard and the reader reports it)."""
    _, graph = mlp
    monkeypatch.setattr(weight_stream, "THROTTLED_REFILLS", throttled)
    if fault == "call does not wait for its copy":
        monkeypatch.setattr(weight_stream.CopyEngine, "before_read", lambda self, landed: None)
    else:
        submit = weight_stream.CopyEngine.submit
        monkeypatch.setattr(weight_stream.CopyEngine, "submit",
                            lambda self, dst, src, after, done: submit(self, dst, src, None, done))
    with Session(compiled(graph, streamed=True, slots=2)) as s:
        with pytest.raises(RuntimeFailure) as info:
            for seed in range(2):
                s.run(feeds(graph, seed))
    cause = info.value.__cause__
    while cause is not None and not isinstance(cause, StreamHazard):
        cause = cause.__cause__
    assert isinstance(cause, StreamHazard)


def test_a_failed_run_does_not_stall_the_ring(mlp, monkeypatch):
    """A run that fails before its streamed partitions run still retires their uses."""
    from hetpart.runtime.partition_runner import PartitionRunner

    onnx_model, graph = mlp
    reference = ReferenceEvaluator(onnx_model)
    call = PartitionRunner.call
    failed = []

    def flaky(self, *args, **kw):
        if self.artifact.name == "p2_cpu" and not failed:
            failed.append(True)
            raise ValueError("injected")
        return call(self, *args, **kw)

    monkeypatch.setattr(PartitionRunner, "call", flaky)
    with Session(compiled(graph, streamed=True, slots=1)) as s:
        with pytest.raises(RuntimeFailure, match="injected"):
            s.run(feeds(graph, 0))
        for seed in range(2):
            f = feeds(graph, seed)
            np.testing.assert_allclose(s.run(f)["logits"], reference.run(None, f)[0], **ONNX_TOL)


def test_a_slot_vm_refuses_weights_from_another_place(mlp, monkeypatch):
    """A streamed partition's VM per ring slot replays the weight pointers of its first call:
    called with weights elsewhere it raises instead of computing with the captured ones."""
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", False)  # the switches before it
    onnx_model, graph = mlp
    monkeypatch.setattr(EXTRACT, "STREAMED_CUDA_GRAPHS", True)
    with Session(compiled(graph, streamed=True, slots=2)) as s:
        f = feeds(graph, 0)
        np.testing.assert_allclose(s.run(f)["logits"], ReferenceEvaluator(onnx_model).run(None, f)[0], **ONNX_TOL)
        runner = next(st.runner for st in s._stages if st.name == "p1_cuda")
        assert runner.slot_graphs and len(runner._slot_weights) == 1
        slot = next(iter(runner._slot_weights))
        import tvm

        with pytest.raises(InternalError, match="CUDA graphs captured"):
            runner._check_slot(slot, [tvm.runtime.tensor(np.zeros(1, np.float32))])


def test_hazard_checker_orders_by_event_waits():
    """The checker on its own: a read needs a wait on a marker after the write, a
    write needs one after every read since the last write."""
    c = HazardChecker()
    c.add_region(100)
    with pytest.raises(StreamHazard, match="never filled"):
        c.read("cuda", [100], "k0")
    c.write("copy", 100, "w0")
    with pytest.raises(StreamHazard, match="not ordered"):
        c.read("cuda", [100], "k1")
    c.wait("cuda", c.record("copy"))
    c.read("cuda", [100], "k2")
    with pytest.raises(StreamHazard, match="may still read"):
        c.write("copy", 100, "w1")
    c.wait("copy", c.record("cuda"))
    c.write("copy", 100, "w2")
    c.read("cuda", [200], "elsewhere")  # not a ring slot: not checked


# --- chunked refills (weight_stream.CHUNKED_REFILLS) -----------------------------------
def _host_buffer(array: np.ndarray, name: str):
    from hetpart.compiler.artifact import TensorSpec
    from hetpart.runtime.memory import Buffer

    return Buffer(TensorSpec(name, array.shape, str(array.dtype)), "cpu", None, array.ctypes.data, array, pinned=True)


@pytest.mark.parametrize("nbytes,chunk", [(10_007, 1_000), (10_000, 1_000), (999, 1_000), (1_000, 1_000),
                                          (1, 7), (4_097, None)])
def test_chunk_pairs_cover_the_copy_once_in_order(nbytes, chunk):
    """Pieces of at most ``chunk`` bytes at the same offsets of both buffers, covering
    every byte once (odd sizes, a copy smaller than a chunk, an exact multiple)."""
    src = _host_buffer(np.arange(nbytes, dtype=np.uint64).astype(np.uint8), "src")
    dst = _host_buffer(np.zeros(nbytes + 64, np.uint8)[:nbytes], "dst")
    pairs = weight_stream.chunk_pairs(dst, src, chunk)
    assert len(pairs) == (1 if chunk is None else -(-nbytes // chunk))
    lo = 0
    for d, s_ in pairs:
        n = s_.nbytes
        assert d.nbytes == n and (chunk is None or n <= chunk)
        assert s_.ptr == src.ptr + lo and d.ptr == dst.ptr + lo
        np.copyto(d.array, s_.array)
        lo += n
    assert lo == nbytes
    np.testing.assert_array_equal(dst.array, src.array)


def _engine_fill(nbytes: int, chunk, seed: int = 0, wait_for=None, throttle=None):
    """One refill of ``nbytes`` random bytes into a checked ring slot by a CopyEngine on
    checked simulated streams, then a read of the slot on the compute stream after
    waiting for the marker ``wait_for`` picks (default: "landed"); returns the slot's bytes."""
    from hetpart.runtime.weight_stream import CheckedStream, CopyEngine

    checker = HazardChecker()
    compute, copier = CheckedStream("cuda", checker), CheckedStream("copy", checker)
    try:
        slot = np.full(nbytes + 128, 0xAB, np.uint8)
        checker.add_region(slot.ctypes.data, slot.nbytes)
        src = _host_buffer(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8), "w")
        dst = _host_buffer(slot[:nbytes], "slot")
        engine = CopyEngine(compute, copier, chunk_bytes=chunk, throttle=throttle)
        if wait_for is None:
            _, landed = engine.fill(dst, src, None)
        else:
            landed = wait_for(engine, dst, src)
        engine.before_read(landed)
        compute.launch(lambda: None, reads=(dst,))
        landed.synchronize()
        assert (slot[nbytes:] == 0xAB).all()  # nothing past the weights written
        return slot[:nbytes].copy(), src.array
    finally:
        if throttle is not None:
            engine.close()  # the copier thread, then the copy stream
        compute.close()
        copier.close()


@pytest.mark.parametrize("nbytes,chunk", [(10_007, 1_000), (300, 1_000), (8_192, 4_096)])
def test_a_chunked_refill_lands_the_same_bytes_as_one_copy(nbytes, chunk):
    """The copy engine on checked simulated streams: chunked (odd sizes, a weight
    smaller than a chunk) and unchunked refills land byte-identical, and the checker
    accepts a read that waits for the refill's "landed" marker."""
    chunked, src = _engine_fill(nbytes, chunk)
    whole, _ = _engine_fill(nbytes, None)
    np.testing.assert_array_equal(chunked, src)
    np.testing.assert_array_equal(whole, chunked)


def test_a_read_ordered_before_the_last_chunk_is_caught():
    """A "landed" marker recorded after the first chunk rather than the last: the
    checker sees the slot (every chunk's write counts on it) and raises on the read."""
    def early(engine, dst, src):
        pairs = weight_stream.chunk_pairs(dst, src, 1_000)
        engine.copier.copy(*pairs[0], "h2d")
        mid = engine.copier.record()
        for d, s_ in pairs[1:]:
            engine.copier.copy(d, s_, "h2d")
        return mid

    with pytest.raises(StreamHazard, match="not ordered"):
        _engine_fill(5_001, 1_000, wait_for=early)


def test_chunked_refills_in_a_session_match_unchunked(mlp, monkeypatch):
    """The product's streaming schedule (checked streams) with CHUNKED_REFILLS on and an
    odd chunk size smaller than some partitions' weights and larger than others':
    more copies than refills, and outputs bit-identical to the switch off."""
    _, graph = mlp
    model = compiled(graph, streamed=True, slots=2)
    sizes = sorted(p.weights.nbytes for p in model.partitions if p.weights is not None)
    chunk = sizes[0] + 1 if sizes[0] + 1 < sizes[-1] else max(1, sizes[-1] // 3)
    chunk += 1 - chunk % 2  # odd: no boundary on the packing's alignment
    assert chunk < sizes[-1]
    copies = []
    copy = weight_stream.CheckedStream.copy

    def counted(self, dst, src, kind):
        if self.name == "copy":
            copies.append(src.nbytes)
        return copy(self, dst, src, kind)

    monkeypatch.setattr(weight_stream.CheckedStream, "copy", counted)
    out, n_copies = {}, {}
    monkeypatch.setattr(weight_stream, "REFILL_CHUNK_BYTES", chunk)
    for on in (False, True):
        monkeypatch.setattr(weight_stream, "CHUNKED_REFILLS", on)
        copies.clear()
        with Session(compiled(graph, streamed=True, slots=2)) as s:
            assert s._ring.engine.chunk_bytes == (chunk if on else None)
            out[on] = [s.run(feeds(graph, seed))["logits"] for seed in range(3)]
        n_copies[on] = len(copies)
        assert on is False or max(copies) <= chunk
    assert n_copies[True] > n_copies[False] > 0
    for a, b in zip(out[False], out[True]):
        np.testing.assert_array_equal(a, b)


# --- throttled refills (weight_stream.THROTTLED_REFILLS) --------------------------------
class _LoggedStream(weight_stream.CheckedStream):
    """A checked simulated stream that logs, in host order, each copy it is asked for
    (by destination offset), each marker recorded (with the copies before it) and each
    host wait on one of its markers."""

    def __init__(self, name, checker, log):
        super().__init__(name, checker)
        self.log, self.copies = log, 0

    def copy(self, dst, src, kind):
        self.copies += 1
        self.log.append(("copy", self.name, dst.ptr))
        super().copy(dst, src, kind)

    def record(self):
        m = super().record()
        after, wait = self.copies, m.synchronize
        self.log.append(("record", self.name, after))

        def synchronize():
            self.log.append(("sync", self.name, after))
            wait()

        m.synchronize = synchronize
        return m


@pytest.mark.parametrize("throttle", [1, 2])
def test_a_throttled_refill_keeps_at_most_k_chunks_in_flight(throttle):
    """Chunks go in address order; chunk i is submitted only after the host waited on the
    marker after chunk i - K (so at most K are in flight); "landed" follows the last chunk,
    the fill's wait for the slot's last reader precedes the first, and the bytes land as
    one copy's (the checker accepts the read after "landed")."""
    from hetpart.runtime.weight_stream import CopyEngine

    log: list = []
    checker = HazardChecker()
    compute, copier = _LoggedStream("cuda", checker, log), _LoggedStream("copy", checker, log)
    nbytes, chunk = 10_007, 1_000
    slot = np.zeros(nbytes, np.uint8)
    checker.add_region(slot.ctypes.data, nbytes)
    src = _host_buffer(np.random.default_rng(3).integers(0, 256, nbytes, dtype=np.uint8), "w")
    dst = _host_buffer(slot, "slot")
    engine = CopyEngine(compute, copier, chunk_bytes=chunk, throttle=throttle)
    try:
        compute.launch(lambda: None, reads=())  # a "reader" before the refill
        after = compute.record()
        start, landed = engine.fill(dst, src, after)
        filled = list(log)  # the fill's own operations (it returns once all are submitted)
        engine.before_read(landed)
        compute.launch(lambda: None, reads=(dst,))
        landed.synchronize()
        np.testing.assert_array_equal(slot, src.array)
        copy_log = [e for e in filled if e[1] == "copy"]
        copies = [e[2] - dst.ptr for e in copy_log if e[0] == "copy"]
        assert copies == list(range(0, nbytes, chunk))  # 11 chunks, in address order
        synced, submitted = 0, 0
        for kind, _, n in copy_log:
            if kind == "sync":
                assert n == synced + 1  # the oldest chunk in flight, one at a time
                synced = n
            elif kind == "copy":
                assert submitted - synced < throttle  # after this one: at most K in flight
                submitted += 1
        assert synced == len(copies) - throttle and engine.chunk_waits == synced
        assert copy_log[-1] == ("record", "copy", len(copies))  # landed: after the last chunk
        # the fill waited (on the device) for a compute marker of its own, recorded after ``after``
        assert [e[0] for e in filled if e[1] == "cuda"][:2] == ["record", "record"]
    finally:
        engine.close()
        compute.close()


@pytest.mark.parametrize("nbytes,chunk,throttle", [(10_007, 1_000, 1), (10_007, 1_000, 2), (300, 1_000, 1),
                                                   (2_000, 1_000, 2)])
def test_a_throttled_refill_lands_the_same_bytes_as_one_copy(nbytes, chunk, throttle):
    throttled, src = _engine_fill(nbytes, chunk, throttle=throttle)
    np.testing.assert_array_equal(throttled, src)


def test_a_throttled_refill_outlives_the_marker_it_was_given():
    """The copier thread waits on a compute marker of its own: the caller's may be released
    (its run ended) before the thread gets to the fill."""
    from hetpart.runtime.weight_stream import CopyEngine

    checker = HazardChecker()
    compute, copier = weight_stream.CheckedStream("cuda", checker), weight_stream.CheckedStream("copy", checker)
    engine = CopyEngine(compute, copier, chunk_bytes=100, throttle=1)
    released = []
    try:
        after = compute.record()
        after.release = lambda: released.append(True)
        got, box = threading.Event(), []
        slot, src = np.zeros(1_000, np.uint8), np.arange(1_000).astype(np.uint8)
        engine.submit(_host_buffer(slot, "slot"), _host_buffer(src, "w"), after,
                      lambda m, e: (box.append((m, e)), got.set()))
        assert got.wait(10)
        (_, landed), error = box[0]
        assert error is None and released == []  # the engine never releases the caller's marker
        landed.synchronize()  # submitted is not landed: the last chunk may still be in flight
        np.testing.assert_array_equal(slot, src)
    finally:
        engine.close()
        compute.close()


def test_throttled_refills_in_a_session_match_unthrottled(mlp, monkeypatch):
    """The product's schedule (checked streams, threaded and pipelined runs) with
    THROTTLED_REFILLS on and an odd chunk smaller than the partitions' weights: the host
    waited for chunks, and outputs are bit-identical to the switch off."""
    _, graph = mlp
    model = compiled(graph, streamed=True, slots=2)
    sizes = sorted(p.weights.nbytes for p in model.partitions if p.weights is not None)
    monkeypatch.setattr(weight_stream, "REFILL_CHUNK_BYTES", max(1, sizes[0] // 5) | 1)
    out = {}
    batches = [feeds(graph, seed) for seed in range(4)]
    for on in (False, True):
        monkeypatch.setattr(weight_stream, "THROTTLED_REFILLS", on)
        with Session(compiled(graph, streamed=True, slots=2), slots=2) as s:
            assert s._ring.engine.throttle == (weight_stream.THROTTLE_IN_FLIGHT if on else None)
            out[on] = [s.run(f)["logits"] for f in batches] + [o["logits"] for o in s.run_pipelined(batches)]
            assert (s._ring.engine.chunk_waits > 0) == on
    for a, b in zip(out[False], out[True]):
        np.testing.assert_array_equal(a, b)


# --- a real GPU --------------------------------------------------------------------------
@pytest.mark.cuda
def test_streaming_on_gpu_matches_resident_and_overlaps(tmp_path):
    """On the GPU: streamed equals resident, and the copy stream's copies overlap the
    compute stream's partitions in time (the prefetch works)."""
    from hetpart.kernels.options import KernelOptions

    # 16 MiB of weights per layer, so a copy takes a while; full float32 (no TF32) so
    # the two builds' different kernels agree closely
    onnx_model = models.build("mlp", small=True, hidden=(2048,) * 5, in_features=2048, batch=256)
    graph = importer.load(onnx_model)
    devices = ["cuda"] * len(graph.topological_order())
    options = KernelOptions(tf32=False)
    resident = compiler.compile(plan_with_devices(graph, devices, streamed=False), progress=False, options=options)
    streamed = compiler.compile(plan_with_devices(graph, devices, streamed=True, slots=2), progress=False,
                                options=options)
    assert all(p.weights is not None for p in streamed.partitions)
    f = feeds(graph, 0)
    with Session(resident) as r, Session(streamed) as s:
        expected = r.run(f)["logits"]
        np.testing.assert_allclose(expected, ReferenceEvaluator(onnx_model).run(None, f)[0], rtol=1e-3, atol=1e-3)
        for seed in range(3):
            g = feeds(graph, seed)
            np.testing.assert_allclose(s.run(g)["logits"], r.run(g)["logits"], rtol=1e-4, atol=1e-4)
        s.run(f, trace=tmp_path / "streaming.trace.json")
        spans = s.last_run_stats.spans
        assert s.last_run_stats.weight_copies == len(devices)
    copies = [sp for sp in spans if sp.track == s.copy_track]
    calls = [sp for sp in spans if sp.track == s.stream_track and sp.kind == "partition"]
    assert len(copies) == len(calls) == len(devices)
    assert all(c.end > c.start for c in copies)
    overlapping = [(c.name, k.name) for c in copies for k in calls if c.start < k.end and k.start < c.end]
    assert overlapping, f"no copy overlapped a partition: copies {copies}, calls {calls}"


def _streamed_mlp_2048():
    """``(onnx model, graph, compiled)``: an all-CUDA mlp of three 2048-wide (16 MiB) layers,
    every layer streamed through a 2-slot ring, TF32 off (bit-for-bit comparisons)."""
    from hetpart.kernels.options import KernelOptions

    onnx_model = models.build("mlp", small=True, hidden=(2048,) * 3, in_features=2048, batch=16)
    graph = importer.load(onnx_model)
    devices = ["cuda"] * len(graph.topological_order())
    streamed = compiler.compile(plan_with_devices(graph, devices, streamed=True, slots=2), progress=False,
                                options=KernelOptions(tf32=False))
    return onnx_model, graph, streamed


@pytest.mark.cuda
def test_chunked_refills_on_gpu_match_one_copy(monkeypatch):
    """On the GPU: CHUNKED_REFILLS with an odd chunk (16 MiB layers in 6 copies, the last
    short) gives the same outputs, bit for bit, as one copy a refill, and as ONNX."""
    onnx_model, graph, streamed = _streamed_mlp_2048()
    monkeypatch.setattr(weight_stream, "REFILL_CHUNK_BYTES", 3_000_001)
    out = {}
    for on in (False, True):
        monkeypatch.setattr(weight_stream, "CHUNKED_REFILLS", on)
        with Session(streamed) as s:
            assert s._ring.engine.chunk_bytes == (3_000_001 if on else None)
            out[on] = [s.run(feeds(graph, seed))["logits"] for seed in range(3)]
    for a, b in zip(out[False], out[True]):
        np.testing.assert_array_equal(a, b)
    f = feeds(graph, 0)
    np.testing.assert_allclose(out[True][0], ReferenceEvaluator(onnx_model).run(None, f)[0], rtol=1e-3, atol=1e-3)


@pytest.mark.cuda
def test_throttled_refills_on_gpu_match_one_copy(monkeypatch):
    """On the GPU: THROTTLED_REFILLS (odd chunk: 16 MiB layers in 6 chunks, K = 1 and 2 in
    flight) gives the same outputs, bit for bit, as one copy a refill, in runs and
    pipelined runs (one build, three sessions)."""
    onnx_model, graph, streamed = _streamed_mlp_2048()
    monkeypatch.setattr(weight_stream, "REFILL_CHUNK_BYTES", 3_000_001)
    out = {}
    batches = [feeds(graph, seed) for seed in range(3)]
    for throttle in (None, 1, 2):
        monkeypatch.setattr(weight_stream, "THROTTLED_REFILLS", throttle is not None)
        monkeypatch.setattr(weight_stream, "THROTTLE_IN_FLIGHT", throttle or 2)
        with Session(streamed) as s:
            assert s._ring.engine.throttle == throttle
            out[throttle] = [s.run(f)["logits"] for f in batches] + [o["logits"] for o in s.run_pipelined(batches)]
            assert (s._ring.engine.chunk_waits > 0) == (throttle is not None)
    for throttle in (1, 2):
        for a, b in zip(out[None], out[throttle]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
def test_resident_and_streamed_partitions_mixed_on_gpu_match_onnx():
    """A plan with resident CUDA partitions beside streamed ones (what the partitioner
    makes under a cap): the copy stream runs while resident partitions are called."""
    onnx_model = models.build("mlp", small=True, hidden=(1024,) * 5, in_features=1024, batch=64)
    graph = importer.load(onnx_model)
    plan = plan_with_devices(graph, ["cuda"] * len(graph.topological_order()), streamed=True, slots=2)
    for p in plan.partitions[::2]:
        p.weights = "resident"
    assert plan.streamed and len(plan.streamed) < len(plan.partitions)
    from hetpart.kernels.options import KernelOptions

    mixed = compiler.compile(plan, progress=False, options=KernelOptions(tf32=False))
    with Session(mixed) as s:
        for seed in range(3):
            f = feeds(graph, seed)
            np.testing.assert_allclose(s.run(f)["logits"], ReferenceEvaluator(onnx_model).run(None, f)[0],
                                       rtol=1e-3, atol=1e-3)


@pytest.mark.slow  # planning (~5 s) and ten partitions built (~5 s)
def test_an_overlap_plan_of_llama_decode_steps_like_onnx_runtime():
    """The partitioner's own interleaved plan (hetpart.partitioner.overlap) of the small
    llama_decode under half its weights, with decode-shaped costs (the CPU reads weights
    faster than the link copies them, a 100 us CPU wake): streamed partitions with CPU
    partitions between, a ring of 2+ slots, the caches bound on their devices.  Four
    steps in simulation equal ONNX Runtime's four steps (a hazard on the ring would raise
    StreamHazard), and every step copies each streamed partition's weights once."""
    from hetpart.partitioner import TableCosts, partition
    from state_cases import ort_steps

    model = models.build("llama_decode", small=True)
    graph = importer.load(model)
    pairs = {o.name: o.name.replace("present.", "past.") for o in model.graph.output if o.name.startswith("present.")}
    seconds = {k.id: {"cpu": 2e-6 + k.param_bytes / 95.5e6, "cuda": 5e-6 + k.param_bytes / 3e9} for k in graph.nodes}
    costs = TableCosts(seconds, link_bytes_per_s=55e6, link_latency_s=1e-6, overhead_s={"cpu": 1e-6, "cuda": 5e-6},
                       wake_s={"cpu": 100e-6})
    cap = sum(k.param_bytes for k in graph.nodes) // 2
    plan = partition(graph, cost_model=costs, gpu_memory=cap, progress=False, stream_weights=True, state=pairs)
    devices = ["streamed" if p.weights == "streamed" else p.device for p in plan.partitions]
    assert plan.stream_slots >= 2 and devices.count("streamed") >= 2
    assert any(a == "streamed" and b == "cpu" for a, b in zip(devices, devices[1:])), devices
    compiled_plan = compiler.compile(plan, simulate=True, progress=False)
    feeds = models.example_inputs(model, seed=3)
    init = {p: feeds[p] for p in pairs.values()}
    steps = [{"input_ids": np.array([[5 + k]], np.int64), "position": np.array([k], np.int64)} for k in range(4)]
    want = ort_steps(model, steps, pairs, init)
    with Session(compiled_plan, state=pairs, initial_state=init) as s:
        for k, step in enumerate(steps):
            got = s.run(step)
            np.testing.assert_allclose(got["logits"], want[k]["logits"], rtol=2e-3, atol=2e-3, err_msg=f"step {k}")
            assert s.last_run_stats.weight_copies == devices.count("streamed")


@pytest.mark.parametrize("on", [True, False])
def test_traced_runs_time_each_cuda_call_on_the_host(mlp, monkeypatch, on):
    """executor.HOST_LAUNCH_SPANS: a traced run records each CUDA partition's host time
    ("host pX") and its launch nested in it ("launch pX") on the host track; untimed
    runs and the switch off record none; outputs are the same either way."""
    from hetpart.runtime import executor

    monkeypatch.setattr(executor, "HOST_LAUNCH_SPANS", on)
    onnx_model, graph = mlp
    f = feeds(graph, 0)
    with Session(compiled(graph, streamed=True)) as s:
        out = s.run(f)["logits"]
        assert not [sp for sp in s.last_run_stats.spans if sp.track == executor.HOST_TRACK]
        s.profile = True  # timed, no trace file
        np.testing.assert_allclose(s.run(f)["logits"], out, **TVM_TOL)
        spans = {sp.name: sp for sp in s.last_run_stats.spans if sp.track == executor.HOST_TRACK}
    names = ["p0_cuda", "p1_cuda", "p3_cuda"]
    if not on:
        assert spans == {}
        return
    assert set(spans) == {f"{k} {n}" for n in names for k in ("host", "launch")}
    for n in names:
        host, launch = spans[f"host {n}"], spans[f"launch {n}"]
        assert host.start <= launch.start <= launch.end <= host.end


@pytest.mark.cuda
def test_graphs_in_a_streaming_plan_replay_right_on_gpu(monkeypatch):
    """STREAMING_CUDA_GRAPHS and STREAMED_CUDA_GRAPHS (set here) on the GPU: CUDA partitions of three
    kernels (the middle one captured), resident and streamed, and a CPU partition; three
    streamed partitions through two ring slots, so each reads slot 0 one run and slot 1 the
    next (a VM and graphs per slot, captured in two runs when the session opens); then runs
    inline, submitted two at a time and pipelined (both handoff slots), each against
    onnx.reference with its own feeds: a graph replaying a stale pointer returns another
    run's numbers, or another slot's weights'."""
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", False)  # the switches before it
    from hetpart.kernels.options import KernelOptions

    monkeypatch.setattr(EXTRACT, "STREAMED_CUDA_GRAPHS", True)
    onnx_model = models.build("mlp", small=True, hidden=(512,) * 17, in_features=512, batch=16)
    graph = importer.load(onnx_model)
    plan = plan_with_devices(graph, ["cuda", "cuda", "cpu", "cuda", "cuda", "cuda"], streamed=True, slots=2)
    for p in plan.partitions[::3]:  # p0_cuda, p3_cuda resident; p1, p4, p5 streamed
        p.weights = "resident"
    model = compiler.compile(plan, progress=False, options=KernelOptions(tf32=False))
    graphs = {p.name: (p.cuda_graph, p.slot_graphs) for p in model.partitions if p.device == "cuda"}
    assert graphs == {"p0_cuda": (True, False), "p1_cuda": (True, True), "p3_cuda": (True, False),
                      "p4_cuda": (True, True), "p5_cuda": (True, True)}
    reference = ReferenceEvaluator(onnx_model)

    def check(out, f):
        np.testing.assert_allclose(out["logits"], reference.run(None, f)[0], rtol=1e-3, atol=1e-3)

    with Session(model) as s:
        assert s._ring._reserved == 6, "the session opened with its two capture runs"
        assert all(len(st.runner._vms) == (2 if st.runner.slot_graphs else 1) for st in s._stages)
        for seed in range(4):
            f = feeds(graph, seed)
            check(s.run(f), f)
        assert s.inline_runs == 4
        for seed in range(4, 10, 2):
            fa, fb = feeds(graph, seed), feeds(graph, seed + 1)
            a, b = s.submit(fa), s.submit(fb)
            check(a.result(), fa)
            check(b.result(), fb)
        batches = [feeds(graph, seed) for seed in range(10, 16)]
        for out, f in zip(s.run_pipelined(batches), batches):
            check(out, f)
