"""hetpart.importer.low_precision_attention: attention's Q, K and V stored in bfloat16 inside a
``cuda=bf16`` partition (``STORE_ATTENTION_OPERANDS_BF16``, off by default).

The graph tests read the lowered op graph (kernels, edges, tensor dtypes, bytes) of the zoo's
BERT layer and of transformers' eager attention export; the correctness tests run the CUDA
partition in simulation (built for the CPU) against ONNX Runtime's float32; the ``cuda``-marked
one runs it on the GPU (the lead's device step), the bmms multiplying in bf16
(``gpu_tensor_core.LOW_PRECISION_ATTENTION_MMA``).  The tensor-core rule's side is
``test_kernels_tensor_core_attention_bf16``.
"""

from __future__ import annotations

import pytest

from hetpart import load
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision_activations as lpa
from hetpart.importer import low_precision_attention as lpq
from hetpart.importer import low_precision_scores as lps
from hetpart.kernels.rules import gpu_tensor_core as tc
from hetpart.targets import cuda_available

from conftest import plan_from_assignment
from precision_cases import (all_on, assert_narrowed, bert_layer, bf16_matches_ort, feeds_with_zeros, hf_attention,
                              switch_keeps_bf16_within_tolerance)

BF16 = Precision(cuda="bf16")


@pytest.fixture
def switch_on(monkeypatch):
    monkeypatch.setattr(lpq, "STORE_ATTENTION_OPERANDS_BF16", True)




def _lowered(graph, plan=None, precision=BF16):
    return lower_plan_weights(graph, plan or all_on(graph, "cuda"), precision)


def _switched(graph, plan=None, precision=BF16):
    """``(before, lowered, narrowed)``: ``graph`` lowered with the switch off and on, and the
    names of the tensors the switch stored in bf16."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lpq, "STORE_ATTENTION_OPERANDS_BF16", False)
        before = _lowered(graph, plan, precision)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lpq, "STORE_ATTENTION_OPERANDS_BF16", True)
        lowered = _lowered(graph, plan, precision)
    narrowed = {n for n, t in lowered.tensors.items() if t.dtype != before.tensors[n].dtype}
    assert all(lowered.tensors[n].dtype == lps.DTYPE for n in narrowed)
    return before, lowered, narrowed


def _bmms(graph):
    """The activation x activation matmul kernels (attention's ``Q K^T``, ``P V``), in graph order."""
    return [k for k in graph.kernels.values()
            if k.op_class == "matmul" and all(graph.tensors[t].producer for t in k.inputs) and len(k.inputs) == 2
            and not k.param_bytes]


def _check_invariants(before, lowered, narrowed) -> None:
    """:func:`precision_cases.assert_narrowed`, and: kernel edges as ``before`` (the graph lowered
    with the switch off); each reader's bytes count its narrowed inputs at 2 an element."""
    assert_narrowed(before, lowered, narrowed)
    for kid, k in lowered.kernels.items():
        assert (k.inputs, k.outputs, k.index) == (before.kernels[kid].inputs, before.kernels[kid].outputs,
                                                   before.kernels[kid].index)
    for n, t in before.tensors.items():
        assert lowered.tensors[n].consumers == t.consumers and lowered.tensors[n].producer == t.producer
    for c in {c for n in narrowed for c in before.tensors[n].consumers}:
        read = sum(before.tensors[i].nbytes // 2 for i in lowered.kernels[c].inputs if i in narrowed)
        assert lowered.kernels[c].bytes_read == before.kernels[c].bytes_read - read


def test_switched_off_changes_nothing(zoo_graph):
    graph = zoo_graph("bert")
    lowered = _lowered(graph)
    assert not any(k.func.endswith(lpq.SUFFIX) for k in lowered.kernels.values())


def test_bert_layer_q_k_v():
    """The zoo's BERT layer (defaults: scores and GEMM inputs in bf16 too): Q, K^T and V -- the
    outputs of the three head-split copies after the projections -- are stored in bf16; both
    bmms then read both operands in bf16 (P from the score pass).  Nothing else changes."""
    graph = load(bert_layer())
    before, lowered, narrowed = _switched(graph)
    assert len(narrowed) == 3
    assert {graph.kernels[graph.tensors[n].producer].op_class for n in narrowed} == {"injective"}
    qk, pv = _bmms(graph)
    assert set(graph.kernels[qk.id].inputs) | {graph.kernels[pv.id].inputs[1]} == narrowed
    for k in (qk, pv):
        func = lowered.module[lowered.kernels[k.id].func]
        assert [str(p.dtype) for p in func.params[:2]] == [lps.DTYPE, lps.DTYPE]
    _check_invariants(before, lowered, narrowed)
    total = sum(k.bytes_read + k.bytes_written for k in lowered.kernels.values())
    saved = sum(graph.tensors[n].nbytes // 2 * 2 for n in narrowed)  # written once, read once
    assert total == sum(k.bytes_read + k.bytes_written for k in before.kernels.values()) - saved


def test_alone_without_the_other_switches(bf16_switches_off):
    """With the score and GEMM-input passes off: the same three tensors and P (the softmax's
    output, read by ``P V`` alone), so both bmms still read both operands in bf16; the scores
    (a softmax's input) and everything else stay float32."""
    graph = load(bert_layer())
    before, lowered, narrowed = _switched(graph)
    assert {n for n, t in lowered.tensors.items() if t.dtype == lps.DTYPE} == narrowed
    qk, pv = _bmms(graph)
    assert narrowed == set(qk.inputs) | set(pv.inputs)
    classes = sorted(graph.kernels[graph.tensors[n].producer].op_class for n in narrowed)
    assert classes == ["injective"] * 3 + ["softmax"]
    assert not any(k.func.endswith((lpa.SUFFIX, lps.SUFFIX)) for k in lowered.kernels.values())
    _check_invariants(before, lowered, narrowed)
    assert not any(k.func.endswith((lpa.SUFFIX, lps.SUFFIX)) for k in lowered.kernels.values())


def test_transformers_attention_form():
    """transformers' eager export (Whisper / DistilBERT: q scaled after its projection, ``K^T`` a
    Transpose node fused into k's head-split copy): the same three tensors; the model's input
    and the merged heads (a weight GEMM's A: the GEMM-input pass's) are not this pass's."""
    graph = load(hf_attention(seq=48))
    before, lowered, narrowed = _switched(graph)
    _check_invariants(before, lowered, narrowed)
    assert sorted(graph.tensors[n].shape for n in narrowed) == [(1, 2, 16, 48), (1, 2, 48, 16), (1, 2, 48, 16)]
    qk, pv = _bmms(graph)
    assert set(qk.inputs) | {pv.inputs[1]} == narrowed


def test_only_edges_inside_one_partition():
    """A head-split copy in the CPU partition before the bmms keeps its float32 output; the
    copies inside the CUDA partition are narrowed."""
    graph = load(bert_layer())
    qk, _ = _bmms(graph)
    q_copy = graph.tensors[qk.inputs[0]].producer
    order = list(graph.topological_order())
    cut = order.index(q_copy) + 1
    assignment = {k: ("cpu" if i < cut else "cuda") for i, k in enumerate(order)}
    _, lowered, narrowed = _switched(graph, plan_from_assignment(graph, assignment))
    assert lowered.tensors[qk.inputs[0]].dtype == "float32"
    assert len(narrowed) == 2


def test_cpu_partitions_in_bf16_are_left():
    """``cpu=bf16``: the CPU partition's weights are bf16, Q, K and V stay float32."""
    graph = load(bert_layer())
    _, lowered, narrowed = _switched(graph, all_on(graph, "cpu"), Precision(cpu="bf16", cuda="bf16"))
    assert any(k.func.endswith("bf16w") for k in lowered.kernels.values())
    assert not narrowed






@pytest.mark.parametrize("which", ["bert", "hf", "whisper"])
def test_matches_onnxruntime_in_simulation(which, monkeypatch):
    """Within 2e-2 of ORT float32, switch off and on (it changes the outputs): the zoo's BERT
    layer at 128 tokens, transformers' attention form, Whisper's encoder widths (6 heads of 64)."""
    model = {"bert": lambda: bert_layer(),
             "hf": lambda: hf_attention(seq=64, width=64, heads=2),
             "whisper": lambda: bert_layer(seq_len=128, hidden=384, heads=6, intermediate=1536)}[which]()
    switch_keeps_bf16_within_tolerance(model, monkeypatch, lpq, "STORE_ATTENTION_OPERANDS_BF16")


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU: the bf16 attention kernels run on the device only")
def test_matches_onnxruntime_on_gpu(switch_on, monkeypatch):
    """All-CUDA bf16 with Q, K, V stored bf16, the bmms in TF32 and then in bf16 ``mma.sync``
    (``LOW_PRECISION_ATTENTION_MMA``), within 2e-2 of ORT float32: the BERT layer, transformers'
    attention form and Whisper's encoder layer at 384 tokens."""
    models_ = [bert_layer(), hf_attention(seq=256, width=384, heads=6),
               bert_layer(seq_len=384, hidden=384, heads=6, intermediate=1536)]
    for m in models_:
        bf16_matches_ort(m, feeds_with_zeros(m), simulate=False)
    monkeypatch.setattr(tc, "LOW_PRECISION_ATTENTION_MMA", True)
    for m in models_:
        bf16_matches_ort(m, feeds_with_zeros(m), simulate=False)
