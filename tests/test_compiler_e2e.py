"""End to end in simulation mode: every small zoo model, cut into many partitions,
compiled, composed, and compared with the unpartitioned model.

Simulation (``simulate=True``) compiles the ``cuda`` partitions for the CPU and
changes nothing else, so extraction and composition are tested in full on a machine
without a GPU.  Two references, on fresh random inputs:

* the single-target TVM build of the whole fused module.  The partitions run the
  very same kernels, so results agree to float rounding: rtol 1e-5, atol 1e-6;
* ``onnx.reference.ReferenceEvaluator`` on the ONNX model: an independent numpy
  implementation, so float32 sums are ordered differently; rtol 1e-4, atol 1e-5
  everywhere.  BERT's layer norms, softmax and tanh-GELU chains stay within that at
  the small size (its hidden size is 64), so no looser bound is needed; integer
  outputs (the detector's box indices and top-k) must be equal.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from hetpart import compiler, models

TVM_TOL = dict(rtol=1e-5, atol=1e-6)
ONNX_TOL = dict(rtol=1e-4, atol=1e-5)

# Alternating CPU/CUDA per kernel makes the most partitions (one per kernel), so
# every edge of the graph becomes a boundary.  The ResNets (24 and 57 kernels) get
# seeded random runs instead (residual adds still straddle boundaries), to keep the
# test time in bounds: each partition costs a build and a link.
ALTERNATING = ["mlp", "dlrm", "detector", "bert"]
RANDOM_RUNS = ["resnet18", "resnet50"]
MEAN_RUN = {"resnet18": 3, "resnet50": 8}  # about 8 partitions each
FAST = ("mlp",)  # the others take 8-35 s each to build: in the full suite only
MODELS = [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in ALTERNATING + RANDOM_RUNS]


def alternating(graph) -> dict[str, str]:
    return {kid: ("cpu", "cuda")[i % 2] for i, kid in enumerate(graph.topological_order())}


def random_runs(graph, seed: int = 0, mean_run: int = 6) -> dict[str, str]:
    """Devices in runs of random length (geometric, mean ``mean_run``), seeded."""
    rng = np.random.default_rng(seed)
    device, out = "cpu", {}
    for kid in graph.topological_order():
        if rng.random() < 1 / mean_run:
            device = "cuda" if device == "cpu" else "cpu"
        out[kid] = device
    return out


_COMPILED: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def compiled(zoo_graph, plan_for):
    """``compiled(model) -> (graph, plan, CompiledModel)``, simulated, built once."""

    def get(model: str):
        if model not in _COMPILED:
            g = zoo_graph(model)
            assignment = alternating(g) if model in ALTERNATING else random_runs(g, mean_run=MEAN_RUN[model])
            plan = plan_for(g, assignment)
            _COMPILED[model] = (g, plan, compiler.compile(plan, simulate=True, progress=False))
        return _COMPILED[model]

    return get


def assert_outputs_close(got, want, names, tol):
    assert len(got) == len(want)
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
        if np.issubdtype(b.dtype, np.integer):
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, err_msg=name, **tol)


@pytest.mark.parametrize("model", MODELS)
def test_partitions_compose_to_the_unpartitioned_build(model, compiled, compose, reference_tvm, make_feeds):
    g, plan, cm = compiled(model)
    assert [p.name for p in cm.partitions] == [p.name for p in plan.partitions]
    assert {p.device for p in cm.partitions} == {"cpu", "cuda"}
    for p in cm.partitions:
        assert p.device_type == "cpu" and p.simulated == (p.device == "cuda")
    feeds = make_feeds(g, seed=1)
    assert_outputs_close(compose(cm, feeds), reference_tvm(g, feeds), g.outputs, TVM_TOL)


@pytest.mark.parametrize("model", MODELS)
def test_partitions_compose_to_the_onnx_reference(model, compiled, compose, zoo_onnx, make_feeds):
    g, _, cm = compiled(model)
    onnx_model = zoo_onnx(model)
    feeds = make_feeds(g, seed=2)
    want = ReferenceEvaluator(onnx_model).run(None, {i.name: feeds[i.name] for i in onnx_model.graph.input})
    assert_outputs_close(compose(cm, feeds), want, g.outputs, ONNX_TOL)


@pytest.mark.parametrize("model", MODELS)
def test_destination_passing_entry_points_match_main(model, compiled, compose, make_feeds):
    g, _, cm = compiled(model)
    assert sum(p.dps for p in cm.partitions) >= len(cm.partitions) - 2  # only data-dependent outputs opt out
    feeds = make_feeds(g, seed=3)
    for got, want in zip(compose(cm, feeds, dps=True), compose(cm, feeds)):
        np.testing.assert_array_equal(got, want)


# The family models (issue 16) run whole on each device in test_models_families.py;
# partition boundaries are exercised on the models above.
FAMILIES = {"llama", "gpt2", "t5enc", "mobilenet", "efficientnet", "convnext", "swin",
            "llama_prefill", "llama_decode", "moe"}  # issue 19's: tests/test_models_serving.py


def test_every_zoo_model_is_covered():
    assert sorted(ALTERNATING + RANDOM_RUNS) == sorted(set(models.names()) - FAMILIES)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["mlp", "dlrm"]), seed=st.integers(0, 2**16), mean_run=st.integers(1, 4))
@pytest.mark.slow
def test_random_assignments_compute_the_same_function(zoo_graph, plan_for, compose, reference_tvm, make_feeds,
                                                      model, seed, mean_run):
    g = zoo_graph(model)
    cm = compiler.compile(plan_for(g, random_runs(g, seed, mean_run)), simulate=True, progress=False)
    feeds = make_feeds(g, seed=seed)
    assert_outputs_close(compose(cm, feeds), reference_tvm(g, feeds), g.outputs, TVM_TOL)
