"""The ragged last row tile of a register tile as a branch of its own, without the
bound check every tile carried.

A register tile of ``R`` rows over a row extent ``E`` that ``R`` does not divide (a
7-wide image in tiles of 4 rows on AVX2) gets from ``split`` a last tile that runs
past ``E``, and every block of the tile -- the accumulator's init, the
multiply-accumulate, the write-back -- a bound check on the row,
``T.where(base + r < E)`` (``base`` the tile's first row, ``r`` the unrolled row
loop).  The check is loop-invariant, yet LLVM did not always unswitch it: in
mobilenet_v2's 320->1280 1x1 conv on 7x7 (AVX2) the checked row's accumulators were
kept on the stack, every reduction step loading and storing them behind a branch.

:func:`split_ragged_rows` rewrites the tile loop's body as::

    if base + R <= E:  every block as before, the row check dropped
    else:              a copy of the body, ``base`` replaced by the last tile's first
                       row (a constant), so each check folds to true or false

In: a schedule whose tile loop holds the init, update and write-back blocks of one
register tile.  Out: the same schedule, changed in place, or unchanged (False) where
the three blocks' checks are not of that form.  Invariant: every block runs for the
same iterations as before, in the same order (results bit-identical).
"""

from __future__ import annotations

import tvm
import tvm.sym
import tvm_ffi
from tvm import s_tir, tirx

from .tir_expr import conjuncts, fresh_copy, uses

SPLIT_RAGGED_ROWS = True
"""Whether a tile whose rows do not divide their extent gets its ragged last tile as a
branch of its own (:func:`split_ragged_rows`, where :func:`applies`; False: every tile
bound-checked as before, kept for A/B runs: tools/kernel_switch_ab.py)."""




def _row_check(cond, loops: dict, rows: int, extent: int):
    """``(row_loop_var, base)`` where ``cond`` is ``base + r < extent`` with ``r`` a loop
    of ``rows`` iterations in ``loops`` (var -> extent) and ``base`` free of ``r``, else None."""
    if not (isinstance(cond, tirx.LT) and isinstance(cond.b, tirx.IntImm) and int(cond.b) == extent):
        return None
    for var, ext in loops.items():
        if ext != rows or not uses(cond.a, var):
            continue
        coef = tvm.sym.detect_linear_equation(cond.a, [var])
        if len(coef) == 2 and isinstance(coef[0], tirx.IntImm) and int(coef[0]) == 1 and not uses(coef[1], var):
            return var, coef[1]
    return None


def _splits(value, row) -> bool:
    """Whether binding ``value`` is ``row // d`` or ``row % d`` (a tile of a fused plane's pixels,
    :data:`hetpart.kernels.rules.cpu_blocked_conv.PLANE_1X1`: the pixel's image row and column)."""
    return isinstance(value, (tirx.FloorDiv, tirx.FloorMod)) and tvm_ffi.structural_equal(value.a, row)


def _drop_check(realize, loops: dict, rows: int, extent: int):
    """``(realize without its row check, base)``, or None where it has no row check
    ``base + r < extent`` bounding one of its bindings."""
    kept, base = [], None
    values = list(realize.iter_values)
    for cond in conjuncts(realize.predicate):
        hit = _row_check(cond, loops, rows, extent) if base is None else None
        if hit is None or not any(tvm_ffi.structural_equal(v, cond.a) or _splits(v, cond.a) for v in values):
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
    ``reduction_loops`` loops (of more than one step) is split: two tiles, the second
    ragged (``rows < extent < 2 * rows``), over one reduction loop (a 1x1 conv, a
    matmul); or any tiles over two (a one-dimensional window, :data:`SPLIT_LINE_WINDOWS`).

    Measured (2-core EPYC znver3, AVX2, 1 thread, CPU time, each kernel alone before
    and after in one process in turns, least of 20 calls x 5 rounds, ms;
    bench/results/cpu-convnets2-2core.md): mobilenet_v2's 1x1 convs on 7x7 (4 + 3
    rows) 320->1280 + ReLU6 1.19 -> 0.69, 160->960 + ReLU6 0.47 -> 0.21 (ONNX Runtime
    0.47, 0.20); EfficientNet's 1x1 + SiLU on 7x7 0.53 -> 0.36, 1.05 -> 0.82;
    MobileNetV3's 160->960 + hard-swish on 7x7 a tie (0.204 / 0.206: LLVM had
    unswitched the check there).  Any ragged tile (not taken beyond those): inception's
    1x7 on 17x17 1.28 -> 0.88 and 2.90 -> 1.98, but its 80->192 3x3 on 73x73 15.4 -> 45.2,
    64->80 1x1 0.84 -> 1.03, ViT's 197-token projection 7.35 -> 7.80; 1x1 convs on
    14x14 a tie.  With AVX-512 (8 rows) 7- and 14-wide tiles are exact: nothing of
    mobilenet_v2, resnet50, densenet121, EfficientNet, MobileNetV3 or convnext
    changes there."""
    if not SPLIT_RAGGED_ROWS:
        return False
    if reduction_loops == 2 and SPLIT_LINE_WINDOWS:
        return True
    return reduction_loops <= 1 and rows < extent < 2 * rows


SPLIT_LINE_WINDOWS = True
"""Whether a tile over a two-loop reduction (input channels and a one-dimensional window:
inception's 1x7 and 7x1 convs) is split whatever its tile count (False: only the two-tile
one-loop case, kept for A/B runs).  Measured as :func:`applies`: inception's 1x7 128->128
on 17x17 1.280 -> 0.875 ms, 192->192 2.870 -> 1.969, 7x1 128->192 1.083 -> 1.051, 192->192
1.673 -> 1.585; no kernel of mobilenet_v2, resnet50, densenet121, EfficientNet,
MobileNetV3 or convnext has such a reduction (unchanged on both widths)."""


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

    ragged = fresh_copy(tvm_ffi.structural_map(loop.body, (s_tir.SBlockRealize, fixed)), "_ragged")
    cond = tirx.LE(base + tirx.IntImm(base.ty, rows), tirx.IntImm(base.ty, extent))
    new_loop = tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, tirx.IfThenElse(cond, whole, ragged),
                        loop.thread_binding, loop.annotations)
    reuse = {}
    tvm_ffi.structural_walk(loop, (s_tir.SBlock, lambda b: reuse.__setitem__(b, b)))
    sch.state.replace(sch.get_sref(tile), new_loop, reuse)
    return True
