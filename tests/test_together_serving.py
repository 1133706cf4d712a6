"""Two zoo models sharing one GPU from a joint plan: planned together under one cap,
compiled, opened by MultiSession (a quota arena and a stream each) and served by
Server; every answer against onnxruntime on the same seeded model.  In simulation
here (the CUDA partitions run on the CPU); on a real GPU in the cuda-marked test.

The costs are a roofline machine with a slow CPU (no profile needed), so both
models want the GPU and the cap makes them share it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import hetpart
from hetpart import models
from hetpart.partitioner.random_cases import Machine, roofline_costs
from hetpart.runtime.feeds import random_feeds
from hetpart.serving import Server

SLOW_CPU = Machine(cpu_flops=1e8, cpu_bytes_per_s=1e8, cpu_launch_s=1e-5)
ZOO = ("mlp", "dlrm")


def reference(name: str, feeds: dict) -> dict:
    onnx_model = models.build(name, small=True)
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in onnx_model.graph.output], session.run(None, feeds)))


def joint_plan(zoo_graph):
    graphs = {name: zoo_graph(name) for name in ZOO}
    costs = {name: roofline_costs(g, SLOW_CPU) for name, g in graphs.items()}
    alone = {n: hetpart.partition(g, cost_model=costs[n], gpu_memory=1 << 30, progress=False) for n, g in graphs.items()}
    need = {n: p.predicted["gpu_memory_bytes"] for n, p in alone.items()}
    cap = need["mlp"] + need["dlrm"] // 3  # not both whole: dlrm is split
    joint = hetpart.partition_together(graphs, gpu_memory=cap, cost_model=costs, priorities={"mlp": 1})
    return joint, graphs, cap


def check_outputs(got: dict, want: dict, tol: float):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=k)


@pytest.fixture(scope="module")
def joint(zoo_graph):
    return joint_plan(zoo_graph)


@pytest.fixture(scope="module")
def compiled(joint):
    return hetpart.compile_together(joint[0], simulate=True)


def test_the_joint_plan_shares_the_gpu_under_the_cap(joint):
    plan, graphs, cap = joint
    assert sum(plan.quotas.values()) <= cap
    devices = {m.name: {p.device for p in m.plan.partitions} for m in plan.models}
    assert all("cuda" in d for d in devices.values())  # both use the GPU ...
    assert any(d == {"cpu", "cuda"} for d in devices.values())  # ... and the cap splits one at least
    for m in plan.models:
        assert m.memory_bytes <= m.quota_bytes


def test_multisession_runs_a_joint_model_with_outputs_equal_to_onnxruntime(compiled):
    with hetpart.MultiSession(compiled, handoff="copy") as multi:
        assert multi.names == list(ZOO)
        feeds = [random_feeds(multi.session(n).compiled.inputs, seed=i) for i, n in enumerate(ZOO)]
        outs = multi.run(feeds)
        for name, s in zip(ZOO, multi.sessions):
            share = next(m for m in compiled.models if m.name == name)
            assert s.quota == share.quota_bytes and s.pool is not None
            assert s.pool.in_use <= s.pool.arena.capacity
        assert multi.session("mlp").stream_priority == 1 and multi.session("dlrm").stream_priority == 0
    for name, f, out in zip(ZOO, feeds, outs):
        check_outputs(out, reference(name, f), 1e-5)


def test_the_server_serves_a_joint_model_at_its_priorities(compiled):
    with hetpart.MultiSession(compiled) as multi, Server(multi, max_delay=0.001) as server:
        assert server.models == list(ZOO)
        assert server._lanes["mlp"].priority == 1  # noqa: SLF001 - the priority the joint plan gave
        feeds = {n: random_feeds(multi.session(n).compiled.inputs, seed=7) for n in ZOO}
        futures = {n: server.submit(n, feeds[n]) for n in ZOO}
        for n in ZOO:
            check_outputs(futures[n].result(timeout=60), reference(n, feeds[n]), 1e-5)


def test_a_joint_model_saved_and_loaded_compiles_to_the_same_quotas(joint, tmp_path):
    plan, graphs, _ = joint
    again = hetpart.JointPlan.load(plan.save(tmp_path / "joint.json"), graphs)
    assert again.quotas == plan.quotas


@pytest.mark.cuda
def test_two_zoo_models_with_quotas_on_a_real_gpu(zoo_graph):
    """On the GPU: each session's arena is real device memory holding its buffers, its
    stream has the CUDA priority of its model, and the answers match onnxruntime
    (TF32 tolerance), run together and served."""
    from hetpart.runtime import cuda_api

    plan, _, _ = joint_plan(zoo_graph)
    built = hetpart.compile_together(plan)
    least, greatest = cuda_api.stream_priority_range()
    with hetpart.MultiSession(built, handoff="copy") as multi, Server(multi, max_delay=0.001) as server:
        feeds = [random_feeds(multi.session(n).compiled.inputs, seed=i) for i, n in enumerate(ZOO)]
        for _ in range(3):
            outs = multi.run(feeds)
        for name, f, out in zip(ZOO, feeds, outs):
            check_outputs(out, reference(name, f), 5e-3)
            served = server.infer(name, f, timeout=60)
            check_outputs(served, reference(name, f), 5e-3)
        for name, s in zip(ZOO, multi.sessions):
            assert s.real_gpu and s.pool is not None and not s.pool.simulated
            assert s.pool.in_use > 0  # handoff="copy": the split model's device buffers are in its arena
        assert multi.session("mlp").stream_priority == max(greatest, least - 1)
        assert multi.session("dlrm").stream_priority == least
