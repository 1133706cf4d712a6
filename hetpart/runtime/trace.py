"""Traces of real runs, with the cost model's predicted timeline beside them.

The one trace format (:mod:`hetpart.contracts.trace`), two processes: **measured**
(one track per CPU worker and one for the GPU stream; GPU spans are timed with CUDA
events; shifted so the first span starts at 0) and **predicted** (the plan's own
timeline, ``Plan.timeline``: one track per device and link, starting at 0), so a
user can see where the cost model was wrong.  ``otherData`` says the model and
whether the GPU was simulated.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..contracts import trace
from .stats import RunStats, Span


def measured_spans(runs: list[RunStats]) -> list[Span]:
    """The spans of ``runs``, shifted so that the first starts at 0."""
    spans = [s for r in runs for s in r.spans]
    origin = min((s.start for s in spans), default=0.0)
    return [replace(s, start=s.start - origin, end=s.end - origin) for s in spans]


def predicted_spans(compiled) -> list[Span]:
    """The plan's predicted timeline (``plan.timeline``, laid out by the partitioner)."""
    return [replace(s, track=f"predicted {s.track}") for s in compiled.plan.timeline]


def write_trace(session, runs: list[RunStats], path) -> Path:
    """Write the trace of ``runs`` of ``session`` to ``path``; returns the path."""
    return trace.write_trace(
        path, [trace.Process("measured", measured_spans(runs)),
               trace.Process("predicted (cost model)", predicted_spans(session.compiled))],
        {"model": session.compiled.plan.model, "simulated": session.simulated})
