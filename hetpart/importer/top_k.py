"""TopK lowered to one TIR selection kernel with ONNX Runtime's order, NaN included.

In: a ``relax.topk`` call (TVM's ONNX frontend emits one per TopK node; ``k`` an
attribute).  Out: the same value (values, indices, or both, as ``ret_type`` says),
computed by :func:`topk_primfunc` instead of TVM's ``tvm.contrib.sort.topk`` runtime
builtin, which the build would otherwise dispatch it to.

Why: the builtin sorts every row whole with a comparator that NaN breaks (a row
with a NaN came back in no defined order; ONNX Runtime and onnx.reference agree
that NaN ranks above +inf, whether ``largest`` is 1 or 0), and it is serial over
rows and over each row (52 us of the CPU detector's 1200-anchor, top-100 row).

The kernel, one row per parallel task: every element becomes an int64 key whose
order is the output order -- the float32 value's bits made monotonic as a signed int
(-0.0 taken as 0.0, as float comparison does; every NaN the largest), negated for
``largest=0``; low word ``n - 1 - index``, so ties go to the lower index as ONNX
Runtime's stable order does --, the ``k`` largest keys are kept in a min-heap of
``k`` (an element enters only when it beats the heap's least, so a row costs about
one compare per element), and the heap is emptied into the output back to front.
Sorted output is also a valid answer for ``sorted=0``, which TVM's converter refused
(:class:`TopKConverter` hands it ``sorted=1``).

Invariant: the PrimFunc is named ``topk`` (the op graph's ``sort`` class, pins'
``topk``); it is marked scheduled (its parallel loop over rows is its schedule).
Forms it does not cover (other than float32 input, symbolic shapes, ``k`` of 0,
sizes past int32 indexing) keep TVM's lowering.
"""

from __future__ import annotations

from tvm import relax, tirx
from tvm.script import tirx as T

from hetpart.kernels.tir_macro import macro

OP = "relax.topk"
FUNC_NAME = "topk"
INT32_MAX = 2**31 - 1


def _topk_primfunc(shape: list[int], axis: int, k: int, largest: bool, index_dtype: str) -> tirx.PrimFunc:
    """:func:`topk_primfunc`'s parse, every time it is called.  It stays where the kernel's
    TVMScript always was, its docstring as many lines as before: the script's line numbers
    are the kernel's source locations (LLVM's debug locations), so the generated code stays
    as it was (a PrimFunc of ``shape``,
    ``axis``, ``k``, ``largest`` and ``index_dtype``)."""
    O, N, I, K = _product(shape[:axis]), shape[axis], _product(shape[axis + 1:]), k  # noqa: E741
    R = O * I
    in_dims = tuple(tirx.IntImm("int64", d) for d in shape)
    out_dims = tuple(tirx.IntImm("int64", d) for d in [*shape[:axis], K, *shape[axis + 1:]])

    def key(value, i):
        """int64 ordered as the output: larger key first."""
        bits = tirx.reinterpret("int32", tirx.Select(value == T.float32(0), T.float32(0), value))
        ordered = tirx.Select(value != value, T.int32(INT32_MAX),  # NaN above +inf
                              tirx.Select(bits >= 0, bits, tirx.bitwise_xor(bits, T.int32(0x7FFFFFFF))))
        ranked = ordered if largest else tirx.bitwise_not(ordered)  # ~x reverses the order, NaN lowest
        return tirx.Cast("int64", ranked) * T.int64(1 << 32) + tirx.Cast("int64", N - 1 - i)

    def at(o, i, c):
        """The index into a buffer of ``shape`` (``K`` along ``axis`` for the outputs) of
        element ``i`` along the axis in row ``(o, c)`` of the ``[outer, n, inner]`` view."""
        lead, rest = [], []
        for d in reversed(shape[:axis]):
            lead.insert(0, o % d)
            o = o // d
        for d in reversed(shape[axis + 1:]):
            rest.insert(0, c % d)
            c = c // d
        return (*lead, i, *rest)

    def index_of(key_value):
        return N - 1 - tirx.Cast("int32", tirx.bitwise_and(key_value, T.int64(0xFFFFFFFF)))

    @macro
    def sift_down(heap, r, size, hole, child, item, start):
        """Move ``heap[r, start]`` down below the smaller keys of the first ``size`` (a min-heap)."""
        hole[0] = start
        item[0] = heap[r, start]
        child[0] = start * 2 + 1
        while child[0] < size[0]:
            # the smaller child without a branch; a lone last child compares with itself
            child[0] = child[0] + T.Select(heap[r, T.min(child[0] + 1, size[0] - 1)] < heap[r, child[0]], 1, 0)
            if heap[r, child[0]] < item[0]:
                heap[r, hole[0]] = heap[r, child[0]]
                hole[0] = child[0]
                child[0] = child[0] * 2 + 1
            else:
                child[0] = size[0]
        heap[r, hole[0]] = item[0]

    @T.prim_func(private=True, s_tir=True)
    def topk(data: T.Buffer(in_dims, "float32"),
             values: T.Buffer(out_dims, "float32"),
             indices: T.Buffer(out_dims, index_dtype)):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            T.reads()
            T.writes()
            heap = T.sblock_alloc_buffer((R, K), "int64")  # the k best keys so far, least at the root
            with T.sblock("topk"):  # opaque, as passes over s_tir expect a block
                T.reads()
                T.writes()
                for r in T.parallel(R):
                    o = T.meta_var(r // I)
                    c = T.meta_var(r % I)
                    # Scalars as 1-element "global" buffers: TVM keeps those on the stack.
                    size = T.alloc_buffer((1,), "int32")
                    hole = T.alloc_buffer((1,), "int32")
                    child = T.alloc_buffer((1,), "int32")
                    item = T.alloc_buffer((1,), "int64")
                    parent = T.alloc_buffer((1,), "int32")
                    for i in range(K):  # the first k elements, then heapified
                        heap[r, i] = key(data[at(o, i, c)], i)
                    size[0] = K
                    parent[0] = K // 2
                    while parent[0] > 0:
                        parent[0] = parent[0] - 1
                        sift_down(heap, r, size, hole, child, item, parent[0])
                    for i in range(N - K):  # the rest: each enters only if it beats the least kept
                        if key(data[at(o, K + i, c)], K + i) > heap[r, 0]:
                            heap[r, 0] = key(data[at(o, K + i, c)], K + i)
                            sift_down(heap, r, size, hole, child, item, 0)
                    while size[0] > 0:  # the least first: fill the output from its end
                        size[0] = size[0] - 1
                        values[at(o, size[0], c)] = data[at(o, index_of(heap[r, 0]), c)]
                        indices[at(o, size[0], c)] = T.Cast(index_dtype, index_of(heap[r, 0]))
                        heap[r, 0] = heap[r, size[0]]
                        sift_down(heap, r, size, hole, child, item, 0)

    return topk


_BUILT: dict[tuple, tirx.PrimFunc] = {}
"""The kernels :func:`topk_primfunc` parsed, by their form."""


def topk_primfunc(shape: list[int], axis: int, k: int, largest: bool, index_dtype: str) -> tirx.PrimFunc:
    """The kernel for a float32 input of ``shape``: ``(data) -> (values, indices)``, both
    of ``shape`` with ``k`` along ``axis``, in output order (``largest`` first, else
    smallest first; NaN ranks highest).  Rows are walked as ``[outer, n, inner]`` (``n``
    along ``axis``), indexing the buffers in their own shapes, so no reshape kernel
    surrounds it.  Parsed once per process for each distinct form (a PrimFunc is
    immutable: every import of the same TopK shares it)."""
    key = (tuple(int(d) for d in shape), int(axis), int(k), bool(largest), str(index_dtype), INT32_MAX)
    if key not in _BUILT:
        _BUILT[key] = _topk_primfunc(list(shape), axis, k, largest, index_dtype)
    return _BUILT[key]


def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``call`` (an :data:`OP` call) as :func:`topk_primfunc`'s kernel, the same value as
    TVM's lowering; forms the kernel does not cover are left as they are (TVM's)."""
    form = _form(call)
    if form is None:
        return call
    shape, axis, k, largest, index_dtype = form
    out_shape = [*shape[:axis], k, *shape[axis + 1:]]
    gvar = bb.add_func(topk_primfunc(shape, axis, k, largest, index_dtype), FUNC_NAME)
    out = bb.emit(relax.call_tir(gvar, [call.args[0]], [relax.TensorType(out_shape, "float32"),
                                                        relax.TensorType(out_shape, index_dtype)]))
    ret = call.attrs.ret_type
    if ret == "values":
        return relax.TupleGetItem(out, 0)
    if ret == "indices":
        return relax.TupleGetItem(out, 1)
    return out


def _form(call: relax.Call):
    """``(shape, axis, k, largest, index_dtype)`` when the kernel covers ``call``, else None."""
    data = call.args[0]
    ty = data.ty
    if not isinstance(ty, relax.TensorType) or ty.dtype != "float32" or ty.shape is None:
        return None
    try:
        shape = [int(d) for d in ty.shape.values]
    except (TypeError, ValueError):  # symbolic dims
        return None
    if not shape:
        return None
    axis = int(call.attrs.axis) % len(shape)
    k = int(call.attrs.k)
    index_dtype = str(call.attrs.dtype)
    if call.attrs.ret_type not in ("both", "values", "indices") or index_dtype not in ("int32", "int64"):
        return None
    if not 0 < k <= shape[axis] or _product(shape) > INT32_MAX:
        return None
    return shape, axis, k, bool(call.attrs.largest), index_dtype


def _product(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


class TopKConverter:
    """TVM's ONNX converter for TopK, taking ``sorted=0`` too (TVM refuses it): any order
    is a right answer then, so the sorted one is."""

    @classmethod
    def get_converter(cls, opset: int):
        from tvm.relax.frontend.onnx import onnx_frontend as fe

        tvm_impl = fe.TopK.get_converter(opset)

        def convert(bb, inputs, attr, params):
            return tvm_impl(bb, inputs, {**attr, "sorted": 1}, params)

        return convert


CONVERTERS = {"TopK": TopKConverter}
"""ONNX op -> converter, for the importer's ``from_onnx`` (:func:`.integer_ops.converters`)."""

LEGALIZE = {OP: legalize}
"""The ``customize_legalize_map`` entry of ``relax.transform.LegalizeOps`` that lowers TopK here."""
