"""The low-precision (bf16/fp16 storage) tests' tolerance and references (``from precision_cases
import ...``; issue 17):

* ``REL_TOL``: the stated tolerance, relative error against float32 at most 2e-2;
* ``relative_error(got, want)``: ``max |got - want| / max |want|``;
* ``ort_outputs(onnx_model, feeds)``: ONNX Runtime's outputs on the float32 model, in output order;
* ``all_on(graph, device, name)``: the hand plan of every kernel on ``device``.
"""

from __future__ import annotations

import numpy as np

from hetpart.bench.peers import ort_session

REL_TOL = 2e-2
"""Issue 17: relative error against float32 at most 2e-2 on every corpus model."""


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (0 for an all-zero reference matched exactly)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.abs(want).max() if want.size else 0.0
    diff = np.abs(got - want).max() if want.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def ort_outputs(onnx_model, feeds):
    """ONNX Runtime's outputs of ``onnx_model`` on ``feeds`` (its inputs picked by name), in output order."""
    sess = ort_session(onnx_model)
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})


def all_on(graph, device: str, name: str = "precision"):
    """The unpriced hand plan of every kernel of ``graph`` on ``device`` (conftest's plan_from_assignment)."""
    from conftest import plan_from_assignment

    return plan_from_assignment(graph, {k: device for k in graph.kernels}, name)
