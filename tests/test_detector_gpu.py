"""The detector on a real GPU: backbone on CUDA, post-processing (NMS, TopK) on the CPU.

Bug this guards (H200, 2026-11-21): the kernel dlight's Transpose rule made for the
detector's score head (transpose, reshape, transpose, sigmoid) crashed the process, so
every plan with that kernel on CUDA segfaulted at its first run, and so did profiling
it.  hetpart no longer uses that rule.  Both checks run in a subprocess so a crash
fails the test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.cuda

EVERY_KERNEL = textwrap.dedent(
    """
    import numpy as np, tvm
    from tvm import relax
    import hetpart
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels import build
    from hetpart.kernels.capabilities import unsupported_reason
    from hetpart.targets import cpu_tvm_target, cuda_tvm_target
    g = hetpart.load("zoo:detector:small")
    for k in g.nodes:
        if unsupported_reason(k, "cuda") or not all(g.tensors[t].static for t in k.outputs):
            continue
        km = kernel_bench.single_kernel_module(g, k)
        outs = []
        for tgt, dev in ((cpu_tvm_target(), tvm.cpu()), (cuda_tvm_target(), tvm.cuda(0))):
            exe = build(km.mod, tgt)
            # The same random inputs on both, weights packed as each build reads them.
            inputs = kernel_bench.prepared_inputs(km, exe, dev, seed=3)
            r = relax.VirtualMachine(exe, dev)["main"](*inputs)
            outs.append([x.numpy() for x in ([r] if hasattr(r, "numpy") else list(r))])
        for a, b in zip(*outs):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=k.func)
    print("ran")
    """
)

SPLIT_PLAN = textwrap.dedent(
    """
    import hetpart
    from hetpart import models
    graph = hetpart.load("zoo:detector")
    plan = hetpart.partition(graph, progress=False)
    assert {"cpu", "cuda"} <= set(plan.assignment.values()), plan.assignment
    compiled = hetpart.compile(plan, graph, progress=False)
    with hetpart.Session(compiled) as session:
        for seed in (0, 1):
            session.run(models.example_inputs(models.build("detector"), seed))
    print("ran")
    """
)


def _run(code: str):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ran" in r.stdout, r.stderr[-2000:]


def test_every_cuda_kernel_of_the_detector_matches_its_cpu_build():
    _run(EVERY_KERNEL)


def test_full_detector_split_across_gpu_and_cpu_runs():
    _run(SPLIT_PLAN)
