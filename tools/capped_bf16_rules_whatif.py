"""Issue 19 offline: hetpart's capped plans against the memory rules at the same precision, predicted.

For each workload and cap (1/2, 1/3 of its weight bytes) it plans hetpart (float32, bf16 on the GPU, bf16 on
both devices) and the two memory rules in float32 and at bf16 on both devices (``capped.RULE_OF``), on the
recorded capped profile with the CPU's cold weight reads at 95.5 GB/s, and prints each plan's predicted
latency.  Session 54's numbers: bench/results/capped-moe-fused-plans.md section (3).

    PYTHONPATH=. python tools/capped_bf16_rules_whatif.py zoo:moe
"""
import argparse
import sys

from hetpart.bench import capped
from hetpart.costmodel import CostModel, Profile

NAMES = ("hetpart", "hetpart bf16", "hetpart bf16 cpu-bf16", "llama.cpp-style rule", "ORT-style rule",
         "llama.cpp-style rule bf16", "ORT-style rule bf16")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workloads", nargs="+")
    p.add_argument("--profile", default="bench/results/profile-capped-nvidia-h200.json")
    args = p.parse_args(argv)
    profile = Profile.load(args.profile)
    for wl in args.workloads:
        prep = capped.prepare(capped.workload(wl, None))
        costs = CostModel(profile, graph=prep.graph).with_weight_bandwidth({"cpu": 95.5e9})
        for frac in (2, 3):
            for name in NAMES:
                try:
                    plan = capped._plan_contender(name, prep, costs, prep.weight_bytes // frac)
                    print(f"{wl} 1/{frac} {name:28s} {plan.predicted['latency_s'] * 1e3:7.2f} ms", flush=True)
                except capped.Skip as exc:
                    print(f"{wl} 1/{frac} {name:28s} skipped: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
