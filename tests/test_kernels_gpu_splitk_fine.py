"""The batch-1 fine split-K GPU rule (hetpart/kernels/rules/gpu_splitk_fine.py):
EfficientNet-B0's and MobileNet-v3's pointwise convolutions at 14x14 and 7x7.

Without a GPU: which layers the rule takes and how finely it splits them (the
corpus shapes, and those it must leave alone: batch 32, ResNet-50's and ConvNeXt's
layers, transformer projections, short K); its schedule of a residual-add layer and
of a SiLU layer (an epilogue that reads the GEMM twice) passes TVM's GPU-code
verifier, has a grid of at least a block per SM where the old one had 12-40, and --
run on the CPU with every thread loop made serial -- computes what the unscheduled
function computes; it builds for sm_90.  With a GPU (``cuda`` mark): the layers
built as the compiler builds them against ONNX Runtime (CPU), in float32 (no tensor
cores: SIMT FMAs in another order), rtol 1e-4.

    PYTHONPATH=. python3 -m pytest tests/test_kernels_gpu_splitk_fine.py -q -m cuda
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from tvm import s_tir, tirx

from gpu_schedule_cases import H200_LIMITS, grid_blocks, run_cpu, serial
from onnx_cases import assert_matches, onnxruntime_outputs, run_on

from hetpart import kernels, load
from hetpart.kernels.analysis import RULE_ATTR
from hetpart.kernels.options import DEFAULT_SM_COUNT, KernelOptions
from hetpart.kernels.rules import GpuFineSplitK
from hetpart.kernels.rules.gpu_splitk import split_factor
from hetpart.kernels.rules.gpu_splitk_fine import fine_split_factor
from hetpart.targets import cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")

# name -> (cin, cout, image, epilogue): batch-1 pointwise convs of the corpus
LAYERS = {
    "effnet 480->80 14 residual": (480, 80, 14, "residual"),  # dlight Matmul, 14 blocks
    "effnet 672->112 14": (672, 112, 14, "bias"),  # split-K in 2: 28 blocks
    "effnet 1152->192 7 residual": (1152, 192, 7, "residual"),  # split-K in 4: 24 blocks
    "effnet 192->1152 7 silu": (192, 1152, 7, "silu"),  # dlight Matmul, 36 blocks
    "mnv3 960->160 7 residual": (960, 160, 7, "residual"),  # split-K in 3: 18 blocks
}


def _pointwise(n, cin, cout, hw, epilogue, seed=0) -> onnx.ModelProto:
    """``conv1x1(x) + b`` then a residual add of ``r``, a SiLU, or nothing."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, 1, 1)) / math.sqrt(cin)).astype(np.float32),
                                     "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1])]
    inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, cin, hw, hw])]
    if epilogue == "residual":
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
        inputs.append(helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, [n, cout, hw, hw]))
    elif epilogue == "silu":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    graph = helper.make_graph(nodes, "pw", inputs,
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, cout, hw, hw])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _func(m: onnx.ModelProto) -> tirx.PrimFunc:
    funcs = [f for f in load(m).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert len(funcs) == 1, "conv, bias and epilogue are one fused function"
    return funcs[0]


def test_split_factors_of_the_corpus_layers():
    # (M, N, K) -> S; the un-split 32x64 grid and split-K's (gpu_splitk) in the comment
    assert fine_split_factor(196, 80, 480) == 10  # 14 blocks; split-K: none -> 140
    assert fine_split_factor(196, 112, 672) == 14  # 14 blocks; split-K 2 (28) -> 196
    assert fine_split_factor(49, 192, 1152) == 12  # 6 blocks; split-K 4 (24) -> 72 (chunks of 96)
    assert fine_split_factor(49, 1152, 192) == 4  # 36 blocks -> 144
    assert fine_split_factor(49, 160, 960) == 15  # 6 blocks; split-K 3 (18) -> 90
    assert fine_split_factor(196, 80, 240) == 5  # 15 K slices: 3 each
    # Left alone: short K (9, 13 slices), a grid split-K already gives half the SMs
    # (ConvNeXt's 2x2 downsampling conv, ResNet-50's 7x7 1x1 layers, BERT / ViT projections
    # at 128 / 197 tokens), attention's K of 64.
    assert fine_split_factor(784, 96, 144) == 1
    assert fine_split_factor(196, 80, 200) == 1
    assert fine_split_factor(784, 192, 384) == 1  # 75 blocks
    assert fine_split_factor(49, 512, 2048) == 1  # split-K 8: 128 blocks
    assert fine_split_factor(49, 2048, 512) == 1  # split-K 2: 128 blocks
    for m, n, k in [(128, 768, 768), (128, 3072, 768), (128, 768, 3072), (197, 768, 768), (197, 768, 3072)]:
        assert fine_split_factor(m, n, k) == 1
    assert fine_split_factor(128, 128, 64, batch=12) == 1
    # Never coarser than split-K's own choice; always whole K slices of >= 3.
    for m, n, k in [(196, 80, 480), (49, 192, 1152), (49, 160, 960), (49, 1280, 320)]:
        s = fine_split_factor(m, n, k)
        steps = math.ceil(k / 16)
        assert s > split_factor(1, m, n, k) and steps % s == 0 and steps // s >= 3
    # A smaller GPU: the same layer needs fewer chunks for a block per SM.
    assert fine_split_factor(196, 80, 480, sms=40) == 3


@pytest.mark.parametrize("case", list(LAYERS))
def test_batch_1_layers_get_a_grid_of_a_block_per_sm_and_compute_the_same(case):
    cin, cout, hw, epilogue = LAYERS[case]
    func = _func(_pointwise(1, cin, cout, hw, epilogue))
    with SM90:
        sch = GpuFineSplitK().apply(func, SM90)
    assert sch is not None
    scheduled = sch.mod["main"]
    assert s_tir.analysis.verify_gpu_code(scheduled, H200_LIMITS)
    partials, epilogue_grid = grid_blocks(scheduled)
    assert partials >= min(72, DEFAULT_SM_COUNT) and epilogue_grid >= 1
    want = run_cpu(func)
    got = run_cpu(serial(scheduled))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_the_rule_is_chosen_at_batch_1_only():
    cin, cout, hw, epilogue = LAYERS["effnet 480->80 14 residual"]
    one = kernels.schedule(load(_pointwise(1, cin, cout, hw, epilogue)).module, SM90)
    assert set(kernels.rules_applied(one).values()) == {"GpuFineSplitK"}
    many = kernels.schedule(load(_pointwise(32, cin, cout, hw, epilogue)).module, SM90)
    assert "GpuFineSplitK" not in set(kernels.rules_applied(many).values())
    off = kernels.schedule(load(_pointwise(1, cin, cout, hw, epilogue)).module, SM90, KernelOptions(split_k="off"))
    assert "GpuFineSplitK" not in set(kernels.rules_applied(off).values())


def test_silu_layer_builds_for_sm90():
    cin, cout, hw, epilogue = LAYERS["effnet 192->1152 7 silu"]
    mod = load(_pointwise(1, cin, cout, hw, epilogue)).module
    scheduled = kernels.schedule(mod, SM90)
    (func,) = [f for f in scheduled.functions.values() if isinstance(f, tirx.PrimFunc) and RULE_ATTR in f.attrs]
    assert str(func.attrs[RULE_ATTR]) == "GpuFineSplitK"
    assert kernels.build(mod, SM90, cuda_graph=True) is not None


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(LAYERS))
def test_against_onnxruntime_on_the_gpu(case):
    cin, cout, hw, epilogue = LAYERS[case]
    m = _pointwise(1, cin, cout, hw, epilogue)
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in m.graph.input}
    (want,) = onnxruntime_outputs(m, feeds)
    got = run_on(m, "cuda", feeds, simulate=False)
    assert_matches(next(iter(got.values())), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
