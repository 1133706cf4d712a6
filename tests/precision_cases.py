"""The low-precision (bf16/fp16 storage) tests' tolerance and references (``from precision_cases
import ...``; issue 17):

* ``REL_TOL``: the stated tolerance, relative error against float32 at most 2e-2;
* ``relative_error(got, want)``: ``max |got - want| / max |want|``;
* ``ort_outputs(onnx_model, feeds)``: ONNX Runtime's outputs on the float32 model, in output order;
* ``all_on(graph, device, name)``: the hand plan of every kernel on ``device``;
* ``hf_attention(seq, width, heads)``: Whisper's encoder self-attention as transformers' eager
  export spells it (the low-precision scores' pattern);
* ``bert_layer(...)``: the zoo's BERT (post-LN), one layer;
* ``feeds_with_zeros(model, seed)``: conftest's ``random_feeds`` with a tenth of each float input zero;
* ``bf16_matches_ort(model, feeds, simulate)``: an all-CUDA ``cuda=bf16`` build's outputs, asserted
  within ``REL_TOL`` of ONNX Runtime's float32 ones;
* ``switch_keeps_bf16_within_tolerance(model, monkeypatch, module, name)``: that, in simulation, with
  the module switch off and then on, and the switch changing the outputs;
* ``assert_narrowed(before, lowered, narrowed)``: the invariants every activation-narrowing pass
  keeps (kernels as before; producers write, contractions read, the narrowed tensors in bf16).
"""

from __future__ import annotations

import numpy as np

from hetpart.bench.peers import ort_session

REL_TOL = 2e-2
"""Issue 17: relative error against float32 at most 2e-2 on every corpus model."""


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (0 for an all-zero reference matched exactly)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.abs(want).max() if want.size else 0.0
    diff = np.abs(got - want).max() if want.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def ort_outputs(onnx_model, feeds):
    """ONNX Runtime's outputs of ``onnx_model`` on ``feeds`` (its inputs picked by name), in output order."""
    sess = ort_session(onnx_model)
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})


def all_on(graph, device: str, name: str = "precision"):
    """The unpriced hand plan of every kernel of ``graph`` on ``device`` (conftest's plan_from_assignment)."""
    from conftest import plan_from_assignment

    return plan_from_assignment(graph, {k: device for k in graph.kernels}, name)


def hf_attention(seq=24, width=32, heads=2):
    """Whisper's encoder self-attention as transformers' eager export spells it: q scaled
    after its projection, k without bias, ``K^T`` a Transpose node, Softmax(axis=-1)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    d = width // heads
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def proj(name, bias=True):
        w = const(f"{name}.w", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
        nodes.append(helper.make_node("MatMul", ["x", w], [f"{name}.mm"]))
        if not bias:
            return f"{name}.mm"
        b = const(f"{name}.b", (0.1 * rng.standard_normal(width)).astype(np.float32))
        nodes.append(helper.make_node("Add", [f"{name}.mm", b], [f"{name}.y"]))
        return f"{name}.y"

    shape = const("heads_shape", np.array([1, seq, heads, d], np.int64))

    def split(t, name):
        nodes.append(helper.make_node("Reshape", [t, shape], [f"{name}.r"]))
        nodes.append(helper.make_node("Transpose", [f"{name}.r"], [f"{name}.t"], perm=[0, 2, 1, 3]))
        return f"{name}.t"

    nodes.append(helper.make_node("Mul", [proj("q"), const("scaling", np.array(d ** -0.5, np.float32))], ["q.s"]))
    q, k, v = split("q.s", "q"), split(proj("k", bias=False), "k"), split(proj("v"), "v")
    nodes += [helper.make_node("Transpose", [k], ["kT"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", [q, "kT"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", v], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx.t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx.t", const("merge_shape", np.array([1, seq, width], np.int64))],
                               ["ctx.m"])]
    w = const("o.w", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
    nodes.append(helper.make_node("MatMul", ["ctx.m", w], ["y"]))
    graph = helper.make_graph(nodes, "hf_attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def bert_layer(seq_len=128, hidden=64, heads=2, intermediate=256):
    """The zoo's BERT (post-LN), one layer."""
    from hetpart import models

    return models.build("bert", True, layers=1, batch=1, seq_len=seq_len, hidden=hidden, heads=heads,
                        intermediate=intermediate, vocab=1000)


def feeds_with_zeros(model, seed=0):
    """conftest's ``random_feeds`` (standard normal: negatives; token ids in range) with a tenth
    of each float input set exactly to zero."""
    from hetpart import load

    from conftest import random_feeds

    feeds = random_feeds(load(model), seed)
    zeros = np.random.default_rng(seed + 1)
    for x in feeds.values():
        if np.issubdtype(x.dtype, np.floating):
            x[zeros.random(x.shape) < 0.1] = 0
    return feeds


def bf16_matches_ort(model, feeds, simulate: bool):
    """``model`` compiled all-CUDA with ``cuda=bf16`` (``simulate``: built for the CPU) and run on
    ``feeds``; asserts each output within :data:`REL_TOL` of ONNX Runtime's float32 one and
    returns the outputs."""
    from hetpart import compiler, load

    from conftest import run_composed

    graph = load(model)
    compiled = compiler.compile(all_on(graph, "cuda"), simulate=simulate, progress=False, precision="cuda=bf16")
    got = run_composed(compiled, feeds)
    for g, w in zip(got, ort_outputs(model, feeds)):
        assert relative_error(g, w) <= REL_TOL, f"relative error {relative_error(g, w):.3g}"
    return got


def switch_keeps_bf16_within_tolerance(model, monkeypatch, module, name: str) -> None:
    """:func:`bf16_matches_ort` in simulation on :func:`feeds_with_zeros`, with ``module.name`` as it is
    and then True; asserts the switch changed the outputs (a switch that does nothing proves nothing)."""
    feeds = feeds_with_zeros(model)
    before = bf16_matches_ort(model, feeds, simulate=True)
    monkeypatch.setattr(module, name, True)
    after = bf16_matches_ort(model, feeds, simulate=True)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before)), "the switch changed nothing"


def assert_narrowed(before, lowered, narrowed) -> None:
    """The invariants of an activation-narrowing pass (``before``: the graph lowered without it):
    kernel ids and order as before; each narrowed tensor's producer writes it in bf16 (its
    PrimFunc's output buffer) and counts it at 2 bytes an element; each reader is a contraction
    marked ``NARROW_ACTIVATION_ATTR`` taking it as a bf16 parameter."""
    from hetpart.importer import low_precision_scores as lps

    assert list(lowered.kernels) == list(before.kernels)
    for n in narrowed:
        t = before.tensors[n]
        prod = lowered.kernels[t.producer]
        assert str(lowered.module[prod.func].params[-1].dtype) == lps.DTYPE, n
        assert prod.bytes_written == before.kernels[t.producer].bytes_written - t.nbytes // 2, n
        for c in t.consumers:
            k = lowered.kernels[c]
            func = lowered.module[k.func]
            assert k.op_class == "matmul" and func.attrs[lps.NARROW_ACTIVATION_ATTR] == 1, (n, c)
            assert str(func.params[k.inputs.index(n)].dtype) == lps.DTYPE, (n, c)
