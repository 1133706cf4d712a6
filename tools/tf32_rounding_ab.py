"""A/B of the TF32 rounding (``cvt.rna``) in hetpart's tensor-core kernels, on the GPU.

    PYTHONPATH=. python tools/tf32_rounding_ab.py zoo:resnet50 --batch 32 [--top 15]
    PYTHONPATH=. python tools/tf32_rounding_ab.py model.onnx

The tensor-core rule rounds every operand element it loads into a fragment to the
nearest TF32 value (:func:`hetpart.kernels.tf32.round_to_tf32`, one
``cvt.rna.tf32.f32`` each: 2 per ``mma.sync.m16n8k8`` per thread in a 64x64 tile's
PTX).  Whether that costs time is measured here: every kernel of the model that the
``GpuTensorCoreGemm`` rule schedules is built and timed twice by the cost model's
microbenchmark, once as hetpart builds it and once with the rounding taken out (the
operands truncated by the tensor core, as before hetpart rounded them: *not* a
correct build, a timing probe only).  Each variant runs in a subprocess of its own,
since the tensor intrinsics are registered once per process.

Prints per kernel: GFLOP, us rounded, us truncated, the ratio, and the total.
Without a GPU, ``--source-only`` reports whether each variant's CUDA C rounds (what
the unit test checks).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_static_kernels import cuda_source  # noqa: E402

RULE = "GpuTensorCoreGemm"


def _load_model(spec: str, batch: int):
    if spec.startswith("zoo:"):
        from hetpart.models import build

        name, _, small = spec[4:].partition(":")
        return build(name, small=small == "small", batch=batch)
    import onnx

    return onnx.load(spec)


def worker(spec: str, batch: int, mode: str, arch: str, source_only: bool, max_kernels: int = 0) -> dict:
    """``{func: {"flops", "count", "seconds" | None, "rounds"}}`` for the model's
    tensor-core kernels (the ``max_kernels`` with the most flops, 0: all) built in
    ``mode`` (``round``: as hetpart builds them; ``truncate``: the rounding taken out)."""
    from hetpart.kernels import tf32

    if mode == "truncate":
        tf32.round_to_tf32 = lambda x: x  # before the intrinsics are registered (first build)
    import tvm

    from hetpart import kernels, load
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels.analysis import RULE_ATTR
    from hetpart.kernels.options import resolve
    from hetpart.targets import cuda_tvm_target

    target, options = cuda_tvm_target(arch), resolve(cuda_arch=arch)
    graph = load(_load_model(spec, batch))
    scheduled = kernels.schedule(graph.module, target, options)
    funcs = {gv.name_hint: f for gv, f in scheduled.functions_items()}
    picked, seen = [], set()
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        func = funcs.get(k.func)
        if func is None or func.attrs is None or str(func.attrs.get(RULE_ATTR, "")) != RULE or k.signature in seen:
            continue
        seen.add(k.signature)
        picked.append(k)
    picked.sort(key=lambda k: -k.flops)
    out = {}
    for k in picked[:max_kernels or None]:
        kmod = kernel_bench.single_kernel_module(graph, k)
        exe = kernel_bench.build_module(kmod.mod, target, options)
        src = cuda_source(exe)
        entry = {"flops": int(k.flops), "count": sum(1 for x in graph.kernels.values() if x.signature == k.signature),
                 "rounds": tf32.ROUND in src or "cvt.rna" in src, "seconds": None}
        if not source_only:
            entry["seconds"] = kernel_bench.measure(kmod, exe, tvm.cuda(0), kernel_bench.MeasureSettings()).median_s
        out[k.func] = entry
    return out


def run_variant(spec: str, batch: int, mode: str, arch: str, source_only: bool, max_kernels: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), spec, "--batch", str(batch), "--arch", arch,
               "--worker", mode, "--out", str(out), "--max-kernels", str(max_kernels)]
        cmd += ["--source-only"] if source_only else []
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def table(rounded: dict, truncated: dict, top: int) -> str:
    rows = []
    for func, r in rounded.items():
        t = truncated.get(func)
        if t is None or r["seconds"] is None or t["seconds"] is None:
            continue
        rows.append((func, r["flops"], r["count"], r["seconds"], t["seconds"]))
    lines = ["| kernel | x | GFLOP | us rounded | us truncated | rounded / truncated | TFLOP/s rounded |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for func, flops, count, rs, ts in sorted(rows, key=lambda r: -r[3] * r[2])[:top]:
        lines.append(f"| {func[:60]} | {count} | {flops / 1e9:.2f} | {rs * 1e6:.1f} | {ts * 1e6:.1f} | "
                     f"{rs / ts:.2f} | {flops / rs / 1e12:.1f} |")
    tr = sum(r[3] * r[2] for r in rows)
    tt = sum(r[4] * r[2] for r in rows)
    if rows:
        lines.append(f"| **total ({len(rows)} kernels)** | | | {tr * 1e6:.1f} | {tt * 1e6:.1f} | {tr / tt:.2f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="zoo:NAME[:small] or an .onnx file")
    ap.add_argument("--batch", type=int, default=1, help="batch of a zoo model")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--max-kernels", type=int, default=0, help="only the N tensor-core kernels with the most flops")
    ap.add_argument("--source-only", action="store_true", help="build only; report whether each variant rounds")
    ap.add_argument("--worker", choices=["round", "truncate"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        Path(args.out).write_text(json.dumps(worker(args.model, args.batch, args.worker, args.arch, args.source_only,
                                                    args.max_kernels)))
        return 0
    rounded = run_variant(args.model, args.batch, "round", args.arch, args.source_only, args.max_kernels)
    truncated = run_variant(args.model, args.batch, "truncate", args.arch, args.source_only, args.max_kernels)
    if args.source_only:
        print(json.dumps({"round": {f: v["rounds"] for f, v in rounded.items()},
                          "truncate": {f: v["rounds"] for f, v in truncated.items()}}))
        return 0
    print(f"### TF32 rounding A/B: {args.model} batch {args.batch} ({len(rounded)} tensor-core kernels)\n")
    print(table(rounded, truncated, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
