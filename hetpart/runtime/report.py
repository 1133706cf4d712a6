"""``partition MODEL --run``: run a compiled model once and compare with the prediction."""

from __future__ import annotations

import sys
from pathlib import Path

from .feeds import random_feeds
from .session import Session


def run_once_and_report(compiled, trace: str | Path | None = None, *, warmup: int = 1, file=None) -> dict:
    """Run ``compiled`` on random inputs (after ``warmup`` runs) and print, per partition,
    the measured time against the plan's prediction, then the copies made.  Writes a
    trace to ``trace`` when given.  Returns ``{"latency_s", "partitions": {name: s}, "stats"}``."""
    file = file or sys.stdout
    feeds = random_feeds(compiled.inputs)
    plan_parts = {p.name: p for p in compiled.plan.partitions}
    with Session(compiled, profile=True) as session:
        for _ in range(warmup):
            session.run(feeds)
        session.run(feeds, trace=trace)
        stats = session.last_run_stats
    measured = stats.partition_seconds()
    print(f"\nmeasured run{' (GPU simulated on the CPU)' if session.simulated else ''}:", file=file)
    print(f"  {'partition':<20}{'device':<8}{'measured ms':>12}{'predicted ms':>14}{'ratio':>8}", file=file)
    for art in compiled.partitions:
        got = measured.get(art.name, 0.0)
        pred = plan_parts[art.name].predicted_s if art.name in plan_parts else None
        pred_txt = f"{pred * 1e3:>14.3f}" if pred else f"{'-':>14}"
        ratio = f"{got / pred:>8.2f}" if pred else f"{'-':>8}"
        print(f"  {art.name:<20}{art.device:<8}{got * 1e3:>12.3f}{pred_txt}{ratio}", file=file)
    print(f"  end-to-end latency {stats.latency_s * 1e3:.3f} ms; copies: h2d {stats.h2d} "
          f"({stats.bytes_h2d} B), d2h {stats.d2h} ({stats.bytes_d2h} B), mapped {stats.mapped}, "
          f"staging {stats.staging}", file=file)
    if trace is not None:
        print(f"  wrote trace {trace} (open in https://ui.perfetto.dev)", file=file)
    return {"latency_s": stats.latency_s, "partitions": measured, "stats": stats}
