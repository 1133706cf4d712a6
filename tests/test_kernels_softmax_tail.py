"""Softmax over rows of no whole number of vectors (ViT's 197 tokens): the ``exp`` pass's
last ``n % lanes`` elements computed as one vector (hetpart/kernels/row_tail.py), and
the normalisation by the reciprocal of the row's sum
(cpu_reduction.reciprocal_divisor).

Before, the ``exp`` of the last 5 of 197 elements ran as scalar code (LLVM's loop
remainder: a fifth of the kernel's time) and every element was divided by the sum.
Checked: the schedule for both x86 vector widths, and the results against ONNX
Runtime and ``onnx.reference`` on rows with negatives, zeros, -inf (a fully masked
row), +inf, NaN and large values, the special values in the tail too, for tails of
1 to 7 elements (tests/test_kernels_reduction_tail.py's rows).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import tirx

from onnx_cases import assert_matches, reference
from softmax_cases import (WIDTHS, all_cpu_output, for_loops, ort_output, scheduled_reduction, shift_lefts,
                           softmax_matches_references, special_rows)

from hetpart.bench.cpu_softmax import softmax_model
from hetpart.kernels.rules import cpu_reduction


def _calls(expr, name: str) -> int:
    op, found = tvm.ir.Op.get(name), []
    tvm_ffi.structural_walk(expr, (tvm.ir.Call, lambda c: found.append(c) if c.op.same_as(op) else None))
    return len(found)


@pytest.mark.parametrize("mcpu", sorted(WIDTHS))
@pytest.mark.parametrize("n", [197, 1500, 23])
def test_exp_tail_is_one_vector(n, mcpu, monkeypatch):
    """The exp pass (the loop whose block computes ``fast_exp``: a shift left) runs over the
    row's whole vectors, and its tail is one vectorised block of ``lanes`` writing a
    per-row buffer; no exp loop runs over the whole row (LLVM's loop: a scalar remainder).
    (Without the sum folded into the exp pass, which takes over the whole vectors:
    tests/test_kernels_softmax_fold.py.)"""
    monkeypatch.setattr(cpu_reduction, "FOLD_SUM_INTO_EXP", False)
    lanes = WIDTHS[mcpu]
    if n % lanes == 0 or n < lanes:
        pytest.skip("no tail at this width")
    func = scheduled_reduction(n, mcpu)
    exp_loops = [lp for lp in for_loops(func) if isinstance(lp.body, tvm.s_tir.SBlockRealize)
                 and shift_lefts(lp.body.block.body) > 0]
    extents = sorted((int(lp.extent), lp.kind == tirx.ForKind.VECTORIZED) for lp in exp_loops)
    assert extents == sorted([(n - n % lanes, False), (lanes, True)]), (extents, func.script())
    tail = next(lp for lp in exp_loops if lp.kind == tirx.ForKind.VECTORIZED).body.block
    assert tail.body.buffer.name.endswith("_row_tail"), func.script()


def test_rows_of_whole_vectors_have_no_tail():
    func = scheduled_reduction(128, "haswell")
    blocks = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, blocks.append))
    assert not any("row_tail" in b.name_hint for b in blocks), func.script()


@pytest.mark.parametrize("n", [197, 128])
def test_softmax_scales_by_the_reciprocal_of_the_sum(n):
    """The last pass multiplies by ``1 / sum`` (one division per row, hoisted by LLVM);
    before, it divided every element by the sum."""
    func = scheduled_reduction(n, "haswell")
    divs = []
    tvm_ffi.structural_walk(func.body, (tirx.Div, divs.append))
    by_sum = [d for d in divs if isinstance(d.b, tvm.ir.TensorLoad) and "expsum" in d.b.source.name]
    assert len(by_sum) == 1 and isinstance(by_sum[0].a, tirx.FloatImm) and float(by_sum[0].a.value) == 1.0, \
        func.script()


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("n", [9, 23, 197])
def test_softmax_with_a_vector_tail_matches_onnxruntime(op, n):
    """Tails of 1 and 7 (and 5) elements, special values in them (``_rows``: NaN, +inf,
    the row's max, the one unmasked entry in the last element)."""
    shape = (1, 2, 6, n)
    x = special_rows(n).reshape(shape)
    m = softmax_model(op, shape)
    got = all_cpu_output(m, x)
    assert_matches(got, ort_output(m, {"x": x}), what=f"{op} n={n} vs ONNX Runtime")
    if op == "Softmax":  # onnx.reference's LogSoftmax is log(softmax): -inf where exp underflows
        with np.errstate(all="ignore"):
            want = reference(m, {"x": x})["y"]
        assert_matches(got, want, what=f"{op} n={n} vs onnx.reference")


def _has_overflow_clamp(func) -> bool:
    consts = []
    tvm_ffi.structural_walk(func.body, (tirx.FloatImm, lambda c: consts.append(float(c.value))))
    return float(np.float32(88.72283935546875)) in consts


@pytest.mark.parametrize("mcpu", sorted(WIDTHS))
@pytest.mark.parametrize("n", [197, 128])
def test_softmax_exp_is_the_short_form(n, mcpu):
    """Softmax's ``exp(x - max(row))`` is ``<= 0`` or NaN: its exp pass, over a ragged row
    (197) and over whole vectors (128: before, the full ``fast_exp``), is
    ``fast_exp._below_max_exp`` (cpu_reduction.row_max_exps): no clamp at ln(FLT_MAX), no
    ``floor``, no NaN select.  Log-softmax (its exp inside the sum) keeps the full one."""
    func = scheduled_reduction(n, mcpu)
    assert not _has_overflow_clamp(func), func.script()
    assert _calls(func.body, "tirx.floor") == 0 and _calls(func.body, "tirx.isnan") == 0, func.script()
    assert shift_lefts(func.body) > 0, func.script()
    assert _has_overflow_clamp(scheduled_reduction(n, mcpu, "LogSoftmax"))


@pytest.mark.parametrize("n", [128, 197, 1500])
def test_short_exp_softmax_of_large_magnitudes_matches_onnxruntime(n):
    """Softmax with the short exp (``fast_exp._below_max_exp``) over whole-vector (128) and
    ragged rows, on tests/test_kernels_reduction_tail.py's rows (negatives, zeros, -inf,
    a fully masked row, +inf, NaN) and rows of large magnitudes: +-3e38 alternating (the
    differences overflow to -inf: exact zeros), +-1e30, spreads of 80-90 around the max
    (the exps near and below ``2**-126``, where the short exp flushes), values within an ulp
    of each other; against ONNX Runtime and onnx.reference."""
    rng = np.random.default_rng(1)
    big = np.stack([np.where(np.arange(n) % 2, 3e38, -3e38), np.where(np.arange(n) % 3, 1e30, -1e30),
                    -rng.uniform(80.0, 90.0, n), 1.0 + rng.integers(0, 2, n) * 2.0 ** -23,
                    rng.standard_normal(n) * 1e4, -np.abs(rng.standard_normal(n)) * 60.0]).astype(np.float32)
    big[2, 7] = 0.0
    softmax_matches_references(np.concatenate([special_rows(n), big]).reshape(1, 1, 18, n))


