"""importer.blocked_regions (``WIDEN_BLOCKED``) and the channel-blocked concat's vectorised plane
(``rules/cpu_injective.BLOCKED_CONCAT_VECTORS``): a small densenet (a 3-channel stem conv and its
pool, two dense layers whose concats read the pool, a transition with its avg pool) imported in
NCHW8c keeps its dense block blocked -- one transform in (the pool's output), one out -- where
``ConvertLayout`` alone left the block NCHW (6 transforms); the build matches ONNX Runtime and the
unscheduled reference, with the switches on and off."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from blocked_conv_cases import small_densenet


@lru_cache(maxsize=None)
def _imported(widen: bool):
    """``(model, its NCHW8c import with WIDEN_BLOCKED = widen)``, imported once per setting: the
    build tests of both concat-vector settings and the concat test read the same import
    (``BLOCKED_CONCAT_VECTORS`` is read when scheduling, not when importing)."""
    import hetpart
    from hetpart.importer import blocked_regions

    old = blocked_regions.WIDEN_BLOCKED
    blocked_regions.WIDEN_BLOCKED = widen
    try:
        model = small_densenet()
        return model, hetpart.load(model, conv_block=8)
    finally:
        blocked_regions.WIDEN_BLOCKED = old


def _transforms(graph) -> int:
    return sum("layout_transform" in k.func for k in graph.kernels.values())


@pytest.mark.parametrize("widen, transforms", [(True, 2), (False, 6)])
def test_the_dense_block_stays_blocked(monkeypatch, widen, transforms):
    """Transforms left unfused to count them: widened, the pool's output in and the output back;
    ``ConvertLayout`` alone: to NCHW8c before each of the 3 convs after a BN-ReLU, back after each
    growth conv (2) and at the output."""
    import hetpart
    from hetpart.importer import blocked_regions, blocked_sink, conv_layout

    monkeypatch.setattr(conv_layout, "FUSED_TRANSFORMS", False)
    monkeypatch.setattr(blocked_sink, "BLOCKED_DEPTHWISE", False)  # the widening alone (with it: 1, the stem blocked)
    monkeypatch.setattr(blocked_regions, "WIDEN_BLOCKED", widen)
    graph = hetpart.load(small_densenet(), conv_block=8)
    assert _transforms(graph) == transforms, [k.func for k in graph.kernels.values()]
    ops = " ".join(" ".join(k.ops) for k in graph.kernels.values())
    assert ops.count("conv2d_NCHWc") == 5  # every conv but the 3-channel stem


@pytest.mark.parametrize("widen, vectors", [(True, True), (True, False), (False, True)])
def test_the_blocked_build_matches_ort_and_the_reference(monkeypatch, plan_for, compose, widen, vectors):
    """On inputs with negatives and zeros (BN scales of both signs), every switch setting."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from hetpart import compiler, kernels
    from hetpart.kernels.rules import cpu_injective
    from hetpart.targets import cpu_tvm_target

    monkeypatch.setattr(cpu_injective, "BLOCKED_CONCAT_VECTORS", vectors)
    model, graph = _imported(widen)
    cm = compiler.compile(plan_for(graph, {k: "cpu" for k in graph.kernels}), progress=False)
    x = np.random.default_rng(8).standard_normal((1, 3, 16, 16)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = compose(cm, {graph.inputs[0]: x})[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    # the whole module built as one, with this test's switches (conftest's run_reference_tvm keeps
    # one build per import, which the two concat-vector settings share)
    ref = relax.VirtualMachine(kernels.build(graph.module, cpu_tvm_target()), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)


def test_a_blocked_concat_keeps_its_channel_block_as_vectors():
    """The widened block's concat + BN + ReLU kernels, scheduled for the CPU: each input's part
    runs the 8-channel block as one vectorised loop (BN parameters read as vectors), not fused
    into the plane (where LLVM ran it scalar: ``i % 8`` parameter indices)."""
    import tvm

    from hetpart import kernels
    from hetpart.costmodel import kernel_bench
    from hetpart.targets import cpu_tvm_target

    graph = _imported(True)[1]
    cats = [k for k in graph.kernels.values() if "concatenate" in k.ops]
    assert len(cats) == 2
    for k in cats:
        mod = kernels.schedule(kernel_bench.single_kernel_module(graph, k).mod, cpu_tvm_target())
        text = "\n".join(f.script() for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
        assert "T.vectorized(T.int64(8))" in text or "T.vectorized(T.int64(16))" in text, text
