"""The access pattern of a kernel, read off its PrimFunc (no target, no hardware)."""

from __future__ import annotations

import pytest
from tvm import te, topi

from hetpart.costmodel.access_pattern import CONTIGUOUS, STRIDED, UNKNOWN, access_of

A = te.placeholder((64, 32), name="A")
B = te.placeholder((64, 32), name="B")
X = te.placeholder((1, 16, 64), name="X")  # [batch, seq, hidden]
HEADS = topi.reshape(X, (1, 16, 4, 16))  # [batch, seq, head, dim]


@pytest.mark.parametrize("args, want", [
    ((A, topi.transpose(A, (1, 0))), STRIDED),  # a plain transpose: column reads
    ((A, topi.reshape(A, (32, 64))), CONTIGUOUS),
    ((A, B, topi.add(A, B)), CONTIGUOUS),
    # fused reshape -> transpose, judged by the composed index (as the schedules inline it):
    ((X, topi.transpose(HEADS, (0, 2, 1, 3))), CONTIGUOUS),  # head split: dim stays innermost
    ((X, topi.transpose(HEADS, (0, 2, 3, 1))), STRIDED),  # K^T: seq innermost, stride = hidden
], ids=["transpose", "reshape", "add", "head-split", "k-transpose"])
def test_access_pattern_of_small_kernels(args, want):
    assert access_of(te.create_prim_func(list(args))) == want


def test_no_primfunc_or_no_moving_iterator_is_unknown():
    one = te.placeholder((1, 1), name="one")
    assert access_of(None) == UNKNOWN
    assert access_of(te.create_prim_func([one, topi.transpose(one, (1, 0))])) == UNKNOWN
