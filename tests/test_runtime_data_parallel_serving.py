"""A DataParallelSession as a serving Runner (issue 20): 1..B rows per run, each side
padded to its share and cut back, checked against ONNX Runtime on the real rows only;
behind a Server, a many-thread hammer where every answer is its own request's rows
(ONNX Runtime's answer for exactly them) and no request is lost.

GPU sides run in simulation; costs are stubs (tests/data_parallel_cases.py), so
the split is decided by the test, not this machine's profile.  No test asserts a duration.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hetpart
from hetpart.data_parallel import plan_data_parallel
from hetpart.runtime.data_parallel_session import DataParallelSession
from hetpart.serving import Server
from data_parallel_cases import EVEN, TOL, compile_split, feeds, split_model

B = 8


def served_model() -> onnx.ModelProto:
    """Every input and output batched on axis 0: ``x [batch, 8]``, a per-row gate
    ``m [batch, 4]``; ``y = relu(x W + b) * m [batch, 4]``, ``s = sum(y, axis=1) [batch]``."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Mul", ["r", "m"], ["y"]),
             helper.make_node("ReduceSum", ["y", "axes"], ["s"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "dp_served",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def request(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((rows, 8)).astype(np.float32),
            "m": rng.standard_normal((rows, 4)).astype(np.float32)}


class Reference:
    """ONNX Runtime on a model with a symbolic batch: the outputs of exactly the rows fed."""

    def __init__(self, model):
        pytest.importorskip("onnxruntime")
        from hetpart.bench.peers import ort_session

        self.session = ort_session(model)
        self.names = [o.name for o in self.session.get_outputs()]
        self.lock = threading.Lock()

    def __call__(self, feed):
        with self.lock:
            return dict(zip(self.names, self.session.run(None, feed)))


@pytest.fixture(scope="module")
def split_build():
    """The split model's build (:func:`data_parallel_cases.compile_split`, as test_runtime_data_parallel's)."""
    return compile_split()


@pytest.fixture(scope="module")
def served_build():
    dp = plan_data_parallel(served_model(), B, cost_model=EVEN)
    assert dp.split and dp.b_gpu + dp.b_cpu == B
    return hetpart.compile_data_parallel(dp, simulate=True)


# --- 1..B rows ---------------------------------------------------------------------------
def test_every_row_count_equals_onnxruntime_on_the_real_rows(split_build):
    """1..16 rows of the model whose shared input has no batch axis and whose ``yt`` has
    its batch on axis 1: the outputs hold exactly the rows fed, as ONNX Runtime gives them."""
    reference = Reference(split_model())
    with DataParallelSession(split_build) as s:
        assert s.max_batch == 16
        for n in range(1, 17):
            feed = dict(feeds(16, seed=n), x=feeds(16, seed=n)["x"][:n])
            got, want = s.run(feed), reference(feed)
            assert got["y"].shape == (n, 4) and got["yt"].shape == (4, n)
            for name in ("y", "yt"):
                np.testing.assert_allclose(got[name], want[name], **TOL)
            assert set(s.last_side_seconds) == {d for d, k in zip(("cuda", "cpu"), s.rows_per_side(n)) if k}


def test_rows_go_to_one_side_where_they_fit_the_predicted_faster_first(split_build):
    with DataParallelSession(split_build) as s:
        (_, g), (_, c) = s.split
        assert s.rows_per_side(16) == [g, c]
        assert sum(s.rows_per_side(max(g, c) + 1)) == max(g, c) + 1 and 0 not in s.rows_per_side(max(g, c) + 1)
        predicted = s.model.plan.predicted
        saved = dict(predicted)
        try:
            predicted.update(gpu_s=2.0, cpu_s=1.0)
            assert s.rows_per_side(min(g, c)) == [0, min(g, c)]  # the CPU side predicted faster
            predicted.update(gpu_s=1.0, cpu_s=2.0)
            assert s.rows_per_side(1) == [1, 0]
            feed = dict(feeds(16, 9), x=feeds(16, 9)["x"][:1])
            s.run(feed)
            assert set(s.last_side_seconds) == {"cuda"}  # the CPU side did not run
        finally:
            predicted.clear()
            predicted.update(saved)


def test_too_many_or_disagreeing_rows_are_refused(served_build, split_build):
    with DataParallelSession(split_build) as s:
        with pytest.raises(hetpart.RuntimeFailure, match="1..16 rows"):
            s.run(feeds(17))
        with pytest.raises(hetpart.RuntimeFailure, match="1..16 rows"):
            s.run(dict(feeds(16), x=feeds(16)["x"][:0]))
    with DataParallelSession(served_build) as s:
        with pytest.raises(hetpart.RuntimeFailure, match="different numbers of rows"):
            s.run(dict(request(3, 0), m=request(2, 0)["m"]))
        with pytest.raises(hetpart.RuntimeFailure, match="'m' is missing"):
            s.run({"x": request(3, 0)["x"]})


def test_submit_overlaps_runs_and_each_future_is_onnxruntimes_for_its_rows(split_build):
    reference = Reference(split_model())
    counts = (16, 5, 1, 12, 9, 16)
    with DataParallelSession(split_build) as s:
        sent = []
        for i, n in enumerate(counts):
            feed = dict(feeds(16, seed=50 + i), x=feeds(16, seed=50 + i)["x"][:n])
            sent.append((s.submit(feed), feed))
        for future, feed in sent:
            got, want = future.result(timeout=120), reference(feed)
            for name in ("y", "yt"):
                np.testing.assert_allclose(got[name], want[name], **TOL)
        with pytest.raises(hetpart.RuntimeFailure, match="1..16 rows"):
            s.submit(feeds(17))
    with pytest.raises(hetpart.RuntimeFailure, match="closed"):
        s.submit(feeds(16))


# --- behind a Server -----------------------------------------------------------------------
def test_a_model_without_its_batch_on_axis_0_is_refused_by_the_server(split_build):
    with DataParallelSession(split_build) as s:
        with pytest.raises(hetpart.ServingError, match="input 'scale' has no batch axis.*'yt' has its batch on axis 1"):
            Server({"m": s})


def test_the_server_checks_requests_against_the_models_inputs(served_build):
    with DataParallelSession(served_build) as s, Server({"m": s}) as server:
        assert server.max_batch("m") == B
        assert [(r.name, r.shape) for r in server.inputs("m")] == [("x", (8,)), ("m", (4,))]
        with pytest.raises(hetpart.BadRequestError, match="x"):
            server.submit("m", {"x": np.zeros((1, 7), np.float32), "m": np.zeros((1, 4), np.float32)})
        with pytest.raises(hetpart.BadRequestError):
            server.submit("m", request(B + 1, 0))


def test_hammer_every_answer_is_onnxruntimes_for_its_own_rows(served_build):
    """8 threads x 30 requests of 1-3 rows, distinct payloads, into one data-parallel
    model: every future is answered, with exactly ONNX Runtime's outputs for its rows;
    batches never exceed B; every request counted once."""
    reference = Reference(served_model())
    threads, per_thread = 8, 30
    failures: list[str] = []
    with DataParallelSession(served_build) as s, Server({"m": s}, max_delay=0.001) as server:
        def client(t):
            rng = random.Random(t)
            sent = []
            for i in range(per_thread):
                feed = request(rng.randint(1, 3), seed=1000 * t + i)
                sent.append((server.submit("m", feed), feed))
            for future, feed in sent:
                got, want = future.result(timeout=120), reference(feed)
                for name in ("y", "s"):
                    if got[name].shape != want[name].shape or not np.allclose(got[name], want[name], **TOL):
                        failures.append(f"thread {t}: output {name} {got[name].shape} is not its request's rows")
        pool = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        stats = server.stats()["m"]
    assert not failures, failures[:5]
    assert stats["submitted"] == stats["completed"] == threads * per_thread
    assert stats["failed"] == 0 and max(stats["batch_rows"]) <= B
