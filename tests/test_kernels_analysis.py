"""hetpart.kernels.analysis's shared CPU schedule helpers on squeeze-excite's gating
kernel (``x * sigmoid(fc2(s) + b)``, EfficientNet's SE block, fused into one kernel):

* :func:`try_inline_spatial` keeps the per-channel gate ``sigmoid(...)`` a block of its
  own (one exp per channel) instead of inlining it into the multiply (one per pixel);
* :func:`parallel_vectorize` vectorises the multiply over the trailing ``H*W`` loops,
  so the gate is one broadcast per vector, not a per-lane gather.

Against ONNX Runtime (finite inputs with negatives and zeros) and ``onnx.reference``
(NaN and +-inf in the activation, propagated by the multiply; rtol 1e-5: fast_exp's
sigmoid is within 6 ulps, ORT's MLAS sigmoid ~5e-8 absolute).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper, numpy_helper

from onnx_cases import assert_matches, reference

from hetpart import kernels, load
from hetpart.backend import forced_plan
from hetpart.kernels.analysis import _whole_vector_suffix
from hetpart.targets import cpu_tvm_target

C, SQ, HW = 64, 8, 28


def _se_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((C, SQ, 1, 1)) * 0.5).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    nodes = [helper.make_node("Conv", ["s", "w", "b"], ["g"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["g"], ["gate"]), helper.make_node("Mul", ["gate", "x"], ["y"])]
    graph = helper.make_graph(
        nodes, "se_gate",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, C, HW, HW]),
         helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [1, SQ, 1, 1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, C, HW, HW])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _feeds(special: bool = False) -> dict:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1, C, HW, HW)) * 4).astype(np.float32)
    x.flat[::5] = 0.0
    s = (rng.standard_normal((1, SQ, 1, 1)) * 4).astype(np.float32)
    s.flat[0] = 0.0
    if special:
        x.flat[[1, 100, 2000, x.size - 1]] = [np.nan, np.inf, -np.inf, np.nan]
    return {"x": x, "s": s}


def _hetpart(m, feeds):
    import hetpart

    graph = load(m)
    with hetpart.Session(hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)) as sess:
        return sess.run(feeds)["y"]


def _scheduled(m):
    mod = kernels.schedule(load(m).module, cpu_tvm_target())
    funcs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(funcs) == 1, "fc2, its sigmoid and the gating multiply are one fused kernel"
    return funcs[0]


def test_se_gate_matches_onnxruntime():
    m, feeds = _se_model(), _feeds()
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_matches(_hetpart(m, feeds), want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))


def test_se_gate_nan_and_inf_as_the_reference():
    m, feeds = _se_model(), _feeds(special=True)
    want = reference(m, feeds)["y"]
    assert np.isnan(want).any() and np.isinf(want).any()
    assert_matches(_hetpart(m, feeds), want, rtol=1e-5, atol=1e-6 * float(np.nanmax(np.abs(want[np.isfinite(want)]))))


def _blocks(func) -> list:
    found = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, found.append), order="pre")
    return found


def _has_let(stmt) -> bool:
    found = []
    tvm_ffi.structural_walk(stmt, (tvm.tirx.Let, found.append))
    return bool(found)


def test_se_gate_computes_one_exp_per_channel():
    """The sigmoid's exp (fast_exp's ``Let``) sits in a block over the C channels, not in
    the C*H*W multiply (it was, inlined: 784x the exps here)."""
    func = _scheduled(_se_model())
    with_exp = [b for b in _blocks(func) if _has_let(b.body)]
    assert with_exp, func.script()
    for b in with_exp:
        points = int(np.prod([int(iv.dom.extent) for iv in b.iter_vars]))
        assert points <= C, f"block {b.name_hint} computes exp at {points} points"


def _realizes(stmt) -> list:
    found = []
    tvm_ffi.structural_walk(stmt, (tvm.s_tir.SBlockRealize, found.append))
    return found


def test_se_gate_multiply_reads_the_gate_once_per_vector():
    """The vectorised loop of the multiply runs along H*W only: the gate's index does
    not depend on it (one broadcast), where it used to be ``(i*16 + lane) // (H*W)``."""
    func = _scheduled(_se_model())
    vec_loops = []
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, lambda f: vec_loops.append(f)
                                        if f.kind == tvm.tirx.ForKind.VECTORIZED else None))
    mul = [(f, r) for f in vec_loops for r in _realizes(f) if "multiply" in r.block.name_hint]
    assert mul, func.script()
    loop, realize = mul[0]
    channel = realize.iter_values[[i for i, iv in enumerate(realize.block.iter_vars) if int(iv.dom.extent) == C][0]]
    used = []
    tvm_ffi.structural_walk(channel, (tvm.tirx.Var, used.append))
    assert not any(v.same_as(loop.loop_var) for v in used), channel


@pytest.mark.parametrize("extents, lanes, k", [
    ([1, 64, 28, 28], 16, 2), ([1, 64, 7, 7], 16, 1), ([4, 96], 16, 1), ([3, 5, 16], 16, 2), ([128, 30522], 16, 0),
])
def test_whole_vector_suffix(extents, lanes, k):
    assert _whole_vector_suffix(extents, lanes) == k
