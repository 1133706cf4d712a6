"""What ``partition MODEL`` prints: the plan as tables, and ``--explain``.

:func:`render_plan` needs only the plan.  :func:`explain` answers "why is this on the
CPU?" by pricing the opposite choice: for each partition and the heaviest kernels,
the compute and transfer change, and the change in predicted latency, of moving it
to the other device.  It needs the plan's op graph and costs (kept in memory by
:func:`~.planning.partition`; for a loaded plan pass ``Plan.load(path, graph)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import PlanError
from ..importer.summary import human_bytes
from .evaluate import Evaluation
from .objectives import OBJECTIVES
from .plan import Plan
from .problem import MAPPED, STREAM, Problem, build_problem, other
from .same_device import refuse_split, tie_move
from .state import resolve_state

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
    if abs(s) < 5e-8:  # below the 0.1 us shown: no sign, so rounding noise does not read as a change
        return "0"
    return ("+" if s >= 0 else "-") + human_seconds(abs(s))


def render_plan(plan: Plan) -> str:
    """Partitions, cut transfers and predicted latency against the baselines, as text."""
    lines = [f"plan for {plan.model}: objective {plan.objective}, {len(plan.partitions)} partition(s), "
             f"{len(plan.cuts)} transfer(s), precision {plan.precision.describe()}",
             f"costs: {plan.profile_origin}", ""]
    lines += _partition_table(plan) + [""] + _cut_table(plan) + [""] + _state_lines(plan) + _memory_lines(plan)
    lines += _comparison(plan)
    return "\n".join(lines)


def _partition_table(plan: Plan) -> list[str]:
    rows = [f"{'partition':<12} {'device':<6} {'kernels':>7} {'predicted':>11} {'bytes in':>10} "
            f"{'bytes out':>10} {'weights':>19}  kernels"]
    for p in plan.partitions:
        span = kernel_ranges(p.kernels)
        weights = "-" if p.device != "cuda" or not p.weight_bytes else f"{p.weights} {human_bytes(p.weight_bytes)}"
        rows.append(f"{p.name:<12} {p.device:<6} {len(p.kernels):>7} {human_seconds(p.predicted_s):>11} "
                    f"{human_bytes(p.bytes_in):>10} {human_bytes(p.bytes_out):>10} {weights:>19}  {span}")
    return rows


def kernel_ranges(kernels, limit: int = 6) -> str:
    """Kernel ids as runs of consecutive ``node_<i>``: ``node_0..node_3, node_7``.

    A partition need not be contiguous in kernel numbering (the graph's topological
    order interleaves branches), so a first..last span would claim kernels it does
    not hold.  At most ``limit`` runs are shown, then how many kernels are left.
    """
    runs: list[list] = []  # [prefix, first, last] or [id] for ids without a number
    for k in kernels:
        prefix, _, num = k.rpartition("_")
        if num.isdigit() and runs and len(runs[-1]) == 3 and runs[-1][0] == prefix and runs[-1][2] + 1 == int(num):
            runs[-1][2] = int(num)
        elif num.isdigit():
            runs.append([prefix, int(num), int(num)])
        else:
            runs.append([k])
    text = [r[0] if len(r) == 1 else f"{r[0]}_{r[1]}" if r[1] == r[2] else f"{r[0]}_{r[1]}..{r[0]}_{r[2]}"
            for r in runs]
    if len(text) <= limit:
        return ", ".join(text)
    shown = runs[:limit]
    left = len(kernels) - sum(1 if len(r) == 1 else r[2] - r[1] + 1 for r in shown)
    return ", ".join(text[:limit]) + f", ... ({left} more kernels)"


def _cut_table(plan: Plan) -> list[str]:
    if not plan.cuts:
        return ["no transfers: every kernel, input and output stays on one device"]
    total_s = sum(c.seconds for c in plan.cuts)
    lines = [f"transfers at the cuts: {len(plan.cuts)}, {human_bytes(sum(c.nbytes for c in plan.cuts))}, "
             f"{human_seconds(total_s)}",
             f"  {'tensor':<18} {'from':<12} {'to':<24} {'bytes':>10} {'predicted':>11}"]
    for c in sorted(plan.cuts, key=lambda c: -c.seconds)[:TOP_CUTS]:
        src = c.src or (f"state ({c.src_device})" if c.tensor in plan.state.values() else "input (host)")
        dst = ", ".join(c.readers) if c.readers else "output (host)"
        lines.append(f"  {c.tensor:<18} {src:<12} {dst:<24} {human_bytes(c.nbytes):>10} "
                     f"{human_seconds(c.seconds):>11}")
    if len(plan.cuts) > TOP_CUTS:
        lines.append(f"  ... and {len(plan.cuts) - TOP_CUTS} smaller transfers")
    return lines


def state_devices(plan: Plan, output: str, inp: str) -> tuple[list[str], list[str], set[str]]:
    """(writer kernels, reader kernels, devices) of state pair ``output -> inp`` in ``plan``:
    from the op graph where the plan has it, else from the partitions reading ``inp``
    (no writer named)."""
    if plan.graph is not None and output in plan.graph.model_output_names:
        (pair,) = resolve_state(plan.graph, {output: inp}).pairs  # the pair as the plan was made with it
        return [pair.writer], list(pair.readers), {plan.assignment[k] for k in pair.kernels if k in plan.assignment}
    parts = [p for p in plan.partitions if inp in p.inputs]
    return [], [k for p in parts for k in p.kernels], {p.device for p in parts}


def _state_lines(plan: Plan) -> list[str]:
    """One line per state pair: kept on one device with its readers (what the runtime
    binds), or, for a plan file made otherwise, that the runtime will refuse it."""
    if not plan.state:
        return []
    lines = [f"device-resident state: {len(plan.state)} pair(s), each kept together on one device (its writer "
             "and every reader of its input), where the session binds it"]
    for out, inp in plan.state.items():
        writer, readers, devices = state_devices(plan, out, inp)
        who = (f"writer {', '.join(writer)}; " if writer else "") + f"readers {kernel_ranges(readers) or '-'}"
        if len(devices) == 1:
            where = f"kept together on {next(iter(devices))}"
        elif devices:
            where = f"SPLIT across {' and '.join(sorted(devices))}: the runtime refuses to bind it, make the plan again"
        else:
            where = "no kernel reads it"
        lines.append(f"  {out} -> {inp}: {where} ({who})")
    return lines + [""]


def _memory_lines(plan: Plan) -> list[str]:
    m = plan.predicted["gpu_memory"]
    cap = f" (cap {human_bytes(m['cap'])})" if m["cap"] is not None else ""
    ring = m.get("stream_buffers", 0)
    buffers = (f" + stream buffers {human_bytes(ring)} ({plan.stream_slots} x "
               f"{human_bytes(plan.stream_slot_bytes)})") if ring else ""
    lines = [f"GPU memory: parameters {human_bytes(m['params'])}{buffers} + peak activations "
             f"{human_bytes(m['peak_activations'])} = {human_bytes(m['total'])}{cap}"]
    if plan.streamed:
        streamed = sum(p.weight_bytes for p in plan.streamed)
        lines.append(f"streamed weights: {len(plan.streamed)} partition(s), {human_bytes(streamed)} copied from "
                     f"pinned host memory per inference ({human_seconds(plan.predicted.get('stream_s'))} on the "
                     "copy stream, overlapped with compute)")
    return lines + [""]


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
    if b.get("same_placement"):
        return "same placement as the plan"
    if abs(ratio - 1) < 0.005:
        return "another placement, predicted within 0.5% of the plan"
    word = better if ratio > 1 else worse
    return f"plan is {max(ratio, 1 / ratio):.2f}x {word} {unit}".rstrip()


def _rate(numbers: dict) -> str:
    rate = numbers.get("throughput_per_s")
    return f"{rate:,.1f}/s" if rate else "-"


# --- explain ------------------------------------------------------------------------
@dataclass(frozen=True)
class MoveEffect:
    """What moving some kernels does to the objective's number, in parts that add up:
    ``total_s == compute_s + copies_s + overheads_s + overlap_s``.

    ``compute_s``: the kernels' own time; ``copies_s``: CPU<->GPU copies, streamed
    weights' copies included;
    ``overheads_s``: per-partition call overheads (a move can split or merge
    partitions); ``overlap_s``: the rest -- overlap of CPU, GPU and copies lost (+)
    or gained (-), and for a pipelined objective the change of the busiest track.
    It is 0 when partitions run one after another and no weights stream."""

    compute_s: float
    copies_s: float
    overheads_s: float
    overlap_s: float
    total_s: float
    moved: Evaluation


def _work(problem: Problem, e: Evaluation) -> tuple[float, float, float]:
    """(compute, copies, overheads) seconds of one evaluated assignment, summed."""
    layout = e.layout
    return (problem.compute_s(layout.assignment),
            sum(t.seconds for t in layout.transfers) + sum(layout.weight_seconds),
            sum(layout.group_overhead))


def move_effect(problem: Problem, obj, here: Evaluation, b) -> MoveEffect:
    """The change of ``obj``'s metric from ``here`` to assignment ``b``, in parts."""
    moved = obj.evaluate(problem, b)
    parts = [m - h for m, h in zip(_work(problem, moved), _work(problem, here))]
    total = getattr(moved, obj.metric) - getattr(here, obj.metric)
    return MoveEffect(*parts, total - sum(parts), total, moved)


def explain(plan: Plan) -> str:
    """Per partition and for the heaviest kernels: what moving it to the other device would cost."""
    problem = problem_of(plan)
    refuse_split(problem.same_device, plan.assignment, "this plan")  # a plan file made before pairs were kept
    obj = OBJECTIVES[plan.objective]
    here = obj.evaluate(problem, placement_of(plan))
    column = "d period" if obj.pipelined else "d latency"
    measure = {"sequential_s": "latency with partitions run one after another",
               "makespan_s": "latency with CPU and CUDA partitions overlapping",
               "period_s": "seconds per pipelined micro-batch"}.get(obj.metric, obj.metric)
    header = (f"{'device':<6} {'compute here':>13} {'there':>11} {'d compute':>11} {'d copies':>11} "
              f"{'d overheads':>11} {'d overlap':>11} {'= ' + column:>12}  verdict")
    overlap = ("partitions run one after another, so 0 unless weights stream: then the part of their copies "
               "compute hides (-)" if obj.metric == "sequential_s" else
               "overlap of CPU, GPU and copies lost (+) or gained (-)" if not obj.pipelined else
               "the change of the busiest device or copy engine beyond its work")
    lines = ["why each partition is where it is: the change if it moved to the other device",
             f"({column} = change in predicted {measure}; positive means the plan's choice is better.",
             " It is the sum of: d compute (the kernels' time), d copies (CPU<->GPU), d overheads",
             f" (per-partition calls; a move can split or merge partitions) and d overlap ({overlap}))",
             f"  {'partition':<12} {header}"]
    if problem.same_device:
        lines[4:4] = [" A state pair's writer and the readers of its input move together: the runtime binds a state"
                      f" only on one device ({', '.join(str(g) for g in problem.same_device)})"]
    for p in plan.partitions:
        lines.append(_move_row(problem, plan, obj, here, p.name, p.device, p.kernels, 12))
    lines += _streaming_lines(problem, plan, obj, here)
    heavy = sorted(plan.assignment, key=lambda k: -problem.seconds[k][plan.assignment[k]])[:TOP_KERNELS]
    lines += ["", f"heaviest kernels (top {len(heavy)} by predicted time on their device):",
              f"  {'kernel':<12} {header}"]
    for k in heavy:
        kernel = problem.graph.kernels[k]
        lines.append(_move_row(problem, plan, obj, here, k, plan.assignment[k], [k], 12)
                     + f"  [{'+'.join(kernel.ops)}: {kernel.op_class}]")
    return "\n".join(lines)


def problem_of(plan: Plan) -> Problem:
    """The plan's problem again: its graph and costs, with the plan's constraints as pins."""
    if plan.graph is None:
        raise PlanError("explaining a plan needs its op graph: load it with Plan.load(path, graph)")
    costs = plan.costs
    if costs is None:
        from .planning import cost_model_for

        costs = cost_model_for(None)
    problem = build_problem(plan.graph, costs, (), plan.gpu_memory_cap, state=plan.state)
    allowed = dict(problem.allowed)
    for k in plan.constraints:
        allowed[k] = (plan.assignment[k],)
    return replace(problem, allowed=allowed, reasons=dict(plan.constraints))


def placement_of(plan: Plan) -> dict:
    """The plan's placement: its assignment, with STREAM for kernels of streamed partitions
    and MAPPED for kernels of mapped ones."""
    streamed = {k for p in plan.streamed for k in p.kernels}
    mapped = {k for p in plan.mapped for k in p.kernels}
    return {k: STREAM if k in streamed else MAPPED if k in mapped else d for k, d in plan.assignment.items()}


def _streaming_lines(problem: Problem, plan: Plan, obj, here: Evaluation) -> list[str]:
    """Why each streamed partition streams: the change if it kept its weights resident
    (usually: it would not fit), or ran on the CPU."""
    if not plan.streamed:
        return []
    ring = plan.predicted["gpu_memory"].get("stream_buffers", 0)
    lines = ["", f"streamed weights: {len(plan.streamed)} partition(s) copy their weights from pinned host memory "
             f"into a ring of {plan.stream_slots} x {human_bytes(plan.stream_slot_bytes)} ({human_bytes(ring)}) "
             "on a copy stream ahead of their calls; the change if one instead",
             f"  {'partition':<12} {'weights':>10} {'copy':>11}  {'kept them resident':<50}  ran on the CPU"]
    for p in plan.streamed:
        copy = problem.weight_copy_s(p.weight_bytes)
        alts = [_alternative(problem, obj, here, p.kernels, there) for there in ("cuda", "cpu")]
        lines.append(f"  {p.name:<12} {human_bytes(p.weight_bytes):>10} {human_seconds(copy):>11}  "
                     f"{alts[0]:<50}  {alts[1]}")
    return lines


def _alternative(problem: Problem, obj, here: Evaluation, kernels, there: str) -> str:
    movable = [k for k in kernels if problem.movable(k, there)]
    if not movable:
        return f"cannot: {problem.reasons.get(kernels[0], 'held')}"
    b = dict(here.placement)
    b.update(tie_move(problem, {k: there for k in movable}, b))
    m = move_effect(problem, obj, here, b)
    if not m.moved.fits:
        return f"would not fit: GPU needs {human_bytes(m.moved.memory.total)}"
    slots = m.moved.layout.stream_slots
    ring = f", ring cut to {slots} slot(s) to fit" if 0 < slots < here.layout.stream_slots else ""
    return f"{signed_seconds(m.total_s)} " + (f"(slower{ring})" if m.total_s > 0 else "(a tie or a gain not reached)")


def _move_row(problem, plan, obj, here, name, device, kernels, width) -> str:
    a = plan.assignment
    there = other(device)
    movable = [k for k in kernels if problem.movable(k, there)]
    compute_here = problem.compute_s(a, kernels)
    head = f"  {name:<{width}} {device:<6} {human_seconds(compute_here):>13}"
    if not movable:
        return head + f" {'-':>11}" * 5 + f" {'-':>12}  stays: {problem.reasons.get(kernels[0], '')}"
    b = dict(here.placement)
    move = tie_move(problem, {k: there for k in movable}, b)  # a state pair's kernels move together
    b.update(move)
    m = move_effect(problem, obj, here, b)
    row = (head + f" {human_seconds(compute_here + m.compute_s):>11}"
           + "".join(f" {signed_seconds(v):>11}" for v in (m.compute_s, m.copies_s, m.overheads_s, m.overlap_s))
           + f" {signed_seconds(m.total_s):>12}  ")
    mates = len(move) - len(movable)
    return row + _verdict(problem, m, there, len(kernels) - len(movable)) + (
        f" (moved with {mates} kernel(s) of its state pair)" if mates else "")


def _verdict(problem, m: MoveEffect, there, stuck) -> str:
    if not m.moved.fits:
        text = (f"would not fit: GPU needs {human_bytes(m.moved.memory.total)} > cap "
                f"{human_bytes(problem.gpu_memory)}")
    elif m.total_s <= 0:
        text = "as good or better there: a tie, or a gain the search did not reach"
    elif m.compute_s < 0:
        costs = {"the copies": m.copies_s, "the extra partition overheads": m.overheads_s,
                 "the lost overlap": m.overlap_s}
        text = f"faster on {there}, but {max(costs, key=costs.get)} cost more"
    elif m.copies_s < 0:
        text = f"saves copies, but slower on {there}"
    else:
        text = f"slower on {there}"
    return text + (f" ({stuck} pinned kernel(s) would stay)" if stuck else "")
