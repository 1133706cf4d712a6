"""Relax converters for ONNX's integer contractions that TVM 0.27's importer lacks.

In: ONNX nodes ``ConvInteger`` and ``MatMulInteger`` (and, through :mod:`.qlinear`,
``QLinearConv`` and ``QLinearMatMul``).  Out: Relax where the contraction is integer,
accumulated in int32, exactly as ONNX defines it (integer arithmetic, no rounding):

* ConvInteger: ``conv(x - x_zero_point, w - w_zero_point)`` in int32, zero points
  subtracted before the convolution so that padding contributes 0 (ONNX pads the
  shifted input);
* DynamicQuantizeLinear: TVM's converter with its min/max in two stages (vector partials per
  row, rows in parallel) and onnx.reference's scale 1 for an all-zero input;
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


def _extremum_partials(which: str, lanes: int):
    """TE: ``x``'s max (``which="max"``) or min as ``lanes`` partial results per row of
    its last axis, ``out[..., l] = extremum over k of x[..., k * lanes + l]`` --
    contiguous ``lanes``-wide loads, one vector max/min a step, rows in parallel
    (:class:`~hetpart.kernels.rules.cpu_reduction.CpuReduction`).  NaN-propagating,
    from -inf/+inf, as :mod:`.nan_semantics` makes every ReduceMax/ReduceMin."""
    from tvm import te

    from .nan_semantics import _reducer  # the one NaN-propagating max/min combiner (same package)

    reducer = _reducer(which)

    def compute(x):
        *lead, last = x.shape
        k = te.reduce_axis((0, last // lanes), name="k")
        return te.compute([*lead, lanes], lambda *i: reducer(x(*i[:-1], k * lanes + i[-1]), axis=k),
                          name=f"{which}_red")

    return compute


class DynamicQuantizeLinear:
    """ONNX DynamicQuantizeLinear (opset 11), TVM's converter with its full-tensor
    min/max in two stages: ``lanes`` partial results per row of the last axis
    (:func:`_extremum_partials`, read in place: no reshape, which would be a copy of
    its own -- an injective producer does not fuse into a reduction), then over the
    partials.  A reduction of a whole tensor to one value has no loop to run in
    parallel, and its vector form needs the lanes as an axis of their own: TVM's
    one-stage form ran serially and scalar (BERT-base, 49 of them: a third of its
    dynamically quantised run).  The same values: a max of maxima is the max; NaN
    and infinities as ONNX's ReduceMax/ReduceMin, so as onnx.reference.

    Scale 1 where max(x, 0) == min(x, 0) (x all zeros), as ONNX Runtime computes it
    (the formula would divide by a zero scale; onnx.reference gives 1/255, the same
    ``y``), and zero point 255 where ``-min(x) / scale`` is NaN (x holds -inf), as
    both clamp NaN (``min(255, NaN)`` is 255)."""

    LANES = 16

    @classmethod
    def get_converter(cls, opset):
        return cls._impl_v11

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        import math

        x = inputs[0]
        dtype = x.ty.dtype
        if x.ty.ndim == 0:
            x_max, x_min = x, x
        else:
            lanes = math.gcd(int(x.ty.shape.values[-1]), cls.LANES) or 1
            x_max = relax.op.max(bb.call_te(_extremum_partials("max", lanes), x, primfunc_name_hint="max_partials"))
            x_min = relax.op.min(bb.call_te(_extremum_partials("min", lanes), x, primfunc_name_hint="min_partials"))
        zero, qmax = relax.const(0, dtype), relax.const(255, dtype)
        x_max, x_min = bb.normalize(relax.op.maximum(zero, x_max)), bb.normalize(relax.op.minimum(zero, x_min))
        span = relax.op.subtract(x_max, x_min)
        span = relax.op.where(relax.op.equal(x_max, x_min), relax.const(255, dtype), span)
        scale = bb.normalize(relax.op.divide(span, qmax))
        zp_real = relax.op.subtract(zero, relax.op.divide(x_min, scale))
        zp_real = relax.op.where(relax.op.isnan(zp_real), qmax, zp_real)  # -inf / inf: ORT's clamp gives 255
        zp = bb.normalize(relax.op.astype(relax.op.round(relax.op.clip(zp_real, 0, 255)), "uint8"))
        y = relax.op.quantize(x, scale, zp, axis=0, out_dtype="uint8")
        return relax.Tuple([y, scale, zp])


CONVERTERS = {"ConvInteger": ConvInteger, "MatMulInteger": MatMulInteger,
              "DynamicQuantizeLinear": DynamicQuantizeLinear}
"""ONNX op -> converter class (TVM's ``OnnxOpConverter`` protocol: ``get_converter``)."""

_LOCK = threading.Lock()


@contextmanager
def converters(extra: dict | None = None):
    """TVM's ONNX importer with :data:`CONVERTERS` (and ``extra``, another op -> converter
    table) added or replacing TVM's, for the ``with`` block.

    TVM looks its converters up through the module-level ``_get_convert_map``; it is
    replaced for the block (under a lock: one import at a time in this process)."""
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    with _LOCK:
        original = fe._get_convert_map

        def extended():
            table = dict(original())
            table.update(CONVERTERS)
            table.update(extra or {})
            return table

        fe._get_convert_map = extended
        try:
            yield
        finally:
            fe._get_convert_map = original
