"""Tensors of data-dependent shape in the runtime (simulation mode).

A TensorSpec dim that is a string (``('s', 's')`` for NonMaxSuppression's
``selected_indices``, ``'n'`` for a symbolic batch) has no size until the model runs,
so it can have no preallocated handoff buffer: its partition runs through ``main``
(the VM allocates the output), a crossing copies it per run into a buffer of the
actual size, and a feed may have any size along it.  Static tensors keep the
zero-copy path.

Two kinds of models: the synthetic chain with a symbolic first dim (fast, every
crossing dynamic), and the small zoo detector split between its backbone and its NMS
post-processing, compiled by the real compiler and checked against
``onnx.reference.ReferenceEvaluator`` (selected indices exactly).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import hetpart
from hetpart import models
from hetpart.compiler.artifact import TensorSpec
from hetpart.errors import InternalError, RuntimeFailure
from hetpart.runtime import Session
from hetpart.runtime.feeds import validate_feeds
from hetpart.runtime.handoff import Slot, plan_routes
from hetpart.runtime.memory import SimulatedMemory, aligned_array, is_static
from hetpart.runtime.partition_runner import PartitionRunner
from hetpart.runtime.synthetic import chain, chain_reference

DYN = ("n", 32)
ONNX_TOL = dict(rtol=1e-4, atol=1e-5)


def x_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 32)).astype("float32")


@pytest.fixture(scope="module")
def dyn_chains():
    cache = {}

    def get(devices: tuple[str, ...]):
        if devices not in cache:
            cache[devices] = chain(list(devices), DYN, work=1)
        return cache[devices]

    return get


# --- synthetic: a symbolic dim everywhere ------------------------------------------------
def test_dynamic_tensors_get_no_buffers_and_always_copy(dyn_chains):
    model = dyn_chains(("cpu", "cuda", "cpu"))
    routes = plan_routes(model, "mapped")  # even when mapping is asked for: nothing to map
    assert all(r.dynamic and r.nbytes is None for r in routes.values())
    assert {n: r.mode for n, r in routes.items() if r.crosses} == {"t0": "copy", "t1": "copy"}
    slot = Slot.allocate(0, routes, SimulatedMemory())
    assert slot.buffers == {} and slot.fresh_outputs == frozenset()
    assert not any(PartitionRunner(p).dps for p in model.partitions)
    with pytest.raises(InternalError, match="data-dependent"):
        aligned_array(TensorSpec("t0", DYN, "float32"))  # a clear error, not numpy's ValueError


def test_dps_is_not_used_for_a_dynamic_output_whatever_the_artifact_says(dyn_chains):
    art = copy.copy(dyn_chains(("cpu",)).partitions[0])
    art.dps = True
    assert PartitionRunner(art).dps is False


@pytest.mark.parametrize("handoff", ["auto", "mapped"])
@pytest.mark.parametrize("devices, crossings", [
    (("cpu",), (0, 0)), (("cuda",), (1, 1)), (("cpu", "cuda", "cpu"), (1, 1)), (("cuda", "cpu", "cuda"), (2, 2)),
])
def test_dynamic_chain_runs_any_size_copying_once_per_crossing(dyn_chains, devices, crossings, handoff):
    model = dyn_chains(devices)
    out_name = model.outputs[0].name
    with Session(model, handoff=handoff) as s:
        assert s.buffer_bytes == 0  # nothing could be preallocated
        for n in (5, 1, 12, 0):  # one session, a different size every run
            x = aligned_array(TensorSpec("x", (n, 32), "float32"))
            x[...] = x_of(n, n)
            out = s.run({"x": x})
            np.testing.assert_allclose(out[out_name], chain_reference(x, len(devices), 1), rtol=1e-5, atol=1e-5)
            st = s.last_run_stats
            h2d, d2h = crossings
            assert (st.h2d, st.d2h, st.mapped, st.staging, st.feed_copies, st.output_copies) == (h2d, d2h, 0, 0, 0, 0)
            assert st.transient_buffers == h2d + d2h
            assert st.bytes_h2d == h2d * n * 32 * 4 and st.bytes_d2h == d2h * n * 32 * 4
            assert all(e.mode == "copy" and e.copies == 1 and e.nbytes == n * 32 * 4 for e in st.edges)


def test_pipelined_dynamic_batches_keep_their_own_sizes(dyn_chains):
    model = dyn_chains(("cuda", "cpu", "cuda"))
    sizes = [3, 9, 1, 6, 4, 2]
    with Session(model, slots=2) as s:
        results = s.run_pipelined([{"x": x_of(n, i)} for i, n in enumerate(sizes)])
    for i, (n, out) in enumerate(zip(sizes, results)):
        np.testing.assert_allclose(out["t2"], chain_reference(x_of(n, i), 3, 1), rtol=1e-5, atol=1e-5)


def test_symbolic_dims_take_any_size_numbered_dims_and_rank_must_match():
    specs = [TensorSpec("x", DYN, "float32")]
    for shape in [(0, 32), (1, 32), (77, 32)]:
        buffers, _ = validate_feeds({"x": np.zeros(shape, "float32")}, specs, gpu=False)
        assert buffers["x"].spec.shape == shape and buffers["x"].nbytes == shape[0] * 32 * 4
    for shape, words in [((4, 31), "has shape [4, 31]"), ((4,), "has shape [4]"), ((1, 4, 32), "has shape [1, 4, 32]")]:
        with pytest.raises(RuntimeFailure, match="bad feeds") as info:
            validate_feeds({"x": np.zeros(shape, "float32")}, specs, gpu=False)
        assert words in str(info.value) and "the model expects ['n', 32] (a named dim takes any size)" in str(info.value)
    # an unaligned feed of symbolic shape is copied at its own size
    raw = np.zeros(5 * 32 + 1, "float32")[1:].reshape(5, 32)
    buffers, copies = validate_feeds({"x": raw}, specs, gpu=False)
    assert copies == 1 and buffers["x"].array.shape == (5, 32)


# --- the zoo detector: NMS output of data-dependent shape --------------------------------
def nms_kernels(graph) -> set[str]:
    """The NonMaxSuppression kernel and everything computed from it (the slicing of
    its padded result to the selected count)."""
    import networkx as nx

    (nms,) = [k for k in graph.kernels.values() if any("non_max_suppression" in op for op in k.ops)]
    return {nms.id} | nx.descendants(graph.nx, nms.id)


_DETECTOR: dict[str, object] = {}


@pytest.fixture(scope="module")
def detector(zoo_graph, plan_for):
    """``detector(nms_device) -> CompiledModel``: NMS on ``nms_device``, the rest
    (backbone, head, top-k) on the other device; simulated."""
    graph = zoo_graph("detector")

    def get(nms_device: str):
        if nms_device not in _DETECTOR:
            other = "cuda" if nms_device == "cpu" else "cpu"
            nms = nms_kernels(graph)
            assignment = {k: (nms_device if k in nms else other) for k in graph.topological_order()}
            _DETECTOR[nms_device] = hetpart.compile(plan_for(graph, assignment), graph, simulate=True, progress=False)
        return _DETECTOR[nms_device]

    return get


def check_against_onnx(compiled, onnx_model, got: dict, feeds: dict) -> None:
    want = ReferenceEvaluator(onnx_model).run(None, feeds)
    names = [o.name for o in onnx_model.graph.output]
    assert len(compiled.outputs) == len(want)
    assert list(got) == names  # keyed by the model's output names, in the ONNX order
    for name, w in zip(names, want):
        g = got[name]
        assert g.shape == w.shape, f"{name}: shape {g.shape} != {w.shape}"
        if np.issubdtype(w.dtype, np.integer):
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            np.testing.assert_allclose(g, w, err_msg=name, **ONNX_TOL)


# ids avoid the word "cuda": conftest skips items with that keyword where no GPU is
@pytest.mark.slow
@pytest.mark.parametrize("nms_device", ["cpu", "cuda"], ids=["nms_on_cpu", "nms_on_gpu"])
def test_detector_with_nms_split_from_backbone_matches_onnx(detector, zoo_onnx, nms_device):
    compiled = detector(nms_device)
    onnx_model = zoo_onnx("detector")
    (dyn,) = [t for t in compiled.outputs if not is_static(t.shape)]
    (nms_part,) = [p for p in compiled.partitions if dyn in p.outputs]
    assert nms_part.device == nms_device and not nms_part.dps  # the compiler leaves out main_dps
    selected = set()
    with Session(compiled) as s:
        assert not s._stages[compiled.partitions.index(nms_part)].runner.dps
        for seed in (0, 1, 2):  # 80, 72, 73 boxes selected: one session, several sizes
            feeds = models.example_inputs(onnx_model, seed)
            out = s.run(feeds)
            check_against_onnx(compiled, onnx_model, out, feeds)
            dyn_out = out[compiled.model_output_names[compiled.outputs.index(dyn)]]
            selected.add(dyn_out.shape[0])
            st = s.last_run_stats
            crossed = nms_device == "cuda"  # the NMS result is a model output: back to the host
            assert st.transient_buffers == int(crossed)
            if crossed:
                edge = st.edge_for(dyn.name)
                assert (edge.direction, edge.mode, edge.copies, edge.nbytes) == ("d2h", "copy", 1, dyn_out.nbytes)
            # static tensors still cross through the slot's preallocated buffers
            for t in compiled.partitions[0].outputs:
                assert (t.name, "cpu") in s._slots[0].buffers or (t.name, "cuda") in s._slots[0].buffers
            assert not any((dyn.name, side) in slot.buffers for slot in s._slots for side in ("cpu", "cuda"))
        batches = [models.example_inputs(onnx_model, seed) for seed in (3, 4, 5)]
        for feeds, out in zip(batches, s.run_pipelined(batches)):
            check_against_onnx(compiled, onnx_model, out, feeds)
    assert len(selected) > 1


def test_dynamic_specs_round_trip_the_manifest(detector, zoo_onnx, tmp_path):
    compiled = detector("cuda")
    compiled.save(tmp_path / "det")
    loaded = hetpart.load_compiled(tmp_path / "det")
    assert loaded.outputs == compiled.outputs
    assert [p.outputs for p in loaded.partitions] == [p.outputs for p in compiled.partitions]
    assert [p.dps for p in loaded.partitions] == [p.dps for p in compiled.partitions]
    assert any(not is_static(t.shape) for t in loaded.outputs)
    onnx_model = zoo_onnx("detector")
    feeds = models.example_inputs(onnx_model, 1)
    with Session(loaded) as s:
        out = s.run(feeds, trace=tmp_path / "run.trace.json")
    check_against_onnx(loaded, onnx_model, out, feeds)
    assert (tmp_path / "run.trace.json").stat().st_size > 0


@pytest.mark.cuda
def test_detector_nms_on_a_real_gpu_matches_onnx(zoo_graph, zoo_onnx, plan_for):
    """The same split on a real GPU: the NMS partition's VM allocates its output on the
    device and the session copies it back per run.  (Not run where there is no GPU.)"""
    compiled = _detector_with_nms_slice_on_gpu(zoo_graph, plan_for)
    onnx_model = zoo_onnx("detector")
    (dyn,) = [t for t in compiled.outputs if not is_static(t.shape)]
    with Session(compiled) as s:
        for seed in (0, 1, 2):
            feeds = models.example_inputs(onnx_model, seed)
            out = s.run(feeds)
            check_against_onnx(compiled, onnx_model, out, feeds)
            assert s.last_run_stats.edge_for(dyn.name).copies == 1


@pytest.mark.cuda
def test_detector_nms_on_a_real_gpu_matches_onnx_while_the_gpu_is_busy(zoo_graph, zoo_onnx, plan_for):
    """As above, with another stream keeping every SM busy: the GPU partition's VM
    reads the selected count on the host with copies outside the session's stream; a
    copy engine is not an SM, so run on our stream that read could overtake the kernel
    that writes the count (it came back (0, 0) under load before launch_in_order)."""
    import threading

    compiled = _detector_with_nms_slice_on_gpu(zoo_graph, plan_for)
    onnx_model = zoo_onnx("detector")
    stop = threading.Event()
    busy = threading.Thread(target=_keep_gpu_busy, args=(stop,), daemon=True)
    busy.start()
    try:
        with Session(compiled) as s:
            for seed in range(20):
                feeds = models.example_inputs(onnx_model, seed % 3)
                check_against_onnx(compiled, onnx_model, s.run(feeds), feeds)
    finally:
        stop.set()
        busy.join()  # no kernel launches left running into the interpreter's exit


def _detector_with_nms_slice_on_gpu(zoo_graph, plan_for):
    """The detector compiled with every NMS kernel that can run on CUDA there, the rest
    on the CPU: NMS itself cannot be built for CUDA (kernels.capabilities); the slice
    that trims its output to the data-dependent size can, and produces the dynamic
    tensor there."""
    from hetpart.kernels.capabilities import unsupported_reason

    graph = zoo_graph("detector")
    nms = {k for k in nms_kernels(graph) if not unsupported_reason(graph.kernels[k], "cuda")}
    assignment = {k: ("cuda" if k in nms else "cpu") for k in graph.topological_order()}
    return hetpart.compile(plan_for(graph, assignment), graph, progress=False)


def _keep_gpu_busy(stop) -> None:
    """Launch a 2048^3 float32 matmul (tens of microseconds on every SM) again and
    again on a stream of its own until ``stop`` is set."""
    import tvm
    import tvm_ffi
    from tvm import relax

    from hetpart import kernels
    from hetpart.targets import cuda_tvm_target

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2048, 2048), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(x, x)))
        bb.emit_func_output(out)
    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(kernels.build(bb.get(), cuda_tvm_target(), cuda_graph=False), dev)
    arg = tvm.runtime.tensor(np.ones((2048, 2048), "float32"), dev)
    stream = dev.create_raw_stream()
    try:
        with tvm_ffi.use_raw_stream(dev, stream):
            while not stop.is_set():
                for _ in range(20):
                    vm["main"](arg)
                dev.sync()
    finally:
        dev.free_raw_stream(stream)
