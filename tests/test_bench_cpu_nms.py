"""The CPU detector benchmark (``bench/cpu_nms.py``) and its parts: the per-kernel table
against ONNX Runtime's profiler and the dispatch-cost chains."""

from __future__ import annotations

import numpy as np
import pytest

from hetpart.bench import cpu_nms, dispatch


def test_dispatch_chain_is_the_chain_of_matmuls():
    """The chain model computes x @ w0 @ w1 @ ... (checked by onnx.reference)."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = dispatch.chain_model(3, rows=2)
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    want = x
    for init in model.graph.initializer:
        want = want @ numpy_helper.to_array(init)
    (got,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert [n.op_type for n in model.graph.node] == ["MatMul"] * 3


@pytest.mark.slow
def test_small_detector_benchmark_runs_on_the_threads_asked(capsys):
    assert cpu_nms.main(["--small", "--quick", "--threads", "1", "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "pool 1 threads (cpu_threads); its rows = ONNX Runtime's NMS of its boxes: yes" in out
    assert out.count("same rows as ONNX Runtime: yes") == 2
    table = out[out.index("per-kernel medians"):]
    assert "all_class_non_max_suppression" in table and "NonMaxSuppression nms" in table
    assert "topk" in table and "TopK topk" in table


def test_kernel_table_of_a_zoo_model(capsys):
    """Every hetpart kernel and ORT node of a small MLP gets a line, on the threads asked."""
    from hetpart.bench import kernel_table

    assert kernel_table.main(["zoo:mlp:small", "--threads", "1", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("per-kernel medians, 1 thread(s)")
    assert out.count("_prepacked") == 3 and "Gemm classifier" in out and "VM instructions" in out
