"""Run marked attention kernels as the hand-written flash kernel on sm_90 (issue 17).

In:  a fused module, the build's target.  A kernel qualifies when its PrimFunc carries
     :data:`hetpart.importer.low_precision_flash.FLASH_ATTR` (an ``attention`` kernel of a
     bf16 CUDA partition, :mod:`hetpart.importer.fused_attention`), its call is a ``call_tir``
     of ``Q [b, s, h, 64]``, ``K [b, s, h, 64]``, ``V [b, s, h, 64]`` float32 (self-attention:
     one sequence length) returning ``[b, s, h, 64]`` float32.
Out: :func:`substitute`: for an sm_90 CUDA target, the module in which each such call is
     three narrowing transposes (``[b, s, h, d]`` float32 -> ``[b, h, s, d]`` bfloat16, round to
     nearest even; injective kernels the GPU rules schedule), the flash kernel
     (:func:`.flash_attention.flash_attention`, ``out_dtype`` float32, the scale read from the
     legalised kernel) and a transpose back to ``[b, s, h, d]``.  ``mod`` itself (the same
     object) for any other target or when nothing is marked -- CPU, TF32 and non-sm_90 builds
     run the legalised kernel as it is.
Invariant: a substituted call computes the attention kernel's function with Q, K, V and the
probabilities rounded to bf16 (accumulation in float32; the flash module's numerics).  The flash
PrimFunc carries ``tirx.is_scheduled``, ``hetpart.rule`` = :data:`RULE` and the hand-written
mark, so :mod:`.wgmma_substitute`'s mixed pipeline and sm_90a target compile it.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, te, tirx
from tvm.target import Target

from ..importer.low_precision_flash import FLASH_ATTR
from . import flash_attention as fa
from . import flash_layout as fl
from .analysis import HAND_WRITTEN_ATTR, RULE_ATTR, SCHEDULED_ATTR, copy_module
from .call_substitution import rewrite_calls
from .wgmma_match import eligible_target

RULE = "FlashAttention"
"""``hetpart.rule`` of a substituted flash kernel."""


def substitute(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """``mod`` with its marked attention calls running the flash kernel (module doc); ``mod``
    itself when the target is not sm_90 CUDA or nothing qualifies."""
    marked = {gv.name_hint: _scale(f) for gv, f in mod.functions_items() if _marked(f)}
    if not marked or not eligible_target(target):
        return mod
    out = rewrite_calls(mod, _Substituter(copy_module(mod), marked), marked)
    return mod if out is None else out


def _marked(func) -> bool:
    """``func`` is a PrimFunc carrying :data:`FLASH_ATTR`."""
    return isinstance(func, tirx.PrimFunc) and func.attrs is not None and bool(func.attrs.get(FLASH_ATTR, False))


def _scale(func: tirx.PrimFunc) -> float:
    """The factor the legalised attention kernel multiplies its scores by (TVM's ``_te_attention``
    with a scale: one ``p * FloatImm``); 1.0 when it has none."""
    found: list[float] = []

    def visit(node):
        if isinstance(node, tirx.Mul):
            for side in (node.a, node.b):
                if isinstance(side, tirx.FloatImm):
                    found.append(float(side.value))

    tvm_ffi.structural_walk(func.body, (tirx.Mul, visit), order="post")
    return found[0] if found else 1.0


def _shapes(call) -> tuple[int, int, int] | None:
    """(b, s, h) when ``call`` is a qualifying ``call_tir`` (module doc), else None."""
    if getattr(call.op, "name", None) != "relax.call_tir" or not isinstance(call.args[1], relax.Tuple):
        return None
    args = list(call.args[1].fields)
    types = [a.ty for a in args] + [call.ty_args[0]]
    if len(args) != 3 or not all(isinstance(t, relax.TensorType) and t.dtype == "float32" for t in types):
        return None
    try:
        dims = {tuple(int(d) for d in t.shape.values) for t in types}
    except (TypeError, AttributeError):
        return None
    if len(dims) != 1:
        return None
    (shape,) = dims
    return (shape[0], shape[1], shape[2]) if len(shape) == 4 and shape[3] == fl.HEAD_DIM else None


def _to_bhsd_bf16(x: te.Tensor) -> te.Tensor:
    """``[b, s, h, d]`` float32 -> ``[b, h, s, d]`` bfloat16 (round to nearest even)."""
    b, s, h, d = x.shape
    return te.compute((b, h, s, d), lambda i, j, k, m: x[i, k, j, m].astype("bfloat16"), name="flash_in")


def _to_bshd(o: te.Tensor) -> te.Tensor:
    """``[b, h, s, d]`` -> ``[b, s, h, d]`` (same dtype)."""
    b, h, s, d = o.shape
    return te.compute((b, s, h, d), lambda i, k, j, m: o[i, j, k, m], name="flash_out")


@relax.expr_functor.mutator
class _Substituter(relax.PyExprMutator):
    """See :func:`substitute`; ``marked``: ``{PrimFunc name: scale}``."""

    def __init__(self, mod: tvm.IRModule, marked: dict) -> None:
        super().__init__(mod)
        self._marked = marked
        self.added: set[str] = set()

    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = call.args[0].name_hint if call.args and isinstance(call.args[0], tvm.ir.GlobalVar) else None
        shape = _shapes(call) if name in self._marked else None
        if shape is None:
            return call
        b, s, h = shape
        bb = self.builder_
        q, k, v = (bb.emit_te(_to_bhsd_bf16, a, primfunc_name_hint="flash_in") for a in call.args[1].fields)
        kernel = self._kernel(name, b, h, s)
        o = bb.emit(relax.call_tir(kernel, relax.Tuple([q, k, v]),
                                   relax.TensorType([b, h, s, fl.HEAD_DIM], "float32")))
        return bb.call_te(_to_bshd, o, primfunc_name_hint="flash_out")

    def _kernel(self, name: str, b: int, h: int, s: int):
        """The GlobalVar of the flash kernel replacing ``name``, added once."""
        new = f"{name}_flash"
        existing = [gv for gv in self.builder_.get().get_global_vars() if gv.name_hint == new]
        if existing:
            return existing[0]
        func = (fa.flash_attention(b, h, s, scale=self._marked[name], out_dtype="float32")
                .without_attr("global_symbol").with_attr(RULE_ATTR, RULE).with_attr(HAND_WRITTEN_ATTR, True)
                .with_attr(SCHEDULED_ATTR, True))
        self.added.add(new)
        return self.builder_.add_func(func, new)


__all__ = ["RULE", "substitute"]
