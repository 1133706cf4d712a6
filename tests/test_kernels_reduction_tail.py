"""Row reductions over rows that are not whole vectors (ViT's 197 tokens, whisper's
1500 frames) through the CPU reduction rule: the partial sums/maxima run in full-width
vectors over the row's whole vectors, and only the last, partial vector is guarded
(:func:`hetpart.kernels.rules.cpu_reduction._split_off_tail`).

The bug this guards against (a performance one): the partials loop kept a per-lane
guard ``k < n`` in every step, so TVM's VectorizeLoop turned all of it into scalar
code (ViT's [1,12,197,197] softmax ~3x ONNX Runtime), and a 1500-wide row reduced in
4-wide partials (the widest vector dividing 1500).  Correctness is checked against
ONNX Runtime and ``onnx.reference`` on rows with negatives, zeros, -inf (masked
attention, a fully masked row), +inf and NaN, for lengths 197, 1500, 17, 1 and 64.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from onnx import helper

from onnx_cases import assert_matches, model
from softmax_cases import all_cpu_output, fused_softmax, ort_output, softmax_matches_references, special_rows

from hetpart import kernels, load
from hetpart.bench.cpu_softmax import softmax_model
from hetpart.kernels.analysis import cpu_shape
from hetpart.kernels.rules import cpu_reduction
from hetpart.kernels.rules.cpu_reduction import CpuReduction
from hetpart.targets import cpu_tvm_target, host_triple


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("n", [197, 1500, 17, 1, 64, 256])
def test_softmax_of_ragged_rows_matches_onnxruntime(op, n):
    softmax_matches_references(special_rows(n).reshape(1, 2, 6, n), op, what=f"{op} n={n}")


@pytest.mark.parametrize("n", [197, 1500, 17, 64, 384, 768])
def test_layer_norm_of_ragged_rows_matches_onnxruntime(n):
    """LayerNorm's mean and variance go through the same row partials."""
    rng = np.random.default_rng(n)
    scale, bias = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m = model([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-5)],
              [("x", [6, n], np.float32)], [("y", [6, n], np.float32)], opset=17,
              initializers={"s": scale, "b": bias})
    x = (rng.standard_normal((6, n)) * 3 - 1).astype(np.float32)
    x[1] = 0.0
    x[2, n - 1] = 40.0
    x[3, 0] = np.nan
    assert_matches(all_cpu_output(m, x), ort_output(m, {"x": x}), rtol=1e-4, atol=1e-4, what=f"LayerNorm n={n}")


def _partials_updates(n: int, op: str = "Softmax"):
    """``[(name, reduce extent, guarded, lanes)]`` of the scheduled softmax's partials
    update blocks (their vectorised partial dim's width)."""
    graph = load(softmax_model(op, (4, n)))
    func = next(f for f in graph.module.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    scheduled = CpuReduction().apply(func, cpu_tvm_target()).mod["main"]
    found = []

    def visit(loop):
        if not (loop.kind == tvm.tirx.ForKind.VECTORIZED and isinstance(loop.body, tvm.s_tir.SBlockRealize)):
            return
        block = loop.body.block
        if "_rf" not in block.name_hint or block.init is not None or "init" in block.name_hint:
            return
        red = [iv for iv in block.iter_vars if iv.iter_type == tvm.tirx.IterVar.CommReduce]
        calls = []
        tvm_ffi.structural_walk(block.body, (tvm.ir.Call, calls.append))
        guarded = any(c.op.same_as(tvm.ir.Op.get("prim.if_then_else")) for c in calls)
        found.append((block.name_hint, int(red[0].dom.extent), guarded, int(loop.extent)))

    tvm_ffi.structural_walk(scheduled.body, (tvm.tirx.For, visit))
    return found


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("n", [197, 1500, 33])
def test_ragged_rows_reduce_whole_vectors_unguarded(op, n, monkeypatch):
    """Each row reduction (max, sum) has a full-width partials loop over the row's
    whole vectors with no guard, and a guarded one for the last, partial vector only.
    (Softmax's sum as it is without the fold into the exp pass, which keeps it one
    chain: tests/test_kernels_softmax_fold.py.)"""
    monkeypatch.setattr(cpu_reduction, "FOLD_SUM_INTO_EXP", False)
    lanes = cpu_shape(cpu_tvm_target()).lanes("float32")
    width = 2 * lanes if n >= 32 * lanes else lanes  # two chains over long rows (below)
    updates = _partials_updates(n, op)
    unguarded = [u for u in updates if not u[2]]
    guarded = [u for u in updates if u[2]]
    assert len(unguarded) == 2 and len(guarded) == 2, updates
    assert all(u[1] == n // width and u[3] == width for u in unguarded), updates
    assert all(u[1] == 1 and u[3] == width for u in guarded), updates


@pytest.mark.parametrize("n", [1500, 512, 256, 197, 128])
def test_long_rows_reduce_in_two_chains(n, monkeypatch):
    """A row of 32 vectors or more (whisper's 1500, 256 with 8 lanes; LayerNorm's 384 and
    768) reduces in partials two vectors wide -- two independent add/max chains, where
    one waited on each add's latency (one thread: whisper's softmax 9.2 -> 8.6 ms,
    [1,12,256,256] 0.398 -> 0.360, LayerNorm 1500 x 384 0.243 -> 0.193); shorter rows
    (ViT's 197, BERT's 128: slower with two) keep one vector.  (Softmax's sum folded
    into the exp pass keeps one: tests/test_kernels_softmax_fold.py.)"""
    monkeypatch.setattr(cpu_reduction, "FOLD_SUM_INTO_EXP", False)
    lanes = cpu_shape(cpu_tvm_target()).lanes("float32")
    widths = {u[3] for u in _partials_updates(n)}
    assert widths == ({2 * lanes} if n >= 32 * lanes else {lanes}), _partials_updates(n)


def test_whole_vector_rows_need_no_tail():
    """A row of whole vectors (128) keeps one unguarded partials loop per reduction."""
    updates = _partials_updates(128)
    assert len(updates) == 2 and not any(u[2] for u in updates), updates


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
@pytest.mark.parametrize("n", [197, 1500])
def test_ragged_rows_build_for_avx2_and_avx512(n, mcpu):
    """Build only (the host may lack AVX-512)."""
    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 16})
    func, mod = fused_softmax(3, n)
    assert str(kernels.schedule_primfunc(func, target).attrs[kernels.RULE_ATTR]) == "CpuReduction"
    kernels.build(mod, target)
