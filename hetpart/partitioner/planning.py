"""``partition(graph, ...)``: the partitioner's one entry point, and how a Plan is built.

graph + costs + pins + cap -> :class:`~.problem.Problem` -> the objective's solver ->
an assignment -> :func:`make_plan` (partitions, cuts, timeline, predictions and
baselines, all from :func:`~.evaluate.evaluate`).
"""

from __future__ import annotations

import numbers
import os

from ..errors import PlanError, option
from .baselines import BASELINES
from .costs import cost_origin
from .evaluate import Evaluation
from .layout import mapped_extra_s, wake_count
from .objectives import OBJECTIVES, Objective
from .capacity import default_cap
from .plan import Cut, Partition, Plan, Span
from .problem import Assignment, Problem, build_problem
from .timeline import simulate
from .same_device import refuse_split


def partition(graph, objective: str = "latency", profile=None, gpu_memory: int | None = None, pins=(),
              cost_model=None, progress: bool = True, stream_weights: bool = True, precision=None,
              state=None) -> Plan:
    """Place every kernel of ``graph`` on the CPU or CUDA, minimising ``objective``.

    ``profile`` (None, a path or a Profile) picks the cost model's measurements;
    ``cost_model`` (anything with the :class:`~.costs.Costs` methods) replaces it.
    ``gpu_memory`` caps GPU parameters plus peak activations, in bytes (default: the
    GPU memory the profile records, :func:`.capacity.default_cap`); ``pins`` are
    ``"Op=device"``/``"node_i=device"`` strings or :class:`~.pins.Pin`.  With
    ``stream_weights=True``, under a cap the best plan without one does not fit, CUDA
    kernels may keep their weights in pinned host memory and stream them in
    (:mod:`.streaming`; on by default since BERT-large streamed under a 512 MiB cap
    ran on the H200, 2026-12-03; ``False`` keeps every kernel's weights where it runs).  ``precision`` (a
    :class:`~hetpart.contracts.precision.Precision` or ``"cuda=bf16,cpu=fp32"``; default
    ``cpu=fp32,cuda=tf32``): CUDA kernels' weights are counted in the CUDA format (bf16
    and fp16 halve them: the memory cap, streaming and weight copies see that), and the
    plan records it for the compiler; each kernel is priced as built in its device's
    format (:mod:`.precision_costs`: measured by ``partition profile --precision``,
    else predicted).  ``state`` (``{model output: model input}``, e.g. a decode step's
    ``{"present.0.key": "past.0.key"}``, as ``Session(state=)`` binds them): each input
    starts on the device of the kernel writing its output and that output stays there
    (:mod:`.state`): no host copy for either; the writer and every reader of the input
    run on one device, as the runtime binds it (:mod:`.same_device`, honoured by every
    objective like a pin); the plan records the pairs.  Raises PlanError for
    an unknown objective, a bad pin, a bad state pair, pins or capabilities that hold a
    pair's writer and a reader on different devices, state under a pipelining
    objective (``throughput``: each step reads the last one's state), or a cap that cannot be met;
    PrecisionError for a bad precision.
    """
    from ..contracts.precision import coerce
    from ..importer.low_precision import with_weight_bytes
    from .precision_costs import with_precision as priced_in

    _require_graph(graph)
    precision = coerce(precision)
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective '{objective}'; choose one of: {', '.join(OBJECTIVES)}")
    if state and OBJECTIVES[objective].pipelined:
        pairs = ", ".join(f"{o!r} -> {i!r}" for o, i in dict(state).items())
        raise PlanError(f"objective '{objective}' pipelines inferences, but a step with state ({pairs}) reads "
                        "what the previous step wrote (the runtime runs such steps one at a time); plan it with "
                        "objective 'latency' or 'makespan', or leave state= out to pipeline it")
    if gpu_memory is not None and (isinstance(gpu_memory, bool) or not isinstance(gpu_memory, numbers.Real)):
        raise PlanError(f"{option('gpu_memory')} is a number of bytes, e.g. 4 * 2**30 for 4 GiB; "
                        f"got {type(gpu_memory).__name__} {gpu_memory!r}")
    if gpu_memory is not None and gpu_memory < 0:
        raise PlanError(f"{option('gpu_memory')} must be positive, got {gpu_memory} bytes")
    costs = cost_model if cost_model is not None else cost_model_for(profile)
    costs.add_graph(graph)
    if gpu_memory is None:  # never plan more onto the GPU than it has
        gpu_memory = default_cap(costs)
    costs = priced_in(costs, graph, precision)
    graph = with_weight_bytes(graph, precision.storage("cuda"))
    problem = build_problem(graph, costs, pins, gpu_memory, stream_weights, state)
    obj = OBJECTIVES[objective]
    plan = make_plan(problem, obj, obj.solve(problem, progress))
    plan.precision = precision
    return plan


def _require_graph(graph) -> None:
    """PlanError unless ``graph`` is an op graph: a model file, zoo spec or ModelProto
    is imported first (``hetpart.load``), and the message says so."""
    from ..importer.op_graph import OpGraph

    if not isinstance(graph, OpGraph):
        what = f"{graph!r}" if isinstance(graph, (str, os.PathLike)) else f"a {type(graph).__name__}"
        raise PlanError(f"partition places the kernels of an op graph, and got {what}: import the model first, "
                        "graph = hetpart.load(model), then hetpart.partition(graph)")


def make_plan(problem: Problem, obj: Objective, a: Assignment) -> Plan:
    """The Plan of placement ``a``: partitions named in run order, cuts, timeline, numbers.
    PlanError if ``a`` splits a state pair's kernels (:mod:`.same_device`; a solver that
    ignores them, e.g. a custom objective's): the runtime would refuse to bind it."""
    refuse_split(problem.same_device, a, f"objective '{obj.name}'")
    e = obj.evaluate(problem, a)
    if not e.fits:
        raise PlanError("internal: the chosen assignment breaks the GPU memory cap")
    schedule = simulate(e.layout, obj.timeline)
    run_order = [s.task.index for s in schedule if s.task.kind == "partition"]
    names = {g: f"p{i}_{e.layout.groups[g].device}" for i, g in enumerate(run_order)}
    partitions = [_partition(problem, e, g, names[g]) for g in run_order]
    cuts = [_cut(problem, e, t, names) for t in e.layout.transfers]
    timeline = [Span(s.task.track, _span_name(problem, e, s.task, names), s.start, s.end,
                     "copy" if s.task.kind == "weights" else s.task.kind) for s in schedule]
    return Plan(
        model=problem.graph.name, objective=obj.name, assignment=dict(e.layout.assignment), partitions=partitions,
        cuts=cuts, timeline=timeline, predicted=_predicted(problem, obj, e), profile_origin=cost_origin(problem.costs),
        constraints=dict(problem.reasons), gpu_memory_cap=problem.gpu_memory,
        stream_slots=e.layout.stream_slots, stream_slot_bytes=e.layout.stream_slot_bytes,
        state=dict(problem.state), graph=problem.graph, costs=problem.costs)


def cost_model_for(profile=None):
    """The measured cost model :func:`partition` prices with for its ``profile`` argument.

    In: ``profile`` as :func:`partition` takes it (None: the default profile; a path; a
    :class:`~hetpart.costmodel.Profile`).  Out: a :class:`~hetpart.costmodel.CostModel`
    (the :class:`~.costs.Costs` protocol).  A GPU-less machine's own profile has CPU
    numbers only: the recorded GPU's completes it
    (:func:`~hetpart.costmodel.locate.with_recorded_gpu`).  For callers that plan
    several times (several models, several batches) over one cost model: build it once
    here and pass it as ``cost_model=``.  ProfileError when no profile can be found.
    """
    from ..costmodel import CostModel, resolve_profile
    from ..costmodel.locate import with_recorded_gpu

    return CostModel(with_recorded_gpu(resolve_profile(profile)))




def _partition(problem: Problem, e: Evaluation, g: int, name: str) -> Partition:
    group = e.layout.groups[g]
    inside = set(group.kernels)
    tensors = problem.graph.tensors
    reads = dict.fromkeys(t for k in group.kernels for t in problem.graph.kernels[k].inputs
                          if tensors[t].producer not in inside)
    made = [t for k in group.kernels for t in problem.graph.kernels[k].outputs]
    writes = [t for t in made if tensors[t].is_output or any(c not in inside for c in tensors[t].consumers)]
    compute = problem.compute_s(e.layout.assignment, group.kernels) + mapped_extra_s(problem, group)
    return Partition(name, group.device, list(group.kernels), e.layout.group_seconds[g], compute,
                     e.layout.group_overhead[g], list(reads), writes,
                     sum(tensors[t].nbytes for t in reads), sum(tensors[t].nbytes for t in writes),
                     "streamed" if group.streamed else "mapped" if group.mapped else "resident",
                     e.layout.weight_bytes[g] if group.device == "cuda" else 0)


def _cut(problem: Problem, e: Evaluation, t, names) -> Cut:
    f = problem.flows[t.flow]
    readers = [names[r] for r in t.readers]
    return Cut(f.name, None if t.src is None else names[t.src], readers[0] if readers else None,
               readers, problem.source_device(f, e.layout.assignment), t.device, f.nbytes, t.seconds)


def _span_name(problem: Problem, e: Evaluation, task, names) -> str:
    if task.kind == "partition":
        return names[task.index]
    if task.kind == "weights":
        return f"weights {names[task.index]}"
    return f"copy {problem.flows[e.layout.transfers[task.index].flow].name}"


def _numbers(problem: Problem, obj: Objective, e: Evaluation) -> dict:
    latency = getattr(e, obj.latency_field)
    a = e.layout.assignment
    return {
        "latency_s": latency,
        "throughput_per_s": 1.0 / (e.period_s if obj.pipelined else latency) if latency > 0 else None,
        "sequential_s": e.sequential_s, "makespan_s": e.makespan_s, "period_s": e.period_s,
        "compute_s": problem.compute_s(a), "transfer_s": sum(t.seconds for t in e.layout.transfers),
        "overhead_s": sum(e.layout.group_overhead),
        "cpu_wakes": wake_count([g.device for g in e.layout.groups]),
        "transfer_bytes": sum(problem.flows[t.flow].nbytes for t in e.layout.transfers),
        "streamed_bytes": sum(e.layout.weight_bytes[g] for g in e.layout.streamed_groups),
        "stream_s": sum(e.layout.weight_seconds),
        "gpu_memory_bytes": e.memory.total,
    }


def _predicted(problem: Problem, obj: Objective, e: Evaluation) -> dict:
    out = _numbers(problem, obj, e)
    out["gpu_memory"] = {"params": e.memory.params, "peak_activations": e.memory.peak_activations,
                         "stream_buffers": e.memory.stream_buffers, "total": e.memory.total,
                         "cap": problem.gpu_memory}
    out["baselines"], out["baseline_notes"] = {}, {}
    for name, fn in BASELINES.items():
        b = obj.evaluate(problem, fn(problem))
        note = _baseline_note(problem, name, b)
        out["baselines"][name] = _numbers(problem, obj, b) if b.fits else None
        if b.fits:  # the report says "same placement" only when it is
            out["baselines"][name]["same_placement"] = b.placement == e.placement
        if note:
            out["baseline_notes"][name] = note
    return out


def _baseline_note(problem: Problem, name: str, b: Evaluation) -> str:
    from ..importer.summary import human_bytes

    if not b.fits:
        return (f"infeasible: needs {human_bytes(b.memory.total)} of GPU memory, over the cap of "
                f"{human_bytes(problem.gpu_memory)}")
    device = {"all_cpu": "cpu", "all_cuda": "cuda"}.get(name)
    held = [k for k, d in b.layout.assignment.items() if device and d != device]
    return f"{len(held)} kernel(s) held on the other device by pins or capability" if held else ""
