"""Attention's three kernels as one: ``matmul(Q, K^T)`` [* or / scalar] -> softmax -> ``matmul(., V)``.

In: a Relax module of high-level ops (``from_onnx``'s output, before legalisation).  Out:
the same module where each unmasked attention block of 4-D float32 tensors, as
transformers' and torchvision's exports spell it,

    s = matmul(Q, KT)                # Q [b, h, s, d], KT [b, h, d, t]
    s = multiply(s, c) | divide(s, c)   # optional, c a scalar constant
    p = softmax(s, axis=-1)
    o = matmul(p, V)                 # V [b, h, t, d]

with head dim ``d`` in :data:`HEAD_DIMS`, each intermediate read only by the next step, is
one TVM ``R.nn.attention`` call (layout ``[b, s, h, d]``, ``scale`` multiplies the scores,
so ``/ c`` becomes ``* (1/c)`` and no scale ``1.0``) between ``permute_dims`` into and out
of that layout.  Those permutes are injective and fuse into the projections that produce
``Q``, ``K^T``, ``V`` and into the kernel that reads ``o``.  TVM legalises the call into one
plain TIR kernel (``attention``: batch matmul, scale, softmax, batch matmul), which runs as
is on the CPU and under TF32; a ``cuda=bf16`` sm_90 build replaces it by
:mod:`hetpart.kernels.flash_attention` (:mod:`hetpart.kernels.flash_substitute`).

Anything else (a mask or bias added to the scores, another head dim, 3-D batched
heads, a non-scalar scale, a score read twice) is left as it is.

Invariant: each output is the same function of the inputs up to float rounding (the
legalised kernel computes the same sums; ``/ c`` as ``* (1/c)`` may differ in the last
bit).  With :data:`FUSE_ATTENTION` off the module is returned untouched (same object).

The importer's bf16 passes then find no scores (:mod:`.low_precision_scores`: no softmax
kernel) and no ``P V`` / ``Q K^T`` GEMM (:mod:`.low_precision_attention`,
:mod:`.low_precision_activations`: the attention kernel's callee is ``attention``, not
``matmul``), so they leave it alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .relax_rewrite import var_reads

FUSE_ATTENTION = False
"""Rewrite attention blocks into one ``R.nn.attention`` (module docstring).  Off until the
device A/B (``tools/gpu_model_switch_ab.py``) decides; read at import time."""

HEAD_DIMS = (64,)
"""Head dims rewritten (the flash kernel's; others keep their three kernels)."""

_TO_BSHD = (0, 2, 1, 3)  # [b, h, s, d] <-> [b, s, h, d]
_KT_TO_BSHD = (0, 3, 1, 2)  # K^T [b, h, d, t] -> K [b, t, h, d]


def fuse_attention(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with its attention blocks rewritten (module docstring); ``mod`` itself when
    :data:`FUSE_ATTENTION` is off or nothing matched."""
    if not FUSE_ATTENTION:
        return mod
    new = {gv: _rewrite(f) for gv, f in mod.functions_items() if isinstance(f, relax.Function)}
    changed = {gv: f for gv, f in new.items() if not f.same_as(mod[gv])}
    if not changed:
        return mod
    out = mod.clone()
    for gv, func in changed.items():
        out.update_func(gv, func)
    return out


def _patterns():
    """(pattern of the final matmul, its named parts) for the block in the module docstring."""
    q, kt, v, c = wildcard(), wildcard(), wildcard(), is_const()
    scores = is_op("relax.matmul")(q, kt)
    mul, div = is_op("relax.multiply")(scores, c), is_op("relax.divide")(scores, c)
    probs = is_op("relax.nn.softmax")(scores | mul | div)
    return is_op("relax.matmul")(probs, v), dict(q=q, kt=kt, v=v, c=c, scores=scores, mul=mul, div=div,
                                                  probs=probs)


def _rewrite(func: relax.Function) -> relax.Function:
    """``func`` with each eligible block replaced; ``func`` itself when none is."""
    pattern, part = _patterns()
    uses = _use_counts(func)

    def rewriter(orig, m):
        q, kt, v = m[part["q"]], m[part["kt"]], m[part["v"]]
        dropped = [m[part[n]] for n in ("scores", "mul", "div", "probs") if part[n] in m]
        scale = _scale(m[part["probs"]], m.get(part["mul"]), m.get(part["div"]))
        if scale is None or not _eligible(q, kt, v, m[part["probs"]]):
            return orig
        if any(uses.get(e, 0) > 1 for e in dropped):  # a score or probability read elsewhere too
            return orig
        o = relax.op.nn.attention(relax.op.permute_dims(q, _TO_BSHD), relax.op.permute_dims(kt, _KT_TO_BSHD),
                                  relax.op.permute_dims(v, _TO_BSHD), scale=scale)
        return relax.op.permute_dims(o, _TO_BSHD)

    return rewrite_call(pattern, rewriter, func)


def _scale(probs, mul, div) -> float | None:
    """The factor the scores are multiplied by (1.0 when unscaled; ``1/c`` for ``/ c``), or
    None when the softmax is not over the last axis or the constant is not a float32 scalar."""
    if int(probs.attrs.axis) not in (-1, 3):
        return None
    if mul is None and div is None:
        return 1.0
    value = (mul if mul is not None else div).args[1].value.numpy()
    if value.size != 1 or str(value.dtype) != "float32":
        return None
    factor = np.float32(value.reshape(()))
    if div is not None:
        return None if factor == 0.0 else float(np.float32(1.0) / factor)
    return float(factor)


def _eligible(q, kt, v, probs) -> bool:
    """Static 4-D float32 Q [b,h,s,d], K^T [b,h,d,t], V [b,h,t,d] with d in :data:`HEAD_DIMS`."""
    dims = [_static_shape(x) for x in (q, kt, v)]
    if any(d is None or len(d) != 4 for d in dims) or any(_dtype(x) != "float32" for x in (q, kt, v, probs)):
        return False
    (b, h, s, d), (b2, h2, d2, t), (b3, h3, t2, dv) = dims
    return b == b2 == b3 and h == h2 == h3 and d == d2 == dv and t == t2 and d in HEAD_DIMS


def _use_counts(func: relax.Function) -> dict:
    """Bound value (the Call a dataflow var is bound to) -> times its var is read."""
    value_of = {b.var: b.value for blk in func.body.blocks for b in blk.bindings}
    return {value_of[v]: n for v, n in var_reads(func).items() if v in value_of}


def _static_shape(expr) -> list[int] | None:
    """Static dims of a tensor expression, or None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return [int(d) for d in ty.shape.values]
    except (TypeError, AttributeError):
        return None


def _dtype(expr) -> str:
    """dtype of a tensor expression ('' when not a tensor)."""
    return getattr(expr.ty, "dtype", "")
