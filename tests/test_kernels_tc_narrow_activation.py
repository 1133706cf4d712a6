"""gpu_tensor_core's narrow-activation path: a contraction whose A operand is a bf16
activation (``importer.low_precision_scores``' probabilities, the kernel marked with
``NARROW_ACTIVATION_ATTR``) stages A in bf16 by ``cp.async`` and widens it in the fragment
loads (``tf32.NAMES["load_a_bfloat16"]``).

CPU: the schedule with its intrinsics emulated (plain loops of the same descriptions) computes
``float32(P) @ V``; the sm_90 CUDA C stages P by 8-byte ``cp.async`` in bf16.  Functions without
the attribute keep their code (``tools/kernel_code_hash.py``; here: the same function with the
attribute dropped stages P widened, as before)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from hetpart import load, models
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision as lp
from hetpart.importer import low_precision_scores as lps
from hetpart.kernels import tf32
from hetpart.kernels.options import KernelOptions
from hetpart.kernels.rules import gpu_tensor_core as tc
from hetpart.targets import cuda_tvm_target

from onnx_cases import cuda_source
from precision_cases import all_on
from tensor_core_cases import bf16_activation_emulated_intrinsics
from tir_loops import serial_everywhere

SM90 = cuda_tvm_target("sm_90")
@pytest.fixture(scope="module")
def pv():
    """(graph, P V kernel) of a 1-layer BERT at Whisper's width (6 heads of 64), 128 tokens,
    lowered to ``cuda=bf16`` with the scores stored in bf16."""
    m = models.build("bert", False, layers=1, batch=1, seq_len=128, hidden=384, heads=6, intermediate=1536,
                     vocab=1000)
    graph = load(m)
    old = lps.STORE_SCORES_BF16
    lps.STORE_SCORES_BF16 = True
    try:
        lowered = lower_plan_weights(graph, all_on(graph, "cuda"), Precision(cuda="bf16"))
    finally:
        lps.STORE_SCORES_BF16 = old
    s = next(k for k in lowered.kernels.values() if k.op_class == "softmax")
    (kid,) = lowered.tensors[s.outputs[0]].consumers
    return lowered, lowered.kernels[kid]


def test_rule_stages_the_bf16_operand_and_widens_it_in_fragments(pv, monkeypatch):
    graph, k = pv
    func = graph.module[k.func]
    assert func.attrs[lps.NARROW_ACTIVATION_ATTR] == 1
    names = bf16_activation_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    with SM90:
        sch = tc.GpuTensorCoreSplitK(KernelOptions()).apply(func, SM90)  # short K at batch 1: un-split
    assert sch is not None
    script = sch.mod["main"].script()
    assert re.search(r'"bfloat16", scope="shared.dyn"', script), "P not staged in bf16"

    p_param, v_param = func.params[0], func.params[1]
    assert str(p_param.dtype) == "bfloat16" and str(v_param.dtype) == "float32"
    rng = np.random.default_rng(5)
    p = lp.to_low(rng.random([int(d) for d in p_param.shape]).astype(np.float32), "bfloat16")
    v = rng.standard_normal([int(d) for d in v_param.shape]).astype(np.float32)
    out = func.params[-1]
    lib = tvm.compile(tvm.IRModule({"main": serial_everywhere(sch.mod["main"]).with_attr("global_symbol", "main")}),
                      target="llvm")
    args = [tvm.runtime.tensor(p), tvm.runtime.tensor(v), tvm.runtime.empty([int(d) for d in out.shape], "float32")]
    lib["main"](*args)
    want = p.astype(np.float64) @ v.astype(np.float64)
    np.testing.assert_allclose(args[-1].numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_cuda_stages_the_bf16_operand_by_cp_async(pv):
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels import options

    graph, k = pv
    opts = options.resolve(cuda_arch="sm_90")
    src = cuda_source(kernel_bench.build_module(kernel_bench.single_kernel_module(graph, k).mod, SM90, opts))
    assert re.search(r"ptx_cp_async\w*_8_2_2\(buf_dyn_shmem_ptr, [^;]*a0_ptr", src), "P not staged by cp.async in bf16"
    assert "(float)((nv_bfloat16*)buf_dyn_shmem_ptr)" in src  # widened as the fragments load it
    # the same function without the attribute: P widened in the staging copy, as before
    plain = graph.module[k.func].without_attr(lps.NARROW_ACTIVATION_ATTR)
    sch = tc.GpuTensorCoreSplitK(opts).apply(plain, SM90)
    assert sch is not None and "load_a_bfloat16" not in str(sch.trace) and tf32.NAMES["load_a"] in str(sch.trace)
