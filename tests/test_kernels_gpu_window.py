"""The GPU short-reduction rule (hetpart/kernels/rules/gpu_window.py): depthwise
convolutions and pooling, one thread per output.

Without a GPU: at batch 32 the corpus's depthwise layers (MobileNet-v2's 3x3,
MobileNet-v3's 5x5, strides 1 and 2, with the models' ReLU6/hard-swish epilogues) and
Inception/GoogLeNet/VGG/ResNet pools get this rule, their loops bound to one thread
per output (blockIdx.x = ceil(outputs / 256), threadIdx.x = 256, a grid that fills
132 SMs), each window summed in a register with its loops unrolled, padding and
epilogue in the same single kernel; at batch 1 (EfficientNet-B0's 3x3/5x5 layers with
their SiLU, ConvNeXt-T's 7x7 ones, MobileNet's, pools) the same, with blocks of 128 or
64 threads where 256 would leave fewer than 2 blocks per SM; long reductions and
non-reductions are declined.  Before the rule, batch 32 -- and batch 1 until the
batch-1 analysis (bench/results/gpu-b1-static.md) -- went to ``GeneralReduction``: a
256-thread block per output pixel for 9 multiply-adds.

With a GPU (``cuda`` mark): the corpus's exact layer shapes at batch 32 against ONNX
Runtime (CPU), inputs with negatives and zeros (every 7th element 0), and one at
batch 3 whose outputs are no whole number of blocks.  No TF32 is
involved (no tensor cores), so the tolerance is float32's: the window's sum in
another order, rtol 1e-5 and an atol of 1e-6 of the largest output.
"""

from __future__ import annotations

import math
import re

import numpy as np
import onnx
import pytest
import tvm_ffi
from onnx import helper, numpy_helper
from tvm import tirx

from onnx_cases import assert_matches, cuda_source, onnxruntime_outputs, run_on

from hetpart import kernels, load
from hetpart.kernels.analysis import RULE_ATTR
from hetpart.kernels.options import DEFAULT_SM_COUNT
from hetpart.kernels.rules import GpuWindowReduction
from hetpart.kernels.rules.gpu_window import MAX_TERMS, MIN_BATCH, THREADS, threads_for
from hetpart.targets import cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")

# name -> (channels, image, kernel, stride, pads, epilogue); depthwise (group = channels)
DEPTHWISE = {
    "mnv2 3x3 s2 c96 112": (96, 112, 3, 2, 1, "relu6"),
    "mnv2 3x3 s1 c144 56": (144, 56, 3, 1, 1, "relu6"),
    "mnv2 3x3 s2 c144 56": (144, 56, 3, 2, 1, "relu6"),
    "mnv2 3x3 s1 c192 28": (192, 28, 3, 1, 1, "relu6"),
    "mnv2 3x3 s1 c384 14": (384, 14, 3, 1, 1, "relu6"),
    "mnv2 3x3 s2 c576 14": (576, 14, 3, 2, 1, "relu6"),
    "mnv2 3x3 s1 c960 7": (960, 7, 3, 1, 1, "relu6"),
    "mnv3 5x5 s2 c672 14 hswish": (672, 14, 5, 2, 2, "hardswish"),
    "mnv3 5x5 s1 c960 7 hswish": (960, 7, 5, 1, 2, "hardswish"),
    "mnv3 3x3 s1 c16 112 none": (16, 112, 3, 1, 1, "none"),
}

# name -> (channels, image, op, kernel, stride, pad)
POOLS = {
    "inception avgpool 3x3 s1 p1 c288 35": (288, 35, "AveragePool", 3, 1, 1),
    "inception avgpool 3x3 s1 p1 c768 17": (768, 17, "AveragePool", 3, 1, 1),
    "inception maxpool 3x3 s2 c64 147": (64, 147, "MaxPool", 3, 2, 0),
    "googlenet maxpool 3x3 s1 p1 c480 28": (480, 28, "MaxPool", 3, 1, 1),
    "resnet maxpool 3x3 s2 p1 c64 112": (64, 112, "MaxPool", 3, 2, 1),
    "vgg maxpool 2x2 s2 c128 112": (128, 112, "MaxPool", 2, 2, 0),
    "googlenet maxpool 3x3 s2 ceil c192 56": (192, 56, "MaxPool ceil", 3, 2, 0),
    "avgpool 3x3 s2 p1 exclude-pad c64 28": (64, 28, "AveragePool exclude", 3, 2, 1),
}

# Batch 1: torchvision efficientnet_b0's and convnext_tiny's depthwise layers (SiLU:
# x * sigmoid(x) as exported; ConvNeXt's with no activation), some above, pools.
B1_DEPTHWISE = {
    "effnet 3x3 s1 c32 112 silu": (32, 112, 3, 1, 1, "silu"),
    "effnet 5x5 s2 c144 56 silu": (144, 56, 5, 2, 2, "silu"),
    "effnet 5x5 s1 c672 14 silu": (672, 14, 5, 1, 2, "silu"),
    "effnet 5x5 s2 c672 14 silu": (672, 14, 5, 2, 2, "silu"),
    "effnet 5x5 s1 c1152 7 silu": (1152, 7, 5, 1, 2, "silu"),
    "effnet 3x3 s1 c1152 7 silu": (1152, 7, 3, 1, 1, "silu"),
    "convnext 7x7 s1 c96 56": (96, 56, 7, 1, 3, "none"),
    "convnext 7x7 s1 c384 14": (384, 14, 7, 1, 3, "none"),
    "convnext 7x7 s1 c768 7": (768, 7, 7, 1, 3, "none"),
}
DEPTHWISE.update(B1_DEPTHWISE)
B1_CASES = list(B1_DEPTHWISE) + ["mnv2 3x3 s1 c144 56", "mnv3 5x5 s2 c672 14 hswish", "mnv2 3x3 s1 c960 7",
                                 "inception avgpool 3x3 s1 p1 c288 35", "resnet maxpool 3x3 s2 p1 c64 112"]

BATCH = 32
RAGGED = "mnv2 3x3 s1 c960 7"


def _out(hw, k, stride, pad, ceil=False):
    return -(-(hw + 2 * pad - k) // stride) + 1 if ceil else (hw + 2 * pad - k) // stride + 1


def _depthwise(n, c, hw, k, stride, pad, epilogue, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c, 1, k, k)) * 0.5).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=c, kernel_shape=[k, k],
                              strides=[stride, stride], pads=[pad] * 4)]
    if epilogue == "relu6":  # torchvision's ReLU6 exported as Clip(0, 6)
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif epilogue == "hardswish":
        nodes.append(helper.make_node("HardSwish", ["c"], ["y"]))
    elif epilogue == "silu":  # torchvision's SiLU as exported: x * sigmoid(x)
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    o = _out(hw, k, stride, pad)
    graph = helper.make_graph(
        nodes, "depthwise", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, c, hw, hw])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, c, o, o])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _pool(n, c, hw, op, k, stride, pad) -> onnx.ModelProto:
    """``op``: ``MaxPool`` / ``AveragePool``, with `` ceil`` (GoogLeNet's ceil_mode) or
    `` exclude`` (count_include_pad=0) after it."""
    op, _, variant = op.partition(" ")
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    if op == "AveragePool":  # torch's F.avg_pool2d default, as Inception-v3 uses it, unless excluded
        attrs["count_include_pad"] = 0 if variant == "exclude" else 1
    if variant == "ceil":
        attrs["ceil_mode"] = 1
    o = _out(hw, k, stride, pad, ceil=variant == "ceil")
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], **attrs)], "pool",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, c, hw, hw])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, c, o, o])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _model(case: str, n: int) -> tuple[onnx.ModelProto, int, int]:
    """(model, outputs, window terms) of ``case`` at batch ``n``."""
    if case in DEPTHWISE:
        c, hw, k, stride, pad, epilogue = DEPTHWISE[case]
        return _depthwise(n, c, hw, k, stride, pad, epilogue), n * c * _out(hw, k, stride, pad) ** 2, k * k
    c, hw, op, k, stride, pad = POOLS[case]
    o = _out(hw, k, stride, pad, ceil=op.endswith("ceil"))
    return _pool(n, c, hw, op, k, stride, pad), n * c * o ** 2, k * k


def _input(shape, seed=1) -> np.ndarray:
    x = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)
    x.flat[::7] = 0.0
    return x


def _scheduled(m: onnx.ModelProto) -> tirx.PrimFunc:
    mod = kernels.schedule(load(m).module, SM90)
    funcs = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert len(funcs) == 1, "the window reduction and its epilogue are one fused kernel"
    return funcs[0]


def _bound(func: tirx.PrimFunc) -> dict[str, list[int]]:
    """``{thread tag: [extents of the loops bound to it]}`` in ``func``'s TIR."""
    out: dict[str, list[int]] = {}

    def visit(loop):
        if loop.thread_binding is not None:
            out.setdefault(str(loop.thread_binding.thread_tag), []).append(int(loop.extent))

    tvm_ffi.structural_walk(func.body, (tirx.For, visit), order="post")
    return out


def _unrolled(func: tirx.PrimFunc) -> list[int]:
    found = []
    tvm_ffi.structural_walk(func.body, (tirx.For, lambda f: found.append(int(f.extent))
                                        if f.kind == tirx.ForKind.UNROLLED else None), order="post")
    return found


# --- structure (no GPU) -----------------------------------------------------------------------
@pytest.mark.parametrize("case", [c for c in DEPTHWISE if c not in B1_DEPTHWISE] + list(POOLS))
def test_batch_32_gets_one_thread_per_output_on_a_full_grid(case):
    m, outputs, terms = _model(case, BATCH)
    func = _scheduled(m)
    assert str(func.attrs[RULE_ATTR]) == "GpuWindowReduction"
    bound = _bound(func)
    assert bound == {"blockIdx.x": [math.ceil(outputs / THREADS)], "threadIdx.x": [THREADS]}
    assert bound["blockIdx.x"][0] >= 2 * DEFAULT_SM_COUNT
    # The window in a register, its loops unrolled: no shared memory, no cross-thread sum.
    assert math.prod(_unrolled(func)) == terms
    script = func.script()
    assert 'scope="local"' in script and '"shared"' not in script


@pytest.mark.parametrize("case", B1_CASES)
def test_batch_1_gets_one_thread_per_output_on_a_full_grid(case):
    """Batch 1 no longer goes to dlight's GeneralReduction (a 256-thread block per
    output pixel): one thread per output, with blocks small enough for 2 per SM."""
    m, outputs, terms = _model(case, 1)
    func = _scheduled(m)
    assert MIN_BATCH == 1
    assert str(func.attrs[RULE_ATTR]) == "GpuWindowReduction"
    bound = _bound(func)
    (threads,), (blocks,) = bound["threadIdx.x"], bound["blockIdx.x"]
    assert set(bound) == {"blockIdx.x", "threadIdx.x"}
    assert threads in (THREADS, 128, 64) and blocks == math.ceil(outputs / threads)
    assert blocks >= 2 * DEFAULT_SM_COUNT or threads == 64
    if threads < THREADS:  # smaller blocks only where 256 would leave SMs without 2 blocks
        assert math.ceil(outputs / (2 * threads)) < 2 * DEFAULT_SM_COUNT
    assert math.prod(_unrolled(func)) == terms
    assert '"shared"' not in func.script()


def test_block_size_shrinks_only_below_two_blocks_per_sm():
    # EfficientNet-B0's 672x7x7 layer at batch 1: 129 blocks of 256 on 132 SMs; 515 of 64.
    assert threads_for(672 * 7 * 7, 132) == 64
    assert threads_for(768 * 7 * 7, 132) == 128  # ConvNeXt-T's last stage: 294 blocks of 128
    assert threads_for(32 * 112 * 112, 132) == THREADS
    # Batch 32: every corpus layer keeps 256-thread blocks.
    smallest_b32 = min(32 * c * _out(hw, k, st, p) ** 2 for c, hw, k, st, p, _ in DEPTHWISE.values())
    assert threads_for(smallest_b32, 132) == THREADS
    assert threads_for(10, 132) == 64  # tiny: the smallest block


def test_builds_one_cuda_kernel_with_padding_and_epilogue_inside():
    m, outputs, _ = _model(RAGGED, 3)  # 3*960*7*7 outputs: no multiple of 256, the last block guarded
    assert outputs % THREADS
    exe = kernels.build(load(m).module, SM90, cuda_graph=False)
    source = cuda_source(exe)
    names = re.findall(r'extern "C" __global__ void __launch_bounds__\((\d+)\) (\w+)\(', source)
    assert {(int(t), name) for t, name in names} == {(THREADS, names[0][1])}  # one kernel (declared, defined)
    assert "__shared__" not in source


def test_declines_long_reductions_and_plain_element_wise_functions():
    rule = GpuWindowReduction()
    long_window = _depthwise(2, 8, 20, 9, 1, 4, "none")  # 81 terms per output
    assert 81 > MAX_TERMS
    (func,) = [f for f in load(long_window).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    with SM90:
        assert rule.apply(func, SM90) is None
    relu = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 8])]),
        opset_imports=[helper.make_opsetid("", 14)])
    (func,) = [f for f in load(relu).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    with SM90:
        assert rule.apply(func, SM90) is None


# --- results (GPU) ----------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("case, batch", [(c, BATCH) for c in list(DEPTHWISE) + list(POOLS)] + [(RAGGED, 3)])
def test_batch_32_matches_onnxruntime_on_the_gpu(case, batch):
    m, _, _ = _model(case, batch)
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = _input(shape)
    got = run_on(m, "cuda", {"x": x}, simulate=False)["y"]
    want = onnxruntime_outputs(m, {"x": x})[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


@pytest.mark.cuda
@pytest.mark.parametrize("case", B1_CASES)
def test_batch_1_matches_onnxruntime_on_the_gpu(case):
    m, _, _ = _model(case, 1)
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = _input(shape)
    got = run_on(m, "cuda", {"x": x}, simulate=False)["y"]
    want = onnxruntime_outputs(m, {"x": x})[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)
