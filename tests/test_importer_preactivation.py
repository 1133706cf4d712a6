"""A batch norm that follows no convolution (densenet121's pre-activation BN-ReLU on
each concatenated input, issue 18) fuses with the ReLU after it: one kernel, not a
norm kernel and a separate ReLU pass.  Checked structurally and against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx_cases import assert_matches, model, onnxruntime_outputs, run_on

from hetpart.importer import load


def _dense_block(c_in: int = 24, growth: int = 8, layers: int = 3, hw: int = 6, seed: int = 0):
    """torchvision's dense layers as torch.onnx exports them in eval mode: Concat of the
    features so far -> BatchNormalization -> Relu -> 1x1 Conv (the second norm folded
    into it, + bias) -> Relu -> 3x3 Conv -> the next Concat; then BN -> Relu on the
    block's output (densenet's norm5)."""
    rng = np.random.default_rng(seed)
    nodes, inits, feats, c = [], {}, ["x"], c_in

    def bn_relu(src: str, ch: int, tag: str) -> str:
        inits.update({f"{tag}_s": rng.uniform(-1.5, 1.5, ch).astype(np.float32),  # negative scales too
                      f"{tag}_b": (rng.standard_normal(ch) * 0.5).astype(np.float32),
                      f"{tag}_m": (rng.standard_normal(ch) * 0.5).astype(np.float32),
                      f"{tag}_v": rng.uniform(0.25, 2.0, ch).astype(np.float32)})
        nodes.append(helper.make_node("BatchNormalization", [src] + [f"{tag}_{k}" for k in "sbmv"],
                                      [f"{tag}_y"], epsilon=1e-5))
        nodes.append(helper.make_node("Relu", [f"{tag}_y"], [f"{tag}_r"]))
        return f"{tag}_r"

    for i in range(layers):
        cat = feats[0]
        if len(feats) > 1:
            cat = f"cat{i}"
            nodes.append(helper.make_node("Concat", list(feats), [cat], axis=1))
        r = bn_relu(cat, c, f"n{i}")
        inits[f"w1_{i}"] = (rng.standard_normal((4 * growth, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        inits[f"b1_{i}"] = (rng.standard_normal(4 * growth) * 0.1).astype(np.float32)
        inits[f"w2_{i}"] = (rng.standard_normal((growth, 4 * growth, 3, 3)) / np.sqrt(36 * growth)).astype(np.float32)
        nodes += [helper.make_node("Conv", [r, f"w1_{i}", f"b1_{i}"], [f"c1_{i}"], kernel_shape=[1, 1]),
                  helper.make_node("Relu", [f"c1_{i}"], [f"h{i}"]),
                  helper.make_node("Conv", [f"h{i}", f"w2_{i}"], [f"f{i}"], kernel_shape=[3, 3], pads=[1] * 4)]
        feats.append(f"f{i}")
        c += growth
    nodes.append(helper.make_node("Concat", list(feats), ["cat_out"], axis=1))
    out = bn_relu("cat_out", c, "n5")
    nodes.append(helper.make_node("Identity", [out], ["y"]))
    return model(nodes, [("x", [1, c_in, hw, hw], np.float32)], [("y", [1, c, hw, hw], np.float32)], inits)


def test_batch_norm_and_relu_after_a_concat_are_one_kernel():
    """Each Concat -> BN -> ReLU is one kernel; no kernel is a ReLU alone.  (Before:
    the norm's ``(y, mean, var)[0]`` tuple stopped FuseOps, and every pre-activation
    ReLU was its own pass over the concatenated features.)"""
    graph = load(_dense_block())
    ops = [k.ops for k in graph.nodes]
    assert not [o for o in ops if o == ("relu",)], ops
    norms = [o for o in ops if "subtract" in o]
    assert len(norms) == 4, ops  # 3 layers' norm1 + norm5
    for o in norms:
        assert o[-1] == "relu", o
    assert sum(o[0] == "concatenate" for o in norms) == 3, ops


def test_batch_norm_and_relu_without_a_concat_are_one_kernel():
    graph = load(_dense_block(layers=1))
    assert ("subtract", "divide", "multiply", "add", "relu") in [k.ops for k in graph.nodes]


@pytest.mark.parametrize("hw,c_in", [(6, 24), (7, 40)])
def test_dense_block_matches_onnxruntime_on_cpu(hw, c_in):
    """Inputs with negatives and exact zeros (some rows all zero) through the fused
    kernels on the CPU, against ONNX Runtime."""
    m = _dense_block(c_in=c_in, hw=hw)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, c_in, hw, hw)).astype(np.float32)
    x[0, ::3] = 0.0
    x[0, :, 0, :] = -0.0
    x[0, 1, 1, 1] = -5.0
    got = run_on(m, "cpu", {"x": x})["y"]
    (want,) = onnxruntime_outputs(m, {"x": x})
    assert (want == 0).any() and (want > 0).any()  # the ReLUs cut something and kept something
    assert_matches(got, want, rtol=1e-4, atol=1e-5, what="dense block")
