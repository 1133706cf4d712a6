"""The data-parallel benchmark's logic (``bench/data_parallel.py``, issue 20): a model at a
large batch run three ways -- all on the GPU, all on the CPU, and split between them
(:mod:`hetpart.data_parallel`) -- each measured, each checked against ONNX Runtime on the
whole batch, beside the cost model's predictions and the partitioner's decision.

Per (model, batch) :func:`bench` yields one :class:`Record` per way and then a
``decision`` dict: the split the rule picked (or, where it picked none, the best split
that gives both devices rows: measured to show where the split does not pay), whether
the partitioner would offer it (``chosen``), and the measured ratios
``all_cuda_over_split`` / ``all_cpu_over_split`` (> 1: the split is faster).  Results
file: ``"schema": "hetpart-bench-dataparallel"``, version 1.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..kernels.options import DEFAULT, KernelOptions
from .timing import Settings, time_calls

SCHEMA = "hetpart-bench-dataparallel"
VERSION = 1
WAYS = ("all-cuda", "all-cpu", "split")


@dataclass
class Options:
    """``profile``/``cost_model``: the costs the split is chosen by; ``simulate``: CUDA
    builds run on the CPU (a smoke test: its numbers mean nothing); ``deadline``: a
    ``time.monotonic()`` after which no new (model, batch) starts; ``step``: rows per
    grid step of the split (default batch // 8).  ``busy``: a model spec kept running
    all-CUDA in a loop on its own thread while everything is measured (a GPU busy with
    another model); ``gpu_share``: the share of the GPU the split is priced with
    (:class:`~hetpart.partitioner.data_parallel.SharedGpu`; 1.0: the whole GPU)."""

    settings: Settings = field(default_factory=Settings.quick)
    profile: object = None
    cost_model: object = None
    simulate: bool = False
    deadline: float = float("inf")
    step: int | None = None
    kernel_options: KernelOptions = DEFAULT
    busy: str = ""
    gpu_share: float = 1.0
    log: Callable[[str], None] = lambda _: None


@dataclass
class Record:
    """One way of running one (model, batch), measured: milliseconds per batch (median,
    p10, p90 over the timed calls), rows per second, the prediction, the largest
    absolute difference from ONNX Runtime over every output, and for a split each
    side's median ms."""

    model: str
    batch: int
    way: str
    b_gpu: int
    b_cpu: int
    ms: float | None
    p10_ms: float | None = None
    p90_ms: float | None = None
    rows_per_s: float | None = None
    predicted_ms: float | None = None
    max_abs_err: float | None = None
    side_ms: dict = field(default_factory=dict)
    busy: str = ""
    busy_runs_per_s: float | None = None
    note: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def bench(models: list[str], batches: list[int], options: Options) -> Iterator[Record | dict]:
    """Every (model, batch): three Records then the decision dict; see the module docstring."""
    from ..data_parallel import BatchSource, measured_costs

    costs = options.cost_model if options.cost_model is not None else measured_costs(options.profile)
    background = Background(options.busy, options) if options.busy else None
    try:
        for model in models:
            for batch in batches:
                if time.monotonic() > options.deadline:
                    options.log(f"budget spent: {model} b{batch} not started")
                    return
                source = BatchSource(model, batch)
                yield from _one(source, costs, options, background)
    finally:
        if background is not None:
            background.close()


class Background:
    """``spec`` compiled with every kernel on CUDA and run in a loop on its own thread
    while :meth:`running` is entered: another model keeping the GPU busy."""

    def __init__(self, spec: str, options: Options):
        from .. import compiler, importer
        from ..backend import forced_plan
        from ..runtime import Session, random_feeds

        graph = importer.load(spec)
        compiled = compiler.compile(forced_plan(graph, "cuda"), graph, simulate=options.simulate,
                                    options=options.kernel_options, progress=False)
        self.spec, self.feeds = spec, random_feeds(compiled.inputs)
        self.session = Session(compiled, spin_wait=False)
        self.session.run(self.feeds)  # warm

    @contextlib.contextmanager
    def running(self):
        """The loop runs inside the ``with``; the dict yielded gets ``rate`` (its runs
        per second) on the way out."""
        stop, out = threading.Event(), {"runs": 0, "rate": None}

        def loop():
            while not stop.is_set():
                self.session.run(self.feeds)
                out["runs"] += 1

        thread = threading.Thread(target=loop, name="hetpart-busy-gpu", daemon=True)
        t0 = time.perf_counter()
        thread.start()
        try:
            yield out
        finally:
            stop.set()
            thread.join()
            elapsed = time.perf_counter() - t0
            out["rate"] = out["runs"] / elapsed if elapsed > 0 else None

    def close(self) -> None:
        self.session.close()


def _one(source, costs, options: Options, background=None) -> Iterator[Record | dict]:
    from ..data_parallel import plan_data_parallel

    B, log = source.batch, options.log
    common = dict(cost_model=costs, step=options.step, gpu_share=options.gpu_share)
    chosen = plan_data_parallel(source, log=log, **common)
    split = chosen if chosen.split else plan_data_parallel(source, require_split=True, log=log, **common)
    reference = _reference(source, B)
    plans = {"all-cuda": plan_data_parallel(source, rows=(B, 0), **common),
             "all-cpu": plan_data_parallel(source, rows=(0, B), **common), "split": split}
    records = {}
    for way in WAYS:
        rec = _measure(source.origin, way, plans[way], reference, options, background)
        records[way] = rec
        log(f"{source.origin} b{B} {way}: {rec.b_gpu} GPU + {rec.b_cpu} CPU rows, "
            f"{'-' if rec.ms is None else f'{rec.ms:.3f}'} ms (predicted {rec.predicted_ms:.3f} ms)")
        yield rec
    yield decision(source.origin, chosen, split, records)


def decision(model: str, chosen, split, records: dict[str, Record]) -> dict:
    """The partitioner's choice at this batch, and the measured ratios (> 1: split faster)."""
    ms = {w: r.ms for w, r in records.items()}
    ratio = lambda w: ms[w] / ms["split"] if ms.get(w) and ms.get("split") else None  # noqa: E731
    best_single = min((v for w, v in ms.items() if w != "split" and v), default=None)
    return {"kind": "decision", "model": model, "batch": chosen.batch, "chosen": chosen.chosen,
            "busy": records["split"].busy, "gpu_share": chosen.predicted.get("gpu_share", 1.0),
            "rule_split": [chosen.b_gpu, chosen.b_cpu], "measured_split": [split.b_gpu, split.b_cpu],
            "predicted_split_ms": split.predicted["latency_s"] * 1e3,
            "predicted_per_kernel_ms": chosen.predicted["per_kernel_s"] * 1e3,
            "all_cuda_over_split": ratio("all-cuda"), "all_cpu_over_split": ratio("all-cpu"),
            "pays": bool(best_single and ms.get("split") and ms["split"] < best_single),
            "predicted_pays": chosen.chosen}


def _reference(source, batch: int) -> tuple[dict, dict]:
    """(feeds, ONNX Runtime's outputs on the whole batch)."""
    from ..models import example_inputs
    from .peers import ort_session

    model = source.onnx_model(batch)
    feeds = example_inputs(_fixed(model, source, batch), seed=0)
    sess = ort_session(model)
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    return feeds, outputs


def _fixed(model, source, batch: int):
    """``model`` with its batch dims fixed (example_inputs needs static shapes)."""
    import onnx

    graph = source.graph(batch)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in graph.tensors:
            for d, n in zip(value.type.tensor_type.shape.dim, graph.tensors[value.name].shape):
                d.Clear()
                d.dim_value = int(n)
    return fixed


def _measure(model: str, way: str, plan, reference, options: Options, background=None) -> Record:
    from ..data_parallel import compile_data_parallel
    from ..runtime.data_parallel_session import DataParallelSession

    feeds, want = reference
    rec = Record(model, plan.batch, way, plan.b_gpu, plan.b_cpu, None, predicted_ms=plan.predicted["latency_s"] * 1e3)
    built = compile_data_parallel(plan, simulate=options.simulate, options=options.kernel_options)
    sides: dict[str, list[float]] = {}
    with DataParallelSession(built) as s:
        got = s.run(feeds)
        rec.max_abs_err = max(float(np.max(np.abs(np.asarray(got[n], np.float64) - want[n]))) if want[n].size else 0.0
                              for n in want)

        def once():
            s.run(feeds)
            for d, v in s.last_side_seconds.items():
                sides.setdefault(d, []).append(v)

        if background is None:
            stats = time_calls(once, options.settings)
        else:
            with background.running() as busy:
                stats = time_calls(once, options.settings)
            rec.busy, rec.busy_runs_per_s = background.spec, busy["rate"]
    rec.ms, rec.p10_ms, rec.p90_ms = stats.median_s * 1e3, stats.p10_s * 1e3, stats.p90_s * 1e3
    rec.rows_per_s = plan.batch / stats.median_s if stats.median_s > 0 else None
    rec.side_ms = {d: float(np.median(v)) * 1e3 for d, v in sides.items()}
    return rec


# --- the results file ---------------------------------------------------------------------------
def new_results(machine: dict, settings: Settings, commands: list[str]) -> dict:
    return {"schema": SCHEMA, "version": VERSION, "machine": machine, "settings": asdict(settings),
            "commands": list(commands), "records": [], "decisions": []}


def add(results: dict, item: Record | dict) -> None:
    if isinstance(item, Record):
        results["records"].append(item.to_json())
    else:
        results["decisions"].append(item)


def save(path: Path, results: dict) -> None:
    from ..contracts import write_json

    body = {k: v for k, v in results.items() if k not in ("schema", "version")}
    write_json(path, SCHEMA, VERSION, body)


def line(item: Record | dict) -> str:
    """One printed line per record or decision."""
    if isinstance(item, Record):
        ms = "-" if item.ms is None else f"{item.ms:9.3f} ms"
        sides = " ".join(f"{d} {v:.3f}" for d, v in item.side_ms.items()) if item.way == "split" else ""
        return (f"{item.model:<22} b{item.batch:<4} {item.way:<9} {item.b_gpu:>4} GPU + {item.b_cpu:<4} CPU  {ms}"
                f"  predicted {item.predicted_ms:8.3f} ms  err {item.max_abs_err:.2e}  {sides}")
    fmt = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
    busy = f" [GPU busy with {item['busy']}, priced at share {item['gpu_share']:g}]" if item.get("busy") else ""
    return (f"{item['model']:<22} b{item['batch']:<4}{busy} split {item['measured_split'][0]}+{item['measured_split'][1]}: "
            f"all-CUDA/split {fmt(item['all_cuda_over_split'])}, all-CPU/split {fmt(item['all_cpu_over_split'])}; "
            f"pays: {'yes' if item['pays'] else 'no'} (partitioner predicted {'yes' if item['predicted_pays'] else 'no'}"
            f": split {item['predicted_split_ms']:.3f} ms vs per-kernel {item['predicted_per_kernel_ms']:.3f} ms)")
