"""Chrome/Perfetto traces of real runs, with the cost model's predicted timeline beside them.

The file is Chrome trace-event JSON (open it in https://ui.perfetto.dev or
chrome://tracing) with hetpart's ``"schema"``/``"version"`` keys added.  Two
processes: **measured** (one track per CPU worker and one for the GPU stream; GPU
spans are timed with CUDA events) and **predicted** (one track per device, laid out
from the plan's per-partition predictions), both starting at 0 so a user can see
where the cost model was wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from .stats import RunStats, Span

SCHEMA = "hetpart-trace"
VERSION = 1
MEASURED_PID, PREDICTED_PID = 1, 2

_PREDICTION_FIELDS = (("predicted_s", 1.0), ("predicted_seconds", 1.0), ("time_s", 1.0),
                      ("predicted_ms", 1e-3), ("time_ms", 1e-3), ("latency_ms", 1e-3))


def predicted_seconds(partition) -> float | None:
    """The plan's predicted time of one partition, or None when the plan carries none."""
    for field, scale in _PREDICTION_FIELDS:
        value = getattr(partition, field, None)
        if isinstance(value, (int, float)):
            return float(value) * scale
    return None


def predicted_spans(compiled) -> list[Span]:
    """The plan's predicted timeline (``plan.timeline``) when it has one, else
    :func:`schedule_predictions`."""
    timeline = getattr(compiled.plan, "timeline", None)
    if timeline:
        return [Span(f"predicted {s.track}", s.name, s.start, s.end,
                     "transfer" if getattr(s, "kind", "") == "copy" else "partition") for s in timeline]
    return schedule_predictions(compiled)


def schedule_predictions(compiled) -> list[Span]:
    """An as-soon-as-possible schedule of the plan's partitions from their predicted times:
    a partition starts when its device is free and its inputs' producers have finished."""
    plan_parts = {p.name: p for p in getattr(compiled.plan, "partitions", []) or []}
    producer = {t.name: a.name for a in compiled.partitions for t in a.outputs}
    end: dict[str, float] = {}
    device_free: dict[str, float] = {}
    spans = []
    for art in compiled.partitions:
        secs = predicted_seconds(plan_parts.get(art.name))
        if secs is None:
            return []
        ready = max((end[producer[t.name]] for t in art.inputs if t.name in producer), default=0.0)
        start = max(ready, device_free.get(art.device, 0.0))
        end[art.name] = device_free[art.device] = start + secs
        spans.append(Span(f"predicted {art.device}", art.name, start, start + secs))
    return spans


def trace_events(runs: list[RunStats], predicted: list[Span]) -> list[dict]:
    """Trace events for the measured spans of ``runs`` and the ``predicted`` spans."""
    spans = [s for r in runs for s in r.spans]
    origin = min((s.start for s in spans), default=0.0)
    events, tids = [], {}

    def tid(pid: int, track: str) -> int:
        if (pid, track) not in tids:
            tids[(pid, track)] = len(tids) + 1
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tids[(pid, track)],
                           "args": {"name": track}})
        return tids[(pid, track)]

    for pid, name in ((MEASURED_PID, "measured"), (PREDICTED_PID, "predicted (cost model)")):
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}})
    for s in sorted(spans, key=lambda s: s.start):
        events.append({"ph": "X", "name": s.name, "cat": s.category, "pid": MEASURED_PID,
                       "tid": tid(MEASURED_PID, s.track), "ts": (s.start - origin) * 1e6,
                       "dur": max(s.seconds, 0.0) * 1e6, "args": {"run": s.run}})
    for s in predicted:
        events.append({"ph": "X", "name": s.name, "cat": "predicted", "pid": PREDICTED_PID,
                       "tid": tid(PREDICTED_PID, s.track), "ts": s.start * 1e6, "dur": s.seconds * 1e6})
    return events


def write_trace(path, runs: list[RunStats], session) -> Path:
    """Write the trace of ``runs`` of ``session`` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": SCHEMA,
        "version": VERSION,
        "model": getattr(session.compiled.plan, "model", None),
        "simulated": session.simulated,
        "displayTimeUnit": "ms",
        "traceEvents": trace_events(runs, predicted_spans(session.compiled)),
    }
    path.write_text(json.dumps(doc, indent=1))
    return path
