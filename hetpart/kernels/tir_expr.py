"""Small questions and rewrites of TIR expressions and statements, shared by the passes
that edit a scheduled function's loops by hand (:mod:`.ragged_copy`, :mod:`.ragged_rows`,
:mod:`.row_tail`).

In: TIR nodes (expressions, statements, loop nests).  Out: answers, or new nodes -- the
inputs are never changed (TIR nodes are immutable; every rewrite is a structural map).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx


def conjuncts(expr) -> list:
    """The terms of ``a && b && ...`` (``[expr]`` when it is no conjunction)."""
    if isinstance(expr, tirx.And):
        return conjuncts(expr.a) + conjuncts(expr.b)
    return [expr]


def uses(expr, var) -> bool:
    """Whether ``var`` occurs in ``expr``."""
    found = []
    tvm_ffi.structural_walk(expr, (tirx.Var, lambda v: found.append(v) if v.same_as(var) else None))
    return bool(found)


def variables(expr) -> list:
    """Every variable occurrence in ``expr``, in walk order (repeats kept)."""
    found = []
    tvm_ffi.structural_walk(expr, (tirx.Var, found.append))
    return found


def substitute(node, mapping: list):
    """``node`` with each var of ``mapping`` (pairs ``(var, expr)``) replaced."""
    def swap(v):
        return next((e for k, e in mapping if v.same_as(k)), v)
    return tvm_ffi.structural_map(node, (tvm.ir.Var, swap))


def fresh_copy(nest, suffix: str):
    """``nest`` with every loop and block variable it defines renamed (new vars), and
    every block renamed ``<name><suffix>``: a second copy TIR accepts beside the first."""
    defined = []
    tvm_ffi.structural_walk(nest, (tirx.For, lambda f: defined.append(f.loop_var)))
    tvm_ffi.structural_walk(nest, (s_tir.SBlock, lambda b: defined.extend(iv.var for iv in b.iter_vars)))
    renamed = substitute(nest, [(v, tirx.Var(v.name + suffix, v.ty)) for v in defined])

    def rename(b):
        return s_tir.SBlock(b.iter_vars, b.reads, b.writes, b.name_hint + suffix, b.body, b.init,
                            b.alloc_buffers, b.match_buffers, b.annotations)
    return tvm_ffi.structural_map(renamed, (s_tir.SBlock, rename))
