"""A 3x3 MaxPool / AveragePool -- stride 1 padded by 1, or stride 2 padded by 0-1 (ceil_mode
too) or unpadded -- as a separable window: per output row, the column max (sum) of its
window's input rows into a row buffer, then the row max (sum) of three elements of that
buffer, ``stride`` apart.

The inception branches' pools (inception_v3's AveragePool 3x3 s1 pad 1 before each
``branch_pool`` 1x1, on 35x35, 17x17 and 8x8 planes; googlenet's MaxPool 3x3 s1 pad 1 on
28x28 and 14x14) were scheduled by :class:`~.rules.cpu_reduction.CpuReduction` as one
window reduction: nine loads per output, each behind the padding's bounds test, the
35- and 17-wide rows in scalars (no vector width divides them); 2-2.5x ONNX Runtime
(googlenet's stride-2 ceil_mode pools 1.1-1.4x, 2.6-3.3x in the model).  Here each output
costs six loads and no test: a row buffer laid out as a padded row (on the stack: at most
:data:`MAX_ROW` + 2 elements) holds the column reduction of the window's rows that lie in
the image (three inside, fewer at the top and bottom border, so the padding is never read)
between fill elements where the padding is, and the output row is three reads of it; both
inner loops are plain loops over the row (stride 1, or 2 for the reads), vectorised by
LLVM's loop vectoriser (its own ragged tail); planes in parallel.

In: the unscheduled PrimFunc of a pool (TOPI's ``pad_temp`` block -- none for an unpadded
pool, :data:`UNPADDED` -- then ``pool_max``, or ``pool_sum`` and ``pool_avg`` with a
divisor that is 9 for every output: ONNX's ``count_include_pad=1``).  Out: :func:`match`
gives a :class:`PoolSpec` or None; :func:`separable_func` the replacement PrimFunc.
Invariant: every output is the max (sum divided by 9) of exactly the input elements of its
window that lie inside the image -- MaxPool's padding is never read, so an all ``-inf``
window gives ``-inf`` as ONNX defines (the unscheduled function started from the least
float and gave ``-3.4e38`` there); sums are taken columns first (within rounding of the
row-major window sum)."""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.script import tirx as T
from tvm.sym.analyzer import Analyzer

from .tir_expr import substitute
from .tir_macro import macro

UNPADDED = True
"""Whether an unpadded 3x3 pool (inception_v3's stride-2 MaxPools, which read the input itself:
no ``pad_temp`` block) is matched too."""

MAX_ROW = 250
"""Widest row (elements) handled: the row buffer (``W + 2`` floats) stays under TVM's
1 KiB stack allocation limit (a wider one would be a workspace allocation per plane)."""


@dataclass(frozen=True)
class PoolSpec:
    """A 3x3 pool of ``stride`` (1 or 2) from ``shape`` ``(N, C, H, W)`` to ``out`` ``(OH,
    OW)`` over the input padded by ``pad_before`` rows / columns at the top / left (0 or 1)
    and to ``padded`` ``(Hp, Wp)`` in all; ``kind`` ``"max"`` or ``"avg"`` (sum / 9)."""

    shape: tuple[int, int, int, int]
    out: tuple[int, int]
    stride: int
    pad_before: tuple[int, int]
    padded: tuple[int, int]
    kind: str
    dtype: str


def _const_shape(buf) -> tuple[int, ...] | None:
    dims = [d for d in buf.shape]
    return tuple(int(d) for d in dims) if all(isinstance(d, tirx.IntImm) for d in dims) else None


def _blocks(func: tirx.PrimFunc) -> list:
    found = []
    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, found.append), order="pre")
    return [b for b in found if b.name_hint != "root"]


def _window_stride(block, pad_buf) -> int | None:
    """The stride ``s`` (1 or 2) where ``block`` reads ``pad_buf`` at ``[n, c, oh * s + r, ow * s
    + q]`` over two reduction iterators of extent 3; None otherwise."""
    spatial = [iv for iv in block.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [iv for iv in block.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
    if len(spatial) not in (4, 5) or len(reduce) != 2 or any(int(iv.dom.extent) != 3 for iv in reduce):
        return None
    loads = []
    tvm_ffi.structural_walk(block.body, (tvm.ir.TensorLoad, loads.append), order="post")
    reads = [ld for ld in loads if ld.source.same_as(pad_buf)]
    if len(reads) != 1 or len(reads[0].indices) != len(spatial):
        return None
    idx = reads[0].indices
    if not all(i.same_as(iv.var) for i, iv in zip(idx[:2] + idx[4:], spatial[:2] + spatial[4:])):
        return None
    strides = set()
    for i, out_iv, red_iv in zip(idx[2:4], spatial[2:4], reduce):
        coef = tvm.sym.detect_linear_equation(i, [out_iv.var, red_iv.var])
        got = [int(c) if isinstance(c, tirx.IntImm) else None for c in coef]
        if len(got) != 3 or got[0] not in (1, 2) or got[1:] != [1, 0]:
            return None
        strides.add(got[0])
    return strides.pop() if len(strides) == 1 else None


def _padding(pad_block, x_buf) -> tuple[tuple[int, int], str] | None:
    """``((top, left), fill)`` where ``pad_block`` writes ``x`` padded by ``top`` / ``left``
    (0 or 1) before its last two dims and anything after (an ``if_then_else`` of the bounds
    test, ``x[.., h - top, w - left]``, the fill: ``"lowest"`` float or ``"zero"``); None
    otherwise.  The test is checked to hold exactly on the image, just inside and just
    outside each of its four edges."""
    value = pad_block.body.value if isinstance(pad_block.body, tirx.BufferStore) else None
    if not (isinstance(value, tvm.ir.Call) and str(value.op.name).endswith("if_then_else")):
        return None
    load, fill = value.args[1], value.args[2]
    if not (isinstance(load, tvm.ir.TensorLoad) and load.source.same_as(x_buf) and isinstance(fill, tirx.FloatImm)):
        return None
    ivs = pad_block.iter_vars
    a = Analyzer()
    before = []
    if len(load.indices) != len(ivs) or len(ivs) not in (4, 5):
        return None
    for i, iv, dim in zip(load.indices, ivs, range(len(ivs))):
        off = a.simplify(iv.var - i)
        if not isinstance(off, tirx.IntImm) or (dim not in (2, 3) and off.value != 0) or off.value not in (0, 1):
            return None
        before.append(int(off.value))
    top, left = before[2:4]
    h, w = (int(d) for d in x_buf.shape[2:4])
    hp, wp = (int(d) for d in pad_block.writes[0].source.shape[2:4])
    probes = [(top, left, True), (top + h - 1, left + w - 1, True), (top - 1, left, False), (top, left - 1, False),
              (top + h, left, False), (top, left + w, False)]
    for hh, ww, inside in probes:
        if not (0 <= hh < hp and 0 <= ww < wp):
            continue
        vals = [(iv.var, tirx.IntImm(iv.var.ty, v)) for iv, v in zip(ivs, (0, 0, hh, ww, 0))]
        got = a.simplify(substitute(value.args[0], vals))
        if not isinstance(got, tirx.IntImm) or bool(got.value) != inside:
            return None
    if float(fill.value) == 0.0:
        return (top, left), "zero"
    return ((top, left), "lowest") if float(fill.value) <= -3.4e38 else None


def _divides_by_9(block, sum_buf, out_shape) -> bool:
    """Whether ``block`` writes ``sum_buf[..] / d`` with ``d`` 9 at every output."""
    store = block.body
    if not isinstance(store, tirx.BufferStore) or not isinstance(store.value, tirx.Div):
        return False
    num, den = store.value.a, store.value.b
    if not (isinstance(num, tvm.ir.TensorLoad) and num.source.same_as(sum_buf)):
        return False
    ivs = block.iter_vars
    if len(ivs) != len(out_shape) or not all(i.same_as(iv.var) for i, iv in zip(num.indices, ivs)):
        return False
    a = Analyzer()
    for iv, ext in zip(ivs, out_shape):
        a.bind(iv.var, tvm.ir.Range(0, ext))
    bound = a.const_int_bound(den.value if isinstance(den, tirx.Cast) else den)
    return bound.min_value == bound.max_value == 9


def _kind(names: list[str]) -> tuple[str, str] | None:
    """``(kind, fill)`` of a pool whose blocks are ``names``: ``("max", "lowest")`` for
    pad + ``pool_max``, ``("avg", "zero")`` for pad + ``pool_sum`` + ``pool_avg``; else None."""
    if names == ["pad_temp", "pool_max"]:
        return "max", "lowest"
    if names == ["pad_temp", "pool_sum", "pool_avg"]:
        return "avg", "zero"
    return None


def _writes_output(kind: str, blocks, y, out) -> bool:
    """Whether the pool's last block writes the output ``y``: the max window itself, or the
    average's division of the window sum by 9 for every output (:func:`_divides_by_9`)."""
    window = blocks[1]
    if kind == "max":
        return window.writes[0].source.same_as(y)
    return blocks[2].writes[0].source.same_as(y) and _divides_by_9(blocks[2], window.writes[0].source, out)


def match(func: tirx.PrimFunc) -> PoolSpec | None:
    """The :class:`PoolSpec` of ``func`` where it is such a pool (see the module
    docstring), else None."""
    params = list(func.params)
    if len(params) != 2 or any(str(p.dtype) != "float32" for p in params):
        return None
    x, y = params
    shape, out = _const_shape(x), _const_shape(y)
    if BLOCKED and shape is not None and len(shape) == 5:
        return _match_blocked(func, shape, out) or _match_blocked_strided(func, shape, out)
    if shape is None or out is None or len(shape) != 4 or out[:2] != shape[:2] or shape[2] < 2:
        return None
    blocks = _blocks(func)
    names = [b.name_hint for b in blocks]
    if UNPADDED and names and names[0] != "pad_temp":  # an unpadded pool reads x itself
        names, blocks = ["pad_temp", *names], [None, *blocks]
    kind_fill = _kind(names)
    if kind_fill is None:
        return None
    kind, fill = kind_fill
    pad, window = blocks[0], blocks[1]
    padding = _padding(pad, x) if pad is not None else ((0, 0), fill)
    stride = _window_stride(window, pad.writes[0].source if pad is not None else x)
    if padding is None or padding[1] != fill or stride is None:
        return None
    padded = _const_shape(pad.writes[0].source)[2:] if pad is not None else shape[2:]
    if (stride == 1 and padding[0] != (1, 1)) or padded[1] > MAX_ROW or any(
            (o - 1) * stride + 3 > p for o, p in zip(out[2:], padded)):
        return None
    if not _writes_output(kind, blocks, y, out):
        return None
    return PoolSpec(shape, out[2:], stride, padding[0], padded, kind, "float32")


BLOCKED = True
"""Whether a 3x3 stride-1 pool padded by 1 of a channel-blocked image (``NCHW{c}c``: the
inception branches' pools in ``load(model, conv_block=16)``) is matched too, and computed by
:func:`blocked_func` -- the window reduction it replaces read nine vectors per output, each
behind the padding's bounds test (googlenet's nine MaxPools 1.3-1.45x ONNX Runtime in the
model)."""


def _match_blocked(func: tirx.PrimFunc, shape, out) -> PoolSpec | None:
    """:func:`match` for a blocked ``(N, C, H, W, c)`` image: stride 1, padded by 1 on every
    side, the output the input's shape; else None."""
    if out != shape or shape[2] < 2 or shape[3] < 2:
        return None
    blocks = _blocks(func)
    names = [b.name_hint for b in blocks]
    kind_fill = _kind(names)
    if kind_fill is None:
        return None
    kind, fill = kind_fill
    x, y = func.params
    pad, window = blocks[0], blocks[1]
    padding = _padding(pad, x)
    stride = _window_stride(window, pad.writes[0].source)
    if padding is None or padding != ((1, 1), fill) or stride != 1:
        return None
    if _const_shape(pad.writes[0].source)[2:4] != (shape[2] + 2, shape[3] + 2):
        return None
    if not _writes_output(kind, blocks, y, out):
        return None
    return PoolSpec(shape, out[2:4], 1, (1, 1), (shape[2] + 2, shape[3] + 2), kind, "float32")


def _window_ops(kind: str):
    """``(fill, op, finish)`` of a 3x3 pool of ``kind``: the value past the image (lowest /
    zero), the reduction of two values (max / sum) and what turns the window's reduction into
    the output (itself / divided by 9: :func:`match` takes only pools whose divisor is 9 for
    every output, ONNX's ``count_include_pad=1``)."""
    is_max = kind == "max"

    def op(a, b):
        return T.max(a, b) if is_max else a + b

    def finish(v):
        return v if is_max else v / T.float32(9.0)

    return (T.float32(float("-inf")) if is_max else T.float32(0.0)), op, finish


def blocked_func(spec: PoolSpec) -> tirx.PrimFunc:
    """The separable stride-1 pool of a blocked image (:data:`BLOCKED`): planes (image x
    channel block) in parallel; per output row, the column reduction of its window's rows
    inside the image written into the output row itself (channel-block vectors), then the row
    reduced in place, left to right: each output the reduction of the previous column's value
    (kept in a one-vector buffer), its own and the next one's (the fill -- lowest / zero -- past
    either end).  No bounds test in any inner loop, six reads per output."""
    N, C, H, W, L = spec.shape
    fill, op, finish = _window_ops(spec.kind)
    i64 = T.int64

    @T.prim_func(private=True, s_tir=True)
    def pool(x: T.Buffer((i64(N), i64(C), i64(H), i64(W), i64(L)), "float32"),
             y: T.Buffer((i64(N), i64(C), i64(H), i64(W), i64(L)), "float32")):
        T.func_attr({"op_pattern": 4, "tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            T.reads()
            T.writes()
            with T.sblock("separable_pool"):
                T.reads()
                T.writes()
                for p in T.parallel(i64(N * C)):
                    n = T.meta_var(p // i64(C))
                    c = T.meta_var(p % i64(C))
                    prev = T.alloc_buffer((i64(L),), "float32")
                    cur = T.alloc_buffer((i64(L),), "float32")
                    for h in range(i64(H)):
                        if i64(1) <= h and h + i64(1) < i64(H):
                            for w in range(i64(W)):
                                for l in T.vectorized(i64(L)):
                                    y[n, c, h, w, l] = op(op(x[n, c, h - i64(1), w, l], x[n, c, h, w, l]),
                                                          x[n, c, h + i64(1), w, l])
                        elif h == i64(0):  # the top row: rows 0 and 1 (H >= 2)
                            for w in range(i64(W)):
                                for l in T.vectorized(i64(L)):
                                    y[n, c, h, w, l] = op(x[n, c, i64(0), w, l], x[n, c, i64(1), w, l])
                        else:  # the bottom row
                            for w in range(i64(W)):
                                for l in T.vectorized(i64(L)):
                                    y[n, c, h, w, l] = op(x[n, c, h - i64(1), w, l], x[n, c, h, w, l])
                        for l in T.vectorized(i64(L)):
                            prev[l] = fill
                        for w in range(i64(W - 1)):
                            for l in T.vectorized(i64(L)):
                                cur[l] = y[n, c, h, w, l]
                            for l in T.vectorized(i64(L)):
                                y[n, c, h, w, l] = finish(op(op(prev[l], cur[l]), y[n, c, h, w + i64(1), l]))
                            for l in T.vectorized(i64(L)):
                                prev[l] = cur[l]
                        for l in T.vectorized(i64(L)):
                            y[n, c, h, i64(W - 1), l] = finish(op(prev[l], y[n, c, h, i64(W - 1), l]))

    return pool


def separable_func(spec: PoolSpec) -> tirx.PrimFunc:
    """The separable pool for ``spec``: planes in parallel; per output row the column
    reduction of its window's rows inside the image (three, or fewer at a border) into a
    row buffer laid out as a padded row (fill elements where the padding is), then the
    output row from three reads of it, ``stride`` apart (see the module docstring)."""
    N, C, H, W = spec.shape
    OH, OW = spec.out
    S = spec.stride
    top, left = spec.pad_before
    WR = (OW - 1) * S + 3  # the padded columns the output row reads
    WV = min(W, WR - left)  # the image columns among them
    P = N * C
    fill, op, finish = _window_ops(spec.kind)
    i64 = T.int64

    @T.prim_func(private=True, s_tir=True)
    def pool(x: T.Buffer((i64(N), i64(C), i64(H), i64(W)), "float32"),
             y: T.Buffer((i64(N), i64(C), i64(OH), i64(OW)), "float32")):
        T.func_attr({"op_pattern": 4, "tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            T.reads()
            T.writes()
            with T.sblock("separable_pool"):  # opaque, as passes over s_tir expect a block
                T.reads()
                T.writes()
                for p in T.parallel(i64(P)):
                    n = T.meta_var(p // i64(C))
                    c = T.meta_var(p % i64(C))
                    row = T.alloc_buffer((i64(WR),), "float32")
                    for j in range(i64(left)):
                        row[j] = fill
                    for j in range(i64(max(0, WR - left - W))):
                        row[i64(left + W) + j] = fill
                    for h in range(i64(OH)):
                        r0 = T.meta_var(h * i64(S) - i64(top))
                        if i64(0) <= r0 and r0 + i64(2) < i64(H):
                            for w in range(i64(WV)):
                                row[w + i64(left)] = op(op(x[n, c, r0, w], x[n, c, r0 + i64(1), w]),
                                                        x[n, c, r0 + i64(2), w])
                        else:  # a border row: the window's rows inside the image
                            for w in range(i64(WV)):
                                row[w + i64(left)] = x[n, c, T.max(r0, i64(0)), w]
                            for r in range(T.max(r0, i64(0)) + i64(1), T.min(r0 + i64(3), i64(H))):
                                for w in range(i64(WV)):
                                    row[w + i64(left)] = op(row[w + i64(left)], x[n, c, r, w])
                        for w in range(i64(OW)):
                            y[n, c, h, w] = finish(op(op(row[w * i64(S)], row[w * i64(S) + i64(1)]),
                                                      row[w * i64(S) + i64(2)]))

    return pool


def schedule(func: tirx.PrimFunc):
    """A schedule holding the separable pool where ``func`` matches, else None."""
    spec = match(func)
    if spec is None:
        return None
    if len(spec.shape) == 5:
        return s_tir.Schedule(blocked_func(spec) if spec.stride == 1 else blocked_strided_func(spec))
    return s_tir.Schedule(separable_func(spec))


# Below: the stride-2 blocked pool (BLOCKED_STRIDED), kept after the functions above so their
# TVMScript line numbers (LLVM's debug locations) stay as they were.

BLOCKED_STRIDED = False
"""Whether a 3x3 stride-2 pool of a channel-blocked image, padded by 0 or 1 before (and
``ceil_mode``'s column / row after), is matched too and computed by :func:`blocked_strided_func`
(resnet50's stem MaxPool 3x3 s2 pad 1 on 64 x 112 x 112, googlenet's three 3x3 stride-2 ``ceil_mode``
MaxPools in ``load(model, conv_block=16)``): each output row's interior a separable window along
the row, two column maxima an output, the third carried in a vector.  Off: the window reduction of
:class:`~.rules.cpu_reduction.CpuReduction` (bench/results/cpu-r50-stem-2core.md)."""


def _match_blocked_strided(func: tirx.PrimFunc, shape, out) -> PoolSpec | None:
    """:func:`match`'s stride-2 case for a blocked ``(N, C, H, W, c)`` image (:data:`BLOCKED_STRIDED`;
    unpadded too, with :data:`UNPADDED`): a 3x3 window of stride 2, padded by 0 or 1 before on each
    axis, every output's window inside the padded input and starting on or next to the image (no
    window all padding), the last block writing the output; else None."""
    if not BLOCKED_STRIDED or out is None or len(out) != 5 or out[:2] != shape[:2] or out[4] != shape[4]:
        return None
    blocks = _blocks(func)
    names = [b.name_hint for b in blocks]
    if UNPADDED and names and names[0] != "pad_temp":  # an unpadded pool reads x itself
        names, blocks = ["pad_temp", *names], [None, *blocks]
    kind_fill = _kind(names)
    if kind_fill is None:
        return None
    kind, fill = kind_fill
    x, y = func.params
    pad, window = blocks[0], blocks[1]
    padding = _padding(pad, x) if pad is not None else ((0, 0), fill)
    stride = _window_stride(window, pad.writes[0].source if pad is not None else x)
    if padding is None or padding[1] != fill or stride != 2:
        return None
    padded = _const_shape(pad.writes[0].source)[2:4] if pad is not None else shape[2:4]
    for o, p, n, b in zip(out[2:4], padded, shape[2:4], padding[0]):
        if b not in (0, 1) or (o - 1) * 2 + 3 > p or (o - 1) * 2 - b >= n:
            return None
    if not _writes_output(kind, blocks, y, out):
        return None
    return PoolSpec(shape, out[2:4], 2, padding[0], padded, kind, "float32")


def _strided_interior(spec: PoolSpec) -> tuple[int, int]:
    """``[lo, hi)``: the output columns of a stride-2 pool whose window's three columns lie in
    the image (the others read padding on the left or past the right edge)."""
    W, OW, left = spec.shape[3], spec.out[1], spec.pad_before[1]
    lo = left  # 0 * 2 - 1 < 0 where padded on the left: output column 0 is a border one
    hi = min(OW, (W - 3 + left) // 2 + 1)
    return lo, max(lo, hi)


def blocked_strided_func(spec: PoolSpec) -> tirx.PrimFunc:
    """The stride-2 pool of a blocked image (:data:`BLOCKED_STRIDED`): output rows (of every image
    and channel block) in parallel; an output row whose three input rows lie in the image computes its
    interior columns as a separable window along the row -- per output the column reductions
    (channel-block vectors, three rows each) of its window's middle and last input columns, the
    first one carried from the previous output -- and its border columns (and every column of a
    border row) as the reduction of the window's input elements inside the image.  Six reads an
    output in the interior, no bounds test in any inner loop.

    In: a stride-2 blocked :class:`PoolSpec` (:func:`_match_blocked_strided`).  Out: the PrimFunc
    ``(x, y)``.  Invariant: every output is the max (sum divided by 9) of exactly its window's
    elements inside the image, as :func:`separable_func`'s: the padding is never read."""
    N, C, H, W, L = spec.shape
    OH, OW = spec.out
    top, left = spec.pad_before
    lo, hi = _strided_interior(spec)
    fill, op, finish = _window_ops(spec.kind)
    i64 = T.int64

    def col(x, n, c, r, w, l):
        return op(op(x[n, c, r, w, l], x[n, c, r + i64(1), w, l]), x[n, c, r + i64(2), w, l])

    @macro
    def clipped(x, y, acc, n, c, h, r0, w):  # output (h, w) from its window's elements in the image
        c0 = T.meta_var(w * i64(2) - i64(left))
        for l in T.vectorized(i64(L)):
            acc[l] = fill
        for r in range(T.max(r0, i64(0)), T.min(r0 + i64(3), i64(H))):
            for q in range(T.max(c0, i64(0)), T.min(c0 + i64(3), i64(W))):
                for l in T.vectorized(i64(L)):
                    acc[l] = op(acc[l], x[n, c, r, q, l])
        for l in T.vectorized(i64(L)):
            y[n, c, h, w, l] = finish(acc[l])

    @T.prim_func(private=True, s_tir=True)
    def pool(x: T.Buffer((i64(N), i64(C), i64(H), i64(W), i64(L)), "float32"),
             y: T.Buffer((i64(N), i64(C), i64(OH), i64(OW), i64(L)), "float32")):
        T.func_attr({"op_pattern": 4, "tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            T.reads()
            T.writes()
            with T.sblock("separable_pool"):
                T.reads()
                T.writes()
                for t in T.parallel(i64(N * C * OH)):  # output rows: enough tasks for the cores at batch 1
                    n = T.meta_var(t // i64(C * OH))
                    c = T.meta_var(t // i64(OH) % i64(C))
                    h = T.meta_var(t % i64(OH))
                    r0 = T.meta_var(h * i64(2) - i64(top))
                    prev = T.alloc_buffer((i64(L),), "float32")
                    acc = T.alloc_buffer((i64(L),), "float32")
                    if i64(0) <= r0 and r0 + i64(2) < i64(H):
                        for w in range(i64(lo)):
                            clipped(x, y, acc, n, c, h, r0, w)
                        for l in T.vectorized(i64(L)):
                            prev[l] = col(x, n, c, r0, i64(2 * lo - left), l)
                        for w in range(i64(hi - lo)):
                            for l in T.vectorized(i64(L)):
                                acc[l] = col(x, n, c, r0, (w + i64(lo)) * i64(2) - i64(left - 1), l)
                            for l in T.vectorized(i64(L)):
                                prev[l] = op(prev[l], acc[l])
                            for l in T.vectorized(i64(L)):
                                acc[l] = col(x, n, c, r0, (w + i64(lo)) * i64(2) - i64(left - 2), l)
                            for l in T.vectorized(i64(L)):
                                y[n, c, h, w + i64(lo), l] = finish(op(prev[l], acc[l]))
                            for l in T.vectorized(i64(L)):
                                prev[l] = acc[l]
                        for w in range(i64(OW - hi)):
                            clipped(x, y, acc, n, c, h, r0, w + i64(hi))
                    else:  # a border row: every output from its window's elements in the image
                        for w in range(i64(OW)):
                            clipped(x, y, acc, n, c, h, r0, w)

    return pool
