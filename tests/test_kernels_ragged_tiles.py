"""Register tiles on extents no tile size divides (hetpart/kernels/register_tile.py's
ragged rows, hetpart/kernels/rules/cpu_matmul.py's padded vector dim) against ONNX
Runtime and ``onnx.reference``.

Cases, the corpus shapes scaled down: ViT's 197 tokens (prime: rows of 6, the last
tile ragged) in a linear layer and in the attention scores ``Q @ K^T`` (197 columns:
no whole vectors, the dim padded to an even number of them: 208 with 8 lanes, 224
with 16), inception's asymmetric 1x7 / 7x1
convolutions on 17x17 and a 3x3 on 73x73 (71 wide).  Inputs: negatives and zeros
(standard normal, every 7th element 0); NaN and +-inf at a few places for the
padded matmul (the padding must not leak into the output, nor the output's NaN be
lost).  Tolerances: rtol 1e-5 and an atol of 1e-6 of the largest output (the sums
run in another order than ORT's).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper

from host_isa import WIDTH_TARGETS, width_target
from onnx_cases import assert_matches, reference
from ragged_cases import attention_scores, graph_model, linear, run_all_cpu, seeded_feeds

from hetpart import kernels, load
from hetpart.kernels import weight_prepack
from hetpart.kernels.register_tile import _row_count
from hetpart.targets import cpu_tvm_target


def _conv(c_in, c_out, hw, k, pads, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c_out, c_in, *k)) / np.sqrt(c_in * k[0] * k[1])).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    oh, ow = hw[0] + pads[0] + pads[2] - k[0] + 1, hw[1] + pads[1] + pads[3] - k[1] + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(k), pads=list(pads)),
             helper.make_node("Relu", ["c"], ["y"])]
    return graph_model(nodes, {"x": [1, c_in, *hw]}, [1, c_out, oh, ow], {"w": w, "b": b})


CASES = {
    "linear 197x64 @ 64x80": lambda: linear(197, 64, 80),
    "linear 37x48 @ 48x64": lambda: linear(37, 48, 64),
    "scores 3x197x32": lambda: attention_scores(3, 197, 32),
    "scores 2x197x64": lambda: attention_scores(2, 197, 64),
    "scores 2x37x16": lambda: attention_scores(2, 37, 16),
    "scores 2x100x16": lambda: attention_scores(2, 100, 16),
    "conv 1x7 17x17": lambda: _conv(24, 32, (17, 17), (1, 7), (0, 3, 0, 3)),
    "conv 7x1 17x17": lambda: _conv(24, 48, (17, 17), (7, 1), (3, 0, 3, 0)),
    "conv 3x3 73x73": lambda: _conv(8, 32, (73, 73), (3, 3), (0, 0, 0, 0)),
}


def _rules(m: onnx.ModelProto) -> dict[str, str]:
    return kernels.rules_applied(kernels.schedule(load(m).module, cpu_tvm_target()))


@pytest.mark.parametrize("case", list(CASES))
def test_ragged_tiles_match_onnxruntime(case):
    m = CASES[case]()
    feeds = seeded_feeds(m)
    got = run_all_cpu(m, feeds)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


@pytest.mark.parametrize("case", ["scores 3x197x32", "linear 37x48 @ 48x64"])
def test_ragged_tiles_nan_and_inf_as_the_reference(case):
    """A NaN or infinity in a row or column reaches exactly that row's or column's
    outputs (inf - inf within a dot product is NaN in any order)."""
    m = CASES[case]()
    feeds = seeded_feeds(m, special=True)
    got = run_all_cpu(m, feeds)
    want = reference(m, feeds)["y"]
    assert np.isnan(want).any() and np.isinf(want).any(), "the case must exercise both"
    finite = np.abs(want[np.isfinite(want)])
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(finite.max()), what=case)


def test_attention_scores_are_register_tiled():
    """``Q @ K^T`` over 197 tokens (no whole vectors either way) is the matmul rule's
    padded tile; before, no rule but the reduction rule's took it (10.6 ms against ONNX
    Runtime's 0.46 ms, 2 threads)."""
    rules = _rules(CASES["scores 3x197x32"]())
    assert rules.get("fused_matmul_multiply") == "CpuMatmul", rules


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
def test_attention_scores_write_only_the_output(cpu):
    """The padded columns (197 -> 224 with 16 lanes, 208 with 8; the host's lanes from
    /proc/cpuinfo) never reach the output: every block that writes it iterates over the
    unpadded domain (TVM's reverse_compute_inline of the copy-back into the padded
    write-back gave that block the padded one: stores past the row)."""
    target, lanes = width_target(cpu)
    mod = kernels.schedule(load(CASES["scores 3x197x32"]()).module, target)
    func = mod["fused_matmul_multiply"]
    out = func.params[-1]
    blocks = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, blocks.append), order="pre")
    writers = [b for b in blocks if any(w.source.same_as(out) for w in b.writes)]
    assert writers, func.script()
    padded = [iv for b in writers for iv in b.iter_vars if int(iv.dom.extent) > 197]
    assert not padded, func.script()
    padded_to = -(-197 // (2 * lanes)) * 2 * lanes
    assert any(int(iv.dom.extent) == padded_to for b in blocks for iv in b.iter_vars), "the case must pad"


# tokens -> {float32 lanes: the extent the token dim is padded to, None: not padded}
NARROW = {100: {16: 128, 8: 112}, 50: {16: 64, 8: 64}}


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
@pytest.mark.parametrize("tokens", sorted(NARROW))
def test_narrow_vectors_are_padded_to_full_ones(tokens, cpu):
    """Scores over 100 tokens (whisper's 1500 frames scaled down): with 16 lanes 100 is
    25 vectors of 4 lanes (a quarter vector, ``NARROW_VECTORS``); the dim is padded to
    112 (7 of 16) instead (whisper-tiny's scores: 44 -> 11.6 ms, ONNX Runtime 15.8, 2
    threads), and then to 128, an even number of vectors (cpu_matmul.RAGGED_PANEL_VECTORS).
    With 8 lanes 4 is half a vector, padded too (cpu_matmul.NARROW_LANES: a 4-lane vector
    is padded wherever the target's are wider), to 112 (whisper-tiny's scores on AVX2:
    102 -> 48 ms, 2 threads; before, kept); 50 tokens (vectors of 2) are padded at
    either width, to 64.  The host decides as its width's
    fixed CPU does (lanes from /proc/cpuinfo)."""
    target, lanes = width_target(cpu)
    if lanes not in NARROW[tokens]:
        pytest.skip(f"no padding written down for {lanes}-lane float32 vectors")
    mod = kernels.schedule(load(attention_scores(2, tokens, 16)).module, target)
    func = mod["fused_matmul_multiply"]
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuMatmul"
    blocks = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, blocks.append), order="pre")
    extents = {int(iv.dom.extent) for b in blocks for iv in b.iter_vars}
    want = NARROW[tokens][lanes]
    if want is None:
        assert max(extents) == tokens, func.script()
    else:
        assert want in extents and max(extents) == want, func.script()


def _for_loops(func) -> list:
    loops = []
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, loops.append), order="pre")
    return loops


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
def test_attention_scores_tile_holds_two_vectors(cpu):
    """ViT's scores over 197 tokens: the padded dim is an even number of vectors, so the
    register tile accumulates two vectors a row (rows x 2 x lanes: an unrolled loop of 2
    around the vectorised one); padded to 200 (25 vectors of 8) it held one, 8 rows x 1,
    and the scores took 4.4 ms against 2.3 (cpu_matmul.RAGGED_PANEL_VECTORS)."""
    target, lanes = width_target(cpu)
    func = kernels.schedule(load(CASES["scores 2x197x64"]()).module, target)["fused_matmul_multiply"]
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuMatmul"
    two_vectors = [lp for lp in _for_loops(func)
                   if lp.kind == tvm.tirx.ForKind.UNROLLED and int(lp.extent) == 2
                   and isinstance(lp.body, tvm.tirx.For) and lp.body.kind == tvm.tirx.ForKind.VECTORIZED
                   and int(lp.body.extent) == lanes]
    assert two_vectors, func.script()


def test_padded_operand_copy_runs_in_parallel_on_many_cores():
    """The padded copy of K^T (12 x 64 x 208 = 160 Ki floats, ViT-B/16's shape) runs in
    parallel on a 16-core target, like the squeeze-excite gate
    (register_tile.gate_parallel_min): before, only from 256 Ki elements, so on 16 cores
    one thread copied while 15 waited."""
    from host_isa import FIXED_CPU_LANES

    cpu = next(iter(FIXED_CPU_LANES))
    target, _ = width_target(cpu, cores=16)
    func = kernels.schedule(load(attention_scores(12, 197, 64)).module, target)["fused_matmul_multiply"]
    blocks = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, blocks.append), order="pre")
    params = list(func.params)
    pad = [b for b in blocks if any(w.source.name.endswith("_pad") for w in b.writes)
           and any(r.source.same_as(p) for r in b.reads for p in params)]
    assert pad, func.script()
    parallel = [lp for lp in _for_loops(func) if lp.kind == tvm.tirx.ForKind.PARALLEL]
    pad_writes = {w.source.name for b in pad for w in b.writes}
    assert any(any(w.source.name in pad_writes for w in b.writes)
               for lp in parallel for b in _blocks_under(lp)), func.script()


def _blocks_under(loop) -> list:
    out = []
    tvm_ffi.structural_walk(loop, (tvm.s_tir.SBlock, out.append), order="pre")
    return out


def _transpose(heads, seq, dim):
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2])]
    return graph_model(nodes, {"x": [1, heads, seq, dim]}, [1, heads, dim, seq], {})


@pytest.mark.parametrize("shape", [(3, 197, 32), (2, 37, 24), (2, 100, 16)])
@pytest.mark.parametrize("special", [False, True])
def test_ragged_transpose_matches_onnxruntime(shape, special):
    """K^T over a token count that is no whole number of vectors (197, 37, 100 with 16
    lanes), the ragged last tile included: exactly ORT's values, NaN and +-inf where
    they were (a transpose moves, never computes)."""
    m = _transpose(*shape)
    feeds = seeded_feeds(m, special=special)
    got = run_all_cpu(m, feeds)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
def test_ragged_transpose_is_tiled(cpu):
    """ViT's ``K^T`` (197 tokens: no whole vectors) as the injective rule's transpose
    tiles: each parallel chunk walks the head dim (32 here) over ``lanes`` tokens, whose
    rows it reads while they are in L1 (cpu_injective.RAGGED_TRANSPOSE_TILES); before,
    every element was a gather at a div/mod of one fused index (0.10 -> 0.033 ms)."""
    target, lanes = width_target(cpu)
    mod = kernels.schedule(load(_transpose(3, 197, 32)).module, target)
    func = next(f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    tiles = [lp for lp in _for_loops(func) if int(lp.extent) == 32 and isinstance(lp.body, tvm.tirx.For)
             and int(lp.body.extent) == lanes]
    assert tiles, func.script()


def test_weights_are_not_padded():
    """A weight's ragged dim (marked as kernels.build marks it) keeps its narrow
    vectors, packed once at compile time, rather than a padded copy per call."""
    mod = kernels.schedule(weight_prepack.mark_weights(load(linear(6, 32, 100)).module), cpu_tvm_target())
    func = next(f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    blocks = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, blocks.append), order="pre")
    assert not any(int(iv.dom.extent) == 112 for b in blocks for iv in b.iter_vars), func.script()


@pytest.mark.parametrize("extent, vecs, rows", [
    (197, 2, 6), (17, 2, 6), (71, 2, 8), (73, 2, 5), (73, 1, 8), (56, 2, 8), (147, 2, 7), (8, 2, 8), (5, 2, 5)])
def test_row_count_keeps_the_tile_tall(extent, vecs, rows):
    """A prime extent no longer collapses the tile to one row (a GEMV that reloads the
    weight per row): the count from 4 to 8 (8 for one vector a row: 8 accumulators)
    with the least ragged padding; divisors as before."""
    assert _row_count(extent, 8, vecs) == rows
