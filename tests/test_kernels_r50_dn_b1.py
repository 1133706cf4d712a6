"""resnet50's 7x7 / 14x14 layers all-CPU at batch 1 on AVX2 (issue 18; bench/results/cpu-r50-dn-b1-2core.md):

* a 1x1 conv of one image whose epilogue adds a residual (then ReLU) on a plane of no whole
  vectors, with 32+ two-vector channel panels and 8 lanes, is tiled on its padded plane within
  1/2 padding (7x7 = 49 -> 64 pixels; ``cpu_matmul.RAGGED_PLANE_B1_RESIDUAL``): its 7 x 2 weight
  tile needs 17 of AVX2's 16 registers, and LLVM kept 13 accumulators in stack slots;
* a stride-1 3x3 conv of 256-512 output channels reads a channels-innermost padded image on any
  plane from 7x7 (``cpu_conv2d.CHANNELS_INNER_WIDE``; before: 28x28+ planes of <= 128 channels);
* a pooling whose input columns step 2 per output column (densenet121's transition AveragePool
  2x2 s2, the stem MaxPool 3x3 s2 pad 1) leaves its output columns to LLVM's loop vectoriser
  (``cpu_reduction.POOL_STRIDED_ROWS``; before: TVM's vectors, each lane's column loaded alone).

Against ONNX Runtime (inputs with negatives and zeros; bias + residual + ReLU, bias + ReLU, no
bias; pools also against onnx.reference, with all-negative corner windows), then the schedules
with the switches on and off, on AVX2 and AVX-512.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cpu_tile_cases import conv2d_script, matches_onnxruntime, mcpu_target, scheduled
from onnx_cases import assert_matches, model, onnxruntime_outputs, reference, run_on, scheduled_by

from hetpart.kernels.rules import cpu_conv2d, cpu_matmul, cpu_reduction


def _conv(ic, oc, h, w=None, k=1, epilogue="add_relu", bias=True, seed=0):
    """``k x k`` conv (pad ``k // 2``) on ``[1, ic, h, w]``: ``+ r`` then ReLU (``add_relu``,
    resnet's block end), ReLU, or nothing."""
    w = w or h
    rng = np.random.default_rng(seed + ic + oc + k)
    wt = (rng.standard_normal((oc, ic, k, k)) / np.sqrt(ic * k * k)).astype(np.float32)
    wt.reshape(-1)[::5] = 0.0
    inits = {"w": wt}
    ins = ["x", "w"]
    if bias:
        inits["b"] = (rng.standard_normal(oc) * 0.5).astype(np.float32)
        ins.append("b")
    p = k // 2
    nodes = [helper.make_node("Conv", ins, ["c"], kernel_shape=[k, k], pads=[p] * 4)]
    inputs = [("x", (1, ic, h, w), np.float32)]
    if epilogue == "add_relu":
        nodes += [helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
        inputs.append(("r", (1, oc, h, w), np.float32))
    elif epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    return model(nodes, inputs, [("y", [1, oc, h, w], np.float32)], inits, opset=13)


CASES = {
    "1x1 256->512 on 7x7 + residual + relu": lambda: _conv(256, 512, 7),
    "1x1 256->512 on 5x5 + residual + relu": lambda: _conv(256, 512, 5),
    "3x3 256->256 on 7x7 + relu": lambda: _conv(256, 256, 7, k=3, epilogue="relu"),
    "3x3 256->288 on 9x10, no bias": lambda: _conv(256, 288, 9, 10, k=3, epilogue="none", bias=False),
    "3x3 256->256 on 7x7 + residual + relu": lambda: _conv(256, 256, 7, k=3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_onnxruntime(case):
    matches_onnxruntime(CASES[case](), case)


def _padded(m, mcpu: str) -> bool:
    """Whether the 1x1 conv's plane is padded to whole vectors (``_ragged_plane``)."""
    return "reindex_pad" in scheduled(m, mcpu).script()


def test_7x7_residual_plane_padded_with_8_lanes(monkeypatch):
    """512 output channels (32 two-vector panels of 8) + residual + ReLU on 7x7: the padded plane
    (49 -> 64) on AVX2; with the switch off, and on AVX-512, the weight tile as before.  (The
    channels-inner 7x7 tile, which takes it first since, off: test_kernels_r50_late.py.)"""
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    m = _conv(256, 512, 7)
    assert _padded(m, "haswell")
    assert "T.int64(64)" in scheduled(m, "haswell").script()
    assert not _padded(m, "skylake-avx512")
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_B1_RESIDUAL", False)
    assert not _padded(m, "haswell")


def test_narrow_or_residual_free_7x7_unchanged(monkeypatch):
    """256 output channels (16 panels: mobilenet_v2's 960->160 + residual measured slower) and no
    residual keep the weight tile; the same schedules with the switch off."""
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    ms = [_conv(256, 256, 7), _conv(256, 512, 7, epilogue="relu")]
    after = [scheduled(m, "haswell").script() for m in ms]
    assert not any("reindex_pad" in s for s in after)
    monkeypatch.setattr(cpu_matmul, "RAGGED_PLANE_B1_RESIDUAL", False)
    assert [scheduled(m, "haswell").script() for m in ms] == after


def _channels_inner(script: str, c: int, hw: int) -> bool:
    side = f"T.int64({hw + 2})"
    return f"pad_temp = T.sblock_alloc_buffer((T.int64(1), {side}, {side}, T.int64({c})))" in script


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
@pytest.mark.parametrize("oc,hw", [(256, 7), (512, 7), (256, 14)])
def test_wide_3x3_reads_channels_innermost(mcpu, oc, hw, monkeypatch):
    m = _conv(256, oc, hw, k=3, epilogue="relu")
    assert _channels_inner(conv2d_script(m, mcpu), 256, hw)
    monkeypatch.setattr(cpu_conv2d, "CHANNELS_INNER_WIDE", False)
    assert not _channels_inner(conv2d_script(m, mcpu), 256, hw)


@pytest.mark.parametrize("ic,oc,hw", [(192, 192, 14), (256, 640, 7), (256, 256, 5)],
                         ids=["192 output channels", "640 output channels", "5x5 plane"])
def test_other_3x3_unchanged(ic, oc, hw, monkeypatch):
    m = _conv(ic, oc, hw, k=3, epilogue="relu")
    after = conv2d_script(m)
    assert not _channels_inner(after, ic, hw)
    monkeypatch.setattr(cpu_conv2d, "CHANNELS_INNER_WIDE", False)
    assert conv2d_script(m) == after


def _pool(op, c, hw, k=2, stride=2, pad=0):
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    out = (hw + 2 * pad - k) // stride + 1
    return model([node], [("x", (1, c, hw, hw), np.float32)], [("y", [1, c, out, out], np.float32)], opset=13)


POOLS = {
    "AveragePool 2x2 s2 on 28x28 (densenet's transition)": lambda: _pool("AveragePool", 16, 28),
    "AveragePool 2x2 s2 on 14x14 (7-wide rows)": lambda: _pool("AveragePool", 16, 14),
    "MaxPool 3x3 s2 pad 1 on 32x32 (the stem's)": lambda: _pool("MaxPool", 16, 32, k=3, pad=1),
    "MaxPool 3x3 s2 on 15x15": lambda: _pool("MaxPool", 16, 15, k=3),
}


@pytest.mark.parametrize("case", list(POOLS))
def test_strided_pools_match_onnxruntime_and_the_reference(case):
    m = POOLS[case]()
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    x[..., :4, :4] = -5.0 - rng.random(x[..., :4, :4].shape).astype(np.float32)  # all-negative corner windows
    feeds = {"x": x}
    got = run_on(m, "cpu", feeds)["y"]
    (want,) = onnxruntime_outputs(m, feeds)
    assert_matches(got, want, rtol=1e-6, atol=1e-6, what=case)
    assert_matches(got, reference(m, feeds)["y"], rtol=1e-6, atol=1e-6, what=case)


def _pool_scheduled(m, mcpu: str = "haswell") -> str:
    func = scheduled_by(m, mcpu_target(mcpu), "CpuReduction")
    return func.script()


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
@pytest.mark.parametrize("m", [lambda: _pool("AveragePool", 128, 56), lambda: _pool("MaxPool", 16, 64, k=3, pad=1)],
                         ids=["AveragePool 2x2 s2, 56x56 -> 28x28", "MaxPool 3x3 s2 pad 1, 64x64 -> 32x32"])
def test_stride_2_pools_leave_their_columns_to_llvm(m, mcpu, monkeypatch):
    """No explicit vector of stride-2 columns (TVM loads each lane alone) with the switch on;
    with it off, the lanes vectorised as before (28 output columns: 4 lanes; 32: 8 or 16).
    The 3x3 pool is taken first by the separable window (``SEPARABLE_POOL``, off here): this
    checks the nest the pools it does not take get."""
    monkeypatch.setattr(cpu_reduction, "SEPARABLE_POOL", False)
    m = m()
    assert "T.vectorized" not in _pool_scheduled(m, mcpu)
    monkeypatch.setattr(cpu_reduction, "POOL_STRIDED_ROWS", False)
    assert "T.vectorized" in _pool_scheduled(m, mcpu)


@pytest.mark.parametrize("m", [lambda: _pool("MaxPool", 16, 28, k=3, stride=1, pad=1),
                               lambda: _pool("AveragePool", 16, 28, k=3, stride=1, pad=1)],
                         ids=["MaxPool 3x3 s1 pad 1", "AveragePool 3x3 s1 pad 1"])
def test_stride_1_pools_unchanged(m, monkeypatch):
    model_ = m()
    after = _pool_scheduled(model_)
    monkeypatch.setattr(cpu_reduction, "POOL_STRIDED_ROWS", False)
    assert _pool_scheduled(model_) == after
