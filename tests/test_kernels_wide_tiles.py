"""CPU tiles for ResNet-50's convolutions on 16-register (AVX2) targets (issue 18):

* a one-loop reduction (1x1 conv, matmul) of 512+ steps whose default row count leaves
  a ragged tile takes an exact divisor up to 14 accumulators
  (``register_tile._exact_wide_rows``: 7 rows on 7- and 14-wide images, where 6 rows of
  2 vectors was the limit);
* a 1x1 conv whose image rows are an odd number of whole vectors (56 = 7 x 8 lanes)
  tiles the fused plane in two vectors (``cpu_matmul._odd_vector_rows``), whatever K;
* a stride-2 conv with a long reduction whose rows hold two vectors (resnet50's stem
  on 112-wide rows) takes the width tile (``cpu_conv2d._strided_width_tile``).

Against ONNX Runtime (inputs with negatives and zeros; ReLU and residual-add
epilogues; rtol 1e-5, atol 1e-6 of the largest output: ORT sums in another order),
built for an AVX2 target (``haswell``: runs on any x86 host with AVX2) and for the
host; then the decisions, from the scheduled TIR, on AVX2 and AVX-512 targets
(AVX-512's 32 registers: up to 14 rows, ``register_tile._rows_for_32_registers``,
tested in test_kernels_rows_32_registers).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi
from onnx import helper
from tvm import relax

from onnx_cases import assert_matches, model, onnxruntime_outputs, scheduled_by

from hetpart import kernels, load
from hetpart.kernels.rules import cpu_conv2d, cpu_matmul
from hetpart.targets import cpu_tvm_target, host_triple


def _conv(ic, oc, hw, k=1, stride=1, pad=0, epilogue="relu", batch=1):
    """Conv ``k x k`` (+ bias) on ``[batch, ic, hw, hw]``, then ReLU, a residual Add
    (input ``r``) or nothing."""
    rng = np.random.default_rng(ic * 1000 + oc + k)
    w = (rng.standard_normal((oc, ic, k, k)) / np.sqrt(ic * k * k)).astype(np.float32)
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    o = (hw + 2 * pad - k) // stride + 1
    inputs = [("x", (batch, ic, hw, hw), np.float32)]
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride, stride],
                            pads=[pad] * 4)
    if epilogue == "relu":
        tail = [helper.make_node("Relu", ["c"], ["y"])]
    elif epilogue == "add":
        tail = [helper.make_node("Add", ["c", "r"], ["y"])]
        inputs.append(("r", (batch, oc, o, o), np.float32))
    else:
        tail = [helper.make_node("Identity", ["c"], ["y"])]
    return model([conv] + tail, inputs, [("y", [batch, oc, o, o], np.float32)], {"w": w, "b": b}, opset=13)


CASES = {
    "1x1 512->32 on 7x7 + relu": lambda: _conv(512, 32, 7),
    "1x1 512->16 on 7x7 + add, batch 2": lambda: _conv(512, 16, 7, epilogue="add", batch=2),
    "1x1 512->32 on 14x14 + add": lambda: _conv(512, 32, 14, epilogue="add"),
    "1x1 512->32 s2 14x14 -> 7x7": lambda: _conv(512, 32, 14, stride=2, epilogue="none"),
    "1x1 128->32 on 56x56 + relu (K = 128)": lambda: _conv(128, 32, 56),
    "1x1 16->48 on 56x56 + add": lambda: _conv(16, 48, 56, epilogue="add"),
    "1x1 64->40 on 8x8 + relu": lambda: _conv(64, 40, 8),
    "stem 3->16 7x7 s2 on 64x64 + relu": lambda: _conv(3, 16, 64, k=7, stride=2, pad=3),
}


def _target(mcpu: str) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 2})


def _feeds(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    feeds = {}
    for i in m.graph.input:
        a = (rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 3).astype(np.float32)
        a.flat[::7] = 0.0
        feeds[i.name] = a
    return feeds


def _run(m: onnx.ModelProto, feeds: dict, target: tvm.target.Target) -> np.ndarray:
    """The all-CPU module built by :func:`hetpart.kernels.build` for ``target``, run once."""
    vm = relax.VirtualMachine(kernels.build(load(m).module, target), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(feeds[i.name]) for i in m.graph.input])
    return out.numpy()


def _matches_onnxruntime(m, case: str) -> None:
    """``m`` built by hetpart for this CPU gives ONNX Runtime's output (a ReLU case's
    output must hold both zeros and positives, so the clamp is exercised)."""
    feeds = _feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    if "relu" in case:
        assert (want == 0).any() and (want > 0).any(), "the clamp is exercised"
    got = _run(m, feeds, cpu_tvm_target())
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


def _host_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mcpu", ["haswell", "host"])
def test_wide_tiles_match_onnxruntime(case, mcpu):
    if mcpu == "haswell" and not _host_has_avx2():
        pytest.skip("an AVX2 build needs an AVX2 host to run")
    m = CASES[case]()
    feeds = _feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    if "relu" in case:
        assert (want == 0).any() and (want > 0).any(), "the clamp is exercised"
    got = _run(m, feeds, cpu_tvm_target() if mcpu == "host" else _target(mcpu))
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=f"{case} ({mcpu})")


def _scheduled(m: onnx.ModelProto, mcpu: str):
    func = scheduled_by(m, _target(mcpu), "CpuMatmul", "CpuConv2d")
    return func


def _update_chains(func) -> list[tuple[list, object]]:
    """Per ``*_update`` block of ``func`` (a multiply-accumulate's): ``(the loops around
    it, outermost first; its SBlockRealize)``."""
    chains = []

    def walk(stmt, loops):
        if isinstance(stmt, tvm.tirx.For):
            walk(stmt.body, loops + [stmt])
        elif isinstance(stmt, tvm.s_tir.SBlockRealize):
            if stmt.block.name_hint.endswith("_update"):
                chains.append((loops, stmt))
            walk(stmt.block.body, loops)
        elif isinstance(stmt, tvm.tirx.SeqStmt):
            for s in stmt.seq:
                walk(s, loops)
        elif isinstance(stmt, tvm.tirx.IfThenElse):  # a split ragged row tile (ragged_rows)
            walk(stmt.then_case, loops)
        elif hasattr(stmt, "body"):
            walk(stmt.body, loops)

    walk(func.body, [])
    return chains


def _tile(func) -> tuple[int, int, int]:
    """``(rows, vectors, lanes)`` of the multiply-accumulate's register tile: the two
    unrolled loops and the vectorised one around the ``*_update`` block."""
    ((loops, _),) = _update_chains(func)
    unrolled = [lp for lp in loops if lp.kind == tvm.tirx.ForKind.UNROLLED]
    assert loops[-1].kind == tvm.tirx.ForKind.VECTORIZED and len(unrolled) == 2, func.script()
    return int(unrolled[0].extent), int(unrolled[1].extent), int(loops[-1].extent)


def _tile_rows(func) -> int:
    return _tile(func)[0]


@pytest.mark.parametrize("shape,avx2,avx512", [
    ((512, 32, 7), 7, 7),  # 7 = 4 + 3 ragged rows before on AVX2
    ((512, 32, 14), 7, 14),  # 14 = 5 + 5 + 4; AVX-512: 14 rows (register_tile._rows_for_32_registers)
    ((512, 32, 28), 4, 14),  # 28 = 7 x 4 already exact on AVX2: unchanged
    ((320, 32, 7), 4, 7),  # K < WIDE_ROWS_MIN_REDUCTION: the ragged rows stay (wide measured slower)
])
def test_one_loop_reduction_takes_exact_wide_rows(shape, avx2, avx512, monkeypatch):
    # The weight tile's rows: the 14x14 / 28x28 planes' own tiles at batch 1 off
    # (cpu_matmul.RAGGED_PLANE_MIN_BATCH, PLANE_LONG_SUMS_AT_BATCH_1; test_kernels_plane_batch1.py).
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_MIN_BATCH", 2)
    monkeypatch.setattr(cpu_matmul, "PLANE_LONG_SUMS_AT_BATCH_1", False)
    # The 7x7 plane's channels-inner tile off (cpu_matmul.CHANNELS_INNER_ROWS; test_kernels_r50_late.py).
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    ic, oc, hw = shape
    m = _conv(ic, oc, hw)
    assert _tile_rows(_scheduled(m, "haswell")) == avx2
    assert _tile_rows(_scheduled(m, "skylake-avx512")) == avx512


def test_strided_1x1_takes_exact_wide_rows_windowed_conv_does_not(monkeypatch):
    """A stride-2 1x1 conv (the conv2d rule, a one-loop reduction) takes 7 rows on a
    7-wide output; a 3x3 window keeps 4 (14 accumulators spilled there) on the image's rows
    (its fused plane off: cpu_conv2d.FUSED_WINDOW_PLANE, test_kernels_r50_3x3.py)."""
    monkeypatch.setattr(cpu_conv2d, "FUSED_WINDOW_PLANE", False)
    assert _tile_rows(_scheduled(_conv(512, 32, 14, stride=2, epilogue="none"), "haswell")) == 7
    assert _tile_rows(_scheduled(_conv(64, 32, 7, k=3, pad=1), "haswell")) == 4


def test_odd_vector_rows_tile_the_plane_whatever_the_reduction():
    """On AVX2, 56-wide rows are 7 vectors: 256 -> 64 (K = 256) is tiled on the fused
    plane (its ``reindex`` copy), two 8-lane vectors a tile (before: one vector of a
    row x 8 channels); on AVX-512 (56 = 3.5 vectors) the weight tile stays for K = 256,
    as measured there."""
    m = _conv(256, 64, 56)
    avx2 = _scheduled(m, "haswell")
    assert "reindex" in avx2.script() and _tile(avx2)[1:] == (2, 8), avx2.script()
    assert "layout_rewrite_preproc" in _scheduled(m, "skylake-avx512").script()


def test_stem_takes_the_width_tile_where_rows_hold_two_vectors():
    """resnet50's stem (7x7 stride 2, 147 reduction steps) on 112-wide rows: on AVX2 (14
    vectors, two a tile) output channels x row vectors, the weight broadcast (not
    packed) and the padded image de-interleaved; on AVX-512 (7 vectors: one a tile)
    the output-channel tile, weight packed, as before."""
    m = _conv(3, 64, 224, k=7, stride=2, pad=3)
    assert "layout_rewrite_preproc" not in _scheduled(m, "haswell").script()
    assert "layout_rewrite_preproc" in _scheduled(m, "skylake-avx512").script()
