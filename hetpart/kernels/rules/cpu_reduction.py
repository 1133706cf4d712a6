"""CPU rule for reductions: pooling (max/avg/global), mean/sum, softmax, layer norm.

Two shapes of function, two schedules:

* **one reduction block** (pooling, mean, sum; padding and element-wise producers
  inlined): the reduction loops move *outside* the innermost output loop, which is
  vectorised -- each step reduces ``lanes`` neighbouring outputs at once (a window
  of a pooling, or a column of a mean over a non-innermost axis); the other output
  loops run in parallel.  Where the innermost output extent is too short, the
  outputs run in parallel and each reduction is a serial loop.
* **several blocks sharing leading spatial axes** (softmax = max, exp, sum, divide;
  layer norm = sum, mean, variance, normalise): as in TVM's dlight CPU rule, the
  shared rows run in parallel and every block is computed inside the row loop, so a
  row stays in cache from its first pass to its last; element-wise passes are
  vectorised, and each reduction along the row keeps ``lanes`` partial results in
  one SIMD register (:func:`rfactor_rows`), combined at the end of the row.
  Measured (2-core znver3, one thread): layer norm 128x768 5.5x over unscheduled
  (was 0.9x).
* a sum over its input's innermost axes (an NCHW global average pool) reduces each output's
  row along memory (:data:`GLOBAL_POOL_ROWS`, :meth:`CpuReduction._global_rows`).
* every float32 ``exp`` (and ``sigmoid``, ``tanh``) of a function this rule schedules (softmax,
  log-softmax, log-sum-exp) is computed by :func:`hetpart.kernels.fast_exp.fast_exp`, plain
  vectorisable arithmetic within 4 ulps of ``expf``: LLVM emits ``T.exp`` as one
  scalar libm call per element even in a vector loop (no vector math library is
  linked), which was most of a softmax's time.  Measured (2-core EPYC, AVX-512, 2
  threads, ``bench/cpu_softmax.py``, with the in-place store below): BERT-base
  attention softmax ``[1,12,128,128]`` 0.15 -> 0.033 ms (ONNX Runtime 0.024 ms),
  ``[1,16,512,512]`` 3.5 -> 0.56-0.98 ms (ONNX Runtime 0.37-0.51 ms).
* rows that are not whole vectors (a 30522-word vocabulary, 197 ViT tokens, 1500
  whisper frames) reduce in full-width partials too (:func:`_rfactor_widest`; 1500
  had 4-wide ones, the widest dividing it): the split's bound check becomes a guard
  in the partials' value (:func:`_guard_partials`; TVM 0.27's ``compute_at`` drops a
  block's ``T.where`` predicate, and the block then reads past the row), and the
  partials loop is then partitioned (:func:`_split_off_tail`) into the row's whole
  vectors, unguarded, and the last, partial step, guarded: TVM's VectorizeLoop
  turned the whole guarded loop into scalar code.  The element-wise passes of such
  rows are LLVM's vectorised loops (:func:`_vectorize_row_pass`).  Measured (2
  threads, same process, before/after/ONNX Runtime interleaved,
  bench/results/cpu-softmax-rows-2core.md): 1x12x197x197 0.47 -> 0.21 ms (ORT
  0.11), 1x6x1500x1500 6.1-6.9 -> 3.8-3.9 ms (ORT 3.0-3.6); rows of whole vectors
  (128, 256, 512) are scheduled exactly as before.
* the ``exp`` pass over such a row computes its last ``n % lanes`` elements as one
  vector (the row's last ``lanes`` elements, only the tail's lanes stored:
  :func:`hetpart.kernels.row_tail.vector_row_tail`), where LLVM's loop left them
  scalar; and softmax's last pass multiplies by the reciprocal of the row's sum
  (:func:`reciprocal_divisor`) where it divided every element.  Measured (2-core EPYC
  znver3, AVX2, both builds in one process in turns, CPU time of one thread, least
  of 8 rounds, bench/results/cpu-vit-attn-2core.md): 1x12x197x197 0.524 -> 0.455 ms,
  1x6x1500x1500 15.8 -> 14.5, BERT's 1x12x128x128 (whole vectors: the reciprocal
  only) 0.182 -> 0.175.  Over such a row softmax's ``exp(x - max(row))``, ``<= 0`` or
  NaN, also leaves out ``fast_exp``'s overflow handling (:func:`row_max_exps`; the same
  bits): 0.436-0.440 -> 0.396-0.422 ms, 1500 wide 15.1 -> 14.8.
* rows of 32 vectors or more (whisper's 1500, LayerNorm's 384 and 768) reduce in
  partials two vectors wide: two independent chains (:data:`PARTIAL_CHAINS`); one
  thread, LayerNorm 1500 x 384 0.243 -> 0.193 ms, softmax 1x6x1500x1500 9.2 -> 8.6.
* softmax's ``exp(x - max(row))``, over any row, is the short exp of a non-positive
  argument (:func:`hetpart.kernels.fast_exp._below_max_exp`: one clamp, rounding by a
  float add, one power of 2; within 2**-23 where the result is normal, results below
  2**-126 in [0, 2**-126)): one thread, 1x12x197x197 0.386 -> 0.268 ms (ORT 0.264),
  1x12x128x128 0.161 -> 0.100 (ORT 0.117), 1x6x1500x1500 12.7 -> 9.7 (ORT 9.4).
* softmax's row sum is accumulated in the ``exp`` pass, as the exps are stored
  (:func:`~hetpart.kernels.rules.softmax_fold.fold_sum_into_exp`): three passes over a
  row (max, exp + sum, scale), as ONNX Runtime, where there were four; over ragged rows
  and rows of 32+ whole vectors (:data:`FOLD_MIN_WHOLE_VECTORS`), the sum in one chain
  (:data:`FOLDED_SUM_CHAINS`).  One thread, least of 8-10 rounds
  (bench/results/cpu-softmax-3pass-2core.md): 1x12x197x197 0.269-0.272 -> 0.237-0.243 ms
  (ORT 0.260-0.271), 1x6x1500x1500 8.40-8.59 -> 7.63-7.98 (ORT 8.81-8.95), 1x12x256x256
  0.372 -> 0.354-0.356 (ORT 0.381-0.383).
* softmax's ``exp`` row is stored in the output row and divided there in place
  (:func:`scratch_into_output`), as ONNX Runtime does: the scratch row, allocated
  inside the parallel loop, cost a workspace alloc/free call pair per row once wider
  than TVM's 1 KiB stack limit (``[1,16,512,512]``: 0.74 -> 0.57 ms).

Invariant: each output is reduced over the same elements as in the unscheduled
function; row reductions in a different order (``lanes`` interleaved chains), so
results agree to rounding; ``exp`` agrees with libm's within 4 ulps
(tests/test_kernels_fast_exp.py), with the same 0, +inf and NaN (softmax's
``exp(x - max)``: within 2**-23 relative where ``>= 2**-126``, below in [0, 2**-126)); a division by a
row's value is a multiplication by its reciprocal (within 1.5 ulps of the quotient).
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import block_infos, const_extent, cpu_shape, fitting_lanes, is_cpu, tests_bounds, try_inline_spatial
from ..fast_exp import replace_exp
from .. import separable_pool
from ..row_tail import vector_row_tail
from ..tir_expr import uses
from .softmax_fold import fold_sum_into_exp, row_max_exp_blocks


POOL_BORDER_PARTS = True
"""Whether a window reduction over a padded input (a MaxPool / AveragePool with ``pads``, the
padding inlined as an ``if_then_else`` per element) runs its output rows and row vectors in
parts -- the border ones with the padding's test, the interior without (:func:`_border_parts`;
False: one nest, the test in every step, kept for A/B runs)."""


SEPARABLE_POOL = True
"""Whether a 3x3 MaxPool / AveragePool (``count_include_pad=1``) of stride 1 (pad 1) or 2 is
replaced by the separable window of :mod:`hetpart.kernels.separable_pool` (the inception
branches' pools, googlenet's, the resnet50 / densenet121 stem pool; 2-6x faster on one AVX2
thread, bench/results/cpu-inception-2core.md; False: the window reduction below, kept for A/B
runs)."""


POOL_BORDER_MIN_PLANES = 16
"""The least planes (batch x channels) for :func:`_border_parts`, whose parallel loop runs over
the planes alone (the partitioned rows inside it are serial): 16, the cores of the goal's Xeon."""


def _window_read(stmt, min_spatial: int):
    """``(spatial, reduce, load)`` of a pooling's reduction block ``stmt``: its spatial
    iterators (at least ``min_spatial``), its two window iterators and its one load of an
    input other than its output (with 2+ indices); None for any other block."""
    spatial = [iv for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [iv for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
    if len(spatial) < min_spatial or len(reduce) != 2:
        return None
    loads = []
    tvm_ffi.structural_walk(stmt.body, (tvm.ir.TensorLoad, loads.append), order="post")
    inputs = [ld for ld in loads if not ld.source.same_as(stmt.writes[0].source)]
    if len(inputs) != 1 or len(inputs[0].indices) < 2:
        return None
    return spatial, reduce, inputs[0]


def _window_border(sch, block, lanes: int):
    """``((oh_lo, oh_hi), (ow_lo, ow_hi))``: the output rows and ``lanes``-wide vectors of
    a row (half-open ranges) whose windows read no padding, for a reduction block whose
    value tests its input's bounds (an inlined padding, ``if_then_else``) and reads that
    input at ``[.., oh * s + r + o, ow * s + q + o']`` (the block's last two spatial
    iterators, two reduction ones); None for any other block, or where no row or vector
    is interior."""
    stmt = sch.get(block)
    if not tests_bounds(stmt):
        return None
    read = _window_read(stmt, min_spatial=2)
    if read is None:
        return None
    spatial, reduce, load = read
    ranges = []
    for idx, out_iv, red_iv, extent in zip(load.indices[-2:], spatial[-2:], reduce, load.source.shape[-2:]):
        coef = tvm.sym.detect_linear_equation(idx, [out_iv.var, red_iv.var])
        if len(coef) != 3 or not all(isinstance(c, tirx.IntImm) for c in coef) or not isinstance(extent, tirx.IntImm):
            return None
        stride, step, offset = (int(c) for c in coef)
        window, size, outs = int(red_iv.dom.extent), int(extent), int(out_iv.dom.extent)
        if stride < 1 or step != 1:
            return None
        lo = max(0, -(offset // stride))  # the least o with o * s + o' >= 0
        hi = min(outs, (size - window - offset) // stride + 1)  # past the last o whose window ends inside
        ranges.append((lo, hi))
    (h_lo, h_hi), (w_lo, w_hi) = ranges
    v_lo, v_hi = -(-w_lo // lanes), w_hi // lanes  # whole interior vectors of the row
    if h_lo >= h_hi or v_lo >= v_hi:
        return None
    return (h_lo, h_hi), (v_lo, v_hi)


def _border_parts(sch, main, spatial, reduce, lanes: int, border) -> None:
    """Schedule a padded window reduction (:func:`_window_border` gave ``border``): the
    leading output loops (batch, channels) fused and parallel; inside, the output rows,
    then the row's ``lanes``-wide vectors, each reduced over the window; the rows loop and
    the vectors loops partitioned at the interior's bounds (before anything else: TVM's
    ``loop_partition`` crashed on the nest once decomposed), so TVM's simplifier drops the
    padding's test in the interior parts (the border ones keep it).  The window reduces
    into the output itself: no accumulator block (a write-back after the partitioned
    nest, whose wrapper blocks declare no regions, could only be placed around the
    whole output).  Only for a pooling with no epilogue (a MaxPool).

    Why: with the test in every step TVM's vectoriser made each window step a per-lane
    select of a gathered load -- resnet50's / densenet121's 3x3 stride-2 MaxPool on
    64x112x112 (pad 1) took 1.8x ONNX Runtime's time, googlenet's 3x3 stride-1 ones
    (pad 1) 2-2.9x, where inception's unpadded stride-2 pool took 0.6x."""
    (h_lo, h_hi), (v_lo, v_hi) = border
    strided = POOL_STRIDED_ROWS and (_column_stride(sch, main) or 1) >= 2
    oh, ow = spatial[-2], spatial[-1]
    ow_o, ow_i = sch.split(ow, factors=[None, lanes])
    sch.reorder(*spatial[:-2], oh, ow_o, *reduce, ow_i)
    outer = spatial[:-2]
    par = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    rows, vecs = const_extent(sch, oh), const_extent(sch, ow_o)
    row_parts = [p for p in (h_lo, h_hi - h_lo, rows - h_hi) if p > 0]
    vec_parts = [p for p in (v_lo, v_hi - v_lo, vecs - v_hi) if p > 0]
    for row in sch.loop_partition(oh, factors=row_parts[:-1] + [None]) if len(row_parts) > 1 else [oh]:
        vec_loop = sch.get_loops(sch.get_child_blocks(row)[0])[-4]  # (.., row, vectors, r, q, lanes)
        if len(vec_parts) > 1:
            sch.loop_partition(vec_loop, factors=vec_parts[:-1] + [None])
    sch.parallel(par)
    for blk in _leaf_blocks(sch, par):
        loops = sch.get_loops(blk)
        if not strided:  # stride 2+: the lanes a serial loop, LLVM's vectoriser reads them (_column_stride)
            sch.vectorize(loops[-1])
        sch.decompose_reduction(blk, loops[-3])


POOL_STRIDED_ROWS = True
"""Whether a pooling whose input columns step 2+ per output column leaves its output columns to
LLVM's loop vectoriser (two contiguous loads and a shuffle per vector of stride-2 columns), not
TVM's explicit vectors (each lane's column loaded alone and inserted): with no padding the row a
serial loop around the unrolled window (:func:`_strided_window`: densenet121's transition
AveragePool 2x2 stride 2, inception's 3x3 stride-2 MaxPool), with padding the border parts'
lanes loop left serial (:func:`_border_parts`: resnet50's / densenet121's stem MaxPool 3x3
stride 2, pad 1).  False: the explicit vectors (kept for A/B runs).  Stride-1 pools are
unchanged (googlenet's 3x3 stride-1 MaxPool on 28x28 measured 0.31 -> 0.49 ms with its lanes left
to LLVM).  Measured: bench/results/cpu-r50-dn-b1-2core.md."""


def _column_stride(sch, block) -> int | None:
    """The step of ``block``'s one input's last index per output column: ``s`` where a
    pooling's reduction (two window iterators innermost) reads ``x[.., ow * s + q + o]``;
    None for any other block."""
    read = _window_read(sch.get(block), min_spatial=3)
    if read is None:
        return None
    spatial, reduce, load = read
    coef = tvm.sym.detect_linear_equation(load.indices[-1], [spatial[-1].var, reduce[-1].var])
    if len(coef) != 3 or not all(isinstance(c, tirx.IntImm) for c in coef) or int(coef[1]) != 1:
        return None
    return int(coef[0])


GLOBAL_POOL_ROWS = True
"""A reduction over the innermost axes of its input (a global average pool's ``h x w`` of
each ``(n, c)`` plane, NCHW) reduces each row along memory in vector partials
(:meth:`CpuReduction._rows`: the reduced axes fused into one row, ``lanes``-wide partials,
the rows in parallel), where :meth:`CpuReduction._one_reduction` vectorised the output's
last axis, the channels: every step a gather of ``lanes`` elements ``h*w`` apart.
Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, both builds and ONNX Runtime in one
process in turns, least of 3 calls x 5 rounds, batch 8; bench/results/cpu-effnet-14-2core.md):
EfficientNet's pools 32x112x112 0.537 -> 0.370 ms, 144x56x56 0.751 -> 0.327, 672x14x14 0.204 ->
0.090, 1152x7x7 0.082 -> 0.052 (ONNX Runtime alone 0.17-1.5); its 17 pools in the model (alone,
``kernel_switch_ab``) 3.53 -> 1.73 ms.  Global max pools keep the channel vectors: their
NaN-propagating select is no combiner ``rfactor`` takes."""


def _reduces_rows(sch, infos) -> bool:
    """Whether the function's one reduction block (first, element-wise blocks after it,
    2+ reduced axes) reads its input along the reduced axes: the input's index ends with
    the reduction's iterators in order, none of the spatial ones, so each output's
    elements are one contiguous row."""
    main = infos[0]
    kind = main.dom_kind()
    nr = len(kind) - _leading_s(kind)
    if kind.strip("SR") or "RS" in kind or nr < 2 or any(not bi.is_injective() for bi in infos[1:]):
        return False
    stmt = sch.get(main.block_rv)
    red = [iv.var for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
    spat = [iv.var for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    combine = _combiner(stmt)
    if combine is None:
        return False
    loads = []
    tvm_ffi.structural_walk(combine[1], (tvm.ir.TensorLoad, loads.append))
    if not loads or not all(_row_index(list(ld.indices), red, spat) for ld in loads):
        return False
    return True


def _row_index(idx, red, spat) -> bool:
    """Whether index ``idx`` ends with the reduction iterators ``red`` themselves, in order,
    and no spatial iterator of ``spat`` occurs in those trailing positions."""
    nr = len(red)
    if len(idx) < nr or any(not (isinstance(i, tirx.Var) and i.same_as(v)) for i, v in zip(idx[-nr:], red)):
        return False
    return not any(uses(i, v) for i in idx[-nr:] for v in spat)


def _strided_window(sch, block) -> bool:
    """Whether ``block``, a pooling's reduction with no bounds test (no padding), reads its input
    columns with a stride of 2+ (:func:`_column_stride`; :data:`POOL_STRIDED_ROWS`).

    Vectorised along ``ow`` by TVM, each lane's column is its own address: a 4-lane vector of
    densenet121's 2x2 stride-2 pool on 28-wide rows took 16 scalar loads and inserts per 4
    outputs (the row's 28 admit no 8-lane vector)."""
    stmt = sch.get(block)
    if tests_bounds(stmt):
        return False
    return (_column_stride(sch, block) or 1) >= 2


def _leaf_blocks(sch, loop) -> list:
    """The blocks under ``loop`` that hold no block (``loop_partition`` wraps its parts in blocks)."""
    out, todo = [], list(sch.get_child_blocks(loop))
    while todo:
        blk = todo.pop(0)
        kids = list(sch.get_child_blocks(blk))
        if kids:
            todo.extend(kids)
        else:
            out.append(blk)
    return out


def _leading_s(kind: str) -> int:
    return len(kind) - len(kind.lstrip("S"))


def _vectorize_inner(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = const_extent(sch, loops[-1])
    width = fitting_lanes(ext, lanes) if ext else None
    if width is None:
        # No whole vectors fit (a 10-class softmax row, 197 tokens): leave the loop to
        # LLVM, which vectorises it with its own tail.  A vector of the loop's odd extent
        # failed to build (an allocation inside); a split with a bound check and
        # LoopPartition measured 2x slower than LLVM's loop (1x12x197x197 softmax).
        return
    if ext > width:
        _, inner = sch.split(loops[-1], factors=[None, width])
        sch.vectorize(inner)
    else:
        sch.vectorize(loops[-1])


def _vectorize_row_pass(sch, block, lanes: int, full: int) -> None:
    """Vectorise an element-wise pass along a row (softmax's exp and divide): as
    :func:`_vectorize_inner`, except that a row longer than one ``full`` vector and not
    a whole number of them (1500, 1000, 72) is left to LLVM's loop vectoriser (full
    vectors, its own tail) rather than split into the narrower vectors that divide it.
    Measured (2-core znver5, 2 threads, exp + divide of softmax): [1,6,1500,1500]
    5.1-9.4 -> 3.5-5.6 ms in 4-wide vectors -> LLVM's loop; [256,72] 0.024 -> 0.010 ms."""
    loops = sch.get_loops(block)
    ext = const_extent(sch, loops[-1]) if loops else None
    if ext is not None and ext > full and ext % full:
        return
    _vectorize_inner(sch, block, lanes)


def rfactor_rows(sch, block, lanes: int):
    """Prepare ``block`` (a reduction over the end of each row) to reduce ``lanes``
    elements at a time: split its reduction loop ``[n/lanes, lanes]`` and ``rfactor``
    the inner part, giving a block of ``lanes`` partial results per row (reduced over
    ``n/lanes`` steps) and the original block combining them.  Returns the partials
    block, or None where it does not apply: the reduction must be the block's only
    non-unit reduction, its innermost loop, divisible by ``lanes`` and at least
    ``2*lanes`` long (so the vector pass runs at least twice).  Call at the root,
    before any ``compute_at`` (``rfactor`` needs a complete reduction); then
    :func:`vectorize_partials`.

    A row that is not a multiple of ``lanes`` leaves the split's bound check on the
    partials block as a block predicate, which TVM 0.27's ``compute_at`` drops when
    it moves the block (it then reads past the row): so the check is moved into the
    value (:func:`_guard_partials`: elements past the row combine the reduction's
    identity), before anything moves the block.

    Reorders the sum (``lanes`` interleaved chains), so results differ from the
    serial loop by rounding only.
    """
    loops = sch.get_loops(block)
    stmt = sch.get(block)
    reduce_iters = [iv for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
    if len([iv for iv in reduce_iters if not (isinstance(iv.dom.extent, tirx.IntImm) and int(iv.dom.extent) == 1)]) != 1:
        return None
    ext = const_extent(sch, loops[-1])
    if ext is None or ext < 2 * lanes or not _bound_to(sch, block, loops[-1], tirx.IterVar.CommReduce):
        return None
    if ext % lanes and _combiner(stmt) is None:
        return None
    _, ki = sch.split(loops[-1], factors=[None, lanes])
    rf = sch.rfactor(ki, factor_axis=len(stmt.writes[0].region))
    if ext % lanes:
        _guard_partials(sch, rf)
    return rf


def _combiner(stmt, with_init: bool = True):
    """``(self load, other operand)`` of a reduction block whose update is
    ``buf[i] = max|min|+|*(buf[i], other)`` (either order) with an init (or, with
    ``with_init=False``, the update block :meth:`decompose_reduction` leaves), else None."""
    store = stmt.body
    if not isinstance(store, tirx.BufferStore):
        return None
    if with_init and (stmt.init is None or not isinstance(stmt.init, tirx.BufferStore)):
        return None
    value = store.value
    if not isinstance(value, (tirx.Max, tirx.Min, tirx.Add, tirx.Mul)):
        return None
    for mine, other in ((value.a, value.b), (value.b, value.a)):
        if (isinstance(mine, tvm.ir.TensorLoad) and mine.source.same_as(store.buffer)
                and tvm_ffi.structural_equal(mine.indices, store.indices)):
            return mine, other
    return None


def _guard_partials(sch, rf) -> None:
    """Replace the partials block's predicate (``k0 * lanes + k1 < n``) by a guard on
    its value: ``buf = op(buf, if_then_else(k0 * lanes + k1 < n, other, identity))``,
    the identity being the block's init value.  Raises where the block does not have
    that form (the rule then declines the function)."""
    loops = sch.get_loops(rf)
    loop = sch.get(loops[-1])
    realize, block = loop.body, sch.get(rf)
    if not isinstance(realize, s_tir.SBlockRealize) or not realize.block.same_as(block):
        raise ValueError("partials block not directly under its innermost loop")
    to_block = {}
    for iv, val in zip(block.iter_vars, realize.iter_values):
        if isinstance(val, tvm.ir.Var):
            to_block[val] = iv.var
    used = []
    tvm_ffi.structural_walk(realize.predicate, (tvm.ir.Var, used.append))
    if any(not any(v.same_as(k) for k in to_block) for v in used):
        raise ValueError("partials predicate not over the block's own loops")
    cond = tvm_ffi.structural_map(realize.predicate, (tvm.ir.Var, lambda v: next(
        (b for k, b in to_block.items() if k.same_as(v)), v)))
    mine, other = _combiner(block)
    store = block.body
    guarded = tirx.if_then_else(cond, other, block.init.value)
    value = type(store.value)(mine, guarded)
    new_block = s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint,
                             tirx.BufferStore(store.buffer, value, store.indices), block.init,
                             block.alloc_buffers, block.match_buffers, block.annotations)
    new_loop = tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind,
                        s_tir.SBlockRealize(realize.iter_values, True, new_block), loop.thread_binding,
                        loop.annotations)
    sch.state.replace(sch.get_sref(loops[-1]), new_loop, {block: new_block})


def vectorize_partials(sch, rf, lanes: int) -> None:
    """Schedule a partials block from :func:`rfactor_rows` where it now sits: its
    ``lanes``-wide partial dim innermost and vectorised (one vector load and one
    vector add/max per step, the partials in a register), zero-initialised before
    the reduction loop."""
    loops = sch.get_loops(rf)
    red = [lp for lp in loops if _bound_to(sch, rf, lp, tirx.IterVar.CommReduce)]
    part = [lp for lp in loops if const_extent(sch, lp) == lanes and not _bound_to(sch, rf, lp, tirx.IterVar.CommReduce)
            and _binds_last_write_dim(sch, rf, lp)]
    if len(red) != 1 or len(part) != 1:
        return
    sch.reorder(red[0], part[0])
    sch.vectorize(part[0])
    sch.decompose_reduction(rf, red[0])
    if _is_guarded(sch.get(rf)):
        _split_off_tail(sch, red[0])


def _is_guarded(stmt) -> bool:
    """Whether a partials block's update is the guarded form :func:`_guard_partials` writes."""
    combine = _combiner(stmt, with_init=False)
    return combine is not None and _guarded_operand(combine[1]) is not None


def _guarded_operand(expr):
    """``other`` of ``if_then_else(cond, other, identity)``, else None."""
    if isinstance(expr, tvm.ir.Call) and expr.op.same_as(tvm.ir.Op.get("prim.if_then_else")):
        return expr.args[1]
    return None


def _split_off_tail(sch, red) -> None:
    """Partition the guarded partials loop ``red`` (``ceil(n/lanes)`` steps) into the
    whole vectors (``n // lanes`` steps, the guard dropped: every element it reads is in
    the row) and the last, partial step (guarded; TVM scalarises it).  Before, TVM's
    VectorizeLoop turned the whole loop into scalar code because of the per-lane guard.
    Invariant: the same elements combine into the same partials, in the same order."""
    steps = const_extent(sch, red)
    whole, _ = sch.loop_partition(red, [steps - 1])
    for blk in sch.get_child_blocks(whole):
        _drop_guard(sch, blk)


def _drop_guard(sch, blk) -> None:
    """Replace ``op(buf, if_then_else(cond, other, identity))`` by ``op(buf, other)`` in
    partials block ``blk`` (whose loops keep ``cond`` true)."""
    block = sch.get(blk)
    mine, guarded = _combiner(block, with_init=False)
    store = block.body
    value = type(store.value)(mine, _guarded_operand(guarded))
    new_block = s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint,
                             tirx.BufferStore(store.buffer, value, store.indices), block.init,
                             block.alloc_buffers, block.match_buffers, block.annotations)
    sch.state.replace(sch.get_sref(blk), new_block, {block: new_block})


def _binds_last_write_dim(sch, block, loop) -> bool:
    """Whether ``loop`` drives the last index of ``block``'s output (the partials dim)."""
    stmt = sch.get(block)
    last = stmt.writes[0].region[-1].min
    iters = [iv for iv in stmt.iter_vars if uses(last, iv.var)]
    return len(iters) == 1 and _loop_binds(sch, block, loop, iters[0].var)


def _realize_of(sch, block):
    name = sch.get(block).name_hint
    found = []
    tvm_ffi.structural_walk(
        sch.mod["main"].body, (s_tir.SBlockRealize, lambda r: found.append(r) if r.block.name_hint == name else None)
    )
    return found[0]


def _loop_binds(sch, block, loop, var) -> bool:
    """Whether ``loop``'s variable appears in the binding of block iterator ``var``."""
    realize = _realize_of(sch, block)
    loop_var = sch.get(loop).loop_var
    return any(iv.var.same_as(var) and uses(val, loop_var)
               for iv, val in zip(realize.block.iter_vars, realize.iter_values))


def _bound_to(sch, block, loop, kind) -> bool:
    """Whether ``loop`` drives a block iterator of ``kind`` (e.g. a reduction)."""
    realize = _realize_of(sch, block)
    loop_var = sch.get(loop).loop_var
    return any(iv.iter_type == kind and uses(val, loop_var)
               for iv, val in zip(realize.block.iter_vars, realize.iter_values))


class CpuReduction(ScheduleRule):
    """Parallel rows, vectorised element-wise passes (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        if SEPARABLE_POOL:
            separable = separable_pool.schedule(func)
            if separable is not None:
                return separable
        exps = row_max_exps(func, cpu_shape(target).lanes("float32")) if ROW_MAX_EXP else None
        folds = _folds(func, exps, cpu_shape(target).lanes("float32"))
        sch = s_tir.Schedule(replace_exp(func, exps))
        try_inline_spatial(sch)
        infos = block_infos(sch)
        if infos is None or all(bi.is_injective() for bi in infos):
            return None
        if any(not bi.dom_kind() or bi.dom_kind()[0] != "S" for bi in infos):
            return None
        lanes = full = cpu_shape(target).lanes(str(sch.get(infos[-1].block_rv).writes[0].source.dtype))
        # Narrower vectors where the full width does not divide the output's rows (24, 72).
        row = sch.get(infos[-1].block_rv).writes[0].source.shape[-1]
        if isinstance(row, tirx.IntImm):
            lanes = fitting_lanes(int(row), lanes) or lanes
        reductions = [bi for bi in infos if not bi.is_injective()]
        if len(reductions) == 1 and infos[0] is reductions[0]:
            rows = self._global_rows(sch, infos, lanes, full) if GLOBAL_POOL_ROWS else None
            if rows is not None:
                return rows
            if self._one_reduction(sch, infos, lanes):
                return sch
            return None
        folded = _written_by(sch, folds)
        if not self._rows(sch, infos, lanes, full, folded):
            return None
        if RECIPROCAL_DIVISOR:
            reciprocal_divisor(sch, infos[-1].block_rv)
        sch = scratch_into_output(sch, infos[-1].block_rv)
        if VECTOR_ROW_TAIL:
            for name in _block_names(sch):
                vector_row_tail(sch, sch.get_sblock(name), full)
        fold_sum_into_exp(sch, folds)
        return sch

    @staticmethod
    def _global_rows(sch, infos, lanes: int, full: int):
        """:data:`GLOBAL_POOL_ROWS`: a new schedule where the reduced axes, one contiguous
        row per output (:func:`_reduces_rows`), are one reduction iterator, then scheduled
        as rows: the outputs in parallel, each reducing its row in ``width``-wide vector partials
        (:func:`_rfactor_widest`), combined, then the element-wise blocks for that output;
        None where that does not apply (``sch`` untouched)."""
        if not _reduces_rows(sch, infos):
            return None
        stmt = sch.get(infos[0].block_rv)
        if any(not isinstance(iv.dom.extent, tirx.IntImm) for iv in stmt.iter_vars):
            return None  # a dynamic shape: the channel vectors, as before
        shape = [int(iv.dom.extent) for iv in stmt.iter_vars]
        nr = len(infos[0].dom_kind()) - _leading_s(infos[0].dom_kind())
        if math.prod(shape[-nr:]) < 2 * full:
            return None
        ns = len(shape) - nr

        def fuse(*vs):
            row = vs[ns]
            for v, ext in zip(vs[ns + 1:], shape[ns + 1:]):
                row = row * ext + v
            return list(vs[:ns]) + [row]

        new = sch.copy()
        try:
            new.transform_block_layout(infos[0].block_rv, tirx.IndexMap.from_func(
                fuse, ndim=len(shape), index_dtype=str(stmt.iter_vars[0].dom.extent.ty)))
        except Exception:  # noqa: BLE001 - TVM refused: keep the channel vectors
            return None
        last_name = sch.get(infos[-1].block_rv).name_hint
        try:
            rf, width = _rfactor_widest(new, new.get_sblock(stmt.name_hint), full, lanes)
            if rf is None:
                return None
            last = new.get_sblock(last_name)
            loops = new.get_loops(last)[:ns]  # a lone combine block's last loop reduces the partials
            if not loops:
                return None
            rows = new.fuse(*loops) if len(loops) > 1 else loops[0]
            new.parallel(rows)
            for blk in reversed(new.get_child_blocks(new.get_sblock("root"))):
                if new.get(blk).name_hint != last_name:
                    new.compute_at(blk, rows, preserve_unit_loops=True)
            vectorize_partials(new, new.get_sblock(new.get(rf).name_hint), width)
        except Exception:  # noqa: BLE001 - TVM refused a step: keep the channel vectors
            return None
        return new

    @staticmethod
    def _one_reduction(sch, infos, lanes: int) -> bool:
        """Reduction block first, element-wise epilogue blocks after it."""
        main = infos[0]
        kind = main.dom_kind()
        if kind.strip("SR") or "RS" in kind or any(not bi.is_injective() for bi in infos[1:]):
            return False
        loops = sch.get_loops(main.block_rv)
        ns = _leading_s(kind)
        spatial, reduce = loops[:ns], loops[ns:]
        planes = 1
        for lp in spatial[:-2]:
            planes *= const_extent(sch, lp) or 0
        if (POOL_BORDER_PARTS and len(infos) == 1 and ns >= 3 and planes >= POOL_BORDER_MIN_PLANES
                and (const_extent(sch, spatial[-1]) or 1) % lanes == 0):
            border = _window_border(sch, main.block_rv, lanes)
            if border is not None:
                _border_parts(sch, main.block_rv, spatial, reduce, lanes, border)
                return True
        # Accumulate in a buffer local to the parallel body (so in registers): a
        # parallel loop is outlined into a closure where LLVM no longer knows the
        # output does not alias the input, and would load/store it every step.
        strided = POOL_STRIDED_ROWS and ns >= 3 and _strided_window(sch, main.block_rv)
        wb = sch.cache_write(main.block_rv, 0, "global")
        last = const_extent(sch, spatial[-1])
        if strided:
            # The row of outputs a serial loop around the whole (unrolled) window: LLVM's loop
            # vectoriser reads the stride-2 columns as two contiguous loads and a shuffle.
            par = sch.fuse(*spatial[:-1])
            at = spatial[-1]
            sch.parallel(par)
            sch.reverse_compute_at(wb, at, preserve_unit_loops=True)
            sch.decompose_reduction(main.block_rv, reduce[0])
            for lp in reduce:
                sch.unroll(lp)
            for epi in infos[1:]:
                sch.reverse_compute_at(epi.block_rv, at, preserve_unit_loops=True)
            return True
        if last is not None and last % lanes == 0:
            # Reduce `lanes` neighbouring outputs at once.
            s0, s1 = sch.split(spatial[-1], factors=[None, lanes])
            sch.reorder(*spatial[:-1], s0, *reduce, s1)
            par = sch.fuse(*spatial[:-1], s0) if ns > 1 else s0
            sch.vectorize(s1)  # before decompose: it copies the loop kinds to the init
            at = par
        else:
            par = sch.fuse(*spatial[:-1]) if ns > 2 else spatial[0]
            at = spatial[-1] if ns > 1 else par
        sch.parallel(par)
        sch.reverse_compute_at(wb, at, preserve_unit_loops=True)
        sch.decompose_reduction(main.block_rv, reduce[0])
        _vectorize_inner(sch, wb, lanes)
        for epi in infos[1:]:
            sch.reverse_compute_at(epi.block_rv, at, preserve_unit_loops=True)
            _vectorize_inner(sch, epi.block_rv, lanes)
        return True

    @staticmethod
    def _rows(sch, infos, lanes: int, full: int, folded=()) -> bool:
        """Blocks sharing leading spatial rows, the last one element-wise.  Element-wise
        passes in ``lanes``-wide vectors (a width that divides the row), row reductions
        in ``full``-wide partials where the row holds two (a 1500- or 197-wide row: whole
        vectors plus a guarded last step, :func:`_split_off_tail`), else ``lanes``-wide;
        a reduction reading one of the buffers ``folded`` (softmax's exps, whose sum
        :func:`fold_sum_into_exp` moves into the exp pass) in one chain of partials
        (:data:`FOLDED_SUM_CHAINS`)."""
        if not infos[-1].is_injective():
            return False
        if min(_leading_s(bi.dom_kind()) for bi in infos) == 0:
            return False
        last = infos[-1].block_rv
        lead = _row_loops(sch, infos)
        # Row reductions first become lanes-wide partial sums (their own blocks), while
        # each is still a complete reduction at the root where rfactor is allowed.
        partials = [_rfactor_widest(sch, bi.block_rv, full, lanes,
                                    FOLDED_SUM_CHAINS if _reads_any(sch, bi.block_rv, folded) else PARTIAL_CHAINS)
                    for bi in infos[:-1] if not bi.is_injective()]
        if lead == 0:
            _one_row(sch, partials, lanes)
            return True
        loops = sch.get_loops(last)
        rows = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
        sch.parallel(rows)
        _vectorize_row_pass(sch, last, lanes, full)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        for blk in reversed(blocks):
            if not sch.get(blk).name_hint == sch.get(last).name_hint:
                sch.compute_at(blk, rows, preserve_unit_loops=True)
        rf_names = {sch.get(rf).name_hint: width for rf, width in partials if rf is not None}
        for blk in blocks:
            stmt = sch.get(blk)
            if stmt.name_hint == sch.get(last).name_hint:
                continue
            if stmt.name_hint in rf_names:
                vectorize_partials(sch, blk, rf_names[stmt.name_hint])
            elif all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars):
                _vectorize_row_pass(sch, blk, lanes, full)
        return True


def _written_by(sch, names) -> list:
    """The buffers the blocks named ``names`` write."""
    bufs = []
    for name in names:
        try:
            bufs += [w.source for w in sch.get(sch.get_sblock(name)).writes]
        except Exception:  # noqa: BLE001 -- inlined away: nothing to fold
            pass
    return bufs


def _reads_any(sch, block, bufs) -> bool:
    return any(r.source.same_as(b) for r in sch.get(block).reads for b in bufs)


def _rfactor_widest(sch, block, full: int, lanes: int, chains: int | None = None):
    """``(partials block, width)`` from :func:`rfactor_rows`: ``full`` lanes, with a
    guarded last step where the row is not whole full vectors (197, 1500), unless the
    narrower ``lanes`` (which divide the row) take no more steps than the full vectors
    plus a tail of ``full`` scalar steps (40, 72: 8-wide) or the row is shorter than
    two full vectors (24); ``PARTIAL_CHAINS * full`` lanes over a row of
    :data:`PARTIAL_CHAINS_MIN_VECTORS` full vectors or more; ``(None, 0)`` where none
    applies."""
    chains = PARTIAL_CHAINS if chains is None else chains
    loops = sch.get_loops(block)
    ext = const_extent(sch, loops[-1]) if loops else None
    order = (full, lanes)
    if ext is not None and lanes < full and ext % lanes == 0 and ext // lanes <= ext // full + full:
        order = (lanes, full)
    elif ext is not None and chains > 1 and ext >= PARTIAL_CHAINS_MIN_VECTORS * full:
        order = (chains * full, full, lanes)
    for width in dict.fromkeys(order):
        rf = rfactor_rows(sch, block, width)
        if rf is not None:
            return rf, width
    return None, 0


FOLDED_SUM_CHAINS = 1
"""Chains of partials (as :data:`PARTIAL_CHAINS`) of a softmax's row sum that
:func:`fold_sum_into_exp` moves into the exp pass: there the adds wait on the exps,
and two exps in flight with two accumulators ran out of AVX2's 16 registers."""

PARTIAL_CHAINS = 2
"""Vectors of partials a long row reduces in (:func:`_rfactor_widest`): LLVM splits the
``PARTIAL_CHAINS * full``-wide partials into that many registers, independent add/max
chains, where one chain waited on each add's latency (3-4 cycles)."""

PARTIAL_CHAINS_MIN_VECTORS = 32
"""Full vectors a row holds from which it reduces in :data:`PARTIAL_CHAINS` chains.
Measured (2-core EPYC znver3, AVX2, one thread's CPU time, least of 5-10 rounds in one
process in turns, bench/results/cpu-softmax-exp-2core.md): softmax [1,6,1500,1500]
9.2-9.5 -> 8.6-8.8 ms, [1,12,256,256] 0.378-0.398 -> 0.351-0.360, LayerNorm 1500 x 384
0.243 -> 0.193, 128 x 768 0.039 -> 0.028; slower on shorter rows: ViT's 197 0.260 ->
0.268, BERT's 128 0.096 -> 0.103 (the final combine of twice the partials, scalar)."""

ROW_MAX_EXP = True
"""Whether softmax's ``exp(x - max(row))`` over a ragged row is computed without
``fast_exp``'s overflow handling (:func:`row_max_exps`)."""


def row_max_exps(func: tirx.PrimFunc, full: int):
    """A predicate for :func:`~hetpart.kernels.fast_exp.replace_exp`: True for the ``exp``
    argument ``A[.., j] - M[..]`` of an element-wise block (softmax's exp pass; over rows
    of no whole number of ``full``-lane vectors only, unless :data:`WHOLE_ROW_MAX_EXP`),
    where a block of ``func`` reduces
    ``M[s] = max(M[s], A[s, r])`` over the whole last axis of ``A`` (the row max, as TOPI
    writes it) and the argument reads ``A`` in the row ``M`` is indexed by.

    Such an argument is ``<= 0`` (``a <= max`` of its row, and IEEE subtraction keeps the
    order) or NaN; where a NaN in the row broke the running maximum, the row's sum holds
    ``exp(NaN)`` and every output of the row is NaN with either exp.  Such an exp is
    :func:`~hetpart.kernels.fast_exp._below_max_exp` (14 vector operations; ~32 in
    ``fast_exp``, which clamps at ln(FLT_MAX) and selects +inf past it, for arguments
    that never get there).  Measured (2-core znver3, one thread's CPU time, least of 8
    rounds, bench/results/cpu-softmax-exp-2core.md): [1,12,197,197] 0.386 -> 0.268 ms
    (ORT 0.264), [1,6,1500,1500] 12.7 -> 9.7 (ORT 9.4), and with whole-vector rows
    [1,12,128,128] 0.161 -> 0.100 (ORT 0.117), [1,12,256,256] 0.684 -> 0.398 (ORT 0.402).
    (Over whole vectors ``fast_exp`` less only its overflow handling made LLVM
    re-vectorise TVM's vector loop across iterations, 0.178 -> 0.304 ms: the short
    form does not.)  Not for an exp inside a reduction (log-softmax's sum)."""
    row_max, args = {}, []

    def visit_block(b):
        store = b.body
        if not isinstance(store, tirx.BufferStore):
            return
        if b.init is None:
            n = store.buffer.shape[-1] if store.buffer.shape else None
            if (isinstance(n, tirx.IntImm) and (WHOLE_ROW_MAX_EXP or (int(n) > full and int(n) % full))
                    and all(iv.iter_type == tirx.IterVar.DataPar for iv in b.iter_vars)):
                tvm_ffi.structural_walk(store.value, (tvm.ir.Call, lambda c: args.append(c.args[0])
                                                      if c.op.same_as(tvm.ir.Op.get("tirx.exp")) else None))
            return
        reduce = [iv for iv in b.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
        combine = _combiner(b)
        if len(reduce) != 1 or not isinstance(store.value, tirx.Max) or combine is None \
                or not isinstance(combine[1], tvm.ir.TensorLoad):
            return
        src, idx, r = combine[1].source, list(combine[1].indices), reduce[0]
        if (idx and isinstance(idx[-1], tirx.Var) and idx[-1].same_as(r.var)
                and tvm_ffi.structural_equal(idx[:-1], list(store.indices))
                and isinstance(r.dom.min, tirx.IntImm) and int(r.dom.min) == 0
                and tvm_ffi.structural_equal(r.dom.extent, src.shape[-1])):
            row_max[store.buffer] = src

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit_block))

    def below_row_max(arg) -> bool:
        if not (isinstance(arg, tirx.Sub) and isinstance(arg.a, tvm.ir.TensorLoad)
                and isinstance(arg.b, tvm.ir.TensorLoad)):
            return False
        src = next((a for m, a in row_max.items() if m.same_as(arg.b.source)), None)
        return (src is not None and arg.a.source.same_as(src)
                and tvm_ffi.structural_equal(list(arg.a.indices)[:-1], list(arg.b.indices)))

    def nonpositive(arg) -> bool:
        return any(arg.same_as(a) for a in args) and below_row_max(arg)

    return nonpositive


WHOLE_ROW_MAX_EXP = True
"""Whether :func:`row_max_exps` takes rows of whole vectors too (BERT's 128)."""

VECTOR_ROW_TAIL = True
"""Whether a costly element-wise row pass over a row of no whole number of vectors
computes its last elements as one vector (:func:`~hetpart.kernels.row_tail.vector_row_tail`)."""

FOLD_SUM_INTO_EXP = True
"""Whether softmax's row sum is accumulated in the ``exp`` pass, as it stores the exps
(:func:`~hetpart.kernels.rules.softmax_fold.fold_sum_into_exp`: three passes over a
row, ONNX Runtime's count, where there were four)."""

FOLD_MIN_WHOLE_VECTORS = 32
"""Full vectors a row of whole vectors holds from which its sum is folded into the exp
pass (rows not whole vectors always are).  Measured (2-core znver3, one thread's CPU
time, 6 rounds, bench/results/cpu-softmax-3pass-2core.md): 128-wide rows (BERT, GPT-2,
T5, Llama softmax) 1.01x slower folded (0.0997-0.0999 -> 0.1007-0.1012 ms), 256-wide
0.95x."""


def _folds(func: tirx.PrimFunc, exps, full: int) -> list[str]:
    """Names of the softmax exp blocks of ``func`` whose row sum is to be folded into
    them (:data:`FOLD_SUM_INTO_EXP`, :data:`FOLD_MIN_WHOLE_VECTORS`); ``exps`` the
    :func:`row_max_exps` predicate (None: none)."""
    if not FOLD_SUM_INTO_EXP or exps is None:
        return []
    return row_max_exp_blocks(func, exps, lambda n: n % full != 0 or n >= FOLD_MIN_WHOLE_VECTORS * full)


RECIPROCAL_DIVISOR = True
"""Whether the last pass of a row function divides by a per-row value through its
reciprocal (:func:`reciprocal_divisor`)."""


def reciprocal_divisor(sch, last) -> bool:
    """Rewrite each float ``a / d[row]`` of the element-wise ``last`` block, ``d`` a buffer
    the function allocates (a row reduction's result: softmax's sum of exps) indexed
    without the block's innermost iterator, into ``a * (1 / d[row])``: LLVM hoists the
    one division per row out of the row loop, where it divided every element
    (``vdivps``: a quarter of the multiply's throughput on znver3, an eighth of an
    FMA's).  ONNX Runtime's softmax scales by the reciprocal too.  Returns whether it
    rewrote anything.

    Invariant: each result within 1.5 float32 ulps of the quotient (two roundings
    where there was one); the same zeros, infinities and NaN (``1/0 = inf``,
    ``a * inf`` and ``a / 0`` agree, as do ``inf / inf`` and ``inf * 0``: NaN)."""
    stmt = sch.get(last)
    store = stmt.body
    if not isinstance(store, tirx.BufferStore) or not stmt.iter_vars:
        return False
    inner = stmt.iter_vars[-1].var
    allocated = list(sch.get(sch.get_sblock("root")).alloc_buffers)

    def per_row(d) -> bool:
        return (isinstance(d, tvm.ir.TensorLoad) and any(d.source.same_as(b) for b in allocated)
                and not any(uses(i, inner) for i in d.indices))

    def rewrite(e):
        if isinstance(e, tirx.Div) and str(e.a.ty).startswith("float") and per_row(e.b):
            return e.a * (tirx.const(1.0, str(e.b.ty)) / e.b)
        return e

    value = tvm_ffi.structural_map(store.value, (tirx.Div, rewrite))
    if value.same_as(store.value):
        return False
    new = s_tir.SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint,
                       tirx.BufferStore(store.buffer, value, store.indices), stmt.init,
                       stmt.alloc_buffers, stmt.match_buffers, stmt.annotations)
    sch.state.replace(sch.get_sref(last), new, {stmt: new})
    return True


def scratch_into_output(sch, last):
    """``sch`` with softmax's ``exp`` scratch stored in the output itself, when that is safe.

    After :meth:`CpuReduction._rows` a softmax keeps ``exp(x - max)`` of each row in a
    scratch buffer the size of the output, which TVM compacts to one row *allocated
    inside the parallel row loop*: a row of more than 1 KiB (TVM's stack limit, 256
    floats) is then a ``TVMBackendAllocWorkspace``/``FreeWorkspace`` call pair per row
    (measured 0.74 -> 0.57 ms on ``[1,16,512,512]``, 2 threads).  So, as ONNX Runtime
    does, the row's exps go into the output row and the last pass divides in place.

    Applies when every block sits in one row loop, the last (element-wise) block reads
    a root-allocated buffer of the output's shape and dtype at exactly the indices it
    writes the output, one other block writes that buffer -- per row iteration as many
    elements as the last block writes (compute_at makes it cover what the last block
    reads, so it is then exactly the last block's row; a softmax over a leading axis
    recomputes whole columns per row and is left alone) -- and no block after that one
    reads a parameter of the output's shape and dtype.  Then, per row, every read of
    the scratch happens before the last block overwrites that element (the last block
    reads it in the same statement), and no other row touches it; and an input the
    output may alias (an in-place call reuses one of its shape and dtype) is read,
    element by element, before the output is written there (softmax: the exp reads
    ``x[e]``, then writes ``out[e]``; nothing reads ``x`` after).  Otherwise ``sch``
    is returned unchanged.  The result is no longer a stage pipeline (a block reads and
    writes the output), so this is the last step of the schedule.
    """
    func = sch.mod["main"]
    stmt = sch.get(last)
    store = stmt.body
    if not isinstance(store, tirx.BufferStore) or not isinstance(func.body, s_tir.SBlockRealize):
        return sch
    out, root = store.buffer, func.body.block
    scratch = _elementwise_source(store, root.alloc_buffers)
    if scratch is None or len(_row_loop_children(func)) != 1 or _writers(func, scratch) != 1:
        return sch
    if _reads_alias_after_write(func, scratch, out) or not _same_row_region(sch, func, scratch, last):
        return sch
    body = tvm_ffi.structural_map(root.body, (tvm.ir.Var, lambda v: out if v.same_as(scratch) else v))
    new_root = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body, root.init,
                            [b for b in root.alloc_buffers if not b.same_as(scratch)], root.match_buffers,
                            root.annotations)
    realize = func.body
    return s_tir.Schedule(func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, new_root)))


def _elementwise_source(store, allocated):
    """The root-allocated buffer of ``store``'s shape and dtype that its value reads at
    exactly ``store``'s indices (and nowhere else), or None."""
    out = store.buffer
    loads = []
    tvm_ffi.structural_walk(store.value, (tvm.ir.TensorLoad, loads.append))
    for buf in allocated:
        mine = [ld for ld in loads if ld.source.same_as(buf)]
        if (mine and str(buf.dtype) == str(out.dtype)
                and all(tvm_ffi.structural_equal(ld.indices, store.indices) for ld in mine)
                and tvm_ffi.structural_equal(list(buf.shape), list(out.shape))):
            return buf
    return None


def _reads_alias_after_write(func, scratch, out) -> bool:
    """Whether a block after the one writing ``scratch`` reads a parameter that ``out``
    could alias (same shape and dtype: what an in-place call reuses)."""
    blocks = []
    tvm_ffi.structural_walk(func.body.block.body, (s_tir.SBlock, blocks.append), order="pre")
    first = next(i for i, b in enumerate(blocks) if any(w.source.same_as(scratch) for w in b.writes))
    aliases = [p for p in func.params if not p.same_as(out) and str(p.dtype) == str(out.dtype)
               and tvm_ffi.structural_equal(list(p.shape), list(out.shape))]
    return any(r.source.same_as(p) for b in blocks[first + 1:] for r in b.reads for p in aliases)


def _same_row_region(sch, func, scratch, last) -> bool:
    """Whether the block writing ``scratch`` and ``last`` sit in the same outer (row)
    loop and write as many elements per iteration of it."""
    writers = []
    tvm_ffi.structural_walk(func.body.block.body, (s_tir.SBlock, lambda b: writers.append(b)
                                                   if any(w.source.same_as(scratch) for w in b.writes) else None))
    writer = sch.get_sblock(writers[0].name_hint)
    w_loops, l_loops = sch.get_loops(writer), sch.get_loops(last)
    if not w_loops or not l_loops or not sch.get(w_loops[0]).same_as(sch.get(l_loops[0])):
        return False
    sizes = []
    for loops in (w_loops[1:], l_loops[1:]):
        extents = [const_extent(sch, lp) for lp in loops]
        if any(e is None for e in extents):
            return False
        size = 1
        for e in extents:
            size *= e
        sizes.append(size)
    return sizes[0] == sizes[1]


def _row_loop_children(func):
    """The statements directly under the root block (one: the parallel row loop)."""
    body = func.body.block.body
    return list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]


def _block_names(sch) -> list[str]:
    """Names of the blocks of ``sch``'s function, the root's aside."""
    names = []
    tvm_ffi.structural_walk(sch.mod["main"].body.block.body, (s_tir.SBlock, lambda b: names.append(b.name_hint)))
    return names


def _writers(func, buf) -> int:
    """How many blocks write ``buf``."""
    found = []
    tvm_ffi.structural_walk(func.body.block.body, (s_tir.SBlock, lambda b: found.append(b)
                                                   if any(w.source.same_as(buf) for w in b.writes) else None))
    return len(found)


def _row_loops(sch, infos) -> int:
    """How many of the last (element-wise) block's loops run over rows: its loops less
    the axes the reductions reduce.  0 for a single row (a softmax over ``[1, N]``),
    where the normal form drops the unit row loop and every loop the last block has
    runs along the row: making it the parallel "row" loop and computing the row
    reductions inside it would put them (and their buffers) inside a vectorised loop,
    which TVM refuses ("VectorizeLoop before LiftStorageAlloc")."""
    reduced = max(len(bi.dom_kind()) - _leading_s(bi.dom_kind()) for bi in infos if not bi.is_injective())
    return max(len(sch.get_loops(infos[-1].block_rv)) - reduced, 0)


def _one_row(sch, partials, lanes: int) -> None:
    """A single row: every block stays at the root, one pass over the row each; the
    element-wise passes vectorised, the row reductions as lanes-wide partials."""
    rf_names = {sch.get(rf).name_hint: width for rf, width in partials if rf is not None}
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(blk)
        if stmt.name_hint in rf_names:
            vectorize_partials(sch, blk, rf_names[stmt.name_hint])
        elif all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars):
            _vectorize_inner(sch, blk, lanes)
