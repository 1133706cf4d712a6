"""End-to-end A/B of GPU rule switches: a whole model built all-CUDA with the switches as
``--before`` sets them and as the checkout has them, timed on the GPU in alternating rounds.

    PYTHONPATH=. python tools/gpu_model_switch_ab.py zoo:bert:seq_len=197 /tmp/corpus/vit_b_16-b1.onnx \\
        --precision tf32,bf16 --before hetpart.kernels.rules.gpu_tensor_core.DEEP_PIPELINE=0 \\
        --before hetpart.kernels.rules.gpu_tensor_core.WIDEN_IN_FRAGMENTS=0 --each --rounds 5

Per model and CUDA precision (``--precision``: tf32, bf16, fp16, fp32), the variants: ``before``
(every ``--before`` switch set), ``after`` (the checkout), and with ``--each`` one per
``--before`` switch (that one alone set, ``-NAME``: the checkout without it).  Each variant is
compiled all-CUDA by :func:`build` (the switches set only while it compiles: the rules read
them at schedule time), opened as a
:class:`~hetpart.runtime.Session`, and fed the same seeded inputs (:func:`hetpart.runtime.random_feeds`) already on the GPU (TVM
CUDA tensors: ``bench/corpus.py``'s ``hetpart_device_ms`` boundary, outputs back to numpy);
the variants run in turns of ``--repeat`` calls for ``--rounds`` rounds.  Reported: per
variant the least round median (ms) with the rounds' range, its ratio to ``before``, and
the largest difference of its outputs from ``before``'s relative to each output's
magnitude.  A switch of the importer (``hetpart.importer.*``, read when the model is imported)
re-imports the model per variant.  A variant that fails to compile is reported as such, the others still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def variants(before: list[str], each: bool) -> dict[str, list[str]]:
    """``{name: switches}``: ``before`` (all), ``after`` (none), with ``each`` ``-ATTR``
    per switch (that one alone)."""
    out = {"before": list(before), "after": []}
    if each and len(before) > 1:
        for item in before:
            out["-" + item.split("=")[0].rsplit(".", 1)[-1]] = [item]
    return out


def build(graph, precision: str, switches: list[str], cuda_arch: str | None = None):
    """``graph`` compiled all-CUDA in ``precision`` with ``switches`` set while it compiles (the
    rules read them at schedule time): one CUDA partition when CUDA builds every kernel (no
    profile needed), else the latency plan with every kernel CUDA can build pinned there (the
    corpus's all-CUDA build; e.g. the detector's NMS stays on the CPU).  ``cuda_arch``
    cross-compiles (a machine without a GPU; the tests)."""
    import hetpart
    from model_spec import all_cuda_plan

    from hetpart.bench.switches import switched
    from hetpart.kernels.capabilities import unsupported_reason
    from hetpart.kernels.options import KernelOptions, resolve
    from hetpart.partitioner import Pin

    cuda_ok = [k for k, kern in graph.kernels.items() if unsupported_reason(kern, "cuda") is None]
    with switched(switches):
        plan = (all_cuda_plan(graph) if len(cuda_ok) == len(graph.kernels) else
                hetpart.partition(graph, "latency", pins=[Pin(k, "cuda") for k in cuda_ok], progress=False))
        # options made here, with the switches set: KernelOptions.wgmma's default is
        # wgmma_match.WGMMA_GEMM now (DEFAULT, made at import, would not see a switch set)
        cross = ({"cuda_arch": cuda_arch, "options": resolve(cuda_arch=cuda_arch)} if cuda_arch
                 else {"options": KernelOptions()})
        return hetpart.compile(plan, graph, simulate=False, progress=False, precision=f"cuda={precision},cpu=fp32",
                               **cross)


IMPORTER_SWITCHES = "hetpart.importer."
"""A switch under this package is read at import (``importer.load``), not at schedule time: a
variant that sets one is built from the model re-imported with it set (``ab``'s ``reload``)."""


def ab(graph, precision: str, sets: dict[str, list[str]], rounds: int, repeat: int, reload=None) -> dict:
    """Each variant of ``sets`` built and timed (module doc): ``{name: {"ms": [...],
    "rel_diff": x}}`` or ``{name: {"error": text}}``.  ``reload`` (a no-argument callable
    returning the graph): where some variant sets an importer switch
    (:data:`IMPORTER_SWITCHES`), every variant is built from ``reload()`` called with its
    switches set."""
    import tvm

    from hetpart.bench.switches import switched
    from hetpart.runtime import Session, random_feeds

    reimport = reload is not None and any(s.startswith(IMPORTER_SWITCHES) for sw in sets.values() for s in sw)
    sessions, result = {}, {}
    for name, switches in sets.items():
        t0 = time.perf_counter()
        try:
            if reimport:
                with switched(switches):
                    variant_graph = reload()
            else:
                variant_graph = graph
            sessions[name] = Session(build(variant_graph, precision, switches))
        except Exception as exc:  # noqa: BLE001 - a variant that does not build is a result
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(f"  built {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    if not sessions:
        return result
    x = random_feeds(next(iter(sessions.values())).compiled.inputs)
    resident = {k: tvm.runtime.tensor(np.ascontiguousarray(v), tvm.cuda(0)) for k, v in x.items()}
    outs = {n: [np.asarray(o) for o in s.run(resident).values()] for n, s in sessions.items()}
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(rounds):
        for n, s in sessions.items():
            s.run(resident)
            calls = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                s.run(resident)
                calls.append((time.perf_counter() - t0) * 1e3)
            times[n].append(float(np.median(calls)))
    ref = outs.get("before")
    for n in sessions:
        rel = (max(float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30)) for a, b in zip(outs[n], ref))
               if ref is not None else float("nan"))
        result[n] = {"ms": times[n], "rel_diff": rel}
    for s in sessions.values():
        s.close()
    return result


def table(title: str, result: dict) -> str:
    lines = [f"### {title}", "", "| variant | ms (least round median) | rounds' range | / before | rel. diff to before |",
             "|---|--:|--:|--:|--:|"]
    base = min(result["before"]["ms"]) if "ms" in result.get("before", {}) else None
    for n, r in result.items():
        if "error" in r:
            lines.append(f"| {n} | error: {r['error']} | | | |")
            continue
        least = min(r["ms"])
        ratio = f"{least / base:.3f}" if base else "-"
        lines.append(f"| {n} | {least:.3f} | {min(r['ms']):.3f}-{max(r['ms']):.3f} | {ratio} | {r['rel_diff']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from model_spec import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="zoo:NAME[:key=value,...] or .onnx files")
    ap.add_argument("--batch", type=int, default=1, help="batch of the zoo models (default 1)")
    ap.add_argument("--precision", default="tf32", help="comma list of CUDA formats (tf32, bf16, fp16, fp32)")
    ap.add_argument("--before", action="append", required=True, help="module.ATTR=value (repeatable)")
    ap.add_argument("--after", action="append", default=[],
                    help="module.ATTR=value (repeatable): set on the 'after' side too, i.e. the checkout with "
                         "these applied (a switch that is off by default A/B'd as on); --before overrides it")
    ap.add_argument("--each", action="store_true", help="also a variant per --before switch alone")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=30, help="calls per round (their median is the round's)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    from hetpart.targets import cuda_available

    if not cuda_available():
        ap.error("needs a CUDA GPU")
    sets = variants(args.before, args.each)
    from hetpart.bench.switches import switched

    with switched(args.after):  # "the checkout" below is the checkout with --after set
        results = {}
        for spec in args.models:
            graph = load_model(spec, args.batch)
            for prec in args.precision.split(","):
                key = f"{spec} {prec}"
                print(f"{key}:", flush=True)
                results[key] = ab(graph, prec, sets, args.rounds, args.repeat,
                                  reload=lambda spec=spec: load_model(spec, args.batch))
                print(table(f"{spec} batch {args.batch} {prec}", results[key]) + "\n", flush=True)
                if args.out:
                    Path(args.out).write_text(json.dumps({"before": args.before, "after": args.after, "results": results},
                                                               indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
