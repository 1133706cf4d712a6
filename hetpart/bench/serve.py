"""The serving benchmark (issue 20): how much load each way of serving several models takes.

A *scenario* is a set of models served at once (ResNet-50 + BERT, detector +
ResNet-50) with a p99 SLO; a *contender* one way of serving them, a factory for a
system (``submit(model, feeds) -> Future``, ``close()``).  For each, :func:`sweep`
offers open-loop Poisson load (:mod:`.serve_load`) at rates found by
:func:`search_rates`: from about what one-at-a-time serving would sustain, up by a
factor that grows with the headroom p99 leaves under the SLO (capped) until a rate
misses it, or down until one meets it; then bisection between the best rate that met
the SLO and the lowest above it that did not, to a set resolution (anything lost,
crossed or wrong ends the search).  The contender's score is the highest offered
rate that met the SLO with every answer right: always a rate that was measured.

The hetpart contender's ``speedup_vs_best`` is its rate over the best other
contender's; ``lost`` and ``crossed`` are summed over all its load points (the goal:
>= 1.5x with both 0).  Records: :func:`report` (JSON body, schema
``hetpart-bench-serve``), rendered by :mod:`.serve_report`.  The contenders with real
models are made by ``bench/serve.py``; the logic here takes any factories, so CI
runs it with fake runners.

Schema versions: 1; 2 adds each load point's ``tail`` (where its latency went, for a
system that stamps request timings, i.e. hetpart's servers: per-phase p50/p99/max
ms, the slowest 1 % split into phases with GC overlap and concurrency, run p99 alone
vs beside other runs, GC pauses per generation, wake-up lag; :mod:`.serve_tail`) and
per contender ``tail`` (that record at its best point and at the lowest rate above
it that missed the SLO: ``best``, ``first_miss``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .serve_load import LoadModel, RatePoint, bucket_references, offer_load, references, unstable

SCHEMA, VERSION = "hetpart-bench-serve", 2
HETPART = "hetpart"  # the contender the speedup is of
GOAL_SPEEDUP = 1.5


@dataclass
class Contender:
    """One way of serving a scenario's models; ``make()`` opens a fresh system
    (closed after its sweep); ``skipped`` says why it cannot run here instead."""

    name: str
    make: Callable[[], object] | None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    variant: bool = False  # a variant of hetpart (an A/B): measured and reported, never the "best other"


@dataclass
class Scenario:
    name: str
    models: list[LoadModel]
    contenders: list[Contender]
    slo_ms: float


@dataclass
class SweepOptions:
    """How :func:`search_rates` looks for a contender's highest rate under the SLO.

    ``window_s`` of load per rate.  The first rate is ``start_rate`` or
    ``start_fraction`` of the one-at-a-time capacity (1 / the mean latency of a request
    alone).  While a rate meets the SLO the next is ``headroom`` times higher, where
    headroom = SLO / p99 clamped to [``growth``, ``max_growth``]; while none has met
    it, the next is lower by the same rule (p99 / SLO clamped), at most ``max_steps``
    rates in all before bisecting.  Then up to ``refine`` bisections (geometric)
    between the best rate that met the SLO and the lowest above it that did not, until
    their ratio is at most ``resolution``.  ``drain_s`` is how long after a window its
    answers may still come (later: late, counted as never for p99: a miss), and
    ``lost_after_s`` how much longer a late answer is waited for (then: lost)."""

    window_s: float = 2.0
    start_fraction: float = 1.0
    start_rate: float | None = None
    growth: float = 1.4
    max_growth: float = 3.0
    max_steps: int = 24
    refine: int = 5
    resolution: float = 1.08
    drain_s: float = 10.0
    lost_after_s: float = 60.0
    seed: int = 0
    probe: bool = True  # the wake-up lag probe thread during each window (serve_tail.TailProbe)


def search_rule(options: SweepOptions) -> str:
    """How max rate is found, in words (the report states it)."""
    o = options if isinstance(options, SweepOptions) else SweepOptions(**{
        k: v for k, v in options.items() if k in SweepOptions.__dataclass_fields__})
    start = (f"{o.start_rate:g}/s" if o.start_rate else
             f"{o.start_fraction:g} x the one-at-a-time capacity (1 / mean latency of a request alone)")
    return (f"first rate {start}; while p99 meets the SLO, next rate x clamp(SLO / p99, {o.growth:g}, "
            f"{o.max_growth:g}); while none has, / clamp(p99 / SLO, {o.growth:g}, {o.max_growth:g}) "
            f"(at most {o.max_steps} rates); then up to {o.refine} geometric bisections between the best rate "
            f"that met the SLO and the lowest above it that missed, until within {o.resolution:g}x; "
            f"{o.window_s:g} s of Poisson load per rate; a late answer (> {o.drain_s:g} s after the window) "
            "is a miss, anything lost, crossed or wrong ends the search.  Max rate is the highest rate "
            "offered that met the SLO with every answer right")


@dataclass
class ContenderResult:
    scenario: str
    models: list[str]
    contender: str
    slo_ms: float
    points: list[RatePoint] = field(default_factory=list)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    alone_ms: float | None = None  # mean latency of one request alone (sets the first rate)
    # how the references came out: per model, payloads whose answer alone changed
    # between two passes ("unstable"), and per bucket build those answering otherwise
    # than alone ("differ_by_build"; only where the system offers its builds)
    reference_notes: dict = field(default_factory=dict)
    variant: bool = False  # see Contender.variant

    @property
    def best(self) -> RatePoint | None:
        ok = [p for p in self.points if p.meets(self.slo_ms)]
        return max(ok, key=lambda p: p.rate_per_s) if ok else None

    @property
    def first_miss(self) -> RatePoint | None:
        """The lowest rate above the best that missed the SLO (the first over the knee)."""
        floor = self.best.rate_per_s if self.best else 0.0
        over = [p for p in self.points if p.rate_per_s > floor and not p.meets(self.slo_ms)]
        return min(over, key=lambda p: p.rate_per_s) if over else None

    def tails(self) -> dict:
        """``{"best": ..., "first_miss": ...}``: each that point's rate, p99 and ``tail`` (None where absent)."""
        out = {}
        for key, p in (("best", self.best), ("first_miss", self.first_miss)):
            out[key] = {"rate_per_s": p.rate_per_s, "p99_ms": p.p99_ms, "tail": p.tail} \
                if p is not None and p.tail else None
        return out

    def to_json(self) -> dict:
        best = self.best
        return {"scenario": self.scenario, "models": self.models, "contender": self.contender,
                "slo_ms": self.slo_ms, "max_rate_per_s": best.rate_per_s if best else 0.0,
                "p50_ms": best.p50_ms if best else None, "p99_ms": best.p99_ms if best else None,
                "mean_batch_rows": getattr(best, "mean_batch_rows", None) if best else None,
                "lost": sum(p.lost for p in self.points), "late": sum(p.late for p in self.points),
                "crossed": sum(p.crossed for p in self.points),
                "wrong": sum(p.wrong for p in self.points), "failed": sum(p.failed for p in self.points),
                "inexact": sum(p.inexact for p in self.points), "matched": matched_counts(self.points),
                "alone_ms": self.alone_ms, "references": self.reference_notes, "skipped": self.skipped, "notes": self.notes,
                "variant": self.variant, "tail": self.tails(), "curve": [p.to_json() for p in self.points]}


def matched_counts(points: list[RatePoint]) -> dict[str, int]:
    """The ok answers over ``points`` by the reference they matched (``alone``, or a
    bucket's batch size), ``alone`` first then rising batch size."""
    total: dict[str, int] = {}
    for p in points:
        for key, n in p.matched.items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items(), key=lambda kv: (kv[0] != "alone", int(kv[0]) if kv[0].isdigit() else 0)))


def sweep(system, models: list[LoadModel], slo_ms: float, options: SweepOptions,
          deadline: float) -> tuple[list[RatePoint], float, dict]:
    """The load points :func:`search_rates` takes on ``system`` before ``deadline``
    (time.monotonic()), rising rate order; the mean latency of one request alone (ms);
    and how the references came out (``unstable``, ``differ_by_build``: see
    :class:`ContenderResult`).  References first: each payload alone (twice: a
    warm-up, then timed), and where the system offers its builds, on every build
    (:func:`~.serve_load.bucket_references`; not timed)."""
    references(system, models)  # once to warm up (first runs load code, pick algorithms)
    first = {m.name: list(m.fingerprints) for m in models}
    start = time.perf_counter()
    references(system, models)
    alone_s = (time.perf_counter() - start) / max(1, sum(len(m.payloads) for m in models))
    notes = {"unstable": unstable(first, models)}
    by_build = bucket_references(system, models)
    if by_build:
        notes["differ_by_build"] = {name: {str(b): n for b, n in sizes.items()} for name, sizes in by_build.items()}
    rate = options.start_rate or options.start_fraction / max(alone_s, 1e-6)

    def measure(r: float, step: int) -> RatePoint | None:
        if time.monotonic() + options.window_s > deadline:
            return None
        return _point(system, models, r, options, options.seed + step)

    return search_rates(measure, rate, slo_ms, options), alone_s * 1e3, notes


def search_rates(measure: Callable[[float, int], RatePoint | None], start: float, slo_ms: float,
                 options: SweepOptions) -> list[RatePoint]:
    """The points measured looking for the highest rate that meets ``slo_ms``, in rising
    rate order (see :class:`SweepOptions` for the rule).

    ``measure(rate, step)`` offers ``rate`` (``step`` numbers the call, a seed) and
    returns its RatePoint, or None when no time is left (the search stops).
    Invariant: every point returned was measured at its ``rate_per_s``, so the best
    (``max`` of those that ``meets(slo_ms)``) is a rate actually offered that met the
    SLO with every answer right; a point with anything lost, crossed or wrong ends the
    search (no rate above it is trusted to be found)."""
    points: list[RatePoint] = []
    met: float | None = None  # the best rate that met the SLO
    missed: float | None = None  # the lowest rate above ``met`` that did not

    def take(rate: float) -> RatePoint | None:
        point = measure(rate, len(points))
        if point is None:
            return None
        points.append(point)
        return point

    rate = start
    for _ in range(options.max_steps):  # bracket: up while meeting, down while missing
        point = take(rate)
        if point is None or _fatal(point):
            return _sorted(points)
        if point.meets(slo_ms):
            met = max(met or 0.0, rate)
            if missed is not None:
                break
            rate *= _clamp(slo_ms / max(point.p99_ms, 1e-9), options.growth, options.max_growth)
        else:
            missed = min(missed or rate, rate)
            if met is not None:
                break
            ratio = point.p99_ms / slo_ms if point.p99_ms is not None else options.max_growth
            rate /= _clamp(ratio, options.growth, options.max_growth)
    for _ in range(options.refine):  # bisect between the best met and the lowest missed above it
        if met is None or missed is None or missed / met <= options.resolution:
            break
        rate = (met * missed) ** 0.5
        point = take(rate)
        if point is None or _fatal(point):
            break
        if point.meets(slo_ms):
            met = rate
        else:
            missed = rate
    return _sorted(points)


def _fatal(point: RatePoint) -> bool:
    """Something lost, crossed or wrong: the search ends (a late answer is only a miss)."""
    return bool(point.lost or point.crossed or point.wrong)


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def _sorted(points: list[RatePoint]) -> list[RatePoint]:
    return sorted(points, key=lambda p: p.rate_per_s)


def _point(system, models: list[LoadModel], rate: float, options: SweepOptions, seed: int) -> RatePoint:
    """One load point, with the system's mean batch over it where it counts batches."""
    before, used = _batch_totals(system), _usage()
    point = offer_load(system, models, rate, options.window_s, seed=seed, drain_s=options.drain_s,
                       lost_after_s=options.lost_after_s, probe=options.probe)
    after = _batch_totals(system)
    if before and after and after[0] > before[0]:
        point.mean_batch_rows = (after[1] - before[1]) / (after[0] - before[0])
    point.resources = _resources(used, _usage())
    return point


def _usage() -> dict:
    """Now: wall and process CPU seconds, and every CPU-sharing share's counters
    (:func:`hetpart.runtime.cpu_share.records`; none imported: none)."""
    import os
    import sys

    share = sys.modules.get("hetpart.runtime.cpu_share")
    return {"wall": time.perf_counter(), "cpu": sum(os.times()[:2]),
            "shares": share.records() if share is not None else {}}


def _resources(a: dict, b: dict) -> dict:
    """Between two :func:`_usage` snapshots (the window and its drain): ``cores_busy``
    (process CPU seconds per wall second: spinning waiters and pools show here) and per
    CPU-sharing policy that ran calls, ``lane_busy`` (the lanes' held time over wall x
    lanes: 1.0 = saturated), ``wait_ms_per_call`` and ``calls``."""
    wall = max(b["wall"] - a["wall"], 1e-9)
    out: dict = {"wall_s": wall, "cores_busy": (b["cpu"] - a["cpu"]) / wall, "lanes": {}}
    for name, rec in b["shares"].items():
        old = a["shares"].get(name, {})
        calls = rec.get("calls", 0) - old.get("calls", 0)
        if calls <= 0:
            continue
        busy = rec.get("busy_s", 0.0) - old.get("busy_s", 0.0)
        wait = rec.get("wait_s", 0.0) - old.get("wait_s", 0.0)
        out["lanes"][name] = {"calls": calls, "lane_busy": busy / (wall * max(1, len(rec.get("lanes", [])))),
                              "wait_ms_per_call": wait / calls * 1e3, "busy_ms_per_call": busy / calls * 1e3}
    return out


def _batch_totals(system) -> tuple[int, int] | None:
    """(batches, rows) the system ran so far, where it counts them (a hetpart Server)."""
    stats = getattr(system, "stats", None)
    if not callable(stats):
        return None
    snap = stats()
    return (sum(s["batches"] for s in snap.values()),
            sum(k * v for s in snap.values() for k, v in s["batch_rows"].items()))


def run_scenario(scenario: Scenario, options: SweepOptions, deadline: float,
                 log: Callable[[str], None] = lambda _: None) -> list[ContenderResult]:
    """Every contender of ``scenario`` swept in turn, sharing the time left fairly."""
    results = []
    names = [m.name for m in scenario.models]
    runnable = [c for c in scenario.contenders if c.skipped is None]
    for c in scenario.contenders:
        result = ContenderResult(scenario.name, names, c.name, scenario.slo_ms, skipped=c.skipped,
                                 notes=list(c.notes), variant=c.variant)
        results.append(result)
        if c.skipped is not None:
            log(f"{scenario.name}: {c.name} skipped: {c.skipped}")
            continue
        left = len(runnable) - runnable.index(c)
        share = time.monotonic() + (deadline - time.monotonic()) / left
        system = None
        try:
            system = c.make()
            result.points, result.alone_ms, result.reference_notes = sweep(system, scenario.models, scenario.slo_ms,
                                                                            options, share)
        except Exception as exc:  # noqa: BLE001 - one contender failing must not lose the others' numbers
            result.skipped = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        finally:
            close = getattr(system, "close", None)
            try:
                if callable(close):
                    close()
            except Exception as exc:  # noqa: BLE001 - as above
                result.skipped = result.skipped or f"failed at close: {type(exc).__name__}: {str(exc)[:300]}"
        best = result.best
        log(f"{scenario.name}: {c.name}: {len(result.points)} rates, max {best.rate_per_s if best else 0:.1f}/s "
            f"under p99 {scenario.slo_ms} ms" + (f" ({result.skipped})" if result.skipped else ""))
    return results


def summary(scenario: str, results: list[ContenderResult]) -> dict:
    """``speedup_vs_best`` of hetpart over the best other contender that ran, with its ``lost``/``crossed``."""
    ours = next((r for r in results if r.contender == HETPART and r.skipped is None), None)
    others = [r for r in results if r.contender != HETPART and not r.variant and r.skipped is None]
    rate = lambda r: r.best.rate_per_s if r.best else 0.0  # noqa: E731
    best_other = max(others, key=rate) if others else None
    speedup = None
    if ours is not None and best_other is not None and rate(best_other) > 0:
        speedup = rate(ours) / rate(best_other)
    lost = sum(p.lost for p in ours.points) if ours else None
    crossed = sum(p.crossed for p in ours.points) if ours else None
    wrong = sum(p.wrong for p in ours.points) if ours else None
    inexact = sum(p.inexact for p in ours.points) if ours else None
    matched = matched_counts(ours.points) if ours else None
    # a contender that failed (not one skipped by design) was not measured: no verdict over it
    failed = [r.contender for r in results if r.skipped and r.skipped.startswith("failed")]
    return {"scenario": scenario, "models": results[0].models if results else [],
            "slo_ms": results[0].slo_ms if results else None,
            "max_rate_per_s": rate(ours) if ours else None,
            "best_other": best_other.contender if best_other else None,
            "best_other_rate_per_s": rate(best_other) if best_other else None,
            "speedup_vs_best": speedup, "lost": lost, "crossed": crossed, "wrong": wrong,
            "inexact": inexact, "matched": matched, "failed_contenders": failed,
            "goal_met": bool(speedup is not None and speedup >= GOAL_SPEEDUP and lost == 0 and crossed == 0
                             and wrong == 0 and not failed)}


def run(scenarios: list[Scenario], options: SweepOptions, budget_s: float,
        log: Callable[[str], None] = lambda _: None) -> dict:
    """Every scenario within ``budget_s`` seconds (shared out as they go); the report body."""
    deadline = time.monotonic() + budget_s
    rows, summaries = [], []
    for i, scenario in enumerate(scenarios):
        share = time.monotonic() + (deadline - time.monotonic()) / (len(scenarios) - i)
        results = run_scenario(scenario, options, share, log)
        rows += [r.to_json() for r in results]
        summaries.append(summary(scenario.name, results))
    return {"settings": {k: v for k, v in options.__dict__.items()}, "search": search_rule(options),
            "budget_s": budget_s,
            "goal_speedup": GOAL_SPEEDUP, "results": rows, "scenarios": summaries}
