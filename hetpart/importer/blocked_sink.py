"""Depthwise nets in the channel-blocked import: the ops ``ConvertLayout`` leaves NCHW next to
a blocked tensor, computed blocked (:func:`sink_blocked`, run by :func:`.conv_layout.convert`
before :mod:`.blocked_regions` widens the region further).

:func:`sink_blocked` (after ``ConvertLayout``, :data:`BLOCKED_DEPTHWISE`) takes the depthwise
nets' remaining NCHW islands into the blocked layout: depthwise convs (:func:`depthwise_nchwc`),
their Clip/ReLU6, swish, hard-swish, squeeze-excite gate, residual adds, pools, concats, and a
3-channel stem writing blocked (:func:`stem_nchwc`): mobilenet_v2 imports with 2 transforms, not
17 (bench/results/cpu-dw-blocked-2core.md).

Invariant: the same values, only their layout changes (each op is the NCHW op's arithmetic on
remapped indices; every ``to_nchw`` -> ``to_blocked`` pair it makes adjacent cancels).
"""

from __future__ import annotations

import tvm
from tvm import relax

from . import nchwc
from .nchwc import conv_out_dtype

BLOCKED_DEPTHWISE = True
"""Convert what ``ConvertLayout`` leaves NCHW between blocked convs into the blocked layout
too (:func:`sink_blocked`): depthwise convs (``groups`` = channels, any window, stride,
padding, dilation), their weights blocked at import (``[C/c, kh, kw, c]``), and the
elementwise ops after a blocked tensor -- bias adds, Clip/ReLU6 (the frontend's
``maximum``/``minimum`` PrimFuncs, ``relax.clip``), sigmoid and the swish / hard-swish products,
residual adds, the squeeze-excite's global mean and its per-channel gate (a ``[N, C, 1, 1]``
operand is transformed, a few floats).  Off: depthwise nets pay two full-size transforms
per depthwise conv (mobilenet_v2 17, efficientnet 19; bench/results/cpu-dw-blocked-2core.md)."""

BLOCKED_PERMUTES = True
"""Part of :data:`BLOCKED_DEPTHWISE`: an ``NHWC -> NCHW`` ``permute_dims`` whose channels the
block divides writes ``NCHW{c}c`` and an ``NCHW -> NHWC`` one of a blocked tensor reads it
(ConvNeXt: its depthwise 7x7s and residual adds between channels-last MLPs then run blocked,
the permutes become transforms of the same size).  Off: ConvNeXt keeps NCHW there."""

MIXED_BLOCKS = True
"""Part of :data:`BLOCKED_DEPTHWISE`: tensors whose channels the import's block does not divide
but 8 does (efficientnet's 24 and 40, mobilenet_v2's 24 in NCHW16c) are kept in ``NCHW8c``,
the convs between them and the others reading one block and writing the other, so those
stages do not fall back to NCHW with a transform at each end.  Off: they stay NCHW."""

_UNARY = frozenset({"relax.sigmoid", "relax.nn.relu", "relax.clip", "relax.nn.silu", "relax.tanh", "relax.exp",
                    "relax.nn.gelu", "relax.negative", "relax.sqrt", "relax.nn.leakyrelu", "relax.abs"})
_BINARY = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
                     "relax.minimum"})
_FRONTEND_EXTREMA = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}


def depthwise_nchwc(data, weight, strides, padding, dilation, out_dtype: str):
    """TE: a depthwise convolution in ``NCHW{c}c``.  In: ``data`` ``[N, C/c, H, W, c]``,
    ``weight`` ``[C/c, kh, kw, c]`` (:func:`sink_blocked`'s blocked ``[C, 1, kh, kw]``),
    ``padding`` (top, left, bottom, right).  Out: ``[N, C/c, OH, OW, c]``, ``out[n, cc, y, x,
    k] = sum_{ry, rx} pad[n, cc, y*sh + ry*dh, x*sw + rx*dw, k] * weight[cc, ry, rx, k]``
    (the block :func:`hetpart.kernels.rules.cpu_blocked_conv.blocked_depthwise` reads)."""
    from tvm import te, topi

    n, cc, h, w, c = data.shape
    _, kh, kw, _ = weight.shape
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    padded = topi.nn.pad(data, [0, 0, pt, pl, 0], [0, 0, pb, pr, 0], name="pad_temp") if pt or pl or pb or pr \
        else data
    ry, rx = te.reduce_axis((0, kh), name="ry"), te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, cc, oh, ow, c),
        lambda b, q, y, x, k: te.sum(padded[b, q, y * sh + ry * dh, x * sw + rx * dw, k].astype(out_dtype)
                                     * weight[q, ry, rx, k].astype(out_dtype), axis=[ry, rx]),
        name="depthwise_conv2d_NCHWc")


BLOCKED_STEM = True
"""Part of :data:`BLOCKED_DEPTHWISE`: a conv of few input channels (at most
:data:`MAX_STEM_CHANNELS`, not a multiple of the block: ``ConvertLayout`` leaves it NCHW) whose output
channels the block divides reads NCHW and writes ``NCHW{c}c`` (:func:`stem_nchwc`), so a
depthwise net's first depthwise conv runs blocked and no full-size transform follows the stem."""

MAX_STEM_CHANNELS = 4
"""The most input channels :data:`BLOCKED_STEM` takes (an image's 3; efficientnet's 4-channel
squeeze-excite FC on its 1x1 image falls under it too and writes its gate blocked)."""

MAX_STEM_WINDOW = 49
"""The largest window (``kh * kw``) :data:`BLOCKED_STEM` takes.  It was 9 while the blocked stem ran
on :mod:`~hetpart.kernels.rules.cpu_conv2d`'s generic tile, which beat NCHW's stem + transform on
mobilenet_v2's 3x3 (NCHW16c 0.953x of the switch off, 1 AVX-512 thread) but not on resnet50's 7x7
(1.060x).  On the blocked tile (:data:`hetpart.kernels.rules.cpu_blocked_conv.PLAIN_INPUT`) the
7x7 stem writes blocked too: googlenet's 7x7 3 -> 64 on 112x112 1.74 ms + a 0.24 ms transform ->
1.42 ms, in whole runs (ORT 1.40; bench/results/cpu-incep-blocked-1core.md).  9: as before (A/B)."""


def stem_nchwc(data, weight, strides, padding, dilation, out_dtype: str):
    """TE: a convolution of NCHW ``data`` ``[N, I, H, W]`` with ``weight`` ``[O/c, I, kh, kw, c]``
    into ``NCHW{c}c`` ``[N, O/c, OH, OW, c]`` (``padding`` top, left, bottom, right)."""
    from tvm import te, topi

    n, ci, h, w = data.shape
    oc, _, kh, kw, c = weight.shape
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    padded = topi.nn.pad(data, [0, 0, pt, pl], [0, 0, pb, pr], name="pad_temp") if pt or pl or pb or pr else data
    ri = te.reduce_axis((0, ci), name="ri")
    ry, rx = te.reduce_axis((0, kh), name="ry"), te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, oc, oh, ow, c),
        lambda b, q, y, x, k: te.sum(padded[b, ri, y * sh + ry * dh, x * sw + rx * dw].astype(out_dtype)
                                     * weight[q, ri, ry, rx, k].astype(out_dtype), axis=[ri, ry, rx]),
        name="conv2d_NCHW_to_NCHWc")


@relax.expr_functor.mutator
class _SinkBlocked(relax.PyExprMutator):
    """:func:`sink_blocked`'s rewrite: each call whose tensor input has a blocked twin (it is
    bound to a ``to_nchw`` transform of it) is computed on the twin, its result a ``to_nchw``
    transform of the blocked one (dead where nothing reads the NCHW value)."""

    def __init__(self, mod, block: int):
        super().__init__(mod)
        self.block = block

    def twin(self, expr):
        """The blocked tensor ``expr`` (an NCHW var) is a transform of, or None."""
        if not isinstance(expr, relax.Var):
            return None
        value = self.lookup_binding(expr)
        return value.args[0] if nchwc.transform_kind(value) == "to_nchw" else None

    def blocked(self, value):
        """Emit blocked ``value``; return its NCHW view."""
        var = self.builder_.emit(value)
        return nchwc.to_nchw(var, nchwc.shape(var)[4])

    def fit(self, x, block: int):
        """Blocked ``x`` in ``NCHW{block}c`` (a block-to-block transform where its own differs)."""
        have = nchwc.shape(x)[4]
        if have == block:
            return x
        return self.builder_.emit(relax.op.layout_transform(
            x, index_map=lambda n, q, h, w, k: (n, (q * have + k) // block, h, w, (q * have + k) % block)))

    def block_for(self, channels: int) -> int | None:
        """The block of a tensor of ``channels`` this pass writes: the import's, else (with
        :data:`MIXED_BLOCKS`) 8 where the import's does not divide them; None if neither does."""
        if channels % self.block == 0:
            return self.block
        return 8 if MIXED_BLOCKS and channels % 8 == 0 else None

    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", None)
        try:
            if name == "relax.layout_transform" and nchwc.transform_kind(call) == "to_blocked":
                twin = self.twin(call.args[0])
                return self.fit(twin, nchwc.shape(call)[4]) if twin is not None else call
            if name == "relax.nn.conv2d":
                return self._depthwise(call)
            if name in _UNARY:
                twin = self.twin(call.args[0])
                return call if twin is None else self.blocked(relax.Call(call.op, [twin, *call.args[1:]], call.attrs,
                                                                         call.ty_args))
            if name in _BINARY:
                return self._binary(call, call.op, call.args)
            if name == "relax.call_tir":
                return self._frontend_extremum(call)
            if name == "relax.mean":
                return self._mean(call)
            if name == "relax.concat":
                return self._concat(call)
            if name in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
                return self._pool(call)
            if name == "relax.permute_dims" and BLOCKED_PERMUTES:
                return self._permute(call)
        except _Keep:
            return call
        return call

    def _operand(self, other, like):
        """``other`` (a binary op's second operand) made fit to meet the blocked ``like``:
        its twin, a per-channel ``[1|N, C, 1, 1]`` tensor transformed, a scalar as is; else
        raise :class:`_Keep`."""
        twin = self.twin(other)
        if twin is not None:
            return self.fit(twin, nchwc.shape(like)[4])
        shape, full = nchwc.shape(other), nchwc.shape(like)
        channels = full[1] * full[4]
        if shape is None:
            raise _Keep
        if all(d == 1 for d in shape):
            return other if len(shape) <= 1 else relax.op.reshape(other, [1] * len(full)) if len(shape) > 0 else other
        if len(shape) == 3 and shape == [channels, 1, 1]:
            other, shape = relax.op.reshape(other, [1, channels, 1, 1]), [1, channels, 1, 1]
        if len(shape) == 4 and shape[1] == channels and shape[0] in (1, full[0]) and (
                shape[2:] == [1, 1] or shape[2:] == [full[2], full[3]]):
            return self.builder_.emit(nchwc.to_blocked(other, full[4]))
        raise _Keep

    def _binary(self, call, op, args):
        a, b = args
        out = nchwc.shape(call)
        if out is None or len(out) != 4:
            return call
        # the blocked operand is the full-size one with a twin; the other is made to fit it
        first = next((i for i, x in enumerate(args) if nchwc.shape(x) == out and self.twin(x) is not None), None)
        if first is None:
            return call
        main = self.twin(args[first])
        other = self._operand(args[1 - first], main)
        pair = [main, other] if first == 0 else [other, main]
        return self.blocked(relax.Call(op, pair, call.attrs, call.ty_args))

    def _frontend_extremum(self, call):
        """``call_tir(maximum|minimum, (x, bound))`` (the frontend's Clip) of a blocked ``x``
        and a scalar bound as ``relax.maximum`` / ``minimum`` (NaN-exact after
        :mod:`.nan_semantics`, as the PrimFunc is)."""
        which = getattr(call.args[0], "name_hint", "").rstrip("0123456789")
        args = list(call.args[1].fields) if isinstance(call.args[1], relax.Tuple) else []
        if which not in _FRONTEND_EXTREMA or len(args) != 2:
            return call
        x, bound = args
        shape = nchwc.shape(bound)
        twin = self.twin(x)
        if twin is None or shape is None or any(d != 1 for d in shape) or len(shape) > 1:
            return call
        return self.blocked(_FRONTEND_EXTREMA[which](twin, bound))

    def _mean(self, call):
        """A global mean over H, W (squeeze-excite, the head's pool) of a blocked tensor."""
        twin = self.twin(call.args[0])
        axes = [int(a) % 4 for a in call.attrs.axis] if call.attrs.axis is not None else []
        if twin is None or sorted(axes) != [2, 3] or not call.attrs.keepdims:
            return call
        return self.blocked(relax.op.mean(twin, axis=[2, 3], keepdims=True))

    def _concat(self, call):
        """A channel concat (axis 1) of which some input is a blocked tensor's view,
        every input's channels a multiple of the block: concatenated blocked (axis 1 of
        ``NCHW{c}c`` counts blocks), the inputs with no twin transformed."""
        fields = call.args[0]
        fields = list(fields.fields) if isinstance(fields, relax.Tuple) else None
        out = nchwc.shape(call)
        if not fields or out is None or len(out) != 4 or int(call.attrs.axis) % 4 != 1:
            return call
        twins = [self.twin(f) for f in fields]
        shapes = [nchwc.shape(f) for f in fields]
        c = next(nchwc.shape(t)[4] for t in twins + [None] if t is not None) if any(t is not None for t in twins) else None
        if c is None or any(s is None or len(s) != 4 or s[1] % c for s in shapes):
            return call
        parts = [self.fit(t, c) if t is not None else self.builder_.emit(nchwc.to_blocked(f, c)) for t, f in zip(twins, fields)]
        return self.blocked(relax.op.concat(parts, axis=1))

    def _pool(self, call):
        """A max / average pool of a blocked tensor in ``NCHW{c}c`` (the stem's, after
        :data:`BLOCKED_STEM`)."""
        a = call.attrs
        twin = self.twin(call.args[0])
        if twin is None or str(a.layout) != "NCHW" or str(a.out_layout) not in ("NCHW", ""):
            return call
        op = relax.op.nn.max_pool2d if call.op.name == "relax.nn.max_pool2d" else relax.op.nn.avg_pool2d
        lay = f"NCHW{nchwc.shape(twin)[4]}c"
        return self.blocked(op(twin, [int(x) for x in a.pool_size], [int(x) for x in a.strides],
                               [int(x) for x in a.padding], [int(x) for x in a.dilation], bool(a.ceil_mode),
                               bool(a.count_include_pad), layout=lay, out_layout=lay))

    def _permute(self, call):
        """ConvNeXt's channels-last blocks: ``NCHW -> NHWC`` of a blocked tensor read from
        its twin (one transform, as the permute was), and ``NHWC -> NCHW`` written
        blocked (the NCHW value a view of it), so the depthwise conv and residual add between
        two blocks run blocked."""
        axes = [int(a) for a in call.attrs.axes] if call.attrs.axes is not None else None
        shape = nchwc.shape(call)
        if shape is None or len(shape) != 4:
            return call
        if axes == [0, 2, 3, 1]:
            twin = self.twin(call.args[0])
            c = nchwc.shape(twin)[4] if twin is not None else 0
            return call if twin is None else relax.op.layout_transform(
                twin, index_map=lambda n, q, h, w, k: (n, h, w, q * c + k))
        c = self.block_for(shape[1])
        if axes == [0, 3, 1, 2] and c is not None:
            return self.blocked(relax.op.layout_transform(
                call.args[0], index_map=lambda n, h, w, ch: (n, ch // c, h, w, ch % c)))
        return call

    def _stem(self, call):
        """A plain NCHW conv whose output channels the block divides but whose input
        channels it does not (a 3-channel stem) as :func:`stem_nchwc`: NCHW in, blocked out."""
        a = call.attrs
        data, weight = call.args
        ds, ws = nchwc.shape(data), nchwc.shape(weight)
        c = self.block
        if (not BLOCKED_STEM or ds is None or ws is None or len(ds) != 4 or str(a.data_layout) != "NCHW"
                or str(a.kernel_layout) != "OIHW" or str(a.out_layout) not in ("NCHW", "") or int(a.groups) != 1
                or ws[0] % c or ds[1] % c == 0 or ds[1] > MAX_STEM_CHANNELS or ws[2] * ws[3] > MAX_STEM_WINDOW):
            return call
        w = self.builder_.emit(relax.op.layout_transform(weight, index_map=lambda o, i, h, x: (o // c, i, h, x, o % c)))
        out = self.builder_.emit_te(stem_nchwc, data, w, [int(s) for s in a.strides], [int(p) for p in a.padding],
                                    [int(d) for d in a.dilation], conv_out_dtype(a.out_dtype, data),
                                    primfunc_name_hint="conv2d_NCHW_to_NCHWc")
        return nchwc.to_nchw(out, c)

    def _mixed(self, call, twin):
        """A plain conv ``ConvertLayout`` left NCHW (its channels not all multiples of the
        import's block) of a blocked input, with :data:`MIXED_BLOCKS`: input in its twin's
        block, output in :meth:`block_for` its channels (``topi.nn.conv2d_NCHWc`` takes
        different input and output blocks)."""
        a = call.attrs
        data, weight = call.args
        ds, ws = nchwc.shape(data), nchwc.shape(weight)
        bi = nchwc.shape(twin)[4]
        bo = self.block_for(ws[0]) if ws is not None else None
        if (not MIXED_BLOCKS or bo is None or ds is None or ds[1] % bi or str(a.data_layout) != "NCHW"
                or str(a.kernel_layout) != "OIHW" or str(a.out_layout) not in ("NCHW", "")):
            return call
        w = self.builder_.emit(relax.op.layout_transform(
            weight, index_map=lambda o, i, h, x: (o // bo, i // bi, h, x, i % bi, o % bo)))
        return self.blocked(relax.op.nn.conv2d(
            twin, w, a.strides, a.padding, a.dilation, 1, data_layout=f"NCHW{bi}c",
            kernel_layout=f"OIHW{bi}i{bo}o", out_layout=f"NCHW{bo}c", out_dtype=conv_out_dtype(a.out_dtype, data)))

    def _depthwise(self, call):
        """A depthwise NCHW conv of a blocked input as :func:`depthwise_nchwc`."""
        a = call.attrs
        data, weight = call.args
        ds, ws = nchwc.shape(data), nchwc.shape(weight)
        twin = self.twin(data)
        if twin is None and ds is not None and int(a.groups) == 1:
            return self._stem(call)
        if twin is not None and int(a.groups) == 1:
            return self._mixed(call, twin)
        if (twin is None or ds is None or ws is None or len(ds) != 4 or str(a.data_layout) != "NCHW"
                or str(a.kernel_layout) != "OIHW" or str(a.out_layout) not in ("NCHW", "")
                or int(a.groups) != ds[1] or ws[:2] != [ds[1], 1] or ds[1] % nchwc.shape(twin)[4]):
            return call
        c = nchwc.shape(twin)[4]
        w = self.builder_.emit(relax.op.layout_transform(weight, index_map=lambda o, i, h, x: (o // c, h, x, o % c)))
        out = self.builder_.emit_te(depthwise_nchwc, twin, w, [int(s) for s in a.strides],
                                    [int(p) for p in a.padding], [int(d) for d in a.dilation],
                                    conv_out_dtype(a.out_dtype, data), primfunc_name_hint="depthwise_conv2d_NCHWc")
        return nchwc.to_nchw(out, c)


class _Keep(Exception):
    """A call :class:`_SinkBlocked` leaves as it is."""


def sink_blocked(mod: tvm.IRModule, block: int, shared_transforms: bool = True) -> tvm.IRModule:
    """``mod`` (after :func:`convert`'s ``ConvertLayout``) with the ops of
    :data:`BLOCKED_DEPTHWISE` computed in ``NCHW{block}c`` where their input is a blocked
    tensor's NCHW view, every ``to_nchw`` -> ``to_blocked`` pair cancelled, the dead NCHW
    values removed, each tensor converted once where ``shared_transforms``
    (:data:`.conv_layout.SHARED_TRANSFORMS`).  Invariant: the same values, only their layout changes."""
    from .relax_rewrite import rewrite_functions

    mod = rewrite_functions(mod, _SinkBlocked(mod, block))
    seq = [relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()]
    if shared_transforms:
        seq.append(relax.transform.EliminateCommonSubexpr())
    return tvm.transform.Sequential(seq)(mod)
