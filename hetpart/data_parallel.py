"""Data-parallel co-inference: a large batch split between the GPU and the CPU.

In: a model that can be built at any batch -- an ONNX model whose inputs share a
symbolic dim at axis 0 (the shape-bucket machinery, :mod:`hetpart.importer.symbolic`,
fixes it at each size), or a ``zoo:`` spec (rebuilt with ``batch=N``) -- and the batch
``B``.  Out: a :class:`~hetpart.partitioner.data_parallel_plan.DataParallelPlan`
(``b_gpu`` rows on an all-CUDA build of the model at batch ``b_gpu``, ``b_cpu`` rows on
an all-CPU build at batch ``b_cpu``, run at once and concatenated in row order), or,
where the cost model predicts no gain over the best per-kernel plan at ``B``, that
plan (with the split's numbers in ``plan.predicted["data_parallel"]``)::

    dp = hetpart.partition_data_parallel("zoo:dlrm:batch=64")      # or (model.onnx, batch=64)
    if isinstance(dp, hetpart.partitioner.DataParallelPlan):  # else the per-kernel Plan won
        model = hetpart.compile_data_parallel(dp, simulate=True)
        with hetpart.DataParallelSession(model) as s:
            s.run(feeds)                                           # 64 rows in, 64 rows out

The split is chosen by :func:`hetpart.partitioner.data_parallel.choose_split` from each
side's predicted seconds at candidate sub-batches: every candidate size is imported
and planned (one graph per size, cached), as a shape bucket is.  Rows must be
independent (an inference batch), as for padding a batch bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .contracts.batch_axes import BatchAxes, batch_axes
from .errors import NoBatchDimError, PlanError, ShapeError, option
from .kernels.options import DEFAULT, KernelOptions
from .partitioner.data_parallel import MIN_GAIN, RULE, SharedGpu, SplitCosts, beats, choose_split
from .partitioner.data_parallel_plan import DataParallelPlan


class BatchSource:
    """A model that can be imported at any batch: :meth:`graph` (rows -> OpGraph, cached).

    ``batch`` is the whole batch ``B``: the ``batch`` argument, else a zoo spec's
    ``batch=``.  NoBatchDimError for a model with no batch dim to vary (fixed shapes
    and not a zoo spec, or symbolic dims but none common at axis 0); ShapeError when
    ``B`` is unknown or below 2.
    """

    def __init__(self, model, batch: int | None = None, shapes: dict[str, list[int]] | None = None):
        from .importer import read_source
        from .models import parse_zoo_spec

        self.shapes = shapes
        self._graphs: dict[int, object] = {}
        self._zoo = parse_zoo_spec(model) if isinstance(model, str) else None
        if self._zoo is not None:
            self.origin = str(model)
            batch = batch if batch is not None else self._zoo[2].get("batch")
        else:
            self._source = read_source(model)
            self.origin = self._source.origin
            self._batch_dim = self._symbolic_batch()
        if batch is None:
            raise ShapeError(f"{self.origin}: give the batch to split (batch=N; a zoo spec may say :batch=N)")
        if int(batch) < 2:
            raise ShapeError(f"{self.origin}: a batch of {batch} row(s) cannot be split between two devices; "
                             "ask for a batch of at least 2")
        self.batch = int(batch)

    def _symbolic_batch(self) -> str:
        from .importer.symbolic import bucket_spec, has_symbolic_dims

        if not has_symbolic_dims(self._source.model, self.shapes):
            raise NoBatchDimError(f"{self.origin}: every input has a fixed shape, so there is no batch dim to split; "
                                  "give the model a symbolic dim at axis 0 (a dim_param such as 'batch') or use a "
                                  "zoo spec (zoo:NAME:batch=N)")
        spec = bucket_spec(self._source, {"batch": [1]}, self.shapes)
        if not spec.batch:
            raise NoBatchDimError(f"{self.origin}: the inputs have no common symbolic dim at axis 0 to split the "
                                  f"batch along; fix the other dims with {option('shape')}")
        self._spec = spec
        return spec.batch

    def graph(self, rows: int):
        """The model imported at batch ``rows`` (cached)."""
        if rows not in self._graphs:
            from . import importer

            if self._zoo is not None:
                from .importer.onnx_source import ModelSource
                from .models import build

                name, small, cfg = self._zoo
                model = build(name, small=small, **{**cfg, "batch": rows})
                source = ModelSource(model, name + ("_small" if small else ""), f"{self.origin} at batch {rows}")
                self._graphs[rows] = importer.load(source, self.shapes)
            else:
                from .importer.symbolic import bucket_shapes

                shapes = bucket_shapes(self._source.model, self._spec, {self._batch_dim: rows}, self.shapes)
                self._graphs[rows] = importer.load(self._source, shapes)
        return self._graphs[rows]

    def keep(self, rows: set[int]) -> None:
        """Drop every cached graph but those at ``rows`` (their weights are large)."""
        self._graphs = {r: g for r, g in self._graphs.items() if r in rows}

    def onnx_model(self, rows: int):
        """The ONNX model that runs batch ``rows`` (a zoo model built at it; else the
        model itself, its batch dim symbolic), e.g. for a reference runtime."""
        if self._zoo is None:
            return self._source.model
        from .models import build

        name, small, cfg = self._zoo
        return build(name, small=small, **{**cfg, "batch": rows})

    def axes(self) -> BatchAxes:
        """Where the batch sits in each input and output (the graphs at ``B`` and ``B // 2`` compared)."""
        a, b = self.batch, self.batch // 2
        ga, gb = self.graph(a), self.graph(b)
        return batch_axes(*_shapes(ga), a, *_shapes(gb), b, self.origin)


def _shapes(graph) -> tuple[dict, dict]:
    ins = {n: tuple(graph.tensors[n].shape) for n in graph.inputs}
    outs = {name: tuple(graph.tensors[t].shape) for name, t in zip(graph.output_names, graph.outputs)}
    return ins, outs


@dataclass
class SidePlanner:
    """Each side's plan at a given batch (every kernel pinned to the side's device
    where it can run there), cached; ``seconds`` is what the split rule prices."""

    source: BatchSource
    costs: object
    gpu_memory: int | None = None
    plans: dict[tuple[str, int], object] = field(default_factory=dict)
    infeasible: dict[tuple[str, int], str] = field(default_factory=dict)

    def plan(self, device: str, rows: int):
        """The side's Plan at ``rows``, or None (the reason in ``infeasible``)."""
        key = (device, rows)
        if key not in self.plans and key not in self.infeasible:
            from .partitioner import partition

            graph = self.source.graph(rows)
            self.costs.add_graph(graph)
            pins = [f"{k.id}={device}" for k in graph.nodes if self.costs.supports(k, device)[0]]
            try:
                self.plans[key] = partition(graph, cost_model=self.costs, pins=pins, gpu_memory=self.gpu_memory,
                                            progress=False)
            except PlanError as exc:  # e.g. the all-CUDA build breaks the GPU memory cap
                self.infeasible[key] = str(exc)
        return self.plans.get(key)

    def seconds(self, device: str, rows: int) -> float | None:
        p = self.plan(device, rows)
        return None if p is None else float(p.predicted["latency_s"])


def seconds_per_batch(plan) -> float:
    """A per-kernel plan's seconds per batch under its objective (1 / throughput)."""
    rate = plan.predicted.get("throughput_per_s")
    return 1.0 / rate if rate else float(plan.predicted["latency_s"])


def plan_data_parallel(model, batch: int | None = None, *, shapes: dict[str, list[int]] | None = None,
                       objective: str = "latency", profile=None, cost_model=None, gpu_memory: int | None = None,
                       pins=(), split_costs: SplitCosts = SplitCosts(), step: int | None = None, window: int = 1,
                       min_gain: float = MIN_GAIN, rows: tuple[int, int] | None = None, require_split: bool = False,
                       gpu_share: float = 1.0, log=lambda _: None) -> DataParallelPlan:
    """The best split of ``batch`` rows of ``model`` and whether it beats the best
    per-kernel plan at that batch (``chosen``); see the module docstring.

    ``objective``, ``pins`` and ``gpu_memory`` make the per-kernel plan the split is
    compared against (``gpu_memory`` caps the GPU side too); ``profile``/``cost_model``
    price both; ``split_costs``, ``step`` and ``window`` go to
    :func:`~hetpart.partitioner.data_parallel.choose_split`, ``min_gain`` to
    :func:`~hetpart.partitioner.data_parallel.beats`.  ``gpu_share`` < 1 prices a GPU
    busy with another model, of which this one gets that share
    (:class:`~hetpart.partitioner.data_parallel.SharedGpu`).  The per-kernel plan rides along
    as ``.per_kernel``, the model's :class:`BatchSource` as ``.source``.

    To measure splits the rule would not take (benchmarks): ``rows=(b_gpu, b_cpu)``
    prices that split only; ``require_split=True`` takes the best one giving both
    devices rows.  ``model`` may be a :class:`BatchSource` (its graphs are reused).
    """
    from .partitioner import partition
    from .partitioner.costs import cost_origin
    from .partitioner.data_parallel import price

    source = model if isinstance(model, BatchSource) else BatchSource(model, batch, shapes)
    costs = cost_model if cost_model is not None else measured_costs(profile)
    if gpu_share != 1.0:
        costs = SharedGpu(costs, gpu_share)
    axes = source.axes()
    whole = source.graph(source.batch)
    log(f"{source.origin}: per-kernel plan at batch {source.batch}")
    per_kernel = partition(whole, objective=objective, cost_model=costs, gpu_memory=gpu_memory, pins=pins,
                           progress=False)
    sides = SidePlanner(source, costs, gpu_memory)
    merge_bytes = sum(whole.tensors[t].nbytes for t in whole.outputs)
    if rows is None:
        best, priced = choose_split(source.batch, sides.seconds, costs=split_costs, merge_bytes=merge_bytes,
                                    step=step, window=window, require_split=require_split)
    else:
        if rows[0] < 0 or rows[1] < 0 or sum(rows) != source.batch:
            raise PlanError(f"rows={rows} is not a split of the batch of {source.batch}")
        best = price(source.batch, rows[1], sides.seconds, split_costs, merge_bytes)
        if best.latency_s is None:
            raise PlanError(f"the split {rows[0]} GPU + {rows[1]} CPU rows is infeasible: "
                            f"{'; '.join(sides.infeasible.values())}")
        priced = [best]
    per_kernel_s = seconds_per_batch(per_kernel)
    chosen = beats(best.latency_s, per_kernel_s, min_gain)
    log(f"{source.origin}: split {best.b_gpu} GPU + {best.b_cpu} CPU rows predicted {best.latency_s * 1e3:.3f} ms, "
        f"per-kernel plan {per_kernel_s * 1e3:.3f} ms: {'split' if chosen else 'no split'}")
    predicted = {"latency_s": best.latency_s, "gpu_s": best.gpu_s, "cpu_s": best.cpu_s, "merge_s": best.merge_s,
                 "gpu_share": gpu_share, "per_kernel_s": per_kernel_s, "per_kernel_objective": objective,
                 "gain": per_kernel_s / best.latency_s if best.latency_s > 0 else None,
                 "rows_per_s": source.batch / best.latency_s if best.latency_s > 0 else None}
    dp = DataParallelPlan(model=whole.name, batch=source.batch, b_gpu=best.b_gpu, b_cpu=best.b_cpu,
                          gpu=sides.plan("cuda", best.b_gpu) if best.b_gpu else None,
                          cpu=sides.plan("cpu", best.b_cpu) if best.b_cpu else None, axes=axes,
                          predicted=predicted, candidates=[c.to_json() for c in priced], chosen=chosen,
                          rule=RULE.format(gain=min_gain), profile_origin=cost_origin(costs))
    dp.per_kernel, dp.source = per_kernel, source
    source.keep({best.b_gpu, best.b_cpu, source.batch})
    return dp


def partition_data_parallel(model, batch: int | None = None, **kwargs):
    """The split (a DataParallelPlan) where it is predicted to beat the best per-kernel
    plan at ``batch`` by more than ``min_gain``; else that per-kernel Plan, with the
    split's numbers in ``plan.predicted["data_parallel"]`` (both predictions reach
    :func:`explain_data_parallel` either way).  Arguments: :func:`plan_data_parallel`."""
    dp = plan_data_parallel(model, batch, **kwargs)
    if dp.chosen:
        return dp
    plan = dp.per_kernel
    plan.predicted["data_parallel"] = dp.summary()
    return plan


def explain_data_parallel(result) -> str:
    """Both predictions, the rule and every split priced, for a DataParallelPlan or a
    per-kernel Plan that :func:`partition_data_parallel` returned."""
    from .partitioner.plan_report import human_seconds

    s = result.summary() if isinstance(result, DataParallelPlan) else result.predicted.get("data_parallel")
    if s is None:
        return "no data-parallel split was priced for this plan"
    p = s["predicted"]
    share = p.get("gpu_share", 1.0)
    busy = f" (priced with {share:.0%} of a busy GPU)" if share != 1.0 else ""
    lines = [f"data-parallel split of batch {s['batch']}: {s['b_gpu']} rows on the GPU + {s['b_cpu']} on the CPU"
             + busy,
             f"  predicted {human_seconds(p['latency_s'])} per batch = max(GPU side {human_seconds(p['gpu_s'])}, "
             f"CPU side {human_seconds(p['cpu_s'])}) + merge {human_seconds(p['merge_s'])}",
             f"  best per-kernel plan ({p['per_kernel_objective']}): {human_seconds(p['per_kernel_s'])} per batch",
             f"  -> {'SPLIT' if s['chosen'] else 'no split'} ({s['rule']})",
             "  splits priced (GPU rows + CPU rows: GPU side, CPU side, merge -> per batch):"]
    for c in s["candidates"]:
        mark = " <" if (c["b_gpu"], c["b_cpu"]) == (s["b_gpu"], s["b_cpu"]) else ""
        lines.append(f"    {c['b_gpu']:>5} + {c['b_cpu']:<5} {human_seconds(c['gpu_s']):>10} "
                     f"{human_seconds(c['cpu_s']):>10} {human_seconds(c['merge_s']):>10} -> "
                     f"{human_seconds(c['latency_s']) if c['latency_s'] is not None else 'infeasible'}{mark}")
    return "\n".join(lines)


def compile_data_parallel(plan: DataParallelPlan, *, model=None, shapes: dict[str, list[int]] | None = None,
                          simulate: bool = False, cuda_arch: str | None = None, options: KernelOptions = DEFAULT,
                          progress: bool = False):
    """Compile each side of ``plan``: a :class:`~hetpart.compiler.data_parallel.DataParallelModel`.

    The sides' op graphs come with a plan made in this process; a plan read from JSON
    needs ``model`` (and ``shapes``) to import them again.  ``simulate``, ``cuda_arch``
    and ``options`` go to :func:`hetpart.compile`.
    """
    from . import compiler
    from .compiler.build import LibraryCache
    from .compiler.data_parallel import DataParallelModel

    source = getattr(plan, "source", None)
    if model is not None:
        source = BatchSource(model, plan.batch, shapes)
    cache = LibraryCache()
    built = {}
    for device, rows, side in plan.sides():
        graph = side.graph
        if graph is None:
            if source is None:
                raise PlanError("this data-parallel plan has no op graphs (read from JSON?); pass model=... (the "
                                "model it was made from) to import them again")
            graph = source.graph(rows)
            side = type(side).from_json(side.to_json(), graph)
        built[device] = compiler.compile(side, graph, simulate=simulate, cuda_arch=cuda_arch, options=options,
                                         progress=progress, library_cache=cache)
    return DataParallelModel(plan=plan, gpu=built.get("cuda"), cpu=built.get("cpu"))


def measured_costs(profile=None):
    """The cost model of ``profile`` (None: the default one; a GPU-less profile completed
    with the recorded GPU), as :func:`hetpart.partition` uses
    (:func:`~hetpart.partitioner.cost_model_for`)."""
    from .partitioner import cost_model_for

    return cost_model_for(profile)


__all__ = ["BatchSource", "SidePlanner", "compile_data_parallel", "explain_data_parallel", "measured_costs",
           "partition_data_parallel", "plan_data_parallel", "seconds_per_batch"]
