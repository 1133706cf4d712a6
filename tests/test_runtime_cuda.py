"""The runtime on a real CUDA GPU (marked ``cuda``; skipped where there is none).

Run on the GPU machine:  PYTHONPATH=. python3 -m pytest tests/test_runtime_cuda.py -q -m cuda
"""

from __future__ import annotations

import numpy as np
import pytest

from hetpart.compiler.artifact import TensorSpec
from hetpart.errors import RuntimeFailure

pytestmark = pytest.mark.cuda  # tests/conftest.py skips these with "no CUDA GPU" where there is none

SHAPE = (256, 1024)  # 1 MiB per cut


def _chain(devices, **kw):
    from hetpart.runtime.synthetic import chain

    return chain(devices, SHAPE, simulate=False, **kw)


def _feeds(seed=0):
    from hetpart.runtime.memory import aligned_array

    x = aligned_array(TensorSpec("x", SHAPE, "float32"))
    x[...] = np.random.default_rng(seed).standard_normal(SHAPE)
    return {"x": x}


@pytest.mark.parametrize("handoff", ["copy", "mapped"])
def test_chain_on_gpu_matches_reference(handoff):
    from hetpart.runtime import Session
    from hetpart.runtime.synthetic import chain_reference

    with Session(_chain(["cpu", "cuda", "cpu", "cuda"], work=2), handoff=handoff) as s:
        for seed in range(3):
            out = s.run(_feeds(seed))
            np.testing.assert_allclose(out["t3"], chain_reference(_feeds(seed)["x"], 4, 2), rtol=1e-4, atol=1e-4)


def test_pointer_identity_and_copy_counts_on_gpu():
    from hetpart.runtime import Session

    with Session(_chain(["cpu", "cuda", "cpu"]), handoff="copy", slots=1) as s:
        assert s._stream.handle != 0  # the session's own stream, not the default one
        seen = {}
        stage = s._stages[0]
        original = stage.runner.call

        def spy(inputs, outputs, stats, *a):
            seen["ptr"] = int(outputs[0].tensor.data_ptr())
            return original(inputs, outputs, stats, *a)

        stage.runner.call = spy
        s.run(_feeds())
        pinned = s._slots[0].buffers[("t0", "cpu")]
        assert pinned.pinned and seen["ptr"] == pinned.ptr
        st = s.last_run_stats
        assert (st.h2d, st.d2h, st.staging, st.feed_copies, st.output_copies) == (1, 1, 0, 0, 0)
        assert st.edge_for("t0").copies == 1 and st.edge_for("t0").staging_copies == 0


def test_pipelined_and_concurrent_callers_on_gpu():
    import threading

    from hetpart.runtime import Session
    from hetpart.runtime.synthetic import chain_reference

    with Session(_chain(["cpu", "cuda", "cpu"], work=2)) as s:
        batches = [_feeds(i) for i in range(8)]
        for f, o in zip(batches, s.run_pipelined(batches)):
            np.testing.assert_allclose(o["t2"], chain_reference(f["x"], 3, 2), rtol=1e-4, atol=1e-4)
        errors = []

        def caller(i):
            try:
                f = _feeds(50 + i)
                np.testing.assert_allclose(s.run(f)["t2"], chain_reference(f["x"], 3, 2), rtol=1e-4, atol=1e-4)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors


def test_gpu_out_of_memory_is_a_clear_error():
    from hetpart.runtime.memory import CudaMemory

    memory = CudaMemory()
    with pytest.raises(RuntimeFailure, match="ran out of memory"):
        memory.device(TensorSpec("huge", (1 << 20, 1 << 18), "float32"))  # 1 TiB
    memory.close()


def test_device_tensor_feed_is_used_without_copy():
    import tvm

    from hetpart.runtime import Session
    from hetpart.runtime.synthetic import chain_reference

    x = _feeds()["x"]
    with Session(_chain(["cuda", "cpu"]), handoff="copy") as s:
        out = s.run({"x": tvm.runtime.tensor(x, tvm.cuda(0))})
        assert (s.last_run_stats.feed_copies, s.last_run_stats.h2d) == (0, 0)
    np.testing.assert_allclose(out["t1"], chain_reference(x, 2), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "resnet18", "bert", "dlrm", "detector", "resnet50"])
def test_zoo_model_matches_onnxruntime(name):
    ort = pytest.importorskip("onnxruntime")
    from hetpart import compiler, importer, models, partitioner
    from hetpart.runtime import Session, random_feeds

    model = models.build(name, small=True)
    graph = importer.load(f"zoo:{name}:small")
    plan = partitioner.partition(graph)
    compiled = compiler.compile(plan, graph)
    feeds = random_feeds(compiled.inputs, seed=1)
    onnx_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {o: feeds[t.name] for o, t in zip(onnx_inputs, compiled.inputs)})
    with Session(compiled) as s:
        out = s.run(feeds)
    assert list(out) == [o.name for o in model.graph.output]  # the model's output names
    for want, key in zip(ref, out):
        np.testing.assert_allclose(out[key], want, rtol=1e-3, atol=1e-3, err_msg=f"{name}: {key}")


def test_session_overheads_on_gpu_and_blocking_waits_give_the_same_results():
    from hetpart.runtime import Session
    from hetpart.runtime.overhead import session_overheads
    from hetpart.runtime.synthetic import chain, chain_reference

    per = session_overheads(simulate=False, repeats=30)
    assert set(per) == {"cpu", "cuda"} and all(0.0 <= s < 0.1 for s in per.values()) and sum(per.values()) > 0
    x = np.random.default_rng(3).standard_normal((64, 64)).astype("float32")
    with Session(chain(["cpu", "cuda", "cpu"], simulate=False), spin_wait=False) as s:
        for _ in range(3):
            np.testing.assert_allclose(s.run({"x": x})["t2"], chain_reference(x, 3), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_graphs_captured_by_a_caller_thread_that_exits_still_replay():
    """A server's lane threads call, then exit; a later server's threads replay the
    same session's CUDA graphs (the serving bench's illegal address, 2026-12-03)."""
    import threading

    from hetpart import compiler, importer, models
    from hetpart.backend import forced_plan
    from hetpart.bench.peers import ort_session
    from hetpart.runtime import Session

    model = models.build("resnet50")
    graph = importer.load(model)
    compiled = compiler.compile(forced_plan(graph, "cuda"), graph, progress=False)
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {model.graph.input[0].name: x}
    got: dict = {}
    with Session(compiled) as s:
        for _ in range(2):  # each run on a thread that is gone before the next starts
            t = threading.Thread(target=lambda: got.update(s.run(feeds)))
            t.start()
            t.join()
    want = ort_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=2e-2, atol=2e-2)
