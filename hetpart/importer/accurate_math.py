"""Compute ``log(1 + u)`` and ``tanh`` without cancellation near 0, before fusion.

In: a Relax module of high-level ops (``from_onnx``'s output).  Out: the same module
where every float ``relax.log(1 + u)`` (``1`` a scalar constant, either operand
order: how the frontend imports ``Softplus`` and ``Mish``) is a ``call_te`` computing
``log1p(u)``, and every float ``relax.tanh`` a ``call_te`` that uses its odd Taylor
series for ``|x| < 1/16`` and TVM's ``tanh`` elsewhere.

Why: ``1 + u`` rounds away ``u``'s digits when ``u`` is small (softplus(-10) =
log(1 + 4.5e-5) came out 1.2e-3 relative off in float32: ``test_mish``), and TVM's
LLVM lowering of ``tanh`` is ``(1 - e) / (1 + e)``, ``e = exp(-2|x|)``, which loses
the same digits (1.3e-2 relative off at x = 1e-6).  ``log1p`` is a libm call (CUDA:
``log1pf``); float16 computes it in float32 and rounds once.  The series costs four
multiply-adds and a select.  Both fuse into their neighbours like the ops they
replace.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx
from tvm.relax import Call, PyExprMutator, expr_functor

from .relax_rewrite import rewrite_functions

_SERIES_BELOW = 0.0625
# tanh(x) = x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - ...; below 1/16 the first
# omitted term is under 1e-11 relative, and TVM's formula is within 5e-7 above it.
_TANH_SERIES = (1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0)


def _is_float(expr) -> bool:
    return str(getattr(getattr(expr, "ty", None), "dtype", "")).startswith("float")


def _is_scalar_one(expr) -> bool:
    if not isinstance(expr, tvm.ir.GenericConst):
        return False
    value = expr.value
    array = value.numpy()
    return array.size == 1 and float(array.reshape(())) == 1.0


def _log1p(u):
    dtype = str(u.dtype)
    wide = "float32" if dtype == "float16" else dtype  # libm has no half log1p

    def f(*i):
        return tirx.log1p(u(*i).astype(wide)).astype(dtype)

    return te.compute(u.shape, f, name="compute")


def _tanh(x):
    dtype = str(x.dtype)
    c = [tirx.const(k, dtype) for k in _TANH_SERIES]
    small = tirx.const(_SERIES_BELOW, dtype)

    def f(*i):
        v = x(*i)
        v2 = v * v
        series = v * (c[0] + v2 * (c[1] + v2 * (c[2] + v2 * c[3])))
        return tirx.Select(tirx.abs(v) < small, series, tirx.tanh(v))

    return te.compute(x.shape, f, name="compute")


@expr_functor.mutator
class _AccurateMath(PyExprMutator):
    def visit_call_(self, call: Call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", None)
        if not call.args or not _is_float(call.args[0]):
            return call
        if name == "relax.tanh":
            return self.builder_.call_te(_tanh, call.args[0], primfunc_name_hint="tanh")
        if name == "relax.log":
            u = self._one_plus(call.args[0])
            if u is not None:
                return self.builder_.call_te(_log1p, u, primfunc_name_hint="log1p")
        return call

    def _one_plus(self, expr):
        """``u`` when ``expr`` is bound to ``1 + u`` or ``u + 1`` of ``u``'s shape."""
        if not isinstance(expr, relax.Var):
            return None
        value = self.lookup_binding(expr)
        if not isinstance(value, Call) or getattr(value.op, "name", None) != "relax.add":
            return None
        a, b = value.args
        u = b if _is_scalar_one(a) else a if _is_scalar_one(b) else None
        if u is None or not _is_float(u) or list(u.ty.shape.values) != list(expr.ty.shape.values):
            return None
        return u


def accurate_math(mod):
    """``mod`` with ``log(1 + u)`` and ``tanh`` as the module docstring says."""
    return rewrite_functions(mod, _AccurateMath(mod))
