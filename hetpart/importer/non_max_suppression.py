"""NonMaxSuppression lowered to one greedy TIR kernel with ONNX's exact semantics.

In: a ``relax.vision.all_class_non_max_suppression`` call as TVM's ONNX frontend
emits it (boxes ``[B, N, 4]`` corners ``[y1, x1, y2, x2]`` -- the frontend already
turned ``center_point_box=1`` into corners --, scores ``[B, C, N]``, and the three
limits as constants).  Out: the same value TVM's own legalisation gives (a tuple of
the selected ``[num_selected, 3]`` int64 rows, trimmed to their dynamic count, and
that count ``[1]``), computed by :func:`nms_primfunc` instead of TOPI's kernel.

Why: TOPI's CPU kernel is serial over (batch, class) and, for every box it keeps,
starts a parallel loop over *all* remaining candidates (a thread-pool launch and
up to N IoUs per kept box): 40-47 ms of the zoo detector's 60 ms on a 16-core
CPU.  It also departs from ONNX: it suppresses at ``IoU >= threshold`` (ONNX:
``>``), selects no box at all when the threshold is <= 0, and never suppresses
boxes whose score is <= 0.

The kernel here runs the ONNX reference algorithm, one (batch, class) pair per
parallel task: the boxes scoring above ``score_threshold`` go into a binary heap
of int64 keys ordered as (score descending, box index ascending), so only the boxes
actually visited are ever ordered; each popped box is kept unless its IoU with a box
already kept for that class is above ``iou_threshold``, until
``max_output_boxes_per_class`` are kept.  The IoU test is the reference's, in
float32 and the same operation order (empty intersections and non-positive areas
never suppress).  Rows come out batch-major, then class, then in keeping order.

Every loop whose trip count depends on the data is a ``while`` loop (or a guarded
loop of constant extent): TVM's flop
estimate (the op graph's ``flops``, a cost-model feature) counts a ``for`` loop of
unknown extent as 2**32 iterations, a ``while`` body once.

Invariant: the function is named ``all_class_non_max_suppression`` like TOPI's,
so the op graph, pins and capability table see the same kernel; it is marked
scheduled (its parallel loop is its schedule) so no schedule rule rewrites it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.script import tirx as T

OP = "relax.vision.all_class_non_max_suppression"
FUNC_NAME = "all_class_non_max_suppression"
INT32_MAX = 2**31 - 1


def nms_primfunc(batch: int, boxes: int, classes: int, keep: int, iou_threshold: float,
                 score_threshold: float) -> tirx.PrimFunc:
    """The NMS kernel for static sizes: ``(boxes[B,N,4], scores[B,C,N]) -> (rows[B*C*keep, 3]
    int64, count[1] int64)``; rows past ``count`` are unspecified.  ``keep`` is
    ``min(max_output_boxes_per_class, N)`` (0 selects nothing)."""
    B, N, C, K = batch, boxes, classes, keep
    BC = B * C
    iou_thr, score_thr = float(np.float32(iou_threshold)), float(np.float32(score_threshold))

    def sort_key(score, i):
        """An int64 that orders boxes as ONNX does: higher score first, then lower index.
        High word: the float32 score's bits made monotonic as a signed int (-0.0 taken
        as 0.0, as float comparison does); low word: ``N - 1 - i``."""
        bits = tirx.reinterpret("int32", tirx.Select(score == T.float32(0), T.float32(0), score))
        ordered = tirx.Select(bits >= 0, bits, tirx.bitwise_xor(bits, T.int32(0x7FFFFFFF)))
        return tirx.Cast("int64", ordered) * T.int64(1 << 32) + tirx.Cast("int64", N - 1 - i)

    def box_of(key):
        return N - 1 - tirx.Cast("int32", tirx.bitwise_and(key, T.int64(0xFFFFFFFF)))

    def overlap(box, b, x, y):
        """Boxes ``x`` and ``y`` intersect (rows of ``box``: ymin, xmin, ymax, xmax, area).
        Tested first and on its own: most pairs do not, and then no IoU is computed."""
        return tirx.all(tirx.max(box[b, x, 1], box[b, y, 1]) < tirx.min(box[b, x, 3], box[b, y, 3]),
                        tirx.max(box[b, x, 0], box[b, y, 0]) < tirx.min(box[b, x, 2], box[b, y, 2]))

    def iou_above(box, b, x, y):
        """ONNX's IoU test of intersecting boxes ``x`` and ``y``, in its operation order."""
        inter = ((tirx.min(box[b, x, 3], box[b, y, 3]) - tirx.max(box[b, x, 1], box[b, y, 1]))
                 * (tirx.min(box[b, x, 2], box[b, y, 2]) - tirx.max(box[b, x, 0], box[b, y, 0])))
        union = box[b, x, 4] + box[b, y, 4] - inter
        return tirx.all(inter > T.float32(0), box[b, x, 4] > T.float32(0), box[b, y, 4] > T.float32(0),
                        union > T.float32(0), inter / union > T.float32(iou_thr))

    @T.macro
    def sift_down(heap, bc, size, hole, child, item, start):
        """Move ``heap[bc, start]`` down below the larger keys of the first ``size`` (a max-heap)."""
        hole[0] = start
        item[0] = heap[bc, start]
        child[0] = start * 2 + 1
        while child[0] < size[0]:
            if child[0] + 1 < size[0]:
                if heap[bc, child[0] + 1] > heap[bc, child[0]]:
                    child[0] = child[0] + 1
            if heap[bc, child[0]] > item[0]:
                heap[bc, hole[0]] = heap[bc, child[0]]
                hole[0] = child[0]
                child[0] = child[0] * 2 + 1
            else:
                child[0] = size[0]
        heap[bc, hole[0]] = item[0]

    @T.prim_func(private=True, s_tir=True)
    def nms(data: T.Buffer((T.int64(B), T.int64(N), T.int64(4)), "float32"),
            scores: T.Buffer((T.int64(B), T.int64(C), T.int64(N)), "float32"),
            rows: T.Buffer((T.int64(BC * K), T.int64(3)), "int64"),
            total: T.Buffer((T.int64(1),), "int64")):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            T.reads()
            T.writes()
            box = T.sblock_alloc_buffer((B, N, 5), "float32")  # corners sorted per axis, then area
            heap = T.sblock_alloc_buffer((BC, max(N, 1)), "int64")  # sort keys
            kept = T.sblock_alloc_buffer((BC, max(K, 1)), "int32")
            count = T.sblock_alloc_buffer((BC,), "int32")
            with T.sblock("all_class_nms"):  # opaque, as passes over s_tir expect a block
                T.reads()
                T.writes()
                for b in T.parallel(B):
                    for i in range(N):
                        box[b, i, 0] = T.min(data[b, i, 0], data[b, i, 2])
                        box[b, i, 1] = T.min(data[b, i, 1], data[b, i, 3])
                        box[b, i, 2] = T.max(data[b, i, 0], data[b, i, 2])
                        box[b, i, 3] = T.max(data[b, i, 1], data[b, i, 3])
                        box[b, i, 4] = (box[b, i, 3] - box[b, i, 1]) * (box[b, i, 2] - box[b, i, 0])
                for bc in T.parallel(BC):
                    b = T.meta_var(bc // C)
                    c = T.meta_var(bc % C)
                    # Scalars as 1-element "global" buffers: TVM keeps those on the stack
                    # (registers), while "local" ones become workspace allocations.
                    size = T.alloc_buffer((1,), "int32")  # boxes left in the heap
                    parent = T.alloc_buffer((1,), "int32")
                    hole = T.alloc_buffer((1,), "int32")
                    child = T.alloc_buffer((1,), "int32")
                    item = T.alloc_buffer((1,), "int64")
                    top = T.alloc_buffer((1,), "int32")
                    n_kept = T.alloc_buffer((1,), "int32")
                    j = T.alloc_buffer((1,), "int32")

                    size[0] = 0
                    for i in range(N):
                        if scores[b, c, i] > T.float32(score_thr):
                            heap[bc, size[0]] = sort_key(scores[b, c, i], i)
                            size[0] = size[0] + 1
                    parent[0] = size[0] // 2
                    while parent[0] > 0:  # heapify: sift every parent down, last first
                        parent[0] = parent[0] - 1
                        sift_down(heap, bc, size, hole, child, item, parent[0])
                    n_kept[0] = 0
                    while n_kept[0] < K and size[0] > 0:  # pop boxes in ONNX's order
                        top[0] = box_of(heap[bc, 0])
                        size[0] = size[0] - 1
                        heap[bc, 0] = heap[bc, size[0]]
                        sift_down(heap, bc, size, hole, child, item, 0)
                        # Compare with the boxes kept so far; j ends past n_kept if one suppresses it.
                        j[0] = 0
                        while j[0] < n_kept[0]:
                            other = kept[bc, j[0]]
                            j[0] = j[0] + 1
                            if overlap(box, b, top[0], other):
                                if iou_above(box, b, top[0], other):
                                    j[0] = n_kept[0] + 1
                        if j[0] == n_kept[0]:
                            kept[bc, n_kept[0]] = top[0]
                            n_kept[0] = n_kept[0] + 1
                    count[bc] = n_kept[0]
                offset = T.alloc_buffer((1,), "int64")
                offset[0] = T.int64(0)
                for bc in range(BC):
                    for k in range(K):
                        if k < count[bc]:
                            rows[offset[0] + T.Cast("int64", k), 0] = T.Cast("int64", bc // C)
                            rows[offset[0] + T.Cast("int64", k), 1] = T.Cast("int64", bc % C)
                            rows[offset[0] + T.Cast("int64", k), 2] = T.Cast("int64", kept[bc, k])
                    offset[0] = offset[0] + T.Cast("int64", count[bc])
                total[0] = offset[0]

    return nms


def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``call`` (an :data:`OP` call) as :func:`nms_primfunc`'s kernel plus the trim to the
    selected rows, the same value as TVM's legalisation.  Forms the kernel does not
    cover (limits that are not constants, float types other than float32, TensorFlow's
    output format, sizes past int32 indexing) get TVM's own legalisation."""
    sizes = _static_sizes(call)
    if sizes is None:
        return _tvm_legalize(bb, call)
    batch, boxes, classes, keep, iou_threshold, score_threshold = sizes
    gvar = bb.add_func(nms_primfunc(batch, boxes, classes, keep, iou_threshold, score_threshold), FUNC_NAME)
    out = bb.emit(relax.call_tir(gvar, relax.Tuple(call.args[:2]), [
        relax.TensorType([batch * classes * keep, 3], "int64"), relax.TensorType([1], "int64")]))
    rows, count = bb.emit(relax.TupleGetItem(out, 0)), bb.emit(relax.TupleGetItem(out, 1))
    end = bb.call_te(lambda n: te.compute((2,), lambda i: tirx.if_then_else(i == 0, n[0], tirx.const(3, "int64")),
                                          name="end"), count, primfunc_name_hint="build_end")
    begin, strides = relax.const([0, 0], "int64"), relax.const([1, 1], "int64")
    trimmed = bb.emit(relax.op.dynamic_strided_slice(rows, begin, end, strides))
    return relax.Tuple([trimmed, count])


def _static_sizes(call: relax.Call):
    """``(B, N, C, keep, iou_threshold, score_threshold)`` when the kernel covers ``call``, else None."""
    boxes, scores, max_out, iou, score = call.args
    if call.attrs.output_format != "onnx":
        return None
    if not all(isinstance(a, tvm.ir.GenericConst) for a in (max_out, iou, score)):
        return None
    if boxes.ty.dtype != "float32" or scores.ty.dtype != "float32":
        return None
    try:
        batch, boxes_n, _ = (int(d) for d in boxes.ty.shape.values)
        _, classes, _ = (int(d) for d in scores.ty.shape.values)
    except (TypeError, ValueError):  # symbolic dims
        return None
    keep = min(max(int(max_out.value.numpy().reshape(-1)[0]), 0), boxes_n)
    if batch * classes * max(boxes_n, keep, 1) * 5 > INT32_MAX:
        return None
    return (batch, boxes_n, classes, keep, float(iou.value.numpy().reshape(-1)[0]),
            float(score.value.numpy().reshape(-1)[0]))


def _tvm_legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    return tvm.ir.Op.get(OP).get_attr("FLegalize")(bb, call)


LEGALIZE = {OP: legalize}
"""The ``customize_legalize_map`` of ``relax.transform.LegalizeOps`` that lowers NMS here."""
