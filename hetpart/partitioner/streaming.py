"""Bigger than the GPU: per kernel, CPU, CUDA with resident weights, or CUDA with streamed weights.

A kernel placed :data:`~.problem.STREAM` runs on CUDA while its weights stay in pinned
host memory; before each call they are copied into one slot of a ring of device
buffers on a copy stream that runs ahead of compute in plan order (the priced model:
:mod:`.timeline`; the memory model: :mod:`.gpu_memory`; the ring's size:
:func:`.evaluate.evaluate`).  Streaming only pays under a GPU memory cap: a copy
costs time and saves nothing else, so :func:`place` is asked only when the best
placement without a cap does not fit (no cap pressure, no streaming).

:func:`place` minimises the predicted latency (partitions one after another, weight
copies beside them) under the cap:

* **exact** when there are at most :data:`EXACT_PLACEMENTS` placements (3 choices per
  kernel, fewer where pins or capabilities hold it; 3^5 = 243): every one is
  evaluated and the best one that fits is taken.  "Exact" is over the model of
  :mod:`.evaluate`: slot size = the largest streamed kernel's weights times the best of
  :data:`~.evaluate.SLOT_MULTIPLES`, slot count the best of :data:`~.evaluate.SLOT_CHOICES`;
* otherwise a **heuristic**: seeds are the plan without streaming (the caller's) and,
  for each candidate slot size, the unconstrained minimum cut with just enough of
  its CUDA weights streamed to fit -- chosen largest-first or spread evenly over the
  model (so resident compute sits between streamed calls and hides their copies) --
  each seed making room for a ring of 1-3 slots (:data:`SEED_RINGS`), and the chain
  bound's relaxed placement (:func:`bound_seed`), and the memory-only rules' placements
  (:mod:`.memory_rules`: the llama.cpp- and ORT-style rules issue 19 measures hetpart
  against); from the best seed of each ring size, from the bound's seed and from each
  rule's, and from the best overlap seeds (:mod:`.overlap`: CPU weight reads and weight
  copies interleaved so the copy stream runs while the CPU computes; switch
  :data:`.overlap.OVERLAP_SEEDS`), a first-improvement local search over whole partitions
  and single kernels moved between the three choices, and pairs of nearby kernels
  streamed together (:data:`SEARCH_BUDGET` evaluations each); the best end is kept.
  **Bound**: the result is never predicted slower than the best plan without
  streaming, nor than either memory rule's plan where it fits (they are seeds and the
  search only accepts improvements), and is exact on small graphs; there is no ratio
  guarantee to the optimum beyond that.  (Without the rules' seeds, zoo moe at 1/2 on
  the H200 profile was planned at 14.6 ms while both rules' plans were predicted at
  13.4-13.5 ms: bench/results/capped-predictions.md.)

With :data:`MAPPED_WEIGHTS` on, a weighted kernel that may run on CUDA has a fourth
choice, :data:`~.choice.MAPPED`: on CUDA with its weights left in pinned host memory and
read by the kernel through their mapped device pointer (no ring slot, no copy; priced at
the bytes a call reads over the link: :meth:`~.problem.Problem.mapped_extra_s`), offered
to the exhaustive search and the local search's moves like the others.

Whether a weight-heavy kernel is better streamed or run on the CPU is decided only by
the costs (its CPU time against its CUDA time plus the part of its copy that compute
does not hide): e.g. an LLM decode step reads each weight once, and a CPU reading
it at memory bandwidth can beat PCIe; a prefill reuses it across the sequence and
streaming wins.
"""

from __future__ import annotations

import itertools

from tqdm import tqdm

from . import overlap
from .evaluate import Evaluation, evaluate
from .gpu_memory import gpu_memory
from .mincut import solve_min_cut
from .problem import MAPPED, STREAM, Assignment, Problem
from .search import _better
from .same_device import split_groups, tie, tie_move

MAPPED_WEIGHTS = False
"""Offer :data:`~.choice.MAPPED` (weights read in place from mapped pinned host memory) as a
choice of every weighted kernel that may run on CUDA (read on each :func:`place`).  Off:
priced on the recorded profile, a mapped expert projection of zoo moe costs 0.42 ms against
0.24 ms on the CPU, so the planner picks none at 1/2 or 1/3 (bench/results/capped-mapped-weights.md);
measured on an H100 (device step 151), mapped reads run at 42-50 GB/s, below the copy fit this
prices them at, so the CPU's lead is larger still.  A plan's mapped
partitions compile with every weight external (``PartitionArtifact.mapped``) and the runtime
binds them from mapped pinned host memory (:mod:`hetpart.runtime.external_weights`)."""

EXACT_PLACEMENTS = 243
SEARCH_BUDGET = 300
PAIR_REACH = 3
"""Pair moves stream a weighted kernel together with one of the next this many."""
SEED_RINGS = (1, 2, 3)
"""Ring sizes the heuristic's seeds make room for, in slots of the seed's slot size: a
one-slot ring cannot copy a call's weights while the call before it runs, and a seed
that sheds only one slot's worth is refitted by the evaluation to one slot (copies
never overlapped), which the local search rarely climbs out of.  :func:`place`
searches from the best seed of each ring size and keeps the best end (on the zoo's
BERT-large, 1-slot seeds ended best at 1/3 and 1/4, 2-3-slot seeds at 1/2)."""
RING_SEED_SLOTS = 2
"""Slots the chain bound's seed (:func:`bound_seed`) leaves room for: double buffering."""
SLOT_SIZES = 4
"""Slot sizes tried by the heuristic's seeds: the largest distinct weight sizes of the
unconstrained cut's CUDA kernels (a slot fits the largest kernel streamed in it)."""


def choices(problem: Problem, k: str) -> tuple[str, ...]:
    """What kernel ``k`` may be: its allowed devices, and STREAM where CUDA is allowed (and
    MAPPED too for a kernel with weights, under :data:`MAPPED_WEIGHTS`)."""
    allowed = problem.allowed[k]
    if "cuda" not in allowed:
        return allowed
    if MAPPED_WEIGHTS and problem.graph.kernels[k].param_bytes > 0:
        return allowed + (STREAM, MAPPED)
    return allowed + (STREAM,)


def key(e: Evaluation) -> tuple:
    """Lower is better: fitting first, then sequential latency."""
    return (int(not e.fits), e.sequential_s)


def place(problem: Problem, resident: Assignment, progress: bool = False) -> Assignment:
    """The best placement found under ``problem.gpu_memory``, never worse than ``resident``
    (the best placement without streamed weights); see the module docstring."""
    placements = 1
    for k in problem.order:
        placements *= len(choices(problem, k))
        if placements > EXACT_PLACEMENTS:
            break
    if placements <= EXACT_PLACEMENTS:
        return exhaustive(problem, resident)
    # One search from the best seed of each ring size (the search is first-improvement,
    # so where it ends depends on where it starts): the best end.
    memo: dict[tuple, Evaluation] = {}
    starts = []
    for ring in SEED_RINGS:
        start = min((remembered(problem, s, memo) for s in [resident, *seeds(problem, (ring,))]), key=key)
        if all(start.placement != s.placement for s in starts):
            starts.append(start)
    rules = rule_seeds(problem)
    overlapped = overlap.best_overlap_seeds(problem, [resident, *rules]) if overlap.OVERLAP_SEEDS else []
    extras = [remembered(problem, a, memo) for a in (bound_seed(problem), *rules) if a is not None]
    for start in (*extras, *overlapped):  # the overlap seeds come evaluated
        if all(start.placement != s.placement for s in starts):
            starts.append(start)
    ends = [remembered(problem, improve(problem, s, progress, memo), memo) for s in starts]
    return min(ends, key=key).placement


def exhaustive(problem: Problem, resident: Assignment) -> Assignment:
    """The best fitting placement over every combination of choices (ties: the first found,
    ``resident`` first so that a tie keeps weights resident)."""
    best = evaluate(problem, resident)
    for combo in itertools.product(*(choices(problem, k) for k in problem.order)):
        p = dict(zip(problem.order, combo))
        if split_groups(problem.same_device, p):  # a state pair's kernels on two devices: never a plan
            continue
        e = evaluate(problem, p)
        if key(e) < key(best):
            best = e
    return best.placement


# --- the heuristic's seeds ---------------------------------------------------------------
def seeds(problem: Problem, rings: tuple[int, ...] = SEED_RINGS) -> list[Assignment]:
    """The unconstrained minimum cut with enough weights streamed to fit, per slot size, ring
    of ``rings`` slots and selection rule (largest first, spread evenly); seeds that cannot
    fit are dropped."""
    a = solve_min_cut(problem)
    kernels = problem.graph.kernels
    weighted = [k for k in problem.order if a[k] == "cuda" and kernels[k].param_bytes > 0]
    sizes = sorted({kernels[k].param_bytes for k in weighted}, reverse=True)[:SLOT_SIZES]
    out = []
    for slot in sizes:
        for ring in rings:
            for pick in (_largest_first, _spread):
                streamed = pick(problem, a, [k for k in weighted if kernels[k].param_bytes <= slot], slot * ring)
                if streamed is not None:
                    out += _labelled(problem, a, streamed)
    return out


def rule_seeds(problem: Problem) -> list[Assignment]:
    """The memory-only rules' placements (:data:`.memory_rules.RULES`) that fit the cap:
    what a user gets without hetpart, so hetpart's search starts from each of them too."""
    from .memory_rules import RULES

    return [a for a in (rule(problem) for rule in RULES.values()) if a is not None]


def bound_seed(problem: Problem) -> Assignment | None:
    """The chain bound's relaxed placement (:mod:`.chain_bound`) with room for a two-slot
    ring: each kernel the choice it takes at the bound's multipliers (resident only
    where strictly cheaper), so the CPU takes the weights it runs at least as cheaply as
    the link copies them (None: no cap).  On the zoo's BERT-large at 1/3 and 1/4 the
    search from it ends 3% below the other starts' best."""
    from .chain_bound import chain_bound, relaxed_choices

    if problem.gpu_memory is None:
        return None
    b = chain_bound(problem)
    if not b.slot_bytes:
        return None
    a = solve_min_cut(problem)
    peak = gpu_memory(problem, {k: "cuda" if "cuda" in problem.allowed[k] else d for k, d in a.items()})
    budget = problem.gpu_memory - RING_SEED_SLOTS * b.slot_bytes - peak.peak_activations
    picked = relaxed_choices(problem, budget, b.slot_bytes, b.h2d_bytes_per_s)
    return tie(problem, {k: d if d in choices(problem, k) else problem.allowed[k][0] for k, d in picked.items()})


def _excess(problem: Problem, a: Assignment, slot: int) -> int | None:
    """Resident weight bytes ``a`` must shed to fit with a ring of ``slot`` bytes in all
    (None: no cap)."""
    if problem.gpu_memory is None:
        return None
    e = evaluate(problem, a)
    return e.memory.total + slot - problem.gpu_memory


def _largest_first(problem: Problem, a: Assignment, candidates: list[str], slot: int) -> set[str] | None:
    need = _excess(problem, a, slot)
    if need is None:
        return None
    kernels = problem.graph.kernels
    chosen, shed = set(), 0
    for k in sorted(candidates, key=lambda k: (-kernels[k].param_bytes, problem.step[k])):
        if shed >= need:
            break
        chosen.add(k)
        shed += kernels[k].param_bytes
    return chosen if shed >= need else None


def _spread(problem: Problem, a: Assignment, candidates: list[str], slot: int) -> set[str] | None:
    """Just enough candidates, evenly spaced in run order (a Bresenham walk over their bytes)."""
    need = _excess(problem, a, slot)
    total = sum(problem.graph.kernels[k].param_bytes for k in candidates)
    if need is None or total < need:
        return None
    share = min(1.0, need / total) if total else 1.0
    chosen, owed, shed = set(), 0.0, 0
    for k in candidates:
        w = problem.graph.kernels[k].param_bytes
        owed += share * w
        if owed - shed >= w / 2 or total - w < need:
            chosen.add(k)
            shed += w
        total -= w
    return chosen if shed >= need else None


def _labelled(problem: Problem, a: Assignment, streamed: set[str]) -> list[Assignment]:
    """Placements streaming ``streamed``: glue kernels (no weights) left resident, and glue
    joined to the streamed kernel before it (fewer, larger partitions)."""
    plain = {k: STREAM if k in streamed else d for k, d in a.items()}
    joined, last = dict(plain), None
    kernels = problem.graph.kernels
    for k in problem.order:
        if a[k] != "cuda":
            continue
        if kernels[k].param_bytes > 0:
            last = k
        elif last in streamed:
            joined[k] = STREAM
    return [plain, joined]


# --- local search ------------------------------------------------------------------------
def remembered(problem: Problem, placement: Assignment, memo: dict | None) -> Evaluation:
    """:func:`~.evaluate.evaluate` of ``placement``, looked up in ``memo`` (placement -> its
    evaluation, for one problem) first and stored there: the searches from several starts
    and a search's end re-evaluated by :func:`place` meet placements already priced.
    Invariant: the same evaluation as ``evaluate(problem, placement)``."""
    if memo is None:
        return evaluate(problem, placement)
    k = tuple(placement.get(x) for x in problem.order)
    e = memo.get(k)
    if e is None:
        e = memo[k] = evaluate(problem, placement)
    return e


def improve(problem: Problem, start: Evaluation, progress: bool = False, memo: dict | None = None) -> Assignment:
    """First-improvement local search over :func:`moves` from ``start`` (never worse);
    ``memo``: see :func:`remembered` (the budget counts looked-up evaluations too)."""
    best, spent, improved = start, 0, True
    bar = tqdm(total=SEARCH_BUDGET, desc="streaming", disable=not progress or None, leave=False)
    while improved and spent < SEARCH_BUDGET:
        improved = False
        for move in moves(problem, best):
            b = dict(best.placement)
            b.update(tie_move(problem, move, b))
            e = remembered(problem, b, memo)
            spent += 1
            bar.update(1)
            if _better(key(e), key(best)):
                best, improved = e, True
                break
            if spent >= SEARCH_BUDGET:
                break
    bar.close()
    return best.placement


def moves(problem: Problem, e: Evaluation):
    """Whole partitions to each other choice (smallest first), then weighted kernels one by one."""
    p = e.placement
    groups = sorted(e.layout.groups, key=lambda g: (len(g.kernels), problem.step[g.kernels[0]]))
    for g in groups:
        here = STREAM if g.streamed else MAPPED if g.mapped else g.device
        for there in ("cpu", "cuda", STREAM, MAPPED) if MAPPED_WEIGHTS else ("cpu", "cuda", STREAM):
            if there == here:
                continue
            move = {k: there for k in g.kernels if there in choices(problem, k)}
            if move:
                yield move
    kernels = problem.graph.kernels
    weighted = [k for k in problem.order if kernels[k].param_bytes > 0]
    for k in weighted:
        for there in choices(problem, k):
            if there != p[k]:
                yield {k: there}
    # One streamed kernel needs a slot as large as its weights, so it saves no memory
    # alone: streaming starts to fit in pairs (near each other, so they can share a slot
    # or keep the copy stream busy).
    streamable = [k for k in weighted if STREAM in choices(problem, k)]
    for i, k in enumerate(streamable):
        for j in streamable[i + 1:i + 1 + PAIR_REACH]:
            if p[k] != STREAM or p[j] != STREAM:
                yield {k: STREAM, j: STREAM}

