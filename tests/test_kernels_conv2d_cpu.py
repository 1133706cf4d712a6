"""The CPU conv2d rule's register tiles (hetpart/kernels/rules/cpu_conv2d.py) on
resnet50's and densenet121's convolutions, against ONNX Runtime, and where their
padding runs.

Cases: densenet121's 3x3 128->32 bottleneck conv on 14x14 (32-wide output channels:
two vectors a tile), resnet50's 3x3 512->512 on 7x7 and a stride-2 3x3 on 28x28, a
1x1 with densenet's odd input channels (544 = 17 x 32), each + bias + ReLU as after
batch-norm folding.  Inputs: negatives and zeros (half negative, every 7th element 0).

Tolerances: rtol 1e-4 and an atol of 1e-5 of the largest output -- ORT sums the
window and the channels in another order (MLAS's NCHWc kernels), over up to 4608 terms.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper, numpy_helper

from onnx_cases import assert_matches, run_on, single_cpu_kernel

from hetpart import kernels


# name -> (c_in, c_out, image, kernel, stride)
CASES = {
    "densenet 3x3 128->32 14": (128, 32, 14, 3, 1),
    "resnet 3x3 512->512 7": (512, 512, 7, 3, 1),
    "resnet 3x3 s2 64->64 28": (64, 64, 28, 3, 2),
    "densenet 1x1 544->128 7": (544, 128, 7, 1, 1),
}


def _model(c_in: int, c_out: int, hw: int, k: int, stride: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
    b = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride, stride],
                              pads=[k // 2] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    out = (hw + 2 * (k // 2) - k) // stride + 1
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c_in, hw, hw])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c_out, out, out])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _input(c: int, hw: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1, c, hw, hw)) * 3).astype(np.float32)
    x.flat[::7] = 0.0
    return x


def _hetpart(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return run_on(m, "cpu", {"x": x})["y"]


@pytest.mark.parametrize("case", list(CASES))
def test_conv_matches_onnxruntime(case):
    c_in, c_out, hw, k, stride = CASES[case]
    m, x = _model(c_in, c_out, hw, k, stride), _input(c_in, hw)
    got = _hetpart(m, x)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (want == 0).any() and (want > 0).any(), "the ReLU must clip some outputs"
    assert_matches(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()), what=case)


def _padding_loops(func) -> list:
    """The loops around the padding block (its name starts with ``pad``), outermost first."""
    found = []

    def visit(loop):
        names = []
        tvm_ffi.structural_walk(loop.body, (tvm.s_tir.SBlock, lambda b: names.append(b.name_hint)))
        if any(n.startswith("pad") for n in names) and not any(n.endswith("_update") for n in names):
            found.append(loop)

    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, visit), order="pre")
    return found


@pytest.mark.parametrize("case", ["densenet 3x3 128->32 14", "resnet 3x3 512->512 7"])
def test_padding_runs_in_parallel(case):
    """densenet's 128x16x16 and resnet's 512x9x9 padded inputs (below the injective
    schedule's size for parallel loops) are padded in parallel rows, not on one thread
    before the parallel convolution."""
    func = single_cpu_kernel(_model(*CASES[case]))
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuConv2d"
    loops = _padding_loops(func)
    assert loops and loops[0].kind == tvm.tirx.ForKind.PARALLEL, func.script()
