"""``hetpart.importer.expert_matmul``: ``MatMul(x, Gather(W, ids, axis=0))`` as one kernel that reads
the chosen experts' weights in place (issue 19, zoo moe; switch ``FUSE_EXPERT_GATHER``, off by default).

With the switch on: zoo:moe:small all-CPU equals ONNX Runtime and onnx.reference, and its six expert
gathers are no kernels of their own (six kernels fewer; the embedding lookup stays a take); a unit graph
of ids fed as an input (the last expert, repeated ids, negative ids down to -E; x with negatives and
zeros, a broadcast token dim and several rows) equals both; everything builds for CUDA sm_90 (no GPU
needed).  Off: the import is unchanged.  bench/results/cpu-moe-gather-2core.md has the timings.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from onnx import helper

from onnx_cases import model, onnxruntime_outputs, reference, run_on

from hetpart import importer, models
from hetpart.importer import expert_matmul as em

E, K, N = 5, 24, 40


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setattr(em, "FUSE_EXPERT_GATHER", True)


def _expert_matmul(ids_shape, x_shape):
    """``y = MatMul(x, Gather(W [E, K, N], ids, axis=0))``, ids an int64 input."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((E, K, N)).astype(np.float32)
    w.flat[::11] = 0.0
    out = list(np.broadcast_shapes(tuple(x_shape[:-2]), tuple(ids_shape))) + [x_shape[-2], N]
    nodes = [helper.make_node("Gather", ["w", "ids"], ["g"], axis=0), helper.make_node("MatMul", ["x", "g"], ["y"])]
    return model(nodes, [("x", x_shape, np.float32), ("ids", ids_shape, np.int64)], [("y", out, np.float32)],
                 {"w": w})


def _x(shape, seed: int = 4) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x.flat[::5] = 0.0  # zeros, and negatives from the normal draw
    return x


def _ops(m) -> list[tuple[str, ...]]:
    return [k.ops for k in importer.load(m).kernels.values()]


@lru_cache(maxsize=None)
def _small_moe():
    """``(zoo:moe:small, its import with the switch on)``, imported once for the tests that read,
    run or build it (the switch is read at import only: the graph holds its effect)."""
    old = em.FUSE_EXPERT_GATHER
    em.FUSE_EXPERT_GATHER = True
    try:
        m = models.build("moe", small=True)
        return m, importer.load(m)
    finally:
        em.FUSE_EXPERT_GATHER = old


IDS = {"last and repeated": np.array([[E - 1, E - 1], [0, 2], [E - 1, 0]], np.int64),
       "negative": np.array([[-1, -E], [-2, 3], [0, -3]], np.int64)}


@pytest.mark.parametrize("x_shape", [(3, 1, 1, K), (1, 1, 1, K), (3, 1, 4, K)], ids=["tokens", "broadcast", "rows"])
@pytest.mark.parametrize("name", list(IDS))
def test_unit_graph_matches_onnxruntime_and_reference(on, name, x_shape):
    ids = IDS[name]
    m = _expert_matmul(ids.shape, x_shape)
    graph = importer.load(m)  # imported once: its kernels read here, compiled by run_on
    ops = [k.ops for k in graph.kernels.values()]  # and the frontend's where(ids < 0, ids + E, ids), a kernel either way
    assert ops.count((em.OP,)) == 1 and not any("take" in o or "matmul" in o for o in ops if o != (em.OP,))
    feeds = {"x": _x(x_shape), "ids": ids}
    got = run_on(graph, "cpu", feeds)["y"]
    for want in (onnxruntime_outputs(m, feeds)[0], reference(m, feeds)["y"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_small_moe_matches_onnxruntime_and_reference(on):
    m, graph = _small_moe()
    assert any(em.OP in k.ops for k in graph.kernels.values())
    feeds = models.example_inputs(m, seed=0)
    got = run_on(graph, "cpu", feeds)["logits"]
    np.testing.assert_allclose(got, onnxruntime_outputs(m, feeds)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, reference(m, feeds)["logits"], rtol=1e-4, atol=1e-5)


def test_small_moe_has_no_expert_take_kernel_and_six_kernels_fewer(on, monkeypatch):
    m, after = _small_moe()
    monkeypatch.setattr(em, "FUSE_EXPERT_GATHER", False)
    before = importer.load(m)
    table = 8 * 32 * 48 * 4  # one stacked expert weight of the small config
    assert sum(k.ops == ("take",) and k.param_bytes == table for k in before.nodes) == 6
    assert not any("take" in k.ops for k in after.nodes if k.param_bytes == table)
    assert sum(k.ops == ("take",) for k in after.nodes) == 1  # the embedding lookup stays a take
    assert len(after.kernels) == len(before.kernels) - 6
    fused = [k for k in after.nodes if em.OP in k.ops]
    assert len(fused) == 6 and all(k.param_bytes == table for k in fused)  # the whole table, as the take's
    assert sum(k.ops[1:] == ("tir_sigmoid", "multiply", "multiply") for k in fused) == 2  # SwiGLU fused in
    assert sum(k.param_bytes for k in after.nodes) == sum(k.param_bytes for k in before.nodes)


def test_off_leaves_the_import_unchanged(monkeypatch):
    monkeypatch.setattr(em, "FUSE_EXPERT_GATHER", False)
    m = _expert_matmul((3, 2), (3, 1, 1, K))
    assert _ops(m)[1:] == [("take",), ("matmul",)]
    from hetpart.importer.index_guard import guard_indices
    from hetpart.importer.onnx_source import read_model
    from hetpart.importer.relax_import import to_relax

    mod = guard_indices(to_relax(read_model(m, None)))[0]
    assert em.fuse_expert_gather(mod) is mod


def test_a_table_that_is_no_constant_is_left_alone(on):
    nodes = [helper.make_node("Gather", ["w", "ids"], ["g"], axis=0), helper.make_node("MatMul", ["x", "g"], ["y"])]
    m = model(nodes, [("x", (2, 1, 1, K), np.float32), ("w", (E, K, N), np.float32), ("ids", (2, 2), np.int64)],
              [("y", (2, 2, 1, N), np.float32)])
    assert _ops(m)[1:] == [("take",), ("matmul",)]


def test_small_moe_builds_for_cuda_sm90(on):
    from hetpart import kernels
    from hetpart.targets import cuda_tvm_target

    graph = _small_moe()[1]
    assert sum(em.OP in k.ops for k in graph.nodes) == 6
    assert kernels.build(graph.module, cuda_tvm_target("sm_90")) is not None

