"""Chrome/Perfetto traces of real runs, with the cost model's predicted timeline beside them.

The file is Chrome trace-event JSON (open it in https://ui.perfetto.dev or
chrome://tracing) with hetpart's ``"schema"``/``"version"`` keys added.  Two
processes: **measured** (one track per CPU worker and one for the GPU stream; GPU
spans are timed with CUDA events) and **predicted** (the plan's own timeline,
``Plan.timeline``, one track per device and link), both starting at 0 so a user can
see where the cost model was wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from .stats import RunStats, Span

SCHEMA = "hetpart-trace"
VERSION = 1
MEASURED_PID, PREDICTED_PID = 1, 2

def predicted_spans(compiled) -> list[Span]:
    """The plan's predicted timeline (``plan.timeline``, laid out by the partitioner)."""
    return [Span(f"predicted {s.track}", s.name, s.start, s.end,
                 "transfer" if s.kind == "copy" else "partition") for s in compiled.plan.timeline]


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
        "model": session.compiled.plan.model,
        "simulated": session.simulated,
        "displayTimeUnit": "ms",
        "traceEvents": trace_events(runs, predicted_spans(session.compiled)),
    }
    path.write_text(json.dumps(doc, indent=1))
    return path
