"""The predicted timeline as a Chrome trace (open in chrome://tracing or ui.perfetto.dev).

One process ("predicted <model>"), one thread per track (cpu, cuda, h2d, d2h), one
complete event (``"ph": "X"``, microseconds) per partition or copy.  The file is
JSON with ``"schema": "hetpart-trace"`` and ``"version"`` next to ``traceEvents``,
which trace viewers ignore.
"""

from __future__ import annotations

import json
from pathlib import Path

from .plan import Plan
from .timeline import TRACKS

SCHEMA = "hetpart-trace"
VERSION = 1
PID = 1


def trace_events(plan: Plan) -> dict:
    """The Chrome trace-event document of ``plan.timeline``."""
    tid = {track: i + 1 for i, track in enumerate(TRACKS)}
    kernels = {p.name: p.kernels for p in plan.partitions}
    events = [{"ph": "M", "pid": PID, "name": "process_name", "args": {"name": f"predicted {plan.model}"}}]
    for track, i in tid.items():
        events.append({"ph": "M", "pid": PID, "tid": i, "name": "thread_name", "args": {"name": track}})
        events.append({"ph": "M", "pid": PID, "tid": i, "name": "thread_sort_index", "args": {"sort_index": i}})
    for s in plan.timeline:
        args = {"kernels": len(kernels[s.name])} if s.kind == "partition" else {}
        events.append({"ph": "X", "pid": PID, "tid": tid[s.track], "name": s.name, "cat": s.kind,
                       "ts": s.start * 1e6, "dur": (s.end - s.start) * 1e6, "args": args})
    return {"schema": SCHEMA, "version": VERSION, "displayTimeUnit": "ms", "traceEvents": events,
            "otherData": {"model": plan.model, "objective": plan.objective,
                          "predicted_latency_s": plan.predicted["latency_s"]}}


def write_trace(plan: Plan, path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(trace_events(plan), indent=1) + "\n")
    return path
