"""kernels.rules.cpu_blocked_conv.PLAIN_PADDING_PER_IMAGE (off by default) on an NCHW16c import
(``load(model, conv_block=16)``): a batched stem conv from a plain NCHW image
(``conv2d_NCHW_to_NCHWc``: a 7x7 stride-2 3 -> 32 conv + ReLU, resnet50's and googlenet's stem
smaller) pads one image at a time under the batch loop, beside that image's tiles (its padding
block has 4 loops: ``BATCH_PADDING_PER_IMAGE`` alone took only 5-loop, blocked paddings); off, the
whole batch is padded in a pass before the tiles.  Either way the build equals the unscheduled
module's result (legalised, no rule) and ONNX Runtime's, inputs with negatives and zeros, batch 2
and 3 (batch 1 has no batch loop: unchanged)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_cases import run_vm
from tir_loops import loops_and_blocks

from hetpart.kernels.rules import cpu_blocked_conv as cb


def _stem(batch: int, hw: int = 24):
    """``x[batch, 3, hw, hw]`` -> 7x7 s2 pad 3 3->32 + bias + ReLU -> 1x1 32->32 (the stem's
    output stays blocked)."""
    rng = np.random.default_rng(batch + hw)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 3, 7, 7)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((32, 32, 1, 1)) * 0.3).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[3] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Conv", ["r", "w2"], ["y"])]
    out = (hw - 1) // 2 + 1
    g = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _padding_under_the_batch_loop(graph, target, batch: int) -> bool:
    """Whether the scheduled stem conv has a loop of ``batch`` images holding both its padding
    block and its tile's update block."""
    from tvm import tirx

    from hetpart import kernels

    scheduled = kernels.schedule(graph.module, target)
    (f,) = [f for gv, f in scheduled.functions_items()
            if isinstance(f, tirx.PrimFunc) and "conv2d_NCHW_to_NCHWc" in gv.name_hint]
    return any(int(lp.extent) == batch and any("pad" in n for n in names) and any(n.endswith("_update") for n in names)
               for lp, names in loops_and_blocks(f.body))


@pytest.mark.parametrize("batch", [2, 3])
def test_the_stem_pads_per_image_and_matches_the_unscheduled_module(batch, monkeypatch):
    import onnxruntime as ort
    from tvm import relax

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    model = _stem(batch)
    graph = load(model, conv_block=16)
    target = cpu_tvm_target()
    monkeypatch.setattr(cb, "BATCH_PAD_SHARE_BY_CORES", False)  # per image on any core count (the 16-core rule aside)
    assert not _padding_under_the_batch_loop(graph, target, batch)  # off: the batch padded in one pass
    x = np.random.default_rng(3).standard_normal((batch, 3, 24, 24)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    before = run_vm(kernels.build(graph.module, target), [x])
    monkeypatch.setattr(cb, "PLAIN_PADDING_PER_IMAGE", True)
    assert _padding_under_the_batch_loop(graph, target, batch)
    got = run_vm(kernels.build(graph.module, target), [x])
    ref = run_vm(relax.build(relax.transform.LegalizeOps()(graph.module), target), [x])
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    scale = float(np.abs(want).max())
    assert (x < 0).any() and (x == 0).any()
    np.testing.assert_array_equal(got, before)  # the same sums in the same order: only the padding moved
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
