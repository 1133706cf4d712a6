"""The K-loop schedule of the ``cp.async`` wgmma pipeline, and a model that checks it (issue 17, batch-32 spike).

In:  the pipeline depth ``stages``, the wgmma groups left in flight at the end of a K tile
     (``inflight``: 0, today's kernel -- ``wgmma.wait_group 0`` every tile, the tensor cores drain;
     1, CUTLASS's ``K_PIPE_MMAS = 1`` -- ``wgmma.wait_group 1``, one tile's wgmmas still running
     while the next tile's are issued) and the number of K tiles.
Out: :class:`Schedule` -- the numbers :func:`hetpart.kernels.wgmma_gemm.wgmma_gemm` builds its
     loop from (prologue tiles, how far ahead a K tile's refill loads, the ``cp.async.wait_group``
     and ``wgmma.wait_group`` immediates) -- and :meth:`Schedule.program`, the one thread's sequence
     of operations that loop issues, which :func:`check` replays.
Invariant: per K tile ``ko`` the kernel issues, in this order, ``cp.async.wait_group cp_wait``,
``fence.proxy.async`` + ``__syncthreads``, the wgmmas of tile ``ko`` (stage ``ko % stages``), ``commit``,
the cp.async refill of tile ``ko + lead`` into stage ``(ko + lead) % stages`` (if it exists), a
``cp.async`` commit, ``wgmma.wait_group mma_wait``.  With ``inflight = 1`` the refill goes into the
stage of tile ``ko - 2`` (``lead = stages - 2``): after the barrier of tile ``ko`` every thread has
passed tile ``ko - 1``'s ``wait_group 1``, so every warpgroup's wgmmas of tile ``ko - 2`` are done;
tile ``ko - 1``'s may still run (it reads stage ``(ko - 1) % stages``, which is not written).  So
``inflight = 1`` needs ``stages >= 3`` and keeps ``stages - 2`` tiles in flight instead of
``stages - 1``.  :func:`check` proves that for given numbers: no cp.async writes a stage a wgmma
not known complete (by every thread, before the last barrier) reads, and every wgmma reads a stage
whose tile's copies every thread waited for before the last barrier.
"""

from __future__ import annotations

from dataclasses import dataclass

INFLIGHTS = (0, 1)
"""wgmma groups a K tile leaves in flight: 0 (the default, today's code), 1 (CUTLASS's)."""


class ScheduleHazard(AssertionError):
    """:func:`check` found a read of a stage before its copies landed, or a write into a stage a
    pending wgmma reads."""


@dataclass(frozen=True)
class Schedule:
    """The cp.async pipeline's numbers for ``stages`` buffers, ``inflight`` wgmma groups kept in flight
    and ``k_tiles`` K tiles (module doc)."""

    stages: int
    inflight: int
    k_tiles: int

    def __post_init__(self):
        if self.inflight not in INFLIGHTS:
            raise ValueError(f"inflight must be one of {INFLIGHTS}, got {self.inflight}")
        if self.stages < 2 + self.inflight:
            raise ValueError(f"inflight={self.inflight} needs stages >= {2 + self.inflight}, got {self.stages}")
        if self.k_tiles < 0:
            raise ValueError(f"k_tiles must be >= 0, got {self.k_tiles}")

    @property
    def lead(self) -> int:
        """Iteration ``ko`` refills tile ``ko + lead`` (into stage ``(ko + lead) % stages``)."""
        return self.stages - 1 - self.inflight

    @property
    def prologue_groups(self) -> int:
        """cp.async groups committed before the loop (one per tile ``0 .. lead - 1``, empty past K)."""
        return self.lead

    @property
    def prologue(self) -> int:
        """Tiles loaded before the loop."""
        return min(self.lead, self.k_tiles)

    @property
    def cp_wait(self) -> int:
        """``cp.async.wait_group`` immediate at the top of a K tile: tile ``ko``'s group is group ``ko``
        (each earlier one committed exactly one), ``lead + ko`` are committed, so ``lead - 1`` may pend."""
        return self.lead - 1

    @property
    def mma_wait(self) -> int:
        """``wgmma.wait_group`` immediate at the end of a K tile."""
        return self.inflight

    def program(self, refill_lead: int | None = None) -> list[tuple]:
        """One thread's operations, in order: ``("load", tile, stage)`` (a cp.async chunk of the tile
        into the stage), ``("cp_commit",)``, ``("cp_wait", n)``, ``("barrier",)``, ``("mma", tile, stage)``,
        ``("mma_commit",)``, ``("mma_wait", n)``, ``("epilogue",)``.  ``refill_lead`` overrides
        :attr:`lead` in the loop only (the tests' wrong schedule)."""
        lead = self.lead if refill_lead is None else refill_lead
        s = self.stages
        ops: list[tuple] = []
        for t in range(self.prologue_groups):
            if t < self.prologue:
                ops.append(("load", t, t % s))
            ops.append(("cp_commit",))
        for ko in range(self.k_tiles):
            ops += [("cp_wait", self.cp_wait), ("barrier",), ("mma", ko, ko % s), ("mma_commit",)]
            if ko + lead < self.k_tiles:
                ops.append(("load", ko + lead, (ko + lead) % s))
            ops += [("cp_commit",), ("mma_wait", self.mma_wait)]
        if self.inflight:
            ops.append(("mma_wait", 0))
        ops.append(("epilogue",))
        return ops


def check(program: list[tuple], k_tiles: int) -> None:
    """Replay ``program`` (:meth:`Schedule.program`) as every thread of the CTA runs it (all threads
    issue the same operations; asynchronous copies and wgmmas complete only when a wait says so, and
    another thread's wait is known only after the next barrier).  Raise :class:`ScheduleHazard` on:
    a wgmma reading a stage whose current tile's copies are not known landed by every thread, or
    holding another tile; a copy into a stage that a wgmma not known complete by every thread
    reads; the epilogue before every wgmma completed; a K tile not multiplied exactly once, in order."""
    cp_groups: list[set] = []          # committed cp.async groups: the (tile, stage) each wrote
    cp_open: set = set()               # copies issued since the last commit
    cp_done_local = cp_done_global = 0  # groups 0 .. n-1 complete (this thread / every thread)
    mma_groups: list[set] = []
    mma_open: set = set()
    mma_done_local = mma_done_global = 0
    holds: dict[int, int] = {}         # stage -> the tile last written into it
    multiplied: list[int] = []
    for op in program:
        kind = op[0]
        if kind == "load":
            _, tile, stage = op
            for g in range(mma_done_global, len(mma_groups)):
                if any(st == stage for _, st in mma_groups[g]):
                    raise ScheduleHazard(f"tile {tile} copied into stage {stage} while wgmma group {g} may read it")
            if any(st == stage for _, st in mma_open):
                raise ScheduleHazard(f"tile {tile} copied into stage {stage} under an uncommitted wgmma")
            holds[stage] = tile
            cp_open.add((tile, stage))
        elif kind == "cp_commit":
            cp_groups.append(cp_open)
            cp_open = set()
        elif kind == "cp_wait":
            cp_done_local = max(cp_done_local, len(cp_groups) - op[1])
        elif kind == "mma_wait":
            mma_done_local = max(mma_done_local, len(mma_groups) - op[1])
        elif kind == "barrier":
            cp_done_global, mma_done_global = cp_done_local, mma_done_local
        elif kind == "mma":
            _, tile, stage = op
            if holds.get(stage) != tile:
                raise ScheduleHazard(f"wgmma of tile {tile} reads stage {stage}, which holds {holds.get(stage)}")
            writer = [g for g, writes in enumerate(cp_groups) if (tile, stage) in writes]
            if (tile, stage) in cp_open or not writer or writer[-1] >= cp_done_global:
                raise ScheduleHazard(f"wgmma of tile {tile} before every thread's copies of it landed")
            mma_open.add((tile, stage))
            multiplied.append(tile)
        elif kind == "mma_commit":
            mma_groups.append(mma_open)
            mma_open = set()
        elif kind == "epilogue":
            if mma_open or mma_done_local < len(mma_groups):
                raise ScheduleHazard("epilogue reads accumulators a wgmma still writes")
        else:
            raise ValueError(f"unknown operation {op!r}")
    if multiplied != list(range(k_tiles)):
        raise ScheduleHazard(f"K tiles multiplied {multiplied}, want 0 .. {k_tiles - 1} once each")


__all__ = ["INFLIGHTS", "Schedule", "ScheduleHazard", "check"]
