"""ORT-quantised models all-CPU: this tree's int8 path against an older tree's,
and both against ONNX Runtime's int8 CPU run, in one process on the same threads.

    python tools/int8_before_after.py --base /tmp/main-checkout --threads 2 \\
        --onnx gpt2x2=/tmp/int8/gpt2x2.onnx --onnx bertx2=/tmp/int8/bertx2.onnx

"before" is this tree with the older tree's DynamicQuantizeLinear converter
(``hetpart/importer/integer_ops.py``) and VNNI matmul rule
(``hetpart/kernels/rules/cpu_int8_matmul.py``) loaded in their place -- the two modules
issue 18's dynamic-quantisation work changed; everything else is this tree's.  Each float
model is quantised as :mod:`hetpart.bench.int8` does (``--quant``: ``quantize_dynamic`` by
default, or QDQ ``quantize_static``; cached beside it).  Prints, per model: whole-model
``Session.run`` / ORT ``run`` times in rounds that take turns (before, after, ORT; 10
runs each, 50 ms apart, so ORT's spinning pool has stopped) -- min, 25th percentile
and median, a shared machine inflates the median -- each variant's error against ORT's
int8 output, and with ``--kernels`` both variants' per-kernel tables
(:mod:`hetpart.bench.kernel_table`).  Not a timed assert: numbers to read.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load_as(name: str, path: Path):
    """``path`` imported as module ``name`` (a sibling of this tree's module, so its
    relative imports resolve to this tree)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def older(base: Path):
    """This tree's int8 path with ``base``'s converter and VNNI rule, for the block."""
    from hetpart.importer import integer_ops
    from hetpart.kernels.rules import cpu_int8_matmul

    ops = _load_as("hetpart.importer._base_integer_ops", base / "hetpart/importer/integer_ops.py")
    rule = _load_as("hetpart.kernels.rules._base_cpu_int8_matmul", base / "hetpart/kernels/rules/cpu_int8_matmul.py")
    saved = dict(integer_ops.CONVERTERS), cpu_int8_matmul.CpuInt8Matmul.apply
    integer_ops.CONVERTERS["DynamicQuantizeLinear"] = ops.DynamicQuantizeLinear
    cpu_int8_matmul.CpuInt8Matmul.apply = rule.CpuInt8Matmul.apply
    try:
        yield
    finally:
        integer_ops.CONVERTERS.clear()
        integer_ops.CONVERTERS.update(saved[0])
        cpu_int8_matmul.CpuInt8Matmul.apply = saved[1]


def _session(qmodel, threads: int):
    import hetpart
    from hetpart.cpu_cores import pool_size
    from hetpart.partitioner import Pin

    graph = hetpart.load(qmodel)
    plan = hetpart.partition(graph, pins=[Pin(k.id, "cpu") for k in graph.nodes], progress=False)
    compiled = hetpart.compile(plan, graph, progress=False)
    return hetpart.Session(compiled, cpu_threads=None if threads == pool_size() else threads)


def _rounds(runners: dict, rounds: int, per: int = 10) -> dict[str, np.ndarray]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(0.05)
            run()
            for _ in range(per):
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
    return {name: np.array(v) * 1e3 for name, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, type=Path, help="the older tree (a checkout or `git archive` of it)")
    ap.add_argument("--onnx", action="append", required=True, metavar="NAME=PATH", help="a float ONNX model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--quant", default="dynamic", choices=("dynamic", "qdq"), help="ORT's quantisation (as bench/int8.py)")
    ap.add_argument("--kernels", action="store_true", help="also both variants' per-kernel tables")
    args = ap.parse_args(argv)
    import onnx

    from hetpart.bench.int8 import feeds_for, quantize, rel_err
    from hetpart.bench.kernel_table import measure
    from hetpart.bench.peers import ort_session

    for name, path in (item.split("=", 1) for item in args.onnx):
        path = Path(path)
        qpath = path.with_name(f"{path.stem}.{args.quant}.onnx")
        if not qpath.exists():
            quantize(path, args.quant, qpath)
        qmodel = onnx.load(str(qpath))
        feeds = feeds_for(qmodel, seed=100)
        ort = ort_session(qmodel, threads=args.threads)
        want = ort.run(None, feeds)
        with older(args.base):
            before = _session(qmodel, args.threads)
        after = _session(qmodel, args.threads)
        errs = {label: rel_err(list(s.run(feeds).values()), want) for label, s in (("before", before), ("after", after))}
        times = _rounds({"before": lambda: before.run(feeds), "after": lambda: after.run(feeds),
                         "ORT int8": lambda: ort.run(None, feeds)}, args.rounds)
        print(f"{name} ({qpath.name}), {args.threads} threads, {args.rounds} x 10 runs each, ms")
        for label, t in times.items():
            ratio = np.percentile(t, 25) / np.percentile(times["ORT int8"], 25)
            err = f"   rel err vs ORT int8 {errs[label]:.2e}" if label in errs else ""
            print(f"  {label:<9} min {t.min():8.3f}  p25 {np.percentile(t, 25):8.3f}  median {np.median(t):8.3f}"
                  f"   p25/ORT {ratio:5.2f}{err}")
        before.close()
        after.close()
        if args.kernels:
            with older(args.base):
                print("before:", measure(qmodel, feeds, args.threads).render(), sep="\n")
            print("after:", measure(qmodel, feeds, args.threads).render(), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
