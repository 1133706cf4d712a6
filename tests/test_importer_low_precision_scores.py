"""hetpart.importer.low_precision_scores: attention's scores and probabilities stored in
bfloat16 inside a ``cuda=bf16`` partition (``STORE_SCORES_BF16``, on by default).

The graph tests read the lowered op graph (kernels, tensor dtypes, bytes); the
correctness test runs the CUDA partition in simulation (built for the CPU) against ONNX
Runtime's float32; the ``cuda``-marked one runs it on the GPU (the lead's device step).
"""

from __future__ import annotations

import numpy as np
import pytest

from hetpart import compiler
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision_scores as lps
from hetpart.targets import cuda_available

from conftest import plan_from_assignment, random_feeds, run_composed
from precision_cases import REL_TOL, all_on, hf_attention, ort_outputs, relative_error


pytestmark = pytest.mark.usefixtures("bf16_switches_off")  # each test turns on what it is about

BF16 = Precision(cuda="bf16")


@pytest.fixture
def switch_on(monkeypatch):
    monkeypatch.setattr(lps, "STORE_SCORES_BF16", True)


def _lowered(graph, plan=None):
    return lower_plan_weights(graph, plan or all_on(graph, "cuda"), BF16)


def test_switched_off_changes_nothing(zoo_graph):
    graph = zoo_graph("bert")  # (the switches off: bf16_switches_off)
    lowered = _lowered(graph)
    assert not any(k.func.endswith(lps.SUFFIX) for k in lowered.kernels.values())
    assert lps.DTYPE not in {t.dtype for t in lowered.tensors.values()}


def test_scores_and_probabilities_in_bf16(zoo_graph, switch_on):
    """Small BERT (2 layers): per layer, Q K^T (scale fused) writes bf16, softmax reads and
    writes bf16, P V reads bf16; no kernel added, nothing else retyped, bytes halved."""
    graph = zoo_graph("bert")
    lowered = _lowered(graph)
    assert list(lowered.kernels) == list(graph.kernels)
    softmaxes = [k for k in lowered.kernels.values() if k.op_class == "softmax"]
    assert len(softmaxes) == 2
    narrow = sorted(n for n, t in lowered.tensors.items() if t.dtype == lps.DTYPE)
    assert narrow == sorted(t for s in softmaxes for t in (*s.inputs, *s.outputs))
    base = graph  # these three kernels hold no weights: the bf16 weights change none of their bytes
    for s in softmaxes:
        (src,), (dst,) = s.inputs, s.outputs
        qk = lowered.kernels[lowered.tensors[src].producer]
        (pv,) = lowered.tensors[dst].consumers
        pv = lowered.kernels[pv]
        assert qk.op_class == pv.op_class == "matmul"
        half = graph.tensors[src].nbytes // 2
        assert qk.bytes_written == base.kernels[qk.id].bytes_written - half
        assert s.bytes_read == base.kernels[s.id].bytes_read - half
        assert s.bytes_written == base.kernels[s.id].bytes_written - half
        assert pv.bytes_read == base.kernels[pv.id].bytes_read - half
        for k in (qk, s, pv):
            assert k.func.endswith(lps.SUFFIX) and k.signature != graph.kernels[k.id].signature
        prim = lowered.module[s.func]
        assert [str(p.dtype) for p in prim.params] == [lps.DTYPE, lps.DTYPE]
    # the Relax program agrees: the bindings of the scores and probabilities are bf16
    main = lowered.module["main"]
    typed = [str(b.var.ty.dtype) for blk in main.body.blocks for b in blk.bindings if hasattr(b.var.ty, "dtype")]
    assert typed.count(lps.DTYPE) == 4


def test_only_edges_inside_one_partition(zoo_graph, switch_on):
    """A softmax whose P V runs in another partition keeps its output in float32."""
    graph = zoo_graph("bert")
    s = next(k for k in graph.kernels.values() if k.op_class == "softmax")
    (pv,) = graph.tensors[s.outputs[0]].consumers
    order = list(graph.topological_order())
    cut = order.index(pv)
    assignment = {k: ("cuda" if i < cut else "cpu") for i, k in enumerate(order)}
    lowered = _lowered(graph, plan_from_assignment(graph, assignment))
    assert lowered.tensors[s.inputs[0]].dtype == lps.DTYPE
    assert lowered.tensors[s.outputs[0]].dtype == "float32"


def _check(graph, onnx_model, simulate: bool):
    compiled = compiler.compile(all_on(graph, "cuda"), simulate=simulate, progress=False, precision="cuda=bf16")
    feeds = random_feeds(graph, 0)
    got = run_composed(compiled, feeds)
    for g, w in zip(got, ort_outputs(onnx_model, feeds)):
        assert relative_error(g, w) <= REL_TOL, f"relative error {relative_error(g, w):.3g}"
    return got


def test_matches_onnxruntime_in_simulation(zoo_graph, zoo_onnx, monkeypatch):
    graph = zoo_graph("bert")
    before = _check(graph, zoo_onnx("bert"), simulate=True)
    monkeypatch.setattr(lps, "STORE_SCORES_BF16", True)
    after = _check(graph, zoo_onnx("bert"), simulate=True)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before)), "the switch changed nothing"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU: the bf16 scores' kernels run on the device only")
def test_matches_onnxruntime_on_gpu(zoo_onnx, switch_on):
    """Whisper-shaped attention (seq 1500 would be slow on ORT's CPU; 384 tokens, 6 heads
    of 64) and small BERT, all-CUDA bf16 with the switch on, within 2e-2 of ORT float32."""
    from hetpart import load, models

    _check(load(zoo_onnx("bert")), zoo_onnx("bert"), simulate=False)
    whisperish = models.build("bert", False, layers=1, batch=1, seq_len=384, hidden=384, heads=6,
                              intermediate=1536, vocab=1000)
    _check(load(whisperish), whisperish, simulate=False)


def test_transformers_attention_form(switch_on):
    """The form of the corpus's Whisper export: both edges found, outputs within 2e-2 of ORT."""
    from hetpart import load

    m = hf_attention()
    graph = load(m)
    (edge_in, edge_out) = lps.score_edges(graph, graph.kernels)
    assert graph.kernels[edge_in.consumers[0]].op_class == "softmax" and edge_out.producer == edge_in.consumers[0]
    _check(graph, m, simulate=True)
