"""No vector loads or stores of ``bool`` buffers in CUDA kernels.

TVM 0.27's CUDA code generator prints a vector of two ``bool`` lanes as ``ushort2``:
a vectorized load of two adjacent booleans (one byte each) reads four bytes, as two
16-bit values, so each lane holds two neighbouring booleans at once (the second
lane reads past the pair).  Found on the H200: GPT-2-style attention whose causal
mask is a constant ``bool`` tensor (``Where(mask, scores / sqrt(d), -big)``) came out
with most masked-out scores kept -- dlight's ``Matmul`` rule vectorizes its
epilogue by two, mask load included.

The fix, at the schedule level (one place every GPU rule's result passes through,
:func:`hetpart.kernels.schedule_primfunc`): every vectorized loop around a block that
reads or writes a ``bool`` buffer becomes an unrolled loop.  The float loads and
stores of those blocks lose their vector width; no other block changes, so kernels
without ``bool`` buffers generate the same code as before.
"""

from __future__ import annotations

from tvm import s_tir, tirx


def _touches_bool(block: s_tir.SBlock) -> bool:
    # a read/write region is a TensorRegion (0.27: .source is the buffer)
    return any(str(region.source.dtype) == "bool" for region in [*block.reads, *block.writes])


def _blocks(sch: s_tir.Schedule) -> list:
    """Every block of ``sch``'s ``main``, outermost first."""
    out, todo = [], [sch.get_sblock("root")]
    while todo:
        block = todo.pop()
        out.append(block)
        todo.extend(sch.get_child_blocks(block))
    return out


def unvectorize_bool_access(sch: s_tir.Schedule) -> int:
    """Unroll instead of vectorize every loop around a block touching a ``bool``
    buffer in ``sch`` (changed in place).  Returns how many loops changed."""
    changed = 0
    for block in _blocks(sch):
        if not _touches_bool(sch.get(block)):
            continue
        for loop in sch.get_loops(block):
            if sch.get(loop).kind == tirx.ForKind.VECTORIZED:
                sch.unroll(loop)
                changed += 1
    return changed
