"""Make ``BitShift`` by an out-of-range amount give what ONNX defines, before fusion.

In: a Relax module of high-level ops (``from_onnx``'s output).  Out: the same module
where every ``relax.left_shift`` / ``relax.right_shift`` is a ``call_te`` of the
same name that shifts by the amount only where it is in ``[0, bits)``.

Why: ONNX (opset 28) defines a shift by a negative amount or by at least the bit
width as the sign fill alone: -1 for a right shift of a negative value, 0 otherwise.
LLVM's ``shl``/``ashr``/``lshr`` by such an amount are poison; x86's scalar shifts
mask the amount (``-1 << 32`` gave -1), its vector shifts give 0, so the result
depended on whether the loop was vectorised.  The rewrite shifts by an amount
clamped into range (never poison) and selects the fill where it was out of range:
two compares and a select, no extra memory traffic.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.relax import Call, PyExprMutator, expr_functor

from .relax_rewrite import rewrite_functions
from .te_broadcast import broadcast

_SHIFTS = {"relax.left_shift": "left_shift", "relax.right_shift": "right_shift"}


def _shift(left: bool):
    """Broadcasting ``x << y`` (``x >> y``) with ONNX's result for ``y`` out of range."""

    def compute(x, y):
        dtype = str(x.dtype)
        bits, signed = tvm.DataType(dtype).bits, dtype.startswith("int")
        zero, width = tirx.const(0, dtype), tirx.const(bits, dtype)

        def shift(a, b):
            out = tirx.Or(b < zero, b >= width) if signed else b >= width
            amount = tirx.Select(out, zero, b)  # in range: the shift is never poison
            if left:
                return tirx.Select(out, zero, tirx.shift_left(a, amount))
            fill = tirx.Select(a < zero, tirx.const(-1, dtype), zero) if signed else zero
            return tirx.Select(out, fill, tirx.shift_right(a, amount))

        return broadcast(shift, x, y)

    return compute


def _is_int(expr) -> bool:
    return str(getattr(getattr(expr, "ty", None), "dtype", "")).startswith(("int", "uint"))


@expr_functor.mutator
class _ShiftRange(PyExprMutator):
    def visit_call_(self, call: Call):
        call = super().visit_call_(call)
        name = _SHIFTS.get(getattr(call.op, "name", None))
        if name is None or len(call.args) != 2 or not all(_is_int(a) for a in call.args):
            return call
        return self.builder_.call_te(_shift(name == "left_shift"), *call.args, primfunc_name_hint=name)


def guard_shift_range(mod):
    """``mod`` with its bit shifts as the module docstring says."""
    return rewrite_functions(mod, _ShiftRange(mod))
