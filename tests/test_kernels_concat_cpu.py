"""CPU concat kernels (issue 18, densenet121): a Concat, with the element-wise work fused
after it, is one loop per input (``rules/cpu_injective._partition_concat``), so no
element evaluates TOPI's ``if_then_else`` chain over the inputs.  Checked structurally
and against ONNX Runtime (inputs with negatives and zeros)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from onnx_cases import assert_matches, model, onnxruntime_outputs, run_on, single_cpu_kernel

from hetpart.kernels.rules.cpu_injective import concat_segments


def _concat_bn_relu(sizes, hw=(5, 7), batch=1, axis=1, norm=True, seed=0):
    """Concat of inputs with ``sizes`` along ``axis`` -> (BatchNormalization ->) Relu."""
    rng = np.random.default_rng(seed)
    shape = lambda n: [batch, n, *hw] if axis == 1 else [batch, 3, hw[0], n]  # noqa: E731
    names = [f"x{i}" for i in range(len(sizes))]
    total = sum(sizes)
    c = total if axis == 1 else 3
    nodes = [helper.make_node("Concat", names, ["cat"], axis=axis)]
    inits = {}
    src = "cat"
    if norm:
        inits = {"s": rng.uniform(-1.5, 1.5, c).astype(np.float32), "b": rng.standard_normal(c).astype(np.float32),
                 "m": rng.standard_normal(c).astype(np.float32), "v": rng.uniform(0.25, 2, c).astype(np.float32)}
        nodes.append(helper.make_node("BatchNormalization", ["cat", "s", "b", "m", "v"], ["bn"]))
        src = "bn"
    nodes.append(helper.make_node("Relu", [src], ["y"]))
    m = model(nodes, [(n, shape(s), np.float32) for n, s in zip(names, sizes)], [("y", shape(total), np.float32)], inits)
    feeds = {}
    for n, s in zip(names, sizes):
        x = rng.standard_normal(shape(s)).astype(np.float32)
        x.reshape(-1)[::5] = 0.0
        feeds[n] = x
    return m, feeds


def _lowered(func) -> str:
    """``func``'s loops as TVM lowers them before code generation, simplified."""
    seq = tvm.transform.Sequential([tvm.s_tir.transform.LowerInitBlock(), tvm.s_tir.transform.ConvertBlocksToOpaque(),
                                    tvm.s_tir.transform.LowerOpaqueBlock(), tvm.s_tir.transform.StmtSimplify()])
    return seq(tvm.IRModule({"main": func}))["main"].script()


@pytest.mark.parametrize("sizes,hw", [([64, 32, 32, 32], (5, 7)), ([256] + [32] * 24, (5, 7)), ([5, 3], (5, 7)),
                                     ([64, 32, 32, 32], (56, 56))])
def test_concat_is_one_loop_per_input(sizes, hw):
    """No ``if_then_else`` is left once lowered; each input has its own loop nest.
    (Before: one nest over the whole output, the chain resolved per element; with the
    ReLU's ``Select`` it was evaluated twice.)"""
    m, _ = _concat_bn_relu(sizes, hw=hw)
    func = single_cpu_kernel(m)
    assert func.attrs["hetpart.rule"] == "CpuInjective"
    text = _lowered(func)
    assert "if_then_else" not in text
    assert func.script().count("_partition\")") == len(sizes)


def test_concat_segments_reads_offsets():
    m, _ = _concat_bn_relu([4, 3, 5], norm=False)
    from hetpart import importer

    graph = importer.load(m)
    from tvm import s_tir

    from hetpart.kernels.analysis import try_inline_spatial

    sch = s_tir.Schedule(graph.module[graph.nodes[0].func])
    try_inline_spatial(sch)
    (blk,) = sch.get_child_blocks(sch.get_sblock("root"))
    assert concat_segments(sch.get(blk)) == (1, [4, 3, 5])


def test_padding_is_not_a_concat():
    """A Pad's ``if_then_else`` bounds are no concat: scheduled as before."""
    x = helper.make_node("Pad", ["x", "p"], ["y"], mode="constant")
    m = model([x], [("x", [1, 4, 6, 6], np.float32)], [("y", [1, 4, 8, 8], np.float32)],
              {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})
    assert "_partition" not in single_cpu_kernel(m).script()


@pytest.mark.parametrize("sizes,hw,batch,axis,norm", [
    ([64, 32, 32, 32], (56, 56), 1, 1, True),      # densenet block 1 (1 Mi outputs)
    ([256] + [32] * 24, (14, 14), 1, 1, True),     # block 3's last, 25 inputs
    ([512] + [32] * 8, (7, 7), 1, 1, True),        # block 4, 7x7 planes
    ([64, 32, 32], (28, 28), 2, 1, True),          # a batch of two: the batch loop inside each part
    ([48, 32], (56, 56), 3, 1, False),             # no norm, batch 3
    ([3, 5, 4], (4, 6), 2, 3, False),              # along the last axis: no plane to fuse
])
def test_concat_matches_onnxruntime(sizes, hw, batch, axis, norm):
    m, feeds = _concat_bn_relu(sizes, hw=hw, batch=batch, axis=axis, norm=norm)
    got = run_on(m, "cpu", feeds)["y"]
    (want,) = onnxruntime_outputs(m, feeds)
    assert (want == 0).any() and (want > 0).any()
    assert_matches(got, want, rtol=1e-5, atol=1e-5, what=str(sizes))
