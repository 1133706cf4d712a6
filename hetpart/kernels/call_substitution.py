"""Replace kernel calls in a fused module by hand-written kernels: the rewrite both substitutions share.

In:  a fused module, a Relax expression mutator whose ``visit_expr`` rewrites the calls of the
     kernels named in ``replaced`` (and records in ``added`` that it did, building any new PrimFuncs
     through its ``builder_``), and those names.
Out: :func:`rewrite_calls`: the rewritten module -- every Relax function visited, the PrimFuncs the
     mutator's builder made added, each replaced kernel removed where no Relax function calls it any
     more -- or None when the mutator rewrote nothing (the caller then returns its input unchanged).
Invariant: ``mod`` itself is not changed; a replaced kernel still called somewhere (a call the
mutator could not rewrite) stays.  Used by :mod:`.wgmma_substitute` and :mod:`.flash_substitute`.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from .analysis import copy_module


def rewrite_calls(mod: tvm.IRModule, rewriter, replaced) -> tvm.IRModule | None:
    """``mod`` with every Relax function rewritten by ``rewriter`` (module doc); None if it added nothing."""
    out = copy_module(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            out[gv] = rewriter.visit_expr(func)
    if not rewriter.added:
        return None
    present = {gv.name_hint for gv in out.get_global_vars()}
    for gv, func in rewriter.builder_.get().functions_items():  # the new kernels (emit_te, add_func)
        if isinstance(func, tirx.PrimFunc) and gv.name_hint not in present:
            out[gv] = func
    called = called_functions(out)
    for gv, _ in list(out.functions_items()):
        if gv.name_hint in replaced and gv.name_hint not in called:
            del out[gv]  # replaced everywhere (DeadCodeElimination keeps a public one)
    return out


def called_functions(mod: tvm.IRModule) -> set[str]:
    """Names of the functions some Relax function of ``mod`` calls (``call_tir`` and kin)."""
    names: set[str] = set()

    def visit(e):
        if isinstance(e, relax.Call) and e.args and isinstance(e.args[0], tvm.ir.GlobalVar):
            names.add(e.args[0].name_hint)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return names


__all__ = ["called_functions", "rewrite_calls"]
