"""``hetpart.kernels.rules.gpu_gathered_gemv``: the CUDA schedule of a matmul by gathered expert
weights read in place (:mod:`hetpart.importer.expert_matmul`, switch on here).

Without a GPU: one token of a MoE MLP at zoo moe's widths (top-2 of 8 experts, hidden 1024,
experts of 2816) -- up, gate with SwiGLU, down -- each get the rule and build for sm_90: one block
of COLUMNS x SPLIT threads per (choice, COLUMNS columns), each thread a partial sum over its part
of K, the parts summed across threads, the SwiGLU once per column.  Before the rule dlight's
``Fallback`` ran the down projection on 2 blocks (a serial K of 2816 a thread).  A dense matmul
is never the rule's.  With a GPU (``cuda`` mark): the small MoE MLP all-CUDA against numpy, ids
with the last expert, a repeat and a negative id.

    PYTHONPATH=. python3 -m pytest tests/test_kernels_gpu_gathered_gemv.py -q -m cuda
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_cases import block_nests, model, run_on

from hetpart import importer, kernels, models
from hetpart.importer import expert_matmul as em
from hetpart.kernels.rules import gpu_gathered_gemv as rule
from hetpart.targets import cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")
E, H, F = 4, 64, 256


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setattr(em, "FUSE_EXPERT_GATHER", True)


def _full_width_layer():
    return models.build("moe", small=True, hidden=1024, intermediate=2816, heads=16, kv_heads=4, seq_len=1,
                        layers=1, vocab=64)


def _threads(func) -> dict:
    """Thread tag -> extent of the scheduled ``func``'s bound loops (the largest seen)."""
    out: dict = {}
    for _, loops in block_nests(func):
        for lp in loops:
            if lp.thread_binding is not None:
                tag = str(lp.thread_binding.thread_tag)
                out[tag] = max(out.get(tag, 0), int(lp.extent))
    return out


def test_the_fused_kernels_get_the_rule_and_build_for_sm90(on):
    graph = importer.load(_full_width_layer())
    mod = kernels.schedule(graph.module, SM90)
    fused = {name: f for name, f in ((gv.name_hint, f) for gv, f in mod.functions_items()) if em.OP in name}
    assert len(fused) == 3
    blocks = {}
    for name, func in fused.items():
        assert str(func.attrs[kernels.RULE_ATTR]) == "GpuGatheredGemv"
        t = _threads(func)
        assert t["threadIdx.x"] == rule.COLUMNS and t["threadIdx.y"] == rule.SPLIT
        blocks[int(func.params[-1].shape[-1])] = t["blockIdx.x"]
    assert blocks == {2816: 2 * 2816 // rule.COLUMNS, 1024: 2 * 1024 // rule.COLUMNS}  # up/gate, down
    assert kernels.build(graph.module, SM90) is not None


def test_a_dense_matmul_is_not_the_rules(on):
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (1, H), np.float32)],
              [("y", (1, F), np.float32)], {"w": np.ones((H, F), np.float32)})
    mod = kernels.schedule(importer.load(m).module, SM90)
    assert "GpuGatheredGemv" not in set(kernels.rules_applied(mod).values())


def _moe_mlp(tokens: int):
    rng = np.random.default_rng(5)
    w = {n: (rng.standard_normal(s) * 0.1).astype(np.float32) for n, s in
         (("gate", (E, H, F)), ("up", (E, H, F)), ("down", (E, F, H)))}
    g = [helper.make_node("Gather", [n, "ids"], [f"{n}_w"], axis=0) for n in w]
    nodes = g + [helper.make_node("MatMul", ["x", "gate_w"], ["g"]), helper.make_node("MatMul", ["x", "up_w"], ["u"]),
                 helper.make_node("Sigmoid", ["g"], ["s"]), helper.make_node("Mul", ["g", "s"], ["silu"]),
                 helper.make_node("Mul", ["silu", "u"], ["h"]), helper.make_node("MatMul", ["h", "down_w"], ["y"])]
    m = model(nodes, [("x", (tokens, 1, 1, H), np.float32), ("ids", (tokens, 2), np.int64)],
              [("y", (tokens, 2, 1, H), np.float32)], w)
    return m, w


@pytest.mark.cuda
def test_on_the_gpu_equals_numpy(on):
    m, w = _moe_mlp(3)
    x = np.random.default_rng(6).standard_normal((3, 1, 1, H)).astype(np.float32)
    x.flat[::5] = 0.0
    ids = np.array([[E - 1, 0], [1, 1], [-1, 2]], np.int64)
    got = run_on(m, "cuda", {"x": x, "ids": ids}, simulate=False)["y"]
    c = {n: v[ids % E] for n, v in w.items()}
    g, u = x @ c["gate"], x @ c["up"]
    np.testing.assert_allclose(got, ((g / (1 + np.exp(-g))) * u) @ c["down"], rtol=1e-4, atol=1e-5)
