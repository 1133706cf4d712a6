"""Shared test helpers: the CUDA gate, cached small-zoo models, plans from assignments,
random feeds, and a minimal sequential composer of compiled partitions.

* ``@pytest.mark.cuda`` tests are skipped with reason "no CUDA GPU" wherever
  :func:`hetpart.targets.cuda_available` is False (see
  :func:`pytest_collection_modifyitems`); ``requires_cuda`` is the same gate as a
  decorator for modules that prefer ``skipif``.
* ``zoo_graph(name)`` / ``zoo_onnx(name)`` load a small zoo model once per session.
* ``plan_for(graph, assignment)`` makes a :class:`hetpart.partitioner.Plan` that
  groups maximal same-device runs in topological order (what a hand-written plan
  looks like; the partitioner's own plans are tested in its files).
* ``run_composed(compiled, feeds)`` runs the partitions one after another in their
  listed order on a plain ``relax.VirtualMachine`` each, wiring tensors by name.
  It is the reference semantics of an artifact, deliberately without the runtime's
  streams and pinned buffers.
* ``seeded_profile(path)`` writes a profile that holds this machine's CPU overheads,
  measured once per test process (``cpu_overheads``): tests of profiling kernels
  measure into it without paying the overhead benchmark again.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from hetpart.targets import cuda_available

requires_cuda = pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")


def pytest_ignore_collect(collection_path, config):
    """The fast loop (``-m "not slow"``) does not even import the node-test module: it
    generates the onnx package's ~1,900 cases on import (~15 s), and all its tests are
    slow-marked anyway."""
    if collection_path.name == "test_backend_node_conformance.py" and "not slow" in (config.option.markexpr or ""):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# --- the small zoo, loaded once ------------------------------------------------------
@lru_cache(maxsize=None)
def _zoo_graph(name: str):
    from hetpart import importer

    return importer.load(f"zoo:{name}:small")


@lru_cache(maxsize=None)
def _zoo_onnx(name: str):
    from hetpart import models

    return models.build(name, small=True)


@pytest.fixture
def without_wgmma(monkeypatch):
    """sm_90 builds without the hand-written ``wgmma`` GEMM (its family switches off, on by default
    since device steps 155 / 158): for the tests of the ``mma.sync`` tensor-core rule, which still
    builds every GEMM of at most 128 rows and every GPU before Hopper."""
    from hetpart.kernels import wgmma_match

    monkeypatch.setattr(wgmma_match, "WGMMA_BF16", False)
    monkeypatch.setattr(wgmma_match, "WGMMA_F32A", False)


@pytest.fixture
def bf16_switches_off(monkeypatch, without_wgmma):
    """Every switch of a ``cuda=bf16`` build at its value before device step 155 turned them on (off):
    float32 activations and scores, no ``wgmma`` GEMM, no flash attention -- for tests that turn on the
    one they are about."""
    from hetpart.importer import low_precision_activations, low_precision_scores
    from hetpart.kernels import flash_substitute

    monkeypatch.setattr(low_precision_activations, "STORE_GEMM_INPUTS_BF16", False)
    monkeypatch.setattr(low_precision_scores, "STORE_SCORES_BF16", False)
    monkeypatch.setattr(flash_substitute, "FLASH_ATTENTION", False)
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", False)


@pytest.fixture
def scalar_store(monkeypatch):
    """``wgmma_variant.PAIR_STORE_ROWS`` off (its value before device step 167): the wgmma GEMMs store
    their accumulators one by one -- for tests of the layout rule, which pin whole variants; the pair
    store has its own tests (``test_kernels_wgmma_epilogue.py``)."""
    from hetpart.kernels import wgmma_variant

    monkeypatch.setattr(wgmma_variant, "PAIR_STORE_ROWS", 0)


@pytest.fixture(scope="session")
def zoo_graph():
    """``zoo_graph(name) -> OpGraph`` of the small zoo model ``name`` (cached)."""
    return _zoo_graph


@pytest.fixture(scope="session")
def zoo_onnx():
    """``zoo_onnx(name) -> onnx.ModelProto`` of the small zoo model ``name`` (cached)."""
    return _zoo_onnx


# --- plans and feeds ---------------------------------------------------------------------
def plan_from_assignment(graph, assignment: dict[str, str], name: str = "manual"):
    """:meth:`hetpart.partitioner.Plan.by_hand`: the maximal same-device runs of
    ``assignment`` in topological order, named ``p<i>_<device>``."""
    from hetpart.partitioner import Plan

    return Plan.by_hand(graph, assignment, name, origin="test")


@pytest.fixture(scope="session")
def plan_for():
    return plan_from_assignment


def random_feeds(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh random inputs for ``graph``: standard normal floats, and integers in
    [0, 10) (valid indices for every small zoo model's tables and vocabularies)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if np.issubdtype(np.dtype(t.dtype), np.integer):
            feeds[name] = rng.integers(0, 10, size=t.shape).astype(t.dtype)
        else:
            feeds[name] = rng.standard_normal(t.shape).astype(t.dtype)
    return feeds


@pytest.fixture(scope="session")
def make_feeds():
    return random_feeds


# --- running a compiled model, the plain way ----------------------------------------------
def run_composed(compiled, feeds: dict[str, np.ndarray], *, dps: bool = False,
                 vms: dict | None = None) -> list[np.ndarray]:
    """The model outputs of ``compiled`` on ``feeds``, partitions run in order.

    With ``dps`` every partition that has ``main_dps`` is called that way, writing
    into buffers allocated here, so the destination-passing entry point is what
    produces the tensors the next partitions read.  ``vms`` (partition name -> VM)
    keeps the virtual machines between calls, so a second call replays what the
    first captured (CUDA graphs).  A partition's external weights (``p.external``)
    are passed after its other arguments, as the runtime does.
    """
    import tvm
    from tvm import relax

    from hetpart.runtime import external_weights

    env = {name: tvm.runtime.tensor(value, _device("cpu")) for name, value in feeds.items()}
    for p in compiled.partitions:
        dev = _device(p.device_type)
        vm = vms.get(p.name) if vms is not None else None
        if vm is None:
            vm = relax.VirtualMachine(p.module, dev)
            if vms is not None:
                vms[p.name] = vm
        args = [_on(env[t.name], dev) for t in p.inputs]
        weights = vms.get((p.name, "weights")) if vms is not None else None
        if weights is None:  # bound once per kept VM: a CUDA graph replays the pointers it captured
            weights = external_weights.bind(p, compiled.directory)
            if vms is not None:
                vms[(p.name, "weights")] = weights
        if dps and p.dps:
            outs = [tvm.runtime.empty(tuple(t.shape), t.dtype, dev) for t in p.outputs]
            vm["main_dps"](*args, *outs, *weights)
        else:
            result = vm["main"](*args, *weights)
            outs = [result] if len(p.outputs) == 1 else list(result)
        env.update((t.name, o) for t, o in zip(p.outputs, outs))
    return [env[t.name].numpy() for t in compiled.outputs]


def _device(device_type: str):
    import tvm

    return tvm.cuda(0) if device_type == "cuda" else tvm.cpu(0)


def _on(tensor, dev):
    if tensor.device.dlpack_device_type() == dev.dlpack_device_type():
        return tensor
    return tensor.copyto(dev)


@pytest.fixture(scope="session")
def compose():
    """``compose(compiled, feeds, dps=False) -> [outputs]`` (see :func:`run_composed`)."""
    return run_composed


_REFERENCE_BUILDS: dict[int, tuple] = {}  # id(module) -> (module kept alive, executable)


def run_reference_tvm(graph, feeds) -> list[np.ndarray]:
    """The unpartitioned model: ``graph.module`` built for the CPU as one module."""
    import tvm
    from tvm import relax

    from hetpart import kernels, targets

    key = id(graph.module)
    if key not in _REFERENCE_BUILDS:
        _REFERENCE_BUILDS[key] = (graph.module, kernels.build(graph.module, targets.cpu_tvm_target()))
    vm = relax.VirtualMachine(_REFERENCE_BUILDS[key][1], tvm.cpu(0))
    result = vm["main"](*[tvm.runtime.tensor(feeds[n]) for n in graph.inputs])
    outs = [result] if len(graph.outputs) == 1 else list(result)
    return [o.numpy() for o in outs]


@pytest.fixture(scope="session")
def reference_tvm():
    """``reference_tvm(graph, feeds) -> [outputs]`` of the single-target CPU build."""
    return run_reference_tvm


# --- profiles whose CPU overheads are measured already --------------------------------------
@pytest.fixture(scope="session")
def cpu_overheads():
    """This machine's CPU :class:`~hetpart.costmodel.profile_db.Overheads`, measured once
    per test process by the real overhead benchmark (the wake's idling included)."""
    import tvm

    from hetpart.costmodel.kernel_bench import MeasureSettings
    from hetpart.costmodel.overhead_bench import measure_overheads
    from hetpart.targets import resolve

    return measure_overheads(resolve("cpu").tvm_target, tvm.cpu(0), MeasureSettings(repeat=3, min_repeat_ms=1))


@pytest.fixture(scope="session")
def seeded_profile(cpu_overheads):
    """``seeded_profile(path) -> path``: a new profile file of this machine at ``path``
    that holds only its CPU overheads (:func:`cpu_overheads`) and the default kernel
    options.  Profiling into it measures kernels only: a test of profiling kernels
    need not pay the overhead benchmark (its wake measurement idles 7 x 0.25 s) again.
    Tests of the overhead measurement itself profile into an empty file."""
    from pathlib import Path

    from hetpart.costmodel import Profile
    from hetpart.costmodel.fingerprint import OPTIONS_KEY, this_machine
    from hetpart.kernels.options import DEFAULT
    from hetpart.targets import resolve

    def seed(path):
        prof = Profile(this_machine(), path=Path(path))
        prof.overheads["cpu"] = cpu_overheads
        prof.targets["cpu"] = str(resolve("cpu").tvm_target)
        prof.settings[OPTIONS_KEY] = DEFAULT.to_json()
        prof.save()
        return Path(path)

    return seed
