"""Software prefetch of a CPU register tile's next weights (issue 18: cold weights).

A channel-blocked convolution (:mod:`.rules.cpu_blocked_conv`) tiles its output as
``parallel fused(n, oc_chunk / B, oh, ow / R)``: the tiles of one block group (``B`` output
channel blocks) read the same ``B`` weight panels -- one contiguous range of the weight, a
*group* -- and the next group's range follows it in memory.  Where the weight does not fit a
core's L2 (resnet50's 7x7 stage: 4-9 MiB a conv, read once per call from L3 or DRAM), the first
tile of every group waits on its panels: the hardware prefetcher follows the stream, but only as
fast as the tile asks for it, while the FMAs idle.  ONNX Runtime pays the same cost.

:func:`mark` annotates such a tile's loops (the tile loop :data:`TILE_KEY`, its outer reduction
loop over input-channel chunks :data:`STEP_KEY`), and :func:`insert` (run on the scheduled
function, after every schedule primitive) gives that reduction loop's body a first statement:
``n`` prefetches (``llvm.prefetch``, :data:`LOCALITY`) of the *next* group's weight lines, spread
evenly over the current group's tiles and reduction steps -- tile ``q`` of ``T``, step ``i`` of
``K`` fetches lines ``(q*K + i)*n .. + n`` of group ``(g + 1) % P`` (the last group fetches the
first: the next image's, or the next call's) -- so the next group's panels are in L2 when its
first tile starts.

Switch: :data:`WEIGHT_PREFETCH`.  Invariant: prefetches only (no value read or written changes;
a prefetch never faults).  In: a :class:`tvm.s_tir.Schedule` being tiled (:func:`mark`), a
scheduled PrimFunc (:func:`insert`).  Out: the annotations; the function with the prefetches
and without the annotations.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir import TensorLoad

from .analysis import buffer_bytes

WEIGHT_PREFETCH = True
"""Whether :mod:`.rules.cpu_blocked_conv`'s tiles of a weight of :data:`MIN_WEIGHT_BYTES` or more
prefetch the next block group's weights (False: as before; A/B runs,
``--before hetpart.kernels.weight_prefetch.WEIGHT_PREFETCH=0``)."""

MIN_WEIGHT_BYTES = 1 << 18
"""The smallest weight prefetched (256 KiB).  Measured in resnet50 (NCHW16c, in whole runs,
``tools/cpu_insitu_ab.py``, 1 AVX-512 thread, least of 30): from 2 MiB down to 256 KiB added
256->1024 / 1024->256 1x1 on 14x14 (1 MiB) 0.88 / 0.94, 3x3 128 on 28x28 0.98, 128->512 on 28x28
0.97; down to 64 KiB added only the 56x56 stage's noise (0.96-0.99, unchanged kernels 0.995)."""

LOCALITY = 2
"""``llvm.prefetch``'s locality: 2 is x86's ``prefetcht1`` (into L2; the group's tiles then read
it into L1 themselves).  3 (``prefetcht0``, into L1) lost in resnet50's whole runs: the 7x7
stage's convs 1.03-1.08 against 2."""

LINE_BYTES = 64
"""A cache line."""

TILE_KEY = "hetpart_prefetch_tile"
"""Loop annotation: the tile loop (its variable indexes the tiles: group ``t // T % P``)."""

STEP_KEY = "hetpart_prefetch_weights"
"""Loop annotation of the tile's outermost reduction loop: ``[weight name, P groups, T tiles a
group, n lines a step, group elements, elements a line]``."""

LEVEL_KEY = "hetpart_prefetch_level"
"""Loop annotation: the reduction loops (their depth, 0 outermost) whose iterations index the
prefetched lines; the innermost of them gets the prefetches."""


MAX_STEP_LINES = 16
"""The most prefetches one reduction step issues back to back: :func:`mark` places them in the
outermost reduction loop where that many (or fewer) cover the next group (a 3x3 over 512 channels
on 7x7: 42 lines per input-channel chunk, 14 per window row).  In resnet50's whole runs: all in the
input-channel-chunk loop (no bound) lost on the 3x3s of 512 (1.07 / 1.13 against no prefetch);
8 (the window column) 0.90 / 0.92; 16 (the window row) 0.985 / 0.97 of 8; 3 put the 1x1s' in the
innermost loop (2048->512 1.85x)."""


MIN_GROUPS_PER_CORE = 2
"""The fewest block groups a core's share of the tile loop must hold (TVM's parallel loop gives
each of the target's ``num-cores`` threads one contiguous range of tiles) for the prefetches:
a core prefetches the group after its current one, which is another core's where its range
ends -- with one group a core (resnet50's 7x7 stage on 16 cores at batch 1) every prefetch
would be such a wasted read."""


def mark(sch: s_tir.Schedule, tile, reduction: list, weight, groups: int, tiles: int, cores: int = 1,
         parts: int = 1, span: int = 0) -> bool:
    """Annotate ``tile`` (the fused tile loop: group ``t // tiles % groups``, tile ``t % tiles``
    of it) and the outer loops of ``reduction`` (the tile's reduction loops, outermost first,
    perfectly nested directly under it, of constant extents) for :func:`insert`, where
    :data:`WEIGHT_PREFETCH` is on, ``weight`` (the weight's buffer var, whose ``groups`` equal
    contiguous ranges of its outermost dim the groups read) is :data:`MIN_WEIGHT_BYTES` or more
    and there are two groups or more.  The prefetches go into the outermost of ``reduction``
    whose steps then issue :data:`MAX_STEP_LINES` or fewer; ``cores``: the target's
    (:data:`MIN_GROUPS_PER_CORE`).  ``parts`` > 1: the weight's groups are ``parts`` runs of
    ``groups`` each, run ``t // span`` (``span`` tile-loop iterations a run: the tile loop of
    :data:`.rules.cpu_blocked_conv.BATCH_GROUP_SPLIT`, ``(part, n, groups, tiles)``), and the next
    group is the next of the same run (after its last, its first: the next image's).  Returns
    whether it marked; never for a weight of a symbolic dim (its size unknown: the byte counts
    below, :func:`~.analysis.buffer_bytes`, are of constant shapes)."""
    if not WEIGHT_PREFETCH or groups < 2 or tiles < 1 or not reduction \
            or not all(isinstance(d, tirx.IntImm) for d in weight.shape) or buffer_bytes(weight) < MIN_WEIGHT_BYTES:
        return False
    total = sch.get(tile).extent
    if not isinstance(total, tirx.IntImm) or -(-int(total) // max(1, cores)) < MIN_GROUPS_PER_CORE * tiles:
        return False
    extents = [sch.get(lp).extent for lp in reduction]
    if not all(isinstance(e, tirx.IntImm) and int(e) >= 1 for e in extents):
        return False
    elems = buffer_bytes(weight) // max(1, tvm.runtime.DataType(str(weight.ty.dtype)).bits // 8)
    if len(weight.shape) < 2 or int(weight.shape[0]) % (groups * parts) or (parts > 1 and span < 1):
        return False
    per_group = elems // (groups * parts)
    line = max(1, LINE_BYTES * elems // buffer_bytes(weight))
    lines = -(-per_group // line)
    steps, level = tiles, 0
    for level, e in enumerate(extents):
        steps *= int(e)
        if -(-lines // steps) <= MAX_STEP_LINES:
            break
    n = -(-lines // steps)
    sch.annotate(tile, TILE_KEY, 1)
    for k, lp in enumerate(reduction[:level + 1]):
        sch.annotate(lp, LEVEL_KEY, k)
    sch.annotate(reduction[0], STEP_KEY, [weight.name, groups, tiles, n, per_group, line, parts, span])
    return True


def _prefetches(info, nest: list, tile: tirx.For, weight) -> tirx.Stmt:
    """The ``n`` prefetches the module docstring describes, for the reduction loops ``nest``
    (outermost first; the prefetches go into the last) under ``tile``; ``info`` the
    :data:`STEP_KEY` annotation."""
    _, groups, tiles, n, per_group, line, parts, span = info
    groups, tiles, n, per_group, line, parts, span = (int(v) for v in (groups, tiles, n, per_group, line, parts, span))
    t = tile.loop_var
    dt = str(t.ty.dtype)

    def c(v: int):
        return tirx.const(v, dt)

    def cast(e):
        return e if str(e.ty.dtype) == dt else tirx.Cast(dt, e)

    group = tirx.floormod(tirx.floordiv(t - cast(tile.min), c(tiles)), c(groups))
    step = tirx.floormod(t - cast(tile.min), c(tiles))
    for lp in nest:
        step = step * cast(lp.extent) + (cast(lp.loop_var) - cast(lp.min))
    nxt = tirx.floormod(group + c(1), c(groups))
    if parts > 1:  # the next group of the same run of groups
        nxt = tirx.floordiv(t - cast(tile.min), c(span)) * c(groups) + nxt
    j = tirx.Var("prefetch_j", tvm.ir.PrimType(dt))
    within_group = tirx.min((step * c(n) + j) * c(line), c(per_group - line))
    shape = [int(d) for d in weight.shape]
    # The group's first row of the outermost dim, then the element offset as the last index: the
    # flattened address is the same, with no div / mod per prefetch (never bounds-checked).
    rows = shape[0] // (groups * parts)
    idx = [nxt * c(rows)] + [c(0)] * (len(shape) - 2) + [within_group]
    addr = tirx.address_of(tirx.BufferLoad(weight, idx))
    call = tirx.call_intrin("void", "tirx.prefetch", addr, tirx.const(0, "int32"), tirx.const(LOCALITY, "int32"),
                            tirx.const(1, "int32"))
    return tirx.For(j, c(0), c(n), tirx.ForKind.UNROLLED, tirx.Evaluate(call))


def _without(loop: tirx.For, key: str, body=None) -> tirx.For:
    ann = {k: v for k, v in (loop.annotations or {}).items() if k != key}
    return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, loop.body if body is None else body,
                    loop.thread_binding, ann, loop.step)


def insert(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with the prefetches of every :data:`STEP_KEY` loop under a :data:`TILE_KEY` loop
    (module docstring) and both annotations removed; ``func`` itself where it has none."""
    tiles, steps = [], []

    def seen(f):
        ann = f.annotations or {}
        if TILE_KEY in ann:
            tiles.append(f)
        if STEP_KEY in ann:
            steps.append(f)

    tvm_ffi.structural_walk(func.body, (tirx.For, seen))
    if not steps:
        return func
    if len(tiles) != 1:
        raise ValueError(f"weight prefetch: {len(tiles)} tile loops marked, want 1")
    tile = tiles[0]
    names = {str(s.annotations[STEP_KEY][0]) for s in steps}
    loads = []

    def load(ld):
        if ld.source.name in names:
            loads.append(ld.source)

    tvm_ffi.structural_walk(func.body, (TensorLoad, load))
    if not loads:
        raise ValueError(f"weight prefetch: no load of {sorted(names)}")
    weight = loads[0]

    def rewrite(f):
        ann = f.annotations or {}
        if STEP_KEY in ann:
            nest = [f]

            def level(g):
                if LEVEL_KEY in (g.annotations or {}) and int(g.annotations[LEVEL_KEY]) > 0:
                    nest.append(g)

            tvm_ffi.structural_walk(f.body, (tirx.For, level), order="pre")
            nest.sort(key=lambda g: int(g.annotations[LEVEL_KEY]))
            code = _prefetches(ann[STEP_KEY], nest, tile, weight)
            last = nest[-1].loop_var

            def place(g):
                if LEVEL_KEY not in (g.annotations or {}):
                    return g
                body = tirx.SeqStmt([code, g.body]) if g.loop_var.same_as(last) else g.body
                return _without(g, LEVEL_KEY, body)

            if len(nest) == 1:
                return _without(_without(f, STEP_KEY), LEVEL_KEY, tirx.SeqStmt([code, f.body]))
            return _without(_without(f, STEP_KEY, tvm_ffi.structural_map(f.body, (tirx.For, place))), LEVEL_KEY)
        if TILE_KEY in ann:
            return _without(f, TILE_KEY)
        return f

    return func.with_body(tvm_ffi.structural_map(func.body, (tirx.For, rewrite)))
