"""The serving benchmark's report: a markdown table and an SVG of p99 against offered load.

The SVG is written by hand (no plotting library): one panel per scenario, one line
per contender, the SLO as a dashed line; log-scaled rate axis, p99 clipped at 3x the
SLO (points above sit on the top edge, drawn hollow).
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from .serve import search_rule
from .serve_load import ALONE, INEXACT_MAX_FRACTION
from .serve_tail import tail_line

COLOURS = ["#2e7d32", "#1f77b4", "#ff7f0e", "#d62728", "#9467bd", "#8c564b"]
PANEL_W, PANEL_H, PAD_L, PAD_R, PAD_T, PAD_B = 520, 300, 60, 150, 40, 45


def markdown(body: dict, header: list[str] = ()) -> str:
    """The results as markdown: how max rate was found, then one table per scenario and
    the goal per scenario, with which references hetpart's answers matched."""
    lines = list(header)
    rule = body.get("search") or (search_rule(body["settings"]) if body.get("settings") else None)
    if rule:
        lines += ["", f"Max rate search: {rule}."]
    for s in body["scenarios"]:
        lines += ["", f"## {s['scenario']} ({' + '.join(s['models'])}), p99 SLO {s['slo_ms']:g} ms", "",
                  "| contender | max rate/s under SLO | p50 ms | p99 ms | mean batch | late | lost | crossed | wrong | inexact | note |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in body["results"]:
            if r["scenario"] != s["scenario"]:
                continue
            if r["skipped"]:
                lines.append(f"| {r['contender']} | – | – | – | – | – | – | – | – | – | skipped: {r['skipped']} |")
                continue
            lines.append(f"| {r['contender']} | {r['max_rate_per_s']:.1f} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
                         f"{_num(r['mean_batch_rows'])} | {r['late']} | {r['lost']} | {r['crossed']} | {r['wrong']} | "
                         f"{r.get('inexact', 0)} | {'; '.join(r['notes'])} |")
        speedup = s["speedup_vs_best"]
        verdict = "met" if s["goal_met"] else "NOT met"
        lines += ["", f"hetpart: {speedup:.2f}x the best other contender ({s['best_other']}); "
                      f"lost {s['lost']}, crossed {s['crossed']}: goal (>= {body['goal_speedup']}x, none lost or "
                      f"crossed) {verdict}." if speedup is not None else
                  f"hetpart: no speedup computed (a contender is missing or sustained no rate); goal {verdict}."]
        if s.get("matched"):
            lines.append(matched_sentence(s["matched"]))
        lines += tail_sentences([r for r in body["results"] if r["scenario"] == s["scenario"]])
        lines += reference_sentences([r for r in body["results"] if r["scenario"] == s["scenario"]])
        lines += resource_sentences([r for r in body["results"] if r["scenario"] == s["scenario"]])
        if s.get("inexact"):
            lines.append(f"hetpart answered {s['inexact']} request(s) inexactly: its own answer but for a few "
                         f"sampled elements (at most {INEXACT_MAX_FRACTION:.0%}), e.g. a near-tie another build broke "
                         "otherwise; see each load point's `mismatches`.")
        if s.get("failed_contenders"):
            lines.append(f"Not measured (failed): {', '.join(s['failed_contenders'])}; the goal needs every contender.")
    return "\n".join(lines) + "\n"


def matched_sentence(matched: dict) -> str:
    """Which reference hetpart's right answers matched: alone (batch 1) or a bucket build."""
    parts = [f"{n} {'alone (the batch-1 answer)' if key == ALONE else f'on the batch-{key} build'}"
             for key, n in matched.items()]
    return (f"hetpart's right answers ({sum(matched.values())}) matched their own request's answer "
            f"{', '.join(parts)} (each payload's answer taken at setup on every build it may be batched into, "
            "at every row).")


def tail_sentences(rows: list[dict]) -> list[str]:
    """hetpart's tail (and each hetpart variant's), one line each at its best point and
    the first rate that missed (:func:`~.serve_tail.tail_line`); none where not recorded
    (schema 1, no timings)."""
    lines = []
    for r in rows:
        if not (r["contender"] == "hetpart" or r.get("variant")) or not r.get("tail"):
            continue
        for key, label in (("best", "at its best rate"), ("first_miss", "at the first rate over the SLO")):
            point = r["tail"].get(key)
            line = tail_line(point) if point else None
            if line:
                lines.append(f"{r['contender']} tail {label} {line}.")
    return lines


def resource_sentences(rows: list[dict]) -> list[str]:
    """Per contender, what the process used at its best rate and at the first rate over
    the SLO (each point's ``resources``, :func:`~.serve._resources`): cores busy, and each
    CPU-sharing lane's busy fraction and wait per call; none where not recorded."""
    lines = []
    for r in rows:
        curve = [p for p in r.get("curve") or [] if p.get("resources")]
        if not curve:
            continue
        best = r.get("max_rate_per_s") or 0.0
        over = [p for p in curve if p["rate_per_s"] > best and (p.get("p99_ms") or 1e9) > r["slo_ms"]]
        picks = [("best", next((p for p in curve if p["rate_per_s"] == best), None)),
                 ("first over", min(over, key=lambda p: p["rate_per_s"]) if over else None)]
        parts = []
        for label, p in picks:
            if p is None:
                continue
            res = p["resources"]
            lanes = "; ".join(f"{name} lane busy {v['lane_busy']:.0%}, {v['busy_ms_per_call']:.2f} ms held "
                              f"+ {v['wait_ms_per_call']:.2f} ms waited per call ({v['calls']} calls)"
                              for name, v in (res.get("lanes") or {}).items())
            parts.append(f"{label} {p['rate_per_s']:.0f}/s: {res['cores_busy']:.1f} cores busy"
                         + (f", {lanes}" if lanes else ""))
        if parts:
            lines.append(f"{r['contender']} resources (window and drain): " + " | ".join(parts) + ".")
    return lines


def reference_sentences(rows: list[dict]) -> list[str]:
    """Where a build answers otherwise than batch 1, and where a contender answered one
    input two ways alone (nondeterministic), one sentence each."""
    lines = []
    for r in rows:
        notes = r.get("references") or {}
        differ = {m: {b: n for b, n in by.items() if n} for m, by in (notes.get("differ_by_build") or {}).items()}
        differ = {m: by for m, by in differ.items() if by}
        if differ:
            lines.append(f"{r['contender']}'s bucket builds answer some payloads otherwise than batch 1 (payloads, "
                         "by build): " + "; ".join(f"{m}: " + ", ".join(f"batch {b}: {n}" for b, n in by.items())
                                                   for m, by in differ.items())
                         + " -- right answers for a request batched into that build.")
        shaky = {m: n for m, n in (notes.get("unstable") or {}).items() if n}
        if shaky:
            lines.append(f"{r['contender']} answered some payloads two ways alone (nondeterministic build; payloads): "
                         + ", ".join(f"{m}: {n}" for m, n in shaky.items()) + ".")
    return lines


def cpu_sharing_line(record: dict | None) -> str:
    """The .md's words for the JSON ``cpu_sharing`` record: hetpart's policy, the
    variants', and per policy its lanes (CPUs, pool size) and how many CPU partition
    calls waited for a lane."""
    if not record:
        return "not recorded"
    parts = [f"hetpart {record['hetpart']}"]
    if record.get("variants"):
        parts.append("variants " + ", ".join(record["variants"]))
    for name, share in sorted((record.get("shares") or {}).items()):
        lanes = "; ".join(f"cpus {_cpus(lane['cpus'])} pool {lane['pool_size']}" for lane in share["lanes"])
        parts.append(f"{name}: {len(share['lanes'])} lane(s) ({lanes}), {share['calls']} calls, "
                     f"{share['waited']} waited for a lane")
    return "; ".join(parts) + (" (none: each calling thread's own pool)" if "none" in
                               [record["hetpart"], *record.get("variants", [])] else "")


def _cpus(cpus) -> str:
    if isinstance(cpus, str) or not cpus:
        return str(cpus)
    if len(cpus) == 1:
        return str(cpus[0])
    return f"{cpus[0]}-{cpus[-1]}" if list(cpus) == list(range(cpus[0], cpus[-1] + 1)) else ",".join(map(str, cpus))


def _ms(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def _num(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def svg(body: dict) -> str:
    """p99 latency against offered rate, a panel per scenario (standalone SVG document)."""
    scenarios = body["scenarios"]
    width, height = PANEL_W + PAD_L + PAD_R, (PANEL_H + PAD_T + PAD_B) * max(1, len(scenarios))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for i, s in enumerate(scenarios):
        rows = [r for r in body["results"] if r["scenario"] == s["scenario"] and not r["skipped"]]
        out += _panel(s, rows, i * (PANEL_H + PAD_T + PAD_B))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _panel(s: dict, rows: list[dict], top: float) -> list[str]:
    slo = float(s["slo_ms"])
    ymax = 3 * slo
    rates = [p["rate_per_s"] for r in rows for p in r["curve"]] or [1.0, 10.0]
    lo, hi = math.log10(min(rates)), math.log10(max(rates))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    x0, y0 = PAD_L, top + PAD_T

    def x(rate):
        return x0 + (math.log10(rate) - lo) / (hi - lo) * PANEL_W

    def y(ms):
        return y0 + PANEL_H - min(ms, ymax) / ymax * PANEL_H

    title = f"{' + '.join(s['models'])}: p99 latency vs offered load (SLO {slo:g} ms)"
    out = [f'<text x="{x0}" y="{top + 22}" font-size="14" font-weight="bold">{escape(title)}</text>',
           f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>',
           f'<line x1="{x0}" y1="{y(slo):.1f}" x2="{x0 + PANEL_W}" y2="{y(slo):.1f}" stroke="#d62728" '
           f'stroke-dasharray="6,4"/>',
           f'<text x="{x0 + PANEL_W - 4}" y="{y(slo) - 4:.1f}" text-anchor="end" fill="#d62728">SLO</text>']
    for frac in (0, 0.5, 1, 1.5, 2, 2.5, 3):
        ms = frac * slo
        out.append(f'<text x="{x0 - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms:g}</text>')
    for decade in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            rate = m * 10 ** decade
            if lo <= math.log10(rate) <= hi:
                out.append(f'<text x="{x(rate):.1f}" y="{y0 + PANEL_H + 16}" text-anchor="middle">{rate:g}</text>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 + PANEL_H + 34}" text-anchor="middle">'
               'offered load (requests/s, log scale)</text>')
    out.append(f'<text x="{x0 - 45}" y="{y0 + PANEL_H / 2}" transform="rotate(-90 {x0 - 45} {y0 + PANEL_H / 2})" '
               'text-anchor="middle">p99 ms</text>')
    for j, r in enumerate(rows):
        colour = COLOURS[j % len(COLOURS)]
        pts = [(p["rate_per_s"], p["p99_ms"] if p["p99_ms"] is not None else math.inf) for p in r["curve"]]
        if pts:
            path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for a, b in pts:
                fill = colour if b <= ymax else "white"
                out.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3" fill="{fill}" stroke="{colour}">'
                           f'<title>{escape(r["contender"])}: {a:.1f}/s, p99 {_ms(None if math.isinf(b) else b)} ms'
                           '</title></circle>')
        ly = y0 + 14 + 18 * j
        out.append(f'<line x1="{x0 + PANEL_W + 12}" y1="{ly - 4}" x2="{x0 + PANEL_W + 30}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{x0 + PANEL_W + 34}" y="{ly}">{escape(r["contender"])}</text>')
    return out
