"""hetpart.kernels.capabilities: kernels known not to build for CUDA go to the CPU, with a reason."""

from __future__ import annotations

from onnx import TensorProto, helper

import hetpart
from hetpart.kernels.capabilities import unsupported_reason


def _scatter_elements_graph():  # ONNX ScatterElements of 2 updates per row into x[2, 6]
    nodes = [helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
              helper.make_tensor_value_info("i", TensorProto.INT64, [2, 2]),
              helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, 2])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])]
    model = helper.make_model(helper.make_graph(nodes, "scatter", inputs, out),
                              opset_imports=[helper.make_opsetid("", 17)])
    return hetpart.load(model)


def test_scatter_elements_is_a_cpu_kernel_with_a_reason():
    """Built unscheduled for CUDA it crashed the process on the H200 (no GPU rule applies)."""
    graph = _scatter_elements_graph()
    scatter = [k for k in graph.kernels.values() if k.func.startswith("scatter_elements")]
    assert scatter
    for kernel in scatter:
        reason = unsupported_reason(kernel, "cuda")
        assert reason and "ScatterElements" in reason and "CPU" in reason
        assert unsupported_reason(kernel, "cpu") is None
