"""The batch-split (data-parallel) tests' model, feeds and stub costs (``from data_parallel_cases
import ...``):

* ``split_model(batch)``: ``x [batch, 8]`` with a shared ``scale [1, 4]`` input (no batch axis),
  outputs ``y [batch, 4]`` and ``yt [4, batch]`` (the batch on axis 1), seeded weights;
* ``feeds(n, seed)``: its inputs for ``n`` rows (negatives, exact zeros, a negative scale);
* ``PerByteCosts(cuda, cpu)`` / ``EVEN``: stub costs per byte a kernel touches (so the test, not
  this machine's profile, decides the split) / equal devices;
* ``TOL``: the tolerance against ONNX Runtime; ``onnxruntime_by_name(model, feed)``: its outputs
  by name (the test skips without onnxruntime);
* ``compile_split()``: the split model's data-parallel build at 16 rows on ``EVEN`` costs (GPU
  side simulated), what the ``split_build`` fixtures return.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hetpart
from hetpart.data_parallel import plan_data_parallel

TOL = dict(rtol=1e-5, atol=1e-6)


def split_model(batch="batch") -> onnx.ModelProto:
    """``y = relu(x W + b) * scale`` on ``x [batch, 8]``, ``scale [1, 4]``; also ``yt = y^T``."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Mul", ["r", "scale"], ["y"]),
             helper.make_node("Transpose", ["y"], ["yt"], perm=[1, 0])]
    graph = helper.make_graph(
        nodes, "dp_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("yt", TensorProto.FLOAT, [4, batch])],
        [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Negatives, exact zeros (whole rows and single entries) and a negative scale."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    x[::3] = 0.0
    x[:, 2] = 0.0
    return {"x": x, "scale": np.array([[1.5, -2.0, 0.0, 0.25]], np.float32)}


class PerByteCosts:
    """Stub costs: a kernel costs ``per_byte[device]`` seconds per byte it reads and writes;
    a copy 1 us plus 1 ns per byte."""

    origin = "stub costs per byte"

    def __init__(self, cuda: float, cpu: float):
        self.per_byte = {"cuda": cuda, "cpu": cpu}

    def kernel_cost(self, kernel, device):
        return self.per_byte[device] * (kernel.bytes_read + kernel.bytes_written)

    def is_predicted(self, kernel, device):
        return False

    def transfer_cost(self, nbytes, src, dst):
        return 0.0 if src == dst else 1e-6 + nbytes * 1e-9

    def partition_overhead(self, device):
        return 0.0

    def supports(self, kernel, device):
        return True, ""

    def add_graph(self, graph):
        return self

    def mapped_cost(self, kernel):
        return self.kernel_cost(kernel, "cuda") + self.transfer_cost(kernel.param_bytes, "cpu", "cuda")


EVEN = PerByteCosts(cuda=1e-6, cpu=1e-6)      # equal devices: halves pay


def onnxruntime_by_name(model, feed):
    """ONNX Runtime's outputs of ``model`` on ``feed``, by output name (skips without onnxruntime)."""
    pytest.importorskip("onnxruntime")
    from hetpart.bench.peers import ort_session

    sess = ort_session(model)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def compile_split():
    """The split model planned at 16 rows on ``EVEN`` costs (a split) and compiled, GPU side simulated."""
    dp = plan_data_parallel(split_model(), 16, cost_model=EVEN)
    assert dp.split
    return hetpart.compile_data_parallel(dp, simulate=True)
