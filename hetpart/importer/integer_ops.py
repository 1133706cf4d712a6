"""Relax converters for ONNX's integer contractions that TVM 0.27's importer lacks.

In: ONNX nodes ``ConvInteger`` and ``MatMulInteger`` (and, through :mod:`.qlinear`,
``QLinearConv`` and ``QLinearMatMul``).  Out: Relax where the contraction is integer,
accumulated in int32, exactly as ONNX defines it (integer arithmetic, no rounding):

* ConvInteger: ``conv(x - x_zero_point, w - w_zero_point)`` in int32, zero points
  subtracted before the convolution so that padding contributes 0 (ONNX pads the
  shifted input);
* DynamicQuantizeLinear: TVM's converter with its min/max in two stages (rows in parallel);
* MatMulInteger: ``uint8 @ int8 -> int32`` on the 8-bit values themselves, zero
  points applied after the product (replacing TVM's converter, which widens both
  operands to int32 first; see :class:`MatMulInteger`).

The converters join TVM's own only while :func:`converters` is active (the importer
wraps ``from_onnx`` in it); :data:`CONVERTERS` names them for the supported-op check.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import tvm
from tvm import relax


def _int32(bb, value):
    return bb.normalize(relax.op.astype(value, "int32"))


def _per_channel(bb, zp, rank: int):
    """A zero point of shape ``[M]`` (one per output channel) as ``[M, 1, ...]`` to
    broadcast over a weight of ``rank`` dims; a scalar or 1-element one as it is."""
    zp = _int32(bb, zp)
    shape = zp.ty.shape.values if zp.ty.shape is not None else []
    if len(shape) == 1 and int(shape[0]) != 1:
        return relax.op.reshape(zp, [-1] + [1] * (rank - 1))
    return relax.op.reshape(zp, []) if len(shape) == 1 else zp


class ConvInteger:
    """ONNX ConvInteger (opset 10): int32 ``conv(x - x_zp, w - w_zp)``."""

    @classmethod
    def get_converter(cls, opset):
        return cls._impl_v10

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        from tvm.relax.frontend.onnx.onnx_frontend import Conv

        x, w = _int32(bb, inputs[0]), _int32(bb, inputs[1])
        rank = w.ty.ndim
        if len(inputs) > 2 and inputs[2] is not None:
            x = bb.normalize(relax.op.subtract(x, _per_channel(bb, inputs[2], 1)))
        if len(inputs) > 3 and inputs[3] is not None:
            w = bb.normalize(relax.op.subtract(w, _per_channel(bb, inputs[3], rank)))
        return Conv._impl_v11(bb, [x, w, None], dict(attr), params)


def _zero(value) -> bool:
    """Whether ``value`` is absent or a constant of zeros."""
    import numpy as np

    return value is None or (isinstance(value, tvm.ir.GenericConst) and not np.any(value.value.numpy()))


def _shifted(bb, x, zp, want: str):
    """``x`` as ``want`` (uint8 or int8) and its zero point as int32, the same values
    ``x - zp``: an 8-bit tensor of the other signedness moves by 128, its zero point
    with it."""
    zp = None if _zero(zp) else _int32(bb, zp)
    if x.ty.dtype == want:
        return x, zp
    shift = 128 if want == "uint8" else -128
    moved = relax.op.astype(relax.op.add(_int32(bb, x), relax.const(shift, "int32")), want)
    zp = relax.const(shift, "int32") if zp is None else relax.op.add(zp, relax.const(shift, "int32"))
    return bb.normalize(moved), bb.normalize(zp)


class MatMulInteger:
    """ONNX MatMulInteger (opset 10) with 8-bit operands: ``uint8 @ int8 -> int32``.

    TVM's converter widens both operands to int32 before the matmul (4x the weight
    bytes, int32 multiplies).  Here the contraction reads the 8-bit values as they
    are -- the activation as uint8, the weight as int8, the operand pair AVX-512 VNNI
    multiplies (``vpdpbusd``); an operand of the other signedness is moved by 128,
    its zero point with it -- and the zero points enter afterwards, exactly:
    ``(A - za)(B - zb) = A@B - za*colsum(B) - rowsum(A)*zb + K*za*zb`` (a weight's
    column sums fold at compile time; terms of a zero zero point are left out).
    """

    @classmethod
    def get_converter(cls, opset):
        return cls._impl_v10

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, za = _shifted(bb, inputs[0], inputs[2] if len(inputs) > 2 else None, "uint8")
        b, zb = _shifted(bb, inputs[1], inputs[3] if len(inputs) > 3 else None, "int8")
        acc = bb.normalize(relax.op.matmul(a, b, out_dtype="int32"))
        if za is not None and za.ty.ndim == 1:  # per row: [M] -> [M, 1]
            za = bb.normalize(relax.op.expand_dims(za, axis=-1))
        if za is not None:
            colsum = relax.op.sum(_int32(bb, b), axis=[-2], keepdims=True)
            acc = relax.op.subtract(acc, relax.op.multiply(za, colsum))
        if zb is not None:
            rowsum = relax.op.sum(_int32(bb, a), axis=[-1], keepdims=True)
            acc = relax.op.subtract(acc, relax.op.multiply(rowsum, zb))
        if za is not None and zb is not None:
            k = int(a.ty.shape.values[-1])
            acc = relax.op.add(acc, relax.op.multiply(relax.op.multiply(za, zb), relax.const(k, "int32")))
        return acc


class DynamicQuantizeLinear:
    """ONNX DynamicQuantizeLinear (opset 11), TVM's converter with its full-tensor
    min/max as two stages: per row of a ``[gcd(n, 64), n / gcd(n, 64)]`` view, then over
    the rows.  A reduction of a whole tensor to one value has no loop to run in
    parallel, and hetpart's NaN-propagating max/min reducer cannot be split into
    vector partials, so TVM's one-stage form ran serially (BERT-base, 72 of them: a
    third of its dynamically quantised run); the rows now run in parallel.  The same
    values: a max of maxima is the max."""

    ROWS = 64

    @classmethod
    def get_converter(cls, opset):
        return cls._impl_v11

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        import math

        x = inputs[0]
        n = 1
        for d in x.ty.shape.values:
            n *= int(d)
        rows = math.gcd(n, cls.ROWS) or 1
        view = bb.normalize(relax.op.reshape(x, [rows, n // rows]))
        x_max = relax.op.max(bb.normalize(relax.op.max(view, axis=[1])))
        x_min = relax.op.min(bb.normalize(relax.op.min(view, axis=[1])))
        dtype = x.ty.dtype
        zero, qmax = relax.const(0, dtype), relax.const(255, dtype)
        x_max, x_min = relax.op.maximum(zero, x_max), relax.op.minimum(zero, x_min)
        scale = bb.normalize(relax.op.divide(relax.op.subtract(x_max, x_min), qmax))
        zp_real = relax.op.subtract(zero, relax.op.divide(x_min, scale))
        zp = bb.normalize(relax.op.astype(relax.op.round(relax.op.clip(zp_real, 0, 255)), "uint8"))
        y = relax.op.quantize(x, scale, zp, axis=0, out_dtype="uint8")
        return relax.Tuple([y, scale, zp])


CONVERTERS = {"ConvInteger": ConvInteger, "MatMulInteger": MatMulInteger,
              "DynamicQuantizeLinear": DynamicQuantizeLinear}
"""ONNX op -> converter class (TVM's ``OnnxOpConverter`` protocol: ``get_converter``)."""

_LOCK = threading.Lock()


@contextmanager
def converters():
    """TVM's ONNX importer with :data:`CONVERTERS` added (or replacing TVM's), for the ``with`` block.

    TVM looks its converters up through the module-level ``_get_convert_map``; it is
    replaced for the block (under a lock: one import at a time in this process)."""
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    with _LOCK:
        original = fe._get_convert_map

        def extended():
            table = dict(original())
            table.update(CONVERTERS)
            return table

        fe._get_convert_map = extended
        try:
            yield
        finally:
            fe._get_convert_map = original
