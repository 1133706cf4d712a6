"""CPU Softmax / LogSoftmax (the reduction rule with :mod:`hetpart.kernels.fast_exp`)
against ONNX Runtime and ``onnx.reference``.

Inputs hold what attention and classifier heads see: negatives, zeros, large
magnitudes (+-80, +-1e4), masked entries (-inf), a fully masked row (all -inf: NaN in
ONNX Runtime and the reference, since ``-inf - -inf`` is NaN), +inf and NaN entries
(the row becomes NaN).  Tolerance: rtol 1e-5, atol 1e-6 (float32 rounding of a
sum over the row; the exp itself is within 4 ulps, tests/test_kernels_fast_exp.py);
NaN exactly where ONNX Runtime has NaN, infinities where it has them.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi

from onnx_cases import assert_matches, reference
from softmax_cases import all_cpu_output, ort_output, softmax_matches_references

from hetpart import kernels, load
from hetpart.bench.cpu_softmax import softmax_model
from hetpart.kernels.fast_exp import has_exp
from hetpart.targets import cpu_tvm_target


def _rows(n: int, count: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((count, n)) * 4).astype(np.float32)
    idx = np.arange(n)
    x[1] = 0.0
    x[2] = np.where(idx % 2, 80.0, -80.0)
    x[3] = np.where(idx % 3, 1e4, -1e4)
    x[4, ::3] = -np.inf                    # masked attention
    x[5] = -np.inf                         # a fully masked row
    x[6, 0] = np.nan
    x[7, n // 2] = np.nan
    x[8, n - 1] = np.nan                   # in the tail where the row is not whole vectors
    x[9, n // 3] = np.inf
    x[10, :] = -np.inf
    x[10, n - 1] = 3.0                     # one unmasked entry, last
    x[11] = np.linspace(-200, 0, n)        # exp underflows to subnormals and 0
    return x


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape", [(12, 128), (2, 6, 64), (12, 40), (12, 30), (12, 16), (12, 197), (2, 6, 77), (12, 33)])
def test_softmax_matches_onnxruntime(op, shape):
    x = _rows(shape[-1], count=int(np.prod(shape[:-1]))).reshape(shape)
    softmax_matches_references(x, op, what=f"{op} {shape}")


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_log_softmax_of_moderate_rows_matches_the_reference(op):
    """onnx.reference's LogSoftmax is ``log(softmax)`` (-inf where the softmax
    underflows), so it is compared on rows where that does not happen."""
    x = (np.random.default_rng(1).standard_normal((6, 48)) * 3).astype(np.float32)
    m = softmax_model(op, x.shape)
    assert_matches(all_cpu_output(m, x), reference(m, {"x": x})["y"], what=f"{op} vs onnx.reference")


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_cpu_softmax_uses_the_vector_exp(op):
    """The rule that schedules the softmax computes its exp as fast_exp: no libm
    ``T.exp`` call (LLVM's scalar ``expf`` per element) is left in it."""
    graph = load(softmax_model(op, (1, 12, 128, 128)))
    funcs = [f for f in kernels.schedule(graph.module, cpu_tvm_target()).functions.values()
             if isinstance(f, tvm.tirx.PrimFunc)]
    assert [str(f.attrs[kernels.RULE_ATTR]) for f in funcs] == ["CpuReduction"]
    assert not has_exp(funcs[0])


@pytest.mark.parametrize("shape", [(1, 12, 128, 128), (4, 512)])
def test_softmax_exps_are_stored_in_the_output(shape):
    """The exp scratch row (a workspace allocation per row when it exceeds TVM's 1 KiB
    stack limit) is gone: the exps go into the output row, divided there in place."""
    from hetpart.kernels.rules.cpu_reduction import CpuReduction

    graph = load(softmax_model("Softmax", shape))
    func = next(f for f in graph.module.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    scheduled = CpuReduction().apply(func, cpu_tvm_target()).mod["main"]
    out = scheduled.params[-1]
    allocated = [b for b in scheduled.body.block.alloc_buffers
                 if tvm_ffi.structural_equal(list(b.shape), list(out.shape))]
    assert allocated == [], [b.name for b in allocated]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [((3, 4, 5), 0), ((3, 4, 5), 1), ((2, 40, 16), 1), ((6, 300), 0)])
def test_softmax_over_a_leading_axis_matches_onnxruntime(op, shape, axis):
    """A softmax over a leading axis is scheduled with rows that recompute whole
    columns: its exps must not go into the output (another row's finished values
    would be overwritten)."""
    x = (np.random.default_rng(2).standard_normal(shape) * 4).astype(np.float32)
    m = softmax_model(op, shape, axis=axis)
    assert_matches(all_cpu_output(m, x), ort_output(m, {"x": x}), what=f"{op} {shape} axis {axis}")


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("n", [197, 33])
def test_rows_that_are_not_whole_vectors_reduce_in_partials(op, n):
    """A row of 197 (or 33) floats is no whole number of vectors: its max and sum
    still go through lanes-wide partials (guarded past the row's end; the predicate
    the split leaves is dropped by TVM's compute_at, so it must not be relied on)."""
    from hetpart.kernels.rules.cpu_reduction import CpuReduction

    graph = load(softmax_model(op, (4, n)))
    func = next(f for f in graph.module.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    scheduled = CpuReduction().apply(func, cpu_tvm_target()).mod["main"]
    partials = [b.name for b in scheduled.body.block.alloc_buffers if b.name.endswith(".rf")]
    assert len(partials) == 2, partials
