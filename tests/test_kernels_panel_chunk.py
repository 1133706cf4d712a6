"""Attention products with a large output or row operand per head (whisper's scores and
``P``, ``[1500, 1500]``): the row blocks outside chunks of the K^T (V) panels, the panels
packed (:func:`hetpart.kernels.register_tile.panel_chunk`).

Before, each 16-column panel's tiles ran down all the rows: 64 bytes a row written per
tile, every row's segment straddling two cache lines that the next panel completed
only after the strip had left the caches.  Checked: the loop order and the packed
operand (the output bound lowered so that a small case takes the path), that a matmul
with a model weight (a projection, a 1x1 conv) keeps its order, and the results
against ONNX Runtime and onnx.reference (negatives, zeros; NaN and infinities).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper
from tvm import tirx

from host_isa import WIDTH_TARGETS, width_target
from onnx_cases import assert_matches, reference
from ragged_cases import attention_scores, graph_model, linear, run_all_cpu, seeded_feeds

from hetpart import kernels, load
from hetpart.bench.cpu_layers import LAYERS
from hetpart.kernels import register_tile


@pytest.fixture(params=[4 << 10, 512 << 10], ids=["chunks", "all-panels"])
def small_bound(monkeypatch, request):
    """Apply the order from 16 KiB of output a head (whisper's is 9 MB); chunks of at most
    4 KiB of K^T (several chunks a row block) or the shipped 512 KiB (all the panels)."""
    monkeypatch.setattr(register_tile, "PANEL_CHUNK_OUT_BYTES", 16 << 10)
    monkeypatch.setattr(register_tile, "PANEL_CHUNK_MAX_BYTES", request.param)


def _row_binding(func):
    """The MAC update block's binding of its row index (its iterators: head, row, column, sum)."""
    found = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlockRealize, lambda r: found.append(r)
                                        if r.block.name_hint == "matmul_update" else None))
    return found[0].iter_values[1]


def _divides(expr) -> bool:
    found = []
    tvm_ffi.structural_walk(expr, (tirx.FloorDiv, found.append))
    return bool(found)


def _packed(func, lanes: int) -> bool:
    """Whether K^T is copied into panels: a buffer ``[panels, .., tile width]`` of 5 dims
    (the tile one or two vectors wide, of full or half width)."""
    blocks = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, blocks.append), order="pre")
    return any(len(b.shape) == 5 and int(b.shape[-1]) in (lanes // 2, lanes, 2 * lanes)
               for blk in blocks for b in blk.alloc_buffers)


def _scheduled(cpu: str):
    target, lanes = width_target(cpu)
    return kernels.schedule(load(attention_scores(2, 200, 16)).module, target)["fused_matmul_multiply"], lanes


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
def test_large_scores_put_row_blocks_outside_panel_chunks(cpu, small_bound, monkeypatch):
    """``[2, 200, 16] @ [2, 16, 200]``: the tile loop fuses (head, chunk, row block, panel
    in chunk), so the row block is the fused index divided by the chunk (before: the
    row block innermost, the fused index modulo the row blocks), and K^T is copied into
    panels ``[panels, .., lanes]``."""
    func, lanes = _scheduled(cpu)
    assert _divides(_row_binding(func)) and _packed(func, lanes), func.script()
    monkeypatch.setattr(register_tile, "ROWS_OUTSIDE_PANELS", False)
    before, _ = _scheduled(cpu)
    assert not _divides(_row_binding(before)) and not _packed(before, lanes), before.script()


@pytest.mark.parametrize("cpu", ["haswell", "skylake-avx512"])
def test_whisper_size_takes_the_order_at_the_shipped_bound(cpu):
    """At the shipped bounds whisper-tiny's scores (9 MB a head) take it, ViT's (155 KB)
    not; on AVX2 and AVX-512 (K^T 64 x 1504 floats, 376 KiB: every panel in one chunk)."""
    target, lanes = width_target(cpu)
    big = kernels.schedule(load(attention_scores(2, 1500, 64)).module, target)["fused_matmul_multiply"]
    vit = kernels.schedule(load(attention_scores(2, 197, 64)).module, target)["fused_matmul_multiply"]
    assert _divides(_row_binding(big)) and _packed(big, lanes)
    assert not _divides(_row_binding(vit))
    pv = kernels.schedule(load(_pv(2, 1500, 64)).module, target)["matmul"]
    assert _divides(_row_binding(pv)) and _packed(pv, lanes), pv.script()
    vit_pv = kernels.schedule(load(_pv(2, 197, 64)).module, target)["matmul"]
    assert not _divides(_row_binding(vit_pv))


def _pv(heads, seq, dim):
    """``P @ V`` of an attention: ``[1, heads, seq, seq] @ [1, heads, seq, dim]``."""
    return graph_model([helper.make_node("MatMul", ["x", "v"], ["y"])], {"x": [1, heads, seq, seq], "v": [1, heads, seq, dim]},
                  [1, heads, seq, dim], {})


@pytest.mark.parametrize("special", [False, True])
def test_chunked_p_at_v_matches_onnxruntime(special, small_bound):
    m = _pv(2, 120, 16)
    feeds = seeded_feeds(m, special)
    got = run_all_cpu(m, feeds)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_matches(got, want, rtol=1e-4, atol=1e-5, what="vs ONNX Runtime")
    assert_matches(got, reference(m, feeds)["y"], rtol=1e-4, atol=1e-5, what="vs onnx.reference")


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("heads,seq,dim", [(2, 200, 16), (1, 197, 64), (3, 64, 8)])
def test_chunked_scores_match_onnxruntime(heads, seq, dim, special, small_bound):
    m = attention_scores(heads, seq, dim)
    feeds = seeded_feeds(m, special)
    got = run_all_cpu(m, feeds)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_matches(got, want, rtol=1e-4, atol=1e-5, what="vs ONNX Runtime")
    assert_matches(got, reference(m, feeds)["y"], rtol=1e-4, atol=1e-5, what="vs onnx.reference")


def _scripts(m, target) -> str:
    mod = kernels.schedule(load(m).module, target)
    return "".join(f.script() for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))


@pytest.mark.parametrize("case", ["linear", "conv1x1"])
def test_a_weight_keeps_its_order(case, small_bound, monkeypatch):
    """A projection and a 1x1 conv (a model weight among the operands) are scheduled as
    before: the order is for products of activations only."""
    m = linear(197, 64, 80) if case == "linear" else LAYERS["mb_exp_112"]()
    target = width_target("haswell")[0]
    after = _scripts(m, target)
    monkeypatch.setattr(register_tile, "ROWS_OUTSIDE_PANELS", False)
    assert _scripts(m, target) == after
