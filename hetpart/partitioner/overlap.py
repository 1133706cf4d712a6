"""Seeds that run the CPU's weight reads and the copy stream's weight copies at the same time.

At batch-1 decode under a cap, the weights that do not stay resident are read either by
the CPU (at its memory bandwidth) or by the copy stream (at the link's).  On the latency
objective's timeline (:mod:`.timeline`) a CPU partition and a CUDA partition never
overlap, but a weight copy runs beside both: while the CPU reads layer ``i``'s matrices,
the copy stream can bring in a matrix that a CUDA call uses right after.  So with ``N``
non-resident bytes split into ``C`` read by the CPU and ``S`` streamed, a step costs about
``max(C / cpu_bw + gpu, S / link_bw)`` instead of ``N / cpu_bw + gpu`` -- if CPU and
streamed work alternate finely enough for a small ring.  The search of :mod:`.streaming`
does not reach such a placement from its seeds: streaming one more kernel needs a ring
slot, which breaks a cap the rules' placements already fill, and its moves change one or
two kernels at a time (zoo llama_decode at 1/2: the plan was the llama.cpp-style rule's
placement, 25.66 ms predicted; an interleaved one is ~19.4 ms:
``bench/results/capped-decode-overlap.md``).

:func:`overlap_seeds` builds them from base placements (the resident-only plan and the
memory rules'):

1. **room for a ring**: resident weighted kernels nearest (in run order) to the CPU's
   weighted kernels move to the CPU (with their :meth:`~.problem.Problem.closure`) until
   resident weights + peak activations + ``slots x slot`` bytes fit the cap;
2. **units**: the CPU's weighted kernels that may run on CUDA (and are not tied to others
   by a state pair), cut into units in run order: one kernel each, or (``whole``) runs of
   them with the weightless kernels between, up to one slot of weights;
3. **a greedy walk** in run order over a small model of the timeline (a compute clock, the
   copy stream's clock, each streamed call's end for the ring's back-pressure, partition
   overheads and the CPU's wake after a CUDA call): a unit is streamed when its streamed
   cost -- waiting for its copy, its CUDA time, the CPU's wake after it -- is at most
   ``theta`` x its CPU time; otherwise it stays on the CPU.

Each seed is a placement for :func:`~.evaluate.evaluate` to price exactly (the walk only
proposes); :func:`best_overlap_seeds` keeps the best few that fit, with their evaluations.
In: a Problem with a cap.  Out: placements (kernel -> "cpu" / "cuda" / STREAM).  Invariant: a
seed never moves a kernel to a device it is not allowed on, never splits a state pair, and
never makes a kernel its base ran on the CPU resident on the GPU (it streams some; the ring's
room moves resident ones to the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import layout
from .evaluate import Evaluation, evaluate
from .gpu_memory import gpu_memory
from .problem import STREAM, Assignment, Problem, split

OVERLAP_SEEDS = True
"""Whether :func:`.streaming.place` also searches from :func:`best_overlap_seeds` (False:
the plan before this module existed, to A/B)."""
THETAS = (0.3, 0.5, 0.75, 1.0)
"""Greedy thresholds: stream a unit when streaming it costs at most this share of its CPU
time (lower: only copies already landed; 1: whatever is no slower)."""
RINGS = (2, 3)
"""Ring slots the seeds make room for (2: double buffering)."""
SLOT_MULTIPLES = (1, 2)
"""Slot sizes, in multiples of a candidate kernel's weights (2: a unit of two matrices)."""
SLOT_SIZES = 2
"""The largest distinct weight sizes among the candidates to size slots by."""
MIN_CPU_SHARE = 0.25
"""A kernel is a candidate when its CPU time is at least this share of its weight copy's
(a gather that reads a few rows of a large table never is)."""
KEEP = 2
"""Seeds :func:`best_overlap_seeds` returns (each costs one local search)."""


def best_overlap_seeds(problem: Problem, bases: list[Assignment], keep: int = KEEP) -> list[Evaluation]:
    """The evaluations (:func:`~.evaluate.evaluate`) of the ``keep`` best-predicted distinct
    :func:`overlap_seeds` of ``bases`` that fit and stream something (empty without a cap),
    best first: the caller starts its searches from them without evaluating them again."""
    ranked = sorted(scored_seeds(problem, bases), key=lambda t: t[2].sequential_s)  # stable: ties in try order
    return [e for _, _, e in ranked[:keep]]


def scored_seeds(problem: Problem, bases: list[Assignment]) -> list[tuple[int, SeedSpec, Evaluation]]:
    """``(base index, spec, evaluation)`` of every distinct seed of ``bases`` that fits and
    streams something, in the order :func:`overlap_seeds` tries them (a base equal to an
    earlier one is skipped; the index is the first's)."""
    scored, seen, done = [], set(), set()
    for i, base in enumerate(bases):
        if (b := tuple(sorted(base.items()))) in done:
            continue
        done.add(b)
        for spec, seed in seeds_of(problem, base):
            key = tuple(sorted(seed.items()))
            if key in seen:
                continue
            seen.add(key)
            e = evaluate(problem, seed)
            if e.fits and e.streamed:
                scored.append((i, spec, e))
    return scored


def overlap_seeds(problem: Problem, bases: list[Assignment]):
    """Every seed of every base, slot size, ring, unit kind and threshold (module docstring)."""
    for base in _distinct(bases):
        for _, seed in seeds_of(problem, base):
            yield seed


@dataclass(frozen=True)
class SeedSpec:
    """What one seed of a base was made with: ``slots`` ring slots of ``slot`` bytes, units of
    one kernel or (``whole``) runs of them, the walk's threshold ``theta``."""

    slot: int
    slots: int
    whole: bool
    theta: float


def seeds_of(problem: Problem, base: Assignment):
    """``(SeedSpec, seed)`` for every slot size, ring, unit kind and threshold of ``base``
    (none without a cap), in the order :func:`overlap_seeds` tries them."""
    if problem.gpu_memory is None:
        return
    kernels = problem.graph.kernels
    sizes = sorted({kernels[k].param_bytes for k in problem.order if _candidate(problem, k)}, reverse=True)
    for size in sizes[:SLOT_SIZES]:
        for mult in SLOT_MULTIPLES:
            slot = size * mult
            for slots in RINGS:
                room = make_room(problem, base, slots * slot)
                if room is None:
                    continue
                for whole in (False, True):
                    found = units(problem, room, slot, whole)
                    for theta in THETAS if found else ():
                        yield SeedSpec(slot, slots, whole, theta), walk(problem, room, found, slots, theta)


def _candidate(problem: Problem, k: str) -> bool:
    """Kernel ``k`` may trade the CPU for a streamed CUDA call (see :data:`MIN_CPU_SHARE`)."""
    w = problem.graph.kernels[k].param_bytes
    return (w > 0 and "cuda" in problem.allowed[k] and "cpu" in problem.allowed[k] and k not in problem.mates
            and problem.seconds[k]["cpu"] >= MIN_CPU_SHARE * problem.weight_copy_s(w))


def make_room(problem: Problem, base: Assignment, ring_bytes: int) -> Assignment | None:
    """``base`` with resident weighted kernels moved to the CPU, nearest the CPU's weighted
    kernels first, until it fits the cap with ``ring_bytes`` of ring (None: it cannot)."""
    a = dict(base)
    kernels = problem.graph.kernels

    def fits() -> bool:
        devices, streamed = split(a)
        return gpu_memory(problem, devices, streamed).total + ring_bytes <= problem.gpu_memory

    if fits():
        return a
    cpu_steps = [problem.step[k] for k in problem.order if a[k] == "cpu" and kernels[k].param_bytes > 0]
    resident = [k for k in problem.order if a[k] == "cuda" and kernels[k].param_bytes > 0 and "cpu" in problem.allowed[k]]
    near = lambda k: min((abs(problem.step[k] - s) for s in cpu_steps), default=problem.step[k])  # noqa: E731
    for k in sorted(resident, key=lambda k: (near(k), problem.step[k])):
        if a[k] != "cuda":
            continue
        group = problem.closure((k,))
        if any("cpu" not in problem.allowed[m] for m in group):
            continue
        a.update(dict.fromkeys(group, "cpu"))
        if fits():
            return a
    return None


def units(problem: Problem, a: Assignment, slot: int, whole: bool) -> list[tuple[str, ...]]:
    """The candidate units of ``a`` in run order: CPU kernels that :func:`_candidate` allows
    with weights up to ``slot``, one per unit, or (``whole``) consecutive ones with the
    weightless CPU kernels between them, up to ``slot`` bytes of weights a unit."""
    kernels = problem.graph.kernels
    out, cur, cur_bytes, glue = [], [], 0, []

    def close():
        nonlocal cur, cur_bytes, glue
        if cur:
            out.append(tuple(cur))
        cur, cur_bytes, glue = [], 0, []

    for k in problem.order:
        w = kernels[k].param_bytes
        movable = a[k] == "cpu" and "cuda" in problem.allowed[k] and k not in problem.mates
        if not movable:
            close()
        elif w == 0:
            if cur and whole:
                glue.append(k)
        elif w > slot or not _candidate(problem, k):
            close()
        else:
            if cur and (not whole or cur_bytes + w > slot):
                close()
            cur, cur_bytes, glue = cur + glue + [k], cur_bytes + w, []
    close()
    return out


def walk(problem: Problem, a: Assignment, found: list[tuple[str, ...]], slots: int, theta: float) -> Assignment:
    """``a`` with the units of ``found`` the greedy streams (module docstring, step 3).

    The walk's seeds stream, so their CUDA partitions run without CUDA graphs: with
    :data:`.layout.GRAPHLESS_CUDA_LAUNCH` a CUDA turn entered from the CPU pays the handoff,
    a streamed unit lasts at least its host's launch (``call + launches * launch``,
    :func:`.layout.graphless_overheads`), and a resident CUDA run pays ``call`` once and at
    least ``launch`` a launching kernel (an estimate: the walk only proposes).  Otherwise a
    streamed unit entered from the CPU pays the CUDA wake (``problem.wake["cuda"]``: 0 unless
    :data:`hetpart.costmodel.cost_model.INLINE_TURNS`), as :func:`.layout.partition_overheads` does."""
    out = dict(a)
    first = {u[0]: u for u in found}
    wake = problem.wake.get("cpu", 0.0)
    graphless = layout.GRAPHLESS_CUDA_LAUNCH and any(problem.graphless)
    call, launch, handoff = problem.graphless
    clock = copy_free = 0.0
    call_ends: list[float] = []
    prev, skip = None, set()
    for k in problem.order:
        if k in skip:
            continue
        unit = first.get(k)
        if unit is not None:
            weights = sum(problem.graph.kernels[m].param_bytes for m in unit)
            start = max(copy_free, call_ends[-slots] if len(call_ends) >= slots else 0.0)
            landed = start + problem.weight_copy_s(weights)
            gpu = sum(problem.seconds[m]["cuda"] for m in unit)
            cpu = sum(problem.seconds[m]["cpu"] for m in unit)
            if graphless:
                turn = clock + (handoff if prev == "cpu" else 0.0)
                host = call + launch * sum(m not in problem.views for m in unit)
                end = max(turn + host, max(turn + problem.overhead["cuda"], landed) + gpu)
                cost = end - clock
            else:
                entry = problem.wake.get("cuda", 0.0) if prev == "cpu" else 0.0  # 0 unless INLINE_TURNS
                begin = max(clock + problem.overhead["cuda"] + entry, landed)
                end, cost = begin + gpu, begin - clock + gpu
            if cost + wake <= theta * cpu:
                out.update(dict.fromkeys(unit, STREAM))
                skip.update(unit)
                clock, copy_free, prev = end, landed, "cuda"
                call_ends.append(clock)
                continue
        device = "cuda" if out[k] == STREAM else out[k]
        if device != prev:
            clock += problem.overhead[device] + (problem.wake.get(device, 0.0) if prev is not None else 0.0)
            if graphless and device == "cuda":
                clock += call + (handoff if prev == "cpu" else 0.0)
        seconds = problem.seconds[k][device]
        if graphless and device == "cuda" and k not in problem.views:
            seconds = max(seconds, launch)
        clock += seconds
        prev = device
    return out


def _distinct(placements: list[Assignment]) -> list[Assignment]:
    seen, out = set(), []
    for a in placements:
        key = tuple(sorted(a.items()))
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out
