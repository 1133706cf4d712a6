"""The ragged last row tile of a register tile, shifted back instead of bound-checked.

A register tile of ``R`` rows over a row extent ``E`` that ``R`` does not divide (a
7-wide image in tiles of 4 rows, 14 in tiles of 5, ViT's 197 tokens in tiles of 8)
gets from ``split`` a last tile that runs past ``E``, and every block of the tile --
the accumulator's init, the multiply-accumulate, the write-back -- a bound check on
the row, ``T.where(base + r < E)`` (``base`` the tile's first row, ``r`` the unrolled
row loop).  The check is on a loop-invariant value, but LLVM neither unswitches nor
if-converts it: the checked rows' accumulators were kept in memory, each reduction
step loading and storing them behind a branch (1x1 conv 320->1280 on 7x7, AVX2: 32
FMAs per 4 steps beside 8 stack stores and reloads and 4 branches).

:func:`shift_ragged_rows` instead starts every tile at ``min(base, E - R)``: the last
tile covers the last ``R`` rows, the ones before it already computed by the previous
tile again (same sum, same order: the same values), and no block keeps a check on
the row.  Overlapping tiles write equal values to the same outputs; the accumulator
is local to each tile (``CompactBufferAllocation`` allocates it in the tile's loop
body), so no tile reads another's.

In: a schedule whose tile loop holds the init, update and write-back blocks of one
register tile.  Out: the same schedule, the three blocks' row bindings shifted and
their row checks dropped, or unchanged (False) where a block's check is not of that
form.  Invariant: every output element gets the value the unshifted schedule gives it.
"""

from __future__ import annotations

import tvm
import tvm.sym
import tvm_ffi
from tvm import s_tir, tirx

from .ragged_copy import _fresh

SPLIT_RAGGED_ROWS = True
"""Whether a tile whose rows do not divide their extent shifts its last tile back
(:func:`shift_ragged_rows`; False: the bound-checked last tile as before, kept for A/B
runs and :mod:`tools.rule_switch_tir_diff`)."""


def _conjuncts(expr) -> list:
    if isinstance(expr, tirx.And):
        return _conjuncts(expr.a) + _conjuncts(expr.b)
    return [expr]


def _uses(expr, var) -> bool:
    found = []
    tvm_ffi.structural_walk(expr, (tirx.Var, lambda v: found.append(v) if v.same_as(var) else None))
    return bool(found)


def _row_check(cond, loops: dict, rows: int, extent: int):
    """``(row_loop_var, base)`` where ``cond`` is ``base + r < extent`` with ``r`` a loop
    of ``rows`` iterations in ``loops`` (var -> extent) and ``base`` free of ``r``, else None."""
    if not (isinstance(cond, tirx.LT) and isinstance(cond.b, tirx.IntImm) and int(cond.b) == extent):
        return None
    for var, ext in loops.items():
        if ext != rows or not _uses(cond.a, var):
            continue
        coef = tvm.sym.detect_linear_equation(cond.a, [var])
        if len(coef) == 2 and isinstance(coef[0], tirx.IntImm) and int(coef[0]) == 1 and not _uses(coef[1], var):
            return var, coef[1]
    return None


def _drop_check(realize, loops: dict, rows: int, extent: int):
    """``(realize without its row check, base)``, or None where it has no row check
    ``base + r < extent`` bounding one of its bindings."""
    kept, base = [], None
    values = list(realize.iter_values)
    for cond in _conjuncts(realize.predicate):
        hit = _row_check(cond, loops, rows, extent) if base is None else None
        if hit is None or not any(tvm_ffi.structural_equal(v, cond.a) for v in values):
            kept.append(cond)
            continue
        base = hit[1]
    if base is None:
        return None
    predicate = kept[0] if kept else tirx.const(True, "bool")
    for cond in kept[1:]:
        predicate = tirx.And(predicate, cond)
    return s_tir.SBlockRealize(values, predicate, realize.block), base


def _with_base(realize, base, value: int):
    """``realize`` with every occurrence of the expression ``base`` in its bindings and
    predicate replaced by the constant ``value`` (the ragged tile's first row)."""
    const = tirx.IntImm(base.ty, value)

    def swap(e):
        return const if tvm_ffi.structural_equal(e, base) else e
    kind = type(base)
    values = [tvm_ffi.structural_map(v, (kind, swap)) for v in realize.iter_values]
    return s_tir.SBlockRealize(values, tvm_ffi.structural_map(realize.predicate, (kind, swap)), realize.block)


def applies(rows: int, extent: int, reduction_loops: int) -> bool:
    """Whether a tile of ``rows`` rows over ``extent`` with a reduction of
    ``reduction_loops`` loops (longer than 1) is split (:func:`split_ragged_rows`):
    two tiles, the second ragged (``rows < extent < 2 * rows``), over one reduction
    loop (a 1x1 conv, a matmul).  (Measurements: bench/results/cpu-convnets2-2core.md.)"""
    return SPLIT_RAGGED_ROWS and reduction_loops <= 1 and rows < extent < 2 * rows


def split_ragged_rows(sch: s_tir.Schedule, tile, blocks, rows: int, extent: int) -> bool:
    """Split the body of ``tile`` (the tile loop) into the whole tiles, unchecked, and
    the ragged last one, its first row a constant (module docstring): ``blocks`` are the
    tile's init, update and write-back blocks, tiled ``rows`` rows over a row extent
    ``extent`` that ``rows`` does not divide.  Returns whether it did (the caller
    decides where, :func:`applies`); all three blocks must carry the same row check."""
    if rows < 2 or extent % rows == 0 or extent < rows:
        return False
    loop = sch.get(tile)
    names = {sch.get(b).name_hint for b in blocks}
    loops: dict = {}
    tvm_ffi.structural_walk(loop.body, (tirx.For, lambda f: loops.__setitem__(
        f.loop_var, int(f.extent) if isinstance(f.extent, tirx.IntImm) else -1)))
    bases, seen = [], []

    def unchecked(realize):
        if realize.block.name_hint not in names:
            return realize
        hit = _drop_check(realize, loops, rows, extent)
        if hit is None:
            return realize
        seen.append(realize.block.name_hint)
        bases.append(hit[1])
        return hit[0]

    whole = tvm_ffi.structural_map(loop.body, (s_tir.SBlockRealize, unchecked))
    if sorted(seen) != sorted(names) or any(not tvm_ffi.structural_equal(b, bases[0]) for b in bases):
        return False  # all or none, on one base: else a block would see another row range
    base, last = bases[0], (extent // rows) * rows

    def fixed(realize):
        return _with_base(realize, base, last) if realize.block.name_hint in names else realize

    ragged = _fresh(tvm_ffi.structural_map(loop.body, (s_tir.SBlockRealize, fixed)), "_ragged")
    cond = tirx.LE(base + tirx.IntImm(base.ty, rows), tirx.IntImm(base.ty, extent))
    new_loop = tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, tirx.IfThenElse(cond, whole, ragged),
                        loop.thread_binding, loop.annotations)
    reuse = {}
    tvm_ffi.structural_walk(loop, (s_tir.SBlock, lambda b: reuse.__setitem__(b, b)))
    sch.state.replace(sch.get_sref(tile), new_loop, reuse)
    return True
