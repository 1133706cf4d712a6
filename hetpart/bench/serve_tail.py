"""Where a load point's latency tail comes from: per-phase times, GC pauses, wake-up lag.

For one load point (:func:`~.serve_load.offer_load`) of a system whose futures carry a
:class:`~hetpart.serving.request.RequestTiming` (a hetpart Server), each answered
request's latency, from its *scheduled* arrival to the moment its answer reached the
load generator, splits exactly into ``lag`` (scheduled -> submitted: the load
generator late, e.g. waiting for the GIL), ``queue``, ``form``, ``run`` and
``deliver`` (:data:`~hetpart.serving.request.PHASES`); the phases sum to the latency.
:class:`TailProbe` watches the load window: every cyclic-GC pause
(:class:`~hetpart.serving.heap.GcPauses`) and the *wake-up lag* of a probe thread that
sleeps :data:`PROBE_PERIOD_S` at a time (how late a Python thread runs after its
timer fires: GIL hand-over plus CPU scheduling, what a batcher pays when it is woken).

:func:`tail_record` makes the point's ``tail`` (JSON): per phase p50/p99/max ms; the
slowest 1 % of requests (latency >= the point's p99): their count, mean latency and
mean phase split, the models they were of, how many overlapped a GC pause and by how
much, the mean number of batches running when theirs started and their mean batch
rows; the run time's p99 by how many batches were running when it started (``1``:
alone, ``2+``), overall and per model; the GC pauses per generation; the wake-up lag.  :func:`tail_line` is
one line of it for the report.  Which to read: a tail made of ``run`` with ``2+``
far above ``1`` is runs slowing each other (a shared CPU thread pool, the GPU); of
``queue`` behind long runs, capacity or batching; of ``lag``/``deliver`` with a large
wake-up lag, threads starved of the GIL or of cores; slow requests overlapping GC
pauses whose max is near the tail, the collector.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ..serving.heap import GcPauses, state
from ..serving.request import PHASES

PROBE_PERIOD_S = 0.001
TAIL_FRACTION = 0.01  # the slowest 1 %: latency >= p99


class TailProbe:
    """GC pauses and wake-up lag over a load window (``with TailProbe() as probe:``).
    ``wake=False`` runs no probe thread (GC pauses only)."""

    def __init__(self, wake: bool = True, period_s: float = PROBE_PERIOD_S):
        self.gc = GcPauses()
        self.period_s = period_s
        self.lags_ms: list[float] = []
        self.gc_state: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="hetpart-bench-wake-probe", daemon=True) \
            if wake else None

    def _probe(self) -> None:
        period, lags = self.period_s, self.lags_ms
        while not self._stop.is_set():
            due = time.perf_counter() + period
            time.sleep(period)
            lags.append((time.perf_counter() - due) * 1e3)

    def __enter__(self) -> "TailProbe":
        self.gc_state = state()
        self.gc.start()
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.gc.stop()

    def wake_record(self) -> dict | None:
        """p50/p99/max ms by which the probe thread woke late, and how many wake-ups; None if none."""
        if not self.lags_ms:
            return None
        lags = np.asarray(self.lags_ms)
        p50, p99 = np.percentile(lags, [50, 99])
        return {"p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(lags.max()), "wakeups": int(lags.size)}


def split(timing, answered: float, scheduled: float) -> dict[str, float] | None:
    """One request's ``{phase: ms}`` (``lag`` then :data:`PHASES`), summing to
    ``answered - scheduled``; None where the system stamps no timing or it never ran."""
    if timing is None:
        return None
    return timing.phases_ms(answered, scheduled)


def tail_record(latency_ms: np.ndarray, phases: list[dict | None], timings: list, intervals: list,
                models: list[str], probe: TailProbe | None) -> dict | None:
    """The ``tail`` of one load point (see the module docstring); None where no request
    has a phase split (a system without timings).  ``latency_ms[i]``, ``phases[i]``,
    ``timings[i]``, ``intervals[i]`` (scheduled, answered; perf_counter s) and
    ``models[i]`` are request ``i``'s; late or failed requests have no phases."""
    have = [i for i, p in enumerate(phases) if p is not None]
    if not have:
        return None
    names = ["lag", *PHASES]
    table = {n: np.asarray([phases[i][n] for i in have]) for n in names}
    out: dict = {"phases_ms": {n: _pcts(v) for n, v in table.items()}}
    lat = np.asarray([latency_ms[i] for i in have])
    cut = float(np.percentile(lat, 100 * (1 - TAIL_FRACTION)))
    slow = [i for i, v in zip(have, lat) if v >= cut]
    gc_ms = [probe.gc.overlap_ms(*intervals[i]) if probe is not None else 0.0 for i in slow]
    counts: dict[str, int] = {}
    for i in slow:
        counts[models[i]] = counts.get(models[i], 0) + 1
    out["slowest"] = {"count": len(slow), "latency_ms": float(np.mean([latency_ms[i] for i in slow])),
                      "phases_ms": {n: float(np.mean([phases[i][n] for i in slow])) for n in names},
                      "models": counts, "with_gc": sum(1 for g in gc_ms if g > 0),
                      "gc_ms": float(np.mean(gc_ms)),
                      "concurrent": float(np.mean([timings[i].concurrent for i in slow])),
                      "batch_rows": float(np.mean([timings[i].batch_rows for i in slow]))}
    out["run_p99_ms_by_concurrency"] = _by_concurrency(have, phases, timings)
    out["run_p99_ms_by_model"] = {m: _by_concurrency([i for i in have if models[i] == m], phases, timings)
                                  for m in sorted({models[i] for i in have})}
    if probe is not None:
        out["gc"] = probe.gc.record()
        out["gc_state"] = probe.gc_state
        out["wake_lag"] = probe.wake_record()
    return out


def _by_concurrency(idx: list[int], phases: list, timings: list) -> dict:
    """Run p99 (ms) of requests ``idx`` whose batch started alone (``1``) or beside
    other batches (``2+``), and how many of each (``n_1``, ``n_2+``)."""
    alone = [phases[i]["run"] for i in idx if timings[i].concurrent <= 1]
    beside = [phases[i]["run"] for i in idx if timings[i].concurrent > 1]
    return {"1": _p99(alone), "2+": _p99(beside), "n_1": len(alone), "n_2+": len(beside)}


def _pcts(v: np.ndarray) -> dict:
    p50, p99 = np.percentile(v, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(v.max())}


def _p99(v: list[float]) -> float | None:
    return float(np.percentile(v, 99)) if v else None


def tail_line(point: dict) -> str | None:
    """One line of a load point's ``tail`` for the report, e.g. ``at 344/s (p99 32.9 ms):
    phase p99 ms lag 0.2 queue 9.1 form 0.3 run 28.0 deliver 0.2; slowest 1% (7, mean 41 ms):
    lag 0.1 + queue 8.0 + form 0.2 + run 32.5 + deliver 0.2, detector 7, 2 with GC (mean
    0.4 ms), 2.3 batches running, 1.1 rows; run p99 ms alone / beside other runs
    (requests): detector 6.1 (80) / 30.2 (120), resnet50 ...;
    GC gen0 120x max 0.3, gen1 11x max 0.9, gen2 1x max 35.0 ms; wake lag p99 0.3 max
    4.0 ms``; None where the point has no tail record."""
    tail = point.get("tail")
    if not tail:
        return None
    names = ["lag", *PHASES]
    parts = [f"at {point['rate_per_s']:.0f}/s (p99 {_f(point.get('p99_ms'))} ms): phase p99 ms "
             + " ".join(f"{n} {_f(tail['phases_ms'][n]['p99'])}" for n in names)]
    s = tail["slowest"]
    models = ", ".join(f"{m} {n}" for m, n in sorted(s["models"].items(), key=lambda kv: -kv[1]))
    parts.append(f"slowest 1% ({s['count']}, mean {_f(s['latency_ms'])} ms): "
                 + " + ".join(f"{n} {_f(s['phases_ms'][n])}" for n in names)
                 + f", {models}, {s['with_gc']} with GC (mean {_f(s['gc_ms'])} ms), "
                 f"{s['concurrent']:.1f} batches running, {s['batch_rows']:.1f} rows")
    by_model = tail.get("run_p99_ms_by_model") or {"all": tail["run_p99_ms_by_concurrency"]}
    parts.append("run p99 ms alone / beside other runs (requests): " + ", ".join(
        f"{m} {_f(c['1'])} ({c['n_1']}) / {_f(c['2+'])} ({c['n_2+']})" for m, c in by_model.items()))
    if tail.get("gc"):
        parts.append("GC " + ", ".join(f"{g} {r['count']}x max {_f(r['max_ms'])}" for g, r in tail["gc"].items())
                     + f" ms ({tail.get('gc_state', {}).get('frozen', 0)} objects frozen)")
    wake = tail.get("wake_lag")
    if wake:
        parts.append(f"wake lag p99 {_f(wake['p99_ms'])} max {_f(wake['max_ms'])} ms")
    return "; ".join(parts)


def _f(v) -> str:
    return "–" if v is None else f"{v:.1f}"


__all__ = ["PROBE_PERIOD_S", "TAIL_FRACTION", "TailProbe", "split", "tail_line", "tail_record"]
