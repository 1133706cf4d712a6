"""Out-of-range indices: checked on the way in where they are model inputs, clipped
inside the graph where they are not.

TVM's ``take`` (ONNX ``Gather``) in its default "fast" mode reads whatever memory an
out-of-range index points at: garbage, NaN, or a SIGSEGV.  ONNX says such an index is
an error (a negative one counts from the end).  Two cases:

* indices that are a model input, moved only by ops that keep each element's value
  (reshape, split, squeeze, transpose, an integer cast, and the frontend's
  ``where(i < 0, i + n, i)`` that makes negative indices count from the end): the
  runtime checks the feed's values before the run (:class:`IndexLimits`, cheap: a
  min and a max), so the kernel stays as fast as it was;
* any other indices (computed in the graph, or constants out of range): the ``take``
  is switched to "clip" mode, so a bad value reads a row of the table, never
  foreign memory.

In: the unfused Relax module from the frontend.  Out: that module with the unsafe
takes clipped, and per model input the range each element must lie in (``low <= v <
high``, arrays broadcastable to the input's shape; inputs not used as indices absent).
Invariant: every "fast" take left reads indices that are a checked input or constant
and in range.  ``gather_elements``/``gather_nd`` fed by an input are checked alike;
those fed by computed indices are left as TVM makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import tvm
from tvm import relax

from .op_graph import IndexLimits

_KEEP_VALUES = {"relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.flatten"}


@dataclass
class _Tracked:
    """A value whose elements are elements of model input ``name`` (at flat ``pos``)."""

    name: str
    pos: np.ndarray
    extent: int | None = None  # n, once passed through where(i < 0, i + n, i)

    @property
    def normalized(self) -> bool:
        return self.extent is not None


def guard_indices(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, IndexLimits]]:
    """``(module with unsafe takes clipped, limits per input)``; see the module docstring."""
    main = mod["main"]
    tracker = _Tracker(main)
    blocks = []
    changed = False
    for block in main.body.blocks:
        bindings = []
        for b in block.bindings:
            new = tracker.visit(b)
            changed |= new is not b
            bindings.append(new)
        blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                      else relax.BindingBlock(bindings))
    limits = tracker.limits()
    if not changed:
        return mod, limits
    body = relax.SeqExpr(blocks, main.body.body)
    new_main = relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs)
    out = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    out["main"] = new_main
    return out, limits


def _op(e) -> str:
    return e.op.name if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else ""


def _static_shape(ty) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (AttributeError, TypeError, ValueError):
        return None


def _const(e) -> np.ndarray | None:
    return e.value.numpy() if isinstance(e, tvm.ir.GenericConst) else None


class _Tracker:
    def __init__(self, main):
        self.defs: dict = {}
        self.tracked: dict = {}
        self._low: dict[str, np.ndarray] = {}
        self._high: dict[str, np.ndarray] = {}
        self._uses: dict[str, list[str]] = {}
        for p in main.params:
            shape = _static_shape(p.ty)
            if shape is not None and np.dtype(str(p.ty.dtype)).kind in "iu":
                self.tracked[p] = _Tracked(p.name, np.arange(int(np.prod(shape))).reshape(shape))
                self._low[p.name] = np.full(shape, np.iinfo(np.int64).min, dtype=np.int64)
                self._high[p.name] = np.full(shape, np.iinfo(np.int64).max, dtype=np.int64)

    def limits(self) -> dict[str, IndexLimits]:
        out = {}
        for name, uses in self._uses.items():
            out[name] = IndexLimits(_compact(self._low[name]), _compact(self._high[name]), uses)
        return out

    # --- one binding ------------------------------------------------------------------
    def visit(self, b):
        self.defs[b.var] = b.value
        e = b.value
        try:
            moved = self._moved(e, b.var)
        except (ValueError, TypeError, AttributeError, IndexError):
            moved = None  # an unusual form: not tracked (its take, if any, is clipped)
        if moved is not None:
            self.tracked[b.var] = moved
        op = _op(e)
        if op == "relax.take":
            return self._take(b)
        if op in ("relax.gather_elements", "relax.gather_nd"):
            self._gather(e)
        return b

    def _moved(self, e, var) -> _Tracked | object | None:
        """What ``e`` is, if its elements are elements of a tracked input."""
        if isinstance(e, relax.TupleGetItem):
            parts = self.tracked.get(e.tuple_value)
            return parts[e.index] if isinstance(parts, list) else None
        op = _op(e)
        if not op:
            return self.tracked.get(e) if isinstance(e, relax.Var) else None
        src = self.tracked.get(e.args[0]) if e.args else None
        if op == "relax.where":
            return self._normalized(e)
        if not isinstance(src, _Tracked):
            return None
        if op == "relax.astype":
            return src if np.dtype(str(e.attrs.dtype)).kind in "iu" else None
        if op in _KEEP_VALUES:
            return replace(src, pos=src.pos.reshape(_static_shape(var.ty)))
        if op == "relax.permute_dims":
            axes = None if e.attrs.axes is None else [int(a) for a in e.attrs.axes]
            return replace(src, pos=np.transpose(src.pos, axes))
        if op == "relax.broadcast_to":
            return replace(src, pos=np.broadcast_to(src.pos, _static_shape(var.ty)))
        if op == "relax.split":
            sections = e.attrs.indices_or_sections
            sections = [int(s) for s in sections] if hasattr(sections, "__len__") else int(sections)
            return [replace(src, pos=p) for p in np.split(src.pos, sections, int(e.attrs.axis))]
        return None

    def _normalized(self, e) -> _Tracked | None:
        """``where(i < 0, i + n, i)`` of a tracked ``i``: the frontend's negative indices."""
        cond, shifted, i = e.args
        src = self.tracked.get(i)
        c, s = self.defs.get(cond), self.defs.get(shifted)
        if not isinstance(src, _Tracked) or src.normalized or _op(c) != "relax.less" or _op(s) != "relax.add":
            return None
        zero = _const(c.args[1])
        if (not c.args[0].same_as(i) or not s.args[0].same_as(i) or zero is None or zero.size != 1
                or int(zero.reshape(())) != 0):
            return None
        extent = self._extent(s.args[1])
        if extent is None:
            return None
        return replace(src, extent=extent)

    def _extent(self, e) -> int | None:
        """The int an expression is, for the frontend's ``take(shape_to_tensor(shape_of(x)), k)``
        or a scalar constant."""
        value = _const(e)
        if value is not None:
            return int(value.reshape(())) if value.size == 1 else None
        t = self.defs.get(e)
        if _op(t) != "relax.take":
            return None
        k = _const(t.args[1])
        s2t = self.defs.get(t.args[0])
        if k is None or k.size != 1 or _op(s2t) != "relax.shape_to_tensor":
            return None
        shape = self.defs.get(s2t.args[0])
        if _op(shape) != "relax.shape_of":
            return None
        dims = _static_shape(shape.args[0].ty)
        return None if dims is None else int(dims[int(k.reshape(()))])

    # --- the indexing ops ---------------------------------------------------------------
    def _take(self, b):
        e = b.value
        if str(e.attrs.mode) != "fast":
            return b
        data, indices = e.args
        axis = 0 if e.attrs.axis is None else int(e.attrs.axis)
        shape = _static_shape(data.ty)
        if shape is not None:
            n = shape[axis]
            src = self.tracked.get(indices)
            what = f"Gather along axis {axis} of a {str(data.ty.dtype)} {list(shape)} tensor"
            if isinstance(src, _Tracked) and src.extent in (None, n):
                self._limit(src, n, what)
                return b
            if self._constant_in_range(indices, n):
                return b
        return relax.VarBinding(b.var, relax.op.take(data, indices, e.attrs.axis, mode="clip"))

    def _constant_in_range(self, indices, n: int) -> bool:
        """Whether ``indices`` is a constant in [0, n), as such or after the frontend's
        ``where(i < 0, i + n, i)``."""
        value = _const(indices)
        if value is None:
            value = self._normalized_constant(self.defs.get(indices), n)
            if value is None:
                return False
        return bool(value.size == 0 or (value.min() >= 0 and value.max() < n))

    def _normalized_constant(self, w, n: int) -> np.ndarray | None:
        if _op(w) != "relax.where" or _const(w.args[2]) is None:
            return None
        value = _const(w.args[2])
        c, s = self.defs.get(w.args[0]), self.defs.get(w.args[1])
        if (_op(c) != "relax.less" or _op(s) != "relax.add" or not np.array_equal(_const(c.args[0]), value)
                or not np.array_equal(_const(s.args[0]), value) or self._extent(s.args[1]) != n):
            return None
        return np.where(value < 0, value + n, value)

    def _gather(self, e) -> None:
        data, indices = e.args[0], e.args[1]
        src, shape = self.tracked.get(indices), _static_shape(data.ty)
        if not isinstance(src, _Tracked) or shape is None:
            return
        if _op(e) == "relax.gather_elements":
            axis = int(e.attrs.axis) % len(shape)
            self._limit(src, shape[axis], f"GatherElements along axis {axis} of a {list(shape)} tensor")
        elif int(e.attrs.batch_dims) == 0:
            for k in range(src.pos.shape[-1]):
                self._limit(replace(src, pos=src.pos[..., k]), shape[k],
                            f"GatherND on axis {k} of a {list(shape)} tensor")

    def _limit(self, src: _Tracked, n: int, what: str) -> None:
        flat = src.pos.reshape(-1)
        high = self._high[src.name].reshape(-1)
        low = self._low[src.name].reshape(-1)
        high[flat] = np.minimum(high[flat], n)
        low[flat] = np.maximum(low[flat], -n if src.normalized else 0)
        uses = self._uses.setdefault(src.name, [])
        if what not in uses:
            uses.append(what)


def _compact(a: np.ndarray) -> np.ndarray:
    """``a`` with every axis along which it is constant reduced to size 1 (still broadcastable)."""
    for axis in range(a.ndim):
        first = a.take([0], axis=axis)
        if a.shape[axis] > 1 and np.all(a == first):
            a = first
    return a
