"""The CPU tile of stride-2 convolutions with a short reduction whose output rows are
whole vectors (hetpart/kernels/rules/cpu_conv2d.py ``_strided_width_tile``: the
stems of mobilenet_v2/v3 and efficientnet_b0, 3 -> 32/16 channels, 3x3 stride 2)
against ONNX Runtime, and which convolutions take it.

Cases: the stem scaled down in the image (64x64 -> 32x32 output: two vectors a row)
with a ReLU6 (Clip), a HardSwish (MobileNetV3) and a SiLU (EfficientNet) epilogue, a
batch of 2; a 5x5 window (75 steps) past the limit takes it where the output rows hold
two vectors, else the channel-vector tile.  Inputs:
half negative, every 7th element 0.  Tolerances: rtol 1e-5 and an atol of 1e-6 of
the largest output (ORT sums the 27 products in another order).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from onnx_cases import assert_matches, model, run_on, single_cpu_kernel


def _model(n=1, c_in=3, c_out=32, hw=64, k=3, stride=2, epilogue="relu6", seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
    b = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride, stride],
                              pads=[k // 2] * 4)]
    if epilogue == "relu6":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif epilogue == "hardswish":
        nodes.append(helper.make_node("HardSwish", ["c"], ["y"]))
    elif epilogue == "silu":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    out = (hw + 2 * (k // 2) - k) // stride + 1
    return model(nodes, [("x", [n, c_in, hw, hw], np.float32)], [("y", [n, c_out, out, out], np.float32)],
                 {"w": w, "b": b, "lo": np.float32(0.0), "hi": np.float32(6.0)}, opset=14)


def _width_tiled(m) -> bool:
    """Whether the padding block writes its image with the columns de-interleaved
    (a 5-d buffer: ``[n, c, h, w % 2, w // 2]``), the width tile's layout."""
    func = single_cpu_kernel(m)
    return any(len(b.shape) == 5 and b.name.startswith("pad") for b in _alloc_buffers(func))


def _alloc_buffers(func):
    import tvm
    import tvm_ffi

    out = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, lambda b: out.extend(b.alloc_buffers)))
    return out


CASES = {
    "stem relu6": dict(),
    "stem 16 hardswish": dict(c_out=16, epilogue="hardswish"),
    "stem silu": dict(epilogue="silu"),
    "batch 2": dict(n=2),
    "no epilogue": dict(epilogue="none"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stem_width_tile_matches_onnxruntime(case):
    m = _model(**CASES[case])
    assert _width_tiled(m), "the case must take the width tile"
    spec = {"n": 1, "c_in": 3, "hw": 64, **CASES[case]}
    x = (np.random.default_rng(1).standard_normal((spec["n"], spec["c_in"], spec["hw"], spec["hw"])) * 3).astype(np.float32)
    x.flat[::7] = 0.0
    got = run_on(m, "cpu", {"x": x})["y"]
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (want == 0).any() or spec.get("epilogue") in ("none", "silu", "hardswish")
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


DECISIONS = [
    (dict(hw=224), True),                       # mobilenet_v2's stem: 112 = 7 vectors
    (dict(hw=224, c_out=16, epilogue="hardswish"), True),  # mobilenet_v3's
    (dict(stride=1, hw=32), False),             # stride 1: not measured, the channel-vector tile
    (dict(c_in=8), True),                       # 72 steps, past WIDTH_TILE_MAX_REDUCTION, but 32-wide
    (dict(k=5), True),                          # rows hold two vectors (16 lanes) or four (8): resnet50's stem case
    (dict(hw=60), False),                       # 30-wide rows: not whole vectors
]


@pytest.mark.parametrize("spec", [dict(c_in=8), dict(k=5)], ids=["72 steps", "75 steps"])
def test_long_reduction_on_one_vector_rows_keeps_the_channel_tile(spec):
    """Past WIDTH_TILE_MAX_REDUCTION with output rows of one vector (the host's lanes):
    the channel-vector tile, as before."""
    from hetpart.kernels.analysis import cpu_shape
    from hetpart.targets import cpu_tvm_target

    lanes = cpu_shape(cpu_tvm_target()).lanes("float32")
    assert _width_tiled(_model(hw=2 * lanes, **spec)) is False


@pytest.mark.parametrize("spec,width", DECISIONS, ids=[str(s) for s, _ in DECISIONS])
def test_which_convolutions_take_the_width_tile(spec, width):
    assert _width_tiled(_model(**spec)) is width
