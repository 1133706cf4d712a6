"""How a block walks the buffers it reads: the stride of each read along the block's
innermost loop.

In: a block statement of a PrimFunc (after its single-consumer spatial blocks are
inlined, so a fused ``reshape -> transpose`` shows its composed index).  Out: per
read, how many elements its flat (row-major) offset moves when the innermost spatial
iterator steps by one -- 0 (a broadcast), 1 (streaming), more (a transpose reading
one element per cache line).  How: each read's offset is evaluated at a few points
of the innermost iterator's range, the other iterators held at the middle of
theirs; the most common step is the stride (a reshape's wrap-around is one step of
many).  Reads whose index is not integer arithmetic on the iterators (a gathered
index, a dynamic shape) are left out.

:func:`strides_along` and :func:`unit_run` ask the same along any iterator (how far a
read moves per step; how many steps it stays contiguous), :func:`moves_by` whether every
read moves by one given stride at every step; :func:`write_strides_along`
asks it of the block's writes, and :func:`writes_in_runs` whether every aligned group
of steps writes consecutive elements (proved, not sampled, with TVM's arithmetic);
:func:`run_kind` proves the same of one load or store, aligned, or that it stays put
(a broadcast), and :func:`steps_along` evaluates one access's steps.

Used by the CPU injective rule (a strided copy is parallelised earlier), the GPU
tensor-core rule (which way to stage an operand slice, which way to write out the
result), the GPU layout-copy rule (vector lanes, the transposed tile's axis) and the cost model
(:mod:`hetpart.costmodel.access_pattern`, a predictor feature).
"""

from __future__ import annotations

import operator
from collections import Counter

import tvm_ffi
from tvm import tirx
from tvm.ir import Range, TensorLoad
from tvm.sym.analyzer import Analyzer


class Unknown(Exception):
    """An index this analysis cannot evaluate (a gathered index, a dynamic shape)."""


def read_strides(block) -> list[int]:
    """The stride (elements per step of the innermost spatial iterator) of each read in
    ``block`` whose offset can be evaluated; none when the block has no such iterator."""
    inner = _innermost(block)
    return [] if inner is None else strides_along(block, inner[0])


def strides_along(block, var) -> list[int]:
    """The stride of each evaluable read of ``block`` along its iterator ``var`` (the
    others held at the middle of their ranges); a reduction's accumulator left out."""
    inner = next(((iv.var, _extent(iv)) for iv in block.iter_vars if iv.var.same_as(var)), None)
    if inner is None or not inner[1] or inner[1] < 2:
        return []
    env = _at_middle(block)
    out = []
    for load in _reads(block):
        try:
            out.append(_stride(load, inner, env))
        except Unknown:
            continue
    return out


def write_strides_along(block, var) -> list[int]:
    """The stride of each write of ``block`` along its iterator ``var`` (the others held
    at the middle of their ranges), as :func:`strides_along` for the reads."""
    inner = next(((iv.var, _extent(iv)) for iv in block.iter_vars if iv.var.same_as(var)), None)
    if inner is None or not inner[1] or inner[1] < 2:
        return []
    env = _at_middle(block)
    return [_stride(store, inner, env) for store in _writes(block)]


def writes_in_runs(block, var, group: int) -> bool:
    """True when, for every ``g``, the iterator ``var`` stepping through ``group*g ..
    group*g + group-1`` makes every write of ``block`` move by one element per step
    (so ``group`` lanes of a vector store are consecutive); False when TVM's
    arithmetic analyzer cannot prove it (an NCHW output whose images hold a pixel count
    ``group`` does not divide)."""
    groups = _aligned_groups(block, var, group)
    if groups is None:
        return False
    motion, simplify, v = groups
    for store in _writes(block):
        moved, start = motion(store)
        if not _is_zero(simplify(moved - start - v)):
            return False
    return True


def run_kind(block, access, var, group: int) -> str | None:
    """How the load or store ``access`` of ``block`` moves while the iterator ``var`` steps
    through each aligned group ``group*g .. group*g + group-1`` (proved with TVM's arithmetic
    over every value of the other iterators, as :func:`writes_in_runs`): ``"still"`` when its
    offset does not change (a broadcast: one value for the group), ``"run"`` when it moves by one
    element per step from an offset that is a multiple of ``group`` (the lanes of one aligned
    vector), None otherwise, when unproven, or when ``var``'s extent is not a multiple of
    ``group``."""
    groups = _aligned_groups(block, var, group)
    if groups is None:
        return None
    motion, simplify, v = groups
    moved, start = motion(access)
    step = simplify(moved - start)
    if _is_zero(step):
        return "still"
    if not _is_zero(simplify(step - v)):
        return None
    aligned = simplify(tirx.FloorMod(start, tirx.IntImm(str(start.ty), group)))
    return "run" if _is_zero(aligned) else None


def steps_along(block, access, var, count: int) -> list[int]:
    """The changes of the load or store ``access``'s flat offset over the first ``count``
    steps of the iterator ``var`` from 0 (the other iterators held at the middle of their
    ranges): ``[1] * (count - 1)`` for a contiguous run.  :class:`Unknown` for an index this
    module cannot evaluate."""
    env = _at_middle(block)
    offsets = [_offset(access, _with(env, var, x)) for x in range(count)]
    return [b - a for a, b in zip(offsets, offsets[1:])]


def _aligned_groups(block, var, group: int):
    """What :func:`writes_in_runs` and :func:`run_kind` prove with, for the iterator ``var`` of
    ``block`` stepping through each aligned group ``group*g .. group*g + group-1``: ``(motion,
    simplify, v)`` -- ``motion(access)`` the access's flat offset at ``group*g + v`` and at
    ``group*g``, each simplified knowing every iterator's range; ``simplify`` an expression over
    those ranges; ``v`` the step within the group.  None when ``var`` is not an iterator of
    ``block`` or its extent is not a multiple of ``group``."""
    target = next((iv for iv in block.iter_vars if iv.var.same_as(var)), None)
    if target is None or _extent(target) is None or _extent(target) % group:
        return None
    others = [iv for iv in block.iter_vars if not iv.var.same_as(var)]
    dtype = str(target.dom.extent.ty)
    g, v = tirx.Var("g", dtype), tirx.Var("v", dtype)

    def analyzer(value):
        """An analyzer knowing every iterator's range, with ``var`` bound to ``value``
        (binding an expression substitutes it: Python has no TIR substitute here)."""
        a = Analyzer()
        for iv in others:
            a.bind(iv.var, iv.dom)
        a.bind(g, Range(0, _extent(target) // group))
        a.bind(v, Range(0, group))
        if value is not None:
            a.bind(var, value)
        return a

    def motion(access):
        flat = _flat_expr(access)
        return analyzer(g * group + v).simplify(flat), analyzer(g * group).simplify(flat)

    return motion, (lambda expr: analyzer(None).simplify(expr)), v


def _is_zero(expr) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == 0


def _flat_expr(access):
    """Row-major flat offset of ``access`` as an expression of the block's iterators."""
    flat = None
    for dim, index in zip(_shape(access), access.indices):
        flat = index if flat is None else flat * dim + index
    return flat


def _at_middle(block) -> list:
    """``[(var, value)]``: each iterator of ``block`` with a static extent at its middle."""
    return [(iv.var, _extent(iv) // 2) for iv in block.iter_vars if _extent(iv) is not None]


def _with(env: list, var, value: int) -> list:
    """``env`` with ``var`` set to ``value``."""
    return [(v, value if v.same_as(var) else old) for v, old in env]


def _reads(block) -> list:
    """The loads of ``block`` but those of the buffers it writes (an accumulator)."""
    loads: list = []
    tvm_ffi.structural_walk(block.body, (TensorLoad, loads.append), order="post")
    written = [w.source for w in block.writes]
    return [ld for ld in loads if not is_one_of(ld.source, written)]


def _writes(block) -> list:
    """The stores of ``block``."""
    stores: list = []
    tvm_ffi.structural_walk(block.body, (tirx.BufferStore, stores.append), order="post")
    return stores


def unit_run(block, var, limit: int) -> int:
    """How many consecutive elements every read of ``block`` takes as the iterator
    ``var`` steps from 0 (the others held at the middle of their ranges): ``limit``
    when all of the first ``limit`` steps move by one element, else the length of the
    shortest contiguous run.  :class:`Unknown` for an index this module cannot evaluate."""
    env = _at_middle(block)
    run = limit
    for load in _reads(block):
        offsets = [_offset(load, _with(env, var, x)) for x in range(limit)]
        steps = [b - a for a, b in zip(offsets, offsets[1:])]
        run = min(run, next((i + 1 for i, st in enumerate(steps) if st != 1), limit))
    return run


MOVES_BY_STEPS = 256
"""Steps of an iterator :func:`moves_by` checks (from 0): a block's loops are rarely longer
than a few thousand, and a wrap-around repeats within its first period."""


def moves_by(block, var, stride: int) -> bool:
    """True when every read of ``block`` moves by exactly ``stride`` elements at each of
    the first :data:`MOVES_BY_STEPS` steps of its iterator ``var`` (the others held at
    the middle of their ranges) -- no wrap-around within them, unlike the most common
    step :func:`strides_along` reports.  :class:`Unknown` for an index this module
    cannot evaluate."""
    extent = next((_extent(iv) for iv in block.iter_vars if iv.var.same_as(var)), None)
    if not extent:
        raise Unknown(f"{var} is no iterator of a constant extent")
    env = _at_middle(block)
    for load in _reads(block):
        offsets = [_offset(load, _with(env, var, x)) for x in range(min(extent, MOVES_BY_STEPS))]
        if any(b - a != stride for a, b in zip(offsets, offsets[1:])):
            return False
    return True


def _innermost(block):
    """``(var, extent)`` of the block's last spatial iterator with more than one value
    (the innermost loop of a block as the importer emits it), or None."""
    spatial = [iv for iv in block.iter_vars
               if iv.iter_type == tirx.IterVar.DataPar and (_extent(iv) or 0) > 1]
    return (spatial[-1].var, _extent(spatial[-1])) if spatial else None


def _stride(load, inner, env) -> int:
    """The most common change of ``load``'s flat offset when ``inner``'s var steps by one,
    sampled at a few points of its range (a reshape's wrap-around is one step of many)."""
    var, extent = inner
    starts = sorted({min(x, extent - 2) for x in (0, extent // 4, extent // 2, 3 * extent // 4)})
    steps = Counter()
    for x in starts:
        steps[_offset(load, _with(env, var, x + 1)) - _offset(load, _with(env, var, x))] += 1
    return steps.most_common(1)[0][0]  # ties: the first sampled (Counter keeps insertion order)


def _offset(load, env) -> int:
    """Row-major flat element offset of ``load`` (or a store) with the iterators valued by ``env``."""
    shape = [_const(d) for d in _shape(load)]
    flat = 0
    for dim, index in zip(shape, load.indices):
        flat = flat * dim + _value(index, env)
    return flat


_BINARY = {
    tirx.Add: operator.add, tirx.Sub: operator.sub, tirx.Mul: operator.mul,
    tirx.FloorDiv: operator.floordiv, tirx.FloorMod: operator.mod, tirx.Min: min, tirx.Max: max,
}


def _shape(access):
    """The shape of the buffer a load or a store addresses."""
    return (access.source if isinstance(access, TensorLoad) else access.buffer).ty.shape


def _value(expr, env) -> int:
    """The integer value of an index expression; :class:`Unknown` for anything beyond
    integer arithmetic on the iterators (a loaded index, a call)."""
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, tirx.Var):
        for v, value in env:
            if v.same_as(expr):
                return value
        raise Unknown(f"{expr} is not a block iterator")
    if isinstance(expr, tirx.Cast):
        return _value(expr.value, env)
    op = _BINARY.get(type(expr))
    if op is None:
        raise Unknown(type(expr).__name__)
    b = _value(expr.b, env)
    if op in (operator.floordiv, operator.mod) and b == 0:
        raise Unknown("division by zero")
    return op(_value(expr.a, env), b)


def _const(dim) -> int:
    if not isinstance(dim, tirx.IntImm):
        raise Unknown("dynamic shape")
    return int(dim.value)


def _extent(iv) -> int | None:
    ext = iv.dom.extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def reads_strided(block) -> bool:
    """True when some read of ``block`` moves by more than one element per step of
    its innermost spatial iterator (see the module docstring)."""
    return any(abs(s) > 1 for s in read_strides(block))


def is_one_of(buf, bufs) -> bool:
    """True when ``buf`` is (the same object as) one of ``bufs``."""
    return any(buf.same_as(b) for b in bufs)
