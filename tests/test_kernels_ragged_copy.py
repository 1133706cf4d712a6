"""The padded attention scores' copy-back (hetpart/kernels/ragged_copy.py): every whole
panel copied back in vectors, only the ragged last one under a per-element bound check.

The scores ``Q @ K^T`` over ``seq`` tokens are padded to whole vectors (ViT's 197 ->
208 with 8 lanes, 224 with 16) and each register tile copied back into the 197-wide
output; TVM's VectorizeLoop turned every tile's copy-back into scalar code for the
bound check only the last panel needs.  Checked: the schedule (for both x86 vector
widths), the results against ONNX Runtime where the last panel holds one column or
all but one (inputs with negatives and zeros; NaN and infinities), and the guard
derivation's refusals.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from tvm import tirx

from host_isa import WIDTH_TARGETS, width_target
from onnx_cases import assert_matches, reference
from ragged_cases import attention_scores, run_all_cpu, seeded_feeds

from hetpart import kernels, load
from hetpart.kernels import ragged_copy


def _scheduled(seq: int, cpu: str):
    target, lanes = width_target(cpu)
    func = kernels.schedule(load(attention_scores(2, seq, 16)).module, target)["fused_matmul_multiply"]
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuMatmul"
    return func, lanes


def _writes(stmt, buf) -> bool:
    blocks = []
    tvm_ffi.structural_walk(stmt, (tvm.s_tir.SBlock, blocks.append), order="pre")
    return any(w.source.same_as(buf) for b in blocks for w in b.writes)


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
@pytest.mark.parametrize("seq", [197, 33])
def test_whole_panels_copy_back_in_vectors(seq, cpu):
    """The copy-back into the output sits under ``if <panel's last lane in bounds>``:
    its then-branch a vectorised loop (lanes x 2 wide: the tile) writing the output,
    its else-branch the bound-checked copy.  Before, one copy-back, its loop not
    vectorised (0.96 -> 0.70 ms for ViT's scores, 2 threads, AVX2)."""
    func, lanes = _scheduled(seq, cpu)
    out = func.params[-1]
    branches = []
    tvm_ffi.structural_walk(func.body, (tirx.IfThenElse, branches.append), order="pre")
    split = [b for b in branches if _writes(b, out)]
    assert len(split) == 1, func.script()
    loops = []
    tvm_ffi.structural_walk(split[0].then_case, (tirx.For, loops.append), order="pre")
    vec = [lp for lp in loops if lp.kind == tirx.ForKind.VECTORIZED]
    assert len(vec) == 1 and int(vec[0].extent) == 2 * lanes and _writes(vec[0], out), func.script()
    assert split[0].else_case is not None and _writes(split[0].else_case, out), func.script()


# 33 and 47 tokens: the last panel holds 1 and 15 columns with 8 lanes (padded to 48,
# tiles 16 wide), 1 and 15 with 16 lanes (padded to 64, tiles 32 wide); 100 (whisper's
# 1500 scaled down: 4-lane vectors, padded to 112 or 128), 4 columns in the last panel.
@pytest.mark.parametrize("seq", [33, 47, 100, 197])
@pytest.mark.parametrize("special", [False, True])
def test_split_copy_back_matches_onnxruntime(seq, special):
    m = attention_scores(2, seq, 16)
    feeds = seeded_feeds(m, special=special)
    got = run_all_cpu(m, feeds)
    if special:
        want = reference(m, feeds)["y"]
        assert np.isnan(want).any() and np.isinf(want).any(), "the case must exercise both"
    else:
        want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    finite = np.abs(want[np.isfinite(want)])
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(finite.max()), what=f"scores over {seq}")


def test_lane_guard_takes_only_an_increasing_index_under_a_bound():
    """The vectorised branch drops the check on every lane where it holds on the last:
    only sound for ``a < b`` with ``a`` increasing in the lane and ``b`` free of it."""
    lane, p = tirx.Var("lane", "int64"), tirx.Var("p", "int64")
    c = lambda v: tirx.IntImm("int64", v)  # noqa: E731
    guard = ragged_copy._lane_guard(tirx.LT(p * c(16) + lane, c(197)), lane, 15)
    assert guard is not None and tvm_ffi.structural_equal(guard, tirx.LT(p * c(16) + c(15), c(197)))
    for cond in (tirx.LT(p * c(16) - lane, c(197)),       # decreasing in the lane
                 tirx.LT(lane * lane + p, c(197)),        # not linear
                 tirx.LT(p, lane + c(3)),                 # the bound moves with the lane
                 tirx.LE(p * c(16) + lane, c(196))):      # another comparison
        assert ragged_copy._lane_guard(cond, lane, 15) is None, cond
