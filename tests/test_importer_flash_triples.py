"""``hetpart.importer.flash_triples``: which attention triples a bf16 CUDA partition marks for the flash kernel.

With ``kernels.flash_substitute.FLASH_ATTENTION`` on, ``lower_plan_weights`` marks the Q K^T,
softmax and P V kernels of each unmasked head-dim-64 self-attention block of a bf16 CUDA
partition (their roles, the scores' scale); a CPU partition, a TF32 build, a triple split across
partitions, a masked block, head dim 32 and a score read twice stay unmarked.  The op graph is the
same graph either way (ids, ops, edges, tensors, costs' inputs): only the three PrimFuncs' attributes
and their kernels' signatures differ.  Off, ``lower_plan_weights`` returns what it returned before.
With ``FLASH_MASKED_ATTENTION`` too, the masked exports' triples (DistilBERT's ``Where``, BERT's
additive mask) are marked, their scores kernel with ``BIAS_ATTR``; without it they stay unmarked,
and the unmasked marks are the same either way.
"""

from __future__ import annotations

import dataclasses

import pytest
import tvm_ffi

from attention_cases import masked_attention, onnx_attention
from conftest import plan_from_assignment
from precision_cases import all_on, bert_layer, hf_attention

from hetpart import importer
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import flash_triples as ft
from hetpart.importer import low_precision_attention as lpq
from hetpart.kernels import flash_substitute

BF16 = Precision(cuda="bf16")


@pytest.fixture
def on(monkeypatch):
    """FLASH_ATTENTION alone: unmasked triples only (``masked_on`` adds the masked ones)."""
    monkeypatch.setattr(flash_substitute, "FLASH_ATTENTION", True)
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", False)


def _marks(graph) -> dict[str, tuple]:
    """``{kernel id: (role, scale or None)}`` of the kernels whose PrimFunc carries a mark."""
    out = {}
    for kid, k in graph.kernels.items():
        attrs = graph.module[k.func].attrs
        if attrs is not None and ft.FLASH_ATTR in attrs:
            scale = attrs.get(ft.SCALE_ATTR, None)
            out[kid] = (str(attrs[ft.FLASH_ATTR]), None if scale is None else float(scale.value))
    return out


def _triple(graph):
    """(Q K^T, softmax, P V) kernel ids of the one attention block of ``graph``."""
    sm = next(k for k in graph.kernels.values() if k.op_class == "softmax")
    qk = graph.tensors[sm.inputs[0]].producer
    (pv,) = graph.tensors[sm.outputs[0]].consumers
    return qk, sm.id, pv


def test_bert_layer_marks_its_triple(on):
    graph = importer.load(bert_layer(seq_len=128, hidden=384, heads=6, intermediate=1536))
    marked = lower_plan_weights(graph, all_on(graph, "cuda"), BF16)
    qk, sm, pv = _triple(graph)
    assert _marks(marked) == {qk: ("scores", 0.125), sm: ("softmax", None), pv: ("values", None)}


@pytest.mark.parametrize("scale,want", [("mul", 0.125), ("div", 0.125), ("pre", 1.0)])
def test_scale_of_the_scores(on, scale, want):
    graph = importer.load(onnx_attention(scale))
    marks = _marks(lower_plan_weights(graph, all_on(graph, "cuda"), BF16))
    assert [s for r, s in marks.values() if r == "scores"] == [pytest.approx(want, rel=1e-7)]


def test_whisper_spelling_is_marked(on):
    graph = importer.load(hf_attention(seq=64, width=384, heads=6))
    assert sorted(r for r, _ in _marks(lower_plan_weights(graph, all_on(graph, "cuda"), BF16)).values()) == \
        ["scores", "softmax", "values"]


def test_marked_with_bf16_attention_operands(on, monkeypatch):
    """Q, K, V stored in bf16 first (``STORE_ATTENTION_OPERANDS_BF16``): the retyped kernels are marked."""
    monkeypatch.setattr(lpq, "STORE_ATTENTION_OPERANDS_BF16", True)
    graph = importer.load(onnx_attention())
    assert len(_marks(lower_plan_weights(graph, all_on(graph, "cuda"), BF16))) == 3


@pytest.mark.parametrize("plan,precision", [("cpu", Precision(cpu="bf16")), ("cpu", BF16), ("cuda", Precision()),
                                            ("cuda", Precision(cuda="fp16"))],
                         ids=["cpu_bf16", "cpu_with_cuda_bf16", "cuda_tf32", "cuda_fp16"])
def test_other_partitions_and_precisions_unmarked(on, plan, precision):
    graph = importer.load(onnx_attention())
    assert _marks(lower_plan_weights(graph, all_on(graph, plan), precision)) == {}


def test_triple_split_across_partitions_unmarked(on):
    graph = importer.load(onnx_attention())
    _, sm, _ = _triple(graph)
    plan = plan_from_assignment(graph, {k: "cpu" if k == sm else "cuda" for k in graph.kernels}, "split")
    assert _marks(lower_plan_weights(graph, plan, BF16)) == {}


@pytest.mark.parametrize("kwargs", [dict(mask=True), dict(hd=32), dict(extra_use=True)],
                         ids=["masked", "head_dim_32", "scores_read_twice"])
def test_ineligible_blocks_unmarked(on, kwargs):
    graph = importer.load(onnx_attention(**kwargs))
    assert _marks(lower_plan_weights(graph, all_on(graph, "cuda"), BF16)) == {}


def test_primfunc_shared_with_an_unmarked_kernel_is_not_marked(on):
    """Two identical layers, the first on the CPU: with float32 CPU kernels the second's
    triple shares the CPU's PrimFuncs only when the scores stay float32 -- checked directly on
    :func:`flash_triples.mark_triples` with one group holding the second layer only."""
    graph = importer.load(bert_layer(seq_len=64, hidden=128, heads=2, intermediate=256))
    triple = _triple(graph)
    others = [k for k in graph.kernels if k not in triple]
    extra = dataclasses.replace(graph.kernels[triple[1]], id="copy")  # another caller of the softmax PrimFunc
    shared = dataclasses.replace(graph, kernels={**graph.kernels, "copy": extra})
    assert ft.mark_triples(shared, [list(triple) + others]) is shared
    assert len(_marks(ft.mark_triples(graph, [list(triple) + others]))) == 3


def test_op_graph_unchanged_but_for_signatures(on):
    graph = importer.load(bert_layer(seq_len=128, hidden=384, heads=6, intermediate=1536))
    plan = all_on(graph, "cuda")
    marked = lower_plan_weights(graph, plan, BF16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flash_substitute, "FLASH_ATTENTION", False)
        plain = lower_plan_weights(graph, plan, BF16)
    assert _marks(plain) == {}
    assert list(marked.kernels) == list(plain.kernels) and marked.tensors == plain.tensors
    changed = {kid for kid in plain.kernels if marked.kernels[kid] != plain.kernels[kid]}
    assert changed == set(_triple(graph))
    for kid in plain.kernels:
        assert dataclasses.replace(marked.kernels[kid], signature="") == dataclasses.replace(plain.kernels[kid],
                                                                                               signature="")
    # the marked PrimFuncs differ from the unmarked ones by the attributes only
    for kid in changed:
        f, g = marked.module[marked.kernels[kid].func], plain.module[plain.kernels[kid].func]
        bare = f.without_attr(ft.FLASH_ATTR).without_attr(ft.SCALE_ATTR)
        assert tvm_ffi.structural_equal(bare, g)


def test_on_by_default():
    assert flash_substitute.FLASH_ATTENTION  # since device steps 162/164 (the switch's docstring)


def test_off_marks_nothing(monkeypatch):
    monkeypatch.setattr(flash_substitute, "FLASH_ATTENTION", False)
    graph = importer.load(onnx_attention())
    assert _marks(lower_plan_weights(graph, all_on(graph, "cuda"), BF16)) == {}


# --- masked triples (FLASH_MASKED_ATTENTION) ----------------------------------------------------
@pytest.fixture
def masked_on(on, monkeypatch):
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", True)


@pytest.mark.parametrize("style", ["where", "add"])
def test_masked_exports_unmarked_with_the_masked_switch_off(on, monkeypatch, style):
    """FLASH_ATTENTION alone (FLASH_MASKED_ATTENTION off, its value before device step 166): a masked
    block stays unmarked."""
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", False)
    graph = importer.load(masked_attention(style, batch=2))
    assert _marks(lower_plan_weights(graph, all_on(graph, "cuda"), BF16)) == {}


@pytest.mark.parametrize("style,scale", [("where", 1.0), ("add", 0.125)])
def test_masked_exports_marked(masked_on, style, scale):
    graph = importer.load(masked_attention(style, batch=2))
    low = lower_plan_weights(graph, all_on(graph, "cuda"), BF16)
    qk, sm, pv = _triple(low)
    assert _marks(low) == {qk: ("scores", scale), sm: ("softmax", None), pv: ("values", None)}
    assert low.module[low.kernels[qk].func].attrs[ft.BIAS_ATTR] == 1
    assert all(ft.BIAS_ATTR not in (low.module[low.kernels[k].func].attrs or {}) for k in (sm, pv))
    assert list(low.kernels) == list(graph.kernels)  # the mask kernel stays; nothing added or removed


def test_masked_switch_keeps_unmasked_marks(on, monkeypatch):
    graph = importer.load(bert_layer(seq_len=128, hidden=384, heads=6, intermediate=1536))
    plain = _marks(lower_plan_weights(graph, all_on(graph, "cuda"), BF16))
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", True)
    marked = lower_plan_weights(graph, all_on(graph, "cuda"), BF16)
    assert _marks(marked) == plain and len(plain) == 3
    assert all(ft.BIAS_ATTR not in (marked.module[marked.kernels[k].func].attrs or {}) for k in plain)


def test_masked_head_dim_32_unmarked(masked_on):
    graph = importer.load(masked_attention("add", hd=32))
    assert _marks(lower_plan_weights(graph, all_on(graph, "cuda"), BF16)) == {}
