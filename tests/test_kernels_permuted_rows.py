"""Copies of permuted contiguous rows on the CPU (hetpart/kernels/rules/cpu_injective.py's
``_permuted_rows``): Swin's window QKV split-heads copy (``[w, t, 3*H*D]`` reshaped to
``[w, t, 3, H, D]``, transposed ``(2, 0, 3, 1, 4)``) and BERT's head split
(``[1, S, H*D] -> [1, H, S, D]``), scaled down, against ONNX Runtime.

The rule schedules only parallel nests; the small cases run with the parallel threshold
at 1 output.  Inputs: standard normal times 3 with every 7th element 0 (negatives and zeros); a copy
is exact, so the outputs must equal ORT's bit for bit.  The schedule itself: the row
(``D`` floats) is the vectorised inner loop under a loop of its own, the outer loops
fused apart from it; with ``PERMUTED_ROWS`` off every loop is fused into one (the old
schedule: ``test_split_heads_copies_whole_rows`` fails), and a broadcast add or a
plain transpose (no rows permuted) keeps its schedule either way.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper

from cpu_tile_cases import build_and_run
from onnx_cases import model, onnxruntime_outputs, single_cpu_kernel

from hetpart.kernels.rules import cpu_injective
from hetpart.targets import cpu_tvm_target


def _split_heads(windows, tokens, heads, dim, scale=False):
    """Swin's split: Reshape to ``[w, t, 3, H, D]``, Transpose ``(2, 0, 3, 1, 4)`` (and a
    Mul by 0.5 after it, an element-wise epilogue, when ``scale``)."""
    shape = np.array([windows, tokens, 3, heads, dim], np.int64)
    out = [3, windows, heads, tokens, dim]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t" if scale else "y"], perm=[2, 0, 3, 1, 4])]
    inits = {"shape": shape}
    if scale:
        nodes.append(helper.make_node("Mul", ["t", "half"], ["y"]))
        inits["half"] = np.array(0.5, np.float32)
    return model(nodes, [("x", [windows, tokens, 3 * heads * dim], np.float32)], [("y", out, np.float32)], inits)


def _bert_heads(seq, heads, dim):
    """BERT's head split: ``[1, S, H*D]`` -> ``[1, S, H, D]`` -> ``(0, 2, 1, 3)``."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])]
    return model(nodes, [("x", [1, seq, heads * dim], np.float32)], [("y", [1, heads, seq, dim], np.float32)],
                 {"shape": np.array([1, seq, heads, dim], np.int64)})


def _bias_add(rows, cols):
    nodes = [helper.make_node("Add", ["x", "b"], ["y"])]
    return model(nodes, [("x", [rows, cols], np.float32)], [("y", [rows, cols], np.float32)],
                 {"b": np.linspace(-1, 1, cols, dtype=np.float32)})


CASES = {
    "swin split 4x9x(3*2*8)": lambda: _split_heads(4, 9, 2, 8),
    "swin split 8x49x(3*3*32)": lambda: _split_heads(8, 49, 3, 32),
    "swin split 64x49x(3*3*32), parallel": lambda: _split_heads(64, 49, 3, 32),
    "swin split + mul 4x16x(3*2*16)": lambda: _split_heads(4, 16, 2, 16, scale=True),
    "bert heads 37x(4*16)": lambda: _bert_heads(37, 4, 16),
}


def _feeds(m) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    (x,) = m.graph.input
    a = (rng.standard_normal([d.dim_value for d in x.type.tensor_type.shape.dim]) * 3).astype(np.float32)
    a.flat[::7] = 0.0
    return {"x": a}


@pytest.mark.parametrize("case", list(CASES))
def test_permuted_rows_match_onnxruntime(case, monkeypatch):
    monkeypatch.setattr(cpu_injective, "PARALLEL_MIN_ELEMENTS", 1)  # the small cases in parallel: rows
    m = CASES[case]()
    feeds = _feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    got = build_and_run(m, feeds, cpu_tvm_target())
    assert (want == 0).any() and (want < 0).any()
    np.testing.assert_array_equal(got, want)


def _loops(func) -> list[tvm.tirx.For]:
    """The loops of ``func``'s one nest, outermost first."""
    loops, stmt = [], func.body
    while True:
        if isinstance(stmt, tvm.tirx.For):
            loops.append(stmt)
            stmt = stmt.body
        elif hasattr(stmt, "block"):  # SBlockRealize
            stmt = stmt.block.body
        else:
            return loops


def test_split_heads_copies_whole_rows():
    """Swin's split on 8-wide vectors: the outer loops fused (in parallel at 64 windows),
    then the row's 32 floats as 4 vectors of 8 -- not one loop over all outputs."""
    func = single_cpu_kernel(_split_heads(64, 49, 3, 32), _avx2())
    loops = _loops(func)
    assert [int(lp.extent) for lp in loops] == [3 * 64 * 3 * 49, 4, 8]
    assert loops[0].kind == tvm.tirx.ForKind.PARALLEL
    assert loops[-1].kind == tvm.tirx.ForKind.VECTORIZED


def test_switch_off_fuses_every_loop(monkeypatch):
    monkeypatch.setattr(cpu_injective, "PERMUTED_ROWS", False)
    loops = _loops(single_cpu_kernel(_split_heads(64, 49, 3, 32), _avx2()))
    assert [int(lp.extent) for lp in loops] == [3 * 64 * 3 * 49 * 4, 8]


def _nhwc_to_nchw(hw, c):
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])]
    return model(nodes, [("x", [1, hw, hw, c], np.float32)], [("y", [1, c, hw, hw], np.float32)])


@pytest.mark.parametrize("case", ["bias add 64x96", "nhwc to nchw 14x14x32"])
def test_other_nests_keep_their_schedule(case, monkeypatch):
    """No permutation of rows (a bias broadcast along rows; a transpose reading one
    element per step, ConvNeXt's NHWC -> NCHW): the same schedule with the switch on
    and off, by the same rule, in parallel or not."""
    m = _bias_add(64, 96) if case.startswith("bias") else _nhwc_to_nchw(14, 32)
    monkeypatch.setattr(cpu_injective, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(cpu_injective, "STRIDED_PARALLEL_MIN_ELEMENTS", 1)
    after = single_cpu_kernel(m, _avx2())
    assert str(after.attrs["hetpart.rule"]) == "CpuInjective"
    monkeypatch.setattr(cpu_injective, "PERMUTED_ROWS", False)
    assert single_cpu_kernel(m, _avx2()).script() == after.script()


def _avx2() -> tvm.target.Target:
    from cpu_tile_cases import mcpu_target

    return mcpu_target("haswell")
