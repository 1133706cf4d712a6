"""Attention cases shared by the bf16 attention tests: the two batched matmuls of a BERT layer lowered
for an all-CUDA ``cuda=bf16`` build, and the inputs their emulated schedules are fed."""

from __future__ import annotations

import numpy as np
import pytest

from hetpart import load, models
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision as lp
from hetpart.importer import low_precision_attention as lpq

from precision_cases import all_on


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
