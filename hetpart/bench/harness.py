"""The measurement harness: one workload in, one :class:`~.results.WorkloadResult` out.

For a :class:`Workload` (a model, its batch, an optional GPU memory cap) it

1. imports the model and makes seeded feeds;
2. plans it for every objective (``hetpart:<objective>``) and lays out the
   partitioner's baselines as plans of their own (``tvm:all_cpu``, ``tvm:all_cuda``,
   ``baseline:greedy``; with a cap, also all-CUDA with the cap lifted);
3. compiles every distinct assignment once (:class:`~.builds.BuildCache`), all before
   any timing;
4. times each build in a hetpart Session (median latency; pipelined items/s), then
   every available peer (:mod:`.peers`) on the very same ONNX model;
5. optionally runs the oracle check (:mod:`hetpart.partitioner.candidates`): measures the top candidate
   plans and random valid plans, and reports how far the chosen plan is from the best.

A contender that cannot be built or run becomes a row with ``skipped`` set to the
reason; the workload goes on.  :func:`bench_concurrent` times several compiled models
in one MultiSession against one after another.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from .. import importer, models
from ..errors import HetpartError, InternalError, PlanError
from ..kernels.options import DEFAULT, KernelOptions
from ..partitioner import partition
from ..partitioner.baselines import BASELINES
from ..partitioner.problem import build_problem
from .builds import BuildCache
from .peers import PEERS, PeerModel, PeerUnavailable
from ..partitioner import oracle_candidates, plan_for_assignment, single_device_assignments
from .results import Candidate, ConcurrentResult, Oracle, Row, WorkloadResult
from .timing import Settings, Stats, time_calls, time_throughput

OBJECTIVES = ("latency", "makespan", "throughput")
BASELINE_ROWS = {  # partitioner baseline -> (row name, label, kind)
    "all_cpu": ("tvm:all_cpu", "TVM all-CPU", "single_device"),
    "all_cuda": ("tvm:all_cuda", "TVM all-CUDA", "single_device"),
    "greedy": ("baseline:greedy", "greedy per-kernel", "baseline"),
}


@dataclass
class Workload:
    """One thing to benchmark.

    ``model``: a path, ``zoo:NAME[...]`` or an ``onnx.ModelProto``; ``batch``: items
    per inference (for items/s; None: the first input's leading dim); ``gpu_memory``: the cap in bytes (None: none);
    ``heterogeneous``: a workload where CPU+GPU is expected to pay (the goals report
    its speed-up); ``oracle``: run the oracle check; ``torch_module`` and
    ``torch_input_names``: the PyTorch module the ONNX file was exported from (peers).
    """

    label: str
    model: object
    batch: int | None = None
    shapes: dict | None = None
    gpu_memory: int | None = None
    pins: tuple = ()
    heterogeneous: bool = False
    oracle: bool = False
    torch_module: object = None
    torch_input_names: list[str] | None = None


@dataclass
class Options:
    """How to benchmark: the same for every workload of a run.

    ``cost_model`` (anything with the partitioner's Costs methods) overrides
    ``profile`` (a path or None: :func:`hetpart.costmodel.resolve_profile`).
    ``peers``: names in :data:`~.peers.PEERS`.  ``oracle_top``/``oracle_random``:
    candidates the oracle check measures.  ``measure_missing``: before planning,
    measure into this machine's profile the kernels (and transfer model) it lacks,
    so plans use measured costs, not predicted ones.  ``kernel_options``: what every
    build (and every kernel measured) is built with.
    """

    settings: Settings = field(default_factory=Settings)
    objectives: tuple[str, ...] = OBJECTIVES
    simulate: bool = False
    cuda_arch: str | None = None
    profile: object = None
    cost_model: object = None
    peers: tuple[str, ...] = tuple(PEERS)
    oracle_top: int = 4
    oracle_random: int = 2
    seed: int = 0
    progress: bool = True
    measure_missing: bool = False  # profile kernels the profile lacks before planning (needs a GPU)
    kernel_options: KernelOptions = DEFAULT

    def costs(self):
        if self.cost_model is not None:
            return self.cost_model
        from ..costmodel import CostModel, resolve_profile

        return CostModel(resolve_profile(self.profile))


@dataclass
class Prepared:
    """A workload imported and ready: its op graph, ONNX model and feeds (two namings)."""

    workload: Workload
    graph: object
    onnx_model: object
    onnx_feeds: dict[str, np.ndarray]  # by ONNX input name (peers)
    feeds: dict[str, np.ndarray]  # by op-graph input name (hetpart sessions)
    batch: int  # items per inference


def prepare(w: Workload) -> Prepared:
    """Import ``w.model`` and make seeded feeds for it."""
    source = importer.read_model(w.model, w.shapes)
    graph = importer.load(source.model)
    graph.name = source.name  # "resnet50", not the ONNX graph's own name
    onnx_feeds = models.example_inputs(source.model, seed=0)
    onnx_names = list(onnx_feeds)
    if len(onnx_names) != len(graph.inputs):
        raise InternalError(f"{w.label}: {len(onnx_names)} ONNX inputs but {len(graph.inputs)} op-graph inputs")
    # The importer keeps ONNX input order and only sanitises names ("input.1" -> "input_1").
    feeds = {g: onnx_feeds[o] for g, o in zip(graph.inputs, onnx_names)}
    batch = w.batch or _leading_dim(graph)
    return Prepared(w, graph, source.model, onnx_feeds, feeds, batch)


def _leading_dim(graph) -> int:
    shape = graph.tensors[graph.inputs[0]].shape if graph.inputs else ()
    return int(shape[0]) if shape else 1


# --- one workload ------------------------------------------------------------------
def bench_workload(w: Workload, options: Options, *, keep_builds: bool = False) -> tuple[WorkloadResult, object]:
    """Benchmark one workload; returns (result, the prepared workload and its BuildCache
    when ``keep_builds``, else None).  HetpartErrors of one contender become skipped rows."""
    t0 = time.perf_counter()
    prep = prepare(w)
    if options.measure_missing:
        measure_missing(prep.graph, options)
    costs = options.costs()
    cache = BuildCache(prep.graph, simulate=options.simulate, cuda_arch=options.cuda_arch,
                       kernel_options=options.kernel_options)
    contenders, notes = plan_contenders(prep, costs, options)
    cache.prefetch([(c.name, c.plan) for c in contenders if c.plan is not None], options.progress)
    rows = [measure_contender(c, cache, prep, options) for c in contenders]
    rows += [measure_peer(name, prep, options) for name in options.peers]
    result = WorkloadResult(w.label, _model_name(w), prep.batch, w.gpu_memory, len(prep.graph.kernels),
                            options.simulate, rows, w.heterogeneous, notes=notes)
    if w.oracle:
        result.oracle = oracle_check(prep, costs, contenders, cache, options)
    result.seconds = time.perf_counter() - t0
    if keep_builds:
        return result, (prep, cache, contenders)
    cache.clear()
    return result, None


def measure_missing(graph, options: Options) -> None:
    """Profile ``graph``'s unmeasured kernels on both devices, and the transfer model if absent."""
    from ..costmodel import measure_transfers, profile
    from ..costmodel.profiler import open_profile

    prof = profile(graph, ("cpu", "cuda"), options.profile, progress=options.progress,
                   options=options.kernel_options)
    if prof.transfers is None:
        prof = open_profile(prof)
        prof.transfers = measure_transfers(progress=options.progress)
        prof.save()


def _model_name(w: Workload) -> str:
    return w.model if isinstance(w.model, str) else os.fspath(w.model) if isinstance(w.model, os.PathLike) else w.label


@dataclass
class Contender:
    """A plan to measure (``plan`` None: it could not be made; ``note`` says why)."""

    name: str
    label: str
    kind: str
    plan: object
    note: str = ""


def plan_contenders(prep: Prepared, costs, options: Options) -> tuple[list[Contender], list[str]]:
    """Every hetpart plan and every baseline plan of the workload, and notes for the table."""
    w, graph = prep.workload, prep.graph
    out, notes = [], []
    for obj in options.objectives:
        try:
            plan = partition(graph, objective=obj, cost_model=costs, gpu_memory=w.gpu_memory, pins=w.pins,
                             progress=options.progress)
            out.append(Contender(f"hetpart:{obj}", f"hetpart ({obj})", "plan", plan))
        except PlanError as exc:
            out.append(Contender(f"hetpart:{obj}", f"hetpart ({obj})", "plan", None, f"no plan: {exc}"))
    problem = build_problem(graph, costs, w.pins, w.gpu_memory)
    for b in single_device_assignments(problem):
        name, label, kind = BASELINE_ROWS.get(b.name, (f"baseline:{b.name}", b.name, "baseline"))
        if options.simulate and name == "tvm:all_cuda":
            label += " (simulated)"
        plan = plan_for_assignment(problem, b.assignment) if b.assignment else None
        out.append(Contender(name, label, kind, plan, b.note))
        if b.assignment is None and b.name == "all_cuda":
            free = build_problem(graph, costs, w.pins, None)
            out.append(Contender("tvm:all_cuda_uncapped", label + " (cap lifted)", "single_device",
                                 plan_for_assignment(free, BASELINES["all_cuda"](free)), "for reference: breaks --gpu-memory"))
    if costs_origin_note := _origin_note(out):
        notes.append(costs_origin_note)
    return out, notes


def _origin_note(contenders: list[Contender]) -> str:
    plan = next((c.plan for c in contenders if c.plan is not None), None)
    return f"costs: {plan.profile_origin}" if plan is not None and plan.profile_origin else ""


def placement(plan) -> str:
    """``"cpu 3 + cuda 40 kernels, 3 partitions"``."""
    counts = {}
    for d in plan.assignment.values():
        counts[d] = counts.get(d, 0) + 1
    devices = " + ".join(f"{d} {n}" for d, n in sorted(counts.items()))
    return f"{devices} kernels, {len(plan.partitions)} partition{'s' if len(plan.partitions) != 1 else ''}"


def measure_contender(c: Contender, cache: BuildCache, prep: Prepared, options: Options) -> Row:
    """Compile (or reuse) and time one plan; a failure becomes a skipped row."""
    row = Row(c.name, c.label, c.kind, note=c.note)
    if c.plan is None:
        row.skipped = c.note or "no plan"
        row.note = ""
        return row
    row.placement = placement(c.plan)
    row.predicted_latency_s = float(c.plan.predicted["latency_s"])
    period = c.plan.predicted.get("period_s")
    row.predicted_items_per_s = prep.batch / period if period else None
    try:
        build = cache.get(c.plan, c.name)
        row.build, row.compile_s = build.name, build.compile_s
        if build.plan_name != c.name:
            row.note = _join(row.note, f"same placement as {build.plan_name}: measured once")
        row.latency, row.items_per_s = time_build(build, prep, options.settings, throughput=True)
    except Exception as exc:  # noqa: BLE001 - one broken contender must not lose the whole benchmark
        row.skipped = _failure(c.name, exc)
    return row


def time_build(build, prep: Prepared, settings: Settings, throughput: bool) -> tuple[Stats, float | None]:
    """(latency stats, pipelined items/s or None) of ``build`` in a fresh Session; each
    number is measured once per build and reused (see :class:`~.builds.Build`)."""
    from ..runtime import Session

    if build.latency is None or (throughput and build.items_per_s is None):
        with Session(build.compiled) as s:
            if build.latency is None:
                build.latency = time_calls(lambda: s.run(prep.feeds), settings)
            if throughput and build.items_per_s is None:
                depth = settings.pipeline_depth
                build.items_per_s = time_throughput(lambda: s.run_pipelined([prep.feeds] * depth),
                                                    depth * prep.batch, settings)
    return build.latency, build.items_per_s


def measure_peer(name: str, prep: Prepared, options: Options) -> Row:
    """Time peer ``name`` on the very same ONNX model; unavailable peers are skipped rows."""
    peer = PEERS[name]
    row = Row(f"peer:{name}", peer.label, "peer")
    model = PeerModel(prep.workload.label, prep.onnx_model, prep.workload.torch_input_names or list(prep.onnx_feeds),
                      prep.workload.torch_module)
    try:
        runner = peer.make(model, options.simulate)
        row.latency = time_calls(lambda: runner(prep.onnx_feeds), options.settings)
        depth = options.settings.pipeline_depth
        row.items_per_s = time_throughput(lambda: [runner(prep.onnx_feeds) for _ in range(depth)],
                                          depth * prep.batch, options.settings)
        row.note = "calls back to back (no pipelining)"
    except PeerUnavailable as exc:
        row.skipped = str(exc)
    except Exception as exc:  # noqa: BLE001 - a peer's own failure is reported, not fatal
        row.skipped = _failure(name, exc)
    return row


def _failure(what: str, exc: BaseException) -> str:
    if isinstance(exc, HetpartError):
        return f"failed: {exc}"
    print(f"hetpart bench: {what} failed with an unexpected error:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return f"failed (bug?): {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


# --- the oracle check -------------------------------------------------------------
def oracle_check(prep: Prepared, costs, contenders: list[Contender], cache: BuildCache,
                 options: Options) -> Oracle | None:
    """Measure the chosen latency plan, the top candidates and random valid plans."""
    w = prep.workload
    chosen = next((c.plan for c in contenders if c.name == "hetpart:latency" and c.plan is not None), None)
    if chosen is None:
        return None
    problem = build_problem(prep.graph, costs, w.pins, w.gpu_memory)
    top, randoms = oracle_candidates(problem, [chosen.assignment], options.oracle_top, options.oracle_random,
                                     options.seed, w.pins)
    labelled = [("chosen (latency)", chosen)]
    labelled += [(f"top-{i}", plan_for_assignment(problem, a)) for i, a in enumerate(top[1:], 1)]
    labelled += [(f"random-{i}", plan_for_assignment(problem, a)) for i, a in enumerate(randoms, 1)]
    cache.prefetch([(origin, plan) for origin, plan in labelled], options.progress)
    candidates = [_measure_candidate(origin, plan, cache, prep, options) for origin, plan in labelled]
    measured = [c for c in candidates if c.measured_s is not None]
    if not measured or candidates[0].measured_s is None:
        return None
    best = min(measured, key=lambda c: c.measured_s)
    return Oracle(candidates[0].measured_s, best.measured_s, best.origin, candidates, spearman(measured))


def _measure_candidate(origin: str, plan, cache: BuildCache, prep: Prepared, options: Options) -> Candidate:
    cand = Candidate(origin, placement(plan), float(plan.predicted["sequential_s"]), None)
    try:
        cand.measured_s = time_build(cache.get(plan, origin), prep, options.settings, throughput=False)[0].median_s
    except Exception as exc:  # noqa: BLE001
        cand.skipped = _failure(origin, exc)
    return cand


def spearman(candidates: list[Candidate]) -> float | None:
    """Rank correlation of predicted and measured latency (None with fewer than 3)."""
    if len(candidates) < 3:
        return None
    pred = _ranks([c.predicted_s for c in candidates])
    meas = _ranks([c.measured_s for c in candidates])
    if pred.std() == 0 or meas.std() == 0:
        return None
    return float(np.corrcoef(pred, meas)[0, 1])


def _ranks(values: list[float]) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


# --- several models at once --------------------------------------------------------
def bench_concurrent(label: str, compiled_models: list, feeds: list[dict], names: list[str],
                     settings: Settings) -> ConcurrentResult:
    """One round = every model runs once: in one MultiSession at once vs one after another."""
    from ..runtime import MultiSession

    result = ConcurrentResult(label, names, None, None)
    try:
        with MultiSession(compiled_models) as ms:
            result.sequential = time_calls(lambda: ms.run_sequential(feeds), settings)
            result.concurrent = time_calls(lambda: ms.run(feeds), settings)
    except Exception as exc:  # noqa: BLE001
        result.skipped = _failure(label, exc)
    return result
