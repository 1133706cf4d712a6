"""Issue 19 offline: predicted ms of hetpart's plan and the two memory rules' plans of a
capped workload, from a recorded profile, with the CPU wake cost set to several values.

No GPU is used: the plans are only priced (hetpart.bench.capped's contenders, as
`bench/capped.py` builds them).  The CPU weight-read bandwidth is the one the device run
measured (its results JSON's ``runs[0].bandwidths``), so the numbers are comparable with
that run's ``predicted ms``.

    python tools/wake_predictions.py --profile bench/results/profile-capped-nvidia-h200.json \
        --results bench/results/capped-ticks-nvidia-h200.json --wakes none,0,0.1,0.3,0.5
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from capped_pricing import recorded_run_parser
from tool_output import save_json


def costs_with_wake(profile, wake_ms):
    """A CostModel of ``profile`` whose CPU wake cost is ``wake_ms`` (None: the profile's)."""
    from hetpart.costmodel import CostModel

    if wake_ms is not None:
        profile = replace(profile, overheads={
            d: (replace(oh, wake_s=wake_ms * 1e-3) if d == "cpu" else oh) for d, oh in profile.overheads.items()})
    return CostModel(profile)


def main(argv=None) -> int:
    from hetpart.bench import capped
    from hetpart.costmodel import Profile
    from hetpart.partitioner.plan_report import placement_of

    p = recorded_run_parser(__doc__)
    p.add_argument("--wakes", default="none,0,0.1,0.3,0.5", help="ms; none: the profile's own (absent: 0)")
    p.add_argument("--contenders", default="hetpart,llama.cpp-style rule,ORT-style rule")
    p.add_argument("--cpu-gbps", default="", help="CPU weight-read bandwidths to price with, GB/s, comma list "
                   "(default: the run's measured one)")
    p.add_argument("--fixed", action="store_true", help="also price hetpart's plan of the first wake value "
                   "(its placement, as measured on the device when that value is 0) under every wake value")
    p.add_argument("--json", default=None, help="write the table here too")
    args = p.parse_args(argv)

    runs = json.load(open(args.results))["runs"]
    bw = capped.Bandwidths(**{k: v for k, v in runs[0]["bandwidths"].items()})
    measured = {r["contender"]: r["ms"] for r in json.load(open(args.results))["records"]}
    profile = Profile.load(args.profile)
    t0 = time.time()
    prep = capped.prepare(capped.workload(args.workload, None))
    print(f"imported {args.workload}: {len(prep.graph.kernels)} kernels in {time.time() - t0:.0f} s", flush=True)
    rows, fixed = [], None
    bandwidths = [float(v) * 1e9 for v in args.cpu_gbps.split(",") if v] or [bw.cpu_bytes_per_s]
    for cpu_bw, wake in [(b, w) for b in bandwidths for w in args.wakes.split(",")]:
        wake = None if wake == "none" else float(wake)
        run_bw = replace(bw, cpu_bytes_per_s=cpu_bw)
        costs = capped.cold_weight_costs(costs_with_wake(profile, wake), run_bw, capped.Options())
        costs.add_graph(prep.graph)
        names = args.contenders.split(",") + (["hetpart (fixed placement)"] if args.fixed else [])
        if args.fixed and fixed is not None:  # hetpart planned once, at the first value; priced after that
            names = [n for n in names if n != "hetpart"]
        for name in names:
            t1 = time.time()
            if name == "hetpart (fixed placement)":
                fixed = fixed or next(r["placement"] for r in rows if r["contender"] == "hetpart")
                plan = capped.plan_of_placement(prep, costs, args.cap, fixed)
            else:
                plan = capped._plan_contender(name, prep, costs, args.cap)
            cpu = sum(1 for p in plan.partitions if p.device == "cpu")
            row = {"wake_ms": wake, "contender": name, "predicted_ms": plan.predicted["latency_s"] * 1e3,
                   "partitions": len(plan.partitions), "cpu_partitions": cpu,
                   "cpu_kernels": sum(1 for d in plan.assignment.values() if d == "cpu"),
                   "measured_ms": measured.get(name.split(" (")[0]), "plan_s": time.time() - t1, "cpu_gbps": cpu_bw / 1e9,
                   "cpu_wakes": plan.predicted.get("cpu_wakes"),
                   **{f"{k}_ms": plan.predicted[k] * 1e3 for k in ("compute_s", "transfer_s", "overhead_s", "stream_s")
                      if k in plan.predicted},
                   "cpu_compute_ms": sum(p.compute_s for p in plan.partitions if p.device == "cpu") * 1e3,
                   "cuda_compute_ms": sum(p.compute_s for p in plan.partitions if p.device == "cuda") * 1e3}
            print(json.dumps(row), flush=True)
            row["placement"] = placement_of(plan)
            rows.append(row)
    save_json(args.json, [{k: v for k, v in r.items() if k != "placement"} for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
