"""A QDQ pair on an activation computed in float, before fusion: ``dequantize(quantize(x))``
with one scale and zero point as ``clip(round(x / s), qmin - zp, qmax - zp) * s``.

In: a Relax module of high-level ops (``from_onnx``'s output).  Out: the same module
where every float32 ``relax.dequantize`` of a ``relax.quantize`` whose scale and zero
point are the same one-element constants (ONNX Runtime's static QDQ format writes each
QuantizeLinear -> DequantizeLinear pair so, per tensor) is one ``call_te`` named
``fake_quantize``; the quantize, read by nothing else, is dropped by fusion's dead-code
elimination.  Other quantize/dequantize calls (per channel, different scales, an 8-bit
value read elsewhere) are left as they were.  Behind :data:`FLOAT_FAKE_QUANT`.

Exactly the values of the pair (not an approximation): the pair computes
``q = clip(round(x / s) + zp, qmin, qmax)`` as an integer, then ``(q - zp) * s``.
``r = round(x / s)`` is a whole float; below 2**24 in magnitude ``r + zp`` is exact and
``clip(r + zp, qmin, qmax) - zp == clip(r, qmin - zp, qmax - zp)``, both whole numbers
the float holds exactly, multiplied by the same ``s``; from 2**24 up both clip to the
same bound.  The infinities clip alike, and NaN comes out the same as TVM's integer
round trip gives it (both min/max chains take the bound; not ORT's value for NaN, which
its int8 cast decides: ``tests/test_importer_fake_quantize.py``).

Why: each conv, add and activation of a QDQ model ends in such a pair, fused into its
epilogue, where the pair cost ~12 vector instructions an element (the divide, round,
bias by the zero point, clip, a convert to int32, two packs to 8 bits, the sign
extension back, a convert to float, the zero point again, the scale); the float form is
5 (divide, round, min, max, multiply).  On MobileNetV3's 1x1 convs (16-120 input
channels) the epilogue was as dear as the reduction (``bench/results/cpu-int8-qdq-2core.md``).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te
from tvm.relax import Call, PyExprMutator, Var, expr_functor

from .relax_rewrite import rewrite_functions

FLOAT_FAKE_QUANT = True
"""The module switch (False: quantize/dequantize pairs legalised by TVM as before)."""

_INTEGER_TYPES = ("int8", "uint8", "int16", "uint16")


def _scalar(expr) -> np.ndarray | None:
    """The value of a one-element relax constant, else None."""
    if not isinstance(expr, tvm.ir.GenericConst):
        return None
    value = expr.value.numpy()
    return value.reshape(()) if value.size == 1 else None


def _dtype(expr) -> str:
    return str(getattr(getattr(expr, "ty", None), "dtype", ""))


def fake_quant_compute(scale: np.float32, zero_point: int, dtype: str):
    """The TE function ``x -> clip(round(x / scale), qmin - zp, qmax - zp) * scale`` for the
    integer ``dtype``'s range (module doc)."""
    info = np.iinfo(dtype)
    s = tvm.tirx.const(float(np.float32(scale)), "float32")
    lo = tvm.tirx.const(float(int(info.min) - zero_point), "float32")
    hi = tvm.tirx.const(float(int(info.max) - zero_point), "float32")

    def compute(x):
        return te.compute(x.shape, lambda *i: te.max(te.min(te.round(x(*i) / s), hi), lo) * s,
                          name="fake_quantized")

    return compute


@expr_functor.mutator
class _FakeQuantize(PyExprMutator):
    def visit_call_(self, call: Call):
        call = super().visit_call_(call)
        if getattr(call.op, "name", None) != "relax.dequantize" or str(call.attrs.out_dtype) != "float32":
            return call
        source = call.args[0]
        quant = self.lookup_binding(source) if isinstance(source, Var) else None
        if not isinstance(quant, Call) or getattr(quant.op, "name", None) != "relax.quantize":
            return call
        x, dtype = quant.args[0], str(quant.attrs.out_dtype)
        qs, qz, ds, dz = (_scalar(a) for a in (quant.args[1], quant.args[2], call.args[1], call.args[2]))
        if (dtype not in _INTEGER_TYPES or _dtype(x) != "float32" or any(v is None for v in (qs, qz, ds, dz))
                or qs.dtype != np.float32 or ds.dtype != np.float32 or qs != ds or int(qz) != int(dz)
                or not np.isfinite(qs) or qs == 0):
            return call
        return self.builder_.call_te(fake_quant_compute(qs, int(qz), dtype), x, primfunc_name_hint="fake_quantize")


def float_fake_quantize(mod):
    """``mod`` with its per-tensor QDQ pairs in float (module doc); unchanged while
    :data:`FLOAT_FAKE_QUANT` is off."""
    if not FLOAT_FAKE_QUANT:
        return mod
    return rewrite_functions(mod, _FakeQuantize(mod))
