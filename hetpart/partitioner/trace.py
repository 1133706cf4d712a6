"""The predicted timeline as a trace (the one format: :mod:`hetpart.contracts.trace`).

One process ("predicted <model>"), one track per device and link (cpu, cuda, h2d,
d2h, and h2d_weights, the copy stream of streamed weights, when the plan streams),
one span per partition (its args: how many kernels) or copy; ``otherData``
says the model, objective and predicted latency.
"""

from __future__ import annotations

from pathlib import Path

from ..contracts import trace
from .plan import Plan
from .timeline import TRACKS, WEIGHTS_TRACK


def write_trace(plan: Plan, path) -> Path:
    """Write ``plan.timeline`` as a trace to ``path``; returns the path."""
    kernels = {p.name: len(p.kernels) for p in plan.partitions}
    tracks = TRACKS if plan.streamed else tuple(t for t in TRACKS if t != WEIGHTS_TRACK)
    return trace.write_trace(
        path, [trace.Process(f"predicted {plan.model}", plan.timeline, tracks)],
        {"model": plan.model, "objective": plan.objective, "predicted_latency_s": plan.predicted["latency_s"]},
        args_of=lambda s: {"kernels": kernels[s.name]} if s.kind == trace.PARTITION else {})
