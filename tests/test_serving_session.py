"""The server in front of a real hetpart Session: zoo:mlp:small compiled for the CPU at
batch 4, fed one row per request from several threads.  Every answer is checked
against onnxruntime running the same model (same seeded weights) at batch 1 on that
request's row alone.  The same on the GPU (cuda-marked)."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest

import hetpart
from hetpart import models
from hetpart.backend import forced_plan
from hetpart.serving import Server, SessionRunner


@pytest.fixture(scope="module")
def mlp_b4():
    graph = hetpart.load("zoo:mlp:small:batch=4")
    return hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)


def test_session_runner_pads_to_the_compiled_batch_and_cuts_back(mlp_b4):
    with hetpart.Session(mlp_b4) as session:
        runner = SessionRunner(session)
        assert runner.max_batch == 4
        x = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
        three = runner.run({"input": x})["logits"]
        full = session.run({"input": np.concatenate([x, x[:1]])})["logits"]
    assert three.shape == (3, 4)
    np.testing.assert_array_equal(three, full[:3])


def test_server_over_a_session_answers_each_request_with_its_own_row(mlp_b4):
    serve_threaded_and_check(mlp_b4)


@pytest.mark.cuda
def test_server_over_a_gpu_session_answers_each_request_with_its_own_row():
    graph = hetpart.load("zoo:mlp:small:batch=4")
    # TF32 tensor cores (hetpart's default on the GPU) round inputs to 10-bit mantissas
    serve_threaded_and_check(hetpart.compile(forced_plan(graph, "cuda"), graph, progress=False), tol=5e-3)


def serve_threaded_and_check(compiled, tol=1e-5):
    reference = ort.InferenceSession(models.build("mlp", small=True, batch=1).SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    rows = [rng.standard_normal((1, 32)).astype(np.float32) for _ in range(100)]
    expected = [reference.run(None, {"input": r})[0] for r in rows]
    answers: dict[int, np.ndarray] = {}
    with hetpart.Session(compiled) as session, Server({"mlp": session}, max_delay=0.001) as server:
        with pytest.raises(hetpart.BadRequestError, match="'input'"):
            server.submit("mlp", {"input": np.zeros((1, 31), np.float32)})

        def client(t):
            futures = {i: server.submit("mlp", {"input": rows[i]}) for i in range(t, len(rows), 4)}
            for i, fut in futures.items():
                answers[i] = fut.result(timeout=60)["logits"]
        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        stats = server.stats()["mlp"]
    assert sorted(answers) == list(range(len(rows)))
    for i, want in enumerate(expected):
        np.testing.assert_allclose(answers[i], want, rtol=tol, atol=tol, err_msg=f"request {i}")
    assert stats["completed"] == len(rows) and max(stats["batch_rows"]) <= 4
