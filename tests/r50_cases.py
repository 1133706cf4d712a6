"""resnet50's late-stage 1x1 convolutions all-CPU (shared by test_kernels_r50_late and the other
r50 tile tests: ``from r50_cases import ...``):

* ``conv1x1(ic, oc, hw, epilogue, batch, seed)``: a seeded 1x1 conv (+ bias) model, then ReLU,
  ``+ r`` then ReLU (``add_relu``) or nothing, a fifth of the weights zero;
* ``matches_onnxruntime_and_the_reference(m, case)``: ``m`` all-CPU against ONNX Runtime and
  onnx.reference on seeded inputs;
* ``channels_inner_copy(func)`` / ``copy_shape(func)``: the channels-inner copy's block and
  loops in a scheduled PrimFunc / the shape of the buffer it writes (None where there is none).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnx_cases import assert_matches, block_nests, model, onnxruntime_outputs, reference, run_on


def conv1x1(ic, oc, hw, epilogue="relu", batch=1, seed=0):
    """1x1 conv (+ bias) on ``[batch, ic, hw, hw]``, then ReLU, ``+ r`` then ReLU
    (``add_relu``: resnet's block end) or nothing; a fifth of the weights zero."""
    rng = np.random.default_rng(seed + ic * 7 + oc)
    w = (rng.standard_normal((oc, ic, 1, 1)) / np.sqrt(ic)).astype(np.float32)
    w.reshape(-1)[::5] = 0.0
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    inputs = [("x", (batch, ic, hw, hw), np.float32)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1])]
    if epilogue == "add_relu":
        nodes += [helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
        inputs.append(("r", (batch, oc, hw, hw), np.float32))
    elif epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    return model(nodes, inputs, [("y", [batch, oc, hw, hw], np.float32)], {"w": w, "b": b}, opset=13)


def _feeds(m) -> dict[str, np.ndarray]:
    """Seeded float32 inputs of ``m`` (standard normal x 2, every 7th element zero)."""
    rng = np.random.default_rng(3)
    feeds = {}
    for i in m.graph.input:
        a = (rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 2).astype(np.float32)
        a.reshape(-1)[::7] = 0.0
        feeds[i.name] = a
    return feeds


def matches_onnxruntime_and_the_reference(m, case: str) -> None:
    """``m`` all-CPU on seeded inputs (negatives, every 7th element 0) against ONNX Runtime and
    onnx.reference, within 1e-5 relative (1e-6 of the largest output absolute: another order of
    sums); a case named "relu" must exercise the clamp."""
    feeds = _feeds(m)
    got = run_on(m, "cpu", feeds)["y"]
    (want,) = onnxruntime_outputs(m, feeds)
    if "relu" in case:
        assert (want == 0).any() and (want > 0).any(), "the clamp is exercised"
    tol = dict(rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
    assert_matches(got, want, what=f"{case} against ONNX Runtime", **tol)
    assert_matches(got, reference(m, feeds)["y"], what=f"{case} against onnx.reference", **tol)


def channels_inner_copy(func):
    """The channels-inner copy's block and loops (``*_reindex_reindex`` writing a
    ``[.., h*w, ic]`` buffer), or None."""
    for realize, loops in block_nests(func):
        if realize.block.name_hint.endswith("_reindex_reindex"):
            return realize.block, loops
    return None


def copy_shape(func) -> tuple[int, ...] | None:
    """The shape of the buffer :func:`channels_inner_copy` writes, or None where ``func`` has no such copy."""
    found = channels_inner_copy(func)
    return None if found is None else tuple(int(d) for d in found[0].writes[0].source.shape)
