"""Per-kernel CUDA time of a corpus model: hetpart's kernels beside PyTorch's, per category.

    PYTHONPATH=. python tools/gpu_kernel_profile.py efficientnet_b0 [--batch 1] [--runs 20]
        [--precision fp32|bf16|fp16] [--export-dir DIR] [--profile P.json] [--trace T.json]
        [--keep-trace T.json] [--top 15] [--json OUT.json] [--md OUT.md] [--set MODULE.NAME=VALUE ...]

hetpart side: the model's ONNX export (``bench/corpus.py``'s, cached in
``--export-dir``) built all-CUDA as the corpus builds it and run through a
``Session`` -- in a subprocess, under ``torch.profiler`` with CUDA activity: CUPTI
records every kernel of the process, TVM's too, replayed from hetpart's CUDA graph or
not.  Each ``Session.run`` is a ``record_function("hp|forward")`` range; each CUDA
kernel inside one is mapped to the PrimFunc TVM named it after (``<func>_kernel``,
``<func>_kernel_1``, ..., ``gpu_kernel_categories.function_of_kernel``), its duration
taken from the GPU's clock.  Besides the per-kernel rows: where the forward's wall
time goes (the GPU's kernels, copies, its idle time inside the span, host time
outside it).  Schedule rules come from a ``hetpart profile`` JSON where one exists,
else from scheduling the graph for the local GPU (:func:`scheduled_rules`).

(Until this version the hetpart side was the cost model's profile: each kernel's
median time of one VM call less the empty call's.  A VM call costs the host a few
microseconds, during which a short kernel finishes, so every kernel shorter than the
call read 0 us -- EfficientNet-B0's depthwise convolutions, pools and gates: 258 us
of a 828 us forward.)

PyTorch side: the same torchvision/transformers module (``corpus.torch_model``: same
seed) eager on the GPU, TF32 allowed as in the corpus peer, under ``torch.profiler``
with CUDA activity for ``--runs`` forwards after a warm-up; each kernel's duration
(kernels last as long in a CUDA graph) attributed to the module that launched it:
every module's forward runs inside a ``record_function("hp|<class>|<category>")``,
and a kernel's category is read from the chain of those around its launch
(``tools/gpu_kernel_categories.torch_category``).  Averages per forward.

``--precision bf16`` / ``fp16`` (issue 17's low-precision rows): hetpart's build as
``bench/corpus.py --precision`` makes it (weights stored in that format, its kernels
named ``<func>_bf16w``), PyTorch's forward under ``torch.autocast`` to that type, as
the corpus peer runs it; rules from scheduling the lowered graph.

``--set MODULE.NAME=VALUE`` (repeatable; :mod:`hetpart.bench.switches`' syntax): module switches set
while hetpart's side is built and its rules read (e.g. an off-by-default GPU rule, to see its kernels).

Prints (and with ``--md`` appends) the per-category table -- hetpart us, PyTorch us,
ratio, kernel counts -- the forward's breakdown, then both sides' top kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_kernel_categories import (CATEGORIES, feeds_se, function_of_kernel, hetpart_category,  # noqa: E402
                                   torch_category, torch_kernel_category, torch_module_category)

LABEL = "hp|"


@dataclass
class KernelTime:
    """One distinct kernel of one side: ``us`` per occurrence, ``count`` occurrences."""

    name: str
    category: str
    us: float
    count: int = 1
    rule: str = ""

    @property
    def total_us(self) -> float:
        return self.us * self.count


# --- hetpart side -----------------------------------------------------------------------------
FORWARD = "hp|forward"
"""The ``record_function`` range around each timed ``Session.run`` in the hetpart trace."""
GPU_KERNEL = "kernel"
GPU_COPY = ("gpu_memcpy", "gpu_memset")
"""Chrome-trace categories (``cat``) of kineto's GPU activities: kernels, copies and fills."""


@dataclass(frozen=True)
class TraceEvent:
    """One complete (``ph: X``) event of a kineto Chrome trace; times in us."""

    name: str
    cat: str
    ts: float
    dur: float

    @property
    def end(self) -> float:
        return self.ts + self.dur


@dataclass
class ForwardTime:
    """Where one hetpart forward's wall time goes, us per forward (means over the runs).

    ``wall``: the ``Session.run`` call on the host (what ``bench/corpus.py`` times);
    ``kernels``: the sum of its kernels' durations; ``copies``: memcpy/memset;
    ``span``: first GPU activity's start to the last one's end; ``gpu_idle``: the span
    less the union of the GPU's busy intervals (launch gaps between kernels, inside a
    CUDA graph or not); ``host_outside``: the wall less the span (host work before the
    first copy and after the last: feeds, the VM call, outputs back, sync)."""

    forwards: int
    wall: float
    kernels: float
    kernel_count: float
    copies: float
    span: float
    gpu_idle: float
    aligned: bool = True  # False: GPU and host clocks disagree; span and gpu_idle not measured (NaN)

    @property
    def host_outside(self) -> float:
        return max(self.wall - self.span, 0.0) if self.aligned else float("nan")


def trace_events(trace: dict) -> list[TraceEvent]:
    """The complete events of a Chrome trace as ``torch.profiler`` exports it
    (``{"traceEvents": [...]}`` or a bare list)."""
    raw = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
    return [TraceEvent(e["name"], e.get("cat", ""), float(e["ts"]), float(e.get("dur", 0.0)))
            for e in raw if e.get("ph") == "X" and "ts" in e and "name" in e]


def _forwards(events: list[TraceEvent]) -> list[TraceEvent]:
    """The host ranges around each timed forward, in time order (not their GPU copies)."""
    return sorted((e for e in events if e.name == FORWARD and not e.cat.startswith("gpu")), key=lambda e: e.ts)


def _gpu(events: list[TraceEvent]) -> list[TraceEvent]:
    return [e for e in events if e.cat == GPU_KERNEL or e.cat in GPU_COPY]


def _in_forward(events: list[TraceEvent], forwards: list[TraceEvent]) -> list[tuple[int, TraceEvent]]:
    """``(forward index, event)`` for each GPU kernel/copy that starts inside a forward;
    [] when none does (see :func:`aligned`)."""
    out = []
    for e in _gpu(events):
        for i, f in enumerate(forwards):
            if f.ts <= e.ts <= f.end:
                out.append((i, e))
                break
    return out


def aligned(events: list[TraceEvent]) -> bool:
    """Whether the trace's GPU activities fall inside its host forward ranges (kineto puts
    CUPTI's timestamps on the host clock; if a build did not, every GPU activity of the
    trace counts, spread evenly over the forwards -- the trace holds the timed runs only --
    and the span and idle time are not measured)."""
    return bool(_in_forward(events, _forwards(events))) or not _gpu(events)


def _per_forward(events: list[TraceEvent], forwards: list[TraceEvent]) -> list[tuple[int, TraceEvent]]:
    """:func:`_in_forward`, or every GPU activity (forward index -1) when the clocks disagree."""
    found = _in_forward(events, forwards)
    return found if found else [(-1, e) for e in _gpu(events)]


def _busy(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end)`` intervals."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            total += 0.0 if cur_e is None else cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (0.0 if cur_e is None else cur_e - cur_s)


def forward_time(events: list[TraceEvent]) -> ForwardTime | None:
    """Means per forward of where the wall time went (None: no forward range in the trace)."""
    forwards = _forwards(events)
    if not forwards:
        return None
    per = defaultdict(list)
    for i, e in _per_forward(events, forwards):
        per[i].append(e)
    n = len(forwards)
    kernels = copies = count = span = idle = 0.0
    for i, gpu in per.items():
        ks = [e for e in gpu if e.cat == GPU_KERNEL]
        kernels += sum(e.dur for e in ks)
        count += len(ks)
        copies += sum(e.dur for e in gpu if e.cat in GPU_COPY)
        if gpu and i >= 0:
            s = max(e.end for e in gpu) - min(e.ts for e in gpu)
            span += s
            idle += s - _busy([(e.ts, e.end) for e in gpu])
    wall = sum(f.dur for f in forwards)
    if -1 in per:
        return ForwardTime(n, wall / n, kernels / n, count / n, copies / n, float("nan"), float("nan"), False)
    return ForwardTime(n, wall / n, kernels / n, count / n, copies / n, span / n, idle / n)


def hetpart_trace_times(events: list[TraceEvent], categories: dict[str, str], rules: dict[str, str] | None = None
                        ) -> tuple[list[KernelTime], list[str]]:
    """(per hetpart function: mean us per launch and launches per forward, the CUDA
    kernel names inside the forwards that are no function of ``categories``).

    ``categories``: ``{PrimFunc name: category}`` of the model's kernels; a function
    of several CUDA kernels (split-K's partial products and sum, the broadcast
    epilogue's FC and multiply) adds its kernels' durations per launch of its first.
    Only GPU kernels that start inside a timed forward count (all of the trace's where
    none does: :func:`aligned`); kernels of other libraries (or TVM builtins) are kept
    under category ``other``."""
    forwards = _forwards(events)
    rules = rules or {}
    total: dict[str, float] = defaultdict(float)
    launches: dict[str, Counter] = defaultdict(Counter)
    unmatched: set[str] = set()
    owner: dict[str, str | None] = {}
    for _, e in _per_forward(events, forwards):
        if e.cat != GPU_KERNEL:
            continue
        if e.name not in owner:
            owner[e.name] = function_of_kernel(e.name, categories)
        func = owner[e.name]
        key = func or e.name
        if func is None:
            unmatched.add(e.name)
        total[key] += e.dur
        launches[key][e.name] += 1
    n = max(len(forwards), 1)
    rows = []
    for key, us in total.items():
        calls = min(launches[key].values())  # launches of the function: its rarest kernel's count
        cat = categories.get(key, "other")
        rows.append(KernelTime(key, cat, us / calls, calls / n, rules.get(key, "")))
    return rows, sorted(unmatched)


def function_categories(graph) -> dict[str, str]:
    """``{PrimFunc name: category}`` of an op graph's kernels."""
    return {func: cat for _, func, cat, _ in hetpart_kernel_list(graph)}


def profile_rules(profile: dict, kernels: list[tuple[str, str, str, int]], device: str = "cuda") -> dict[str, str]:
    """``{PrimFunc name: schedule rule}`` from a ``hetpart-profile`` JSON (its kernels'
    ``rule``), for the functions it holds.  Only the rule: the profile's times are one
    kernel per VM call, host-bound for short kernels (see :func:`hetpart_trace_times`)."""
    recs = profile.get("kernels", {}).get(device, {})
    return {func: recs[sig].get("rule", "") for sig, func, _, _ in kernels if sig in recs}


def scheduled_rules(graph, arch: str | None = None) -> dict[str, str]:
    """``{PrimFunc name: schedule rule}`` of an op graph's module scheduled for CUDA as
    ``kernels.build`` schedules it (this machine's GPU, or ``arch``; the default kernel
    options); {} where that fails (the table then has no rule column)."""
    from hetpart import kernels
    from hetpart.kernels.options import resolve
    from hetpart.targets import cuda_tvm_target

    try:
        return dict(kernels.rules_applied(kernels.schedule(graph.module, cuda_tvm_target(arch), resolve(cuda_arch=arch))))
    except Exception as exc:  # noqa: BLE001 - the rules are a courtesy column
        print(f"warning: no schedule rules ({type(exc).__name__}: {exc})", file=sys.stderr)
        return {}


def lowered(graph, precision: str = "fp32"):
    """``graph`` with every kernel's weights stored in ``precision``'s format, as the
    all-CUDA corpus build stores them (its functions named ``<func>_bf16w`` / ``_fp16w``,
    the names the trace's kernels carry); ``graph`` itself for fp32."""
    if precision == "fp32":
        return graph
    from hetpart.contracts.precision import STORAGE
    from hetpart.importer.low_precision import lower_weights

    return lower_weights(graph, list(graph.kernels), STORAGE[precision])


def hetpart_kernel_list(graph) -> list[tuple[str, str, str, int]]:
    """``[(signature, func, category, count)]`` of an op graph's distinct kernels, in
    graph order (categories from the kernel's ops and shapes)."""
    from hetpart.costmodel import kernel_bench

    counts = Counter(k.signature for k in graph.kernels.values())
    out, seen = [], set()
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        if k.signature in seen:
            continue
        seen.add(k.signature)
        weights = [a.shape for a in kernel_bench.single_kernel_module(graph, k).args if a.weight]
        shapes = [graph.tensors[t].shape for t in k.inputs]
        out.append((k.signature, k.func, hetpart_category(k.ops, k.op_class, shapes, weights, feeds_se(graph, k)),
                    counts[k.signature]))
    return out


def trace_hetpart(model: str, batch: int, export_dir: Path, build_dir: Path, runs: int, trace_path: Path,
                  precision: str = "fp32") -> None:
    """(In its own process, on the GPU.)  The corpus model's all-CUDA build, as
    ``bench/corpus.py`` makes and runs it, under ``torch.profiler``: ``runs`` forwards
    (each ``Session.run`` in a :data:`FORWARD` range) after a warm-up; the Chrome trace
    written to ``trace_path``.  CUPTI records every kernel of the process, TVM's too
    (launched through ``cuLaunchKernel``, or replayed from hetpart's CUDA graph)."""
    import numpy as np
    import torch

    torch.cuda.init()  # the primary context, before TVM's, so CUPTI follows it from the start
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]):
        pass  # kineto initialised before any TVM kernel loads
    import hetpart
    from bench import corpus

    corpus.prepare(model, batch, export_dir, None)
    record = corpus.build_device(model, batch, "cuda", export_dir, build_dir, False, "", precision)
    if record.get("status") == "error":
        raise SystemExit(f"hetpart build failed: {record.get('detail')}")
    data = dict(np.load(corpus.cached_paths(export_dir, model, batch)[1]))
    feeds = {k: v for k, v in data.items() if not k.startswith("ref:")}
    with hetpart.Session(build_dir) as session:
        run_feeds = corpus._session_feeds(session, feeds)
        for _ in range(5):
            session.run(run_feeds)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                with torch.profiler.record_function(FORWARD):
                    session.run(run_feeds)
            torch.cuda.synchronize()
    prof.export_chrome_trace(str(trace_path))


def run_hetpart_trace(model: str, batch: int, export_dir: Path, runs: int, trace_path: Path,
                      precision: str = "fp32", switches: list[str] = ()) -> None:
    """:func:`trace_hetpart` in a subprocess (this process keeps torch's side apart), with the
    module ``switches`` (``MODULE.NAME=VALUE``) set there."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hp-trace-") as build:
        cmd = [sys.executable, str(Path(__file__).resolve()), model, "--batch", str(batch),
               "--export-dir", str(export_dir), "--runs", str(runs), "--trace-worker", str(trace_path),
               "--build-dir", build, "--precision", precision, *(f"--set={item}" for item in switches)]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=env)


def forward_table(t: ForwardTime, peer_ms: float | None, title: str) -> str:
    """Markdown: where hetpart's forward goes (us per forward)."""
    lines = [f"### {title}", "", "| where | us per forward | share of wall |", "|---|--:|--:|"]
    rows = [("Session.run wall (host)", t.wall), ("GPU kernels (sum)", t.kernels), ("GPU copies (memcpy/memset)", t.copies),
            ("GPU idle inside the span (gaps between kernels)", t.gpu_idle),
            ("host outside the GPU span (feeds, VM call, outputs, sync)", t.host_outside)]
    for what, us in rows:
        lines.append(f"| {what} | {us:.1f} | {100 * us / t.wall if t.wall else 0:.0f} % |")
    lines.append(f"\n{t.forwards} forwards; {t.kernel_count:g} kernels each; GPU span {t.span:.1f} us.")
    if not t.aligned:
        lines[-1] += " GPU activities lie outside the host ranges (clocks not aligned): span and idle not measured."
    if peer_ms is not None:
        lines[-1] += f" PyTorch CUDA graph (corpus peer): {peer_ms * 1e3:.1f} us."
    return "\n".join(lines)


# --- PyTorch side -----------------------------------------------------------------------------
def parse_chain(labels) -> list[tuple[str, str]]:
    """``[(class, category)]`` from ``record_function`` names ``hp|<class>|<category>``
    (outermost first); other names are skipped."""
    out = []
    for name in labels:
        if name.startswith(LABEL):
            _, cls, cat = name.split("|", 2)
            out.append((cls, cat))
    return out


def torch_times(launches) -> list[KernelTime]:
    """Per (category, kernel name): mean us per launch and launches, from ``launches`` =
    ``[(labels outermost first, kernel name, duration us)]`` over all runs (the caller
    divides ``count`` by the runs); a kernel outside every labelled module is
    categorised by its name where that is unambiguous, else ``elementwise``."""
    acc: dict[tuple[str, str], list[float]] = defaultdict(list)
    for labels, name, us in launches:
        chain = parse_chain(labels)
        category = torch_category(chain) if chain else (torch_kernel_category(name) or "elementwise")
        acc[(category, name)].append(us)
    return [KernelTime(name, cat, sum(v) / len(v), len(v)) for (cat, name), v in acc.items()]


def _label_modules(model, torch) -> None:
    """Wrap every module's forward in a ``record_function`` naming its class and category."""
    from gpu_kernel_categories import STICKY

    for module in model.modules():
        cls = type(module).__name__
        conv = module if cls == "Conv2d" else (
            next((m for m in module.modules() if type(m).__name__ == "Conv2d"), None) if cls in STICKY[1:] else None)
        orig = module.forward

        def forward(*args, _orig=orig, _cls=cls, _conv=conv, **kwargs):
            shape = tuple(args[0].shape) if args and hasattr(args[0], "shape") else None
            if _conv is not None and shape is not None and len(shape) == 4:
                cat = torch_module_category(_cls, tuple(_conv.weight.shape), shape)
            else:
                cat = torch_module_category(_cls)
            with torch.profiler.record_function(f"{LABEL}{_cls}|{cat}"):
                return _orig(*args, **kwargs)

        module.forward = forward


def profile_torch(name: str, batch: int, runs: int, precision: str = "fp32") -> tuple[list[KernelTime], int]:
    """(PyTorch's kernels per forward, runs) for corpus model ``name`` on the GPU (under
    ``torch.autocast`` to ``precision``'s type where it is bf16/fp16, as the corpus peer)."""
    import contextlib

    import torch

    from bench import corpus

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model, feeds = corpus.torch_model(name, batch, attention="sdpa")
    model = model.cuda().eval()
    args = [torch.from_numpy(v).cuda() for v in feeds.values()]
    _label_modules(model, torch)
    autocast = (torch.autocast("cuda", dtype=corpus.AUTOCAST[precision](torch)) if precision in corpus.AUTOCAST
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        for _ in range(5):
            model(*args)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                model(*args)
            torch.cuda.synchronize()
    launches = []
    for evt in prof.events():
        for k in getattr(evt, "kernels", None) or []:
            labels, e = [], evt
            while e is not None:
                labels.append(e.name)
                e = e.cpu_parent
            launches.append((labels[::-1], k.name, float(k.duration)))
    if not launches:  # this torch links no kernel to its launch: categories from kernel names only
        print("warning: torch.profiler linked no CUDA kernel to a CPU launch; PyTorch's categories "
              "come from kernel names alone", file=sys.stderr)
        launches = [([], evt.name, float(evt.device_time)) for evt in prof.events()
                    if str(getattr(evt, "device_type", "")).endswith("CUDA")]
    rows = torch_times(launches)
    for r in rows:  # per forward
        r.count = r.count / runs
    return rows, runs


# --- table ------------------------------------------------------------------------------------
def by_category(rows: list[KernelTime]) -> dict[str, tuple[float, float]]:
    """``{category: (total us, kernels)}`` per forward."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        out[r.category][0] += r.total_us
        out[r.category][1] += r.count
    return {k: (v[0], v[1]) for k, v in out.items()}


def category_table(het: list[KernelTime], peer: list[KernelTime], title: str) -> str:
    """Markdown: per category hetpart us, PyTorch us, ratio, kernel counts; a total row."""
    h, p = by_category(het), by_category(peer)
    cats = [c for c in CATEGORIES if c in h or c in p] + sorted((set(h) | set(p)) - set(CATEGORIES))
    lines = [f"### {title}", "", "| category | hetpart us | kernels | PyTorch us | kernels | ratio |",
             "|---|--:|--:|--:|--:|--:|"]
    th = tp = 0.0
    nh = np_ = 0.0
    for c in sorted(cats, key=lambda c: -(h.get(c, (0, 0))[0])):
        hu, hn = h.get(c, (0.0, 0))
        pu, pn = p.get(c, (0.0, 0))
        th, tp, nh, np_ = th + hu, tp + pu, nh + hn, np_ + pn
        lines.append(f"| {c} | {hu:.1f} | {hn:g} | {pu:.1f} | {pn:g} | {_ratio(hu, pu)} |")
    lines.append(f"| **total** | {th:.1f} | {nh:g} | {tp:.1f} | {np_:g} | {_ratio(th, tp)} |")
    return "\n".join(lines)


NAME_WIDTH = 70
"""Characters of a kernel's name in :func:`top_table`; a longer name keeps its head and its tail."""
NAME_TAIL = 24
"""Characters of a long name's tail that :func:`short_name` keeps: a substituted kernel's suffix
(``_bf16a_wgmma_kernel``, ``_flash_in_kernel_1``) says what ran -- cut off, the wgmma fc1 + GELU GEMM
(``fused_matmul4_add5_divide_fast_erf_add6_multiply2_multiply3_bf16w_bf16a_wgmma_kernel``) read as
the TVM kernel it replaced (device step 161's tables)."""


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """``name`` itself when at most ``width`` characters, else its head, ``...`` and its last
    :data:`NAME_TAIL` characters, ``width`` in all."""
    if len(name) <= width:
        return name
    return name[:width - NAME_TAIL - 3] + "..." + name[-NAME_TAIL:]


def top_table(rows: list[KernelTime], top: int, title: str) -> str:
    lines = [f"### {title}", "", "| kernel | category | rule | x | us each | us total |", "|---|---|---|--:|--:|--:|"]
    for r in sorted(rows, key=lambda r: -r.total_us)[:top]:
        lines.append(f"| {short_name(r.name)} | {r.category} | {r.rule} | {r.count:g} | {r.us:.1f} | "
                     f"{r.total_us:.1f} |")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a corpus model name (bench/corpus.py), e.g. efficientnet_b0")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--profile", default=None,
                    help="a hetpart profile JSON to read the schedule rules from (default: EXPORT_DIR/<model>-b<batch>"
                         ".profile.json where it exists); its times are not used")
    ap.add_argument("--export-dir", default=str(Path.home() / ".cache" / "hetpart" / "corpus"))
    ap.add_argument("--runs", type=int, default=20, help="forwards profiled on each side")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="the CUDA build's format (bench/corpus.py --precision); PyTorch under autocast to it")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-torch", action="store_true", help="hetpart's side only")
    ap.add_argument("--trace", default=None, help="read hetpart's side from this Chrome trace (default: record one)")
    ap.add_argument("--keep-trace", default=None, help="copy the recorded hetpart trace here")
    ap.add_argument("--json", help="write both sides' rows as JSON")
    ap.add_argument("--md", help="append the tables to this markdown file")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="a module switch set while hetpart's side is built and its rules read (repeatable)")
    ap.add_argument("--trace-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--build-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from hetpart.bench.switches import switched

    with switched(args.set):
        return _run(args)


def _run(args) -> int:
    """:func:`main` with its switches set."""
    export_dir = Path(args.export_dir)
    if args.trace_worker:
        trace_hetpart(args.model, args.batch, export_dir, Path(args.build_dir), args.runs, Path(args.trace_worker),
                      args.precision)
        return 0

    from bench import corpus

    from hetpart import load

    onnx_path, _, meta_path = corpus.cached_paths(export_dir, args.model, args.batch)
    if not onnx_path.exists():
        export_dir.mkdir(parents=True, exist_ok=True)
        corpus.export(args.model, args.batch, onnx_path)
    graph = lowered(load(str(onnx_path)), args.precision)
    kernels = hetpart_kernel_list(graph)
    profile_path = Path(args.profile or onnx_path.with_suffix(".profile.json"))
    rules = (profile_rules(json.loads(profile_path.read_text()), kernels)
             if profile_path.exists() and args.precision == "fp32" else scheduled_rules(graph))
    suffix = "" if args.precision == "fp32" else f".{args.precision}"
    trace_path = Path(args.trace) if args.trace else export_dir / f"{onnx_path.stem}{suffix}.hetpart-trace.json"
    if not args.trace:
        run_hetpart_trace(args.model, args.batch, export_dir, args.runs, trace_path, args.precision, args.set)
    if args.keep_trace:
        Path(args.keep_trace).write_bytes(trace_path.read_bytes())
    events = trace_events(json.loads(trace_path.read_text()))
    het, unmatched = hetpart_trace_times(events, {func: cat for _, func, cat, _ in kernels}, rules)
    seen = {r.name for r in het}
    missing = sorted({func for _, func, _, _ in kernels} - seen)
    forward = forward_time(events)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    peer = [] if args.no_torch else profile_torch(args.model, args.batch, args.runs, args.precision)[0]
    model_title = args.model if args.precision == "fp32" else f"{args.model} {args.precision}"
    title = f"{model_title} batch {args.batch}: CUDA kernel time per forward"
    text = category_table(het, peer, title)
    if forward is not None:
        text += "\n\n" + forward_table(forward, meta.get(corpus._peer_key(args.precision)),
                                        f"{model_title} batch {args.batch}: where hetpart's forward goes")
    text += "\n\n" + top_table(het, args.top, f"{model_title}: hetpart's top kernels")
    if peer:
        text += "\n\n" + top_table(peer, args.top, f"{model_title}: PyTorch's top kernels")
    if missing:
        text += f"\n\nno CUDA kernel of these functions ran in the forwards (CPU-placed, or no kernel): " \
                f"{', '.join(missing)}"
    if unmatched:
        text += f"\n\nCUDA kernels no hetpart function owns (category other): {', '.join(unmatched[:10])}"
    if not any(e.cat == GPU_KERNEL for e in events):
        text += ("\n\nwarning: the hetpart trace holds no GPU kernel at all: CUPTI recorded none of the "
                 "session's kernels (replayed from a CUDA graph captured before profiling?); its side is empty")
    print(text)
    if args.md:
        with open(args.md, "a") as fh:
            fh.write(text + "\n\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"hetpart": [asdict(r) for r in het],
                                               "pytorch": [asdict(r) for r in peer], "missing": missing,
                                               "unmatched": unmatched,
                                               "forward": asdict(forward) if forward else None}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
