"""Softmax in three passes over a row: the row sum accumulated in the exp pass
(hetpart/kernels/rules/softmax_fold.py, ``cpu_reduction.FOLD_SUM_INTO_EXP``).

Before, a row was max, exp (stored into the output row), sum (the row read back),
scale; ONNX Runtime's MLAS sums the exps in registers as it stores them.  Checked: the
schedule (the exps of the row's whole vectors computed and stored by the sum's partials
loop, only a ragged row's last elements left to the exp pass; log-softmax untouched) for
both x86 vector widths, and the results against ONNX Runtime and ``onnx.reference`` on
whole-vector and ragged rows with negatives, zeros, -inf (masked, fully masked), +inf,
NaN, +-3e38 and exps that underflow; a fold that does not store the exps fails them.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import tirx

from softmax_cases import WIDTHS, for_loops, scheduled_reduction, shift_lefts, softmax_matches_references, special_rows

from hetpart.kernels.rules import cpu_reduction, softmax_fold
from hetpart.runtime import executor, memory


def _data(n: int) -> np.ndarray:
    """tests/test_kernels_reduction_tail.py's rows (zeros, negatives, -inf masks, a fully
    masked row, NaN, +inf, the max in the tail or the first vector, underflowing exps) and
    rows of large magnitudes (+-3e38 alternating, +-1e30, spreads of 80-90 below 0,
    values an ulp apart, all negative)."""
    rng = np.random.default_rng(n)
    big = np.stack([np.where(np.arange(n) % 2, 3e38, -3e38), np.where(np.arange(n) % 3, 1e30, -1e30),
                    -rng.uniform(80.0, 90.0, n), 1.0 + rng.integers(0, 2, n) * 2.0 ** -23,
                    rng.standard_normal(n) * 1e4, -np.abs(rng.standard_normal(n)) * 60.0 - 1.0]).astype(np.float32)
    big[2, n // 3] = 0.0
    return np.concatenate([special_rows(n), big]).reshape(1, 1, 18, n)


def _check(n: int) -> None:
    softmax_matches_references(_data(n))


@pytest.mark.parametrize("mcpu", sorted(WIDTHS))
@pytest.mark.parametrize("n", [197, 256, 512, 1500, 23])
def test_sum_partials_compute_and_store_the_exps(n, mcpu):
    """The sum's unguarded partials update stores the exps into the output row (it holds
    the exp: shifts left) and no exp loop outside it runs over more than the row's last
    ``n % lanes`` elements' vector (ragged rows) -- none over whole-vector rows (of 32
    vectors or more: cpu_reduction.FOLD_MIN_WHOLE_VECTORS)."""
    lanes = WIDTHS[mcpu]
    if n < 2 * lanes:
        pytest.skip("no row partials under two vectors: nothing to fold")
    if n % lanes == 0 and n < cpu_reduction.FOLD_MIN_WHOLE_VECTORS * lanes:
        pytest.skip("short rows of whole vectors are not folded")
    func = scheduled_reduction(n, mcpu)
    blocks = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, blocks.append))
    out = next(b.body.buffer for b in blocks if b.name_hint == "T_softmax_norm")  # the scaling pass
    updates, exp_only = [], []
    for lp in for_loops(func):
        if not isinstance(lp.body, tvm.s_tir.SBlockRealize):
            continue
        block = lp.body.block
        if "expsum_rf_update" in block.name_hint:
            updates.append(block)
        elif shift_lefts(block.body) > 0 and not block.name_hint.endswith("_scope"):
            exp_only.append(int(lp.extent))
    whole = [b for b in updates if shift_lefts(b.body) > 0]
    assert len(whole) == 1, func.script()
    assert any(w.source.same_as(out) for w in whole[0].writes), func.script()
    assert sum(exp_only) <= (lanes if n % lanes else 0), (exp_only, func.script())


@pytest.mark.parametrize("n", [197, 1500])
def test_folded_sum_is_one_chain(n):
    """The folded sum keeps one vector of partials (its adds wait on the exps; two exps
    in flight and two accumulators spilled AVX2's registers), the max keeps two over long
    rows (cpu_reduction.PARTIAL_CHAINS)."""
    func = scheduled_reduction(n, "haswell")
    widths = {}
    for lp in for_loops(func):
        if lp.kind == tirx.ForKind.VECTORIZED and isinstance(lp.body, tvm.s_tir.SBlockRealize):
            name = lp.body.block.name_hint
            if "_rf_update" in name:
                widths.setdefault("sum" if "expsum" in name else "max", set()).add(int(lp.extent))
    assert widths["sum"] == {8}, widths
    assert widths["max"] == ({16} if n >= 256 else {8}), widths


@pytest.mark.parametrize(("n", "op"), [(197, "LogSoftmax"), (128, "Softmax"), (248, "Softmax")])
def test_not_folded(n, op, monkeypatch):
    """Log-softmax sums its exps inside the reduction (no exp pass); softmax over rows of
    fewer than 32 whole vectors (BERT's 128: 1.01x slower folded) is not folded: both
    scheduled the same with the fold on and off."""
    on = scheduled_reduction(n, "haswell", op).script()
    monkeypatch.setattr(cpu_reduction, "FOLD_SUM_INTO_EXP", False)
    assert scheduled_reduction(n, "haswell", op).script() == on


@pytest.mark.parametrize("n", [197, 512, 1500, 23, 9])
def test_folded_softmax_matches_onnxruntime(n):
    _check(n)


@pytest.mark.parametrize("n", [197, 512])
def test_a_fold_that_does_not_store_the_exps_is_caught(n, monkeypatch):
    """The differential check fails when the fold removes the exp pass but its sum
    update does not compute and store the exps (it then sums and scales whatever the
    output row held).  The run's fresh output arrays are poisoned with NaN: an output is
    allocated uninitialised, and memory that last held this softmax's right answer (a
    freed earlier result) made the broken kernel's answer right by accident -- the check
    passed or failed with the allocator's reuse."""
    def broken(sch, upd, exp_store, reads, write):
        return None

    def poisoned(spec):
        arr = memory.aligned_empty(spec)
        arr.fill(np.nan)
        return arr

    monkeypatch.setattr(softmax_fold, "_rewrite_update", broken)
    monkeypatch.setattr(executor, "aligned_empty", poisoned)
    with pytest.raises(AssertionError):
        _check(n)


@pytest.mark.parametrize("n", [197, 512, 1500])
def test_the_fold_reads_no_output_it_has_not_written(n, monkeypatch):
    """With every fresh output poisoned with NaN, the folded softmax still gives the
    references' answer: its sum reads the output row only where its own pass stored it."""
    def poisoned(spec):
        arr = memory.aligned_empty(spec)
        arr.fill(np.nan)
        return arr

    monkeypatch.setattr(executor, "aligned_empty", poisoned)
    _check(n)
