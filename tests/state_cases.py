"""Synthetic device-resident state models and the ONNX Runtime reference for the runtime state
tests (test_runtime_state, and test_runtime_state_cuda on a GPU; ``from state_cases import ...``):

* ``N`` / ``STEPS``: the synthetic tensors' shape / the number of steps run;
* ``tensor_specs(*names)`` / ``step_partition(...)``: float32 specs of shape ``N``; a partition
  computing ``y = 2 * past + x``, ``present = past + x``;
* ``synthetic_state_model(step_device, reader, simulate)``: that step (with a reader partition
  of ``y`` on ``reader``) as a CompiledModel; ``state_inputs(seed)``: its initial state and inputs;
* ``ort_steps(model, steps, pairs, state)``: ONNX Runtime's steps, each bound output fed back;
* ``ATTENTION`` / ``attention_plan(graph, plan_for)``: the small llama_decode's attention kernels /
  the plan placing them (only) on the GPU.
"""

from __future__ import annotations

import numpy as np
import onnx

from hetpart.compiler.artifact import CompiledModel, TensorSpec
from hetpart.runtime.synthetic import build_partition, plan_of

N = (4, 8)
STEPS = 5


def tensor_specs(*names):
    """float32 TensorSpecs of shape ``N`` named ``names``."""
    return [TensorSpec(n, N, "float32") for n in names]


def step_partition(name, device, inp, past, y, present, simulate=True):
    """y = 2 * past + x, present = past + x (a running sum: every step's state matters)."""
    from tvm import te

    return build_partition(name, device, [inp, past], [y, present], lambda i: [
        te.compute(N, lambda r, s: i[1][r, s] * 2 + i[0][r, s], name="y"),
        te.compute(N, lambda r, s: i[1][r, s] + i[0][r, s], name="present")], simulate=simulate)


def synthetic_state_model(step_device: str, reader: str | None = None, simulate: bool = True) -> CompiledModel:
    """One partition on ``step_device`` (x, past -> y, present); with ``reader``, a second
    partition on that device reads y (z = y + 1), so y crosses whatever the state does."""
    from tvm import te

    x, past, y, present, z = tensor_specs("x", "past", "y", "present", "z")
    parts = [step_partition("step", step_device, x, past, y, present, simulate)]
    outputs = [y, present]
    if reader is not None:
        parts.append(build_partition("reader", reader, [y], [z],
                                     lambda i: [te.compute(N, lambda r, s: i[0][r, s] + 1, name="z")],
                                     simulate=simulate))
        outputs = [z, present]
    return CompiledModel(plan_of("state", parts), parts, [x, past], outputs)


def state_inputs(seed=0):
    """Seeded ``(initial state, [x of each of STEPS steps])``, all of shape ``N``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(N).astype("float32"), [rng.standard_normal(N).astype("float32") for _ in range(STEPS)]


def ort_steps(model: onnx.ModelProto, steps: list[dict], pairs: dict[str, str], state: dict) -> list[dict]:
    """ONNX Runtime's N steps, each bound output fed back as its input through numpy."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    state, results = dict(state), []
    for feeds in steps:
        out = dict(zip(names, sess.run(None, {**feeds, **state})))
        results.append(out)
        state = {pairs_in: out[o] for o, pairs_in in pairs.items()}
    return results


ATTENTION = ("where1", "matmul2", "transpose3_reshape4", "softmax", "matmul3")
"""What the small llama_decode's attention kernels are called once fused: the cache
writes (rotary + Where), the grouped scores (``K @ Q_g^T``: the importer's
grouped_query_attention reads the un-repeated caches, so no head-repeat kernels),
their scale and mask, softmax, the grouped context."""


def attention_plan(graph, plan_for):
    """Attention on the GPU, everything else on the CPU: issue 19's plan, the caches'
    producers and readers all on the GPU, the cut twice per layer."""
    return plan_for(graph, {k: "cuda" if any(a in kernel.func for a in ATTENTION) else "cpu"
                            for k, kernel in graph.kernels.items()})
