"""Attention cases shared by the bf16 attention tests: the two batched matmuls of a BERT layer lowered
for an all-CUDA ``cuda=bf16`` build, the inputs their emulated schedules are fed, and the check that
an emulated schedule computes what the unscheduled kernel does."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from hetpart import load, models
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision as lp
from hetpart.importer import low_precision_attention as lpq

from precision_cases import all_on
from tir_loops import serial_everywhere


def attention_bmms(seq_len: int, hidden: int, heads: int, storage: bool):
    """``(lowered graph, [Q K^T kernel, P V kernel])`` of the zoo's BERT layer lowered for an
    all-CUDA ``cuda=bf16`` build (default switches; Q, K, V in bf16 with ``storage``)."""
    graph = load(models.build("bert", True, layers=1, batch=1, seq_len=seq_len, hidden=hidden, heads=heads,
                              intermediate=4 * hidden, vocab=1000))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lpq, "STORE_ATTENTION_OPERANDS_BF16", storage)
        lowered = lower_plan_weights(graph, all_on(graph, "cuda"), Precision(cuda="bf16"))
    bmms = [k for k in lowered.kernels.values() if k.op_class == "matmul" and len(k.inputs) == 2 and not k.param_bytes]
    assert len(bmms) == 2
    return lowered, bmms


def bf16_value(shape, dtype, rng):
    """Standard normal (negatives), a tenth exactly zero, rounded to bf16 where ``dtype`` is."""
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.1] = 0
    return lp.to_low(x, "bfloat16") if dtype == "bfloat16" else x


def assert_schedule_computes_kernel(func, scheduled, seed: int) -> None:
    """``scheduled`` (its tensor-core intrinsics emulated, every loop made serial) built for the CPU
    computes ``func``'s result on :func:`bf16_value` inputs: within 1e-5 for a float32 output, one
    bf16 rounding (2^-7) for a bf16 one."""
    rng = np.random.default_rng(seed)
    args = [bf16_value([int(d) for d in p.shape], str(p.dtype), rng) for p in func.params[:-1]]
    out = func.params[-1]
    results = []
    for f in (func, serial_everywhere(scheduled)):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target="llvm")
        tensors = [tvm.runtime.tensor(x) for x in args]
        tensors.append(tvm.runtime.empty([int(d) for d in out.shape], str(out.dtype)))
        lib["main"](*tensors)
        results.append(np.asarray(tensors[-1].numpy(), np.float32))
    want, got = results
    rtol = 1e-5 if str(out.dtype) == "float32" else 2 ** -7  # a bf16 output: one rounding either way
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
