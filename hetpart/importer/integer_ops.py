"""Relax converters for ONNX's integer contractions that TVM 0.27's importer lacks.

In: ONNX nodes ``ConvInteger`` and ``MatMulInteger`` (and, through :mod:`.qlinear`,
``QLinearConv`` and ``QLinearMatMul``).  Out: Relax where the contraction is integer,
accumulated in int32, exactly as ONNX defines it (integer arithmetic, no rounding):

* ConvInteger: ``conv(x - x_zero_point, w - w_zero_point)`` in int32, zero points
  subtracted before the convolution so that padding contributes 0 (ONNX pads the
  shifted input);
* DynamicQuantizeLinear: three kernels -- the min and max as vector partials per row
  (rows in parallel, both in one pass), the scale and zero point from the partials
  (one serial kernel, 8 independent max chains; ONNX Runtime's scale 1 for an all-zero input), the quantisation
  (parallel from 32 Ki elements, :mod:`hetpart.kernels.rules.cpu_injective`);
* MatMulInteger: ``uint8 @ int8 -> int32`` on the 8-bit values themselves, zero
  points applied after the product (replacing TVM's converter, which widens both
  operands to int32 first; see :class:`MatMulInteger`).

The converters join TVM's own only while :func:`converters` is active (the importer
wraps ``from_onnx`` in it); :data:`CONVERTERS` names them for the supported-op check.
"""

from __future__ import annotations

import threading
import math
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


def _extremum_partials(lanes: int):
    """TE: ``x``'s max and negated min as ``lanes`` partial results per row of its last
    axis, in one pass: ``out[..., 0, l] = max over k of x[..., k * lanes + l]`` and
    ``out[..., 1, l]`` the same of ``-x`` (``min(x) = -max(-x)``, exact in floats) --
    contiguous ``lanes``-wide loads, one vector max a step, rows in parallel
    (:class:`~hetpart.kernels.rules.cpu_reduction.CpuReduction`).  NaN-propagating,
    from -inf, as :mod:`.nan_semantics` makes every ReduceMax/ReduceMin."""
    from tvm import te, tirx

    from .nan_semantics import _reducer  # the one NaN-propagating max/min combiner (same package)

    reducer = _reducer("max")

    def compute(x):
        *lead, last = x.shape
        k = te.reduce_axis((0, last // lanes), name="k")

        def body(*i):
            v = x(*i[:-2], k * lanes + i[-1])
            return reducer(tirx.Select(i[-2] == 0, v, -v), axis=k)

        return te.compute([*lead, 2, lanes], body, name="extremum_red")

    return compute


def _tuple_max(partials, lead, lanes: int):
    """TE: the NaN-propagating max of each half of ``partials`` (``[..., 2, lanes]``) as
    two 0-d values, computed by one 0-d reduction with :data:`_CHAINS` accumulators a half
    (a tuple reducer: a step updates ``2 * _CHAINS`` independent maxima, lanes ``l``
    with ``l % _CHAINS == c`` into accumulator ``c``), then their max (one 0-d stage a
    combine, :func:`_combine_step`).  One select chain
    per half was latency-bound (~1.7 ns a partial: 7 us for a ``[128, 768]`` input's
    4096); independent chains overlap.  The same value: a max of maxima is the max, NaN
    kept by every combine (:func:`.nan_semantics._reducer`'s combiner)."""
    from tvm import te, tirx

    chains = math.gcd(lanes, _CHAINS)

    def combine(a, b):
        return [tirx.Select(tirx.Or(x > y, tirx.isnan(x)), x, y) for x, y in zip(a, b)]

    def identity(*dtypes):
        return [tirx.const(float("-inf"), d) for d in dtypes]

    reducer = te.comm_reducer(combine, identity, name="max_chains")
    axes = [te.reduce_axis((0, d), name=f"r{i}") for i, d in enumerate([*lead, lanes // chains])]

    def body():
        values = [partials(*axes[:-1], h, axes[-1] * chains + c) for h in (0, 1) for c in range(chains)]
        return reducer(values, axis=axes)

    parts = te.compute([], body, name="extremum_chains")
    parts = parts if isinstance(parts, (list, tuple)) else [parts]

    def half(h: int):
        # One 0-d stage a combine, each reading the last as a buffer: folded into one
        # expression, every combine read its accumulator thrice (the compare, the NaN
        # test, the result), a 3 ** (chains - 1)-fold copy TVM's TIR passes chewed on
        # for ~0.1 s a kernel (a Let-bound accumulator is what estimate_tir_flops rejects).
        acc = parts[h * chains]
        for c in range(1, chains):
            acc = te.compute([], _combine_step(acc, parts[h * chains + c]), name=f"extremum{h}_{c}")
        return acc

    return [half(0), half(1)]


def _combine_step(a, v):
    """TE body: the NaN-propagating max of 0-d tensors ``a`` and ``v`` (``a`` if NaN)."""
    from tvm import tirx

    def body():
        return tirx.Select(tirx.Or(a() > v(), tirx.isnan(a())), a(), v())

    return body


_CHAINS = 4
"""Independent accumulators a half in :func:`_tuple_max`."""


def _scale_zero_point(partials):
    """TE: DynamicQuantizeLinear's ``(scale, zero_point)`` from :func:`_extremum_partials`'
    ``[..., 2, lanes]`` partials, in one function: the max over the partials of each
    half, then ``x_max = max(0, max x)``, ``x_min = min(0, min x)``, ``scale = (x_max -
    x_min) / 255`` (1 where they are equal: ``x`` all zeros, as ONNX Runtime),
    ``zero_point = uint8(round(clip(-x_min / scale, 0, 255)))`` (255 where that is NaN:
    ``x`` holds -inf, as both references clamp NaN).  One serial kernel: the halves' maxima
    are 0-d reductions (:func:`_tuple_max`, independent accumulators), as the scale and
    zero point are; a ``[2]``-shaped one was run 2-way parallel by
    :class:`~hetpart.kernels.rules.cpu_fallback.CpuFallback`, a thread-pool wake-up for
    two latency-bound scalar chains (7 us for a ``[128, 768]`` input, 2.7 us now:
    bench/results/cpu-int8-dynamic-2core.md)."""
    from tvm import te, tirx

    *lead, _, lanes = partials.shape
    red = _tuple_max(partials, lead, int(lanes))
    dtype = partials.dtype
    zero, qmax = tirx.const(0, dtype), tirx.const(255, dtype)

    def bounds():
        return tirx.max(zero, red[0]()), tirx.min(zero, -red[1]())

    def scale_of():
        x_max, x_min = bounds()
        return tirx.Select(x_max == x_min, qmax, x_max - x_min) / qmax

    scale = te.compute([], lambda: scale_of(), name="scale")

    def zero_point():
        zp_real = zero - bounds()[1] / scale()
        zp_real = tirx.Select(tirx.isnan(zp_real), qmax, zp_real)
        return tirx.Cast("uint8", tirx.round(tirx.max(tirx.min(zp_real, qmax), zero)))

    return [scale, te.compute([], zero_point, name="zero_point")]


class DynamicQuantizeLinear:
    """ONNX DynamicQuantizeLinear (opset 11) as three kernels: the full-tensor max and
    min as ``lanes`` partial results per row of the last axis, both in one pass
    (:func:`_extremum_partials`, read in place: no reshape, which would be a copy of its
    own -- an injective producer does not fuse into a reduction); the scale and zero
    point from the partials (:func:`_scale_zero_point`); the quantisation.  A reduction
    of a whole tensor to one value has no loop to run in parallel, and its vector form
    needs the lanes as an axis of their own: TVM's one-stage form ran serially and
    scalar (BERT-base, 49 of them: a third of its dynamically quantised run); TVM's
    converter's min, max and scalar arithmetic were nine kernels a quantisation, each
    a call and, in parallel, a wake-up of the thread pool.  The same values: a max of
    maxima is the max; NaN and infinities as ONNX's ReduceMax/ReduceMin, so as
    onnx.reference.

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
        if x.ty.ndim == 0:
            x = bb.normalize(relax.op.reshape(x, [1]))
        lanes = math.gcd(int(x.ty.shape.values[-1]), cls.LANES) or 1
        partials = bb.normalize(bb.call_te(_extremum_partials(lanes), x, primfunc_name_hint="extremum_partials"))
        scale_zp = bb.normalize(bb.call_te(_scale_zero_point, partials, primfunc_name_hint="scale_zero_point"))
        scale = bb.normalize(relax.TupleGetItem(scale_zp, 0))
        zp = bb.normalize(relax.TupleGetItem(scale_zp, 1))
        y = relax.op.quantize(inputs[0], scale, zp, axis=0, out_dtype="uint8")
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
