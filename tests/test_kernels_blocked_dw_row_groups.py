"""kernels.rules.cpu_blocked_conv.DEPTHWISE_ROW_GROUPS (off by default): a channel-blocked
stride-1 depthwise conv on 112-wide rows runs ``R`` output rows per parallel iteration, its
padding computed once for the group's ``R + kh - 1`` input rows (before: each output row padded
its ``kh`` input rows).  The build with the switch on matches the build with it off bit for bit
and ONNX Runtime, on inputs holding +-Inf, NaN, +-0 and negatives; the group is 2 rows of
16-channel blocks on 112-wide rows (the padded rows' bytes cap), none for stride 2, narrower rows
or the switch off."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from hetpart.kernels.rules import cpu_blocked_conv as cb
from blocked_conv_cases import conv, relu6_conv_inits
from onnx_cases import special_tensor
from tir_loops import loops_and_blocks

SWITCH = "DEPTHWISE_ROW_GROUPS"


def _model(batch: int, hw: int, channels: int = 16):
    """x[b, c, hw, hw] -> 1x1 + ReLU6 -> dw 3x3 s1 + ReLU6 -> dw 3x3 s1 -> dw 3x3 s2 -> 1x1: the
    depthwise convs inside the blocked region (only the model's two ends transformed)."""
    rng = np.random.default_rng(5)
    c = channels
    shapes = {"w0": (c, c, 1, 1), "w1": (c, 1, 3, 3), "w2": (c, 1, 3, 3), "w3": (c, 1, 3, 3), "w4": (c, c, 1, 1)}
    inits = relu6_conv_inits(rng, shapes)
    nodes = [
        conv("x", "w0", "c0"), helper.make_node("Clip", ["c0", "lo", "hi"], ["r0"]),
        conv("r0", "w1", "c1", group=c, pads=[1, 1, 1, 1]), helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        conv("r1", "w2", "c2", group=c, pads=[1, 1, 1, 1]),
        conv("c2", "w3", "c3", group=c, pads=[1, 1, 1, 1], strides=[2, 2]),
        conv("c3", "w4", "y"),
    ]
    out = (hw - 1) // 2 + 1
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, c, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _depthwise_funcs(graph, target) -> list:
    from tvm import tirx

    from hetpart import kernels

    scheduled = kernels.schedule(graph.module, target)
    return [f for gv, f in sorted(scheduled.functions_items(), key=lambda kv: kv[0].name_hint)
            if isinstance(f, tirx.PrimFunc) and "depthwise" in gv.name_hint]


def _padded_rows(func) -> int:
    """Rows of the padding one parallel iteration computes: the padding's own loops under the
    row loop end in (rows, columns, lanes)."""
    rows = [int(lp.extent) for lp, names in loops_and_blocks(func.body) if names == ["pad_temp"]]
    return rows[-3]


def _run(model, x, target, monkeypatch, on: bool):
    import tvm
    from tvm import relax

    from hetpart import kernels, load

    monkeypatch.setattr(cb, SWITCH, on)
    graph = load(model, conv_block=16)
    vm = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy(), _depthwise_funcs(graph, target)


@pytest.mark.parametrize("batch,hw,min_width", [(1, 112, None), (2, 16, 16)])
def test_row_groups_match_the_rows_and_ort_on_specials(batch, hw, min_width, monkeypatch):
    """Both stride-1 depthwise convs are grouped (2 rows at 112 wide: 4 padded rows of 114 x 16
    floats fit the 32 KiB cap, 6 do not; 8 at 16 wide); the stride-2 one is not; the outputs equal
    the ungrouped build's bit for bit (NaN where it has NaN) and match ORT's."""
    import onnxruntime as ort

    from hetpart.targets import cpu_tvm_target

    if min_width is not None:  # the small case: rows narrower than the measured 112 grouped too
        monkeypatch.setattr(cb, "DEPTHWISE_ROW_GROUP_MIN_WIDTH", min_width)
    if batch > 1:
        monkeypatch.setattr(cb, "PARALLEL_MIN_ELEMENTS", 1)
    model = _model(batch, hw)
    target = cpu_tvm_target()
    x = special_tensor((batch, 16, hw, hw), seed=2) * np.float32(3)
    before, funcs_before = _run(model, x, target, monkeypatch, False)
    after, funcs_after = _run(model, x, target, monkeypatch, True)

    group = 2 if hw == 112 else 8
    assert [_padded_rows(f) for f in funcs_before] == [3, 3, 3]  # one output row an iteration
    assert sorted(_padded_rows(f) for f in funcs_after) == [3, group + 2, group + 2]  # the s2 one as before
    np.testing.assert_array_equal(after, before)  # the same sums in the same order, NaN where NaN
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    finite = np.isfinite(want)
    assert finite.mean() > 0.3 and (~finite).any()  # the specials reached the output, not all of it
    np.testing.assert_array_equal(np.isnan(after), np.isnan(want))
    np.testing.assert_allclose(after[finite], want[finite], rtol=1e-4, atol=1e-4 * float(np.abs(want[finite]).max()))


def _group(width: int, height: int, stride: int, block: int = 16, cores: int = 1, batch: int = 1, chunks: int = 2):
    """:func:`cb.depthwise_row_group` of a 3x3 blocked depthwise conv (a stand-in MacBlock)."""
    import tvm
    from tvm import tirx

    n, c, oh, ow, lane, kh, kw = (tirx.Var(v, "int64") for v in ("n", "c", "oh", "ow", "lane", "kh", "kw"))
    data = tvm.tirx.decl_buffer(((batch, chunks, (height - 1) * stride + 3, (width - 1) * stride + 3, block)),
                                "float32", "pad_temp")

    class _Mac:
        extents = {n: batch, c: chunks, oh: height, ow: width, lane: block, kh: 3, kw: 3}
        operands = [(data, ()), (None, ())]

    conv = cb.BlockedDepthwise(n, c, oh, ow, lane, (kh, kw), 0)
    return cb.depthwise_row_group(_Mac(), conv, cores)


def test_row_group_choice(monkeypatch):
    monkeypatch.setattr(cb, SWITCH, True)
    assert _group(112, 112, 1) == 2  # 4 x 114 x 16 floats <= 32 KiB < 6 rows
    assert _group(112, 112, 1, block=8) == 4  # 6 rows of 114 x 8 floats; 9 rows (7) pass 32 KiB
    assert _group(56, 56, 1) == 1 and _group(28, 28, 1) == 1  # narrower rows: not grouped
    assert _group(56, 56, 2) == 1  # stride 2 (its 112-wide input): not grouped
    monkeypatch.setattr(cb, "DEPTHWISE_ROW_GROUP_MIN_WIDTH", 1)
    assert _group(28, 28, 1) == 7 and _group(14, 14, 1) == 7
    assert _group(56, 56, 2) == 1 and _group(28, 28, 2) == 1  # stride 2: measured slower, never grouped
    assert _group(14, 14, 1, cores=16, chunks=1) == 1  # 14 rows on 16 cores: grouping idles cores
    monkeypatch.setattr(cb, SWITCH, False)
    assert _group(112, 112, 1) == 1
