"""Whole vectors for a padded tile's copy-back, a bound check only on the ragged panel.

A MAC padded to whole vectors (:func:`hetpart.kernels.rules.cpu_matmul._pad_ragged_vector`:
ViT's attention scores over 197 tokens, computed 208 wide) copies each tile back into the
unpadded output under a bound check on the column (``T.where(p*16 + x < 197)``, ``p``
the tile's panel, ``x`` the lane), and TVM's VectorizeLoop turns a loop whose body is
predicated per lane into scalar code: every tile's copy-back became a scalar loop,
although only the last panel's needs the check.  TVM 0.27's ``loop_partition`` cannot
split the tile loop (it holds several blocks: a segfault), and two copy-back blocks
writing one output are no longer "complete" blocks ``reverse_compute_at`` accepts.

:func:`split_ragged_copy_back` therefore rewrites the copy-back's loop nest under the
tile, as the last step of the schedule, into::

    if <the panel's last lane is in bounds>:   # every panel but the last
        copy-back, column check dropped, vectorised
    else:
        copy-back as before (bound-checked, scalar)

In: a schedule and the copy-back block (already computed in the tile).  Out: the same
schedule, changed in place, or unchanged where the copy-back's bound check is not of
that form.  Invariant: every output element is written with the same value from the
same source element as before; the vectorised branch runs only where the dropped
check holds on every lane (the checked index is increasing in the lane, so the last
lane bounds them all).
"""

from __future__ import annotations

import tvm
import tvm.sym
from tvm import s_tir, tirx

from .analysis import const_extent
from .tir_expr import conjuncts, fresh_copy, substitute, uses, variables

UNROLL_MAX = 16
"""Outer copy-back loops up to this extent are unrolled in the vectorised branch
(the tile's rows: 6 with AVX2, 8 with AVX-512)."""






def _lane_guard(cond, lane, last: int):
    """``cond`` at the last lane (``lane := last``) where ``cond`` is ``a < b`` with
    ``a`` increasing in ``lane`` (coefficient > 0) and ``b`` free of it, else None."""
    if not isinstance(cond, tirx.LT) or uses(cond.b, lane):
        return None
    coef = tvm.sym.detect_linear_equation(cond.a, [lane])
    if len(coef) != 2 or not isinstance(coef[0], tirx.IntImm) or int(coef[0]) <= 0:
        return None
    return substitute(cond, [(lane, tirx.IntImm(lane.ty, last))])



def _nest(loop):
    """``(loops, realize)`` of a perfect loop nest from ``loop`` down to one block, or None."""
    loops, node = [], loop
    while isinstance(node, tirx.For):
        loops.append(node)
        node = node.body
    return (loops, node) if isinstance(node, s_tir.SBlockRealize) else None


def _rebuild(loops, realize, predicate, kinds):
    body = s_tir.SBlockRealize(realize.iter_values, predicate, realize.block)
    for lp, kind in reversed(list(zip(loops, kinds))):
        body = tirx.For(lp.loop_var, lp.min, lp.extent, kind, body, lp.thread_binding, lp.annotations)
    return body


def split_ragged_copy_back(sch: s_tir.Schedule, block) -> bool:
    """Split ``block``'s loop nest under its outermost loop (the tile) into a vectorised
    branch without the lane's bound check and the checked branch (module docstring).
    Returns whether it did; a nest of another shape (not perfect, no check on the
    innermost loop's lane, or a check not of the ``increasing < bound`` form) is left
    as it was."""
    loops = sch.get_loops(block)
    if len(loops) < 2:
        return False
    nest = _nest(sch.get(loops[1]))
    if nest is None:
        return False
    inner, realize = nest
    lane = inner[-1].loop_var
    last = const_extent(sch, loops[-1])
    if last is None or last < 2:
        return False
    kept, guards = [], []
    for cond in conjuncts(realize.predicate):
        if not uses(cond, lane):
            kept.append(cond)
            continue
        guard = _lane_guard(cond, lane, last - 1)
        if guard is None:
            return False
        guards.append(guard)
    own = [lp.loop_var for lp in inner]
    if not guards or any(any(v.same_as(o) for o in own) for g in guards for v in variables(g)):
        return False  # no check on the lane, or one that depends on the nest's own loops
    predicate = kept[0] if kept else tirx.const(True, "bool")
    for cond in kept[1:]:
        predicate = tirx.And(predicate, cond)
    kinds = [tirx.ForKind.UNROLLED if (int(lp.extent) <= UNROLL_MAX and int(lp.extent) > 1) else lp.kind
             for lp in inner[:-1]] + [tirx.ForKind.VECTORIZED]
    whole = _rebuild(inner, realize, predicate, kinds)
    ragged = fresh_copy(sch.get(loops[1]), "_ragged")
    cond = guards[0]
    for g in guards[1:]:
        cond = tirx.And(cond, g)
    unit = tirx.Var("ragged_panel", inner[0].loop_var.ty)
    split = tirx.For(unit, tirx.IntImm(unit.ty, 0), tirx.IntImm(unit.ty, 1), tirx.ForKind.SERIAL,
                     tirx.IfThenElse(cond, whole, ragged))
    sch.state.replace(sch.get_sref(loops[1]), split, {realize.block: realize.block})
    return True
