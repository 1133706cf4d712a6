"""``hetpart.kernels.rules.cpu_gathered_matmul``: the CPU schedule of a matmul by gathered expert
weights read in place (:mod:`hetpart.importer.expert_matmul`, switch on here).

One token of a MoE MLP (top-2 of 4 experts, K = 64, N = 256 and back): each fused kernel -- the
up and down projections and the gate with SwiGLU fused in -- is scheduled by the rule (not the conv
rule, which took it before the rule existed), its columns vectorised, the chosen rows read ROWS at a
time, and (token, choice, column part) one parallel loop that fills a 16-core target's cores; built
for 16 cores and for this host, it equals numpy on ids with the last expert, a repeat and a negative
id (rows with zeros and negatives).  A dense matmul is never the rule's.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from tvm.tirx import ForKind

from onnx_cases import block_nests, model, run_vm

from hetpart import importer, kernels
from hetpart.importer import expert_matmul as em
from hetpart.kernels.rules import cpu_gathered_matmul as rule
from hetpart.targets import cpu_tvm_target

E, H, F = 4, 64, 256


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setattr(em, "FUSE_EXPERT_GATHER", True)


def _weights(seed: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    w = {n: rng.standard_normal(s).astype(np.float32) * 0.1 for n, s in
         (("gate", (E, H, F)), ("up", (E, H, F)), ("down", (E, F, H)))}
    for v in w.values():
        v.flat[::9] = 0.0
    return w


def _moe_mlp(tokens: int, k: int):
    """``down(silu(x gate) * (x up))`` of the experts ``ids`` [tokens, k] chose, x [tokens, 1, 1, H]."""
    g = [helper.make_node("Gather", [n, "ids"], [f"{n}_w"], axis=0) for n in ("gate", "up", "down")]
    nodes = g + [helper.make_node("MatMul", ["x", "gate_w"], ["g"]), helper.make_node("MatMul", ["x", "up_w"], ["u"]),
                 helper.make_node("Sigmoid", ["g"], ["s"]), helper.make_node("Mul", ["g", "s"], ["silu"]),
                 helper.make_node("Mul", ["silu", "u"], ["h"]), helper.make_node("MatMul", ["h", "down_w"], ["y"])]
    return model(nodes, [("x", (tokens, 1, 1, H), np.float32), ("ids", (tokens, k), np.int64)],
                 [("y", (tokens, k, 1, H), np.float32)], _weights())


def _numpy(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    w = {n: v[ids % E] for n, v in _weights().items()}  # [T, k, in, out]
    g, u = x @ w["gate"], x @ w["up"]
    return ((g / (1 + np.exp(-g))) * u) @ w["down"]


def _scheduled(target) -> list:
    mod = kernels.schedule(importer.load(_moe_mlp(1, 2)).module, target)
    return [f for gv, f in mod.functions_items() if em.OP in gv.name_hint]


def test_every_fused_kernel_is_the_rules_vectorised_row_streamed_and_parallel(on):
    funcs = _scheduled(cpu_tvm_target(16))
    assert len(funcs) == 3  # up, gate + SwiGLU, down
    for func in funcs:
        assert str(func.attrs[kernels.RULE_ATTR]) == "CpuGatheredMatmul"
        (update, loops), = [(r, lp) for r, lp in block_nests(func) if r.block.name_hint.endswith("_update")]
        kinds = [lp.kind for lp in loops]
        assert kinds[-1] == ForKind.VECTORIZED and int(loops[-1].extent) in (16, 8)  # columns, in vectors
        assert kinds[-2] == ForKind.UNROLLED and int(loops[-2].extent) == rule.ROWS  # the chosen rows
        n, lanes = int(func.params[-1].shape[-1]), int(loops[-1].extent)
        # (token, choice, column part) fill the 16 cores, at most one part a vector (down: N = 64)
        assert kinds[0] == ForKind.PARALLEL and int(loops[0].extent) == min(16, 2 * n // lanes)


@pytest.mark.parametrize("cores", [16, None], ids=["16 cores", "host"])
def test_built_it_equals_numpy(on, cores):
    m = _moe_mlp(3, 2)
    exe = kernels.build(importer.load(m).module, cpu_tvm_target(cores))
    x = np.random.default_rng(6).standard_normal((3, 1, 1, H)).astype(np.float32)
    x.flat[::5] = 0.0
    ids = np.array([[E - 1, 0], [1, 1], [-1, 2]], np.int64)  # the last expert, a repeat, a negative id
    np.testing.assert_allclose(run_vm(exe, [x, ids]), _numpy(x, ids), rtol=1e-4, atol=1e-5)


def test_a_dense_matmul_is_not_the_rules(on):
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (1, H), np.float32)],
              [("y", (1, F), np.float32)], {"w": _weights()["gate"][0]})
    mod = kernels.schedule(importer.load(m).module, cpu_tvm_target(16))
    assert "CpuGatheredMatmul" not in set(kernels.rules_applied(mod).values())


@pytest.mark.parametrize("n,cores", [(80, 2), (48, 16), (20, 4)], ids=["short last part", "3 vectors", "4 lanes"])
def test_column_parts_of_no_equal_size_and_narrow_vectors_equal_numpy(on, n, cores):
    """One token, top-1 (a unit): the columns split into parts for the cores, the last one
    short (80 = 5 vectors of 16 in parts of 3 and 2), or in 4-lane vectors (20)."""
    k = 40
    w = np.random.default_rng(7).standard_normal((3, k, n)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["w", "ids"], ["g"], axis=0), helper.make_node("MatMul", ["x", "g"], ["y"])]
    m = model(nodes, [("x", (1, 1, 1, k), np.float32), ("ids", (1, 1), np.int64)],
              [("y", (1, 1, 1, n), np.float32)], {"w": w})
    mod = importer.load(m).module
    assert "CpuGatheredMatmul" in set(kernels.rules_applied(kernels.schedule(mod, cpu_tvm_target(cores))).values())
    x = np.random.default_rng(8).standard_normal((1, 1, 1, k)).astype(np.float32)
    ids = np.array([[-1]], np.int64)
    got = run_vm(kernels.build(mod, cpu_tvm_target(cores)), [x, ids])
    np.testing.assert_allclose(got, x @ w[ids], rtol=1e-5, atol=1e-5)
