"""A layout chain read by several layout ops, copied for each so that every copy fuses into its reader.

In: a Relax module of high-level ops (after :mod:`.constant_take`, whose slices read the
projection's re-laid-out output).  Out: the same module where each binding ``v = op(x, ...)``
with ``op`` a pure data movement (``reshape``, ``permute_dims``, ``expand_dims``, ``squeeze``,
``strided_slice``) whose readers -- counted after their own copies, so a chain is copied
whole: a chain of 4 layout ops shared by 3 slices becomes 3 chains -- are 2 to
:data:`MAX_COPIES` bindings of that same set in its dataflow block is computed once
per reader, just before it, and the shared binding is gone.  Left as they are: a value
read by any other op (a matmul, an add, a tuple, ...) or returned from its block (the
copies would not fuse; a reader of compute keeps the one shared kernel), a value more
readers copy than :data:`MAX_COPIES`, readers that one concatenate joins again (Swin's
roll: FuseOps puts the chain, its slices and the concatenate in one kernel already), and a
chain whose data is a constant or computed from constants only (``FoldConstant`` would fold
each copy to a constant of its own: the weights duplicated).  Invariant: every output is the
same function of the inputs, element for element: the copies move the same elements (no
arithmetic), so NaN, ±Inf and -0.0 come through alike.

Cost: a copy fused into its reader reads only the elements the reader's index map names:
three slices of a ``[3, L, E]`` tensor each read a third of the chain's source, so the
copies together read the source once, and the shared chain's write and re-read of its
whole output are saved.  A reader that takes everything (a reshape) reads the source once
per copy, as it read the shared output once before; the chain's write and read are still
gone.  No element is computed twice by arithmetic: only index arithmetic is repeated.

Why: FuseOps puts a producer with several readers in a kernel of its own.  torchvision's
MultiheadAttention export re-lays its packed QKV projection out (reshape, expand_dims,
transpose, squeeze) and three slices read it, so each ViT-B/16 layer ran that 1.8 MB
copy as its own kernel (2.4 us plus a launch gap on an H100, x12 layers) besides the
three slice kernels that re-read it.

:data:`DUPLICATE_SHARED_LAYOUT` switches it (off: the import is as before, text for text).
"""

from __future__ import annotations

import tvm
from tvm import relax

from .relax_rewrite import rewrite_functions

# module switch; off until a device A/B decides (device step 145: vit_b_16 and zoo:swin tf32 off/on).  On the CPU
# (2-core EPYC, 2 threads, tools/cpu_rule_ab.py, session 51), outputs bit-identical: the torchvision ViT block
# (197x768) 1.00x in four A/Bs (13.87 -> 13.93, 13.96 -> 13.88 ms: the matmuls' noise), its layout kernels
# 0.083 -> 0.058 ms (tools/cpu_kernel_profile.py); Swin's window split-heads read by q/k/v (64x49x288, 512x49x288)
# 0.177 -> 0.116 and 3.84 -> 2.73 ms; zoo:swin:small 0.117 -> 0.113 ms
DUPLICATE_SHARED_LAYOUT = False
# the most copies of one binding (its readers, each counted as many times as it is copied)
MAX_COPIES = 4
LAYOUT_OPS = frozenset({"relax.reshape", "relax.permute_dims", "relax.expand_dims", "relax.squeeze",
                        "relax.strided_slice"})


def _op(e) -> str:
    return e.op.name if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else ""


def _layout(binding) -> bool:
    return isinstance(binding, relax.VarBinding) and _op(binding.value) in LAYOUT_OPS


def _variable(func: relax.Function) -> set:
    """Vars of ``func`` whose value depends on a parameter (not computed from constants only)."""
    out = set(func.params)
    for block in func.body.blocks:
        for b in block.bindings:
            if any(v in out for v in relax.analysis.free_vars(b.value)):
                out.add(b.var)
    return out


def _copied(block, variable: set) -> set:
    """The bindings of ``block`` to copy per reader (module docstring), decided from the last
    binding back, so that a binding's readers' copies are known when it is decided."""
    bindings = [b for b in block.bindings if isinstance(b, relax.VarBinding)]
    readers: dict = {}
    for b in block.bindings:
        for v in relax.analysis.free_vars(b.value):
            readers.setdefault(v, []).append(b)
    copies: dict = {}  # var -> how many times it is computed
    chosen: set = set()
    for b in reversed(bindings):
        users = readers.get(b.var, [])
        if (_op(b.value) not in LAYOUT_OPS or not isinstance(b.var, relax.DataflowVar) or not users
                or not all(_layout(u) for u in users) or b.value.args[0] not in variable):
            copies[b.var] = 1
            continue
        n = sum(copies.get(u.var, 1) for u in users)
        if 2 <= n <= MAX_COPIES and not _rejoined(users, readers):
            chosen.add(b.var)
            copies[b.var] = n
        else:
            copies[b.var] = 1
    return chosen


def _rejoined(users: list, readers: dict) -> bool:
    """Whether ``users`` (several) are each read by one binding only, the same concatenate (Swin's
    roll: two slices of the window re-layout concatenated): FuseOps puts them and the shared chain in one kernel
    already; copies would only repeat the chain's index arithmetic in it."""
    nexts = [readers.get(u.var, []) for u in users]
    return (len(users) > 1 and all(len(r) == 1 for r in nexts) and len({id(r[0]) for r in nexts}) == 1
            and isinstance(nexts[0][0], relax.VarBinding) and _op(nexts[0][0].value) == "relax.concat")


@relax.expr_functor.mutator
class _CopyPerReader(relax.PyExprMutator):
    def __init__(self, mod, chosen: set, defs: dict):
        super().__init__(mod)
        self.chosen, self.defs = chosen, defs

    def visit_var_binding_(self, binding):
        if binding.var not in self.chosen:  # a chosen binding is emitted at each reader instead
            super().visit_var_binding_(binding)

    def visit_dataflow_var_(self, var):
        if var in self.chosen:
            return self.builder_.emit(self.visit_expr(self.defs[var]), var.name)
        return super().visit_dataflow_var_(var)


def duplicate_shared_layout(mod):
    """``mod`` with each layout chain read by 2..:data:`MAX_COPIES` layout ops copied per reader
    (module docstring); ``mod`` itself when :data:`DUPLICATE_SHARED_LAYOUT` is off or none qualifies."""
    if not DUPLICATE_SHARED_LAYOUT:
        return mod
    chosen: set = set()
    defs: dict = {}
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            variable = _variable(func)
            for block in func.body.blocks:
                if isinstance(block, relax.DataflowBlock):
                    chosen |= _copied(block, variable)
                for b in block.bindings:
                    if isinstance(b, relax.VarBinding):
                        defs[b.var] = b.value
    if not chosen:
        return mod
    return rewrite_functions(mod, _CopyPerReader(mod, chosen, defs))
