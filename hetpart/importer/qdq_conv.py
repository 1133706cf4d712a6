"""QDQ convolutions as integer matmuls in NHWC: ``Conv(DequantizeLinear(x8), DequantizeLinear(w8), bias)``
as ``MatMulInteger(cols(x8) [H'*W', kh*kw*C], w8 [kh*kw*C, O]) * (x_scale * w_scale) + bias``.

In: a checked ``ModelProto`` with static shapes (``onnx_source.read_model`` calls this after
:func:`.qdq.qdq_contractions`).  Out: the same model where every qualifying Conv is

* ``rows``: the 8-bit activation transposed to ``[H*W, C]``, an int8 one moved to uint8 (+128,
  its zero point with it: ``vpdpbusd``/``tdpbusd``'s activation type), channels padded to a
  multiple of 4 where the depth needs it (:data:`PAD_CHANNELS`);
* ``cols``: ``rows`` itself for a 1x1 stride-1 conv; else a ``Gather`` of whole rows from
  ``rows`` plus one row of the zero point (a padded element contributes ``(zp - zp) * w = 0``,
  as the float conv's zero padding), ``[H'*W', kh*kw, C]`` reshaped to ``[H'*W', kh*kw*C]``
  (im2col in 8 bits; at fusion one 2-D compute, :func:`window_rows_2d`);
* ``MatMulInteger(cols, w8, x_zp)`` (the weight ``[kh*kw*C, O]``, window-major as ``cols``,
  prepacked by the int8 matmul rule, ``hetpart.kernels.rules.cpu_int8_matmul``: VNNI / AMX;
  :mod:`.integer_ops` folds the zero point's ``zp * colsum(w8)``) -> Cast -> ``* scale``
  (``[O]``) ``+ bias`` (the dequantised int32 bias or a float one), output channels padded to
  a multiple of :data:`COLUMNS` and cut after the bias (:data:`PAD_OUTPUTS`) -> Reshape to
  ``[1, H', W', O]`` -> Transpose to NCHW under the Conv's output name (the element-wise ops
  after it fuse into that write-back: ``hetpart.kernels.rules.cpu_injective``'s
  ``MERGE_PLANE_TRANSPOSE`` tiles it).

The DequantizeLinear nodes nothing reads any more are dropped.  Unchanged (the same object)
when no node qualifies or :data:`INT8_CONV` is off.

Qualifies: batch 1, ``group`` 1, 2-D, no dilation, explicit (or no) pads; the input a
DequantizeLinear of an 8-bit tensor with a constant one-element float32 scale and zero
point; the weight one of a constant int8 ``[O, C, kh, kw]`` with a zero zero point and a
scale per tensor or per output channel (``axis`` 0); the bias absent, float, or a
DequantizeLinear of a constant int32 with zero point 0; ``kh*kw`` at most :data:`MAX_WINDOW`;
the depth ``kh*kw*C`` a multiple of 4 (or :data:`PAD_CHANNELS`) and at least
:data:`MIN_DEPTH`; the output image at least :data:`MIN_PIXELS`.

Exactness: the contraction is the integer sum of ``(x8 - x_zp) * w8`` over the window,
which the float conv of the dequantised values approximates with float rounding; the
scale and bias then as the float conv's epilogue.  So the output differs from the float
path by float rounding only (a tie of the next QuantizeLinear may land one step apart:
the quantised model's own tolerance, ``hetpart.bench.int8``).

Why: ONNX Runtime runs such convs as QLinearConv (u8 x s8 -> int32, VNNI/AMX);
hetpart ran them as float convs on the dequantised weight, 3-4x the instructions
(``bench/results/cpu-int8-conv-1core.md``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .qdq import _EIGHT_BIT, dequantize_linear, rewrite_planned

INT8_CONV = True
"""The module switch (False: QDQ convs stay float convs on dequantised weights)."""
KERNELS = ("1x1", "window")
"""Which convs qualify: ``"1x1"`` (1x1 stride 1, no im2col) and/or ``"window"`` (im2col)."""
COLUMNS = 16
"""The output channels must be a multiple of this (the int8 matmul rule's ``vpdpbusd`` lanes)."""
PAD_OUTPUTS = True
"""Switch: output channels no multiple of :data:`COLUMNS` (MobileNetV3's 40, 120, 168) are padded
up to one by zero weight columns, the padding cut off after the bias (a slice fused into the
write-back); off: such convs stay float."""
MIN_DEPTH = 96
"""The least reduction (``kh*kw*C``) taken: below, the layout passes cost more than the
integer contraction saves (1x1 16 -> 64 on 112x112: 0.98 ms int8 vs 0.37 float)."""
MAX_WINDOW = 49
PAD_CHANNELS = False
"""Switch: a window whose depth ``kh*kw*C`` is no multiple of 4 (an RGB stem: 7x7x3) has its
channels padded to a multiple of 4 (the activation's rows by its zero point, the weight's by
zeros: no change to the sum); off (default): such convs stay float -- resnet18's 7x7x3 stem
measured a tie (1.83 ms int8, VNNI on a depth of 196, vs 1.82 float; 1 thread, CPU time)."""
MIN_PIXELS = 1
"""The least output image (``H'*W'``) taken; 1 takes a squeeze-excite gate's 1x1 convs too."""


def qdq_convs(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its qualifying QDQ convs as integer matmuls (module doc)."""
    if not INT8_CONV:
        return model
    return rewrite_planned(model, _shapes, _plan, _rewrite)


def _shapes(model) -> dict[str, tuple]:
    from .onnx_types import value_types

    out = {}
    for k, t in value_types(model).items():
        if t.HasField("tensor_type") and t.tensor_type.HasField("shape"):
            dims = t.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                out[k] = (t.tensor_type.elem_type, tuple(d.dim_value for d in dims))
    return out


def _dq(name, producer, consts):
    """(input, scale value, zero point value or None, axis) of the DequantizeLinear
    producing ``name`` whose scale and zero point are constants, else None."""
    found = dequantize_linear(name, producer, consts)
    if found is None:
        return None
    x, scale, zp, attrs = found
    return x, consts[scale], (consts[zp] if zp else None), attrs.get("axis", 1)


def _plan(node, producer, consts, shapes):
    """The rewrite's values for a qualifying Conv, else None (module doc)."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("group", 1) != 1 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    a = _dq(node.input[0], producer, consts)
    w = _dq(node.input[1], producer, consts)
    if a is None or w is None:
        return None
    x8, xs, xz, _ = a
    if shapes.get(x8, (None,))[0] not in _EIGHT_BIT or xs.size != 1 or (xz is not None and xz.size != 1):
        return None
    wq = consts.get(w[0])
    if wq is None or wq.dtype != np.int8 or wq.ndim != 4:
        return None
    o, c, kh, kw = wq.shape
    ws, wz, waxis = w[1], w[2], w[3]
    if wz is not None and np.any(wz):
        return None
    if ws.size != 1 and not (ws.size == o and waxis in (0, -4)):
        return None
    shape = shapes.get(x8, (None, None))[1]
    if shape is None or len(shape) != 4 or shape[0] != 1 or shape[1] != c:
        return None
    strides = list(attrs.get("strides", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if list(attrs.get("dilations", [1, 1])) != [1, 1] or len(strides) != 2 or len(pads) != 4:
        return None
    h, wd = shape[2], shape[3]
    oh = (h + pads[0] + pads[2] - kh) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - kw) // strides[1] + 1
    one = (kh, kw) == (1, 1) and strides == [1, 1] and not any(pads)
    if ("1x1" if one else "window") not in KERNELS or kh * kw > MAX_WINDOW:
        return None
    cp = c if (kh * kw * c) % 4 == 0 or not PAD_CHANNELS else -(-c // 4) * 4
    if (kh * kw * cp) % 4 or (o % COLUMNS and not PAD_OUTPUTS) or kh * kw * cp < MIN_DEPTH or oh * ow < MIN_PIXELS:
        return None
    bias = None
    if len(node.input) > 2 and node.input[2]:
        b = _dq(node.input[2], producer, consts)
        if b is not None:
            bq = consts.get(b[0])
            if bq is None or bq.dtype != np.int32 or (b[2] is not None and np.any(b[2])):
                return None
            bias = (bq.astype(np.float32) * b[1].astype(np.float32)).reshape(-1)
        else:
            bias = consts.get(node.input[2])
            if bias is None or bias.dtype != np.float32:
                return None
        if bias.size != o:
            return None
    scale = (np.float32(xs.reshape(())) * ws.astype(np.float32)).reshape(-1)
    return dict(x8=x8, x8_type=shapes[x8][0], xz=xz, wq=wq, scale=scale, bias=bias,
                strides=strides, pads=pads, shape=shape, out=(o, oh, ow), one=one)


def _rewrite(node, i, p):
    prefix = f"{node.name or node.output[0]}/int8conv{i}"
    nodes, inits = [], []

    def emit(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(name, value):
        inits.append(numpy_helper.from_array(value, f"{prefix}/{name}"))
        return f"{prefix}/{name}"

    _, c, h, w = p["shape"]
    o, oh, ow = p["out"]
    wq = p["wq"]
    kh, kw = wq.shape[2:]
    nhwc = emit("Transpose", [p["x8"]], f"{prefix}/nhwc", perm=[0, 2, 3, 1])
    rows = emit("Reshape", [nhwc, const("rows_shape", np.array([h * w, c], np.int64))], f"{prefix}/rows")
    zp = 0 if p["xz"] is None else int(p["xz"].reshape(()))
    cp = c if (kh * kw * c) % 4 == 0 else -(-c // 4) * 4
    if cp != c:  # channels padded by the zero point (PAD_CHANNELS), the weight by zeros below
        fill_value = const("channel_fill", p["xz"].reshape(()) if p["xz"] is not None
                           else np.zeros((), onnx.helper.tensor_dtype_to_np_dtype(p["x8_type"])))
        rows = emit("Pad", [rows, const("channel_pads", np.array([0, 0, 0, cp - c], np.int64)), fill_value],
                    f"{prefix}/rows_padded", mode="constant")
        wq = np.concatenate([wq, np.zeros((o, cp - c, kh, kw), np.int8)], axis=1)
        c = cp
    if p["x8_type"] == TensorProto.INT8:  # to uint8 (vpdpbusd's activation type) in the layout kernel
        wide = emit("Cast", [rows], f"{prefix}/wide", to=TensorProto.INT32)
        moved = emit("Add", [wide, const("shift", np.array(128, np.int32))], f"{prefix}/moved")
        rows = emit("Cast", [moved], f"{prefix}/rows_u8", to=TensorProto.UINT8)
        zp += 128
    zero_point = const("zero_point", np.array(zp, np.uint8))
    if p["one"]:
        cols = rows
    else:
        fill = np.full((1, c), zp, np.uint8)
        table = emit("Concat", [rows, const("pad_row", fill)], f"{prefix}/table", axis=0)
        sh, sw = p["strides"]
        pt, pl = p["pads"][0], p["pads"][1]
        oy, ox, dy, dx = np.meshgrid(np.arange(oh), np.arange(ow), np.arange(kh), np.arange(kw), indexing="ij")
        iy, ix = oy * sh - pt + dy, ox * sw - pl + dx
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        index = np.where(inside, iy * w + ix, h * w).reshape(oh * ow, kh * kw).astype(np.int64)
        gathered = emit("Gather", [table, const("window_index", index)], f"{prefix}/gathered", axis=0)
        cols = emit("Reshape", [gathered, const("cols_shape", np.array([oh * ow, kh * kw * c], np.int64))],
                    f"{prefix}/cols")
    weight = wq.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)  # [(dy, dx, c), o]: the cols' order
    scale, bias = p["scale"].reshape(-1), p["bias"]
    wide = -(-o // COLUMNS) * COLUMNS
    if wide != o:  # PAD_OUTPUTS: zero weight columns, cut off after the bias
        weight = np.concatenate([weight, np.zeros((weight.shape[0], wide - o), np.int8)], axis=1)
        scale = scale if scale.size == 1 else np.concatenate([scale, np.zeros(wide - o, np.float32)])
        bias = None if bias is None else np.concatenate([bias.reshape(-1), np.zeros(wide - o, np.float32)])
    inputs = [cols, const("weight", np.ascontiguousarray(weight))] + ([zero_point] if zp else [])
    acc = emit("MatMulInteger", inputs, f"{prefix}/acc")
    real = emit("Cast", [acc], f"{prefix}/real", to=TensorProto.FLOAT)
    scaled = emit("Mul", [real, const("scale", scale)], f"{prefix}/scaled")
    if bias is not None:
        scaled = emit("Add", [scaled, const("bias", bias.reshape(-1))], f"{prefix}/biased")
    if wide != o:
        scaled = emit("Slice", [scaled, const("cut_start", np.array([0], np.int64)), const("cut_end", np.array([o], np.int64)),
                                const("cut_axis", np.array([1], np.int64))], f"{prefix}/cut")
    back = emit("Reshape", [scaled, const("out_shape", np.array([1, oh, ow, o], np.int64))], f"{prefix}/out_nhwc")
    emit("Transpose", [back], node.output[0], perm=[0, 3, 1, 2])
    return nodes, inits


WINDOW_ROWS_2D = True
"""Switch: the im2col's ``Reshape(Gather(table, index), [M, W*C])`` is one compute writing the
2-D columns (:func:`window_rows_2d`); off: TVM's ``take`` then a reshape kernel, a second copy
of the columns with a div/mod per byte (resnet18's 7x7 stem: 2.5 ms)."""


WINDOW_PAD_IN_GATHER = True
"""Switch: where the im2col's table is ``Concat(rows [R, C], a constant row of one value zp)``
(:func:`_rewrite`'s padding row), :func:`window_rows_2d` reads ``rows`` directly and writes ``zp``
where the index is ``R`` -- no table kernel.  That concat was the activation's layout kernel
(NCHW -> ``[H*W, C]``, quantised, + the row): ``cpu_injective`` partitions a concat and runs it
serial, untiled (each element read from its own cache line): resnet18 QDQ's 18 such kernels,
0.81 ms of its 7.2 on one core, stayed on one thread at 16 (``bench/results/cpu-int8-scale-2core.md``).
Without the concat the layout kernel is the plain transpose (or, fused with the previous conv's
write-back, an element-wise pass) that the injective rule tiles and runs in parallel.  Off: the
table as before."""


def _window_rows_compute(m: int, width: int, c: int, pad_row: int | None = None, fill=None):
    """``window_rows[i, k] = table[index[i, k // c], k % c]``; with ``pad_row`` (R), the table is
    ``rows`` of R rows and index R reads ``fill`` (:data:`WINDOW_PAD_IN_GATHER`)."""
    from tvm import te, tirx

    if pad_row is None:
        def compute(table, index):
            return te.compute((m, width * c), lambda i, k: table[index[i, k // c], k % c], name="window_rows")

        return compute

    def padded(rows, index):
        def value(i, k):
            row = index[i, k // c]
            # the load is evaluated for the padding row too (a Select): its row wraps to 0, in
            # bounds (a min(row, R - 1) the simplifier drops under the Select's own condition)
            inside = row < tirx.const(pad_row, row.dtype)
            return tirx.Select(inside, rows[tirx.floormod(row, tirx.const(pad_row, row.dtype)), k % c],
                               tirx.const(fill, rows.dtype))

        return te.compute((m, width * c), value, name="window_rows")

    return padded


def _constant_pad_row(self, table, c: int):
    """``(rows, R, fill)`` when ``table`` is bound to ``concat([rows [R, c], constant [1, c] of one
    value fill], axis=0)`` (:func:`_rewrite`'s table), else None."""
    import tvm
    from tvm import relax

    bound = self.lookup_binding(table) if isinstance(table, relax.Var) else None
    if not isinstance(bound, relax.Call) or getattr(bound.op, "name", None) != "relax.concat":
        return None
    if int(bound.attrs.axis if bound.attrs.axis is not None else 0) != 0:
        return None
    parts = bound.args[0]
    if isinstance(parts, relax.Var):
        parts = self.lookup_binding(parts)
    if not isinstance(parts, relax.Tuple) or len(parts.fields) != 2:
        return None
    rows, pad = parts.fields
    if not isinstance(pad, tvm.ir.GenericConst):
        return None
    values = pad.value.numpy()
    if values.shape != (1, c) or values.size == 0 or np.any(values != values.reshape(-1)[0]):
        return None
    try:
        r, rc = [int(d) for d in rows.ty.shape.values]
    except (TypeError, AttributeError, ValueError):
        return None
    if rc != c or str(rows.ty.dtype) != str(values.dtype):
        return None
    return rows, r, values.reshape(-1)[0].item()


def window_rows_2d(mod):
    """``mod`` (Relax, high-level ops) with every ``reshape(take(table [R, C], index [M, W], axis=0),
    [M, W*C])`` as one ``call_te`` ``window_rows`` (:data:`WINDOW_ROWS_2D`): the same bytes, the
    2-D columns written once, ``C`` contiguous bytes a window slot.  Only ``take``'s ``fast`` mode
    (indices read as they are, as here; ONNX's negative ones were normalised before it): the
    same values for any index.  Any model's such pattern is taken, not only the im2col's.  A table
    that is ``concat([rows, constant row of one value])`` is read through (:data:`WINDOW_PAD_IN_GATHER`:
    ``rows`` for an index below its row count, the value at it; the same bytes) and dropped."""
    if not WINDOW_ROWS_2D:
        return mod
    from tvm import relax
    from tvm.relax import Call, PyExprMutator, Var, expr_functor

    from .relax_rewrite import rewrite_functions

    @expr_functor.mutator
    class _Rows(PyExprMutator):
        read_through = 0  # tables read through (WINDOW_PAD_IN_GATHER): their concats left unread

        def visit_call_(self, call: Call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.reshape" or not isinstance(call.args[0], Var):
                return call
            take = self.lookup_binding(call.args[0])
            if not isinstance(take, Call) or getattr(take.op, "name", None) != "relax.take":
                return call
            table, index = take.args[0], take.args[1]
            try:
                axis = int(take.attrs.axis)
                ts = [int(d) for d in table.ty.shape.values]
                xs = [int(d) for d in index.ty.shape.values]
                out = [int(d) for d in call.ty.shape.values]
            except (TypeError, AttributeError, ValueError):
                return call
            if axis != 0 or str(take.attrs.mode) != "fast" or len(ts) != 2 or len(xs) != 2 or out != [xs[0], xs[1] * ts[1]]:
                return call
            padded = _constant_pad_row(self, table, ts[1]) if WINDOW_PAD_IN_GATHER else None
            if padded is not None and padded[1] == ts[0] - 1:
                rows, r, fill = padded
                self.read_through += 1
                return self.builder_.call_te(_window_rows_compute(xs[0], xs[1], ts[1], r, fill), rows, index,
                                             primfunc_name_hint="window_rows")
            return self.builder_.call_te(_window_rows_compute(xs[0], xs[1], ts[1]), table, index,
                                         primfunc_name_hint="window_rows")

    rows = _Rows(mod)
    mod = rewrite_functions(mod, rows)
    if rows.read_through:  # the tables nothing reads any more
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mod[gv] = relax.analysis.remove_all_unused(func)
    return mod
