"""Capped planning time, and the plans to compare: plan ``--workload`` at each cap of ``--caps``
(``partition(..., gpu_memory=cap, stream_weights=True)``, the latency objective, as
tools/capped_plan_terms.py plans) and print each plan's CPU seconds (``time.process_time``:
steadier than wall time on a shared box) and wall seconds; ``--save`` writes per cap the
placement, the seconds and the whole plan's JSON (less ``profile_origin``), so two checkouts'
plans can be compared exactly (``--compare BEFORE.json AFTER.json``).
Numbers of bench/results/plan-time-2core.md:

    PYTHONPATH=. python tools/plan_time.py --caps 1/2,1/3,1/4 --save /tmp/bert-after.json
    PYTHONPATH=. python tools/plan_time.py --workload zoo:llama_decode:layers=8 --caps 1/2 \\
        --profile bench/results/profile-capped-nvidia-h200.json --save /tmp/llama8-after.json
    python tools/plan_time.py --compare /tmp/bert-before.json /tmp/bert-after.json
"""

from __future__ import annotations

import argparse
import json
import time

from capped_plan_terms import add_workload_options, prepared_costs  # tools/: the same workload and costs


def compare(before: dict, after: dict) -> bool:
    """Print, per cap in both, whether placements (with key order) and plan JSON are identical
    and the CPU seconds; True when every one is."""
    same_all = True
    for cap in [c for c in before if c in after]:
        b, a = before[cap], after[cap]
        same = b["placement"] == a["placement"] and list(b["placement"]) == list(a["placement"])
        plan = b["plan"] == a["plan"]
        same_all &= same and plan
        print(f"{cap}: placement identical {same}, plan JSON identical {plan}, CPU s {b['cpu_s']:.1f} -> "
              f"{a['cpu_s']:.1f} (x{b['cpu_s'] / a['cpu_s']:.2f})")
    return same_all


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_options(ap)
    ap.add_argument("--save", default=None)
    ap.add_argument("--compare", nargs=2, default=None, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        return 0 if compare(*(json.load(open(p)) for p in args.compare)) else 1

    from hetpart.bench import capped
    from hetpart.partitioner import partition
    from hetpart.partitioner.plan_report import placement_of

    prep, costs = prepared_costs(args)
    out = {}
    for cap_text in args.caps.split(","):
        cap = capped.parse_cap(cap_text, prep.weight_bytes)
        t0, w0 = time.process_time(), time.time()
        plan = partition(prep.graph, "latency", cost_model=costs, gpu_memory=cap, progress=False,
                         stream_weights=True, state=capped.graph_state_pairs(prep.graph))
        cpu, wall = time.process_time() - t0, time.time() - w0
        d = plan.to_json()
        d.pop("profile_origin", None)
        out[cap_text] = dict(placement=placement_of(plan), cpu_s=cpu, wall_s=wall, plan=d)
        print(f"{args.workload} {cap_text}: planned in {cpu:.1f} s CPU ({wall:.1f} s wall), predicted "
              f"{plan.predicted['sequential_s'] * 1e3:.3f} ms", flush=True)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
