"""Replace the exact Gauss error function by TVM's fast approximation, before fusion.

In: a Relax module of high-level ops (``from_onnx``'s output).  Out: the same module
with every float32 ``relax.erf`` -- and the erf inside every float32
``relax.nn.gelu`` (``x/2 * (1 + erf(x/sqrt 2))``) -- computed by TVM's own
``topi.fast_erf`` (a clamped rational approximation, error below 5e-7), emitted as a
``call_te`` that later fuses into its neighbours like any element-wise op.  Nothing
else changes.

Why: TVM 0.27 lowers ``erf`` on LLVM targets to a call of libm's scalar ``erff``,
which never vectorises and whose time depends on the data (16-20 ns an element for
|x| < 4, 4 ns once it saturates): BERT's GELU epilogue spent ~5 ms a layer there,
and the cost model's random inputs, which saturate it, hid most of that
(``bench/cpu_gap.py``, in git history before 97fd98d; results in ``bench/results/nvidia-h200-cpu-gap.json``).  The approximation costs well under a nanosecond an element
whatever the data, on the CPU and the GPU alike, so one op graph serves both targets.
"""

from __future__ import annotations

import math

from tvm import topi
from tvm.relax import Call, PyExprMutator, expr_functor

from .relax_rewrite import rewrite_functions

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def _float32(call: Call) -> bool:
    ty = getattr(call.args[0], "ty", None)
    return str(getattr(ty, "dtype", "")) == "float32"


def _erf(x):
    """The fast erf, NaN for NaN (``fast_erf`` clamps its input first, which makes NaN 1)."""
    return topi.where(topi.isnan(x), x, topi.fast_erf(x))


def _gelu(x):
    """GELU with the fast erf, as a TE compute."""
    return topi.multiply(topi.multiply(x, 0.5), topi.add(topi.fast_erf(topi.multiply(x, _INV_SQRT2)), 1.0))


@expr_functor.mutator
class _FastErf(PyExprMutator):
    def visit_call_(self, call: Call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", None)
        if name == "relax.erf" and _float32(call):
            return self.builder_.call_te(_erf, call.args[0], primfunc_name_hint="fast_erf")
        if name == "relax.nn.gelu" and _float32(call):
            return self.builder_.call_te(_gelu, call.args[0], primfunc_name_hint="gelu_fast_erf")
        return call


def fast_erf(mod):
    """``mod`` with float32 erf (and GELU's erf) computed by ``topi.fast_erf`` (module docstring)."""
    return rewrite_functions(mod, _FastErf(mod))
