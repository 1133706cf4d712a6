"""Per-kernel CUDA time of a corpus model: hetpart's kernels beside PyTorch's, per category.

    PYTHONPATH=. python tools/gpu_kernel_profile.py efficientnet_b0 [--batch 1] [--profile P.json]
        [--export-dir DIR] [--runs 20] [--top 15] [--json OUT.json] [--md OUT.md]

hetpart side: the model's ONNX export (``bench/corpus.py``'s, cached in
``--export-dir``), its kernels timed alone by the cost model's microbenchmark --
``python3 -m hetpart profile MODEL.onnx --device cuda --profile P.json``, run here
unless P.json already holds every kernel of the model -- read back from P.json: each
kernel's median time less the profile's empty-call time (``overheads.cuda.empty_s``,
what the cost model subtracts too), times how often the kernel occurs.  The profile
records what the default options build (TF32 on, split-K).

PyTorch side: the same torchvision/transformers module (``corpus.torch_model``: same
seed) eager on the GPU, TF32 allowed as in the corpus peer, under ``torch.profiler``
with CUDA activity for ``--runs`` forwards after a warm-up; each kernel's duration
(kernels last as long in a CUDA graph) attributed to the module that launched it:
every module's forward runs inside a ``record_function("hp|<class>|<category>")``,
and a kernel's category is read from the chain of those around its launch
(``tools/gpu_kernel_categories.torch_category``).  Averages per forward.

Prints (and with ``--md`` appends) the per-category table -- hetpart us, PyTorch us,
ratio, kernel counts -- then hetpart's top kernels by time with their rule.
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

from gpu_kernel_categories import (CATEGORIES, feeds_se, hetpart_category, torch_category,  # noqa: E402
                                   torch_kernel_category, torch_module_category)

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
def profile_kernel_us(profile: dict, signature: str, device: str = "cuda") -> float | None:
    """Microseconds of one kernel in a ``hetpart-profile`` JSON: its median less the
    device's empty-call time (never negative); None when the profile lacks the kernel
    or it did not run (status other than ``ok``)."""
    rec = profile.get("kernels", {}).get(device, {}).get(signature)
    if rec is None or rec.get("status") != "ok" or not rec.get("timing"):
        return None
    empty = (profile.get("overheads", {}).get(device) or {}).get("empty_s", 0.0)
    return max(rec["timing"]["median_s"] - empty, 0.0) * 1e6


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



def hetpart_times(profile: dict, kernels: list[tuple[str, str, str, int]], device: str = "cuda"
                  ) -> tuple[list[KernelTime], list[str]]:
    """(the kernels the profile times, the functions it lacks)."""
    rows, missing = [], []
    recs = profile.get("kernels", {}).get(device, {})
    for sig, func, cat, count in kernels:
        us = profile_kernel_us(profile, sig, device)
        if us is None:
            missing.append(func)
            continue
        rows.append(KernelTime(func, cat, us, count, recs[sig].get("rule", "")))
    return rows, missing


def run_hetpart_profile(onnx_path: Path, profile_path: Path, jobs: int) -> None:
    cmd = [sys.executable, "-m", "hetpart", "profile", str(onnx_path), "--device", "cuda",
           "--profile", str(profile_path), "--jobs", str(jobs)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


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


def profile_torch(name: str, batch: int, runs: int) -> tuple[list[KernelTime], int]:
    """(PyTorch's kernels per forward, runs) for corpus model ``name`` on the GPU."""
    import torch

    from bench import corpus

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model, feeds = corpus.torch_model(name, batch, attention="sdpa")
    model = model.cuda().eval()
    args = [torch.from_numpy(v).cuda() for v in feeds.values()]
    _label_modules(model, torch)
    with torch.inference_mode():
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


def top_table(rows: list[KernelTime], top: int, title: str) -> str:
    lines = [f"### {title}", "", "| kernel | category | rule | x | us each | us total |", "|---|---|---|--:|--:|--:|"]
    for r in sorted(rows, key=lambda r: -r.total_us)[:top]:
        lines.append(f"| {r.name[:70]} | {r.category} | {r.rule} | {r.count:g} | {r.us:.1f} | {r.total_us:.1f} |")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a corpus model name (bench/corpus.py), e.g. efficientnet_b0")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--profile", default=None, help="hetpart profile JSON (default: EXPORT_DIR/<model>-b<batch>.profile.json)")
    ap.add_argument("--export-dir", default=str(Path.home() / ".cache" / "hetpart" / "corpus"))
    ap.add_argument("--runs", type=int, default=20, help="PyTorch forwards profiled")
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="hetpart profile's build jobs")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-torch", action="store_true", help="hetpart's side only")
    ap.add_argument("--json", help="write both sides' rows as JSON")
    ap.add_argument("--md", help="append the tables to this markdown file")
    args = ap.parse_args(argv)

    from bench import corpus

    from hetpart import load

    export_dir = Path(args.export_dir)
    onnx_path, _, _ = corpus.cached_paths(export_dir, args.model, args.batch)
    if not onnx_path.exists():
        export_dir.mkdir(parents=True, exist_ok=True)
        corpus.export(args.model, args.batch, onnx_path)
    profile_path = Path(args.profile or onnx_path.with_suffix(".profile.json"))
    kernels = hetpart_kernel_list(load(str(onnx_path)))
    profile = json.loads(profile_path.read_text()) if profile_path.exists() else {}
    het, missing = hetpart_times(profile, kernels)
    if missing:
        run_hetpart_profile(onnx_path, profile_path, args.jobs)
        het, missing = hetpart_times(json.loads(profile_path.read_text()), kernels)
    peer = [] if args.no_torch else profile_torch(args.model, args.batch, args.runs)[0]
    title = f"{args.model} batch {args.batch}: CUDA kernel time per forward"
    text = category_table(het, peer, title) + "\n\n" + top_table(het, args.top, f"{args.model}: hetpart's top kernels")
    if peer:
        text += "\n\n" + top_table(peer, args.top, f"{args.model}: PyTorch's top kernels")
    if missing:
        text += f"\n\nnot timed by hetpart's profile (failed or dynamic): {', '.join(missing)}"
    print(text)
    if args.md:
        with open(args.md, "a") as fh:
            fh.write(text + "\n\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"hetpart": [asdict(r) for r in het],
                                               "pytorch": [asdict(r) for r in peer], "missing": missing}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
