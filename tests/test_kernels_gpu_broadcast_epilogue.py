"""The GPU rule for a small contraction with a broadcast epilogue
(hetpart/kernels/rules/gpu_broadcast_epilogue.py): squeeze-excite's second FC, its
gate and the gate's multiply of the image, fused into one function, at batch 1.

Without a GPU: EfficientNet-B0's and MobileNet-v3's SE shapes (sigmoid and
hard-sigmoid gates) get the rule -- two kernels, the FC and gate one thread per
channel, the multiply one thread per output element on a grid that fills the GPU,
the gate computed once per channel (no sigmoid in the multiply's kernel); batch 32
keeps its schedule; the first FC (no broadcast), norms and large contractions are
declined.  Before the rule, dlight's GEMV gave the first SE block's function 2
thread blocks whose epilogue ran 6272 serial iterations per thread on one warp.

SE's first FC at batch 1 (a 1x1 conv of the pooled ``[1, C, 1, 1]`` with its SiLU/ReLU,
hetpart/kernels/rules/gpu_gemv.py): declined by dlight's GEMV, which staged the vector
with one thread (1153 serial loads per thread for C = 1152), so dlight's Reduction
gives each output a block; batch 32 keeps its schedule.

With a GPU (``cuda`` mark): the same functions against ONNX Runtime (CPU).  No tensor
cores are involved, so the tolerance is float32's (the FC's sum in the same order;
sigmoid may differ in the last ulps): rtol 1e-5, atol 1e-6 of the largest output.

    PYTHONPATH=. python3 -m pytest tests/test_kernels_gpu_broadcast_epilogue.py -q -m cuda
"""

from __future__ import annotations

import math

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
from hetpart.kernels.rules import GpuBroadcastEpilogue
from hetpart.kernels.rules.gpu_broadcast_epilogue import EPILOGUE_THREADS, REDUCE_THREADS
from hetpart.targets import cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")

# name -> (squeezed, channels, image, gate)
SE = {
    "effnet se1 8->32 112 sigmoid": (8, 32, 112, "sigmoid"),
    "effnet se 20->480 14 sigmoid": (20, 480, 14, "sigmoid"),  # 94080 outputs: no whole number of blocks
    "effnet se 48->1152 7 sigmoid": (48, 1152, 7, "sigmoid"),
    "mnv3 se 24->72 28 hardsigmoid": (24, 72, 28, "hardsigmoid"),
    "mnv3 se 240->960 7 hardsigmoid": (240, 960, 7, "hardsigmoid"),
}


def _se(n, s, c, hw, gate, seed=0) -> onnx.ModelProto:
    """``gate(conv1x1(z) + b) * x``: SE's second FC, its gate and the multiply."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((c, s, 1, 1)) / math.sqrt(s)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["z", "w", "b"], ["f"], kernel_shape=[1, 1])]
    if gate == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["f"], ["g"]))
    else:  # torchvision's hardsigmoid as exported
        nodes.append(helper.make_node("HardSigmoid", ["f"], ["g"], alpha=1.0 / 6, beta=0.5))
    nodes.append(helper.make_node("Mul", ["g", "x"], ["y"]))
    graph = helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [n, s, 1, 1]),
                      helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, c, hw, hw])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, c, hw, hw])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _scheduled(m: onnx.ModelProto) -> tirx.PrimFunc:
    mod = kernels.schedule(load(m).module, SM90)
    funcs = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert len(funcs) == 1, "FC, gate and multiply are one fused function"
    return funcs[0]


def _thread_loops(func: tirx.PrimFunc) -> list[tuple[str, int]]:
    found = []

    def visit(loop):
        if loop.thread_binding is not None:
            found.append((str(loop.thread_binding.thread_tag), int(loop.extent)))

    tvm_ffi.structural_walk(func.body, (tirx.For, visit), order="pre")
    return found


@pytest.mark.parametrize("case", list(SE))
def test_batch_1_is_a_per_channel_kernel_then_a_full_grid_multiply(case):
    s, c, hw, gate = SE[case]
    func = _scheduled(_se(1, s, c, hw, gate))
    assert str(func.attrs[RULE_ATTR]) == "GpuBroadcastEpilogue"
    threads = min(REDUCE_THREADS, c)
    outputs = c * hw * hw
    assert _thread_loops(func) == [("blockIdx.x", math.ceil(c / threads)), ("threadIdx.x", threads),
                                   ("blockIdx.x", math.ceil(outputs / EPILOGUE_THREADS)),
                                   ("threadIdx.x", EPILOGUE_THREADS)]
    assert math.ceil(outputs / EPILOGUE_THREADS) >= DEFAULT_SM_COUNT
    # The gate once per channel, in kernel 1: kernel 2 (the last top-level nest) only multiplies.
    script = func.script()
    kernel2 = script[script.rindex("blockIdx.x"):]
    assert "sigmoid" not in kernel2 and "T.max" not in kernel2 and "T.min" not in kernel2


@pytest.mark.parametrize("case", ["effnet se1 8->32 112 sigmoid", "mnv3 se 240->960 7 hardsigmoid"])
def test_batch_32_keeps_its_schedule(case):
    s, c, hw, gate = SE[case]
    assert str(_scheduled(_se(32, s, c, hw, gate)).attrs[RULE_ATTR]) != "GpuBroadcastEpilogue"


def _declined(m: onnx.ModelProto) -> bool:
    (func,) = [f for f in load(m).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    with SM90:
        return GpuBroadcastEpilogue().apply(func, SM90) is None


def _single(op_nodes, inputs, output, inits) -> onnx.ModelProto:
    graph = helper.make_graph(op_nodes, "g", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s)
                                              for n, s in inputs],
                              [helper.make_tensor_value_info(output[0], onnx.TensorProto.FLOAT, output[1])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_declines_what_is_not_a_small_contraction_broadcast():
    rng = np.random.default_rng(0)
    # SE's first FC with its SiLU: no broadcast (output as large as the reduction).
    w1 = numpy_helper.from_array(rng.standard_normal((8, 32, 1, 1)).astype(np.float32), "w")
    fc1 = _single([helper.make_node("Conv", ["z", "w"], ["f"]), helper.make_node("Sigmoid", ["f"], ["s"]),
                   helper.make_node("Mul", ["f", "s"], ["y"])], [("z", [1, 32, 1, 1])], ("y", [1, 8, 1, 1]), [w1])
    assert _declined(fc1)
    # A LayerNorm: its reduction reads one buffer.
    gamma = numpy_helper.from_array(np.ones(96, np.float32), "g")
    beta = numpy_helper.from_array(np.zeros(96, np.float32), "b")
    ln = _single([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)],
                 [("x", [1, 56, 56, 96])], ("y", [1, 56, 56, 96]), [gamma, beta])
    assert _declined(ln)
    # A pointwise conv of a real image: far more than MAX_REDUCED values.
    w2 = numpy_helper.from_array(rng.standard_normal((64, 32, 1, 1)).astype(np.float32), "w")
    pw = _single([helper.make_node("Conv", ["x", "w"], ["y"])], [("x", [1, 32, 56, 56])], ("y", [1, 64, 56, 56]), [w2])
    assert _declined(pw)


def test_builds_two_cuda_kernels():
    s, c, hw, gate = SE["effnet se 20->480 14 sigmoid"]
    source = cuda_source(kernels.build(load(_se(1, s, c, hw, gate)).module, SM90, cuda_graph=False))
    import re

    bounds = sorted({int(t) for t in re.findall(r'__global__ void __launch_bounds__\((\d+)\)', source)})
    assert bounds == [REDUCE_THREADS, EPILOGUE_THREADS]
    assert "__shared__" not in source


# name -> (channels, squeezed, activation): SE's first FC
FC1 = {"effnet fc1 32->8 silu": (32, 8, "silu"), "effnet fc1 1152->48 silu": (1152, 48, "silu"),
       "mnv3 fc1 960->240 relu": (960, 240, "relu")}


def _fc1(n, c, s, act, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((s, c, 1, 1)) / math.sqrt(c)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["z", "w", "b"], ["f"])]
    if act == "silu":
        nodes += [helper.make_node("Sigmoid", ["f"], ["g"]), helper.make_node("Mul", ["f", "g"], ["y"])]
    else:
        nodes.append(helper.make_node("Relu", ["f"], ["y"]))
    graph = helper.make_graph(nodes, "fc1", [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [n, c, 1, 1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, s, 1, 1])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("case", list(FC1))
def test_se_first_fc_at_batch_1_is_a_block_per_output_not_a_serial_vector_load(case):
    from hetpart.kernels.rules.gpu_gemv import stages_vector_serially

    c, s, act = FC1[case]
    m = _fc1(1, c, s, act)
    (raw,) = [f for f in load(m).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert stages_vector_serially(raw)
    func = _scheduled(m)
    assert str(func.attrs[RULE_ATTR]) == "Reduction"
    bound = dict(_thread_loops(func))
    assert bound["blockIdx.x"] == s  # a block per output, its threads sharing the C terms
    assert not stages_vector_serially(_scheduled_raw(_fc1(32, c, s, act)))
    assert str(_scheduled(_fc1(32, c, s, act)).attrs[RULE_ATTR]) != "Reduction"  # batch 32: as it was


def _scheduled_raw(m: onnx.ModelProto) -> tirx.PrimFunc:
    (func,) = [f for f in load(m).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    return func


def test_matrix_times_vector_with_a_long_last_dim_is_not_declined():
    """A decode-step matrix-vector product (vector [1, 1, K], K last): no unit last dim,
    so the decline leaves it alone (tests/test_kernels_cuda_miscompiles.py checks GEMV
    still schedules matrix times vector)."""
    from hetpart.kernels.rules.gpu_gemv import stages_vector_serially

    w = numpy_helper.from_array(np.ones((1024, 512), np.float32), "w")
    m = _single([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [1, 1, 1024])], ("y", [1, 1, 512]), [w])
    assert not stages_vector_serially(_scheduled_raw(m))


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(FC1))
def test_se_first_fc_at_batch_1_matches_onnxruntime_on_the_gpu(case):
    c, s, act = FC1[case]
    m = _fc1(1, c, s, act)
    feeds = {"z": np.random.default_rng(1).standard_normal((1, c, 1, 1)).astype(np.float32)}
    got = run_on(m, "cuda", feeds, simulate=False)["y"]
    want = onnxruntime_outputs(m, feeds)[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(SE))
def test_batch_1_matches_onnxruntime_on_the_gpu(case):
    s, c, hw, gate = SE[case]
    m = _se(1, s, c, hw, gate)
    rng = np.random.default_rng(1)
    feeds = {"z": rng.standard_normal((1, s, 1, 1)).astype(np.float32),
             "x": (rng.standard_normal((1, c, hw, hw)) * 3).astype(np.float32)}
    got = run_on(m, "cuda", feeds, simulate=False)["y"]
    want = onnxruntime_outputs(m, feeds)[0]
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)
