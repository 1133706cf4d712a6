"""CPU schedule of the convolutions the register tile cannot pay for: depthwise (and
grouped ones with a strided window), with their padding and element-wise epilogue.

In: a schedule whose one reduction block is the convolution (:class:`MacBlock`),
its padding blocks named in ``keep`` (not inlined), the other producers inlined.
Out: the same schedule with one loop nest per *channel*::

    parallel  fused(n, c)                      # a channel per iteration
      pad     the channel's padded image       # while it is in cache
      serial  oh                               # an output row
        init  acc[c, oh, :] = 0
        serial window (ry, rx)                 # unrolled by LLVM
          ow: acc[c, oh, ow] += pad[c, oh*s + ry, ow*s + rx] * w[c, ry, rx]
      write   acc[c] -> out[n, c] with the fused epilogue (bias, SiLU, ...),
              the plane's oh x ow loops fused into one vector loop

Why: the nest as it was (padding, convolution and every epilogue block each a pass
over the whole tensor, all on one thread) ran EfficientNet-B0's depthwise layers at
1.3-3.7x ONNX Runtime's time on 2 threads (the SiLU pass alone as long as the
convolution).  Here the channels run in parallel and the padded channel and its
output plane stay in L1/L2 from the padding to the epilogue.  The rows' ``ow`` loop
is left to LLVM's vectoriser, which handles the strided window loads with shuffles
(see :mod:`.cpu_conv2d`); the write-back runs over the whole plane (a 14x14 plane is
one loop of 196, not 14 rows of 14, mostly vector tail), or in explicit ``lanes``-wide
vectors along rows that they divide (:func:`_vectorize_plane`).  Measured (2-core EPYC, 2 threads, one kernel with its
SiLU, least of 300 calls, main then this): 144x56x56 3x3 0.43 -> 0.17 ms (ORT
0.20-0.23), 5x5 stride 2 0.46 -> 0.10 (ORT 0.07-0.14), 672x14x14 5x5 0.34 -> 0.21
(ORT 0.08-0.11), 1152x7x7 3x3 0.17 -> 0.04 (ORT 0.036): 14x14 planes stay behind ONNX
Runtime's channel-vectorised NCHWc kernels.

Invariant: loops only are restructured; every output is the same sum over the window
in the same order (ry, rx), so results are bit-identical to the unscheduled function
(the ``exp`` of a SiLU epilogue aside: :mod:`hetpart.kernels.fast_exp`).
"""

from __future__ import annotations

from tvm import s_tir, tirx

from ..analysis import MacBlock, const_extent, fitting_lanes, fuse_epilogue, parallel_vectorize
from ..register_tile import PARALLEL_MIN_MACS, mac_count


def channel_rows(sch: s_tir.Schedule, mac: MacBlock, lanes: int) -> bool:
    """Apply the channel-row schedule (module docstring) to ``mac`` in ``sch``.

    Needs the normal form's loop order: the block's loops are its spatial iterators
    (the output's dims in order, unit ones dropped: c, oh, ow for batch 1) then its
    reduction ones, the last two spatial ones indexing the output's last two dims.
    Returns False, with ``sch`` possibly half-changed (the caller then starts again
    from the function), when the nest is not of that shape.
    """
    main = mac.block
    loops = sch.get_loops(main)
    ns, nr = len(mac.spatial), len(mac.reduce)
    if ns < 3 or nr < 1 or len(loops) != ns + nr or not _rows_last(mac):
        return False
    chans, (oh, ow), reds = loops[: ns - 2], loops[ns - 2: ns], loops[ns:]
    pads = list(sch.get_producers(main))
    wb = sch.cache_write(main, 0, "global")
    fuse_epilogue(sch, wb)
    sch.reorder(*chans, oh, *reds, ow)
    outer = sch.fuse(*chans) if len(chans) > 1 else chans[0]
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(outer)  # before decompose_reduction: it needs a complete reduction
    sch.reverse_compute_at(wb, outer, preserve_unit_loops=True)
    _vectorize_plane(sch, wb, lanes)
    for pad in pads:
        sch.compute_at(pad, outer, preserve_unit_loops=True)
    sch.decompose_reduction(main, reds[0])
    # Whatever else remains at the root (an epilogue that could not be fused).
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(blk)
        loops_blk = sch.get_loops(blk)
        if loops_blk and sch.get(loops_blk[0]).same_as(sch.get(outer)):
            continue
        if all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars):
            parallel_vectorize(sch, blk, lanes)
    return True


def _vectorize_plane(sch: s_tir.Schedule, wb, lanes: int) -> None:
    """The write-back's loops under the channel loop (the output plane, ``oh x ow``):
    where full ``lanes``-wide vectors divide a row (112 wide), ``ow`` split into explicit
    vectors; else the plane's loops fused into one loop that LLVM's vectoriser takes
    (a 14x14 plane is one loop of 196, not 14 rows of 14, mostly vector tail).

    Never an explicit vector over the *fused* plane: its indices are ``f // ow`` and
    ``f % ow`` of the fused iterator, which TVM does not fold back into ``f``, so each
    vector load and store became an AVX-512 gather and scatter (mobilenet_v2's 32x112x112
    depthwise + ReLU6: 0.59-1.05 ms, 0.10 ms without; 2-core EPYC, 2 threads)."""
    loops = sch.get_loops(wb)[1:]
    if not loops:
        return
    if fitting_lanes(const_extent(sch, loops[-1]) or 0, lanes) == lanes:
        sch.vectorize(sch.split(loops[-1], factors=[None, lanes])[1])
    elif len(loops) > 1:
        sch.fuse(*loops)


def _rows_last(mac: MacBlock) -> bool:
    """Whether the last two spatial iterators are the output's last two indices."""
    tail = mac.out_indices[-2:]
    return all(isinstance(e, tirx.Var) and e.same_as(v) for e, v in zip(tail, mac.spatial[-2:]))


__all__ = ["channel_rows"]
