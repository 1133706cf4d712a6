"""A float32 ``exp`` that vectorises on CPUs, and the rewrite that puts it in a PrimFunc.

Why: TVM lowers ``T.exp`` to LLVM's ``llvm.exp.f32``, which LLVM turns into one libm
``expf`` call per element even inside a vectorised loop (no vector math library is
linked), so a softmax spends most of its time in scalar calls.  TVM's own
``topi.fast_exp`` is a TE operator (not an expression to put in a scheduled block),
and it clamps its argument first, which makes NaN finite.

:func:`fast_exp` is an expression of plain arithmetic, ``floor``, casts, shifts and
``reinterpret``, all of which TVM's LLVM code generator emits as vector instructions:
Cody-Waite range reduction ``x = n ln2 + r`` (``|r| <= ln2/2``, ``n ln2`` in two
parts so ``r`` is exact), Cephes' degree-7 ``expf`` polynomial for ``e^r``, and
``2^n`` as two float32 powers of two built from their exponent bits (two, so that
every ``n`` from -150 to 128 is a normal number and the product rounds to the
subnormals as ``expf`` does).

Contract (``tests/test_kernels_fast_exp.py`` checks it against float64 ``exp``):
relative error at most 4 float32 ulps (``4 * 2**-23``, about 4.8e-7) where
``exp(x)`` is a normal float32; for subnormal results an absolute error below
``2**-149``-scale rounding (1e-44); ``exp(-inf) = 0``, ``exp(+inf) = +inf``, ``+inf``
for ``x > ln(FLT_MAX)``, NaN for NaN.

:func:`replace_exp` rewrites every float32 ``T.exp`` call of a PrimFunc into it; the
CPU reduction rule applies it to the functions it schedules (softmax, log-softmax,
log-sum-exp).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

# Beyond ln(FLT_MAX) the result is +inf; below ln(2**-150) it is 0 (rounded from the
# subnormals, so clamping there changes nothing).
_HI = 88.72283935546875
_LO = -104.0
_LOG2E = 1.44269504088896341
# ln 2 = _LN2_HI + _LN2_LO; _LN2_HI has 9 significant bits, so n * _LN2_HI is exact.
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
# Cephes expf: e^r ~ 1 + r + r^2 * P(r) on |r| <= ln2 / 2.
_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)

_EXP = tvm.ir.Op.get("tirx.exp")


def _f32(v: float):
    return tirx.const(v, "float32")


def _pow2(k):
    """``2**k`` as float32 from its exponent bits, for an int32 ``k`` in [-126, 127]."""
    return tirx.reinterpret("float32", tirx.shift_left(k + tirx.const(127, "int32"), tirx.const(23, "int32")))


def fast_exp(x):
    """``exp(x)`` for a float32 expression ``x``, as vectorisable arithmetic (see the
    module docstring for its error and its special values)."""
    xc = tirx.max(tirx.min(x, _f32(_HI)), _f32(_LO))
    n = tirx.floor(xc * _f32(_LOG2E) + _f32(0.5))
    r = (xc - n * _f32(_LN2_HI)) - n * _f32(_LN2_LO)
    poly = _f32(_P[0])
    for c in _P[1:]:
        poly = poly * r + _f32(c)
    er = poly * (r * r) + r + _f32(1.0)
    k = tirx.Cast("int32", n)
    half = tirx.shift_right(k, tirx.const(1, "int32"))  # floor(k / 2): k = half + (k - half)
    y = er * _pow2(half) * _pow2(k - half)
    y = tirx.Select(x > _f32(_HI), tirx.infinity("float32"), y)
    return tirx.Select(tirx.isnan(x), x, y)


def _is_f32_exp(call) -> bool:
    return isinstance(call.op, tvm.ir.Op) and call.op.same_as(_EXP) and str(call.ty) == "float32"


def has_exp(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` calls float32 ``T.exp`` anywhere."""
    found = []
    tvm_ffi.structural_walk(func.body, (tvm.ir.Call, lambda c: found.append(c) if _is_f32_exp(c) else None))
    return bool(found)


def replace_exp(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every float32 ``T.exp(a)`` computed as :func:`fast_exp` ``(a)``;
    everything else unchanged (the same function when it has none)."""
    if not has_exp(func):
        return func

    def visit(call):
        return fast_exp(call.args[0]) if _is_f32_exp(call) else call

    return func.with_body(tvm_ffi.structural_map(func.body, (tvm.ir.Call, visit)))
