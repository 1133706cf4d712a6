"""Recognising a channel-blocked (``NCHW{c}c``) convolution for :mod:`.rules.cpu_blocked_conv`, and
the records its tile is planned with.

In: a :class:`~.analysis.MacBlock` (the multiply-accumulate block of a fused conv PrimFunc).  Out:
:func:`blocked_conv` -- a :class:`BlockedConv` (the block's iterators by role: output dims, the
blocked reduction ``ic``, the window, which operand is the data), or None for another block;
:class:`BlockedPlan` is the register tile :func:`.rules.cpu_blocked_conv.blocked_plan` chooses for it;
:func:`conv_strides` reads a recognised conv's stride from its data index.
The index predicates (``_is``, ``_unit``, ``_at``, ``_reads``, ``_window``, ``_blocked_out``) are shared with the
rule's plan, tile and depthwise code.

Invariant: reading only -- nothing here schedules or changes the block.  The one switch read here,
``PLAIN_INPUT``, lives in :mod:`.rules.cpu_blocked_conv` (where tools and tests set it) and is read
from there at call time (``cb.PLAIN_INPUT``): this module holds no copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm.sym
from tvm import tirx
from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

from .analysis import MacBlock


class _Owner:
    """The switches' module, :mod:`.rules.cpu_blocked_conv`, read at call time (imported lazily: it
    imports this module); :mod:`.blocked_conv_batch` reads its switches through the same ``cb``."""

    def __getattr__(self, name):
        from .rules import cpu_blocked_conv

        return getattr(cpu_blocked_conv, name)


cb = _Owner()


@dataclass(frozen=True)
class BlockedConv:
    """The iterators of a channel-blocked convolution block (:func:`blocked_conv`).

    ``n, oc_chunk, oh, ow, oc_block``: the output's five dims in order; ``ic``: the
    reduction iterator read as ``ic // c`` and ``ic % c`` (``c`` = ``ic_block``); ``window``:
    the other reduction iterators (``kh``, ``kw``); ``data``: the operand index (0/1) of the
    windowed image, the weight the other."""

    n: tirx.Var | None
    oc_chunk: tirx.Var | None
    oh: tirx.Var | None
    ow: tirx.Var
    oc_block: tirx.Var
    ic: tirx.Var
    ic_block: int
    window: tuple
    data: int


@dataclass(frozen=True)
class BlockedPlan:
    """The tile of a :class:`BlockedConv`: ``blocks`` output-channel blocks (of ``vectors``
    SIMD vectors of ``lanes`` each) by ``columns`` output columns."""

    blocks: int
    columns: int
    vectors: int
    lanes: int
    plane: bool = False  # the columns run along the fused plane oh * ow (:data:`PLANE_1X1`)
    row_group: int = 1  # output rows of one parallel iteration (a depthwise tile: DEPTHWISE_ROW_GROUPS)

    @property
    def accumulators(self) -> int:
        return self.blocks * self.vectors * self.columns

    def describe(self) -> str:
        return (f"{self.blocks} oc blocks x {self.vectors}x{self.lanes} lanes x {self.columns} "
                + ("plane pixels" if self.plane else "columns"))


def _is(e, var) -> bool:
    return isinstance(e, tirx.Var) and e.same_as(var)


def _div_mod(e, kind) -> tuple | None:
    """``(var, divisor)`` where ``e`` is ``var // divisor`` (``kind`` FloorDiv) or ``var %
    divisor`` (FloorMod) of a constant divisor, else None."""
    if isinstance(e, kind) and isinstance(e.a, tirx.Var) and isinstance(e.b, tirx.IntImm):
        return e.a, int(e.b)
    return None


def _same(found, var, divisor: int) -> bool:
    return found is not None and found[0].same_as(var) and found[1] == divisor


def _unit(e) -> bool:
    """An index the block's import folded to 0 (a dim of extent 1: batch 1, a 1x1 window)."""
    return isinstance(e, tirx.IntImm) and int(e) == 0


def _at(e, var) -> bool:
    """Index ``e`` is ``var``, or 0 where ``var`` is None (a unit dim)."""
    return _unit(e) if var is None else _is(e, var)


def _channel_split(div, mod, mac: MacBlock) -> tuple | None:
    """``(ic, c)`` where indices ``div``, ``mod`` are ``ic // c``, ``ic % c`` -- or ``0``,
    ``ic`` (one block of input channels: ``c`` is ``ic``'s extent) -- else None."""
    d, m = _div_mod(div, tirx.FloorDiv), _div_mod(mod, tirx.FloorMod)
    if d is not None and m is not None and d[0].same_as(m[0]) and d[1] == m[1]:
        return d
    if _unit(div) and isinstance(mod, tirx.Var) and any(mod.same_as(r) for r in mac.reduce):
        return mod, mac.extents[mod]
    return None


def _blocked_out(mac):
    """``(n, chunk, oh, ow, lane)`` of a block whose output is ``[n, c // b, oh, ow, c % b]``
    indexed by bare spatial iterators (``n``, ``chunk``, ``oh`` may be unit: None), else None
    (``ow`` and ``lane`` must be iterators)."""
    out = mac.out_indices
    if len(out) != 5 or not all(isinstance(e, tirx.Var) or _unit(e) for e in out):
        return None
    its = tuple(e if isinstance(e, tirx.Var) else None for e in out)
    return None if its[3] is None or its[4] is None else its


def blocked_conv(mac: MacBlock) -> BlockedConv | None:
    """The block as a channel-blocked convolution, or None (another block).  In: a
    :class:`MacBlock`.  Out: its iterators, when its output is ``[n, oc_chunk, oh, ow,
    oc_block]`` of bare spatial iterators (``n``, ``oc_chunk``, ``oh`` may be 0: a unit
    dim, None in the result), one operand (the weight) ``[oc_chunk, ic // c, kh, kw, ic % c,
    oc_block]`` and the other (the data) ``[n, ic // c, ., ., ic % c]`` whose two middle
    indices read ``oh`` and ``ow``."""
    out = _blocked_out(mac)
    if out is None:
        return None
    n, occ, oh, ow, ocb = out
    for data in (0, 1):
        w_idx, d_idx = mac.operands[1 - data][1], mac.operands[data][1]
        if cb.PLAIN_INPUT and len(w_idx) == 5 and len(d_idx) == 4:
            stem = _plain_input(mac, out, w_idx, d_idx, data)
            if stem is not None:
                return stem
        if len(w_idx) != 6 or len(d_idx) != 5:
            continue
        split, d_split = _channel_split(w_idx[1], w_idx[4], mac), _channel_split(d_idx[1], d_idx[4], mac)
        if split is None or d_split is None:
            continue
        ic, c = split
        if not (d_split[0].same_as(ic) and d_split[1] == c):
            continue
        if not (_at(w_idx[0], occ) and _is(w_idx[5], ocb) and _at(d_idx[0], n)):
            continue
        window = _window(w_idx[2:4], mac)
        if window is None:
            continue
        if not ((oh is None or _reads(d_idx[2], oh)) and _reads(d_idx[3], ow)):
            continue
        if mac.extents[ic] % c or len(mac.reduce) != 1 + len(window):
            continue
        return BlockedConv(n, occ, oh, ow, ocb, ic, c, window, data)
    return None


def conv_strides(mac: MacBlock, conv: BlockedConv) -> tuple[int | None, int | None]:
    """The stride of ``conv`` along its output rows and columns: the coefficient of ``oh`` in the
    data's row index and of ``ow`` in its column index (``oh*s + kh``: ``s``).  In: a block
    :func:`blocked_conv` recognised and its result.  Out: ``(row, column)``; the row None where
    ``oh`` is a unit dim, either None where its index is not linear in the iterator with a
    constant step."""
    d_idx = mac.operands[conv.data][1]

    def step(e, var):
        coef = tvm.sym.detect_linear_equation(e, [var])
        return int(coef[0]) if len(coef) == 2 and isinstance(coef[0], tirx.IntImm) else None

    return (None if conv.oh is None else step(d_idx[2], conv.oh)), step(d_idx[3], conv.ow)


def _plain_input(mac: MacBlock, out, w_idx, d_idx, data: int) -> BlockedConv | None:
    """The :class:`BlockedConv` of a block whose weight is ``[oc_chunk, ic, kh, kw, oc_block]``
    and data ``[n, ic, ., .]`` (plain input channels: blocks of one, ``ic_block`` 1) with the
    same conditions on the rest as :func:`blocked_conv`, else None."""
    n, occ, oh, ow, ocb = out
    ic = w_idx[1]
    if not (isinstance(ic, tirx.Var) and any(ic.same_as(r) for r in mac.reduce) and _is(d_idx[1], ic)):
        return None
    if not (_at(w_idx[0], occ) and _is(w_idx[4], ocb) and _at(d_idx[0], n)):
        return None
    window = _window(w_idx[2:4], mac)
    if window is None:
        return None
    if not ((oh is None or _reads(d_idx[2], oh)) and _reads(d_idx[3], ow)) or len(mac.reduce) != 1 + len(window):
        return None
    return BlockedConv(n, occ, oh, ow, ocb, ic, 1, window, data)


def _window(indices, mac: MacBlock) -> tuple | None:
    """The window iterators among a weight's ``(kh, kw)`` ``indices`` (unit dims left out), or
    None unless each is a bare reduction iterator of ``mac``."""
    window = tuple(e for e in indices if not _unit(e))
    if not all(isinstance(e, tirx.Var) and any(e.same_as(r) for r in mac.reduce) for e in window):
        return None
    return window


def _reads(e, var) -> bool:
    """Whether index ``e`` uses ``var`` (``oh``, ``oh*s``, ``oh*s + kh``)."""
    return any(u.same_as(var) for u in collect_vars_used_in_prim_expr(e))
