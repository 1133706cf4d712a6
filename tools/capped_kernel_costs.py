"""A zoo model's CPU kernels: predicted, timed alone, and timed inside the model.

    PYTHONPATH=. python tools/capped_kernel_costs.py zoo:llama_decode:layers=2 [--threads 2] [--min-mb 1]
        [--profile hetpart/costmodel/recorded/h200.json] [--weight-bandwidth-gbs 44]

In: a zoo spec (or an ONNX file).  Out, per distinct CPU kernel that moves at least
``--min-mb`` MB: its bytes and weight bytes; the cost model's price from ``--profile``
(default: the recorded H200 profile, whose host is another CPU: a prediction for that
machine, not this one), with ``--weight-bandwidth-gbs`` also the cold-weight floor
(:meth:`hetpart.costmodel.CostModel.with_weight_bandwidth`) at this machine's rate;
the kernel timed alone by the cost model's own microbenchmark
(:func:`hetpart.costmodel.kernel_bench.measure`: weights hot in cache between
repeats) and its median inside one all-CPU run of the whole model
(:mod:`hetpart.bench.kernel_table`: weights cold); then the sums over every kernel
call.  What bench/results/capped-predictions.md section 2(b) was measured with.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECORDED = ROOT / "hetpart" / "costmodel" / "recorded" / "h200.json"


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import tvm

    from hetpart import importer, models
    from hetpart.bench.kernel_table import _hetpart_calls
    from hetpart.costmodel import CostModel, Profile, kernel_bench
    from hetpart.costmodel.kernel_bench import MeasureSettings
    from hetpart.importer.onnx_source import read_source
    from hetpart.targets import cpu_tvm_target

    model = read_source(args.model).model
    feeds = models.example_inputs(model, seed=0)
    graph = importer.load(model)
    costs = CostModel(Profile.load(args.profile), graph=graph, weight_bandwidth={})  # as timed, hot
    cold = costs.with_weight_bandwidth({"cpu": args.weight_bandwidth_gbs * 1e9}) if args.weight_bandwidth_gbs else None
    calls, builtin_us, _ = _hetpart_calls(model, feeds, args.threads, args.runs)
    in_model = collections.defaultdict(list)  # kernel function -> medians of its calls
    for name, us in calls:
        in_model[name.split(" #")[0].removesuffix("_prepacked")].append(us)
    count = collections.Counter(k.signature for k in graph.nodes)
    alone_total = floor_total = 0.0
    print(f"{'kernel':<44}{'MB':>8}{'w MB':>8}{'pred us':>10}{'floor us':>10}{'alone us':>10}{'model us':>10}")
    seen = set()
    for k in graph.nodes:
        if k.signature in seen:
            continue
        seen.add(k.signature)
        kmod = kernel_bench.single_kernel_module(graph, k)
        exe = kernel_bench.build_module(kmod.mod, cpu_tvm_target())
        alone = kernel_bench.measure(kmod, exe, tvm.cpu(), MeasureSettings.quick()).median_s * 1e6
        floor = cold.weight_floor(k, "cpu") * 1e6 if cold is not None else 0.0
        alone_total += count[k.signature] * alone
        floor_total += count[k.signature] * max(alone, floor)
        mb = (k.bytes_read + k.bytes_written) / 1e6
        if mb < args.min_mb:
            continue
        here = in_model.get(k.func)
        print(f"{k.func[:43]:<44}{mb:8.1f}{k.param_bytes / 1e6:8.1f}{costs.kernel_cost(k, 'cpu') * 1e6:10.1f}"
              f"{floor:10.1f}{alone:10.1f}{(np.median(here) if here else float('nan')):10.1f}")
    print(f"sum over calls: alone {alone_total / 1e3:.2f} ms, alone with the floor {floor_total / 1e3:.2f} ms, "
          f"in the model {sum(t for _, t in calls) / 1e3:.2f} ms (+ {builtin_us / 1e3:.2f} ms VM instructions)")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="zoo:NAME[...] or an .onnx file")
    p.add_argument("--threads", type=int, default=2, help="the in-model run's thread pool")
    p.add_argument("--runs", type=int, default=10, help="in-model runs (medians)")
    p.add_argument("--min-mb", type=float, default=1.0, help="list kernels moving at least this many MB")
    p.add_argument("--profile", default=str(RECORDED), help="profile the predictions come from")
    p.add_argument("--weight-bandwidth-gbs", type=float, default=0.0,
                   help="this machine's memory read rate (GB/s) for the cold-weight floor (0: none)")
    return p


if __name__ == "__main__":
    sys.exit(main())
