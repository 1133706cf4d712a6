"""Projections of one input by constant weights computed as one GEMM (Q, K, V of attention).

In: a Relax module of high-level ops (``from_onnx``'s output, weights folded).  Out: the same
module where two or more ``matmul(x, W_i)`` of the *same* ``x`` by 2-D constants ``W_i``
(same dtype, same rows K), each optionally followed by its only use ``add(., b_i)`` with a
constant ``b_i`` of shape ``[N_i]``, and the result read once by an injective or elementwise op
(:data:`SLICE_FUSES_INTO`), are one ``matmul(x, concat(W_i))`` (+ ``concat(b_i)``,
a missing bias as zeros) and one ``strided_slice`` of its last axis per projection.
Invariant: every output is the same function of the inputs -- each column of a matmul is
its own dot product, so the concatenated GEMM computes the same sums (in the same K order);
a zero bias adds 0.0 (``y + 0.0 == y`` in IEEE float, -0.0 aside).  Nothing else changes.

Why: a transformer layer's Q, K and V projections read the same LayerNorm output; built apart
they are three GEMM kernels -- on the GPU at batch 1 three split-K GEMMs, each two launches
(partials + sum), 6 of a ViT layer's 20 launches (``bench/results/gpu-vit-b1-static.md``).
One GEMM of ``3N`` columns is one kernel (or one split-K pair) on a grid 3x as wide; the
slices are injective and fuse into the head reshape/transpose after each projection, so they
add no kernel (``bench/results/gpu-tx-launches-static.md``).  torchvision's ViT exports its
in-projection already concatenated; HF's DistilBERT / Whisper / BERT export three.

:data:`CONCAT_PROJECTIONS` switches it (off: the import is as before, text for text).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .relax_rewrite import var_reads

# module switch (device step 138 decides; off until measured)
CONCAT_PROJECTIONS = False
# at most this many columns in one concatenated weight (a guard against fusing unrelated wide
# projections into one huge GEMM; QKV of a 4096-wide model is 12288)
MAX_COLUMNS = 3 * 8192
# ops a projection's only reader must be for it to join a group: injective / elementwise ops FuseOps
# fuses the slice into (attention's head reshape, SwiGLU's activation and product, a scale)
SLICE_FUSES_INTO = frozenset({
    "relax.reshape", "relax.permute_dims", "relax.add", "relax.subtract", "relax.multiply", "relax.divide",
    "relax.nn.silu", "relax.nn.gelu", "relax.sigmoid", "relax.tanh", "relax.nn.relu", "relax.astype"})


def _const_2d(expr):
    """numpy value of a 2-D relax constant, else None."""
    if isinstance(expr, tvm.ir.GenericConst) and expr.value.numpy().ndim == 2:
        return expr.value.numpy()
    return None


def _groups(func: relax.Function) -> list[list[dict]]:
    """The projection groups of ``func``: lists (in binding order, >= 2) of members
    ``{"mm": matmul var, "out": var the rest reads, "w": weight, "b": bias or None}``.  A member's
    ``out`` has one reader, an op of :data:`SLICE_FUSES_INTO` (its slice then fuses into that
    kernel: a slice read by a matmul, or a model output, would be a kernel of its own)."""
    uses = var_reads(func)
    by_input: dict = {}
    adds: dict = {}  # matmul var -> (add var, bias)
    reader: dict = {}  # var -> op name of (one of) its readers
    for block in func.body.blocks:
        if not isinstance(block, relax.DataflowBlock):
            continue
        for b in block.bindings:
            v = b.value
            if not (isinstance(b, relax.VarBinding) and isinstance(v, relax.Call)):
                continue
            name = getattr(v.op, "name", "")
            for a in v.args:
                if isinstance(a, relax.Var):
                    reader[a] = name
            if name == "relax.matmul" and isinstance(v.args[0], relax.Var) and _const_2d(v.args[1]) is not None:
                if v.attrs.out_dtype and str(v.attrs.out_dtype) not in ("", "void"):
                    continue
                by_input.setdefault(v.args[0], []).append({"mm": b.var, "out": b.var, "w": _const_2d(v.args[1]),
                                                           "b": None})
            elif name == "relax.add":
                for i in (0, 1):
                    mm, bias = v.args[i], v.args[1 - i]
                    if isinstance(mm, relax.Var) and isinstance(bias, tvm.ir.GenericConst):
                        adds[mm] = (b.var, bias.value.numpy())
    groups = []
    for members in by_input.values():
        for m in members:
            if m["mm"] in adds and uses.get(m["mm"], 0) == 1:
                out, bias = adds[m["mm"]]
                if bias.shape == (m["w"].shape[1],) and bias.dtype == m["w"].dtype:
                    m["out"], m["b"] = out, bias
        members = [m for m in members if uses.get(m["out"], 0) == 1 and reader.get(m["out"]) in SLICE_FUSES_INTO]
        # same K rows and dtype; keep the largest such set
        key = lambda m: (m["w"].shape[0], str(m["w"].dtype))
        keys = [key(m) for m in members]
        best = max(set(keys), key=keys.count) if keys else None
        same = [m for m in members if key(m) == best]
        if len(same) >= 2 and sum(m["w"].shape[1] for m in same) <= MAX_COLUMNS:
            groups.append(same)
    return groups


def _ndim(x) -> int:
    """Rank of the matmul input ``x`` (the output's rank: the weight is 2-D)."""
    return int(x.ty.ndim)


@relax.expr_functor.mutator
class _Concat(relax.PyExprMutator):
    """Emits each group's one GEMM at its first member's binding; the members' bindings go."""

    def __init__(self, mod, groups):
        super().__init__(mod)
        self.first = {g[0]["mm"]: g for g in groups}
        self.drop = {v for g in groups for m in g for v in (m["mm"], m["out"])}

    def visit_var_binding_(self, binding):
        group = self.first.get(binding.var)
        if group is not None:
            self._emit_group(binding.value.args[0], group)
            return
        if binding.var in self.drop:
            return
        super().visit_var_binding_(binding)

    def _emit_group(self, x, group):
        x = self.visit_expr(x)
        w = np.concatenate([m["w"] for m in group], axis=1)
        y = self.builder_.emit(relax.op.matmul(x, relax.const(w, str(w.dtype))))
        if any(m["b"] is not None for m in group):
            bias = np.concatenate([m["b"] if m["b"] is not None else np.zeros(m["w"].shape[1], m["w"].dtype)
                                   for m in group])
            y = self.builder_.emit(relax.op.add(y, relax.const(bias, str(bias.dtype))))
        axis = _ndim(x) - 1
        start = 0
        for m in group:
            n = m["w"].shape[1]
            part = self.builder_.emit(relax.op.strided_slice(y, axes=[axis], begin=[start], end=[start + n]))
            start += n
            self.set_var_remap(m["out"], part)


def concat_projections(mod):
    """``mod`` with each group of same-input constant projections as one GEMM (module
    docstring); ``mod`` itself when :data:`CONCAT_PROJECTIONS` is off or no group exists."""
    if not CONCAT_PROJECTIONS:
        return mod
    groups = {gv: _groups(f) for gv, f in mod.functions_items() if isinstance(f, relax.Function)}
    if not any(groups.values()):
        return mod
    for gv, g in groups.items():
        if not g:
            continue
        mutator = _Concat(mod, g)
        mutator.builder_.update_func(gv, mutator.visit_expr(mod[gv]))
        mod = mutator.builder_.get()
    return relax.transform.DeadCodeElimination()(mod)
