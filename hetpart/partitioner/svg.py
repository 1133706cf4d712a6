"""A picture of the plan: the kernel graph, each kernel coloured by its device.

Uses graphviz ``dot`` when it is installed; otherwise draws the SVG itself with a
layered layout (one row per ``networkx.topological_generations`` level, each row
ordered by the mean position of its predecessors to cut down crossings).  Edges that
cross devices (the cuts) are drawn red; hovering a kernel shows its partition,
ops and predicted time.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

import networkx as nx

from ..errors import PlanError
from .plan import Plan

COLOURS = {"cpu": "#9ecae9", "cuda": "#a1d99b"}
STROKES = {"cpu": "#2b6c9e", "cuda": "#2e7d32"}
CUT = "#d62728"
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN, HEADER = 150, 38, 24, 46, 20, 50


def write_svg(plan: Plan, path) -> Path:
    """Write the picture to ``path``; needs ``plan.graph``."""
    if plan.graph is None:
        raise PlanError("drawing a plan needs its op graph: load it with Plan.load(path, graph)")
    path = Path(path)
    if shutil.which("dot"):
        try:
            svg = subprocess.run(["dot", "-Tsvg"], input=to_dot(plan), capture_output=True, text=True,
                                 check=True, timeout=60).stdout
            path.write_text(svg)
            return path
        except (subprocess.SubprocessError, OSError):
            pass  # fall back to our own layout
    path.write_text(draw_svg(plan))
    return path


def to_dot(plan: Plan) -> str:
    lines = ["digraph plan {", "  rankdir=TB; node [shape=box, style=\"rounded,filled\", fontname=Helvetica];"]
    for p in plan.partitions:
        lines.append(f"  subgraph cluster_{p.name} {{ label=\"{p.name}\"; color=\"{STROKES[p.device]}\";")
        for k in p.kernels:
            lines.append(f"    \"{k}\" [label=\"{k}\\n{_anchor(plan, k)}\", fillcolor=\"{COLOURS[p.device]}\"];")
        lines.append("  }")
    for u, v, _ in plan.graph.edges():
        cut = plan.assignment[u] != plan.assignment[v]
        lines.append(f"  \"{u}\" -> \"{v}\"" + (f" [color=\"{CUT}\", penwidth=2];" if cut else ";"))
    lines.append("}")
    return "\n".join(lines)


def draw_svg(plan: Plan) -> str:
    """The plan as a standalone SVG document, laid out without graphviz."""
    pos = _layout(plan.graph.nx)
    width = max((x for x, _ in pos.values()), default=0) + BOX_W + 2 * MARGIN
    height = max((y for _, y in pos.values()), default=0) + BOX_H + 2 * MARGIN + HEADER
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>', *_header(plan)]
    for u, v, tensors in plan.graph.edges():
        out.append(_edge(plan, pos, u, v, tensors))
    part = {k: p for p in plan.partitions for k in p.kernels}
    for k, (x, y) in pos.items():
        out.append(_box(plan, part[k], k, x, y))
    out.append("</svg>")
    return "\n".join(out)


def _layout(g: nx.DiGraph) -> dict[str, tuple[float, float]]:
    pos: dict[str, tuple[float, float]] = {}
    for row, layer in enumerate(nx.topological_generations(g)):
        def centre(k):
            xs = [pos[p][0] for p in g.predecessors(k) if p in pos]
            return sum(xs) / len(xs) if xs else 0.0

        ordered = sorted(layer, key=lambda k: (centre(k), k))
        for col, k in enumerate(ordered):
            pos[k] = (MARGIN + col * (BOX_W + GAP_X), MARGIN + HEADER + row * (BOX_H + GAP_Y))
    return pos


def _header(plan: Plan) -> list[str]:
    latency = plan.predicted["latency_s"] * 1e3
    out = [f'<text x="{MARGIN}" y="{MARGIN + 4}" font-size="14" font-weight="bold">'
           f'{escape(plan.model)}: {plan.objective} plan, predicted {latency:.3f} ms</text>']
    x = MARGIN
    for device, colour in COLOURS.items():
        out.append(f'<rect x="{x}" y="{MARGIN + 14}" width="14" height="14" fill="{colour}" '
                   f'stroke="{STROKES[device]}"/><text x="{x + 20}" y="{MARGIN + 25}">{device}</text>')
        x += 70
    out.append(f'<line x1="{x}" y1="{MARGIN + 21}" x2="{x + 30}" y2="{MARGIN + 21}" stroke="{CUT}" '
               f'stroke-width="2"/><text x="{x + 36}" y="{MARGIN + 25}">transfer between devices</text>')
    return out


def _edge(plan: Plan, pos, u, v, tensors) -> str:
    (x1, y1), (x2, y2) = pos[u], pos[v]
    cut = plan.assignment[u] != plan.assignment[v]
    style = f'stroke="{CUT}" stroke-width="2"' if cut else 'stroke="#888" stroke-width="1"'
    nbytes = sum(plan.graph.tensors[t].nbytes for t in tensors)
    return (f'<line x1="{x1 + BOX_W / 2}" y1="{y1 + BOX_H}" x2="{x2 + BOX_W / 2}" y2="{y2}" {style}>'
            f'<title>{escape(", ".join(tensors))} ({nbytes} bytes)</title></line>')


def _box(plan: Plan, p, k, x, y) -> str:
    kernel = plan.graph.kernels[k]
    tip = f"{k} in {p.name} on {p.device}: {'+'.join(kernel.ops)}"
    if k in plan.constraints:
        tip += f" ({plan.constraints[k]})"
    return (f'<g><title>{escape(tip)}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{COLOURS[p.device]}" '
            f'stroke="{STROKES[p.device]}" stroke-width="{2 if k in plan.constraints else 1}"/>'
            f'<text x="{x + 6}" y="{y + 15}" font-weight="bold">{escape(k)}</text>'
            f'<text x="{x + BOX_W - 6}" y="{y + 15}" text-anchor="end" fill="#555">{escape(p.name)}</text>'
            f'<text x="{x + 6}" y="{y + 30}">{escape(_anchor(plan, k))}</text></g>')


def _anchor(plan: Plan, k: str) -> str:
    ops = plan.graph.kernels[k].ops
    text = "+".join(ops)
    return text if len(text) <= 24 else text[:22] + ".."
