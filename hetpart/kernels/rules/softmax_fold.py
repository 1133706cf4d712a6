"""Softmax in three passes over a row: the row sum folded into the ``exp`` pass.

:class:`~hetpart.kernels.rules.cpu_reduction.CpuReduction` schedules a softmax row as
max, ``exp`` (stored into the output row), sum (reading the row back), scale: four
passes.  ONNX Runtime's MLAS makes three, accumulating the sum in registers while it
stores the exps.  :func:`fold_sum_into_exp` rewrites the scheduled function so: the sum's
vectorised partials step over the row's whole vectors (``rf[l] += out[k*L + l]``) first
computes and stores that vector of exps (``out[k*L + l] = exp(x[k*L + l] - max)``; LLVM
forwards the store to the add, no load), and the ``exp`` pass is left with the
elements the whole vectors do not cover (a ragged row's last ``n % L``: the guarded last
partials step still reads them from the output row, so they are computed before it,
as before).

In: a schedule from ``CpuReduction`` (after ``scratch_into_output`` and
``vector_row_tail``) and the names of its softmax ``exp`` blocks
(:func:`row_max_exp_blocks`).  Out: the schedule, changed in place where the shape
matches (else unchanged).  Invariant: every output element is the same expression of
the same inputs as before, and the sum adds the same values; where the unfolded sum
used the same number of accumulator chains (``cpu_reduction.FOLDED_SUM_CHAINS``: one;
rows under 32 vectors had one), in the same order, so results are bitwise the same --
rows of 32+ vectors (256 on AVX2, whisper's 1500) had two chains, so their sums differ
by rounding only (~2e-8 relative).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from ..analysis import const_extent
from ..row_tail import _fresh_lets, _region
from ..tir_expr import substitute, uses


def row_max_exp_blocks(func: tirx.PrimFunc, nonpositive, row=lambda n: True) -> list[str]:
    """Names of ``func``'s element-wise blocks whose value is exactly ``exp(arg)`` with
    ``nonpositive(arg)`` (softmax's ``exp(x - max(row))``, from
    :func:`~hetpart.kernels.rules.cpu_reduction.row_max_exps`), before ``replace_exp``,
    storing rows of a constant length ``n`` (the buffer's last extent) with ``row(n)``."""
    names = []

    def visit(b):
        store = b.body
        n = store.buffer.shape[-1] if isinstance(store, tirx.BufferStore) and store.buffer.shape else None
        if (b.init is None and isinstance(store, tirx.BufferStore) and isinstance(store.value, tvm.ir.Call)
                and isinstance(n, tirx.IntImm) and row(int(n))
                and store.value.op.same_as(tvm.ir.Op.get("tirx.exp"))
                and all(iv.iter_type == tirx.IterVar.DataPar for iv in b.iter_vars)
                and nonpositive(store.value.args[0])):
            names.append(b.name_hint)

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit))
    return names


def fold_sum_into_exp(sch: s_tir.Schedule, exp_names: list[str]) -> bool:
    """Fold each named ``exp`` block into the row sum that reads it (module docstring).
    Returns whether anything was folded."""
    done = False
    for name in exp_names:
        done |= _fold_one(sch, name)
    return done


def _blocks(sch) -> list:
    """Every block of ``sch``'s function, in pre-order."""
    found = []
    tvm_ffi.structural_walk(sch.mod["main"].body, (s_tir.SBlock, found.append), order="pre")
    return found


def _sum_update(sch, out):
    """The one unguarded partials update ``rf[.., l] = rf[.., l] + out[.., k*L + l]`` that
    reads ``out`` (a block without init), with its load of ``out``; else None."""
    found = []
    for b in _blocks(sch):
        store = b.body
        if b.init is not None or not isinstance(store, tirx.BufferStore) or not isinstance(store.value, tirx.Add):
            continue
        v = store.value
        for mine, other in ((v.a, v.b), (v.b, v.a)):
            if (isinstance(mine, tvm.ir.TensorLoad) and mine.source.same_as(store.buffer)
                    and tvm_ffi.structural_equal(mine.indices, store.indices)
                    and isinstance(other, tvm.ir.TensorLoad) and other.source.same_as(out)):
                found.append((b, other))
    if len(found) != 1:
        return None
    return found[0]


def _covered(sch, upd, load) -> int | None:
    """``K * L`` where ``load``'s last index is ``vk * L + vl`` (``vk`` a reduction
    iterator bound to a loop over ``[0, K)``, ``vl`` a data-parallel one over ``[0, L)``):
    the elements ``[0, K*L)`` of the row the update reads; else None."""
    last = list(load.indices)[-1]
    if not (isinstance(last, tirx.Add) and isinstance(last.a, tirx.Mul) and isinstance(last.b, tirx.Var)
            and isinstance(last.a.a, tirx.Var) and isinstance(last.a.b, tirx.IntImm)):
        return None
    ivs = {iv.var: iv for iv in upd.iter_vars}
    vk = next((iv for v, iv in ivs.items() if v.same_as(last.a.a)), None)
    vl = next((iv for v, iv in ivs.items() if v.same_as(last.b)), None)
    lanes = int(last.a.b.value)
    if (vk is None or vl is None or vk.iter_type != tirx.IterVar.CommReduce
            or vl.iter_type != tirx.IterVar.DataPar or _extent(vl.dom) != lanes):
        return None
    blk = sch.get_sblock(upd.name_hint)
    red = [lp for lp in sch.get_loops(blk) if _binds(sch, blk, lp, vk.var)]
    if len(red) != 1:
        return None
    loop = sch.get(red[0])
    if not (isinstance(loop.min, tirx.IntImm) and int(loop.min) == 0 and isinstance(loop.extent, tirx.IntImm)):
        return None
    return int(loop.extent) * lanes


def _extent(rng) -> int | None:
    """The constant extent of ``rng`` starting at 0, else None."""
    return int(rng.extent) if isinstance(rng.extent, tirx.IntImm) and int(rng.min) == 0 else None


def _realize(sch, blk):
    """The realize of ``blk`` directly under its innermost loop, else None."""
    loops = sch.get_loops(blk)
    body = sch.get(loops[-1]).body
    name = sch.get(blk).name_hint
    return body if isinstance(body, s_tir.SBlockRealize) and body.block.name_hint == name else None


def _binds(sch, blk, loop, var) -> bool:
    """Whether ``loop``'s variable is in the binding of ``blk``'s iterator ``var``."""
    realize = _realize(sch, blk)
    lv = sch.get(loop).loop_var
    return realize is not None and any(iv.var.same_as(var) and uses(val, lv)
                                       for iv, val in zip(realize.block.iter_vars, realize.iter_values))


def _row_loops(sch, blk, n: int):
    """The loops of ``blk`` (the exp pass) that run along its row of ``n``, innermost
    last: ``[serial o, vectorized i]`` with ``v = o * L + i`` over the whole row, or
    ``[serial j]`` with ``v = j`` over ``[0, m)``; with the row's extent covered
    (``m``).  None if neither."""
    realize = _realize(sch, blk)
    if realize is None:
        return None
    loops = sch.get_loops(blk)
    last_val = list(realize.iter_values)[-1]
    inner = sch.get(loops[-1])
    if isinstance(last_val, tirx.Var) and last_val.same_as(inner.loop_var) and inner.kind == tirx.ForKind.SERIAL:
        if isinstance(inner.min, tirx.IntImm) and int(inner.min) == 0:
            return [loops[-1]], const_extent(sch, loops[-1])
        return None
    if inner.kind == tirx.ForKind.VECTORIZED and len(loops) >= 2:
        outer = sch.get(loops[-2])
        l, o = const_extent(sch, loops[-1]), const_extent(sch, loops[-2])
        if (l and o and l * o == n and isinstance(last_val, tirx.Add) and isinstance(last_val.a, tirx.Mul)
                and last_val.a.a.same_as(outer.loop_var) and last_val.b.same_as(inner.loop_var)
                and isinstance(last_val.a.b, tirx.IntImm) and int(last_val.a.b) == l):
            return [loops[-2], loops[-1]], n
    return None


def _fold_one(sch, name: str) -> bool:
    """Fold exp block ``name`` into the sum update that reads its output (one, unguarded,
    over ``[0, covered)`` of the row), where the exp pass's row loop covers at least that
    much (``[0, m)``, ``m >= covered``; all of the row when it is whole vectors)."""
    try:
        blk = sch.get_sblock(name)
    except Exception:  # noqa: BLE001 -- no such block (inlined or renamed): nothing to fold
        return False
    exp_block = sch.get(blk)
    store = exp_block.body
    if not isinstance(store, tirx.BufferStore) or exp_block.init is not None:
        return False
    out = store.buffer
    n = out.shape[-1]
    if not isinstance(n, tirx.IntImm):
        return False
    n = int(n)
    found = _sum_update(sch, out)
    if found is None:
        return False
    upd, load = found
    covered = _covered(sch, upd, load)
    rows = _row_loops(sch, blk, n)
    if covered is None or rows is None:
        return False
    row_loops, m = rows
    if m is None or covered > m or (len(row_loops) == 2 and covered != n):
        return False
    if _depth(sch, blk, row_loops[0]) < 1:
        return False
    # exp_block's store indices are its iterators (or constants); map them onto the load's.
    mapping = []
    for e, u in zip(store.indices, load.indices):
        if isinstance(e, tirx.Var):
            mapping.append((e, u))
        elif not tvm_ffi.structural_equal(e, u):
            return False
    if any(not any(iv.var.same_as(k) for k, _ in mapping) for iv in exp_block.iter_vars):
        return False
    value = substitute(_fresh_lets(store.value), mapping)
    reads = [substitute(r, mapping) for r in exp_block.reads]
    _rewrite_update(sch, upd, tirx.BufferStore(out, value, list(load.indices)), reads,
                    _region(out, list(load.indices)))
    _shrink_exp(sch, sch.get_sblock(name), row_loops, covered, m)
    return True


def _depth(sch, blk, loop) -> int:
    """Index of ``loop`` among ``blk``'s loops."""
    return [i for i, lp in enumerate(sch.get_loops(blk)) if sch.get(lp).same_as(sch.get(loop))][0]


def _rewrite_update(sch, upd, exp_store, reads, write) -> None:
    """``upd``'s body preceded by ``exp_store``; its reads and writes widened to match."""
    new = s_tir.SBlock(upd.iter_vars, [*reads, *upd.reads], [write, *upd.writes], upd.name_hint,
                       tirx.SeqStmt([exp_store, upd.body]), upd.init, upd.alloc_buffers, upd.match_buffers,
                       upd.annotations)
    sch.state.replace(sch.get_sref(sch.get_sblock(upd.name_hint)), new, {upd: new})


def _shrink_exp(sch, blk, row_loops, covered: int, m: int) -> None:
    """Leave the exp pass the elements ``[covered, m)`` of its row loop (none: the loop
    is dropped from its parent)."""
    first = row_loops[0]
    loops = sch.get_loops(blk)
    idx = _depth(sch, blk, first)
    parent_sref = sch.get_sref(loops[idx - 1])
    parent = sch.get(loops[idx - 1])
    loop = sch.get(first)
    if covered < m:
        kept = tirx.For(loop.loop_var, tirx.IntImm(loop.loop_var.ty, covered),
                        tirx.IntImm(loop.loop_var.ty, m - covered), loop.kind, loop.body, loop.thread_binding,
                        loop.annotations)
        sch.state.replace(sch.get_sref(first), kept, {})
        return
    if isinstance(parent.body, tirx.SeqStmt):
        rest = [s for s in parent.body.seq if not s.same_as(loop)]
        body = rest[0] if len(rest) == 1 else tirx.SeqStmt(rest)
    else:
        body = tirx.Evaluate(tirx.IntImm("int32", 0))
    new_parent = tirx.For(parent.loop_var, parent.min, parent.extent, parent.kind, body, parent.thread_binding,
                          parent.annotations)
    sch.state.replace(parent_sref, new_parent, {})
