"""The ragged last of two row tiles as a branch of its own, the whole tiles unchecked
(hetpart/kernels/ragged_rows.py, applied by hetpart/kernels/register_tile.py), against
ONNX Runtime and ``onnx.reference``, and the schedule it leaves.

Cases: 1x1 convs (mobilenet_v2's 320->1280 / 160->960 on 7x7, scaled down in channels)
whose rows are tiled 4 + 3 with 8 lanes (AVX2) and 7 + 6 on 13x13 with 16 (AVX-512),
with ReLU6 (``Clip``), a residual add, no epilogue, at batch 1 and 2; a matmul of 13
rows.  Inputs: negatives and zeros (standard normal, every 7th element 0); NaN and
+-inf at a few places (in the rows of both branches: the NaN/inf pattern must be the
reference's).  Tolerances: rtol 1e-5 and an atol of 1e-6 of the
largest output (ORT sums in another order).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper, numpy_helper

from host_isa import width_target
from onnx_cases import assert_matches, reference, run_on

from hetpart import kernels, load
from hetpart.kernels import ragged_rows


def _graph(nodes, inputs, output, inits):
    g = helper.make_graph(
        nodes, "rows", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, output)],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _pointwise(c_in, c_out, hw, epilogue="relu6", batch=1, seed=0):
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((c_out, c_in, 1, 1)) / np.sqrt(c_in)).astype(np.float32),
             "b": rng.standard_normal(c_out).astype(np.float32)}
    inputs = {"x": [batch, c_in, hw, hw]}
    out = "y" if epilogue == "none" else "c"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [out], kernel_shape=[1, 1])]
    if epilogue == "relu6":
        inits.update(lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif epilogue == "add":
        inputs["r"] = [batch, c_out, hw, hw]
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
    return _graph(nodes, inputs, [batch, c_out, hw, hw], inits)


def _linear(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32),
             "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
    return _graph(nodes, {"x": [1, m, k]}, [1, m, n], inits)


CASES = {
    "1x1 96->64 7x7 relu6": lambda: _pointwise(96, 64, 7),
    "1x1 96->64 7x7 add b2": lambda: _pointwise(96, 64, 7, "add", batch=2),
    "1x1 80->32 7x7 none": lambda: _pointwise(80, 32, 7, "none"),
    "1x1 96->64 13x13 relu6": lambda: _pointwise(96, 64, 13),
    "linear 13x96 @ 96x64": lambda: _linear(13, 96, 64),
}


def _feeds(m: onnx.ModelProto, special: bool = False) -> dict:
    rng = np.random.default_rng(1)
    out = {}
    for i in m.graph.input:
        x = (rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 3).astype(np.float32)
        x.flat[::7] = 0.0
        if special:
            x.flat[[3, x.size // 2 + 1, x.size - 1]] = [np.nan, np.inf, -np.inf]
        out[i.name] = x
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_shifted_rows_match_onnxruntime(case):
    m = CASES[case]()
    feeds = _feeds(m)
    got = run_on(m, "cpu", feeds)["y"]
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


@pytest.mark.parametrize("case", ["1x1 80->32 7x7 none", "1x1 96->64 13x13 relu6"])
def test_shifted_rows_nan_and_inf_as_the_reference(case):
    m = CASES[case]()
    feeds = _feeds(m, special=True)
    got = run_on(m, "cpu", feeds)["y"]
    want = reference(m, feeds)["y"]
    assert np.isnan(want).any(), "the case must exercise NaN"
    finite = np.abs(want[np.isfinite(want)])
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(finite.max()), what=case)


def _realizes(func) -> list:
    out = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlockRealize, out.append))
    return out


def _tile_blocks(func) -> list:
    """The register tile's init, update and write-back realizes (the blocks that read or
    write the tile's accumulator, ``*_global``)."""
    out = []
    for r in _realizes(func):
        names = [x.source.name for x in list(r.block.reads) + list(r.block.writes)]
        if any(n.endswith("_intermediate_global") or n.endswith("_global") and "param" not in n for n in names):
            out.append(r)
    return out


def _row_checked(realize, extent: int) -> bool:
    """Whether ``realize``'s predicate bounds a binding by ``extent`` (the row check)."""
    found = []

    def visit(e):
        if isinstance(e.b, tvm.tirx.IntImm) and int(e.b) == extent and any(
                tvm_ffi.structural_equal(e.a, v) for v in realize.iter_values):
            found.append(e)
    tvm_ffi.structural_walk(realize.predicate, (tvm.tirx.LT, visit))
    return bool(found)


# (case, cpu, row extent, split?)
SCHEDULES = [
    ("1x1 96->64 7x7 relu6", "haswell", 7, True),  # 8 lanes: rows 4 + 3
    ("1x1 96->64 13x13 relu6", "skylake-avx512", 13, True),  # 16 lanes: rows 7 + 6
    ("linear 13x96 @ 96x64", "skylake-avx512", 13, True),
    ("1x1 96->64 13x13 relu6", "haswell", 13, False),  # 5 + 5 + 3: three tiles, checked
]


def _split(case, cpu):
    target, _ = width_target(cpu)
    mod = kernels.schedule(load(CASES[case]()).module, target)
    return next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


@pytest.mark.parametrize("case,cpu,extent,split", SCHEDULES)
def test_two_row_tiles_split_off_the_ragged_one(case, cpu, extent, split):
    """Two row tiles over one reduction loop, the second ragged: the whole tile's blocks
    check no row (before, every multiply-add of every tile did, and with 16 registers
    LLVM kept the checked row's accumulators on the stack: mobilenet_v2's 320->1280 on
    7x7 1.19 ms, split 0.69, 1 thread AVX2); the ragged tile is a copy (``*_ragged``)
    whose checks are on constants.  Three tiles or more keep the checks (measured no
    faster there)."""
    func = _split(case, cpu)
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuMatmul", func.script()
    tile = _tile_blocks(func)
    whole = [r for r in tile if not r.block.name_hint.endswith("_ragged")]
    ragged = [r for r in tile if r.block.name_hint.endswith("_ragged")]
    assert len(whole) == 3, func.script()
    checked = [_row_checked(r, extent) for r in whole]
    if split:
        assert not any(checked) and len(ragged) == 3, func.script()
    else:
        assert all(checked) and not ragged, func.script()


def test_split_is_off_with_the_switch(monkeypatch):
    """``SPLIT_RAGGED_ROWS = False`` gives the checked tiles back (the A/B tools' switch)."""
    monkeypatch.setattr(ragged_rows, "SPLIT_RAGGED_ROWS", False)
    func = _split("1x1 96->64 7x7 relu6", "haswell")
    tile = _tile_blocks(func)
    assert len(tile) == 3 and all(_row_checked(r, 7) for r in tile), func.script()


@pytest.mark.parametrize("rows,extent,loops,want", [
    (4, 7, 1, True), (7, 13, 1, True), (5, 14, 1, False), (8, 197, 1, False), (4, 7, 3, False), (4, 8, 1, False),
    (6, 17, 2, True), (6, 71, 3, False)])
def test_applies_to_two_tiles_over_one_reduction_loop_and_to_line_windows(rows, extent, loops, want):
    assert ragged_rows.applies(rows, extent, loops) is want


@pytest.mark.parametrize("cpu", ["haswell", "skylake-avx512"])
def test_line_window_tiles_split_off_the_ragged_one(cpu):
    """Inception's 1x7 conv on 17x17 (a reduction over channels and a 1-D window; 17 rows
    in tiles of 5 or 6): the whole tiles carry no row check (1x7 192->192 2.87 -> 1.97 ms,
    1 thread, AVX2: ragged_rows.SPLIT_LINE_WINDOWS)."""
    target, _ = width_target(cpu)
    mod = kernels.schedule(load(_line_window()).module, target)
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    tile = _tile_blocks(func)
    whole = [r for r in tile if not r.block.name_hint.endswith("_ragged")]
    assert len(whole) == 3 and len(tile) == 6, func.script()
    assert not any(_row_checked(r, 17) for r in whole), func.script()


def _line_window(seed=0):
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((32, 24, 1, 7)) / np.sqrt(24 * 7)).astype(np.float32),
             "b": rng.standard_normal(32).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 7], pads=[0, 3, 0, 3]),
             helper.make_node("Relu", ["c"], ["y"])]
    return _graph(nodes, {"x": [1, 24, 17, 17]}, [1, 32, 17, 17], inits)


def test_line_window_matches_onnxruntime():
    m = _line_window()
    feeds = _feeds(m)
    got = run_on(m, "cpu", feeds)["y"]
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what="1x7 17x17")
