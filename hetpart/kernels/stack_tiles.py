"""Small per-task buffers on the stack: the CPU pipeline's one change to TVM's.

TVM's ``LowerTVMBuiltin`` keeps a CPU allocation of constant size on the stack only
below 1 KiB (``runtime::kMaxStackAlloca``); from 1 KiB on it becomes a
``TVMBackendAllocWorkspace`` / ``TVMBackendFreeWorkspace`` pair.  A register tile's
accumulator buffer (``register_tile``'s write cache) is allocated inside the parallel
loop, once per tile, and on AVX-512 the common tile of 8 rows x 2 zmm vectors is
exactly 1 KiB: every tile then paid a workspace call, a ``memset`` of its
accumulators and their store / reload, where a stack buffer is promoted to registers
by LLVM and vanishes (the same tile on AVX2, 8 x 2 ymm = 512 bytes, always did).

:func:`mark_stack_buffers` annotates each such allocation (global scope, constant
size of exactly 1 KiB: :data:`MIN_BYTES` to :data:`STACK_BYTES`) whose uses hold at most one
serial loop -- a tile over a plain contraction's one ``k`` loop, not one under a conv
window's ``ic, ry, rx`` nest, where LLVM spilled the promoted accumulators (resnet50's 7x7
stem 1.56x slower) -- with TVM's own ``disable_lower_builtin`` flag so
``LowerTVMBuiltin`` leaves it to the code generator's ``alloca``;
:func:`register` installs TVM's default pipeline with that pass run first in the
host finalisation.  Invariant: only the allocation's placement changes, never the
values computed.
"""

from __future__ import annotations

import tvm
from tvm import tirx

NAME = "hetpart_cpu"
"""Name under which the pipeline is registered (``tvm.compile(..., tir_pipeline=NAME)``)."""

MIN_BYTES = 1024
"""The least size marked: below it TVM keeps a buffer on the stack itself."""

STACK_BYTES = 1024
"""The largest: exactly AVX-512's 8 x 2 zmm tile.  Larger tiles (14 x 2 zmm, 1.75 KiB) once
promoted to registers spilled (resnet50's 14-row tiles 0.99-1.08x), so they keep TVM's
workspace, where LLVM already holds them in registers inside the reduction loop."""

ENABLED = True
"""Switch: False builds with TVM's default pipeline (the "before" of an A/B)."""

TILE_PRAGMA = "pragma_hetpart_stack_tile"
"""A loop annotation (``sch.annotate(loop, TILE_PRAGMA, max_bytes)``; TVM lowers a ``pragma_``
annotation to an ``AttrStmt`` around the loop) by which a schedule asks for the tile buffers under
that loop of :data:`MIN_BYTES` to ``max_bytes`` on the stack whatever their loop nest: the rule
knows its accumulators stay in registers (:mod:`.rules.cpu_blocked_conv`'s tiles, up to 2 KiB)."""

_DISABLE = "disable_lower_builtin"  # tvm::tirx::transform::kDisableLowerTVMBuiltin


def _stack_worthy(stmt: tirx.AllocBuffer, limit: int = STACK_BYTES) -> bool:
    buf = stmt.buffer
    if buf.scope() != "global" or _DISABLE in (stmt.annotations or {}):
        return False
    size = 1
    for dim in buf.shape:
        if not isinstance(dim, tirx.IntImm):
            return False
        size *= int(dim)
    nbytes = size * tvm.DataType(buf.dtype).bits * tvm.DataType(buf.dtype).lanes // 8
    return MIN_BYTES <= nbytes <= limit


def _marked(stmt: tirx.AllocBuffer) -> tirx.AllocBuffer:
    annotations = dict(stmt.annotations or {})
    annotations[_DISABLE] = tirx.IntImm("int32", 1)
    return tirx.AllocBuffer(stmt.buffer, annotations=annotations)


def _serial_depth(stmt) -> int:
    """The deepest nest of serial loops in ``stmt`` (unrolled and vector loops not counted)."""
    if isinstance(stmt, tirx.For):
        return int(stmt.kind == tirx.ForKind.SERIAL) + _serial_depth(stmt.body)
    if isinstance(stmt, tirx.SeqStmt):
        return max(map(_serial_depth, stmt.seq), default=0)
    if isinstance(stmt, (tirx.AttrStmt, tirx.While)):
        return _serial_depth(stmt.body)
    if isinstance(stmt, tirx.IfThenElse):
        return max(_serial_depth(stmt.then_case), _serial_depth(stmt.else_case) if stmt.else_case is not None else 0)
    return 0


def _rewrite(stmt, asked: int = 0):
    """``stmt`` with every stack-worthy ``AllocBuffer`` annotated; the same object where
    nothing below it changed (statement kinds without a body are left as they are).
    ``asked``: under a :data:`TILE_PRAGMA` loop, its byte limit (0: none)."""
    if isinstance(stmt, tirx.SeqStmt):
        seq = list(stmt.seq)
        for i, s in enumerate(seq):
            if isinstance(s, tirx.AllocBuffer):  # its uses are the statements after it
                worthy = (_stack_worthy(s, asked) if asked
                          else _stack_worthy(s) and max(map(_serial_depth, seq[i + 1:]), default=0) <= 1)
                seq[i] = _marked(s) if worthy else s
            else:
                seq[i] = _rewrite(s, asked)
        return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq)) else tirx.SeqStmt(seq)
    if isinstance(stmt, tirx.AttrStmt) and stmt.attr_key == TILE_PRAGMA:
        body = _rewrite(stmt.body, int(stmt.value) if isinstance(stmt.value, tirx.IntImm) else STACK_BYTES)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body)
    if isinstance(stmt, tirx.For):
        body = _rewrite(stmt.body, asked)
        return stmt if body.same_as(stmt.body) else tirx.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding, stmt.annotations, stmt.step)
    if isinstance(stmt, tirx.AttrStmt):
        body = _rewrite(stmt.body, asked)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body)
    if isinstance(stmt, tirx.IfThenElse):
        then = _rewrite(stmt.then_case, asked)
        other = _rewrite(stmt.else_case, asked) if stmt.else_case is not None else None
        if then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then, other)
    if isinstance(stmt, tirx.While):
        body = _rewrite(stmt.body, asked)
        return stmt if body.same_as(stmt.body) else tirx.While(stmt.condition, body)
    return stmt


@tvm.transform.module_pass(opt_level=0, name="hetpart.MarkStackBuffers")
def mark_stack_buffers(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Every PrimFunc of ``mod`` with its 1 KiB window-free tile buffers marked for the stack."""
    out = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            body = _rewrite(func.body)
            if not body.same_as(func.body):
                func = func.with_body(body)
        out[gv] = func
    return tvm.IRModule(out, attrs=mod.attrs)


def _pipeline():
    pipeline, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("s_tir")

    def host():
        return tvm.transform.Sequential([mark_stack_buffers, finalize_host()])

    return pipeline, host, finalize_device


def register() -> str:
    """Register the pipeline with TVM (idempotent); returns :data:`NAME`."""
    tvm.tirx.compilation_pipeline.register_tir_pipeline(NAME, _pipeline)
    return NAME
