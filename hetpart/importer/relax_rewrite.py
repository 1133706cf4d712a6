"""The one driver of the importer's Relax rewrites (fast_erf, nan_semantics, ...).

In: an ``IRModule`` and a ``relax.PyExprMutator`` built on it.  Out: the module with
every Relax function visited by the mutator (PrimFuncs it emits added, the others kept).
"""

from __future__ import annotations

from tvm import relax


def rewrite_functions(mod, mutator):
    """``mod`` with each Relax function replaced by ``mutator``'s visit of it."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()
