"""Tests of ``gpu_small_contraction`` (``SMALL_CONTRACTIONS``, issue 17's batch-32 analysis:
bench/results/gpu-b32-static.md): batched contractions of few outputs -- squeeze-excite's first FC
at batch 32 -- as a block per output (dlight's ``GeneralReduction``) instead of dlight's
``Matmul`` on one 32 x 64 tile.

Without a GPU: the recogniser takes SE's FC (+ bias + SiLU) at batch 32 and declines it at batch 1,
a broadcast epilogue (SE's gate times the image), a large output, a reduction of one input (a
pool); with the switch on, EfficientNet-B0's largest SE FC at batch 32 (32 x 1152 -> 48) is
scheduled as 1536 blocks of 256 threads (was 1 block of 128), in TF32 and bf16 builds; with it off,
dlight's ``Matmul`` as before; the CUDA C builds.  With a GPU (``cuda`` mark): the FC at batch 32
matches ONNX Runtime (CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from tvm import s_tir, tirx

from onnx_cases import cuda_source, model

from hetpart import kernels, load
from hetpart.importer import low_precision as lp
from hetpart.kernels.rules import gpu_small_contraction as gsc
from hetpart.targets import cuda_available, cuda_tvm_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_static_kernels import launch_shape  # noqa: E402

SM90 = cuda_tvm_target("sm_90")
RTOL = 1e-4
"""A float32 sum in another order (no tensor cores here)."""


@pytest.fixture
def switch_on(monkeypatch):
    monkeypatch.setattr(gsc, "SMALL_CONTRACTIONS", True)


def _se_fc(n=32, cin=1152, cout=48, seed=0):
    """SE's first FC as EfficientNet exports it: a 1x1 Conv on the pooled [n, cin, 1, 1], SiLU."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((cout, cin, 1, 1)) * 0.05).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return model([helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1]),
                  helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])],
                 [("x", (n, cin, 1, 1), np.float32)], [("y", (n, cout, 1, 1), np.float32)], {"w": w, "b": b})


def _se_gate(n=32, cin=8, cout=32, size=56):
    """SE's second FC, gate and multiply: the result broadcast over the image."""
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((cout, cin, 1, 1)) * 0.1).astype(np.float32)
    return model([helper.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[1, 1]),
                  helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                 [("p", (n, cin, 1, 1), np.float32), ("x", (n, cout, size, size), np.float32)],
                 [("y", (n, cout, size, size), np.float32)], {"w": w})


def _pool(n=32, c=64, size=7):
    return model([helper.make_node("GlobalAveragePool", ["x"], ["y"])],
                 [("x", (n, c, size, size), np.float32)], [("y", (n, c, 1, 1), np.float32)])


def _funcs(m, dtype=None):
    graph = load(m)
    if dtype is not None:
        graph = lp.lower_weights(graph, list(graph.kernels), dtype)
    return [f for _, f in graph.module.functions_items() if isinstance(f, tirx.PrimFunc)]


def _reduces(func: tirx.PrimFunc) -> bool:
    sch = s_tir.Schedule(func)
    return any(iv.iter_type == tirx.IterVar.CommReduce
               for b in sch.get_child_blocks(sch.get_sblock("root")) for iv in sch.get(b).iter_vars)


def _main(m, dtype=None) -> tirx.PrimFunc:
    """The model's fused function that reduces (the FC, or the pool)."""
    (func,) = [f for f in _funcs(m, dtype) if _reduces(f)]
    return func


# --- the recogniser --------------------------------------------------------------------------------
def test_se_fc_at_batch_32_is_small():
    assert gsc.small_contraction(_main(_se_fc()))


def test_se_fc_at_batch_1_is_not():
    assert not gsc.small_contraction(_main(_se_fc(n=1)))


def test_broadcast_epilogue_is_not():
    assert not gsc.small_contraction(_main(_se_gate()))


def test_large_output_is_not():
    assert not gsc.small_contraction(_main(_se_fc(cin=64, cout=1024)))  # 32768 outputs: Matmul's tiles fill


def test_pool_is_not():
    assert not gsc.small_contraction(_main(_pool()))


# --- the schedule ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_switch_on_gives_a_block_per_output(switch_on, dtype):
    func = kernels.schedule_primfunc(_main(_se_fc(), dtype), SM90)
    assert str(func.attrs["hetpart.rule"]) == "GpuSmallContraction"
    shape = launch_shape(func)
    assert (shape.grid, shape.block) == (32 * 48, 256)


def test_switch_off_is_dlights_matmul():
    func = kernels.schedule_primfunc(_main(_se_fc()), SM90)
    assert str(func.attrs["hetpart.rule"]) == "Matmul"
    assert launch_shape(func).grid == 1


def test_switch_on_builds_for_sm90(switch_on):
    source = cuda_source(kernels.build(load(_se_fc()).module, SM90, cuda_graph=False))
    assert "__global__" in source


# --- on the GPU ----------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_se_fc_matches_onnxruntime_on_gpu(switch_on):
    from onnx_cases import relative_error_on_cuda

    x = np.random.default_rng(2).standard_normal((32, 1152, 1, 1)).astype(np.float32)
    x.flat[::7] = 0.0
    err = relative_error_on_cuda(_se_fc(), {"x": x})
    assert err < RTOL, f"max error {err:.2e} of the output's magnitude"
