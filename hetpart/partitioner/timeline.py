"""Simulated timelines of one inference, and the pipelined throughput bound.

Tasks are the partitions (on their device's track, ``cpu`` or ``cuda``) and the
copies (on ``h2d`` to the GPU or ``d2h`` back, each its own copy engine).  A copy
waits for the partition that makes its tensor; a partition waits for its copies and
for the same-device partitions it reads from.

Streamed weights (:mod:`.streaming`) have their own copy track, ``h2d_weights``: the
runtime's copy stream, which copies each streamed partition's weights into a slot of
a ring of ``stream_slots`` device buffers, in run order, as early as the ring allows.
Weight copy ``i`` (of the ``i``-th streamed partition) starts once copy ``i - 1`` is
done and the call of streamed partition ``i - stream_slots`` (the last reader of its
slot) has finished; streamed partition ``i`` waits for copy ``i``.

Mapped weights (:data:`~.choice.MAPPED`): a mapped partition reads its weights over the
same link during its call (its seconds hold those reads), so it and the weight copies take
the link in turns, in task order: a mapped partition waits for the weight copies made
before it, and a weight copy made after a mapped partition waits for it.  (Conservative:
its kernels' own GPU time overlaps no copy either.)  A layout with a mapped group is
timed through the task list (:func:`_schedule`), never :func:`sequential_ends`.

* ``sequential``: one task at a time (partitions run one after another; each copy
  right after the partition that makes it), except weight copies, which run on
  their track beside it under the rules above.  Its end is the ``latency`` objective.
* ``parallel``: list scheduling: tasks in order of their critical path to the end
  (upward rank, HEFT's priority), each on its track as soon as its inputs are there
  and the track is free.  Its end is the ``makespan`` objective.
* copy contention (:data:`COPY_CONTENTION`; issue 19): a streamed weight copy reads
  host memory, as a CPU partition's cold weight reads do, so where the profile measured
  both under each other (:meth:`hetpart.costmodel.CostModel.copy_contention`, the rates
  ``(r_cpu, r_copy)`` each keeps) a CPU partition and a weight copy that overlap in time
  slow each other: a CPU partition whose weight reads are the fraction ``f`` of its
  seconds progresses at ``1 / (f / r_cpu + 1 - f)`` while a copy runs, a copy at
  ``1 / (f / r_copy + 1 - f)`` beside it, each at its own rate otherwise.  Each task
  of ``s`` seconds that overlaps the other track for ``o`` seconds of wall time lasts
  ``s + o * (1 - rate)``; the overlaps depend on the lengths, so the schedule is redone
  with the lengths of the previous one's overlaps (:data:`CONTENTION_ROUNDS` at most,
  until no end moves).  The order stays the one without contention, and a start is a
  max of earlier ends plus lengths, so no task ends earlier than without it: the
  prediction is never faster.  Without a measurement nothing changes.
* :func:`pipeline_period`: with micro-batches pipelined, every track is busy with
  its own work once per micro-batch, so the slowest track bounds the period (a
  measured efficiency discounts plans that hand work between devices).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from .layout import Layout

WEIGHTS_TRACK = "h2d_weights"
TRACKS = ("cpu", "cuda", "h2d", "d2h", WEIGHTS_TRACK)

COPY_CONTENTION = True
"""Slow CPU weight reads and streamed weight copies that overlap by the profile's
contended rates (module docstring); False: price them as independent (the model before,
for A/Bs).  Without contended rates in the profile it changes nothing."""
CONTENTION_ROUNDS = 8
"""Most reschedules of the contention fixed point (module docstring)."""


class Task(NamedTuple):
    """``kind`` "partition" (``index`` into layout.groups), "copy" (into layout.transfers)
    or "weights" (the weight copy of streamed group ``index``).  Immutable; a named
    tuple, not a dataclass: a search builds hundreds of thousands of them."""

    kind: str
    index: int
    track: str
    seconds: float
    deps: tuple[int, ...]  # positions of earlier tasks in the task list


@dataclass(frozen=True)
class Scheduled:
    task: Task
    start: float
    end: float


def copy_track(device: str) -> str:
    return "h2d" if device == "cuda" else "d2h"


def tasks(layout: Layout) -> list[Task]:
    """All tasks in a topological order: input copies and the first ring's weight copies,
    then each partition followed by its copies and the weight copy its slot frees."""
    out: list[Task] = []
    done_group: dict[int, int] = {}
    copy_pos: dict[int, list[int]] = {i: [] for i in range(len(layout.groups))}  # reader group -> copies
    streamed = layout.streamed_groups
    slots = max(layout.stream_slots, 1)
    frees = {streamed[i - slots]: streamed[i] for i in range(slots, len(streamed))}  # group -> next in its slot
    position = {g: i for i, g in enumerate(streamed)}
    last_weights: list[int] = []
    last_mapped: list[int] = []  # the latest mapped partition's position: the link's last reader

    def add_weights(g):
        deps = tuple(last_weights[-1:]) + ((done_group[streamed[position[g] - slots]],)
                                           if position[g] >= slots else ()) + tuple(last_mapped[-1:])
        out.append(Task("weights", g, WEIGHTS_TRACK, layout.weight_seconds[g], tuple(sorted(deps))))
        last_weights.append(len(out) - 1)
        copy_pos[g].append(len(out) - 1)

    def add_copy(j, t):
        deps = () if t.src is None else (done_group[t.src],)
        out.append(Task("copy", j, copy_track(t.device), t.seconds, deps))
        for r in t.readers:
            copy_pos[r].append(len(out) - 1)

    for j, t in enumerate(layout.transfers):
        if t.src is None:
            add_copy(j, t)
    for g in streamed[:slots]:
        add_weights(g)
    by_src: dict[int, list[int]] = {}
    for j, t in enumerate(layout.transfers):
        if t.src is not None:
            by_src.setdefault(t.src, []).append(j)
    for i, g in enumerate(layout.groups):
        link = last_weights[-1:] if g.mapped else []  # a mapped call reads over the link after the copies
        deps = tuple(sorted(copy_pos[i] + [done_group[d] for d in layout.deps[i]] + link))
        out.append(Task("partition", i, g.device, layout.group_seconds[i], deps))
        done_group[i] = len(out) - 1
        if g.mapped:
            last_mapped.append(done_group[i])
        for j in by_src.get(i, ()):
            add_copy(j, layout.transfers[j])
        if i in frees:
            add_weights(frees[i])
    return out


def simulate(layout: Layout, mode: str) -> list[Scheduled]:
    """Start and end of every task under ``mode`` ("sequential" or "parallel")."""
    ts, order, start, end = _schedule(layout, mode)
    return [Scheduled(ts[i], start[i], end[i]) for i in order]


def end_time(layout: Layout, mode: str) -> float:
    """``finish(simulate(layout, mode))``, the same number, without building the
    :class:`Scheduled` list (what a search comparing candidates needs)."""
    if mode == "sequential" and FAST_SEQUENTIAL and not _contended(layout) and not _mapped(layout):
        return _sequential_end(layout)
    return max(_schedule(layout, mode)[3], default=0.0)


FAST_SEQUENTIAL = True
""":func:`end_time` of the sequential mode walks :func:`tasks`' order once, placing each
task as it is made (no :class:`Task` list; the same maxima and sums in the same order, so
the same float); False: through :func:`_schedule` (the code before, for A/Bs).  The
latency search prices each placement at up to 12 ring shapes: this was ~40% of BERT-large's
capped planning."""


def _contended(layout: Layout) -> bool:
    """Whether :func:`_schedule` redoes the schedule for copy contention."""
    return COPY_CONTENTION and layout.contention is not None and any(layout.read_seconds) \
        and any(layout.weight_seconds)


def _mapped(layout: Layout) -> bool:
    """Whether a group reads mapped weights over the link (timed through :func:`_schedule`)."""
    return any(g.mapped for g in layout.groups)


def sequential_end_times(layout: Layout, slot_counts) -> list[float]:
    """``[end_time(replace(layout, stream_slots=s), "sequential") for s in slot_counts]``
    (what :func:`~.evaluate.evaluate` prices per ring size), through :func:`sequential_ends`
    where :data:`FAST_SEQUENTIAL` allows."""
    if FAST_SEQUENTIAL and not _contended(layout) and not _mapped(layout):
        return sequential_ends(layout, slot_counts)
    return [end_time(replace(layout, stream_slots=s), "sequential") for s in slot_counts]


def _sequential_end(layout: Layout) -> float:
    """``max(_schedule(layout, "sequential")[3])`` without contention."""
    return sequential_ends(layout, (layout.stream_slots,))[0]


def sequential_ends(layout: Layout, slot_counts) -> list[float]:
    """:func:`end_time` ``(replace(layout, stream_slots=s), "sequential")`` for each ``s`` of
    ``slot_counts``, without contention (:func:`_contended` must be False), the layout's
    structure walked once for all.

    The same floats as :func:`_schedule`: in sequential mode partitions and activation
    copies run in :func:`tasks`' order on one clock (``begin = max(ready, clock)``), weight
    copy ``p`` begins at ``max`` of copy ``p - 1``'s end and the end of streamed partition
    ``p - slots`` (or at 0 / copy ``p - 1``'s end for the first ring), so it is computed
    when its partition needs it; every weight copy ends before its partition begins and the
    clock never goes back, so the latest end is the clock's or the last weight copy's."""
    groups, transfers = layout.groups, layout.transfers
    weight_seconds, group_seconds = layout.weight_seconds, layout.group_seconds
    streamed = layout.streamed_groups
    position = {g: i for i, g in enumerate(streamed)}
    reads: list[list[int]] = [[] for _ in groups]  # group -> transfers it reads
    after: list[list[int]] = [[] for _ in groups]  # group -> the copies it makes, in order
    for j, t in enumerate(transfers):
        for r in t.readers:
            reads[r].append(j)
        if t.src is not None:
            after[t.src].append(j)
    plan = [(reads[i], layout.deps[i], position.get(i), group_seconds[i], [(j, transfers[j].seconds) for j in after[i]])
            for i in range(len(groups))]
    head = [(j, t.seconds) for j, t in enumerate(transfers) if t.src is None]
    out = []
    # Ends are sums of non-negative seconds, so a max over them may start at 0.0 (the same
    # float as max() of the list: no NaN, no -0.0).
    for slots in slot_counts:
        slots = max(slots, 1)
        clock = 0.0
        copy_end = [0.0] * len(transfers)
        for j, sec in head:
            clock = max(0.0, clock) + sec
            copy_end[j] = clock
        done = [0.0] * len(groups)
        weights: list[float] = []
        for i, (rd, dp, pos, secs, outs) in enumerate(plan):
            ready = 0.0
            for j in rd:
                if copy_end[j] > ready:
                    ready = copy_end[j]
            for d in dp:
                if done[d] > ready:
                    ready = done[d]
            if pos is not None:
                while len(weights) <= pos:
                    p = len(weights)
                    last = weights[-1] if weights else 0.0
                    w = last
                    if p >= slots and done[streamed[p - slots]] > w:
                        w = done[streamed[p - slots]]
                    weights.append((w if w > last else last) + weight_seconds[streamed[p]])
                if weights[pos] > ready:
                    ready = weights[pos]
            clock = (ready if ready > clock else clock) + secs
            done[i] = clock
            for j, sec in outs:  # the copies of what it made, right after it
                clock = clock + sec
                copy_end[j] = clock
        out.append(max(clock, weights[-1]) if weights else clock)
    return out


def _schedule(layout: Layout, mode: str) -> tuple[list[Task], list[int] | range, list[float], list[float]]:
    """``(tasks, order, start, end)``: the tasks of ``layout`` (:func:`tasks`), the
    order ``mode`` schedules them in, and each task's start and end (by task index)."""
    ts = tasks(layout)
    if mode == "sequential":
        order = range(len(ts))
    elif mode == "parallel":
        rank = _upward_rank(ts)
        order = sorted(range(len(ts)), key=lambda i: (-rank[i], i))
    else:
        raise ValueError(f"unknown timeline mode {mode!r}")
    parallel = mode == "parallel"
    start, end = _place(ts, order, parallel, [t.seconds for t in ts])
    if COPY_CONTENTION and layout.contention is not None and any(layout.read_seconds) \
            and any(layout.weight_seconds):
        start, end = _contend(layout, ts, order, parallel, start, end)
    return ts, order, start, end


def _place(ts: list[Task], order, parallel: bool, seconds: list[float]) -> tuple[list[float], list[float]]:
    """Start and end of every task, in ``order``, task ``i`` lasting ``seconds[i]``."""
    start = [0.0] * len(ts)
    end = [0.0] * len(ts)
    free = {track: 0.0 for track in TRACKS}
    clock = 0.0
    for i in order:
        t = ts[i]
        ready = max([end[d] for d in t.deps]) if t.deps else 0.0
        if parallel or t.track == WEIGHTS_TRACK:  # the copy stream runs beside the clock
            begin = max(ready, free[t.track])
        else:  # without streamed weights ready <= clock: one task after another
            begin = max(ready, clock)
            clock = begin + seconds[i]
        start[i] = begin
        end[i] = begin + seconds[i]
        free[t.track] = end[i]
    return start, end


def _contend(layout: Layout, ts: list[Task], order, parallel: bool, start: list[float],
             end: list[float]) -> tuple[list[float], list[float]]:
    """The schedule with overlapping CPU weight reads and weight copies slowed (module
    docstring); ``start``/``end``: the schedule without.  Every length is at least its
    task's own seconds, so every end is at least the one given."""
    r_cpu, r_copy = layout.contention
    frac = {}
    for i, t in enumerate(ts):
        if t.kind == "partition" and t.track == "cpu" and t.seconds > 0:
            f = min(1.0, layout.read_seconds[t.index] / t.seconds)
            if f > 0:
                frac[i] = f
    cpu = sorted(frac, key=lambda i: start[i])
    copies = sorted((i for i, t in enumerate(ts) if t.kind == "weights" and t.seconds > 0), key=lambda i: start[i])
    base = [t.seconds for t in ts]
    for _ in range(CONTENTION_ROUNDS):
        seconds = list(base)
        j0 = 0
        for c in cpu:  # both tracks are serial: their intervals are sorted and disjoint
            while j0 < len(copies) and end[copies[j0]] <= start[c]:
                j0 += 1
            f = frac[c]
            j = j0
            while j < len(copies) and start[copies[j]] < end[c]:
                w = copies[j]
                o = min(end[c], end[w]) - max(start[c], start[w])
                if o > 0:
                    seconds[c] += o * (1.0 - 1.0 / (f / r_cpu + 1.0 - f))
                    seconds[w] += o * (1.0 - 1.0 / (f / r_copy + 1.0 - f))
                j += 1
        new_start, new_end = _place(ts, order, parallel, seconds)
        moved = max((abs(a - b) for a, b in zip(new_end, end)), default=0.0)
        start, end = new_start, new_end
        cpu.sort(key=lambda i: start[i])
        copies.sort(key=lambda i: start[i])
        if moved <= 1e-12:
            break
    return start, end


def finish(schedule: list[Scheduled]) -> float:
    return max((s.end for s in schedule), default=0.0)


def busy(layout: Layout) -> dict[str, float]:
    """Seconds each track works per inference."""
    load = {track: 0.0 for track in TRACKS}
    for g, s in zip(layout.groups, layout.group_seconds):
        load[g.device] += s
    for t in layout.transfers:
        load[copy_track(t.device)] += t.seconds
    load[WEIGHTS_TRACK] += sum(layout.weight_seconds)
    return load


SPLIT_PIPELINE_EFFICIENCY = 0.5
"""Measured pipelined throughput over the busiest-track bound, for plans whose
partitions span both devices.  On the H200 machine (``bench/e2e.py``, 2026-11-30,
20 workloads) such plans reached 0.26-0.74 of the bound, median 0.48: per batch the
runtime's host threads hand work between devices under one interpreter lock, and the
CPU partitions share the cores with them, neither of which the bound knows.  A plan
on one device has no such hand-off and keeps the bound.  Without this factor the
``throughput`` objective chose splits that ran at half the speed of all-CUDA."""


def pipeline_period(layout: Layout) -> float:
    """Seconds per micro-batch when micro-batches are pipelined: the busiest track,
    divided by :data:`SPLIT_PIPELINE_EFFICIENCY` when the partitions use both devices."""
    bound = max(busy(layout).values())
    devices = {g.device for g in layout.groups}
    return bound / SPLIT_PIPELINE_EFFICIENCY if len(devices) > 1 else bound


def _upward_rank(ts: list[Task]) -> list[float]:
    rank = [t.seconds for t in ts]
    for i in range(len(ts) - 1, -1, -1):  # successors come later in a topological list
        for d in ts[i].deps:
            rank[d] = max(rank[d], ts[d].seconds + rank[i])
    return rank
