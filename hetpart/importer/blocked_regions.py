"""Widen the channel-blocked region ``ConvertLayout`` leaves (the opt-in ``NCHW{c}c`` import,
:mod:`.conv_layout`): per-channel elementwise ops, ReLUs, pools and channel concats computed in
the blocked layout where their neighbours are, so a tensor is converted once, not at every op.

Why: TVM 0.27's ``ConvertLayout`` lets an op follow its *first* input's layout and never asks a
pool for one (``max_pool2d`` takes no desired layout).  A 3-channel stem conv stays NCHW, so its
pool does, and densenet121's whole first dense block then ran NCHW: each concat (64..256
channels at 56x56) and its BN-ReLU in NCHW, a ``layout_transform`` to NCHW8c before every 1x1
conv and one back after every growth conv (14 transforms; the block 1.02-1.08x slower than the
NCHW build: bench/results/cpu-dn-blocked-2core.md).

In: ``main`` after ``ConvertLayout`` (+ CSE) at block ``c``, before NaN semantics (ReLU still
``relax.nn.relu``).  Out (:func:`widen`): the same function where a 4-d NCHW value whose channels
are a multiple of ``c`` is computed blocked when

* (a) one of its arguments of its own shape (a concat: any input) is available blocked (a
  ``layout_transform`` back from ``NCHW{c}c`` or a value computed blocked), or
* (b) every consumer wants it blocked (a transform to ``NCHW{c}c`` or a value computed blocked)
  and it is not a pool (a pool's input is 4x its output: the transform goes after it),

for the ops :data:`ELEMENTWISE` (unary, or binary whose other operand is a per-channel
``[N|1, C, 1|H, 1|W]`` tensor or a scalar), ``max_pool2d`` / ``avg_pool2d`` (NCHW) and
``concat`` along the channel axis (every input a multiple of ``c``).  Its NCHW arguments
are transformed (constants fold at import), NCHW consumers read a transform back.
Invariant: values are unchanged (every rewrite is an index remap of the same arithmetic); the
function's signature and outputs unchanged; where the rewrite would move more floats through
transforms than ``ConvertLayout`` left (:func:`transform_floats`), ``main`` is returned as is.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .nchwc import shape, to_blocked, to_nchw, transform_kind

WIDEN_BLOCKED = True
"""Apply :func:`widen` after ``ConvertLayout`` in :func:`.conv_layout.convert` (off: the region
as ``ConvertLayout`` leaves it -- densenet121's first dense block NCHW)."""

ELEMENTWISE = frozenset({"relax.nn.relu", "relax.add", "relax.subtract", "relax.multiply", "relax.divide",
                         "relax.maximum", "relax.minimum", "relax.sqrt", "relax.sigmoid", "relax.negative"})
"""Ops computed per element (binary ones with numpy broadcasting) that may run blocked."""

POOLS = frozenset({"relax.nn.max_pool2d", "relax.nn.avg_pool2d"})


def _op_name(value) -> str | None:
    return value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else None


def _tensor_args(value) -> list:
    """The Var arguments of a call (a concat's tuple fields included)."""
    out = []
    for a in value.args:
        for x in (a.fields if isinstance(a, relax.Tuple) else [a]):
            if isinstance(x, relax.Var):
                out.append(x)
    return out


def _candidate(value, block: int) -> bool:
    """Whether ``value`` (a binding's call) may be computed in NCHW{block}c (module docstring)."""
    name, out = _op_name(value), shape(value)
    if name is None or out is None or len(out) != 4 or out[1] % block:
        return False
    if name in ELEMENTWISE:
        for a in value.args:
            s = shape(a)
            if s is None:
                return False
            if len(s) == 0:
                continue  # a scalar broadcasts in any layout
            if len(s) != 4 or s[1] != out[1] or any(d not in (1, o) for d, o in zip(s, out)):
                return False
        return True
    if name in POOLS:
        return str(value.attrs.layout) == "NCHW" and str(value.attrs.out_layout) == "NCHW"
    if name == "relax.concat":
        fields = value.args[0].fields if isinstance(value.args[0], relax.Tuple) else None
        axis = int(value.attrs.axis) if value.attrs.axis is not None else 0
        return (fields is not None and axis in (1, -3)
                and all((s := shape(f)) is not None and len(s) == 4 and s[1] % block == 0 for f in fields))
    return False


def _blocked_call(value, args, block: int):
    """``value``'s op (a :func:`_candidate`) called on ``args``, its arguments in order, blocked;
    a pool's layouts set to ``NCHW{block}c``."""
    name = _op_name(value)
    if name in POOLS:
        a = value.attrs
        make = relax.op.nn.max_pool2d if name == "relax.nn.max_pool2d" else relax.op.nn.avg_pool2d
        return make(args[0], [int(x) for x in a.pool_size], [int(x) for x in a.strides],
                    [int(x) for x in a.padding], [int(x) for x in a.dilation], bool(a.ceil_mode),
                    bool(a.count_include_pad), layout=f"NCHW{block}c", out_layout=f"NCHW{block}c")
    if name == "relax.concat":
        return relax.op.concat(relax.Tuple(list(args)), axis=1)
    return relax.Call(value.op, args, value.attrs)


def decide(bindings, block: int, outputs: set) -> set:
    """The vars of ``bindings`` (one dataflow block) to compute blocked: rules (a) and (b) of the
    module docstring to a fixed point.  ``outputs``: vars the function returns (need NCHW)."""
    by_var = {b.var: b for b in bindings}
    consumers: dict = {b.var: [] for b in bindings}
    for b in bindings:  # every use counts (a tuple, an alias: consumers that keep NCHW)
        for a in relax.analysis.free_vars(b.value):
            if a in consumers:
                consumers[a].append(b.var)
    kind = {b.var: transform_kind(b.value, block) for b in bindings if isinstance(b, relax.VarBinding)}
    cand = {b.var for b in bindings if isinstance(b, relax.VarBinding) and _candidate(b.value, block)}
    chosen: set = set()

    def available(v) -> bool:
        return v in chosen or kind.get(v) == "to_nchw"

    changed = True
    while changed:
        changed = False
        for v in cand - chosen - outputs:
            value = by_var[v].value
            out = shape(value)
            concat = _op_name(value) == "relax.concat"
            rule_a = any(available(a) and (concat or shape(a) == out) for a in _tensor_args(value))
            users = consumers[v]
            rule_b = (_op_name(value) not in POOLS and users and v not in outputs
                      and all(kind.get(u) == "to_blocked" or u in chosen for u in users))
            if rule_a or rule_b:
                chosen.add(v)
                changed = True
    return chosen


def transform_floats(func: relax.Function, block: int) -> int:
    """How many elements ``func``'s NCHW <-> NCHW{block}c ``layout_transform``\\ s move in all."""
    total = 0
    for blk in func.body.blocks:
        for b in blk.bindings:
            if isinstance(b, relax.VarBinding) and transform_kind(b.value, block) is not None:
                s = shape(b.value)
                n = 1
                for d in s:
                    n *= d
                total += n
    return total


def widen(mod: tvm.IRModule, block: int) -> tvm.IRModule:
    """``mod`` with ``main``'s blocked region widened (module docstring); unchanged where
    ``main`` is not one dataflow block or nothing is chosen or transforms would grow."""
    func = mod["main"]
    body = func.body
    if len(body.blocks) != 1 or not isinstance(body.blocks[0], relax.DataflowBlock):
        return mod
    bindings = list(body.blocks[0].bindings)
    if not all(isinstance(b, relax.VarBinding) for b in bindings):
        return mod
    outputs = set(relax.analysis.free_vars(body.body)) | {b.var for b in bindings if not isinstance(b.var, relax.DataflowVar)}
    chosen = decide(bindings, block, outputs)
    if not chosen:
        return mod
    new_func = _rewrite(func, bindings, chosen, block)
    new_func = relax.analysis.remove_all_unused(new_func)
    if transform_floats(new_func, block) > transform_floats(func, block):
        return mod
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
    out["main"] = new_func
    return out


def _rewrite(func, bindings, chosen: set, block: int):
    """``func`` rebuilt with the ``chosen`` vars computed blocked (see :func:`widen`)."""
    bb = relax.BlockBuilder()
    params = [relax.Var(p.name, p.ty) for p in func.params]
    remap = dict(zip(func.params, params))
    twin: dict = {}  # original 4-d var -> its blocked value (a new var)
    back: dict = {}  # chosen var -> its NCHW value, emitted on demand

    def nchw(v):
        """The NCHW value for original var ``v``."""
        if v in remap:
            return remap[v]
        if v not in back:
            back[v] = bb.emit(to_nchw(twin[v], block))
        return back[v]

    def blocked(v):
        """The blocked value for original 4-d var ``v`` (transformed once, on demand)."""
        if v not in twin:
            twin[v] = bb.emit(to_blocked(nchw(v), block))
        return twin[v]

    def sub(expr):
        """``expr`` with original vars replaced by their NCHW values."""
        if isinstance(expr, relax.Var):
            return nchw(expr) if (expr in remap or expr in twin) else expr
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([sub(f) for f in expr.fields])
        if isinstance(expr, relax.Call):
            return relax.Call(expr.op, [sub(a) for a in expr.args], expr.attrs, expr.ty_args)
        if isinstance(expr, relax.TupleGetItem):
            return relax.TupleGetItem(sub(expr.tuple_value), expr.index)
        return expr

    def blocked_arg(a):
        """A blocked-call argument: a 4-d tensor transformed, a scalar or constant as is (4-d
        constants transformed too: folded at import)."""
        s = shape(a)
        if s is None or len(s) != 4:
            return sub(a)
        if isinstance(a, relax.Var):
            return blocked(a)
        return bb.emit(to_blocked(a, block))

    with bb.function("main", params, attrs=dict(func.attrs) if func.attrs else None):
        with bb.dataflow():
            for b in bindings:
                v, value = b.var, b.value
                kind = transform_kind(value, block)
                if kind == "to_nchw" and isinstance(value.args[0], relax.Var):
                    twin[v] = sub(value.args[0])  # the blocked source itself
                    if isinstance(v, relax.DataflowVar):
                        continue  # NCHW consumers get a transform back on demand
                if kind == "to_blocked" and isinstance(value.args[0], relax.Var) and value.args[0] in twin:
                    new = twin[value.args[0]]
                elif v in chosen:
                    if _op_name(value) == "relax.concat":
                        new = bb.emit(relax.op.concat(relax.Tuple([blocked_arg(f) for f in value.args[0].fields]), axis=1))
                    else:
                        new = bb.emit(_blocked_call(value, [blocked_arg(a) for a in value.args], block))
                    twin[v] = new
                    continue
                else:
                    new = sub(value)
                if isinstance(v, relax.DataflowVar):
                    remap[v] = bb.emit(new, v.name) if not isinstance(new, relax.Var) else new
                else:
                    remap[v] = bb.emit_output(new, v.name)
        bb.emit_func_output(sub(func.body.body))
    return bb.get()["main"]
