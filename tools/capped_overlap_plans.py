"""Issue 19 offline: a capped workload's plans with and without the overlap seeds
(:mod:`hetpart.partitioner.overlap`), beside the chain bound and the memory rules, as
the rows of ``bench/results/capped-decode-overlap.md``.  No GPU.

Rows: the chain bound; the llama.cpp- and ORT-style rules' placements; hetpart with
``OVERLAP_SEEDS`` off and on; and the best ``--seeds`` overlap seeds before any local
search (base placement, ring slots x slot size, unit kind, greedy threshold).  Each with
its predicted latency, partitions (streamed ones), streamed and CPU weight bytes, the
ring, CPU wakes and the copy track's busy time.

    PYTHONPATH=. python tools/capped_overlap_plans.py --workload zoo:llama_decode --cap 1/2 \\
        --profile bench/results/profile-capped-nvidia-h200.json --cpu-gbps 95.5
"""

from __future__ import annotations

import argparse
import time


def row(name: str, problem, placement, extra: str = "") -> str:
    """One markdown row of ``placement`` evaluated on ``problem``."""
    from hetpart.partitioner.evaluate import evaluate
    from hetpart.partitioner.layout import wake_count
    from hetpart.partitioner.problem import STREAM

    e = evaluate(problem, placement)
    kernels = problem.graph.kernels
    p = e.placement
    streamed = sum(kernels[k].param_bytes for k, d in p.items() if d == STREAM)
    cpu = sum(kernels[k].param_bytes for k, d in p.items() if d == "cpu")
    ring = (f"{e.layout.stream_slots} x {e.layout.stream_slot_bytes / 1e6:.0f} MB"
            if e.layout.stream_slots else "–")
    return (f"| {name} | {e.sequential_s * 1e3:.2f} | {len(e.layout.groups)} ({len(e.layout.streamed_groups)}) | "
            f"{streamed / 1e6:.0f} | {cpu / 1e6:.0f} | {ring} | {wake_count([g.device for g in e.layout.groups])} | "
            f"{sum(e.layout.weight_seconds) * 1e3:.2f} | {'' if e.fits else 'OVER THE CAP '}{extra} |")


def main(argv=None) -> int:
    from hetpart.bench import capped
    from hetpart.costmodel import CostModel, Profile
    from hetpart.partitioner import overlap, partition
    from hetpart.partitioner.chain_bound import chain_bound
    from hetpart.partitioner.memory_rules import RULES
    from hetpart.partitioner.plan_report import placement_of
    from hetpart.partitioner.problem import build_problem

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="zoo:llama_decode")
    ap.add_argument("--cap", default="1/2")
    ap.add_argument("--profile", default="bench/results/profile-capped-nvidia-h200.json")
    ap.add_argument("--cpu-gbps", type=float, default=None, help="CPU cold weight-read bandwidth (default: the profile's)")
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args(argv)

    t0 = time.time()
    prep = capped.prepare(capped.workload(args.workload, None))
    cap = capped.parse_cap(args.cap, prep.weight_bytes)
    base = CostModel(Profile.load(args.profile), graph=prep.graph)
    costs = base.with_weight_bandwidth({"cpu": args.cpu_gbps * 1e9}) if args.cpu_gbps else base
    state = capped.graph_state_pairs(prep.graph)
    problem = build_problem(prep.graph, costs, (), cap, True, state=state)
    print(f"{args.workload}: {len(problem.order)} kernels, cap {cap} B, CPU weight reads at "
          f"{args.cpu_gbps or (base.cold_weight_bandwidth('cpu') or 0) / 1e9:.1f} GB/s (imported in {time.time() - t0:.0f} s)\n")
    print("| plan | predicted ms | partitions (streamed) | streamed MB | CPU MB | ring | CPU wakes | copies ms | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| chain bound | {chain_bound(problem).seconds * 1e3:.2f} | | | | | | | a lower bound |")
    rules = {n: rule(problem) for n, rule in RULES.items()}
    for n, a in rules.items():
        print(row(n, problem, a))
    plans = {}
    for on in (False, True):
        overlap.OVERLAP_SEEDS = on
        t0 = time.time()
        plans[on] = partition(prep.graph, "latency", cost_model=costs, gpu_memory=cap, progress=False,
                              stream_weights=True, state=state)
        print(row(f"hetpart, OVERLAP_SEEDS={int(on)}", problem, placement_of(plans[on]),
                  f"planned in {time.time() - t0:.0f} s"), flush=True)
    overlap.OVERLAP_SEEDS = True
    resident = plans[False].assignment
    bases = {"hetpart (off)": resident, **rules}
    names = list(bases)
    ranked = sorted(overlap.scored_seeds(problem, list(bases.values())), key=lambda t: t[2].sequential_s)
    for i, spec, e in ranked[:args.seeds]:
        label = (f"seed: {names[i]}, room for {spec.slots} x {spec.slot / 1e6:.0f} MB, "
                 f"{'runs' if spec.whole else 'kernels'}, theta {spec.theta}")
        print(row(label, problem, e.placement, "before the local search"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
