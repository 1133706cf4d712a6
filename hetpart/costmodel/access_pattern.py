"""How a kernel walks its inputs: a feature the predictor can see.

In: a kernel's PrimFunc (``graph.module[kernel.func]``).  Out: :data:`STRIDED` when
some buffer its output-writing blocks read is read with a non-unit stride along
the block's innermost spatial iterator (consecutive outputs read elements that are
not neighbours in memory: a transpose whose last output dim is not the input's last
dim), :data:`CONTIGUOUS` when every such read moves by 0 or 1 element per output,
and :data:`UNKNOWN` (``""``) when it cannot be told (no PrimFunc, no spatial
iterator, only data-dependent or dynamic indices).

How: the function's single-consumer spatial blocks are inlined into their consumers
first (:func:`hetpart.kernels.analysis.try_inline_spatial`, as the CPU and GPU rules
do), so a fused ``reshape -> transpose`` is judged by the composed index, not by
its steps (a reshape that a transpose undoes is contiguous).  Then each read's flat
element offset (row-major over the buffer's shape) is evaluated at a few points
where the innermost iterator steps by one, the other iterators held at the middle
of their ranges; the most common step is the read's stride.

Invariant: a deterministic function of the PrimFunc alone -- no target, no
hardware -- so it is the same for a measured kernel and for one never measured.

Why: FLOPs, bytes, op class and schedule rule cannot tell BERT's K^T transpose
(``[1,128,12,64] -> [1,12,64,128]``, 164 us on the H200 host's CPU) from the
head-split transpose of the same bytes (``-> [1,12,128,64]``, 14 us): the first
reads one float per cache line along its innermost loop, the second streams.
"""

from __future__ import annotations

import operator
from collections import Counter

import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir import TensorLoad

from .kernel_bench import kernel_primfunc, module_primfunc

CONTIGUOUS = "contiguous"
STRIDED = "strided"
UNKNOWN = ""


class _Unknown(Exception):
    """An index this analysis cannot evaluate (a gathered index, a dynamic shape)."""


def access_of(func) -> str:
    """The access pattern of ``func`` (see the module docstring); never raises."""
    if not isinstance(func, tirx.PrimFunc):
        return UNKNOWN
    try:
        sch = s_tir.Schedule(func)
        _inline(sch)
        strides = [s for blk in _output_blocks(sch) for s in _read_strides(blk)]
    except Exception:  # noqa: BLE001 - a function the schedule cannot take (opaque, extern): unknown
        return UNKNOWN
    if not strides:
        return UNKNOWN
    return STRIDED if any(abs(s) > 1 for s in strides) else CONTIGUOUS


def module_access(mod) -> str:
    """:func:`access_of` the (single) PrimFunc of a single-kernel module; ``""`` if it has none."""
    return access_of(module_primfunc(mod))


def kernel_access(graph, kernel) -> str:
    """:func:`access_of` the PrimFunc of ``kernel`` in ``graph.module`` (``""`` when the
    kernel calls no PrimFunc of the module, e.g. a packed library call)."""
    return access_of(kernel_primfunc(graph, kernel))


# --- the analysis ------------------------------------------------------------------
def _inline(sch: s_tir.Schedule) -> None:
    """Inline the intermediate spatial blocks, so reads are of the composed index."""
    from ..kernels.analysis import try_inline_spatial

    try_inline_spatial(sch)


def _output_blocks(sch: s_tir.Schedule) -> list:
    """The block statements of ``sch``'s function that write one of its parameters."""
    params = list(sch.mod["main"].params)
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    return [st for st in blocks if any(_is_one_of(w.source, params) for w in st.writes)]


def _read_strides(block) -> list[int]:
    """The stride (elements per step of the innermost spatial iterator) of each read in
    ``block`` whose offset can be evaluated; none when the block has no such iterator."""
    inner = _innermost(block)
    if inner is None:
        return []
    env = [(iv.var, _extent(iv) // 2) for iv in block.iter_vars if _extent(iv) is not None]
    written = [w.source for w in block.writes]
    loads: list = []
    tvm_ffi.structural_walk(block.body, (TensorLoad, loads.append), order="post")
    out = []
    for load in loads:
        if _is_one_of(load.source, written):  # a reduction's accumulator: read where it writes
            continue
        try:
            out.append(_stride(load, inner, env))
        except _Unknown:
            continue
    return out


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
        at = [(v, x if v.same_as(var) else value) for v, value in env]
        nxt = [(v, x + 1 if v.same_as(var) else value) for v, value in env]
        steps[_offset(load, nxt) - _offset(load, at)] += 1
    return steps.most_common(1)[0][0]  # ties: the first sampled (Counter keeps insertion order)


def _offset(load, env) -> int:
    """Row-major flat element offset of ``load`` with the iterators valued by ``env``."""
    shape = [_const(d) for d in load.source.ty.shape]
    flat = 0
    for dim, index in zip(shape, load.indices):
        flat = flat * dim + _value(index, env)
    return flat


_BINARY = {
    tirx.Add: operator.add, tirx.Sub: operator.sub, tirx.Mul: operator.mul,
    tirx.FloorDiv: operator.floordiv, tirx.FloorMod: operator.mod, tirx.Min: min, tirx.Max: max,
}


def _value(expr, env) -> int:
    """The integer value of an index expression; :class:`_Unknown` for anything beyond
    integer arithmetic on the iterators (a loaded index, a call)."""
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, tirx.Var):
        for v, value in env:
            if v.same_as(expr):
                return value
        raise _Unknown(f"{expr} is not a block iterator")
    if isinstance(expr, tirx.Cast):
        return _value(expr.value, env)
    op = _BINARY.get(type(expr))
    if op is None:
        raise _Unknown(type(expr).__name__)
    b = _value(expr.b, env)
    if op in (operator.floordiv, operator.mod) and b == 0:
        raise _Unknown("division by zero")
    return op(_value(expr.a, env), b)


def _const(dim) -> int:
    if not isinstance(dim, tirx.IntImm):
        raise _Unknown("dynamic shape")
    return int(dim.value)


def _extent(iv) -> int | None:
    ext = iv.dom.extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def _is_one_of(buf, bufs) -> bool:
    return any(buf.same_as(b) for b in bufs)
