"""Relax converters for ONNX's integer contractions that TVM 0.27's importer lacks.

In: ONNX nodes ``ConvInteger`` (and, through :mod:`.qlinear`, ``QLinearConv``).
Out: Relax where the contraction is an integer convolution accumulated in int32:
``conv(x - x_zero_point, w - w_zero_point)``, zero points subtracted before the
convolution so that padding contributes 0 (ONNX pads the shifted input), exactly
as ONNX defines it (integer arithmetic, no rounding).

The converters join TVM's own only while :func:`converters` is active (the importer
wraps ``from_onnx`` in it); :data:`CONVERTERS` names them for the supported-op check.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

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


CONVERTERS = {"ConvInteger": ConvInteger}
"""ONNX op -> converter class (TVM's ``OnnxOpConverter`` protocol: ``get_converter``)."""

_LOCK = threading.Lock()


@contextmanager
def converters():
    """TVM's ONNX importer with :data:`CONVERTERS` added, for the ``with`` block.

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
