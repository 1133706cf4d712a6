"""Which kernels compute differently on CUDA than on the CPU.

Every distinct kernel of MODEL is built alone (the cost model's single-kernel
module, :func:`hetpart.costmodel.kernel_bench.single_kernel_module`) for the CPU and
for CUDA, run on the same seeded inputs, and the outputs compared
(``max|cuda - cpu| / max|cpu|``).  Prints the kernels worst first with the schedule
rule that built each on CUDA: where to look when a whole model disagrees on the GPU.

    python tools/kernel_diff.py zoo:gpt2:small [--simulate] [--top 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _numpy_outputs(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [a for item in out for a in _numpy_outputs(item)]


def rel_err(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Largest ``max|a - b| / max|b|`` over the outputs (inf where NaN appears in one only)."""
    worst = 0.0
    for a, b in zip(got, want):
        a, b = a.astype(np.float64), b.astype(np.float64)
        if (np.isnan(a) != np.isnan(b)).any():
            return float("inf")
        scale = float(np.nanmax(np.abs(b))) if b.size else 0.0
        diff = float(np.nanmax(np.abs(a - b))) if b.size else 0.0
        worst = max(worst, diff / scale if scale else diff)
    return worst


def run_alone(kmod, device: str, simulate: bool, options):
    """(outputs, rule) of ``kmod`` built for and run on ``device``."""
    from tvm import relax

    from hetpart import targets
    from hetpart.costmodel import kernel_bench
    from hetpart.costmodel.schedule_rule import module_rule

    spec = targets.resolve(device, simulate=simulate)
    exe = kernel_bench.build_module(kmod.mod, spec.tvm_target, options)
    dev = spec.device()
    inputs = kernel_bench.prepared_inputs(kmod, exe, dev, seed=0)
    out = relax.VirtualMachine(exe, dev)["main"](*inputs)
    return _numpy_outputs(out), module_rule(kmod.mod, spec.tvm_target, options=options)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--simulate", action="store_true", help="the CUDA builds run on the CPU")
    ap.add_argument("--no-tf32", action="store_true")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import hetpart
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels.capabilities import unsupported_reason
    from hetpart.kernels.options import resolve

    options = resolve(tf32=not args.no_tf32)
    graph = hetpart.load(args.model)
    rows, seen = [], set()
    for name, kernel in graph.kernels.items():
        if kernel.signature in seen or unsupported_reason(kernel, "cuda"):
            continue
        seen.add(kernel.signature)
        kmod = kernel_bench.single_kernel_module(graph, kernel)
        try:
            want, _ = run_alone(kmod, "cpu", args.simulate, options)
            got, rule = run_alone(kmod, "cuda", args.simulate, options)
            err = rel_err(got, want)
        except Exception as exc:  # noqa: BLE001 - a kernel that fails is a row, not the end
            rule, err = f"error: {str(exc).strip().splitlines()[-1][:120]}", float("nan")
        rows.append({"kernel": name, "func": kernel.func, "rule": rule, "rel_err": err})
        print(f"{err:10.3e}  {name:24s} {kernel.func:40s} {rule}", flush=True)
    rows.sort(key=lambda r: -1 if np.isnan(r["rel_err"]) else r["rel_err"], reverse=True)
    print(f"\nworst {args.top} of {len(rows)} distinct kernels of {args.model} (CUDA vs CPU):")
    for r in rows[: args.top]:
        print(f"{r['rel_err']:10.3e}  {r['kernel']:24s} {r['func']:40s} {r['rule']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
