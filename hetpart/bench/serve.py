"""The serving benchmark (issue 20): how much load each way of serving several models takes.

A *scenario* is a set of models served at once (ResNet-50 + BERT, detector +
ResNet-50) with a p99 SLO; a *contender* one way of serving them, a factory for a
system (``submit(model, feeds) -> Future``, ``close()``).  For each, :func:`sweep`
offers open-loop Poisson load (:mod:`.serve_load`) at geometrically rising rates,
from a fraction of what one-at-a-time serving would sustain, until p99 breaks the
SLO twice running (or anything is lost or wrong), then bisects between the last rate
that met it and the first that did not, and the contender's score is the
highest offered rate that met the SLO with every answer right.

The hetpart contender's ``speedup_vs_best`` is its rate over the best other
contender's; ``lost`` and ``crossed`` are summed over all its load points (the goal:
>= 1.5x with both 0).  Records: :func:`report` (JSON body, schema
``hetpart-bench-serve``), rendered by :mod:`.serve_report`.  The contenders with real
models are made by ``bench/serve.py``; the logic here takes any factories, so CI
runs it with fake runners.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .serve_load import LoadModel, RatePoint, offer_load, references

SCHEMA, VERSION = "hetpart-bench-serve", 1
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


@dataclass
class Scenario:
    name: str
    models: list[LoadModel]
    contenders: list[Contender]
    slo_ms: float


@dataclass
class SweepOptions:
    """``window_s`` of load per rate; rates start at ``start_fraction`` of the measured
    one-at-a-time capacity (or ``start_rate``) and grow by ``growth`` up to ``max_steps``
    steps, stopping after ``misses`` SLO misses in a row, then ``refine`` bisections
    (geometric) between the best rate that met the SLO and the next that did not; ``drain_s`` is how long after
    a window its answers may still come (later: late, counted as never for p99), and
    ``lost_after_s`` how much longer a late answer is waited for (then: lost)."""

    window_s: float = 2.0
    start_fraction: float = 0.3
    start_rate: float | None = None
    growth: float = 1.4
    max_steps: int = 24
    misses: int = 2
    refine: int = 2
    drain_s: float = 10.0
    lost_after_s: float = 60.0
    seed: int = 0


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

    @property
    def best(self) -> RatePoint | None:
        ok = [p for p in self.points if p.meets(self.slo_ms)]
        return max(ok, key=lambda p: p.rate_per_s) if ok else None

    def to_json(self) -> dict:
        best = self.best
        return {"scenario": self.scenario, "models": self.models, "contender": self.contender,
                "slo_ms": self.slo_ms, "max_rate_per_s": best.rate_per_s if best else 0.0,
                "p50_ms": best.p50_ms if best else None, "p99_ms": best.p99_ms if best else None,
                "mean_batch_rows": getattr(best, "mean_batch_rows", None) if best else None,
                "lost": sum(p.lost for p in self.points), "late": sum(p.late for p in self.points),
                "crossed": sum(p.crossed for p in self.points),
                "wrong": sum(p.wrong for p in self.points), "failed": sum(p.failed for p in self.points),
                "inexact": sum(p.inexact for p in self.points),
                "alone_ms": self.alone_ms, "skipped": self.skipped, "notes": self.notes,
                "curve": [p.to_json() for p in self.points]}


def sweep(system, models: list[LoadModel], slo_ms: float, options: SweepOptions,
          deadline: float) -> tuple[list[RatePoint], float]:
    """Load points at rising rates until the SLO breaks ``options.misses`` times in a
    row, something is lost or wrong, or ``deadline`` (time.monotonic()) passes; and
    the mean latency of one request alone (ms)."""
    references(system, models)  # once to warm up (first runs load code, pick algorithms)
    start = time.perf_counter()
    references(system, models)
    alone_s = (time.perf_counter() - start) / max(1, sum(len(m.payloads) for m in models))
    rate = options.start_rate or options.start_fraction / max(alone_s, 1e-6)
    points: list[RatePoint] = []
    misses = 0
    for step in range(options.max_steps):
        if time.monotonic() + options.window_s > deadline:
            break
        point = _point(system, models, rate, options, options.seed + step)
        points.append(point)
        if point.lost or point.late or point.crossed or point.wrong:
            return points, alone_s * 1e3
        misses = 0 if point.meets(slo_ms) else misses + 1
        if misses >= options.misses:
            break
        rate *= options.growth
    # refine between the best rate that met the SLO and the lowest above it that did not
    for step in range(options.refine):
        passed = [p.rate_per_s for p in points if p.meets(slo_ms)]
        if not passed or time.monotonic() + options.window_s > deadline:
            break
        above = [p.rate_per_s for p in points if p.rate_per_s > max(passed) and not p.meets(slo_ms)]
        if not above:
            break
        point = _point(system, models, (max(passed) * min(above)) ** 0.5, options, options.seed + 1000 + step)
        points.append(point)
        if point.lost or point.crossed or point.wrong:
            break
    points.sort(key=lambda p: p.rate_per_s)
    return points, alone_s * 1e3


def _point(system, models: list[LoadModel], rate: float, options: SweepOptions, seed: int) -> RatePoint:
    """One load point, with the system's mean batch over it where it counts batches."""
    before = _batch_totals(system)
    point = offer_load(system, models, rate, options.window_s, seed=seed, drain_s=options.drain_s,
                       lost_after_s=options.lost_after_s)
    after = _batch_totals(system)
    if before and after and after[0] > before[0]:
        point.mean_batch_rows = (after[1] - before[1]) / (after[0] - before[0])
    return point


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
                                 notes=list(c.notes))
        results.append(result)
        if c.skipped is not None:
            log(f"{scenario.name}: {c.name} skipped: {c.skipped}")
            continue
        left = len(runnable) - runnable.index(c)
        share = time.monotonic() + (deadline - time.monotonic()) / left
        system = None
        try:
            system = c.make()
            result.points, result.alone_ms = sweep(system, scenario.models, scenario.slo_ms, options, share)
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
    others = [r for r in results if r.contender != HETPART and r.skipped is None]
    rate = lambda r: r.best.rate_per_s if r.best else 0.0  # noqa: E731
    best_other = max(others, key=rate) if others else None
    speedup = None
    if ours is not None and best_other is not None and rate(best_other) > 0:
        speedup = rate(ours) / rate(best_other)
    lost = sum(p.lost for p in ours.points) if ours else None
    crossed = sum(p.crossed for p in ours.points) if ours else None
    wrong = sum(p.wrong for p in ours.points) if ours else None
    inexact = sum(p.inexact for p in ours.points) if ours else None
    # a contender that failed (not one skipped by design) was not measured: no verdict over it
    failed = [r.contender for r in results if r.skipped and r.skipped.startswith("failed")]
    return {"scenario": scenario, "models": results[0].models if results else [],
            "slo_ms": results[0].slo_ms if results else None,
            "max_rate_per_s": rate(ours) if ours else None,
            "best_other": best_other.contender if best_other else None,
            "best_other_rate_per_s": rate(best_other) if best_other else None,
            "speedup_vs_best": speedup, "lost": lost, "crossed": crossed, "wrong": wrong,
            "inexact": inexact, "failed_contenders": failed,
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
    return {"settings": {k: v for k, v in options.__dict__.items()}, "budget_s": budget_s,
            "goal_speedup": GOAL_SPEEDUP, "results": rows, "scenarios": summaries}
