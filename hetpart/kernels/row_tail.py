"""The ragged end of a costly element-wise row pass computed as one whole vector.

A row pass over ``n`` elements that is no whole number of ``lanes`` vectors (softmax's
``exp`` over ViT's 197 tokens: 24 vectors of 8 and 5 left) is LLVM's loop: whole
vectors, then the ``n % lanes`` left one at a time -- five scalar ``exp``\\ s per row,
a fifth of the softmax's time (1x12x197x197 took 0.49 ms on one thread, 1x12x197x200
0.39).  TVM cannot vectorise the tail either (a per-lane bound check: scalar code).

:func:`vector_row_tail` rewrites the pass's innermost loop into::

    for j in range(n - n % lanes):            # whole vectors (LLVM's loop, no remainder)
        out[.., j] = f(.., j)
    with block (tmp[lanes] allocated here):   # per row
        for l in vectorized(lanes):           # the last `lanes` elements of the row
            tmp[l] = f(.., n - lanes + l)
        for t in range(n % lanes):            # only the tail's lanes are stored
            out[.., n - n % lanes + t] = tmp[lanes - n % lanes + t]

The vector reads ``lanes - n % lanes`` elements that the whole vectors already
covered, all inside the row; their results are dropped, so a pass that runs in place
(softmax's divide, or an output the caller aliases to the input) loses nothing: each
element the tail stores was computed from what the row held before the pass wrote it.

In: a schedule and a block directly under its innermost loop.  Out: the schedule,
changed in place, or unchanged where the block is not such a pass.  Invariant: every
output element is computed by the same expression of the same inputs as before.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from .analysis import const_extent
from .tir_expr import substitute, uses

COSTLY_NODES = 32
"""Expression nodes from which a row pass's element is worth a vector for its tail
(``fast_exp``: ~150; softmax's divide, a copy: a handful, left alone)."""



def _nodes(expr) -> int:
    count = [0]
    tvm_ffi.structural_walk(expr, (tvm.ir.Expr, lambda _: count.__setitem__(0, count[0] + 1)))
    return count[0]



def _fresh_lets(expr):
    """``expr`` with the variables bound by its ``Let`` nodes renamed (fast_exp binds its
    argument): a copy beside the original must not define them again."""
    bound = []
    tvm_ffi.structural_walk(expr, (tirx.Let, lambda e: bound.append(e.var)))
    return substitute(expr, [(v, tirx.Var(v.name + "_t", v.ty)) for v in bound])


def _row_dim_only_last(value, var) -> bool:
    """Whether every load of ``value`` that mentions ``var`` does so as exactly its last index."""
    loads = []
    tvm_ffi.structural_walk(value, (tvm.ir.TensorLoad, loads.append))
    for ld in loads:
        idx = list(ld.indices)
        if any(uses(e, var) for e in idx[:-1]):
            return False
        if idx and uses(idx[-1], var) and not (isinstance(idx[-1], tirx.Var) and idx[-1].same_as(var)):
            return False
    return True


def _region(buf, indices):
    return tirx.BufferRegion(buf, [tvm.ir.Range.from_min_extent(i, tirx.IntImm(i.ty, 1)) for i in indices])


def _fresh_iters(block, last, last_extent: int):
    """Fresh copies of ``block``'s iterators (``last``'s over ``[0, last_extent)``) and
    the ``(old var, new var)`` pairs."""
    iters, pairs = [], []
    for iv in block.iter_vars:
        var = tirx.Var(iv.var.name + "_t", iv.var.ty)
        dom = tvm.ir.Range.from_min_extent(tirx.IntImm(iv.var.ty, 0), tirx.IntImm(iv.var.ty, last_extent)) \
            if iv.var.same_as(last) else iv.dom
        iters.append(tirx.IterVar(dom, var, iv.iter_type))
        pairs.append((iv.var, var))
    return iters, pairs


def vector_row_tail(sch: s_tir.Schedule, block, lanes: int) -> bool:
    """Rewrite ``block``'s innermost loop as the module docstring shows.  Applies where
    that loop is serial over a constant ``n`` with ``lanes < n``, ``n % lanes != 0``;
    the block is element-wise (data-parallel iterators), directly under it, its one
    store's last index exactly the iterator the loop binds (bare), which no other
    index and no load but as its last index mentions; its value at least
    :data:`COSTLY_NODES` nodes.  Returns whether it rewrote."""
    loops = sch.get_loops(block)
    if len(loops) < 2:
        return False
    loop = sch.get(loops[-1])
    n = const_extent(sch, loops[-1])
    realize = loop.body
    if (n is None or n <= lanes or n % lanes == 0 or loop.kind != tirx.ForKind.SERIAL
            or not isinstance(realize, s_tir.SBlockRealize) or not isinstance(loop.min, tirx.IntImm)
            or int(loop.min) != 0):
        return False
    stmt = realize.block
    store = stmt.body
    if (not isinstance(store, tirx.BufferStore) or stmt.init is not None or stmt.alloc_buffers
            or any(iv.iter_type != tirx.IterVar.DataPar for iv in stmt.iter_vars)):
        return False
    bound = [(iv, val) for iv, val in zip(stmt.iter_vars, realize.iter_values) if uses(val, loop.loop_var)]
    if len(bound) != 1 or not (isinstance(bound[0][1], tirx.Var) and bound[0][1].same_as(loop.loop_var)):
        return False
    last = bound[0][0].var
    idx = list(store.indices)
    if (not idx or not (isinstance(idx[-1], tirx.Var) and idx[-1].same_as(last))
            or any(uses(e, last) for e in idx[:-1]) or not _row_dim_only_last(store.value, last)
            or _nodes(store.value) < COSTLY_NODES):
        return False
    ty = loop.loop_var.ty
    whole, rest = n - n % lanes, n % lanes

    def const(v):
        return tirx.IntImm(ty, v)

    main = tirx.For(loop.loop_var, loop.min, const(whole), loop.kind, realize, loop.thread_binding, loop.annotations)
    tmp = tirx.decl_buffer([*store.buffer.shape[:-1], tirx.IntImm(store.buffer.shape[-1].ty, lanes)],
                           str(store.value.ty), stmt.name_hint + "_row_tail")

    # tmp[.., l] = f(.., n - lanes + l), vectorised
    iters, pairs = _fresh_iters(stmt, last, lanes)
    new_last = next(v for old, v in pairs if old.same_as(last))
    shifted = [(old, new + const(n - lanes)) if old.same_as(last) else (old, new) for old, new in pairs]
    t_idx = [substitute(e, pairs) for e in idx]
    value = substitute(_fresh_lets(store.value), shifted)
    vec_block = s_tir.SBlock(iters, [substitute(r, shifted) for r in stmt.reads], [_region(tmp, t_idx)],
                             stmt.name_hint + "_row_tail", tirx.BufferStore(tmp, value, t_idx))
    lane = tirx.Var("lane", ty)
    values = [lane if iv.same_as(bound[0][0]) else val for iv, val in zip(stmt.iter_vars, realize.iter_values)]
    vec_loop = tirx.For(lane, const(0), const(lanes), tirx.ForKind.VECTORIZED,
                        s_tir.SBlockRealize(values, realize.predicate, vec_block))

    # out[.., whole + t] = tmp[.., lanes - rest + t]
    iters, pairs = _fresh_iters(stmt, last, rest)
    new_last = next(v for old, v in pairs if old.same_as(last))
    o_idx = [substitute(e, pairs) for e in idx[:-1]] + [new_last + const(whole)]
    s_idx = [substitute(e, pairs) for e in idx[:-1]] + [new_last + const(lanes - rest)]
    copy_block = s_tir.SBlock(iters, [_region(tmp, s_idx)], [_region(store.buffer, o_idx)],
                              stmt.name_hint + "_row_tail_store",
                              tirx.BufferStore(store.buffer, tirx.BufferLoad(tmp, s_idx), o_idx))
    t = tirx.Var("t", ty)
    values = [t if iv.same_as(bound[0][0]) else val for iv, val in zip(stmt.iter_vars, realize.iter_values)]
    copy_loop = tirx.For(t, const(0), const(rest), tirx.ForKind.SERIAL,
                         s_tir.SBlockRealize(values, realize.predicate, copy_block))

    tail = s_tir.SBlock([], [], [], stmt.name_hint + "_row_tail_scope", tirx.SeqStmt([vec_loop, copy_loop]),
                        None, [tmp])
    tail_realize = s_tir.SBlockRealize([], tirx.const(True, "bool"), tail)
    parent = sch.get(loops[-2])
    body = tirx.SeqStmt([main, tail_realize])
    if isinstance(parent.body, tirx.SeqStmt):
        seq = [body if s.same_as(loop) else s for s in parent.body.seq]
        body = tirx.SeqStmt(seq)
    elif not parent.body.same_as(loop):
        return False
    new_parent = tirx.For(parent.loop_var, parent.min, parent.extent, parent.kind, body, parent.thread_binding,
                          parent.annotations)
    sch.state.replace(sch.get_sref(loops[-2]), new_parent, {stmt: stmt})
    return True
