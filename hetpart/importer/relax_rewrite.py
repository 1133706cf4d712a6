"""The one driver of the importer's Relax rewrites (fast_erf, nan_semantics, ...), and the use
count the pattern rewrites check before they fuse.

In: an ``IRModule`` and a ``relax.PyExprMutator`` built on it.  Out: the module with
every Relax function visited by the mutator (PrimFuncs it emits added, the others kept).
:func:`var_reads`: how often each var of a function is read.
"""

from __future__ import annotations

from tvm import relax


def rewrite_functions(mod, mutator):
    """``mod`` with each Relax function replaced by ``mutator``'s visit of it."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def var_reads(func: relax.Function) -> dict:
    """Var -> number of places it is read in ``func`` (binding values and the function's result):
    a rewrite that folds a value into another may do so only where it is read once."""
    counts: dict = {}

    def visit(e):
        if isinstance(e, relax.Var):
            counts[e] = counts.get(e, 0) + 1

    for block in func.body.blocks:
        for b in block.bindings:
            relax.analysis.post_order_visit(b.value, visit)
    relax.analysis.post_order_visit(func.body.body, visit)
    return counts
