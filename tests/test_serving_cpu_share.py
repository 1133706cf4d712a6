"""A Server over the small zoo detector split as on the H200 (NMS on the CPU, the rest
on the -- simulated -- GPU), several instances, requests from many threads, under each
CPU-sharing policy (hetpart.runtime.cpu_share): every answer is ONNX Runtime's for its
own image, none lost or crossed, the CPU partitions went through the policy's lanes
(never more at once than it has), and the server closes with every future answered."""

from __future__ import annotations

import os
import threading

import networkx as nx
import numpy as np
import onnxruntime as ort
import pytest

import hetpart
from hetpart import models
from hetpart.runtime import cpu_share
from hetpart.serving import Server

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@pytest.fixture(scope="module")
def detector(zoo_graph, zoo_onnx, plan_for):
    graph = zoo_graph("detector")
    (nms,) = [k for k in graph.kernels.values() if any("non_max_suppression" in op for op in k.ops)]
    on_cpu = {nms.id} | nx.descendants(graph.nx, nms.id)
    assignment = {k: "cpu" if k in on_cpu else "cuda" for k in graph.topological_order()}
    compiled = hetpart.compile(plan_for(graph, assignment), graph, simulate=True, progress=False)
    assert any(p.device == "cpu" for p in compiled.partitions)
    return compiled, zoo_onnx("detector")


@pytest.mark.parametrize("policy", ["gate", "split:2", "none"])
def test_server_with_instances_answers_each_request_as_onnx_runtime(detector, policy):
    if policy.startswith("split") and len(CPUS) < 2:
        pytest.skip("needs two CPUs")
    compiled, onnx_model = detector
    reference = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in onnx_model.graph.output]
    images = [models.example_inputs(onnx_model, seed=k) for k in range(6)]
    want = [dict(zip(names, reference.run(None, f))) for f in images]
    share = cpu_share.share_for(cpu_share.parse(policy))
    calls = share.calls if share else 0
    futures: list[tuple[int, object]] = []
    lock = threading.Lock()
    with hetpart.Session(compiled, cpu_sharing=policy) as session:
        assert session.cpu_sharing.name == policy
        with Server(max_delay=0.0) as server:
            server.add_model("detector", session, instances=3)

            def client(t):
                for k in range(t, 36, 6):
                    f = server.submit("detector", images[k % len(images)])
                    with lock:
                        futures.append((k % len(images), f))

            threads = [threading.Thread(target=client, args=(t,)) for t in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not any(t.is_alive() for t in threads)
            results = [(i, f.result(120)) for i, f in futures]
        assert all(f.done() for _, f in futures)  # closed: nothing left pending
    assert len(results) == 36
    for i, got in results:
        assert list(got) == names
        for name in names:
            w, g = want[i][name], got[name]
            assert g.shape == w.shape, (name, g.shape, w.shape)
            if np.issubdtype(w.dtype, np.integer):
                np.testing.assert_array_equal(g, w, err_msg=name)
            else:
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
    if share is not None:  # every run's CPU partitions went through the lanes, never more at once than lanes
        assert share.calls >= calls + 36 and share.max_busy <= len(share.lanes)
