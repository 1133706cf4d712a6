"""A :class:`~.results.BenchReport` as markdown (for people) and JSON (for tools).

:func:`render_markdown` writes: a header (date, machine, the exact commands), one
table per workload (every contender: placement, median and p10-p90 latency, items/s,
predicted latency and its error, notes -- a skipped row says why), the oracle check,
several models at once, and the goals with pass/fail.  :func:`write` saves both files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..importer.summary import human_bytes
from .results import BenchReport, Oracle, Row, WorkloadResult


def write(report: BenchReport, json_path=None, md_path=None) -> list[Path]:
    """Write the JSON and/or markdown files; returns the paths written."""
    out = []
    if json_path:
        p = Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report.to_json(), indent=1) + "\n")
        out.append(p)
    if md_path:
        p = Path(md_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render_markdown(report))
        out.append(p)
    return out


def render_markdown(report: BenchReport, title: str = "hetpart end-to-end benchmark") -> str:
    lines = [f"# {title}", "", f"* date: {report.created}"]
    lines += [f"* {k}: {v}" for k, v in report.machine.items()]
    lines += [f"* settings: {_settings(report.settings)}"]
    lines += [f"* note: {n}" for n in report.notes]
    if report.commands:
        lines += ["", "Commands:", "", "```bash", *report.commands, "```"]
    if report.goals:
        lines += ["", *render_goals(report.goals)]
    for w in report.workloads:
        lines += ["", *render_workload(w)]
    if report.concurrent:
        lines += ["", *render_concurrent(report)]
    return "\n".join(lines) + "\n"


def _settings(s: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.items())


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:.3f}"


def _rate(x: float | None) -> str:
    return "" if not x else (f"{x:.0f}" if x >= 100 else f"{x:.2f}")


def render_row(r: Row) -> str:
    if r.skipped:
        return f"| {r.label} | | | | | | | skipped: {_cell(r.skipped)} |"
    spread = f"{_ms(r.latency.p10_s)}–{_ms(r.latency.p90_s)}" if r.latency else ""
    err = "" if r.error is None else f"{r.error:+.1%}"
    build = f"{r.build}" + (f" ({r.compile_s:.1f} s)" if r.compile_s is not None else "") if r.build else ""
    return (f"| {r.label} | {r.placement} | {_ms(r.latency.median_s if r.latency else None)} | {spread} | "
            f"{_rate(r.items_per_s)} | {_ms(r.predicted_latency_s)} | {err} | {_cell(_join(build, r.note))} |")


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_workload(w: WorkloadResult) -> list[str]:
    cap = f", --gpu-memory {human_bytes(w.gpu_memory)}" if w.gpu_memory else ""
    head = [f"## {w.label}", "",
            f"`{w.model}`, batch {w.batch}{cap}, {w.kernels} kernels"
            f"{', simulated CUDA' if w.simulated else ''}; {w.seconds:.0f} s incl. compiling", ""]
    head += [f"* {n}" for n in w.notes] + ([""] if w.notes else [])
    table = ["| contender | placement | median ms | p10–p90 ms | items/s | predicted ms | error | build; notes |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    out = head + table + [render_row(r) for r in w.rows]
    if w.oracle is not None:
        out += ["", *render_oracle(w.oracle)]
    return out


def render_oracle(o: Oracle) -> list[str]:
    rho = "n/a" if o.rank_correlation is None else f"{o.rank_correlation:+.2f}"
    out = [f"Oracle check: chosen plan {_ms(o.chosen_s)} ms, best measured {_ms(o.best_s)} ms ({o.best_origin}); "
           f"chosen is {o.gap:+.1%} from the best; rank correlation predicted/measured {rho}.", "",
           "| candidate | placement | predicted ms | measured ms |", "|---|---|---:|---:|"]
    for c in o.candidates:
        measured = _ms(c.measured_s) if c.measured_s is not None else f"skipped: {_cell(c.skipped or '')}"
        out.append(f"| {c.origin} | {c.placement} | {_ms(c.predicted_s)} | {measured} |")
    return out


def render_concurrent(report: BenchReport) -> list[str]:
    out = ["## Several models at once (MultiSession)", "",
           "| models | one after another ms | together ms | speed-up |", "|---|---:|---:|---:|"]
    for c in report.concurrent:
        if c.skipped:
            out.append(f"| {c.label} | | | skipped: {_cell(c.skipped)} |")
            continue
        sp = "" if c.speedup is None else f"{c.speedup:.2f}x"
        out.append(f"| {c.label} | {_ms(c.sequential.median_s if c.sequential else None)} | "
                   f"{_ms(c.concurrent.median_s if c.concurrent else None)} | {sp} |")
    return out


def render_goals(goals: list[dict]) -> list[str]:
    out = ["## Goals", ""]
    for g in goals:
        out.append(f"* **{g['status'].upper()}** — {g['goal']}" + (f" (worst: {_worst(g)})" if g["worst"] is not None else ""))
        out += [f"  * {d}" for d in g["details"]]
    return out


def _worst(g: dict) -> str:
    v = g["worst"]
    return f"{v:.2f}x" if g["id"] == "heterogeneous_speedup" else f"{v:+.1%}"
