"""Grouped-query attention without the repeated K/V (issue 19; ``importer.grouped_query_attention``).

LLaMA-style attention repeats each key/value head over its ``rep`` query heads
(``Unsqueeze`` -> ``Expand`` -> ``Reshape``) before the scores and context MatMuls, so
a decode step copied its whole KV cache ``rep`` times (2 x 16.8 MB per layer at the
zoo's 1B config) and read it again.  The importer now computes those MatMuls per
key/value head on the cache itself.  Checked against ONNX Runtime (on the original
model) on the zoo decode step and prefill and on transformers-style blocks as
torch.onnx exports ``repeat_kv`` (eager attention and SDPA), inputs with negatives
and zeros; the rewrite fires there and leaves a repeat whose heads are not
``kvH x rep`` in that order alone.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_cases import assert_matches, onnxruntime_outputs, run_on

from hetpart import importer, models
from hetpart.importer.grouped_query_attention import group_query_attention
from hetpart.importer.onnx_source import read_model

F32 = np.float32
INT64_MAX = np.iinfo(np.int64).max


def _ops(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


def _normal(rng, shape, scale=2.0) -> np.ndarray:
    x = (rng.standard_normal(shape) * scale).astype(F32)
    x.flat[::7] = 0.0  # zeros, among negatives and positives
    return x


# ---------------------------------------------------------------- the zoo llama models

def _decode_feeds(model: onnx.ModelProto, position: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in model.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.name == "input_ids":
            feeds[i.name] = rng.integers(0, 256, shape).astype(np.int64)
        elif i.name == "position":
            feeds[i.name] = np.array([position], np.int64)
        else:
            feeds[i.name] = _normal(rng, shape)
    return feeds


@pytest.mark.parametrize("cfg, position", [({}, 9), ({"heads": 8, "kv_heads": 2}, 15)])
def test_zoo_llama_decode_matches_onnxruntime(cfg, position):
    model = models.build("llama_decode", small=True, **cfg)
    assert "Expand" not in _ops(read_model(model).model), "the rewrite fires on the zoo decode step"
    feeds = _decode_feeds(model, position)
    got = run_on(model, "cpu", feeds, simulate=False)
    for o, want in zip(model.graph.output, onnxruntime_outputs(model, feeds)):
        assert_matches(got[o.name], want, rtol=1e-4, atol=1e-5, what=o.name)


@pytest.mark.cuda
def test_zoo_llama_decode_on_cuda_matches_onnxruntime():
    """The grouped MatMuls as the GPU's rules schedule them ([1, kvH, rep, L] GEMV rows):
    every kernel on CUDA (TF32 contractions: ~1e-3 relative)."""
    model = models.build("llama_decode", small=True, heads=8, kv_heads=2, cache_len=64)
    assert "Expand" not in _ops(read_model(model).model)
    feeds = _decode_feeds(model, 37)
    got = run_on(model, "cuda", feeds, simulate=False)
    for o, want in zip(model.graph.output, onnxruntime_outputs(model, feeds)):
        assert_matches(got[o.name], want, rtol=2e-3, atol=2e-3, what=o.name)


def test_zoo_llama_prefill_matches_onnxruntime():
    """Prefill: ``S`` query rows per head, so the grouped left operand is ``[B, kvH, rep*S, D]``."""
    model = models.build("llama_prefill", small=True, seq_len=6)
    assert "Expand" not in _ops(read_model(model).model)
    feeds = {"input_ids": np.random.default_rng(3).integers(0, 256, (1, 6)).astype(np.int64)}
    got = run_on(model, "cpu", feeds, simulate=False)
    assert_matches(got["logits"], onnxruntime_outputs(model, feeds)[0], rtol=1e-4, atol=1e-5, what="logits")


def test_decode_step_has_no_cache_sized_repeat_kernel():
    """No kernel of the imported decode step writes a repeated cache ``[1, heads, L, d]``
    (or its transpose); the attention MatMuls read the ``[1, kv_heads, L, d]`` caches."""
    cfg = {"heads": 8, "kv_heads": 2, "cache_len": 32}  # d = 8
    graph = importer.load(models.build("llama_decode", small=True, **cfg))
    repeated = [(k.id, k.ops) for k in graph.nodes for t in k.outputs
                if sorted(graph.tensors[t].shape) == sorted([1, 8, 32, 8])]
    assert not repeated, repeated
    assert not any("broadcast_to" in k.ops for k in graph.nodes)


# ---------------------------------------------------------------- transformers-style blocks

def _const(inits: list, name: str, value) -> str:
    inits.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _torch_repeat_kv(nodes: list, inits: list, x: str, name: str, rep: int, axis: int = 2) -> str:
    """``hidden_states[:, :, None, :, :].expand(b, kvh, rep, t, d).reshape(b, kvh*rep, t, d)``
    as torch.onnx (TorchScript, opset 17) writes it: the dims read through ``Shape`` ->
    ``Gather``, a no-op ``Slice`` per ``:``, ``expand``'s ``Where(Equal(size, -1), 1,
    size)``, the reshape's ``kvh * rep`` a ``Mul``.  ``axis`` 1 puts ``None`` before the
    kv heads instead (``[:, None]``, expand ``(b, rep, kvh, t, d)``): heads then read
    ``x[h % kvh]``, no grouped form."""
    def node(op, inputs, **attrs):
        out = f"{name}.{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    shape = node("Shape", [x])
    dims = [node("Gather", [shape, _const(inits, f"{name}.i{i}", np.int64(i))], axis=0) for i in range(4)]
    col = _const(inits, f"{name}.axes0", np.array([0], np.int64))

    def noop_slice(t, ax):
        return node("Slice", [t, _const(inits, f"{name}.s{len(nodes)}", np.array([0], np.int64)),
                              _const(inits, f"{name}.e{len(nodes)}", np.array([INT64_MAX], np.int64)),
                              _const(inits, f"{name}.a{len(nodes)}", np.array([ax], np.int64)),
                              _const(inits, f"{name}.st{len(nodes)}", np.array([1], np.int64))])

    t = x
    for ax in range(axis):
        t = noop_slice(t, ax)
    t = node("Unsqueeze", [t, _const(inits, f"{name}.axis", np.array([axis], np.int64))])
    for ax in range(axis + 1, 5):
        t = noop_slice(t, ax)
    parts = [node("Unsqueeze", [d, col]) for d in dims]
    rep_dim = _const(inits, f"{name}.rep", np.array([rep], np.int64))
    size = node("Concat", [*parts[:axis], rep_dim, *parts[axis:]], axis=0)
    ones = node("ConstantOfShape", [node("Shape", [size])],
                value=helper.make_tensor("one", TensorProto.INT64, [1], [1]))
    neg = node("Mul", [ones, _const(inits, f"{name}.minus1", np.int64(-1))])
    size = node("Where", [node("Equal", [size, neg]), ones, size])
    t = node("Expand", [t, size])
    heads = node("Unsqueeze", [node("Mul", [dims[1], _const(inits, f"{name}.rep0", np.int64(rep))]), col])
    target = node("Concat", [parts[0], heads, parts[2], parts[3]], axis=0)
    return node("Reshape", [t, target])


def _attention_block(form: str, *, batch=2, heads=6, kv=2, s=3, t=5, d=4, repeat_axis=2,
                     per_head_scale=False) -> onnx.ModelProto:
    """q [B, H, S, D], k/v [B, kvH, T, D], mask [B, 1, S, T] -> out [B, S, H*D], with
    the K/V heads repeated as torch.onnx exports transformers' ``repeat_kv``.

    ``eager``: ``matmul(q, k.transpose(2, 3)) * scaling + mask``, softmax, ``@ v``
    (transformers' eager attention); ``sdpa``: torch.onnx's scaled_dot_product_attention,
    ``q * sqrt(scale) @ (k^T * sqrt(scale))``; ``key_t``: the key transposed before it
    is repeated.  ``per_head_scale`` multiplies the repeated keys by a ``[1, H, 1, 1]``
    tensor (not head-wise alike: must not be rewritten)."""
    nodes, inits, rep = [], [], heads // kv
    scaling = 1.0 / math.sqrt(d)
    if form == "key_t":
        kt = "k.t"
        nodes.append(helper.make_node("Transpose", ["k"], [kt], perm=[0, 1, 3, 2]))
        keys_t = _torch_repeat_kv(nodes, inits, kt, "k.repeat", rep, repeat_axis)
    else:
        keys = _torch_repeat_kv(nodes, inits, "k", "k.repeat", rep, repeat_axis)
        keys_t = "keys_t"
        nodes.append(helper.make_node("Transpose", [keys], [keys_t], perm=[0, 1, 3, 2]))
    if per_head_scale:
        scale = _const(inits, "head_scale", np.linspace(-1, 1, heads, dtype=F32).reshape(1, heads, 1, 1))
        nodes.append(helper.make_node("Mul", [keys_t, scale], ["keys_t_scaled"]))
        keys_t = "keys_t_scaled"
    values = _torch_repeat_kv(nodes, inits, "v", "v.repeat", rep, repeat_axis)
    if form == "sdpa":
        root = helper.make_node("Sqrt", [_const(inits, "scale", F32(scaling))], ["sqrt_scale"])
        nodes += [root, helper.make_node("Mul", ["q", "sqrt_scale"], ["q_scaled"]),
                  helper.make_node("Mul", [keys_t, "sqrt_scale"], ["keys_t_sdpa"]),
                  helper.make_node("MatMul", ["q_scaled", "keys_t_sdpa"], ["scores"])]
    else:
        nodes += [helper.make_node("MatMul", ["q", keys_t], ["qk"]),
                  helper.make_node("Mul", ["qk", _const(inits, "scaling", F32(scaling))], ["scores"])]
    nodes += [helper.make_node("Add", ["scores", "mask"], ["masked"]),
              helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", values], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx_t", _const(inits, "merge", np.array([batch, s, heads * d]))],
                               ["out"])]
    f = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "gqa", [
        helper.make_tensor_value_info("q", f, [batch, heads, s, d]),
        helper.make_tensor_value_info("k", f, [batch, kv, t, d]),
        helper.make_tensor_value_info("v", f, [batch, kv, t, d]),
        helper.make_tensor_value_info("mask", f, [batch, 1, s, t])],
        [helper.make_tensor_value_info("out", f, [batch, s, heads * d])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _block_feeds(m: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    feeds = {n: _normal(rng, shape[n]) for n in ("q", "k", "v")}
    b, _, s, t = shape["mask"]
    future = np.arange(t)[None, :] > np.arange(s)[:, None] + (t - s)  # causal, queries at the last s keys
    feeds["mask"] = np.broadcast_to(np.where(future, np.finfo(F32).min, F32(0)), (b, 1, s, t)).astype(F32)
    feeds["mask"][0, 0, :, 0] = 0.0
    return feeds


FORMS = ("eager", "sdpa", "key_t")


@pytest.mark.parametrize("form, d, flipped", [("eager", 4, False), ("eager", 16, True), ("sdpa", 16, True),
                                              ("key_t", 16, False)])
def test_scores_are_computed_transposed_where_that_copies_less(form, d, flipped):
    """``rep*S`` = 9 query rows per group: against a head dim of 16 the scores come from
    ``K @ Q_g^T`` (no ``K^T`` copy; the sdpa scale applied to K itself), against 4 from
    ``Q_g @ K^T``; a key transposed before its repeat keeps its place."""
    m = _attention_block(form, d=d)
    src = read_model(m).model
    scores = next(n for n in src.graph.node if n.op_type == "MatMul" and n.name.split("/")[0] in ("qk", "scores"))
    assert scores.input[1].endswith("gqa_left_t") == flipped, scores.input
    assert ("Transpose" in [n.op_type for n in src.graph.node if n.input[0] == "k"]) == (not flipped)
    feeds = _block_feeds(m, seed=4)
    assert_matches(onnxruntime_outputs(src, feeds)[0], onnxruntime_outputs(m, feeds)[0], rtol=1e-5, atol=1e-6)
    if flipped:
        assert_matches(run_on(m, "cpu", feeds, simulate=False)["out"], onnxruntime_outputs(m, feeds)[0],
                       rtol=1e-5, atol=1e-5, what="hetpart")


@pytest.mark.parametrize("form", FORMS)
def test_transformers_block_rewrite_fires(form):
    """torch.onnx's repeat_kv folds (static shapes) to a repeat the rewrite takes: no
    Expand is left, each attention MatMul reads the ``[B, kvH, ...]`` K/V."""
    m = _attention_block(form)
    src = read_model(m).model
    assert "Expand" not in _ops(src) and "Unsqueeze" not in _ops(src), _ops(src)
    for n in (n for n in src.graph.node if n.op_type == "MatMul"):
        assert any(x.endswith(("gqa_left", "gqa_left_t")) for x in n.input), n.input


@pytest.mark.parametrize("form", FORMS)
def test_transformers_block_matches_onnxruntime(form):
    m = _attention_block(form)
    feeds = _block_feeds(m)
    want = onnxruntime_outputs(m, feeds)[0]
    # the rewritten ONNX graph itself, in ONNX Runtime: the rewrite alone, no TVM
    rewritten = read_model(m).model
    assert_matches(onnxruntime_outputs(rewritten, feeds)[0], want, rtol=1e-5, atol=1e-6, what="rewritten, ORT")
    assert_matches(run_on(m, "cpu", feeds, simulate=False)["out"], want, rtol=1e-5, atol=1e-5, what="hetpart")


@pytest.mark.parametrize("why, kwargs, grouped", [
    ("heads repeated rep x kvH (x[h % kvH])", {"repeat_axis": 1}, []),
    ("a per-head scale on the repeated keys", {"per_head_scale": True}, ["ctx"]),  # the values' MatMul only
    ("one head per kv head (rep 1)", {"heads": 2, "kv": 2}, []),
])
def test_non_matching_repeat_is_left_alone(why, kwargs, grouped):
    m = _attention_block("eager", **kwargs)
    src = read_model(m).model
    assert [n.output[0] for n in src.graph.node if n.name.endswith("gqa_out")] == grouped, why
    feeds = _block_feeds(m, seed=1)
    assert_matches(run_on(m, "cpu", feeds, simulate=False)["out"], onnxruntime_outputs(m, feeds)[0],
                   rtol=1e-5, atol=1e-5, what=why)


def test_values_read_by_another_node_keep_their_repeat():
    """A repeated value tensor that is also a graph output stays computed for it; the
    MatMul is grouped all the same."""
    m = _attention_block("eager")
    values = next(n.input[1] for n in m.graph.node if n.op_type == "MatMul" and n.input[0] == "probs")
    m.graph.output.append(helper.make_tensor_value_info(values, TensorProto.FLOAT, [2, 6, 5, 4]))
    src = read_model(m).model
    assert _ops(src).count("Expand") == 1
    feeds = _block_feeds(m, seed=2)
    got = run_on(m, "cpu", feeds, simulate=False)
    for o, want in zip(m.graph.output, onnxruntime_outputs(m, feeds)):
        assert_matches(got[o.name], want, rtol=1e-5, atol=1e-5, what=o.name)


def test_caller_model_is_not_edited():
    """A caller's model that nothing folds (the zoo's constants are literal) is copied
    before it is rewritten, never edited."""
    model = models.build("llama_decode", small=True)
    before = model.SerializeToString()
    assert "Expand" not in _ops(read_model(model).model)
    assert model.SerializeToString() == before
    folded = read_model(_attention_block("eager")).model
    assert group_query_attention(folded) is folded  # nothing left to group: the same object
