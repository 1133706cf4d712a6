"""The objectives a plan can minimise: one registry, one function each.

An objective names the predicted number it minimises (a field of
:class:`~.evaluate.Evaluation`) and a solver ``fn(problem, progress) -> assignment``.
Every solver honours pins, the GPU memory cap and state pairs (:mod:`.same_device`: a
pair's writer and readers on one device; :func:`~.planning.make_plan` refuses a
placement that splits one, so a custom solver cannot return a plan the runtime would
refuse to bind).  To add an objective, write the solver and decorate it::

    @objective("energy", metric="sequential_s", timeline="sequential")
    def energy(problem, progress=False): ...

Seeds: each solver starts from the best of its exact or heuristic starting points
*and* the baselines (a plan should never be predicted worse than what a user gets
without hetpart), then improves it with :func:`.search.improve`.  The makespan and
throughput objectives keep what they found only if it predicts a real gain
(:data:`MIN_GAIN`) over the latency plan and the baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .baselines import BASELINES
from ..errors import PlanError
from ..importer.summary import human_bytes
from .capacity import infeasible_message, least_gpu, repair, solve_under_cap
from .evaluate import Evaluation, evaluate
from .heft import heft
from .gpu_memory import fits
from .mincut import Weights, solve_min_cut
from .problem import Assignment, Problem
from .search import improve
from . import streaming

LATENCY_BUDGET = 150  # evaluations; only partition overheads leave the min cut room to improve
MAKESPAN_BUDGET = 400
THROUGHPUT_BUDGET = 400
THROUGHPUT_CPU_WEIGHTS = (0.1, 0.25, 0.5, 0.75, 0.9)
MIN_GAIN = 0.03
"""Relative gain a makespan or throughput plan must predict over the plain plans (the
latency plan, the baselines) to be chosen instead of the best of them.  Below it the
difference is within the cost model's error, and the overlap such plans count on is
what the model prices worst: on the H200, split throughput plans ran at 0.26-0.74 of
their predicted rate (bench/results)."""


@dataclass(frozen=True)
class Objective:
    """``metric``: the Evaluation field minimised; ``timeline``: the simulated schedule
    reported ("sequential" or "parallel"); ``pipelined``: throughput is 1/period
    (micro-batches overlap) rather than 1/latency; ``overlap``: partitions may be split
    by switch level where that overlaps CPU and CUDA work better (:func:`.evaluate`)."""

    name: str
    metric: str
    timeline: str
    pipelined: bool
    overlap: bool
    solve: Callable[..., Assignment]
    doc: str

    def evaluate(self, problem: Problem, a: Assignment) -> Evaluation:
        return evaluate(problem, a, overlap=self.overlap)

    def key(self, e: Evaluation) -> tuple:
        """What the search minimises: the metric, then sequential latency to break ties."""
        return getattr(e, self.metric), e.sequential_s

    @property
    def latency_field(self) -> str:
        return "sequential_s" if self.timeline == "sequential" else "makespan_s"


OBJECTIVES: dict[str, Objective] = {}


def objective(name: str, *, metric: str, timeline: str, pipelined: bool = False, overlap: bool = False):
    """Register ``fn(problem, progress=False) -> assignment`` as objective ``name``."""

    def deco(fn):
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
        OBJECTIVES[name] = Objective(name, metric, timeline, pipelined, overlap, fn, doc)
        return fn

    return deco


def best_of(problem: Problem, candidates: list[Assignment], obj: Objective) -> Assignment:
    """The candidate under the cap with the lowest key (the first one on ties)."""
    scored = [(obj.key(e), i, c) for i, c in enumerate(candidates)
              if (e := obj.evaluate(problem, c)).fits]
    return min(scored)[2]


def worth_it(problem: Problem, chosen: Assignment, plain: list[Assignment], obj: Objective) -> Assignment:
    """``chosen`` if it beats the best of ``plain`` by more than :data:`MIN_GAIN` on
    ``obj``'s metric, else that best plain plan."""
    fallback = best_of(problem, plain, obj)
    ours, theirs = (getattr(obj.evaluate(problem, a), obj.metric) for a in (chosen, fallback))
    return chosen if ours < theirs * (1 - MIN_GAIN) else fallback


def feasible_baselines(problem: Problem) -> list[Assignment]:
    return [a for a in (fn(problem) for fn in BASELINES.values()) if fits(problem, a)]


def plain_plans(problem: Problem, progress: bool = False) -> list[Assignment]:
    """The latency plan and the baselines under the cap: what a makespan or throughput
    plan must beat by :data:`MIN_GAIN`.  The greedy baseline stays among them: a plan is
    never predicted worse than any baseline."""
    return [latency(problem, progress), *feasible_baselines(problem)]


@objective("latency", metric="sequential_s", timeline="sequential")
def latency(problem: Problem, progress: bool = False) -> Assignment:
    """Minimise one inference with partitions run one after another: exact minimum cut,
    then merge partitions whose per-call overhead outweighs what they save."""
    try:
        exact = solve_under_cap(problem, progress=progress)
    except PlanError:  # the cap cannot be met with weights resident: streamed, perhaps it can
        if not problem.stream_weights:
            raise
        return _streamed_floor(problem, progress)
    start = best_of(problem, [exact, *feasible_baselines(problem)], OBJECTIVES["latency"])
    if any(problem.overhead.values()) or any(problem.wake.values()):  # else the cut is optimal: nothing to find
        start = improve(problem, start, OBJECTIVES["latency"], LATENCY_BUDGET, progress)
    if problem.stream_weights and not fits(problem, solve_min_cut(problem)):
        start = streaming.place(problem, start, progress)  # the cap binds: weights may stream
    return start


def _streamed_floor(problem: Problem, progress: bool) -> Assignment:
    """The best placement with streamed weights when none with resident weights fits the
    cap (kernels held on CUDA by pins or capabilities); PlanError if none fits at all."""
    floor = least_gpu(problem)
    found = streaming.place(problem, floor, progress)
    e = evaluate(problem, found)
    if not e.fits:
        raise PlanError(f"{infeasible_message(problem, floor)}; even with their weights streamed the GPU needs "
                        f"{human_bytes(e.memory.total)}")
    return found


@objective("makespan", metric="makespan_s", timeline="parallel", overlap=True)
def makespan(problem: Problem, progress: bool = False) -> Assignment:
    """Minimise one inference when independent CPU and CUDA partitions overlap: start from
    the latency plan and HEFT, improve with local moves on the simulated timeline."""
    obj = OBJECTIVES["makespan"]
    plain = plain_plans(problem, progress)
    seeds = [*plain, repair(problem, heft(problem))]
    found = improve(problem, best_of(problem, seeds, obj), obj, MAKESPAN_BUDGET, progress)
    return worth_it(problem, found, plain, obj)


@objective("throughput", metric="period_s", timeline="parallel", pipelined=True)
def throughput(problem: Problem, progress: bool = False) -> Assignment:
    """Maximise pipelined micro-batches per second: minimise the busiest track (CPU, CUDA,
    or a copy direction); seeds are minimum cuts that weigh CPU time against CUDA time."""
    obj = OBJECTIVES["throughput"]
    plain = plain_plans(problem, progress)
    seeds = [solve_under_cap(problem, Weights(cpu=w, cuda=1.0 - w), progress) for w in THROUGHPUT_CPU_WEIGHTS]
    seeds += plain
    found = improve(problem, best_of(problem, seeds, obj), obj, THROUGHPUT_BUDGET, progress)
    return worth_it(problem, found, plain, obj)
