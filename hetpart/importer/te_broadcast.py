"""numpy broadcasting for the element-wise TE computes the importer's rewrites build.

In: a scalar function of two ``PrimExpr`` and two TE tensors.  Out: one
``te.compute`` (named ``compute``, as topi names its outputs) over the broadcast
shape.  Invariant: a dim of 1 broadcasts; other dims must agree (ONNX's rule, which
the importer's shape check has already enforced).
"""

from __future__ import annotations

from tvm import te, tirx


def _is_one(dim) -> bool:
    return isinstance(dim, (int, tirx.IntImm)) and int(dim) == 1


def broadcast(fn, a, b):
    """``fn(a[i], b[i])`` over numpy's broadcast of ``a`` and ``b``."""
    nd = max(len(a.shape), len(b.shape))
    da = [1] * (nd - len(a.shape)) + list(a.shape)
    db = [1] * (nd - len(b.shape)) + list(b.shape)
    shape = [y if _is_one(x) else x for x, y in zip(da, db)]

    def at(t, i):
        lead = nd - len(t.shape)
        return t(*[0 if _is_one(d) else i[lead + k] for k, d in enumerate(t.shape)])

    return te.compute(shape, lambda *i: fn(at(a, i), at(b, i)), name="compute")
