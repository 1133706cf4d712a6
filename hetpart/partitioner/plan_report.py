"""What ``partition MODEL`` prints: the plan as tables, and ``--explain``.

:func:`render_plan` needs only the plan.  :func:`explain` answers "why is this on the
CPU?" by pricing the opposite choice: for each partition and the heaviest kernels,
the compute and transfer change, and the change in predicted latency, of moving it
to the other device.  It needs the plan's op graph and costs (kept in memory by
:func:`~.planning.partition`; for a loaded plan pass ``Plan.load(path, graph)``).
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import PlanError
from ..importer.summary import human_bytes
from .objectives import OBJECTIVES
from .plan import Plan
from .problem import Problem, build_problem, other

TOP_CUTS = 12
TOP_KERNELS = 10


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if abs(s) >= 1:
        return f"{s:.3f} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def signed_seconds(s: float) -> str:
    return ("+" if s >= 0 else "-") + human_seconds(abs(s))


def render_plan(plan: Plan) -> str:
    """Partitions, cut transfers and predicted latency against the baselines, as text."""
    lines = [f"plan for {plan.model}: objective {plan.objective}, {len(plan.partitions)} partition(s), "
             f"{len(plan.cuts)} transfer(s)", f"costs: {plan.profile_origin}", ""]
    lines += _partition_table(plan) + [""] + _cut_table(plan) + [""] + _memory_lines(plan)
    lines += _comparison(plan)
    return "\n".join(lines)


def _partition_table(plan: Plan) -> list[str]:
    rows = [f"{'partition':<12} {'device':<6} {'kernels':>7} {'predicted':>11} {'bytes in':>10} "
            f"{'bytes out':>10}  kernels"]
    for p in plan.partitions:
        span = p.kernels[0] if len(p.kernels) == 1 else f"{p.kernels[0]} .. {p.kernels[-1]}"
        rows.append(f"{p.name:<12} {p.device:<6} {len(p.kernels):>7} {human_seconds(p.predicted_s):>11} "
                    f"{human_bytes(p.bytes_in):>10} {human_bytes(p.bytes_out):>10}  {span}")
    return rows


def _cut_table(plan: Plan) -> list[str]:
    if not plan.cuts:
        return ["no transfers: every kernel, input and output stays on one device"]
    total_s = sum(c.seconds for c in plan.cuts)
    lines = [f"transfers at the cuts: {len(plan.cuts)}, {human_bytes(sum(c.nbytes for c in plan.cuts))}, "
             f"{human_seconds(total_s)}",
             f"  {'tensor':<18} {'from':<12} {'to':<24} {'bytes':>10} {'predicted':>11}"]
    for c in sorted(plan.cuts, key=lambda c: -c.seconds)[:TOP_CUTS]:
        src = c.src or "input (host)"
        dst = ", ".join(c.readers) if c.readers else "output (host)"
        lines.append(f"  {c.tensor:<18} {src:<12} {dst:<24} {human_bytes(c.nbytes):>10} "
                     f"{human_seconds(c.seconds):>11}")
    if len(plan.cuts) > TOP_CUTS:
        lines.append(f"  ... and {len(plan.cuts) - TOP_CUTS} smaller transfers")
    return lines


def _memory_lines(plan: Plan) -> list[str]:
    m = plan.predicted["gpu_memory"]
    cap = f" (cap {human_bytes(m['cap'])})" if m["cap"] is not None else ""
    return [f"GPU memory: parameters {human_bytes(m['params'])} + peak activations "
            f"{human_bytes(m['peak_activations'])} = {human_bytes(m['total'])}{cap}", ""]


def _comparison(plan: Plan) -> list[str]:
    p = plan.predicted
    mode = "one after another" if OBJECTIVES[plan.objective].timeline == "sequential" else "overlapping"
    lines = [f"predicted latency (partitions {mode}) and throughput:",
             f"  {'plan':<9} {human_seconds(p['latency_s']):>11} {_rate(p):>12}"]
    for name, b in p["baselines"].items():
        note = p["baseline_notes"].get(name, "")
        if b is None:
            lines.append(f"  {name:<9} {'-':>11} {'':>12}  {note}")
            continue
        verdict = _versus(p, b, OBJECTIVES[plan.objective].pipelined)
        lines.append(f"  {name:<9} {human_seconds(b['latency_s']):>11} {_rate(b):>12}  {verdict}"
                     + (f"; {note}" if note else ""))
    return lines


def _versus(plan_numbers: dict, b: dict, pipelined: bool) -> str:
    """How the plan compares with baseline ``b``, on throughput for a pipelined plan."""
    if pipelined:
        ratio, better, worse = plan_numbers["throughput_per_s"] / b["throughput_per_s"], "more", "less"
        unit = "throughput"
    else:
        ratio, better, worse = b["latency_s"] / max(plan_numbers["latency_s"], 1e-30), "faster", "slower"
        unit = ""
    if abs(ratio - 1) < 0.005:
        return "same as the plan"
    word = better if ratio > 1 else worse
    return f"plan is {max(ratio, 1 / ratio):.2f}x {word} {unit}".rstrip()


def _rate(numbers: dict) -> str:
    rate = numbers.get("throughput_per_s")
    return f"{rate:,.1f}/s" if rate else "-"


# --- explain ------------------------------------------------------------------------
def explain(plan: Plan) -> str:
    """Per partition and for the heaviest kernels: what moving it to the other device would cost."""
    problem = problem_of(plan)
    obj = OBJECTIVES[plan.objective]
    here = obj.evaluate(problem, plan.assignment)
    base = getattr(here, obj.metric)
    column = "d period" if obj.pipelined else "d latency"
    measure = {"sequential_s": "latency with partitions run one after another",
               "makespan_s": "latency with CPU and CUDA partitions overlapping",
               "period_s": "seconds per pipelined micro-batch"}.get(obj.metric, obj.metric)
    header = (f"{'device':<6} {'compute here':>13} {'there':>11} {'d compute':>11} "
              f"{'d transfer':>11} {column:>11}  verdict")
    lines = ["why each partition is where it is: the change if it moved to the other device",
             f"({column} = change in predicted {measure}; positive means the plan's choice is better)",
             f"  {'partition':<12} {header}"]
    for p in plan.partitions:
        lines.append(_move_row(problem, plan, obj, base, p.name, p.device, p.kernels, 12))
    heavy = sorted(plan.assignment, key=lambda k: -problem.seconds[k][plan.assignment[k]])[:TOP_KERNELS]
    lines += ["", f"heaviest kernels (top {len(heavy)} by predicted time on their device):",
              f"  {'kernel':<12} {header}"]
    for k in heavy:
        ops = "+".join(problem.graph.kernels[k].ops)
        lines.append(_move_row(problem, plan, obj, base, k, plan.assignment[k], [k], 12) + f"  [{ops}]")
    return "\n".join(lines)


def problem_of(plan: Plan) -> Problem:
    """The plan's problem again: its graph and costs, with the plan's constraints as pins."""
    if plan.graph is None:
        raise PlanError("explaining a plan needs its op graph: load it with Plan.load(path, graph)")
    costs = plan.costs
    if costs is None:
        from .planning import _cost_model

        costs = _cost_model(None)
    problem = build_problem(plan.graph, costs, (), plan.gpu_memory_cap)
    allowed = dict(problem.allowed)
    for k in plan.constraints:
        allowed[k] = (plan.assignment[k],)
    return replace(problem, allowed=allowed, reasons=dict(plan.constraints))


def _move_row(problem, plan, obj, base, name, device, kernels, width) -> str:
    a = plan.assignment
    there = other(device)
    movable = [k for k in kernels if problem.movable(k, there)]
    compute_here = problem.compute_s(a, kernels)
    head = f"  {name:<{width}} {device:<6} {human_seconds(compute_here):>13}"
    if not movable:
        return head + f" {'-':>11} {'-':>11} {'-':>11} {'-':>11}  stays: {problem.reasons.get(kernels[0], '')}"
    b = dict(a)
    b.update({k: there for k in movable})
    d_compute = problem.compute_s(b, movable) - problem.compute_s(a, movable)
    d_transfer = problem.transfer_s(b) - problem.transfer_s(a)
    moved = obj.evaluate(problem, b)
    d_latency = getattr(moved, obj.metric) - base
    compute_there = compute_here + d_compute
    row = (head + f" {human_seconds(compute_there):>11} {signed_seconds(d_compute):>11} "
           f"{signed_seconds(d_transfer):>11} {signed_seconds(d_latency):>11}  ")
    return row + _verdict(problem, moved, d_compute, d_transfer, d_latency, there, len(kernels) - len(movable))


def _verdict(problem, moved, d_compute, d_transfer, d_latency, there, stuck) -> str:
    if not moved.fits:
        text = f"would not fit: GPU needs {human_bytes(moved.memory.total)} > cap {human_bytes(problem.gpu_memory)}"
    elif d_latency <= 0:
        text = "as good or better there: a tie, or a gain the search did not reach"
    elif d_compute < 0:
        text = f"faster on {there}, but the copies cost more"
    elif d_transfer < 0:
        text = f"saves copies, but slower on {there}"
    else:
        text = f"slower on {there}"
    return text + (f" ({stuck} pinned kernel(s) would stay)" if stuck else "")
