"""Squeeze-excite's gate on the CPU (issue 18; bench/results/cpu-convnets-2core.md):
``gate[c] * x[c, h, w]`` left at the root beside the fc2 GEMV that computes the gate
(:mod:`hetpart.kernels.register_tile`), scheduled by :func:`hetpart.kernels.analysis.parallel_vectorize`.

On planes that whole SIMD vectors do not divide (14x14 = 196, 7x7 = 49) the block's
loops were all fused and cut into 16-lane vectors across channel boundaries: the gate
(and MobileNetV3's hard-sigmoid computed from it) became a per-lane gather of
``c = i // 196``, on one thread.  Now the channel loop stays outside
(:func:`~hetpart.kernels.analysis.broadcast_prefix`), the plane is one contiguous loop,
and a gate of at least ``register_tile.gate_parallel_min(cores)`` elements (256 Ki at 2
cores, 32 Ki at 16) runs its channels in parallel.

Cases against ONNX Runtime: MobileNetV3's (HardSigmoid) and EfficientNet's (Sigmoid)
SE blocks on 14x14, 7x7, 28x28 and an odd 15x15 plane, batch 1 and 2, inputs with
negatives and zeros (every 7th element 0).  Tolerances: rtol 1e-5, atol 1e-6 of the
largest output (the pool and the GEMVs sum in another order than ORT's).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi
from onnx import helper, numpy_helper
from tvm import te

from onnx_cases import assert_matches, onnxruntime_outputs, run_on

from hetpart import importer, kernels
from hetpart.kernels import analysis
from hetpart.targets import cpu_tvm_target

# name -> (channels, plane, squeeze, gate, batch)
CASES = {
    "mnv3 672x14 hard": (672, 14, 168, "hard", 1),
    "mnv3 960x7 hard": (960, 7, 240, "hard", 1),
    "mnv3 120x28 hard": (120, 28, 32, "hard", 1),
    "effnet 480x14 sigmoid": (480, 14, 20, "sigmoid", 1),
    "effnet 1152x7 sigmoid": (1152, 7, 48, "sigmoid", 1),
    "odd 40x15 hard batch 2": (40, 15, 8, "hard", 2),
}


def _model(c: int, hw: int, sq: int, gate: str, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    """x -> GlobalAveragePool -> 1x1 conv -> ReLU -> 1x1 conv -> gate -> Mul(gate, x),
    as hetpart.models.mobilenet writes squeeze-excite."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
             for name, shape, scale in [("w1", (sq, c, 1, 1), 2 / np.sqrt(c)), ("b1", (sq,), 0.5),
                                        ("w2", (c, sq, 1, 1), 2 / np.sqrt(sq)), ("b2", (c,), 0.5)]]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Conv", ["p", "w1", "b1"], ["f1"]),
             helper.make_node("Relu", ["f1"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["f2"])]
    if gate == "hard":
        nodes.append(helper.make_node("HardSigmoid", ["f2"], ["g"], alpha=1.0 / 6, beta=0.5))
    else:
        nodes.append(helper.make_node("Sigmoid", ["f2"], ["g"]))
    nodes.append(helper.make_node("Mul", ["g", "x"], ["y"]))
    shape = [batch, c, hw, hw]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _input(c: int, hw: int, batch: int = 1) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((batch, c, hw, hw)) * 3).astype(np.float32)
    x.flat[::7] = 0.0
    return x


@pytest.mark.parametrize("case", list(CASES))
def test_se_gate_matches_onnxruntime(case):
    c, hw, sq, gate, batch = CASES[case]
    m, x = _model(c, hw, sq, gate, batch), _input(c, hw, batch)
    got = run_on(m, "cpu", {"x": x})["y"]
    want = onnxruntime_outputs(m, {"x": x})[0]
    assert (want < 0).any() and (want == 0).any(), "the case must have negatives and zeros"
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


def _gate_kernel(m: onnx.ModelProto, cores: int | None = None):
    """The scheduled kernel that writes the graph's output (fc2 + gate + Mul), for a
    target of ``cores`` cores (default: this machine's)."""
    mod = kernels.schedule(importer.load(m).module, cpu_tvm_target(cores))
    funcs = [(gv.name_hint, f) for gv, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and "multiply" in gv.name_hint]
    assert len(funcs) == 1, [n for n, _ in funcs]
    return funcs[0][1]


def _output_block_loops(func):
    """(the block realize writing the function's last parameter, the loops around it, outermost first)."""
    out = func.params[-1].name  # the output buffer
    found = []

    def visit(loop, outer):
        body = loop.body
        if isinstance(body, tvm.s_tir.SBlockRealize):
            if any(w.source.name == out for w in body.block.writes):
                found.append((body, outer + [loop]))
            return
        if isinstance(body, tvm.tirx.For):
            visit(body, outer + [loop])

    def visit_top(loop):
        visit(loop, [])

    root = func.body.block.body
    tops = root.seq if isinstance(root, tvm.tirx.SeqStmt) else [root]
    for top in tops:
        if isinstance(top, tvm.tirx.For):
            visit_top(top)
    assert len(found) == 1, func.script()
    return found[0]


@pytest.mark.parametrize("case", ["mnv3 672x14 hard", "mnv3 960x7 hard", "effnet 480x14 sigmoid"])
def test_gate_is_a_scalar_per_channel(case):
    """The gate block's channel iterator is a loop of its own, not ``i // (h*w)`` of a
    fused loop under a vector (a per-lane gather of the gate, before)."""
    func = _gate_kernel(_model(*CASES[case]))
    realize, loops = _output_block_loops(func)
    divmods = []
    for value in realize.iter_values:
        tvm_ffi.structural_walk(value, (tvm.tirx.FloorDiv, divmods.append))
    # The channel's binding: a plain loop variable; only h, w of the fused plane divide.
    channel = realize.iter_values[1] if len(realize.iter_values) == 4 else realize.iter_values[0]
    assert isinstance(channel, tvm.tirx.Var), func.script()
    assert all(lp.kind != tvm.tirx.ForKind.VECTORIZED for lp in loops[:1]), func.script()


@pytest.mark.parametrize("case, cores, parallel", [
    ("mnv3 672x14 hard", 16, True), ("mnv3 960x7 hard", 16, True), ("mnv3 672x14 hard", 2, False)])
def test_gate_parallel_on_many_cores(case, cores, parallel):
    """On a 16-core target a 672x14x14 (131 Ki) or 960x7x7 (47 Ki) gate runs its channels
    in parallel: on one thread it is a serial pass 15 threads wait for (it was, below the
    injective threshold).  On 2 cores it stays serial (measured no faster there)."""
    func = _gate_kernel(_model(*CASES[case]), cores)
    _, loops = _output_block_loops(func)
    assert (loops[0].kind == tvm.tirx.ForKind.PARALLEL) == parallel, func.script()
    if parallel:
        assert int(loops[0].extent) == CASES[case][0], func.script()


def _schedule_of(compute):
    func = te.create_prim_func(compute())
    return tvm.s_tir.Schedule(func)


@pytest.mark.parametrize("kind, expected", [("gate", 1), ("row bias", 0), ("same shape", 0), ("plane gate", 2)])
def test_broadcast_prefix(kind, expected):
    """The outer loops an operand is indexed by alone: 1 for ``g[c] * x[c, h, w]``,
    2 for ``g[c, h] * x[c, h, w]``; 0 when every operand uses the innermost loop."""
    def compute():
        x = te.placeholder((8, 7, 7), name="x")
        if kind == "gate":
            g = te.placeholder((8,), name="g")
            return [g, x, te.compute(x.shape, lambda c, h, w: g[c] * x[c, h, w], name="y")]
        if kind == "plane gate":
            g = te.placeholder((8, 7), name="g")
            return [g, x, te.compute(x.shape, lambda c, h, w: g[c, h] * x[c, h, w], name="y")]
        if kind == "row bias":
            b = te.placeholder((7,), name="b")
            return [b, x, te.compute(x.shape, lambda c, h, w: x[c, h, w] + b[w], name="y")]
        z = te.placeholder((8, 7, 7), name="z")
        return [z, x, te.compute(x.shape, lambda c, h, w: x[c, h, w] * z[c, h, w], name="y")]

    sch = _schedule_of(compute)
    assert analysis.broadcast_prefix(sch, sch.get_sblock("y")) == expected
