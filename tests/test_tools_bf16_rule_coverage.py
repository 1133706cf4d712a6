"""tools/bf16_rule_coverage.py: the GPU rule each kernel gets per CUDA precision (no GPU).

A tensor-core convolution (its weight packed at compile time) and a depthwise one
(the short-window rule, its weight widened as read): in bf16 each kernel gets the
rule, launches and packing it gets in TF32, with no launch that only converts dtypes,
and the table says so.  A function with a conversion pass beside its work counts one
cast launch; a gather from a bf16 table (one launch, converting as it reads) none.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tvm
from onnx import helper
from tvm.script import tirx as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bf16_rule_coverage as cov  # noqa: E402

from onnx_cases import model  # noqa: E402


def _model():
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((64, 3, 7, 7)) * 0.1).astype(np.float32)
    wd = (rng.standard_normal((64, 1, 3, 3)) * 0.3).astype(np.float32)
    return model([helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[7, 7], strides=[2, 2], pads=[3] * 4),
                  helper.make_node("Relu", ["a"], ["b"]),
                  helper.make_node("Conv", ["b", "wd"], ["y"], kernel_shape=[3, 3], pads=[1] * 4, group=64)],
                 [("x", [32, 3, 64, 64], np.float32)], [("y", [32, 64, 32, 32], np.float32)], {"w1": w1, "wd": wd})


def test_bf16_schedules_every_kernel_as_tf32_does():
    from hetpart import importer

    graph = importer.load(_model())
    tf32, bf16 = cov.coverage(graph, "tf32"), cov.coverage(graph, "bf16")
    assert tf32.by_rule() == bf16.by_rule()
    assert {"GpuTensorCoreGemm", "GpuWindowReduction"} <= set(bf16.by_rule())
    assert [r.shape() for r in tf32.rows] == [r.shape() for r in bf16.rows]
    assert sum(r.prepacked for r in bf16.rows) == 1 and sum(r.cast_launches for r in bf16.rows) == 0
    text = cov.table("case", [tf32, bf16])
    assert "| kernels scheduled unlike tf32 | - | 0 |" in text
    assert "| prepacked weights | 1 | 1 |" in text


@T.prim_func(private=True)
def _widen_then_sum(w: T.Buffer((256,), "bfloat16"), out: T.Buffer((256,), "float32")):
    wide = T.alloc_buffer((256,), "float32")
    for i in T.thread_binding(256, thread="threadIdx.x"):
        wide[i] = T.Cast("float32", w[i])
    for i in T.thread_binding(256, thread="threadIdx.x"):
        out[i] = wide[i] + T.float32(1)


@T.prim_func(private=True)
def _gather(w: T.Buffer((256,), "bfloat16"), ix: T.Buffer((8,), "int32"), out: T.Buffer((8,), "float32")):
    for i in T.thread_binding(8, thread="threadIdx.x"):
        out[i] = T.Cast("float32", w[ix[i]])


def test_a_conversion_pass_beside_the_work_is_a_cast_launch_a_gather_is_not():
    assert cov.cast_launches(_widen_then_sum) == 1
    assert cov.cast_launches(_gather) == 0


def test_time_builds_tf32_bf16_and_bf16_unpacked_variants(monkeypatch):
    """``--time``'s three builds of a tensor-core kernel, without a GPU (the timing
    faked): tf32 and bf16 pack the weight at compile time, bf16 unpacked does not, and
    the switch is back on afterwards."""
    from hetpart import importer
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels.rules import gpu_tensor_core

    from onnx_cases import cuda_source

    graph = importer.load(_model())
    packed = []

    def fake_measure(kmod, exe, dev, settings):
        source = cuda_source(exe)
        packed.append("_prepacked_kernel" in source)
        return kernel_bench.Timing(1e-5 * len(packed), 0.0, 0.0, 1, 1)

    monkeypatch.setattr(kernel_bench, "measure", fake_measure)
    rows = cov.time_tensor_core_kernels(graph, cov.coverage(graph, "tf32"))
    assert [r.func for r in rows] == ["fused_conv2d_relu"] and rows[0].count == 1
    assert packed == [True, True, False]
    assert list(rows[0].us) == ["tf32", "bf16", "bf16 unpacked"]
    assert gpu_tensor_core.PACK_LOW_PRECISION is True
    text = cov.timing_table("case", rows)
    assert "| fused_conv2d_relu | 1 |" in text and "| 0.67 |" in text  # bf16 / unpacked = 20 / 30
