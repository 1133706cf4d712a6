"""QDQ convolutions as integer matmuls (:mod:`hetpart.importer.qdq_conv`): against the
exact integer conv in numpy, and ONNX Runtime's int8 run of the same QDQ graph.

``x -> Q -> DQ -> Conv(DQ(int8 weight), DQ(int32 bias)) -> y`` (and ``-> Q -> DQ``): 1x1 and
3x3 windows, padding (by the activation's zero point), stride 2, int8 and uint8
activations with zero points inside the range, per-tensor and per-channel weight
scales, output channels no multiple of 16 (padded), inputs that saturate both ends, zeros, the weight's -128 and 127.  The
conv's float output must be ``float(sum (x8 - zp) * w8) * (sx * sw) + bias`` (the integer sum
is exact; float32 rounding of the rescale only); through a last Q/DQ within one step of
ORT's QLinearConv (its own requantisation).  The rewrite must have taken the conv (an
8-bit matmul kernel, no conv2d), and the switch off must leave the float conv.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from onnx_cases import model, run_on

from hetpart.importer import load, qdq_conv

F32 = np.float32


def _case(c, o, hw, k, stride, pad, qtype, zp, per_channel, bias=True, requant=False):
    rng = np.random.default_rng(c * 7 + o + k)
    w8 = rng.integers(-128, 128, (o, c, k, k)).astype(np.int8)
    w8.reshape(-1)[:4] = [-128, 127, 0, -1]
    sx = F32(0.05)
    sw = (rng.uniform(0.002, 0.02, o) if per_channel else np.array(0.01)).astype(F32)
    inits = {"sx": sx, "zx": np.asarray(zp, qtype), "w8": w8, "sw": sw,
             "zw": np.zeros(o, np.int8) if per_channel else np.asarray(0, np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w8", "sw", "zw"], ["wd"], axis=0)]
    conv_in = ["xd", "wd"]
    if bias:
        b32 = rng.integers(-5000, 5000, o).astype(np.int32)
        inits.update(b32=b32, sb=(sx * sw).astype(F32).reshape(-1) if per_channel else (sx * sw).astype(F32),
                     zb=np.zeros(o, np.int32) if per_channel else np.asarray(0, np.int32))
        nodes.append(helper.make_node("DequantizeLinear", ["b32", "sb", "zb"], ["bd"], axis=0))
        conv_in.append("bd")
    nodes.append(helper.make_node("Conv", conv_in, ["y"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4))
    out = "y"
    if requant:
        inits.update(sy=F32(0.4), zy=np.asarray(zp, qtype))
        nodes += [helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["yd"])]
        out = "yd"
    oh = (hw + 2 * pad - k) // stride + 1
    m = model(nodes, [("x", (1, c, hw, hw), F32)], [(out, (1, o, oh, oh), F32)], inits, opset=13)
    x = rng.standard_normal((1, c, hw, hw)).astype(F32) * F32(4.0)
    x.reshape(-1)[::7] = 0.0
    x.reshape(-1)[1::11] = 1e3   # saturates high
    x.reshape(-1)[2::13] = -1e3  # saturates low
    return m, x, out, inits


def _exact(inits, x, k, stride, pad, bias: bool):
    """The conv's float output from the exact integer sum (numpy int64)."""
    info = np.iinfo(inits["zx"].dtype)
    zp = int(inits["zx"])
    q = np.clip(np.rint(x / inits["sx"]) + zp, info.min, info.max).astype(np.int64) - zp
    q = np.pad(q, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    w = inits["w8"].astype(np.int64)
    o, c = w.shape[:2]
    oh = (q.shape[2] - k) // stride + 1
    acc = np.zeros((o, oh, oh), np.int64)
    for dy in range(k):
        for dx in range(k):
            win = q[0, :, dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (oh - 1) + 1:stride]
            acc += np.einsum("oc,chw->ohw", w[:, :, dy, dx], win)
    scale = (F32(inits["sx"]) * inits["sw"].astype(F32)).reshape(-1, 1, 1)
    y = acc.astype(F32) * scale
    if bias:
        y = y + (inits["b32"].astype(F32) * inits["sb"].astype(F32)).reshape(-1, 1, 1)
    return y[None]


def _kernel_ops(m):
    return [k.ops for k in load(m).nodes]


def _ops_and_graph(m):
    """``m``'s kernels' ops and its op graph (run_on takes it: the model is imported once)."""
    graph = load(m)
    return [k.ops for k in graph.nodes], graph


CASES = [  # c, o, hw, k, stride, pad, qtype, zp, per_channel
    (8, 16, 6, 1, 1, 0, np.int8, -5, False),
    (8, 32, 5, 1, 1, 0, np.uint8, 131, True),
    (4, 16, 7, 3, 1, 1, np.int8, 0, False),
    (4, 16, 7, 3, 2, 1, np.uint8, 17, True),
    (8, 16, 6, 1, 2, 0, np.int8, 9, True),
    (8, 20, 6, 1, 1, 0, np.int8, -3, True),  # 20 outputs: padded to 32 (PAD_OUTPUTS)
    (4, 24, 5, 3, 1, 1, np.uint8, 140, False),
]


@pytest.mark.parametrize("c,o,hw,k,stride,pad,qtype,zp,per_channel", CASES)
def test_qdq_conv_is_the_exact_integer_conv(monkeypatch, c, o, hw, k, stride, pad, qtype, zp, per_channel):
    monkeypatch.setattr(qdq_conv, "MIN_DEPTH", 4)
    m, x, out, inits = _case(c, o, hw, k, stride, pad, qtype, zp, per_channel)
    ops, graph = _ops_and_graph(m)
    assert not any("conv2d" in kernel for kernel in ops), ops
    assert any("matmul" in kernel for kernel in ops), ops
    got = run_on(graph, "cpu", {"x": x}, simulate=False)[out]
    want = _exact(inits, x, k, stride, pad, bias=True)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("case", [CASES[0], CASES[3]])
def test_qdq_conv_then_a_pair_is_within_one_step_of_ort(monkeypatch, case):
    monkeypatch.setattr(qdq_conv, "MIN_DEPTH", 4)
    c, o, hw, k, stride, pad, qtype, zp, per_channel = case
    m, x, out, _ = _case(c, o, hw, k, stride, pad, qtype, zp, per_channel, requant=True)
    got = run_on(m, "cpu", {"x": x}, simulate=False)[out]
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    assert np.abs(got - want).max() <= 0.4 * 1.0001  # one step of the output's grid
    assert np.mean(got == want) > 0.95


def test_no_bias_and_the_switch(monkeypatch):
    monkeypatch.setattr(qdq_conv, "MIN_DEPTH", 4)
    m, x, out, inits = _case(4, 16, 7, 3, 1, 1, np.int8, 3, False, bias=False)
    got = run_on(m, "cpu", {"x": x}, simulate=False)[out]
    want = _exact(inits, x, 3, 1, 1, bias=False)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 * float(np.abs(want).max()))
    monkeypatch.setattr(qdq_conv, "INT8_CONV", False)
    assert any("conv2d" in kernel for kernel in _kernel_ops(m))
    monkeypatch.setattr(qdq_conv, "INT8_CONV", True)
    monkeypatch.setattr(qdq_conv, "MIN_DEPTH", 1000)  # too shallow: the float conv
    assert any("conv2d" in kernel for kernel in _kernel_ops(m))


@pytest.mark.parametrize("rows_2d", [True, False])
def test_padded_channels_and_the_window_rows(monkeypatch, rows_2d):
    """An RGB-stem-like 7x7 stride-2 conv of 3 channels (depth 147: channels padded to 4,
    PAD_CHANNELS), with the im2col as one 2-D compute (WINDOW_ROWS_2D) and as take + reshape."""
    monkeypatch.setattr(qdq_conv, "MIN_DEPTH", 4)
    monkeypatch.setattr(qdq_conv, "PAD_CHANNELS", True)
    monkeypatch.setattr(qdq_conv, "WINDOW_ROWS_2D", rows_2d)
    m, x, out, inits = _case(3, 16, 11, 7, 2, 3, np.int8, -7, True)
    ops, graph = _ops_and_graph(m)
    assert not any("conv2d" in kernel for kernel in ops), ops
    assert any("window_rows" in kernel for kernel in ops) == rows_2d, ops
    got = run_on(graph, "cpu", {"x": x}, simulate=False)[out]
    want = _exact(inits, x, 7, 2, 3, bias=True)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("in_gather", [True, False])
def test_window_padding_read_in_the_gather(monkeypatch, in_gather):
    """WINDOW_PAD_IN_GATHER: a padded 3x3 (stride 1 and 2) has no concat (table) kernel and the
    im2col reads the zero point where the window leaves the image -- the exact conv either way."""
    monkeypatch.setattr(qdq_conv, "MIN_DEPTH", 4)
    monkeypatch.setattr(qdq_conv, "WINDOW_PAD_IN_GATHER", in_gather)
    for stride, qtype, zp in ((1, np.int8, -9), (2, np.uint8, 140)):
        m, x, out, inits = _case(8, 16, 7, 3, stride, 1, qtype, zp, True)
        ops, graph = _ops_and_graph(m)
        assert any("concatenate" in kernel for kernel in ops) is not in_gather, ops
        got = run_on(graph, "cpu", {"x": x}, simulate=False)[out]
        want = _exact(inits, x, 3, stride, 1, bias=True)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 * float(np.abs(want).max()))
