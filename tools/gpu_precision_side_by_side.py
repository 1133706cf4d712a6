"""A model's CUDA kernels side by side in several builds (precisions, switches) -- no GPU needed.

    PYTHONPATH=. python tools/gpu_precision_side_by_side.py \\
        zoo:bert:layers=1,seq_len=1500,hidden=384,heads=6,intermediate=1536 \\
        --variant tf32 --variant bf16 \\
        --variant bf16:hetpart.importer.low_precision_scores.STORE_SCORES_BF16=1 [--rates h200] [--md OUT.md]

    # the bf16 activation switches by their short names (:data:`SHORTHANDS`), alone and together:
    PYTHONPATH=. python tools/gpu_precision_side_by_side.py zoo:bert:layers=1,seq_len=128 \\
        --variant bf16 --variant bf16:acts --variant bf16:acts,scores

Each ``--variant PRECISION[:MODULE.NAME=VALUE,...]`` is one all-CUDA build for sm_90 as
:func:`hetpart.compiler.compile` makes it in that CUDA format (weights lowered, its kernel
options; :func:`gpu_static_kernels.analyse`), its switches set while it is built (a switch
may be given by its short name, :data:`SHORTHANDS`: ``acts``, ``scores``).  Per
kernel (graph order, one row per distinct kernel of the first variant, ``x`` its
occurrences): the ops fused, then per variant the input / output dtypes, MB read + written
(weights included), the rule and the estimate (``gpu_static_kernels``' ``est.``: rough, it
ranks kernels); and totals over the model.  Kernels are matched by id: every variant
must have the first one's kernels (precisions and these switches keep them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_static_kernels import BRIEF_RATES, DEFAULT_RATES, analyse  # noqa: E402

SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "int64": "i64", "int32": "i32", "bool": "b"}


SHORTHANDS = {
    "scores": "hetpart.importer.low_precision_scores.STORE_SCORES_BF16=1",
    "acts": "hetpart.importer.low_precision_activations.STORE_GEMM_INPUTS_BF16=1",
}
"""Short names of the bf16 activation switches a ``--variant`` may give instead of ``MODULE.NAME=VALUE``."""


def parse_variant(text: str) -> tuple[str, list[str]]:
    precision, _, sets = text.partition(":")
    return precision, [SHORTHANDS.get(s, s) for s in sets.split(",") if s]


def run_variant(model, precision: str, sets: list[str], rates) -> tuple[dict, dict]:
    """``({kernel id: Row}, {kernel id: (input dtypes, output dtypes)})`` of one build."""
    from model_spec import all_cuda_plan

    from hetpart import load
    from hetpart.bench.switches import switched
    from hetpart.compiler.precision import lower_plan_weights
    from hetpart.contracts.precision import Precision

    with switched(sets):
        rows = {r.id: r for r in analyse(model, source=False, rates=rates, precision=precision)}
        graph = load(model)
        graph = lower_plan_weights(graph, all_cuda_plan(graph), Precision(cuda=precision))
    dtypes = {k.id: ("/".join(SHORT.get(graph.tensors[t].dtype, graph.tensors[t].dtype) for t in k.inputs),
                     "/".join(SHORT.get(graph.tensors[t].dtype, graph.tensors[t].dtype) for t in k.outputs))
              for k in graph.kernels.values()}
    return rows, dtypes


def table(title: str, names: list[str], results: list[tuple[dict, dict]]) -> str:
    first = results[0][0]
    head = "| kernel | x | " + " | ".join(f"{n}: in -> out | MB | rule | est. us" for n in names) + " |"
    lines = [f"### {title}", "", head, "|---|--:|" + "---|--:|---|--:|" * len(names)]
    totals = [[0.0, 0.0] for _ in names]
    for kid, r in first.items():
        cells = []
        for i, (rows, dtypes) in enumerate(results):
            row = rows.get(kid)
            if row is None:
                cells.append("- | - | - | -")
                continue
            ins, outs = dtypes[kid]
            totals[i][0] += row.bytes * r.count / 1e6
            totals[i][1] += row.estimate_us * r.count
            cells.append(f"{ins} -> {outs} | {row.bytes / 1e6:.1f} | {row.rule} | {row.estimate_us:.1f}")
        lines.append(f"| {r.func} | {r.count} | " + " | ".join(cells) + " |")
    lines.append("| **total (x count)** | | " + " | ".join(f" | **{mb:.1f}** | | **{us:.0f}**" for mb, us in totals) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="zoo:NAME[:key=value,...] or an .onnx file")
    ap.add_argument("--variant", action="append", required=True, metavar="PRECISION[:MODULE.NAME=VALUE,...]")
    ap.add_argument("--rates", choices=("default", "h200"), default="default")
    ap.add_argument("--md", help="append the table to this markdown file")
    args = ap.parse_args(argv)
    if args.model.startswith("zoo:"):
        from hetpart.models import build, parse_zoo_spec

        name, small, cfg = parse_zoo_spec(args.model)
        model = build(name, small, **{"batch": 1, **cfg})
    else:
        import onnx

        model = onnx.load(args.model)
    rates = BRIEF_RATES if args.rates == "h200" else DEFAULT_RATES
    variants = [parse_variant(v) for v in args.variant]
    results = [run_variant(model, p, s, rates) for p, s in variants]
    names = [p + ("+" + ",".join(s.rsplit(".", 1)[-1] for s in sets) if sets else "") for p, sets in variants]
    text = table(f"{args.model} ({args.rates} rates)", names, results) + "\n"
    print(text)
    if args.md:
        with open(args.md, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
