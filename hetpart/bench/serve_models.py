"""The serving benchmark's real models and contenders (GPU machine; ``simulate`` on a CPU).

Models: ``resnet50`` and ``bert`` are the PyTorch twins (torchvision ResNet-50,
transformers BERT-base, :mod:`.export`) where torch is installed, so PyTorch serves
the very same weights; else (or with ``small``) hetpart's zoo.  ``detector`` is the
zoo detector: its NonMaxSuppression output has no batch dim but names each row's
image in column 0 (:func:`hetpart.nms_batch_columns`), so hetpart batches it too and
splits that output by the column.  Each model is compiled with every kernel the GPU can build on
the GPU (:func:`hetpart.backend.forced_plan`; the partitioner picks all-CUDA for these
models on the H200 anyway, bench/results/nvidia-h200-e2e.md), at every power of two
up to ``max_batch`` (and ``max_batch``): :func:`hetpart.bucket_batches` makes them one
bucketed model, so a batch of 3 runs on the batch-4 build, not padded to 8.

Contenders (:func:`contenders`):

* ``hetpart``: :class:`~hetpart.serving.Server` over each model's bucketed session
  (batches 1, 2, 4, ... ``max_batch``), dynamic batching at the sizes its
  :class:`~hetpart.serving.BatchingPolicy` keeps (:func:`batching_policy`: each bucket
  build timed on real payloads at setup, kept where it pays; or the user's explicit
  sizes), two batches of a model in flight (a Session overlaps two runs); as a
  :class:`BucketServer`, which offers the answer check the builds it may run
  (a batched request's right answer is its build's);
* ``hetpart-<policy>`` (``cpu_sharing``'s other policies, e.g. ``hetpart-split2``,
  ``hetpart-none``): the hetpart contender over sessions opened with that CPU-sharing
  policy (:mod:`hetpart.runtime.cpu_share`), a variant (never the best other);
* ``hetpart-gate<n>`` (``gates``): the hetpart contender (its bucketed sessions, batching
  policy and ``max_delay``) behind a gate of ``n`` slots across the models
  (``Server(max_concurrent_batches=n)``, ``min(instances, n)`` instances per model: a
  model never runs more than ``n`` batches at once); ``hetpart-gate1`` is sequential's
  one-run-at-a-time with batching's amortisation, a variant;
* ``hetpart-no-batching``: the same server over batch-1 sessions (``max_batch=1``);
* ``sequential``: batch-1 sessions, one request at a time across all models in
  arrival order (``max_concurrent_batches=1``: one model after another);
* ``torch-cuda-graphs``: PyTorch, each model captured as a CUDA graph at batch 1 per
  serving thread, two threads taking requests from one queue (:class:`TorchGraphs`;
  TF32 on for matmuls and convolutions, as hetpart's kernels).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..serving import BatchingPolicy, Server, SessionRunner, policy
from ..serving.policy import PAYS, runner_sizes
from .serve import Contender
from .serve_load import LoadModel

TWIN = {"resnet50": "resnet50_torchvision", "bert": "bert_base_transformers"}
PLACEMENTS = ("forced", "cpu-tail")
"""How :func:`build` places each build: ``forced`` every kernel CUDA can build on CUDA
(:func:`hetpart.backend.forced_plan`); ``cpu-tail`` the same, but kernels fed only by CPU
kernels stay on the CPU (``forced_plan(cpu_tail=True)``: the detector's NMS trim no
longer goes to the GPU and back)."""


@dataclass
class ServedModel:
    """One model: its compiled builds by batch, its batch-1 payload pool, its torch twin."""

    name: str
    max_batch: int
    compiled: dict[int, object] = field(default_factory=dict)
    payloads: list[dict] = field(default_factory=list)
    torch_module: object = None
    input_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batch_columns: dict[str, int] = field(default_factory=dict)  # outputs split by a batch column (NMS)
    batching: BatchingPolicy | None = None  # the sizes hetpart batches it at (batching_policy)
    placement: str = "forced"  # how its builds were placed (PLACEMENTS)
    graphs: dict[str, object] = field(default_factory=dict, repr=False)  # source -> its import (hetpart.load)


def _sources(name: str, batch: int, small: bool, torch_ok: bool, work: Path):
    """(onnx path or zoo spec, torch module or None, input names, note) of ``name`` at ``batch``."""
    if name in TWIN and torch_ok and not small:
        from . import export

        e = export.export(TWIN[name], batch, work)
        return str(e.path), e.module, e.input_names, f"{name}: {TWIN[name]} ({e.exporter} export)"
    spec = f"zoo:{name}{':small' if small else ''}:batch={batch}"
    return spec, None, [], f"{name}: {spec.replace(f':batch={batch}', '')}"


def build(names: list[str], *, max_batch: int, small: bool, simulate: bool, work: Path, pool: int = 8,
          log=lambda _: None, placement: str = "forced", reuse: list[ServedModel] | None = None,
          library_cache=None) -> list[ServedModel]:
    """Export (twins), load and compile every model at each of its :func:`batches`,
    placed as ``placement`` says (:data:`PLACEMENTS`).  ``reuse``: models built already
    (another placement's): a model whose plans come out the same is shared, not rebuilt.
    A source ``reuse``'s models imported already is not imported again: its graph
    (:attr:`ServedModel.graphs`) is planned as this placement says (planning and
    compiling never change a graph).
    ``library_cache`` (a :class:`hetpart.compiler.LibraryCache`, shared by the builds of
    every placement): a partition built before for another placement (same module,
    target and options: a part of the detector that ``cpu-tail`` places as ``forced``
    does) gets a copy of that library instead of a build."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement '{placement}' is not one of {', '.join(PLACEMENTS)}")
    import onnx

    import hetpart
    from hetpart import models as zoo
    from hetpart.backend import forced_plan

    torch_ok = _torch_cuda() is None and not simulate
    served, jobs = [], []
    for name in names:
        m = ServedModel(name, max_batch, placement=placement)
        for batch in batches(max_batch):
            source, module, input_names, note = _sources(name, batch, small, torch_ok, work)
            if batch == 1:
                m.torch_module, m.input_names = module, input_names
                m.notes.append(note)
                proto = onnx.load(source) if not source.startswith("zoo:") else _zoo_proto(source)
                m.payloads = [zoo.example_inputs(proto, seed=100 + k) for k in range(pool)]
                m.batch_columns = hetpart.nms_batch_columns(proto)
            jobs.append((m, batch, source))
        served.append(m)

    # the imports one after another (TVM's ONNX import is not thread-safe), the
    # compiles in parallel (as hetpart.bench.builds does: TVM releases the GIL)
    before = {m.name: m for m in reuse or []}
    imported = {source: graph for m in before.values() for source, graph in m.graphs.items()}
    for m, _, source in jobs:
        m.graphs[source] = imported[source] = imported.get(source) or hetpart.load(source)
    jobs = [(m, batch, m.graphs[source]) for m, batch, source in jobs]
    plans = {(m.name, batch): forced_plan(graph, "cuda", cpu_tail=placement == "cpu-tail") for m, batch, graph in jobs}
    same = {name for name, old in before.items()
            if all(b in old.compiled and dict(old.compiled[b].plan.assignment) == dict(plans[(n, b)].assignment)
                   for (n, b) in plans if n == name)}
    if same:
        log(f"placement {placement}: {', '.join(sorted(same))} placed as before (shared, not rebuilt)")
        served = [before[m.name] if m.name in same else m for m in served]
        jobs = [j for j in jobs if j[0].name not in same]

    def compile_one(job):
        m, batch, graph = job
        compiled = hetpart.compile(plans[(m.name, batch)], graph, simulate=simulate, progress=False,
                                   library_cache=library_cache)
        log(f"compiled {m.name} b{batch} ({placement}) in {compiled.compile_seconds:.1f} s")
        return m, batch, compiled

    with ThreadPoolExecutor(max_workers=max(1, min(4, len(jobs)))) as ex:
        for m, batch, compiled in ex.map(compile_one, jobs):
            m.compiled[batch] = compiled
    return served


def batches(top: int) -> list[int]:
    """The builds of a model served up to ``top`` rows: 1, 2, 4, ... and ``top``."""
    return sorted({1, top, *(1 << k for k in range(top.bit_length()) if 1 << k <= top)})


def _zoo_proto(spec: str):
    from hetpart import models as zoo

    name, small, cfg = zoo.parse_zoo_spec(spec)
    return zoo.build(name, small=small, **cfg)


def batching_policy(session, payloads: list[dict], sizes, explicit_sizes=None,
                    threshold: float = PAYS) -> BatchingPolicy:
    """Which of a bucketed ``session``'s builds (``sizes``) pay: each timed on real
    ``payloads`` stacked to its size (after a warm-up run, which also opens it) and
    kept where latency(b)/b <= ``threshold`` x latency(1) (:func:`hetpart.serving.policy.decide`).
    ``explicit_sizes`` (the user's): used as given, nothing timed (each build still warmed)."""
    if explicit_sizes:
        for b in sorted(sizes):
            session.run(_rows(payloads, b))
        return policy.explicit(explicit_sizes)
    return policy.decide(policy.measure_latencies(lambda b: session.run(_rows(payloads, b)), sizes), threshold)


def contenders(served: list[ServedModel], *, max_delay: float, sessions: dict,
               batch_sizes: list[int] | None = None, pays: float = PAYS, instances: int = 2,
               freeze_heap: bool = True, variants: tuple[int, ...] = (),
               cpu_sharing: tuple[str, ...] = ("gate",), holds: tuple[float, ...] = (),
               no_spin: bool = False, placed: dict[str, list[ServedModel]] | None = None,
               combined: bool = False, gates: tuple[int, ...] = ()) -> list[Contender]:
    """The four contenders over ``served``; ``sessions`` caches the open Sessions (the
    caller closes them) so scenarios sharing a model share its sessions; ``instances``:
    the batches of one model the two hetpart servers run at once; ``freeze_heap``: the
    servers freeze the Python heap at their first request (:mod:`hetpart.serving.heap`);
    ``variants``: per number, a variant ``hetpart-i<n>`` of the hetpart contender with
    ``n`` instances (an A/B in one run; never the "best other"); ``cpu_sharing``: the
    sessions' CPU-sharing policies (:mod:`hetpart.runtime.cpu_share`), the first for
    every contender, each other one adding a variant ``hetpart-<policy>`` (its own
    sessions, opened with that policy); ``holds`` (seconds): per value a variant
    ``hetpart-hold<ms>`` whose server holds partial batches while another batch of their
    model runs (:mod:`hetpart.serving.batcher`, ``hold``); ``no_spin``: a variant
    ``hetpart-nospin`` over sessions whose host threads sleep while they wait for the GPU
    (``Session(spin_wait=False)``: no waiter spins on a core the CPU lane's pool uses);
    ``placed``: per other placement (:data:`PLACEMENTS`) the same models built so, each
    a variant ``hetpart-<placement>``; ``combined``: one more variant ``hetpart-all`` with
    every one of those at once (the last placement, the first hold, no spinning where
    ``no_spin``); ``gates``: per number ``n``, a variant ``hetpart-gate<n>`` whose server
    runs at most ``n`` batches at once across its models (``max_concurrent_batches=n``),
    each model with ``min(instances, n)`` instances.  Each model's
    :class:`~hetpart.serving.BatchingPolicy` is decided here, once (``m.batching``):
    measured (kept at ``pays``), or ``batch_sizes`` where the user gave them."""
    import hetpart

    main_sharing = cpu_sharing[0]

    def session(m: ServedModel, batch: int | None, sharing: str = main_sharing, spin: bool = True):
        """The Session of ``m`` at ``batch`` under CPU-sharing policy ``sharing``; None:
        the bucketed one over all its builds (each bucket run first, so no load window
        pays for opening it, and timed: ``m.batching``)."""
        key = (m.name, batch, sharing, m.placement, spin)
        if key not in sessions:
            if batch is None:
                sessions[key] = hetpart.Session(hetpart.bucket_batches(m.compiled, model=m.name,
                                                                       batch_columns=m.batch_columns),
                                                cpu_sharing=sharing, spin_wait=spin)
                if m.batching is None:
                    m.batching = batching_policy(sessions[key], m.payloads, m.compiled, batch_sizes, pays)
                else:  # another policy's sessions: opened and every bucket warmed at setup too
                    for b in sorted(m.compiled):
                        sessions[key].run(_rows(m.payloads, b))
            else:
                sessions[key] = hetpart.Session(m.compiled[batch], cpu_sharing=sharing, spin_wait=spin)
        return sessions[key]

    for members in [served, *(placed or {}).values()]:
        for m in members:
            if m.max_batch > 1:
                for sharing in cpu_sharing:
                    session(m, None, sharing)  # at setup: warmed (the first: timed, its policy decided)
                if no_spin:
                    session(m, None, main_sharing, spin=False)
    combo = list(placed.values())[-1] if combined and placed else served  # its no-spin sessions: warmed above

    def server(batch_of, instances: int, gate: int | None, delay: float, sharing: str = main_sharing,
               members: list[ServedModel] = served, hold: float | None = None, spin: bool = True):
        def make():
            s = Server(max_delay=delay, max_concurrent_batches=gate, freeze_heap=freeze_heap, hold=hold)
            bucketed = {}
            for m in members:
                b = batch_of(m)  # None: the bucketed session, a runner as it is
                runner = session(m, b, sharing, spin) if b is None else SessionRunner(session(m, b, sharing, spin))
                s.add_model(m.name, runner, instances=instances, batching=m.batching if b is None else None)
                if b is None:
                    bucketed[m.name] = runner
            return BucketServer(s, bucketed, {m.name: m.batching for m in members}) if bucketed else s
        return make

    kept = "; ".join(f"{m.name} {','.join(map(str, m.batching.sizes)) if m.batching.batches else 'unbatched'}"
                     for m in served if m.batching is not None)
    bucketed = lambda m: None if m.max_batch > 1 else 1  # noqa: E731
    out = [Contender("hetpart", server(bucketed, instances, None, max_delay),
                     notes=[f"batches {kept or '1'}, max_delay {max_delay * 1e3:g} ms, {instances} instance(s), "
                            f"cpu sharing {main_sharing}"]),
           *[Contender(f"hetpart-i{n}", server(bucketed, n, None, max_delay),
                       notes=[f"variant of hetpart with {n} instance(s)"], variant=True) for n in variants],
           *[Contender(f"hetpart-{sharing.replace(':', '')}", server(bucketed, instances, None, max_delay, sharing),
                       notes=[f"variant of hetpart with cpu sharing {sharing}"], variant=True)
             for sharing in cpu_sharing[1:]],
           *[Contender(f"hetpart-hold{h * 1e3:g}", server(bucketed, instances, None, max_delay, hold=h),
                       notes=[f"variant of hetpart holding a partial batch up to {h * 1e3:g} ms while another "
                              "batch of its model runs"], variant=True) for h in holds],
           *([Contender("hetpart-nospin", server(bucketed, instances, None, max_delay, spin=False),
                        notes=["variant of hetpart whose sessions' host threads sleep while waiting for the GPU "
                               "(spin_wait=False)"], variant=True)] if no_spin else []),
           *[Contender(f"hetpart-{name}", server(bucketed, instances, None, max_delay, members=members),
                       notes=[f"variant of hetpart with its models placed {name}: " + "; ".join(
                           f"{m.name} {','.join(map(str, m.batching.sizes)) if m.batching.batches else 'unbatched'}"
                           for m in members if m.batching is not None)], variant=True)
             for name, members in (placed or {}).items()],
           *([Contender("hetpart-all", server(bucketed, instances, None, max_delay, members=combo,
                                              hold=holds[0] if holds else None, spin=not no_spin),
                        notes=["variant of hetpart with all of: " + ", ".join(
                            ([f"placement {list(placed)[-1]}"] if placed else [])
                            + ([f"hold {holds[0] * 1e3:g} ms"] if holds else []) + (["no spinning"] if no_spin else []))],
                        variant=True)] if combined else []),
           *[Contender(f"hetpart-gate{n}", server(bucketed, min(instances, n), n, max_delay),
                       notes=[f"variant of hetpart with at most {n} batch(es) running at once across models "
                              f"(max_concurrent_batches={n}), {min(instances, n)} instance(s) per model"],
                       variant=True) for n in gates],
           Contender("hetpart-no-batching", server(lambda m: 1, instances, None, 0.0)),
           Contender("sequential", server(lambda m: 1, 1, 1, 0.0), notes=["one request at a time across models"])]
    reason = _torch_cuda()
    missing = [m.name for m in served if m.torch_module is None]
    if reason is None and missing:
        reason = f"{', '.join(missing)} has no PyTorch twin"
    if reason is None:
        out.append(Contender("torch-cuda-graphs", lambda: TorchGraphs(served), notes=["2 threads, batch 1"]))
    else:
        out.append(Contender("torch-cuda-graphs", None, skipped=reason))
    return out


class BucketServer:
    """A :class:`~hetpart.serving.Server` (``submit``, ``stats``, ``close`` as its) that
    offers the answer check the builds of its bucketed models
    (:class:`~hetpart.bench.serve_load.BucketedSystem`).  ``bucketed``: model name ->
    its bucketed session (``buckets``, ``spec.batch``, ``batch_columns``);
    ``policies``: model name -> the :class:`~hetpart.serving.BatchingPolicy` it is
    served with (only the builds it keeps are offered), or None."""

    def __init__(self, server: Server, bucketed: dict[str, object],
                 policies: dict[str, BatchingPolicy | None] | None = None):
        self.server, self._bucketed, self._policies = server, bucketed, dict(policies or {})

    def submit(self, model: str, feeds: dict) -> Future:
        return self.server.submit(model, feeds)

    def stats(self) -> dict:
        return self.server.stats()

    def close(self) -> None:
        self.server.close()

    def bucket_sizes(self, model: str) -> list[int]:
        """The batch sizes of ``model``'s builds its policy may run (:func:`~hetpart.serving.policy.runner_sizes`,
        1 included; [1] for a model that is not bucketed or is served unbatched)."""
        runner, batching = self._bucketed.get(model), self._policies.get(model)
        if runner is None:
            return [1]
        return [b for b in runner_sizes(runner) if batching is None or batching.runs(b) and b <= batching.max_batch]

    def run_together(self, model: str, rows: list[dict], timeout: float = 120.0) -> list[dict]:
        """``rows`` as one request through the server: the bucketed session runs it on the
        build of ``len(rows)`` rows (padding with zeros up to its bucket, as for a batch
        of requests); each row's own outputs, split as the server splits a batch (dim 0,
        or by the batch column: :func:`~hetpart.contracts.buckets.rows_of_batch`)."""
        from ..contracts.buckets import rows_of_batch

        feeds = {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}
        outputs = self.server.submit(model, feeds).result(timeout)
        columns = dict(getattr(self._bucketed.get(model), "batch_columns", None) or {})
        return [{name: rows_of_batch(y, columns[name], i, i + 1) if name in columns else y[i:i + 1]
                 for name, y in outputs.items()} for i in range(len(rows))]


def _rows(payloads: list[dict], n: int) -> dict:
    """``n`` rows: batch-1 payloads stacked (cycling through the pool)."""
    picked = [payloads[k % len(payloads)] for k in range(n)]
    return {name: np.concatenate([p[name] for p in picked]) for name in picked[0]}


def load_models(served: list[ServedModel]) -> list[LoadModel]:
    return [LoadModel(m.name, m.payloads) for m in served]


def _torch_cuda() -> str | None:
    """None if PyTorch with a CUDA GPU is here, else why not."""
    try:
        import torch
    except ImportError:
        return "PyTorch not installed"
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU"
    return None


class TorchGraphs:
    """PyTorch serving ``served`` from ``threads`` threads: per thread and model one CUDA
    graph captured at batch 1 on the thread's own stream; requests from one FIFO queue."""

    def __init__(self, served: list[ServedModel], threads: int = 2):
        import torch

        from .peers import _flatten_outputs

        self.torch, self._flatten = torch, _flatten_outputs
        torch.backends.cuda.matmul.allow_tf32 = True  # as hetpart's kernels (TF32 on by default)
        torch.backends.cudnn.allow_tf32 = True
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._graphs = []  # per thread: {model: (graph, static inputs, static outputs, input names)}
        self._streams = [torch.cuda.Stream() for _ in range(threads)]
        modules = {m.name: (m.torch_module.eval().cuda(), m.input_names, m.payloads[0]) for m in served}
        for stream in self._streams:
            self._graphs.append({name: self._capture(stream, *spec) for name, spec in modules.items()})
        self._threads = [threading.Thread(target=self._serve, args=(i,), daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def _capture(self, stream, module, names, example):
        torch = self.torch
        static = [torch.from_numpy(np.ascontiguousarray(example[n])).cuda() for n in names]
        stream.wait_stream(torch.cuda.current_stream())  # the inputs' copies first
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(3):  # warm up (cuDNN/cuBLAS choices) before capture
                module(*static)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                outs = self._flatten(module(*static))
        stream.synchronize()
        return graph, static, outs, names

    def submit(self, model: str, feeds: dict) -> Future:
        fut: Future = Future()
        self._queue.put((model, feeds, fut))
        return fut

    def _serve(self, i: int) -> None:
        torch, stream, graphs = self.torch, self._streams[i], self._graphs[i]
        while True:
            item = self._queue.get()
            if item is None:
                return
            model, feeds, fut = item
            try:
                graph, static, outs, names = graphs[model]
                with torch.no_grad(), torch.cuda.stream(stream):
                    for buf, n in zip(static, names):
                        buf.copy_(torch.from_numpy(np.ascontiguousarray(feeds[n])), non_blocking=False)
                    graph.replay()
                    host = {f"output{k}": o.cpu().numpy() for k, o in enumerate(outs)}  # .cpu() waits
                fut.set_result(host)
            except BaseException as exc:  # noqa: BLE001 - the request's caller gets it
                fut.set_exception(exc)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(30)
