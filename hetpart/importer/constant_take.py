"""A ``take`` at one constant index computed as a slice, which fuses into its neighbours.

In: a Relax module of high-level ops (``from_onnx``'s output after :mod:`.index_guard`).
Out: the same module where every ``relax.take(x, i, axis)`` whose index ``i`` holds one
integer known at import (a constant, or the frontend's ``where(k < 0, k + n, k)`` of a
constant ``k`` with ``n`` a static dim: ONNX's negative indices count from the end) that
lies in ``[0, n)`` for ``n`` the static extent of ``x`` along ``axis``, is
``strided_slice(x, [axis], [k], [k + 1])`` -- then ``squeeze`` of ``axis`` for a 0-d
index, ``expand_dims`` for a 1-element index of rank above 1 -- and the index
arithmetic nothing reads any more is dropped.  Invariant: every output is the same
function of the inputs (both read row ``k`` of ``x`` along ``axis``, element for
element: no arithmetic, so NaN, ±Inf and -0.0 come through alike).  Left as they are:
an index out of range (``index_guard`` made that take clip; the slice would not clip
alike), an axis of symbolic extent, a take of a shape tensor (``shape_to_tensor``:
shape arithmetic, folded or kept as the frontend wrote it) and indices of more than one
element.

Why: TVM legalises ``take`` into a PrimFunc that reads its index from a buffer, which
``AnnotateTIROpPattern`` calls opaque, so ``FuseOps`` fuses nothing into or out of it:
each such take is a kernel of its own, and the reshape/transpose after it another.
torchvision's ``MultiheadAttention`` export splits the packed QKV projection as
``proj[0], proj[1], proj[2]`` (ONNX ``Gather`` at a constant scalar index), so ViT-B/16
ran 36 lone 1.7 us take kernels per forward (3 a layer) on an H100, each followed by
its own head reshape/transpose kernel; Swin exports the same split.  A strided slice is
injective and fuses into the reshape/transpose that reads it.

:data:`SLICE_CONSTANT_TAKES` switches it (off: the import is as before, text for text).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .relax_rewrite import rewrite_functions

# module switch; on: ViT-B/16 all-CUDA TF32 batch 1 1.571 -> 1.473 ms on an H100, outputs identical (device step
# 142, session 51); device step 143 runs its cuda tests and zoo:swin on the GPU
SLICE_CONSTANT_TAKES = True
# the largest intermediate value the index evaluation folds (the frontend's index arithmetic is
# a shape vector and scalars)
_MAX_FOLDED = 64
_INT_OPS = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
            "relax.less": np.less, "relax.greater": np.greater, "relax.less_equal": np.less_equal,
            "relax.greater_equal": np.greater_equal, "relax.equal": np.equal}


def _op(e) -> str:
    return e.op.name if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else ""


def _dims(ty) -> list | None:
    """Dims of a tensor type (ints, or None for a symbolic one), None without a shape."""
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    return [int(d) if isinstance(d, tvm.tirx.IntImm) else None for d in shape.values]


class _Folder:
    """Integer values of expressions the bindings of a function decide at import."""

    def __init__(self, defs: dict):
        self.defs = defs

    def value(self, e, depth: int = 0) -> np.ndarray | None:
        """The value of ``e`` (a small integer or bool array), None where not known."""
        if depth > 16:
            return None
        if isinstance(e, tvm.ir.GenericConst):
            v = e.value.numpy()
            return v if v.dtype.kind in "iub" and v.size <= _MAX_FOLDED else None
        if isinstance(e, relax.Var):
            return self.value(self.defs[e], depth + 1) if e in self.defs else None
        if isinstance(e, relax.ShapeExpr):
            dims = [int(d) if isinstance(d, tvm.tirx.IntImm) else None for d in e.values]
            return None if None in dims else np.array(dims, np.int64)
        op = _op(e)
        if op == "relax.shape_of":
            dims = _dims(e.args[0].ty)
            return None if dims is None or None in dims else np.array(dims, np.int64)
        if op == "relax.shape_to_tensor":
            return self.value(e.args[0], depth + 1)
        if op not in _INT_OPS and op not in ("relax.where", "relax.take", "relax.astype"):
            return None
        args = [self.value(a, depth + 1) for a in e.args]
        if any(a is None for a in args):
            return None
        if op == "relax.astype":
            dtype = np.dtype(str(e.attrs.dtype))
            return args[0].astype(dtype) if dtype.kind in "iub" else None
        if op == "relax.where":
            out = np.where(*args)
        elif op == "relax.take":
            data, index = args
            axis = int(e.attrs.axis) if e.attrs.axis is not None else None
            if axis is None or data.ndim == 0 or index.size == 0:
                return None
            n = data.shape[axis]
            if str(e.attrs.mode) == "wrap":
                index = np.mod(index, n)
            elif index.min() < 0 or index.max() >= n:
                return None  # fast: undefined; clip: not ONNX's answer anyway
            out = np.take(data, index, axis=axis)
        else:
            out = _INT_OPS[op](*args)
        return out if out.size <= _MAX_FOLDED else None


def _shape_tensor(x, defs: dict) -> bool:
    """Whether ``x`` is the frontend's tensor of a shape (``shape_to_tensor``)."""
    return isinstance(x, relax.Var) and _op(defs.get(x)) == "relax.shape_to_tensor"


def _row(take: relax.Call, folder: _Folder) -> tuple[int, int, int] | None:
    """``(axis, k, index rank)`` where ``take`` reads the one row ``k`` in range; else None."""
    x, index = take.args
    dims = _dims(x.ty)
    if take.attrs.axis is None or dims is None or not dims or _shape_tensor(x, folder.defs):
        return None
    axis = int(take.attrs.axis)
    axis = axis + len(dims) if axis < 0 else axis
    if not 0 <= axis < len(dims) or dims[axis] is None:
        return None
    value = folder.value(index)
    if value is None or value.size != 1 or value.dtype.kind not in "iu":
        return None
    k, n = int(value.reshape(())), dims[axis]
    if str(take.attrs.mode) == "wrap" and -n <= k < 0:
        k += n
    if not 0 <= k < n:
        return None  # out of range: index_guard's clip (or TVM's mode) stands
    return axis, k, value.ndim


@relax.expr_functor.mutator
class _SliceTakes(relax.PyExprMutator):
    def __init__(self, mod, folder: _Folder):
        super().__init__(mod)
        self.folder = folder
        self.changed = False

    def visit_call_(self, call):
        row = _row(call, self.folder) if _op(call) == "relax.take" else None
        new = super().visit_call_(call)
        if row is None:
            return new
        axis, k, rank = row
        self.changed = True
        y = relax.op.strided_slice(new.args[0], axes=[axis], begin=[k], end=[k + 1])
        if rank == 0:
            return relax.op.squeeze(self.builder_.emit(y), axis=[axis])
        if rank > 1:
            return relax.op.expand_dims(self.builder_.emit(y), axis=list(range(axis, axis + rank - 1)))
        return y


def _bindings(mod) -> dict:
    """Var -> bound value, over every Relax function of ``mod``."""
    defs = {}
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            for block in func.body.blocks:
                for b in block.bindings:
                    if isinstance(b, relax.VarBinding):
                        defs[b.var] = b.value
    return defs


def slice_constant_takes(mod):
    """``mod`` with each take of one constant row in range as a strided slice (module
    docstring); ``mod`` itself when :data:`SLICE_CONSTANT_TAKES` is off or no take qualifies."""
    if not SLICE_CONSTANT_TAKES:
        return mod
    mutator = _SliceTakes(mod, _Folder(_bindings(mod)))
    out = rewrite_functions(mod, mutator)
    # the frontend's index arithmetic (where/less/add of a shape) is read by nothing now
    return relax.transform.DeadCodeElimination()(out) if mutator.changed else mod
