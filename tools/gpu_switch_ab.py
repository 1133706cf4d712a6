"""Per-kernel A/B of a GPU rule switch: only the kernels whose sm_90 schedule it changes,
each built alone before and after and timed on the GPU in turns, in one process.

For every model, the distinct kernels whose scheduled TIR (all-CUDA, sm_90, the default
:class:`~hetpart.kernels.options.KernelOptions`) differs with ``--before`` applied
(:func:`changed_kernels`; ``module.ATTR=value`` as ``tools/cpu_rule_ab.py`` takes them)
are built alone -- the cost model's single-kernel module
(:func:`hetpart.costmodel.kernel_bench.single_kernel_module`), weights packed as the
build packs them -- with the switch as ``--before`` sets it and as the checkout has it,
fed the same seeded inputs, and timed in ``--rounds`` alternating rounds
(:func:`hetpart.costmodel.kernel_bench.time_executable`: median of repeats of at least
10 ms).  Reported per kernel: its occurrences in the model, GFLOP, the least round
median before and after (us) with the rounds' range, after/before, TFLOP/s after, and
the largest difference between the two outputs relative to their magnitude (TF32
rounding of a different order of K: ~1e-4; 0: the same code); a last line sums the
changed kernels, each times its occurrences.

    PYTHONPATH=. python tools/gpu_switch_ab.py zoo:resnet50 --batch 32 \\
        --before hetpart.kernels.rules.gpu_tensor_core.REGISTER_PREFETCH=0 --rounds 3 --out ab.json
    PYTHONPATH=. python tools/gpu_switch_ab.py zoo:resnet50 --batch 32 --before ... --list   # no GPU
    PYTHONPATH=. python tools/gpu_switch_ab.py zoo:resnet50 --batch 1 --before ... --whole --rounds 5

``--whole`` (:func:`ab_whole`): the whole model instead, every kernel on the GPU, compiled
twice (``tools/gpu_model_switch_ab.py``'s build: the switch as ``--before`` sets it / as the checkout has it),
each opened as a :class:`hetpart.Session` and fed the same seeded inputs already on the
GPU (the corpus's GPU-in boundary: ``bench/corpus.py``'s ``hetpart_device_ms``, outputs
back to numpy), timed in ``--rounds`` alternating rounds of ``--calls`` calls (median ms
per round); reported: each side's least round median and range, after/before, and the
largest difference between the outputs relative to their magnitude.

Models: ``zoo:NAME[:small][:key=value,...]`` or ONNX files (``--batch`` sets the zoo batch).
``--precision bf16`` (or fp16, fp32; default tf32): the model built as ``hetpart.compile``
builds it in that CUDA format (weights lowered to its storage on every kernel, its kernel
options).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tool_output import append_md  # noqa: E402

ARCH = "sm_90"


@dataclass(frozen=True)
class Row:
    """One changed kernel: us per call (least round median) before/after, each round's."""

    func: str
    count: int
    gflop: float
    before_us: list
    after_us: list
    rel_diff: float

    @property
    def speedup(self) -> float:
        return min(self.before_us) / min(self.after_us)


def options(precision: str = "tf32"):
    """The build's kernel options for the CUDA ``precision`` (tf32, fp32, bf16, fp16)."""
    from hetpart.compiler.precision import options_for
    from hetpart.contracts.precision import Precision
    from hetpart.kernels.options import resolve

    return options_for(resolve(cuda_arch=ARCH), Precision(cuda=precision))


def lowered(graph, precision: str = "tf32"):
    """``graph`` with its weights in ``precision``'s storage on every kernel, as
    :func:`hetpart.compiler.compile` builds an all-CUDA plan (tf32/fp32: unchanged)."""
    from model_spec import all_cuda_plan

    from hetpart.compiler.precision import lower_plan_weights
    from hetpart.contracts.precision import Precision

    return lower_plan_weights(graph, all_cuda_plan(graph), Precision(cuda=precision))


def changed_kernels(graph, before: list[str], precision: str = "tf32") -> list:
    """The distinct kernels of ``graph`` (one per signature, graph order; already
    :func:`lowered`) whose scheduled TIR differs with ``before`` applied."""
    from rule_switch_tir_diff import scripts_both_ways

    from hetpart.targets import cuda_tvm_target

    after, old = scripts_both_ways(graph.module, cuda_tvm_target(ARCH), before, options(precision))
    out, seen = [], set()
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        if k.signature in seen or k.func not in after or after[k.func] == old.get(k.func):
            continue
        seen.add(k.signature)
        out.append(k)
    return out


def _build(kmod, before: list[str] | None, precision: str = "tf32"):
    from hetpart.bench.switches import switched

    from hetpart.costmodel import kernel_bench
    from hetpart.targets import cuda_tvm_target

    with switched(before or []):
        return kernel_bench.build_module(kmod.mod, cuda_tvm_target(ARCH), options(precision))


def _output(exe, inputs, dev) -> np.ndarray:
    from tvm import relax

    out = relax.VirtualMachine(exe, dev)["main"](*inputs)
    return out.numpy() if hasattr(out, "numpy") else out[0].numpy()


def ab(graph, before: list[str], rounds: int, precision: str = "tf32") -> list[Row]:
    """Each changed kernel of ``graph`` (already :func:`lowered` to ``precision``) timed
    before/after (module doc)."""
    import tvm

    from hetpart.costmodel import kernel_bench

    dev = tvm.cuda(0)
    settings = kernel_bench.MeasureSettings()
    rows = []
    for k in changed_kernels(graph, before, precision):
        kmod = kernel_bench.single_kernel_module(graph, k)
        exes = {"before": _build(kmod, before, precision), "after": _build(kmod, None, precision)}
        inputs = {name: kernel_bench.prepared_inputs(kmod, exe, dev, seed=0) for name, exe in exes.items()}
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            for name, exe in exes.items():
                times[name].append(kernel_bench.time_executable(exe, inputs[name], dev, settings).median_s * 1e6)
        b, a = (_output(exes[n], inputs[n], dev) for n in ("before", "after"))
        rel = float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
        count = sum(1 for x in graph.kernels.values() if x.signature == k.signature)
        row = Row(k.func, count, k.flops / 1e9, times["before"], times["after"], rel)
        rows.append(row)
        print(f"  {k.func} x{count}: before {min(row.before_us):.1f} us, after {min(row.after_us):.1f} us "
              f"({row.speedup:.2f}x), rel diff {rel:.1e}", flush=True)
    return rows


def ab_whole(graph, before: list[str], rounds: int, calls: int, precision: str = "tf32") -> dict:
    """The whole model before/after (module doc, ``--whole``): ``{"before_ms": [...],
    "after_ms": [...], "rel_diff": float}``, one median per round -- ``gpu_model_switch_ab``'s
    build and timing loop with its two plain variants."""
    import gpu_model_switch_ab as mab

    result = mab.ab(graph, precision, mab.variants(before, each=False), rounds, calls)
    failed = {n: r["error"] for n, r in result.items() if "error" in r}
    if failed:
        raise SystemExit(f"--whole: a variant did not build: {failed}")
    return {"before_ms": result["before"]["ms"], "after_ms": result["after"]["ms"],
            "rel_diff": result["after"]["rel_diff"]}


def whole_table(title: str, result: dict) -> str:
    """Markdown: the whole model before/after (least round median ms, range), after/before."""
    b, a = result["before_ms"], result["after_ms"]
    return "\n".join([f"### {title} (whole model, all on the GPU, GPU-in)", "",
                      "| before ms | after ms | after/before | rel. diff |", "|--:|--:|--:|--:|",
                      f"| {min(b):.3f} ({min(b):.3f}-{max(b):.3f}) | {min(a):.3f} ({min(a):.3f}-{max(a):.3f}) "
                      f"| {min(a) / min(b):.2f} | {result['rel_diff']:.1e} |"])


def table(title: str, rows: list[Row]) -> str:
    """Markdown: per changed kernel before/after (least round median, us; range), the total x count."""
    head = "| kernel | x | GFLOP | before us | after us | before/after | TFLOP/s after | rel. diff |"
    lines = [f"### {title}", "", head,
             "|---|--:|--:|--:|--:|--:|--:|--:|"]

    def rng(v):
        return f"{min(v):.1f} ({min(v):.1f}-{max(v):.1f})"

    for r in rows:
        lines.append(f"| {r.func[:60]} | {r.count} | {r.gflop:.2f} | {rng(r.before_us)} | {rng(r.after_us)} "
                     f"| {r.speedup:.2f} | {r.gflop / min(r.after_us) * 1e3:.0f} | {r.rel_diff:.1e} |")
    if rows:
        tb = sum(min(r.before_us) * r.count for r in rows)
        ta = sum(min(r.after_us) * r.count for r in rows)
        lines.append(f"| **total x count** | {sum(r.count for r in rows)} | | {tb:.1f} | {ta:.1f} "
                     f"| {tb / ta:.2f} | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from model_spec import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="zoo:NAME[:small][:key=value,...] or .onnx files")
    ap.add_argument("--batch", type=int, default=1, help="batch of the zoo models (default 1)")
    ap.add_argument("--before", action="append", required=True, help="module.ATTR=value (repeatable)")
    ap.add_argument("--after", action="append", default=[],
                    help="module.ATTR=value (repeatable): set on the 'after' side too, i.e. the checkout with "
                         "these applied (a switch that is off by default A/B'd as on); --before overrides it")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="tf32", choices=("tf32", "fp32", "bf16", "fp16"),
                    help="CUDA format to build in (weights lowered as hetpart.compile does; default tf32)")
    ap.add_argument("--list", action="store_true", help="only list the changed kernels (no GPU)")
    ap.add_argument("--whole", action="store_true", help="time the whole model all on the GPU, not its kernels")
    ap.add_argument("--calls", type=int, default=50, help="calls per round with --whole")
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--md", help="append the tables to this markdown file")
    args = ap.parse_args(argv)
    if not args.list:
        from hetpart.targets import cuda_available

        if not cuda_available():
            ap.error("timing needs a CUDA GPU (--list does not)")
    from hetpart.bench.switches import switched

    with switched(args.after):  # "the checkout" below is the checkout with --after set
        results, texts = {}, []
        for spec in args.models:
            if args.whole and not args.list:  # built by hetpart.compile in --precision, which lowers the weights itself
                results[spec] = ab_whole(load_model(spec, args.batch), args.before, args.rounds, args.calls,
                                         args.precision)
                texts.append(whole_table(f"{spec} batch {args.batch} {args.precision}: {', '.join(args.before)} "
                                         "(before) vs the checkout", results[spec]))
                print(texts[-1] + "\n", flush=True)
                continue
            graph = lowered(load_model(spec, args.batch), args.precision)
            if args.list:
                for k in changed_kernels(graph, args.before, args.precision):
                    print(f"{spec}\t{k.func}\t{k.flops / 1e9:.2f} GFLOP")
                continue
            rows = ab(graph, args.before, args.rounds, args.precision)
            results[spec] = [asdict(r) for r in rows]
            texts.append(table(f"{spec} batch {args.batch} {args.precision}: {', '.join(args.before)} (before) vs the checkout",
                               rows))
            print(texts[-1] + "\n", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"batch": args.batch, "precision": args.precision, "before": args.before,
                                               "after": args.after, "models": results}, indent=1))
    append_md(args.md, texts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
