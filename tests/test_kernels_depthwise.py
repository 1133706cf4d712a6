"""The CPU channel-row schedule of depthwise convolutions (hetpart/kernels/rules/cpu_depthwise.py,
through the conv2d rule) against ONNX Runtime and ``onnx.reference``.

Cases: EfficientNet-B0's depthwise layers scaled down (3x3 and 5x5 windows, strides 1
and 2, output widths that are and are not whole vectors: 56, 14, 7, 15) with a bias
and a SiLU, ReLU or no epilogue.  Inputs: negatives and zeros (random, half of them
negative, every 7th element 0); a second input with NaN and +-inf at a few places
(a convolution spreads each over its window; ``inf + -inf`` within a window is NaN,
whatever the order of the sum, so the patterns compare exactly).

Tolerances: rtol 1e-5 and an atol of 1e-6 of the largest output -- the window's sum is
the same in hetpart and the reference, but ORT sums it in another order and its SiLU
(MLAS's sigmoid) is within ~5e-8 absolute (see tests/test_kernels_elementwise_exp.py).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper, numpy_helper

from onnx_cases import assert_matches, compile_on, single_cpu_kernel, reference

from hetpart import kernels


# name -> (channels, image, kernel, stride, epilogue)
CASES = {
    "3x3 s1 56 silu": (24, 56, 3, 1, "silu"),
    "5x5 s2 56 silu": (24, 56, 5, 2, "silu"),
    "5x5 s1 14 silu": (64, 14, 5, 1, "silu"),
    "3x3 s1 7 silu": (96, 7, 3, 1, "silu"),
    "3x3 s2 30 relu": (16, 30, 3, 2, "relu"),
    "3x3 s1 15 none": (16, 15, 3, 1, "none"),
    # mobilenet_v2's depthwise layers (ReLU6 as Clip), scaled down in channels
    "3x3 s1 112 relu6": (8, 112, 3, 1, "relu6"),
    "3x3 s2 112 relu6": (8, 112, 3, 2, "relu6"),
    "3x3 s1 56 relu6": (16, 56, 3, 1, "relu6"),
    "3x3 s1 28 relu6": (16, 28, 3, 1, "relu6"),
    "3x3 s2 14 relu6": (32, 14, 3, 2, "relu6"),
    # stride 2 on an odd image: 28-wide output rows of 4-lane vectors (cpu_depthwise._stride2_lanes)
    "3x3 s2 55 none": (12, 55, 3, 2, "none"),
    "3x3 s2 112 none": (8, 112, 3, 2, "none"),
    # MobileNetV3's / EfficientNet's 5x5 and convnext's 7x7 on 28- and 56-wide images:
    # 25 and 49 window steps, which took the row-less tile before (cpu_conv2d._one_channel_per_group)
    "5x5 s1 28 relu": (24, 28, 5, 1, "relu"),
    "7x7 s1 28 none": (32, 28, 7, 1, "none"),
    "7x7 s1 56 none": (16, 56, 7, 1, "none"),
}


def _model(c: int, hw: int, k: int, stride: int, epilogue: str, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c, 1, k, k)) * 0.5).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=c, kernel_shape=[k, k],
                              strides=[stride, stride], pads=[k // 2] * 4)]
    if epilogue == "silu":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    elif epilogue == "relu":
        nodes += [helper.make_node("Relu", ["c"], ["y"])]
    elif epilogue == "relu6":
        nodes += [helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    else:
        nodes += [helper.make_node("Identity", ["c"], ["y"])]
    out = (hw + 2 * (k // 2) - k) // stride + 1
    graph = helper.make_graph(
        nodes, "depthwise", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, hw, hw])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, out, out])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
                     numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                     numpy_helper.from_array(np.array(6.0, np.float32), "hi")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _input(c: int, hw: int, special: bool = False) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1, c, hw, hw)) * 3).astype(np.float32)
    x.flat[::7] = 0.0
    if special:
        x.flat[[5, 3 * hw + 9, x.size // 2, x.size - 1]] = [np.nan, np.inf, -np.inf, np.inf]
    return x


@lru_cache(maxsize=None)
def _graph(case: str):
    """``CASES[case]``'s op graph, imported once for every test that schedules or builds it."""
    from hetpart import importer

    return importer.load(_model(*CASES[case]))


@lru_cache(maxsize=None)
def _compiled(case: str):
    """``CASES[case]``'s (simulated-target) CPU build, once: the value tests differ only in their inputs."""
    return compile_on(_graph(case), "cpu", simulate=True)


def _hetpart(case: str, x: np.ndarray) -> np.ndarray:
    """``CASES[case]`` run on ``x`` (a Session of its own, as ``run_on``)."""
    from hetpart.runtime import Session

    with Session(_compiled(case)) as s:
        return s.run({"x": x})["y"]


@pytest.mark.parametrize("case", list(CASES))
def test_depthwise_matches_onnxruntime(case):
    c, hw, k, stride, epilogue = CASES[case]
    m, x = _model(c, hw, k, stride, epilogue), _input(c, hw)
    got = _hetpart(case, x)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


@pytest.mark.parametrize("case", ["3x3 s1 7 silu", "3x3 s2 30 relu", "3x3 s1 15 none", "7x7 s1 56 none",
                                  "3x3 s2 112 none", "3x3 s2 55 none", "5x5 s2 56 silu"])
def test_depthwise_nan_and_inf_as_the_reference(case):
    """NaN and infinities spread over each window as in onnx.reference (SiLU of -inf is
    ``-inf * 0 = NaN`` there too; ORT's clamped sigmoid makes it -inf, so not ORT)."""
    c, hw, k, stride, epilogue = CASES[case]
    m, x = _model(c, hw, k, stride, epilogue), _input(c, hw, special=True)
    got = _hetpart(case, x)
    want = reference(m, {"x": x})["y"]
    assert np.isnan(want).any() and np.isinf(want).any(), "the case must exercise both"
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.nanmax(np.abs(want[np.isfinite(want)]))), what=case)


@pytest.mark.parametrize("case", ["3x3 s1 56 silu", "5x5 s1 28 relu", "7x7 s1 28 none", "7x7 s1 56 none"])
def test_depthwise_is_one_parallel_nest_per_channel(case):
    """The padding, the window sum and the epilogue all run inside one parallel loop over
    the channels (before: four passes over the whole tensor on one thread; 5x5 and 7x7
    windows on 28/56-wide images: a row-less register tile of ``ow`` vectors, 1.6-2x slower)."""
    func = single_cpu_kernel(_graph(case))
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuConv2d"
    fors = []
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, fors.append), order="pre")
    outer = fors[0]
    assert outer.kind == tvm.tirx.ForKind.PARALLEL, func.script()
    blocks = []
    tvm_ffi.structural_walk(outer.body, (tvm.s_tir.SBlock, lambda b: blocks.append(b.name_hint)))
    assert any(n.startswith("pad") for n in blocks), blocks
    assert any(n.endswith("_update") for n in blocks), blocks
    root = func.body.block.body
    assert not isinstance(root, tvm.tirx.SeqStmt), "everything is under the one channel loop"


def _vector_indices(func) -> list:
    """The block bindings (the iterators' values, which the blocks index buffers by)
    of every block inside an explicitly vectorised loop."""
    out = []

    def visit_for(loop):
        if loop.kind == tvm.tirx.ForKind.VECTORIZED:
            tvm_ffi.structural_walk(loop.body, (tvm.s_tir.SBlockRealize, lambda r: out.extend(r.iter_values)))

    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, visit_for))
    return out


@pytest.mark.parametrize("case", ["3x3 s1 112 relu6", "3x3 s1 56 relu6", "3x3 s1 28 relu6", "3x3 s1 56 silu"])
def test_depthwise_write_back_vectors_are_contiguous(case):
    """No explicit vector indexes the output plane through ``f // ow`` / ``f % ow`` of a
    fused loop: TVM does not fold them back and emits a gather and a scatter per vector
    (mobilenet_v2's 112x112 depthwise + ReLU6 ran 6x slower that way)."""
    func = single_cpu_kernel(_graph(case))
    divmods = []
    for idx in _vector_indices(func):
        tvm_ffi.structural_walk(idx, (tvm.tirx.FloorDiv, divmods.append))
        tvm_ffi.structural_walk(idx, (tvm.tirx.FloorMod, divmods.append))
    assert not divmods, func.script()


def _update_loops(func) -> list:
    """The loops around the window sum's update block, outermost first."""
    path, found = [], []

    def visit(node):
        if isinstance(node, tvm.tirx.For):
            path.append(node)
            visit(node.body)
            path.pop()
        elif isinstance(node, tvm.tirx.SeqStmt):
            for st in node.seq:
                visit(st)
        elif isinstance(node, tvm.s_tir.SBlockRealize):
            if node.block.name_hint.endswith("_update"):
                found.extend(path)
            visit(node.block.body)
        elif isinstance(node, (tvm.s_tir.SBlock,)):
            visit(node.body)
    visit(func.body)
    return found


# case -> {cpu: (row vector lanes or None: the row summed in memory)}
REGISTER_ROWS = {
    "3x3 s1 112 relu6": {"haswell": 8, "skylake-avx512": 16},
    "3x3 s1 56 relu6": {"haswell": 8, "skylake-avx512": 8},
    "7x7 s1 56 none": {"haswell": 8, "skylake-avx512": 8},
    "3x3 s1 28 relu6": {"haswell": None, "skylake-avx512": None},  # 4-lane vectors measured slower
    "3x3 s2 112 relu6": {"haswell": None, "skylake-avx512": None},  # stride 2: test_depthwise_stride2_vector_steps
}


@pytest.mark.parametrize("cpu", ["haswell", "skylake-avx512"])
@pytest.mark.parametrize("case", list(REGISTER_ROWS))
def test_depthwise_rows_sum_in_registers(case, cpu):
    """A stride-1 depthwise conv whose output rows are whole vectors of 8 lanes or more
    sums each group of row vectors over the whole window (the window loops unrolled
    around the vector loop: the accumulators stay in registers).  Before, the window
    loops ran outside the whole row: every output loaded and stored once per window
    step (mobilenet_v2's 32x112x112 3x3 + ReLU6 0.36 -> 0.23 ms, 144x56x56 0.37 ->
    0.27, 1 thread, AVX2; cpu_depthwise.REGISTER_ROWS)."""
    from host_isa import width_target

    target, _ = width_target(cpu)
    func = single_cpu_kernel(_graph(case), target)
    loops = _update_loops(func)
    want = REGISTER_ROWS[case][cpu]
    inner = loops[-1]
    if want is None:
        assert not any(lp.kind == tvm.tirx.ForKind.VECTORIZED for lp in loops), func.script()
        return
    assert inner.kind == tvm.tirx.ForKind.VECTORIZED and int(inner.extent) == want, func.script()
    k = CASES[case][2]
    window = [lp for lp in loops[:-1] if lp.kind == tvm.tirx.ForKind.UNROLLED and int(lp.extent) == k]
    assert len(window) >= 2, func.script()


# case -> {cpu: lanes of the serial vector loop a stride-2 row is summed in, or None}
STRIDE2_STEPS = {
    "3x3 s2 112 relu6": {"haswell": 8, "skylake-avx512": 8},  # 56-wide rows
    "5x5 s2 56 silu": {"haswell": None, "skylake-avx512": None},  # 5x5: measured slower
    "3x3 s2 55 none": {"haswell": 4, "skylake-avx512": 4},
    "3x3 s2 30 relu": {"haswell": None, "skylake-avx512": None},  # 15 wide: no vector divides it
}


@pytest.mark.parametrize("cpu", ["haswell", "skylake-avx512"])
@pytest.mark.parametrize("case", list(STRIDE2_STEPS))
def test_depthwise_stride2_vector_steps(case, cpu):
    """A 3x3 stride-2 depthwise conv whose output rows are whole vectors of 4 lanes or more
    sums one vector of the row at a time with the window unrolled around it, the vector
    left a serial loop (LLVM loads its stride-2 lanes as two vectors and a shuffle; TVM's
    explicit vector is a gather).  Before, the whole row per window step: every output
    loaded and stored once per step (96x112x112 3x3 0.53 -> 0.46 ms, 1 thread, AVX2;
    cpu_depthwise.STRIDE2_VECTOR_STEPS)."""
    from host_isa import width_target

    target, _ = width_target(cpu)
    func = single_cpu_kernel(_graph(case), target)
    loops = _update_loops(func)
    want = STRIDE2_STEPS[case][cpu]
    k = CASES[case][2]
    window = [lp for lp in loops[:-1] if lp.kind == tvm.tirx.ForKind.UNROLLED and int(lp.extent) == k]
    if want is None:
        assert not window, func.script()
        return
    inner = loops[-1]
    assert inner.kind == tvm.tirx.ForKind.SERIAL and int(inner.extent) == want, func.script()
    assert len(window) == 2, func.script()
