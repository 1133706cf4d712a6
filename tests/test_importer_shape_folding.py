"""Folding static shape arithmetic before TVM (hetpart.importer.shape_folding).

The end-to-end case is a hand-built stand-in for a HuggingFace BERT exported by
torch.onnx (torchscript exporter, opset 17, static shapes): the export patterns of
``input_ids.size()``, the ``position_ids``/``token_type_ids`` buffers sliced by the
computed sequence length, torch's ``expand`` symbolic (``ConstantOfShape`` ->
``Mul -1`` -> ``Equal`` -> ``Where`` -> ``Expand``), the extended attention mask
(``mask[:, None, None, :].expand(bsz, 1, tgt, src)``, ``1.0 - mask``, ``masked_fill``
with ``finfo.min``), head reshapes to computed shapes and
``arange(numel // bsz).unsqueeze(0).expand(input_shape)``.  TVM 0.27 alone cannot
import it; after folding, hetpart imports it and matches the ONNX reference.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hetpart import models
from hetpart.importer import load, read_model
from hetpart.importer.shape_folding import MAX_BYTES, fold_static_shapes

ONNX_TOL = dict(rtol=1e-4, atol=1e-5)  # as tests/test_compiler_e2e.py


def transformers_like(batch: int = 1, seq: int = 16, hidden: int = 64, vocab: int = 1000,
                      max_pos: int = 512, seed: int = 0) -> onnx.ModelProto:
    """Embeddings + one attention head of a BERT, spelled as torch.onnx exports it."""
    rng = np.random.default_rng(seed)
    f32, i64 = np.float32, np.int64
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))

    def const(name, array):  # torch exports small constants as Constant nodes
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name)))

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], name=f"/{op}_{out}", **attrs))

    def torch_expand(data, size, out):
        """torch.onnx's symbolic for ``data.expand(*size)`` with traced sizes."""
        node("Shape", [size], f"{out}_rank")
        node("ConstantOfShape", [f"{out}_rank"], f"{out}_ones", value=numpy_helper.from_array(np.array([1], i64)))
        node("Mul", [f"{out}_ones", "minus1"], f"{out}_neg")
        node("Equal", [size, f"{out}_neg"], f"{out}_is_neg")
        node("Where", [f"{out}_is_neg", f"{out}_ones", size], f"{out}_shape")
        node("Expand", [data, f"{out}_shape"], out)

    init("word_embeddings.weight", (rng.standard_normal((vocab, hidden)) * 0.02).astype(f32))
    init("position_embeddings.weight", (rng.standard_normal((max_pos, hidden)) * 0.02).astype(f32))
    init("token_type_embeddings.weight", (rng.standard_normal((2, hidden)) * 0.02).astype(f32))
    init("position_ids", np.arange(max_pos, dtype=i64)[None, :])
    init("token_type_ids", np.zeros((1, max_pos), i64))
    init("dense.weight", (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(f32))
    init("dense.bias", (rng.standard_normal(hidden) * 0.1).astype(f32))
    # batch_size, seq_length = input_ids.size()
    node("Shape", ["input_ids"], "input_shape")
    const("c0", np.array(0, i64))
    const("c1", np.array(1, i64))
    const("minus1", np.array(-1, i64))
    node("Gather", ["input_shape", "c0"], "bsz", axis=0)
    node("Gather", ["input_shape", "c1"], "seq_len", axis=0)
    const("axes0", np.array([0], i64))
    node("Unsqueeze", ["bsz", "axes0"], "bsz_1d")
    node("Unsqueeze", ["seq_len", "axes0"], "seq_len_1d")
    const("zero_1d", np.array([0], i64))
    const("one_1d", np.array([1], i64))
    # position_ids = self.position_ids[:, :seq_length]
    node("Slice", ["position_ids", "zero_1d", "seq_len_1d", "one_1d", "one_1d"], "pos_ids")
    # token_type_ids = self.token_type_ids[:, :seq_length].expand(batch_size, seq_length)
    node("Slice", ["token_type_ids", "zero_1d", "seq_len_1d", "one_1d", "one_1d"], "tt_buffered")
    node("Concat", ["bsz_1d", "seq_len_1d"], "tt_size", axis=0)
    torch_expand("tt_buffered", "tt_size", "tt_ids")
    node("Gather", ["word_embeddings.weight", "input_ids"], "words", axis=0)
    node("Gather", ["token_type_embeddings.weight", "tt_ids"], "token_types", axis=0)
    node("Gather", ["position_embeddings.weight", "pos_ids"], "positions", axis=0)
    node("Add", ["words", "token_types"], "emb0")
    node("Add", ["emb0", "positions"], "emb")
    # mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(float); 1.0 - m; masked_fill(finfo.min)
    const("axes12", np.array([1, 2], i64))
    node("Unsqueeze", ["attention_mask", "axes12"], "mask4")
    node("Concat", ["bsz_1d", "one_1d", "seq_len_1d", "seq_len_1d"], "mask_size", axis=0)
    torch_expand("mask4", "mask_size", "mask_expanded")
    node("Cast", ["mask_expanded"], "mask_float", to=TensorProto.FLOAT)
    const("one_f", np.array(1.0, f32))
    node("Sub", ["one_f", "mask_float"], "inverted")
    node("Cast", ["inverted"], "inverted_bool", to=TensorProto.BOOL)
    const("finfo_min", np.array(np.finfo(f32).min, f32))
    node("Where", ["inverted_bool", "finfo_min", "inverted"], "additive_mask")
    # one head; x.view(x.size()[:-1] + (1, hidden)), q = k = v
    node("MatMul", ["emb", "dense.weight"], "x0")
    node("Add", ["x0", "dense.bias"], "x")
    const("hidden_1d", np.array([hidden], i64))
    node("Concat", ["bsz_1d", "seq_len_1d", "one_1d", "hidden_1d"], "heads_shape", axis=0)
    node("Reshape", ["x", "heads_shape"], "x_heads")
    node("Transpose", ["x_heads"], "q", perm=[0, 2, 1, 3])
    node("Transpose", ["x_heads"], "k_t", perm=[0, 2, 3, 1])
    node("MatMul", ["q", "k_t"], "scores0")
    const("scale", np.array(1 / np.sqrt(hidden), f32))
    node("Mul", ["scores0", "scale"], "scores1")
    node("Add", ["scores1", "additive_mask"], "scores")
    node("Softmax", ["scores"], "probs", axis=-1)
    node("MatMul", ["probs", "q"], "context")
    node("Transpose", ["context"], "context_t", perm=[0, 2, 1, 3])
    const("minus1_1d", np.array([-1], i64))
    node("Concat", ["bsz_1d", "seq_len_1d", "minus1_1d"], "merged_shape", axis=0)
    node("Reshape", ["context_t", "merged_shape"], "last_hidden_state")
    # torch.arange(input_ids.numel() // batch_size).unsqueeze(0).expand(input_shape)
    node("Size", ["input_ids"], "numel")
    node("Div", ["numel", "bsz"], "seq_len_again")
    node("Range", ["c0", "seq_len_again", "c1"], "arange")
    node("Unsqueeze", ["arange", "axes0"], "arange_2d")
    node("Expand", ["arange_2d", "input_shape"], "arange_ids")
    node("Cast", ["arange_ids"], "arange_float", to=TensorProto.FLOAT)
    node("ReduceSum", ["last_hidden_state", "minus1_1d"], "hidden_sum", keepdims=0)
    node("Add", ["hidden_sum", "arange_float"], "token_scores")
    graph = helper.make_graph(
        nodes, "transformers_like",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, seq])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, hidden]),
         helper.make_tensor_value_info("token_scores", TensorProto.FLOAT, [batch, seq])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    batch, seq = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 2, seq + 1, (batch, 1))
    mask = (np.arange(seq)[None, :] < lengths).astype(np.int64)  # right padding
    return {"input_ids": rng.integers(0, 1000, (batch, seq)), "attention_mask": mask}


# --- the pass on a small graph ---------------------------------------------------------
def _unit_model():
    """x [2, 3, 8]: flatten to a computed shape; a weight gathered by constant indices;
    a constant expanded past the size limit; a foldable value that is a graph output."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((100, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["x_shape", "zero"], ["n"], axis=0, name="gather_n"),
        helper.make_node("Constant", [], ["axes"], value_ints=[0]),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n_1d"], name="unsqueeze"),
        helper.make_node("Concat", ["n_1d", "minus1"], ["flat_shape"], axis=0, name="concat"),
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"], name="reshape"),
        # a weight read by constant indices: stays, and so does the weight
        helper.make_node("Gather", ["weight", "idx"], ["rows"], axis=0, name="gather_rows"),
        # 1024 x 1024 float32 = 4 MiB > MAX_BYTES: stays
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=numpy_helper.from_array(np.array([1.0], np.float32)), name="big"),
        helper.make_node("ReduceSum", ["big"], ["big_sum"], keepdims=0, name="big_sum"),
        # foldable, but a graph output: stays
        helper.make_node("Size", ["x"], ["x_size"], name="size"),
        # already dead before folding: dropped with the folded nodes
        helper.make_node("Neg", ["x"], ["unused"], name="dead"),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(np.array([3, 1, 4], np.int64), "idx"),
        numpy_helper.from_array(np.array([1024, 1024], np.int64), "big_shape"),
        numpy_helper.from_array(np.arange(10, dtype=np.int64), "unused_buffer"),
    ]
    graph = helper.make_graph(
        nodes, "unit",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, [2, 24]),
         helper.make_tensor_value_info("rows", TensorProto.FLOAT, [3, 8]),
         helper.make_tensor_value_info("big_sum", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("x_size", TensorProto.INT64, [])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_folds_shape_arithmetic_and_keeps_weights(monkeypatch):
    from hetpart.importer import shape_folding

    read = []
    to_array = numpy_helper.to_array
    monkeypatch.setattr(shape_folding.numpy_helper, "to_array", lambda t, *a: read.append(t.name) or to_array(t, *a))
    model = _unit_model()
    original = model.SerializeToString()
    result = fold_static_shapes(model)
    assert "weight" not in read  # weights are never converted, let alone copied
    out = result.model
    assert model.SerializeToString() == original  # not inplace: the input is untouched
    assert result.folded == ["x_shape", "n", "n_1d", "flat_shape"]
    assert [(n.name, n.op_type) for n in out.graph.node] == [
        ("reshape", "Reshape"), ("gather_rows", "Gather"), ("big", "ConstantOfShape"),
        ("big_sum", "ReduceSum"), ("size", "Size"),
    ]
    assert result.removed_nodes == 7  # shape, 2 Constants, gather_n, unsqueeze, concat, dead
    inits = {t.name: t for t in out.graph.initializer}
    # the weight and the inputs of kept nodes stay, byte for byte; dead ones go
    assert sorted(inits) == ["big_shape", "flat_shape", "idx", "weight"]
    assert inits["weight"].SerializeToString() == model.graph.initializer[1].SerializeToString()
    np.testing.assert_array_equal(numpy_helper.to_array(inits["flat_shape"]), [2, -1])
    assert out.graph.node[0].input[1] == "flat_shape"
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 8)).astype(np.float32)
    for got, want in zip(ReferenceEvaluator(out).run(None, {"x": x}), ReferenceEvaluator(model).run(None, {"x": x})):
        np.testing.assert_array_equal(got, want)


def test_size_limit_is_checked_before_computing():
    result = fold_static_shapes(_unit_model(), max_bytes=64)
    assert "flat_shape" in result.folded
    result = fold_static_shapes(_unit_model(), max_bytes=8)  # [2, -1] int64 is 16 bytes
    assert result.folded == ["x_shape", "n", "n_1d"]
    assert MAX_BYTES < 1024 * 1024 * 4  # so the unit model's `big` never folds by default


def test_inplace_edits_the_model_itself():
    model = _unit_model()
    result = fold_static_shapes(model, inplace=True)
    assert result.model is model and len(model.graph.node) == 5


def test_nothing_to_fold_returns_the_same_model():
    """Only a weight gathered by constant indices and a too-large constant: the very
    same object comes back, so such models import exactly as without the pass."""
    weight = numpy_helper.from_array(np.ones((100, 8), np.float32), "weight")
    idx = numpy_helper.from_array(np.array([3, 1], np.int64), "idx")
    big_shape = numpy_helper.from_array(np.array([1024, 1024], np.int64), "big_shape")
    nodes = [
        helper.make_node("Gather", ["weight", "idx"], ["rows"], axis=0),
        helper.make_node("Add", ["x", "rows"], ["y"]),
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "nothing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
        [weight, idx, big_shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fold_static_shapes(model).model is model


# Zoo models written with shape arithmetic or constant-only subgraphs, as exports are:
# swin computes its pads and window shapes from shapes; llama's small rotary tables
# and causal mask are computed from constants.
FOLDING_ZOO = {"swin", "llama", "llama_prefill", "moe"}  # llama_prefill and moe: llama's rotary tables


@pytest.mark.parametrize("name", sorted(set(models.names()) - FOLDING_ZOO))
def test_zoo_models_are_left_alone(name):
    """These zoo models have no shape arithmetic; bert's position lookup (a weight
    gathered by constant indices) must stay for TVM, so they import exactly as before."""
    model = models.build(name, small=True)
    assert fold_static_shapes(model).model is model


def test_swin_zoo_model_folds_to_no_shape_arithmetic():
    model = models.build("swin", small=True)
    folded = fold_static_shapes(model).model
    assert not {"Shape", "Mod"} & {n.op_type for n in folded.graph.node}
    constants = {t.name for t in folded.graph.initializer}
    assert all(n.input[1] in constants for n in folded.graph.node if n.op_type in ("Pad", "Reshape"))
    assert {t.name for t in model.graph.initializer if t.name.endswith(".weight")} <= \
        {t.name for t in folded.graph.initializer}


# --- a transformers-like BERT, end to end -------------------------------------------------
def test_tvm_alone_cannot_import_it():
    """Why the pass exists (pins TVM 0.27): torch's ``arange(..).expand(input_shape)`` at
    batch 1 breaks the frontend's Expand converter."""
    from tvm.relax.frontend.onnx import from_onnx

    with pytest.raises(Exception, match="Cannot use and / or / not operator"):
        from_onnx(transformers_like(batch=1))


@pytest.mark.parametrize("batch", [1, 8])
def test_folding_leaves_no_shape_arithmetic(batch):
    model = transformers_like(batch=batch)
    folded = fold_static_shapes(model).model
    ops = [n.op_type for n in folded.graph.node]
    for op in ("Shape", "Size", "ConstantOfShape", "Equal", "Range", "Concat", "Slice", "Div"):
        assert op not in ops
    assert ops.count("Expand") == 1  # the mask's: it reads the attention_mask input
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    np.testing.assert_array_equal(inits["pos_ids"], np.arange(16)[None])
    np.testing.assert_array_equal(inits["tt_ids"], np.zeros((batch, 16)))
    np.testing.assert_array_equal(inits["mask_expanded_shape"], [batch, 1, 16, 16])
    np.testing.assert_array_equal(inits["heads_shape"], [batch, 16, 1, 64])
    for name in ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight"):
        assert any(t.name == name for t in folded.graph.initializer)  # weights stay
    for name in ("position_ids", "token_type_ids"):
        assert name not in inits  # the buffers only fed folded slices


@pytest.mark.parametrize("batch", [1, 8])
def test_transformers_like_model_imports_and_matches_the_reference(batch, reference_tvm):
    model = transformers_like(batch=batch)
    before = model.SerializeToString()
    graph = load(model)
    assert model.SerializeToString() == before  # the caller's model is not edited
    feeds = feeds_for(model, seed=batch)
    want = ReferenceEvaluator(model).run(None, feeds)
    got = reference_tvm(graph, feeds)
    assert len(graph.outputs) == 2
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, **ONNX_TOL)


def test_read_model_folds():
    source = read_model(transformers_like(batch=2))
    assert not any(n.op_type == "Shape" for n in source.model.graph.node)


# --- torchvision Swin: pads computed from shapes behind a computed reshape ---------------
def swin_window_like(height: int = 8, width: int = 10, channels: int = 3, window: int = 4) -> onnx.ModelProto:
    """torchvision's ``shifted_window_attention`` padding, spelled as torch.onnx exports it.

    ``x.view(B, H // ws, ws, -1, C)`` (a reshape to a computed shape: ONNX shape
    inference cannot follow ``Div`` on a traced size, so the reshaped value's shape is
    unknown), then ``pad_r = (ws - W % ws) % ws`` from that value's shape and torch's
    ``F.pad`` symbolic (``Concat`` of the traced pads -> ``ConstantOfShape`` extension
    -> ``Reshape(-1, 2)`` -> flipped by ``Slice`` -> ``Transpose`` -> ``Reshape(-1)``
    -> ``Cast``).  The pads are constants once the input shape is fixed; TVM 0.27
    refuses a ``Pad`` whose pads are not.
    """
    i64 = np.int64
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=i64), name))

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], name=f"/{op}_{out}", **attrs))

    for name, value in {"zero": 0, "one": 1, "two": 2, "three": 3, "ws": window, "len_pads": 10}.items():
        init(name, value)
    for name, value in {"ax0": [0], "m1": [-1], "m1_2": [-1, 2], "flip_start": [-1],
                        "flip_end": [-(2**63) + 1], "flip_axes": [0], "flip_step": [-1]}.items():
        init(name, value)
    node("Shape", ["x"], "s")
    for dim, idx in (("b", "zero"), ("h", "one"), ("c", "three")):
        node("Gather", ["s", idx], dim, axis=0)
    node("Div", ["h", "ws"], "hw")
    for dim in ("b", "hw", "ws", "c"):
        node("Unsqueeze", [dim, "ax0"], f"{dim}_u")
    node("Concat", ["b_u", "hw_u", "ws_u", "m1", "c_u"], "view_shape", axis=0)
    node("Reshape", ["x", "view_shape"], "windows")  # [B, H/ws, ws, W, C]
    node("Shape", ["windows"], "ws_shape")
    node("Gather", ["ws_shape", "three"], "w", axis=0)
    node("Mod", ["w", "ws"], "w_mod")
    node("Sub", ["ws", "w_mod"], "w_left")
    node("Mod", ["w_left", "ws"], "pad_r")
    node("Unsqueeze", ["pad_r", "ax0"], "pad_r_u")
    # F.pad(x, (0, 0, 0, pad_r)): last dim (0, 0), then dim 3 (0, pad_r).
    node("Concat", ["ax0", "ax0", "ax0", "pad_r_u"], "pad_list", axis=0)
    node("Shape", ["pad_list"], "pad_len")
    node("Sub", ["len_pads", "pad_len"], "ext_len")  # 2 * rank - given
    node("ConstantOfShape", ["ext_len"], "ext", value=numpy_helper.from_array(np.array([0], i64)))
    node("Concat", ["pad_list", "ext"], "pads_flat", axis=0)
    node("Reshape", ["pads_flat", "m1_2"], "pads_pairs")
    node("Slice", ["pads_pairs", "flip_start", "flip_end", "flip_axes", "flip_step"], "pads_flipped")
    node("Transpose", ["pads_flipped"], "pads_t", perm=[1, 0])
    node("Reshape", ["pads_t", "m1"], "pads_onnx")
    node("Cast", ["pads_onnx"], "pads", to=TensorProto.INT64)
    node("Pad", ["windows", "pads"], "padded")
    node("Relu", ["padded"], "y")
    hw = height // window
    padded_w = width + (window - width % window) % window
    graph = helper.make_graph(
        nodes, "swin_window_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, height, width, channels])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, hw, window, padded_w, channels])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_swin_pads_computed_from_shapes_become_constants(reference_tvm):
    """Swin-T failed with "Dynamic pads are not supported yet": the pads' shape chain
    sits behind a reshape whose shape inference cannot see; folding repeats until the
    pads are an initializer."""
    model = swin_window_like()
    onnx.checker.check_model(model, full_check=True)
    folded = fold_static_shapes(model).model
    pad = next(n for n in folded.graph.node if n.op_type == "Pad")
    pads = next(t for t in folded.graph.initializer if t.name == pad.input[1])
    assert numpy_helper.to_array(pads).tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 2, 0]
    assert not any(n.op_type in ("Shape", "Mod", "Concat") for n in folded.graph.node)
    graph = load(model)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 8, 10, 3)).astype(np.float32)}
    (want,) = ReferenceEvaluator(model).run(None, feeds)
    (got,) = reference_tvm(graph, feeds)
    np.testing.assert_allclose(got, want, **ONNX_TOL)
