"""The warp-specialised variant of the Hopper ``wgmma`` GEMM (issue 17, batch-32 spike; off by default).

A model build reaches it only through :data:`hetpart.kernels.wgmma_variant.WARP_PRODUCER_ROWS` (0: off):
from that many rows up a ``bf16``-family GEMM is substituted with ``producer="warp"``.

:func:`hetpart.kernels.wgmma_gemm.wgmma_gemm` with ``producer="warp"`` builds, instead of the
cp.async pipeline its consumer warpgroups issue themselves, CUTLASS's sm90 "warp-specialised"
structure:

* 384 threads: warpgroup 0 the *producer*, warpgroups 1 and 2 the two *consumers* of a
  ``128 x bn`` tile (each the m64 wgmmas of its 64 rows against the one B tile, exactly the
  ``swizzle="128b", consumers=2`` variant's layouts and descriptors: :class:`wgmma_layout.PipelinePlan`);
* per stage a *full* mbarrier (count 1: the producer's ``arrive.expect_tx`` of the stage's
  bytes, completed by the TMA's ``complete_tx``) and an *empty* one (count 2: one thread of
  each consumer warpgroup arrives once its wgmmas of that stage are done);
* the producer (``setmaxnreg.dec`` to :data:`PRODUCER_REGS`) has one thread loop over the K
  tiles: wait *empty* (parity ``(ko / stages + 1) % 2``: a fresh barrier's first round passes),
  ``mbarrier.arrive.expect_tx`` on *full*, then two TMA loads
  (``cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes``: A's
  ``128 x 128 B`` box, B's ``bn x 128 B`` box, 128B swizzle -- the same swizzled K-major layout
  the cp.async variant writes, from the same run-time 1024-byte boundary);
* the consumers (``setmaxnreg.inc`` to :data:`CONSUMER_REGS`) wait *full* (parity
  ``ko / stages % 2``), run the wgmmas, commit, ``wgmma.wait_group 1`` (one K tile in flight)
  and release the previous tile's stage on *empty*; the store is the two-consumer variant's.

The CUtensorMaps are built on the host by TVM 0.27 itself: ``T.tensormap_encode_tiled`` on a
``T.tvm_stack_alloca("tensormap", 1)`` before the launch (``runtime.cuTensorMapEncodeTiled`` in
``libtvm_runtime_cuda``); the kernel takes them as ``const __grid_constant__ CUtensorMap``
parameters.  No host-side C change was needed, so this uses real TMA, not the per-row bulk copy.

In:  the pipeline plan (:class:`wgmma_layout.PipelinePlan`) and the builder's options.
Out: the numbers and checks :func:`wgmma_gemm.wgmma_gemm` builds the variant from.
Invariant: the default ``producer="threads"`` builds every earlier kernel unchanged (tests
compare their CUDA C); rows past M are loaded as zeros by the TMA (out-of-bounds fill) and
still count towards the stage's transaction bytes.
"""

from __future__ import annotations

PRODUCERS = ("threads", "warp")
"""``threads``: the consumer warpgroups issue the cp.async pipeline (every earlier variant);
``warp``: a producer warpgroup fills the stages by TMA (this module)."""
PRODUCER_REGS = 40
"""Registers per thread the producer warpgroup keeps (``setmaxnreg.dec``; CUTLASS's 40)."""
CONSUMER_REGS = 232
"""Registers per thread each consumer warpgroup takes (``setmaxnreg.inc``; CUTLASS's 232):
``128 * 40 + 2 * 128 * 232 = 64512 <= 65536``.  The kernel must launch with 168 per thread
(``65536 / 384`` rounded down to 8) for the increase to find its registers in the CTA's pool."""
TMA_SWIZZLE_128B = 3
"""``CU_TENSOR_MAP_SWIZZLE_128B`` (CUtensorMapSwizzle: 0 none, 1 32B, 2 64B, 3 128B)."""


def check_options(prec, stages: int, swizzle: str, consumers: int) -> None:
    """Raise ValueError unless the warp-specialised variant supports these options: the
    pipeline (``stages >= 2``), the 128B swizzle (what TMA's SWIZZLE_128B writes), two consumer
    warpgroups, and a precision whose A and B are staged as they are in global memory (TMA
    copies bytes: ``bf16``, ``tf32``; ``f32a`` / ``tf32r`` convert A on the register path)."""
    if stages < 2 or swizzle != "128b" or consumers != 2:
        raise ValueError(f"producer='warp' needs stages >= 2, swizzle='128b', consumers=2; got stages={stages} "
                         f"swizzle={swizzle!r} consumers={consumers}")
    if prec.a_converted or prec.b_global != prec.smem:
        raise ValueError(f"producer='warp' copies A and B as they are (TMA): precision {prec.name} converts A")


def threads(plan) -> int:
    """Threads of one CTA: the producer warpgroup, then the consumers."""
    return 128 + plan.threads


def boxes(plan) -> tuple[tuple[int, int], tuple[int, int]]:
    """The TMA boxes (inner K elements, rows) of A and B: one stage's tiles, 128 bytes of K."""
    return (plan.precision.tile_k, plan.a_rows), (plan.precision.tile_k, plan.bn)


def stage_bytes(plan) -> int:
    """Bytes one stage's two TMA loads complete on its full barrier (A's and B's boxes)."""
    return (plan.a_size + plan.b_size) * plan.precision.elem_bytes


def tensor_map_vars():
    """Fresh TIR variables of type ``CUtensorMap*`` for A's and B's maps (bound in the host prelude)."""
    from tvm.script import tirx as T

    return (T.Var("tma_a", ty=T.handle("tensormap").ty), T.Var("tma_b", ty=T.handle("tensormap").ty))


__all__ = ["CONSUMER_REGS", "PRODUCERS", "PRODUCER_REGS", "TMA_SWIZZLE_128B", "boxes", "check_options",
           "stage_bytes", "tensor_map_vars", "threads"]
