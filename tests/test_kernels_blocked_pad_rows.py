"""kernels.rules.cpu_blocked_conv.PADDING_ROWS: a blocked conv's padding pass (batch 1, or a batch
padded in one pass) runs as rows -- chunk x padded-row loops fused and parallel, the column loop
partitioned at the left / right padding, the channel block one vector -- and the build equals the
unscheduled module's result, switch on and off: symmetric padding (3x3 pad 1), stride 2 with
padding on one side only (pads 0, 0, 1, 1), a batch of 2 padded in one pass on a 16-core target."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hetpart.kernels.rules import cpu_blocked_conv as cb  # noqa: E402
from onnx_cases import run_vm  # noqa: E402
from tir_loops import loops_and_blocks  # noqa: E402


def _model(batch: int, hw: int, pads: list[int], stride: int):
    """x[batch, 32, hw, hw] -> 3x3 32->32 (``pads``, ``stride``) + relu, NCHW16c: two blocks."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) * 0.2).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")]
    out = (hw + pads[0] + pads[2] - 3) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=pads, strides=[stride, stride]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "pad_rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 32, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _target(cores: int):
    import tvm

    from hetpart.targets import cpu_tvm_target

    return tvm.target.Target({**{k: v for k, v in cpu_tvm_target().export().items()
                                 if k in ("kind", "mcpu", "mtriple", "mattr", "keys")}, "num-cores": cores})


def _pad_loops(f) -> list:
    """The loops (outermost first) of ``f`` that hold a padding block and no conv update."""
    return [(lp, names) for lp, names in loops_and_blocks(f.body)
            if any(n.startswith("data_pad") for n in names) and not any(n.endswith("_update") for n in names)]


@pytest.mark.parametrize("batch,hw,pads,stride,cores", [
    (1, 14, [1, 1, 1, 1], 1, 2),
    (1, 15, [0, 0, 1, 1], 2, 2),
    (2, 14, [1, 1, 1, 1], 1, 16),
])
@pytest.mark.parametrize("on", [True, False])
def test_padding_rows_match_the_unscheduled_build(batch, hw, pads, stride, cores, on, monkeypatch):
    from tvm import relax, tirx

    from hetpart import kernels, load

    monkeypatch.setattr(cb, "PADDING_ROWS", on)
    target = _target(cores)
    graph = load(_model(batch, hw, pads, stride), conv_block=16)
    scheduled = kernels.schedule(graph.module, target)
    f = next(f for gv, f in scheduled.functions_items()
             if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint and "data_pad" in f.script())
    loops = _pad_loops(f)
    outer = loops[0][0]
    padded = hw + pads[0] + pads[2]
    if on:  # rows: (n, chunk, row) fused, the columns partitioned (left / interior / right, or two parts)
        assert int(outer.extent) == batch * 2 * padded
        assert any("partition" in n for n in loops[0][1])
    else:  # the injective schedule: no partition
        assert not any("partition" in n for lp, names in loops for n in names)
    x = np.random.default_rng(3).standard_normal((batch, 32, hw, hw)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = run_vm(kernels.build(graph.module, target), [x])
    ref = run_vm(relax.build(relax.transform.LegalizeOps()(graph.module), target), [x])
    assert (ref == 0).any() and (ref > 0).any()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
