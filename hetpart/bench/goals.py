"""The goals the benchmark reports against, computed from the measured numbers.

1. ``no_regression``: on every workload, each hetpart plan is no slower than the best
   single-device TVM build by more than noise (3 %), on the metric its objective
   optimises (latency for ``latency``/``makespan``, items/s for ``throughput``).
2. ``heterogeneous_speedup``: where heterogeneity can pay (workloads marked
   ``heterogeneous``, and several models at once), the speed-up over the best
   single-device build (over one-after-another for MultiSession); the published bar
   for CPU+GPU co-execution on TVM is 1.3-2.3x.
3. ``prediction_error``: predicted vs measured end-to-end latency within 15 % on
   every plan.

Each goal is a plain dict: ``id``, ``goal``, ``status`` (``pass``/``fail``/``n/a``),
``worst`` (the number deciding it) and ``details`` (one line per workload).  Under
``--simulate`` the CUDA device is the CPU, so goals are reported ``n/a``.
"""

from __future__ import annotations

from .results import BenchReport, Row, WorkloadResult

NOISE = 0.03
ERROR_BOUND = 0.15
SPEEDUP_BAR = (1.3, 2.3)
REFERENCE_ONLY = ("tvm:all_cuda_uncapped",)  # breaks the cap: shown, never "the best single device"


def evaluate(report: BenchReport) -> list[dict]:
    """All goals for ``report`` (see the module docstring)."""
    return [no_regression(report), heterogeneous_speedup(report), prediction_error(report)]


def _goal(gid: str, text: str, worst, ok: bool | None, details: list[str], simulated: bool) -> dict:
    status = "n/a" if simulated or ok is None else ("pass" if ok else "fail")
    if simulated:
        details = ["simulated run (CUDA partitions on the CPU): not a measurement of this goal", *details]
    return {"id": gid, "goal": text, "status": status, "worst": worst, "details": details}


def _simulated(report: BenchReport) -> bool:
    return any(w.simulated for w in report.workloads)


def best_single_device(w: WorkloadResult, metric: str) -> Row | None:
    rows = [r for r in w.rows if r.kind == "single_device" and r.name not in REFERENCE_ONLY and r.latency]
    if not rows:
        return None
    if metric == "items_per_s":
        return max((r for r in rows if r.items_per_s), key=lambda r: r.items_per_s, default=None)
    return min(rows, key=lambda r: r.latency.median_s)


def slowdown(plan: Row, w: WorkloadResult) -> tuple[float, Row] | None:
    """How much worse ``plan`` is than the best single-device build (0.02 = 2 % worse)."""
    if plan.name.endswith(":throughput"):
        best = best_single_device(w, "items_per_s")
        if best is None or not plan.items_per_s:
            return None
        return best.items_per_s / plan.items_per_s - 1.0, best
    best = best_single_device(w, "latency")
    if best is None or plan.latency is None:
        return None
    return plan.latency.median_s / best.latency.median_s - 1.0, best


def no_regression(report: BenchReport) -> dict:
    worst, details = None, []
    for w in report.workloads:
        for r in (r for r in w.rows if r.kind == "plan"):
            s = slowdown(r, w)
            if s is None:
                details.append(f"{w.label} {r.label}: not measured ({r.skipped or 'no single-device build'})")
                continue
            worst = s[0] if worst is None else max(worst, s[0])
            verdict = "ok" if s[0] <= NOISE else "SLOWER"
            details.append(f"{w.label} {r.label}: {s[0]:+.1%} vs {s[1].label} ({verdict})")
    return _goal("no_regression", f"every plan within {NOISE:.0%} of the best single-device build", worst,
                 None if worst is None else worst <= NOISE, details, _simulated(report))


def speedup(w: WorkloadResult) -> tuple[float, Row, Row] | None:
    """(best single-device latency / best hetpart latency, that plan, that build)."""
    plans = [r for r in w.rows if r.kind == "plan" and r.latency]
    best = best_single_device(w, "latency")
    if not plans or best is None:
        return None
    top = min(plans, key=lambda r: r.latency.median_s)
    return best.latency.median_s / top.latency.median_s, top, best


def heterogeneous_speedup(report: BenchReport) -> dict:
    lo, hi = SPEEDUP_BAR
    values, details = [], []
    for w in (w for w in report.workloads if w.heterogeneous):
        s = speedup(w)
        if s is None:
            details.append(f"{w.label}: not measured")
            continue
        values.append(s[0])
        details.append(f"{w.label}: {s[0]:.2f}x ({s[1].label} vs {s[2].label})")
        ref = w.row("tvm:all_cuda_uncapped")
        if ref is not None and ref.latency is not None:
            details.append(f"{w.label}: {ref.latency.median_s / s[1].latency.median_s:.2f}x vs {ref.label}")
    for c in report.concurrent:
        if c.speedup is None:
            details.append(f"{c.label}: not measured ({c.skipped or ''})")
            continue
        values.append(c.speedup)
        details.append(f"{c.label}: {c.speedup:.2f}x together vs one after another")
    worst = min(values) if values else None
    return _goal("heterogeneous_speedup", f"speed-up where heterogeneity can pay (published bar {lo}-{hi}x)",
                 worst, None if worst is None else worst >= lo, details, _simulated(report))


def prediction_error(report: BenchReport) -> dict:
    worst, details = None, []
    for w in report.workloads:
        for r in w.rows:
            if r.error is None:
                continue
            worst = r.error if worst is None or abs(r.error) > abs(worst) else worst
            if abs(r.error) > ERROR_BOUND or r.kind == "plan":
                details.append(f"{w.label} {r.label}: predicted {r.predicted_latency_s * 1e3:.3f} ms, "
                               f"measured {r.latency.median_s * 1e3:.3f} ms ({r.error:+.1%})")
    return _goal("prediction_error", f"predicted vs measured latency within {ERROR_BOUND:.0%} on every plan",
                 worst, None if worst is None else abs(worst) <= ERROR_BOUND, details, _simulated(report))
