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
actually visited are ever ordered (the larger child picked without a branch: which
child wins is random, and a mispredicted branch per level cost more than the pick);
each popped box is kept unless its IoU with a box already kept for that class is
above ``iou_threshold``, until ``max_output_boxes_per_class`` are kept.  The kept
boxes' corners and areas are stored one row per field, so a popped box is tested
against :data:`LANES` kept boxes at once (one vector; lanes past the kept count are
masked), stopping at the first vector with a suppressor.  The IoU test is the
reference's, in float32 and the same operation order (empty intersections and
non-positive areas never suppress).  Rows come out batch-major, then class, then in
keeping order, written in parallel at offsets summed from the per-class counts.
On one core of the 2-core dev machine, the zoo detector's NMS (80 classes x 1200
boxes, 8000 kept): 1.85 ms with one kept box tested at a time, 0.69 ms now (ONNX
Runtime 3.3 ms).

With :data:`SELECT_CANDIDATES` (on by default since device step 131), only a few more boxes than are still to be
kept enter the heap, in rounds of descending coarse-key windows (bisected by vector counting
passes), and a popped box's test ors every kept vector before one reduction: the zoo
detector's NMS on one core 0.87-0.92 -> 0.39 ms (bench/results/nms-fast-2core.md; on the H100
host's Xeon 1.09 -> 0.46 ms, bench/results/nms-fast-nvidia-h100.md).

An absent ``score_threshold`` reaches the kernel as :data:`NO_SCORE_THRESHOLD`
(:class:`NonMaxSuppressionConverter`): every box is a candidate, NaN scores included
(ordered by their bits: above +inf, a negative NaN below -inf; ONNX Runtime leaves
their order undefined).

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

from hetpart.kernels.tir_macro import macro

OP = "relax.vision.all_class_non_max_suppression"
FUNC_NAME = "all_class_non_max_suppression"
INT32_MAX = 2**31 - 1
NOT_CANDIDATE = -(2**30)
"""The coarse key (:data:`SELECT_CANDIDATES`) of a box that is no candidate: below every candidate's
(those lie in [-2**29, 2**29)).  Not INT32_MIN: TVM 0.27 compiled ``x == -2**31`` on int32 as false."""
SLACK_DIV, SLACK_ADD, WINDOW_DIV = 8, 8, 2
"""A round of :data:`SELECT_CANDIDATES` holds at least ``need + need // SLACK_DIV + SLACK_ADD`` boxes
(``need``: boxes still to keep; more pop than are kept, the suppressed ones)."""
LANES = 16
"""Kept boxes tested against a candidate at once (one AVX-512 vector of float32)."""
NO_SCORE_THRESHOLD = float("nan")
"""The score threshold :class:`NonMaxSuppressionConverter` passes for an absent one: no filter."""
SELECT_CANDIDATES = True
"""Order only the boxes that can be popped: per (batch, class), a coarse key per box (one vector
pass), a threshold bisected on it (vector counting passes) so that a few more boxes than are
still to be kept lie above it, and only those go into the heap; another round below that
threshold when they run out.  Off: every candidate box goes into the heap.  Device step 131
(H100 host's 16-core Xeon, the zoo detector's own boxes; bench/results/nms-fast-nvidia-h100.md):
1 thread b1 1.09 -> 0.46 ms, b8 8.74 -> 3.99 (ORT 4.37 / 35.7); 16 threads b1 0.111 -> 0.083,
b8 0.944 -> 0.460; the whole detector all-CPU 0.94x at b1 and b8, rows equal."""


def _nms_primfunc(batch: int, boxes: int, classes: int, keep: int, iou_threshold: float,
                  score_threshold: float) -> tirx.PrimFunc:
    """:func:`nms_primfunc`'s parse, every time it is called.  It stays where the kernel's
    TVMScript always was, its docstring as many lines as before: the script's line numbers
    are the kernel's source locations (LLVM's debug locations), so the generated code stays
    as it was."""
    B, N, C, K = batch, boxes, classes, keep
    BC = B * C
    KP = -(-max(K, 1) // LANES) * LANES  # kept boxes' rows padded to whole vectors
    iou_thr, score_thr = float(np.float32(iou_threshold)), float(np.float32(score_threshold))
    filter_scores = not np.isnan(score_thr)
    select = SELECT_CANDIDATES and K > 0
    NV = -(-N // LANES)  # vectors of coarse keys

    def candidate(score):
        return score > T.float32(score_thr) if filter_scores else tirx.const(True, "bool")

    def ordered_bits(score):
        """The float32 score's bits made monotonic as a signed int32 (-0.0 taken as 0.0, as
        float comparison does)."""
        bits = tirx.reinterpret("int32", tirx.Select(score == T.float32(0), T.float32(0), score))
        return tirx.Select(bits >= 0, bits, tirx.bitwise_xor(bits, T.int32(0x7FFFFFFF)))

    def sort_key(score, i):
        """An int64 that orders boxes as ONNX does: higher score first, then lower index.
        High word: :func:`ordered_bits`; low word: ``N - 1 - i``."""
        return tirx.Cast("int64", ordered_bits(score)) * T.int64(1 << 32) + tirx.Cast("int64", N - 1 - i)

    def coarse_key(score, valid):
        """An int32 in the sort key's order, coarser (a tie may join boxes the key orders):
        the high word over 4, so every candidate's lies in [-2**29, 2**29) and differences of
        two fit an int32; non-candidates, and padding (``valid`` false), get :data:`NOT_CANDIDATE`."""
        return tirx.Select(tirx.all(valid, candidate(score)), tirx.shift_right(ordered_bits(score), 2),
                           T.int32(NOT_CANDIDATE))

    def box_of(key):
        return N - 1 - tirx.Cast("int32", tirx.bitwise_and(key, T.int64(0xFFFFFFFF)))

    def suppresses(y1, x1, y2, x2, area, kept_box, bc, j):
        """ONNX's IoU test of the candidate box (its corners sorted, its area) against the
        kept box in lane ``j`` of ``kept_box[bc]``, in the reference's operation order:
        boxes that do not intersect, and non-positive areas, never suppress.  Branch-free,
        so a vector of kept boxes is tested at once."""
        dx = tirx.min(x2, kept_box[bc, 3, j]) - tirx.max(x1, kept_box[bc, 1, j])
        dy = tirx.min(y2, kept_box[bc, 2, j]) - tirx.max(y1, kept_box[bc, 0, j])
        inter = dx * dy
        union = area + kept_box[bc, 4, j] - inter
        return tirx.all(dx > T.float32(0), dy > T.float32(0), inter > T.float32(0), area > T.float32(0),
                        kept_box[bc, 4, j] > T.float32(0), union > T.float32(0),
                        inter / union > T.float32(iou_thr))

    @macro
    def sift_down(heap, bc, size, hole, child, item, start):
        """Move ``heap[bc, start]`` down below the larger keys of the first ``size`` (a max-heap)."""
        hole[0] = start
        item[0] = heap[bc, start]
        child[0] = start * 2 + 1
        while child[0] < size[0]:
            # the larger child, without a branch (which way is random: a branch mispredicts);
            # a lone last child compares with itself
            child[0] = child[0] + T.Select(heap[bc, T.min(child[0] + 1, size[0] - 1)] > heap[bc, child[0]], 1, 0)
            if heap[bc, child[0]] > item[0]:
                heap[bc, hole[0]] = heap[bc, child[0]]
                hole[0] = child[0]
                child[0] = child[0] * 2 + 1
            else:
                child[0] = size[0]
        heap[bc, hole[0]] = item[0]

    @macro
    def heapify(heap, bc, size, parent, hole, child, item):
        """Make the first ``size`` keys of ``heap[bc]`` a max-heap: sift every parent down, last first."""
        parent[0] = size[0] // 2
        while parent[0] > 0:
            parent[0] = parent[0] - 1
            sift_down(heap, bc, size, hole, child, item, parent[0])

    @macro
    def pop_and_keep(heap, box, kept, kept_box, b, bc, size, hole, child, item, top, n_kept, j, hit, hits):
        """Pop boxes in ONNX's order until ``K`` are kept or the heap is empty; keep each one
        no kept box suppresses."""
        while n_kept[0] < K and size[0] > 0:
            top[0] = box_of(heap[bc, 0])
            size[0] = size[0] - 1
            heap[bc, 0] = heap[bc, size[0]]
            sift_down(heap, bc, size, hole, child, item, 0)
            # Test it against the boxes kept so far, a vector of them at a time
            # (lanes past n_kept read padding and are masked off).
            hits[0] = 0  # kept boxes that suppress it, in the vectors tested so far
            j[0] = 0
            if select:
                # every kept vector tested, the lanes' hits or-ed, one or-reduction at the end
                # (vptestmd + kortestw; most popped boxes are kept, so an early exit saves few
                # vectors, while a 16-lane sum per vector cost more than the test)
                for lane in T.vectorized(LANES):
                    hit[lane] = 0
                while j[0] < n_kept[0]:  # lanes past n_kept hold zero areas: they never suppress
                    for lane in T.vectorized(LANES):
                        hit[lane] = hit[lane] | T.Select(
                            suppresses(box[b, top[0], 0], box[b, top[0], 1], box[b, top[0], 2],
                                       box[b, top[0], 3], box[b, top[0], 4], kept_box, bc, j[0] + lane),
                            1, 0)
                    j[0] = j[0] + LANES
                hits[0] = T.Cast("int32", T.call_llvm_pure_intrin(
                    "bool", "llvm.vector.reduce.or", hit.vload([0], f"int32x{LANES}") != T.Broadcast(T.int32(0), LANES)))
            else:
                while j[0] < n_kept[0] and hits[0] == 0:
                    for lane in T.vectorized(LANES):
                        hit[lane] = T.Select(
                            tirx.all(j[0] + lane < n_kept[0],
                                     suppresses(box[b, top[0], 0], box[b, top[0], 1], box[b, top[0], 2],
                                                box[b, top[0], 3], box[b, top[0], 4], kept_box, bc, j[0] + lane)),
                            1, 0)
                    for lane in T.unroll(LANES):
                        hits[0] = hits[0] + hit[lane]
                    j[0] = j[0] + LANES
            if hits[0] == 0:
                kept[bc, n_kept[0]] = top[0]
                if n_kept[0] % LANES == 0:  # a new vector: its masked lanes hold zeros, not
                    for f, lane in T.grid(5, LANES):  # stale bits (denormals slow some CPUs)
                        kept_box[bc, f, n_kept[0] + lane] = T.float32(0)
                for f in range(5):
                    kept_box[bc, f, n_kept[0]] = box[b, top[0], f]
                n_kept[0] = n_kept[0] + 1

    @macro
    def count_between(coarse, bc, lo, hi, acc, total):
        """``total[0]`` = how many of ``coarse[bc]`` lie in ``(lo, hi]`` (vector passes)."""
        for lane in T.vectorized(LANES):
            acc[lane] = 0
        for v in range(NV):
            for lane in T.vectorized(LANES):
                acc[lane] = acc[lane] + T.Select(tirx.all(coarse[bc, v * LANES + lane] > lo,
                                                          coarse[bc, v * LANES + lane] <= hi), 1, 0)
        total[0] = 0
        for lane in T.unroll(LANES):
            total[0] = total[0] + acc[lane]

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
            # the kept boxes' corners and areas, one row each (ymin, xmin, ymax, xmax, area),
            # so the suppression test reads them a vector at a time
            kept_box = T.sblock_alloc_buffer((BC, 5, KP), "float32")
            coarse = T.sblock_alloc_buffer((BC, NV * LANES if select else 1), "int32")  # coarse keys, padded
            count = T.sblock_alloc_buffer((BC,), "int32")
            start = T.sblock_alloc_buffer((BC,), "int32")  # first output row of each (batch, class)
            offset = T.sblock_alloc_buffer((1,), "int32")
            with T.sblock("all_class_nms"):  # opaque, as passes over s_tir expect a block
                T.reads()
                T.writes()
                # a few ns per box: parallel over batches only (one batch: no fork-join at all)
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
                    hit = T.alloc_buffer((LANES,), "int32")  # one vector of suppression tests
                    hits = T.alloc_buffer((1,), "int32")

                    n_kept[0] = 0
                    if select:
                        lo = T.alloc_buffer((1,), "int32")  # the round's boxes: coarse key in (lo, upper]
                        upper = T.alloc_buffer((1,), "int32")
                        floor = T.alloc_buffer((1,), "int32")
                        hi = T.alloc_buffer((1,), "int32")
                        mid = T.alloc_buffer((1,), "int32")
                        n_lo = T.alloc_buffer((1,), "int32")  # boxes in (lo, upper]
                        n_mid = T.alloc_buffer((1,), "int32")
                        left = T.alloc_buffer((1,), "int32")  # candidates not yet in a round
                        want = T.alloc_buffer((1,), "int32")  # boxes a round should hold at least
                        acc = T.alloc_buffer((LANES,), "int32")
                        vmax = T.alloc_buffer((LANES,), "int32")
                        vmin = T.alloc_buffer((LANES,), "int32")
                        # coarse keys: the sort key's score word halved (order kept, ties
                        # added), non-candidates NOT_CANDIDATE; padding too
                        for v in range(N // LANES):
                            for lane in T.vectorized(LANES):
                                coarse[bc, v * LANES + lane] = coarse_key(scores[b, c, v * LANES + lane], True)
                        if N % LANES != 0:  # the last, partial vector
                            for lane in range(LANES):
                                coarse[bc, N // LANES * LANES + lane] = coarse_key(
                                    scores[b, c, T.min(N // LANES * LANES + lane, N - 1)],
                                    N // LANES * LANES + lane < N)
                        for lane in T.vectorized(LANES):
                            vmax[lane] = T.int32(NOT_CANDIDATE)
                            vmin[lane] = T.int32(INT32_MAX)
                            acc[lane] = 0
                        for v in range(NV):
                            for lane in T.vectorized(LANES):
                                vmax[lane] = T.max(vmax[lane], coarse[bc, v * LANES + lane])
                                vmin[lane] = T.min(vmin[lane], T.Select(
                                    coarse[bc, v * LANES + lane] == T.int32(NOT_CANDIDATE), T.int32(INT32_MAX),
                                    coarse[bc, v * LANES + lane]))
                                acc[lane] = acc[lane] + T.Select(
                                    coarse[bc, v * LANES + lane] == T.int32(NOT_CANDIDATE), 0, 1)
                        upper[0] = T.int32(NOT_CANDIDATE)
                        lo[0] = T.int32(INT32_MAX)
                        left[0] = 0
                        for lane in T.unroll(LANES):
                            upper[0] = T.max(upper[0], vmax[lane])
                            lo[0] = T.min(lo[0], vmin[lane])
                            left[0] = left[0] + acc[lane]
                        floor[0] = lo[0] - 1  # below every candidate's coarse key, above NOT_CANDIDATE
                        lo[0] = floor[0]
                        while n_kept[0] < K and left[0] > 0:
                            # the round: (lo, upper] with at least `want` boxes, at most 2x, unless ties
                            want[0] = (K - n_kept[0]) + (K - n_kept[0]) // SLACK_DIV + SLACK_ADD
                            n_lo[0] = left[0]
                            hi[0] = upper[0]
                            while n_lo[0] > want[0] + want[0] // WINDOW_DIV and hi[0] - lo[0] > 1:
                                mid[0] = lo[0] + (hi[0] - lo[0]) // 2
                                count_between(coarse, bc, mid[0], upper[0], acc, n_mid)
                                if n_mid[0] >= want[0]:
                                    lo[0] = mid[0]
                                    n_lo[0] = n_mid[0]
                                else:
                                    hi[0] = mid[0]
                            size[0] = 0  # the round's boxes' indices, branch-free, then their keys
                            for i in range(N):
                                heap[bc, size[0]] = T.Cast("int64", i)
                                # lo < coarse <= upper as one unsigned compare (both differences fit an int32)
                                size[0] = size[0] + T.Select(
                                    T.Cast("uint32", coarse[bc, i] - lo[0] - 1) < T.Cast("uint32", upper[0] - lo[0]), 1, 0)
                            j[0] = 0
                            while j[0] < size[0]:
                                heap[bc, j[0]] = sort_key(scores[b, c, heap[bc, j[0]]], heap[bc, j[0]])
                                j[0] = j[0] + 1
                            heapify(heap, bc, size, parent, hole, child, item)
                            pop_and_keep(heap, box, kept, kept_box, b, bc, size, hole, child, item, top, n_kept,
                                         j, hit, hits)
                            left[0] = left[0] - n_lo[0]
                            upper[0] = lo[0]
                            lo[0] = floor[0]
                    else:
                        size[0] = 0
                        for i in range(N):
                            if candidate(scores[b, c, i]):
                                heap[bc, size[0]] = sort_key(scores[b, c, i], i)
                                size[0] = size[0] + 1
                        heapify(heap, bc, size, parent, hole, child, item)
                        pop_and_keep(heap, box, kept, kept_box, b, bc, size, hole, child, item, top, n_kept,
                                     j, hit, hits)
                    count[bc] = n_kept[0]
                offset[0] = 0  # each (batch, class)'s first row: the counts before it, summed
                for bc in range(BC):
                    start[bc] = offset[0]
                    offset[0] = offset[0] + count[bc]
                total[0] = T.Cast("int64", offset[0])
                for bc in T.parallel(BC):
                    for k in range(K):
                        if k < count[bc]:
                            rows[T.Cast("int64", start[bc] + k), 0] = T.Cast("int64", bc // C)
                            rows[T.Cast("int64", start[bc] + k), 1] = T.Cast("int64", bc % C)
                            rows[T.Cast("int64", start[bc] + k), 2] = T.Cast("int64", kept[bc, k])

    return nms


_BUILT: dict[tuple, tirx.PrimFunc] = {}
"""The kernels :func:`nms_primfunc` parsed, by their sizes, thresholds and the module's settings."""


def nms_primfunc(batch: int, boxes: int, classes: int, keep: int, iou_threshold: float,
                 score_threshold: float) -> tirx.PrimFunc:
    """The NMS kernel for static sizes: ``(boxes[B,N,4], scores[B,C,N]) -> (rows[B*C*keep, 3]
    int64, count[1] int64)``; rows past ``count`` are unspecified.  ``keep`` is
    ``min(max_output_boxes_per_class, N)`` (0 selects nothing).  A NaN ``score_threshold``
    (:data:`NO_SCORE_THRESHOLD`) filters no box out, as ONNX without that input.

    Parsed once per process for each distinct sizes, float32 thresholds and module settings
    (:data:`SELECT_CANDIDATES`, :data:`LANES`, the slack and window divisors,
    :data:`NOT_CANDIDATE`): the TVMScript parse took ~0.7 s of each detector import, and a
    PrimFunc is immutable, so every import of the same NMS shares one."""
    key = (int(batch), int(boxes), int(classes), int(keep), np.float32(iou_threshold).tobytes(),
           np.float32(score_threshold).tobytes(), SELECT_CANDIDATES, LANES, SLACK_DIV, SLACK_ADD, WINDOW_DIV,
           NOT_CANDIDATE, INT32_MAX)
    if key not in _BUILT:
        _BUILT[key] = _nms_primfunc(batch, boxes, classes, keep, iou_threshold, score_threshold)
    return _BUILT[key]


class NonMaxSuppressionConverter:
    """TVM's ONNX converter for NonMaxSuppression with ONNX's meaning of absent inputs.

    TVM's converter reads an absent ``iou_threshold`` as 0.5 (ONNX: 0, any overlap
    suppresses) and an absent ``score_threshold`` as 0.0 (ONNX: no score filter, so
    TVM dropped every box scoring <= 0).  This one hands TVM's converter explicit
    constants instead: ``iou_threshold`` 0, and for an absent ``score_threshold``
    :data:`NO_SCORE_THRESHOLD` (NaN), which :func:`nms_primfunc` reads as "filter
    nothing".  A NaN given as the threshold selects nothing (``score > NaN`` is never
    true), exactly as ``+inf`` does, so it is passed as ``+inf`` and stays apart from
    the marker.  ``max_output_boxes_per_class`` absent is 0 in both."""

    @classmethod
    def get_converter(cls, opset: int):
        return cls._impl

    @classmethod
    def _impl(cls, bb, inputs, attr, params):
        from tvm.relax.frontend.onnx import onnx_frontend as fe

        filled = fe.onnx_input([inputs[i] for i in range(5)])  # onnx_input: None past its end
        if filled[3] is None:
            filled[3] = relax.const(np.array([0.0], np.float32))
        score = filled[4]
        if score is None:
            filled[4] = relax.const(np.array([NO_SCORE_THRESHOLD], np.float32))
        elif isinstance(score, tvm.ir.GenericConst) and np.isnan(score.value.numpy()).any():
            filled[4] = relax.const(np.full(score.value.numpy().shape, np.inf, np.float32))
        return fe.NonMaxSuppression._impl_v10(bb, filled, attr, params)


def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``call`` (an :data:`OP` call) as :func:`nms_primfunc`'s kernel plus the trim to the
    selected rows, the same value as TVM's legalisation.  Forms the kernel does not
    cover (limits that are not constants, float types other than float32, TensorFlow's
    output format, sizes past int32 indexing) get TVM's own legalisation, an absent
    score threshold (:data:`NO_SCORE_THRESHOLD`) handed to it as -inf, the nearest
    threshold it reads."""
    sizes = _static_sizes(call)
    if sizes is None:
        return _tvm_legalize(bb, _without_marker(call))
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


def _without_marker(call: relax.Call) -> relax.Call:
    """``call`` with a :data:`NO_SCORE_THRESHOLD` score threshold replaced by -inf."""
    score = call.args[4]
    if isinstance(score, tvm.ir.GenericConst) and np.isnan(score.value.numpy()).all():
        args = [*call.args[:4], relax.const(np.full(score.value.numpy().shape, -np.inf, np.float32))]
        return relax.Call(call.op, args, call.attrs, call.ty_args)
    return call


def _tvm_legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    return tvm.ir.Op.get(OP).get_attr("FLegalize")(bb, call)


CONVERTERS = {"NonMaxSuppression": NonMaxSuppressionConverter}
"""ONNX op -> converter, for the importer's ``from_onnx`` (:func:`.integer_ops.converters`)."""

LEGALIZE = {OP: legalize}
"""The ``customize_legalize_map`` of ``relax.transform.LegalizeOps`` that lowers NMS here."""
