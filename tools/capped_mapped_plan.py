"""Issue 19: a capped plan with expert tables mapped, written for ``tools/capped_rules_ab.py --plans``
to build and time beside hetpart's own plan (the mapped price measured end to end).

    python3 tools/capped_mapped_plan.py --workload zoo:moe --cap 1/2 --profile P --plans DIR [--mode all-gpu]
    python3 tools/capped_rules_ab.py --workload zoo:moe --cap 1/2 --profile P --plans DIR \\
        --contenders "hetpart,hetpart before" --before hetpart.partitioner.streaming.MAPPED_WEIGHTS=1 ...

Writes ``DIR/hetpart.plan.json`` (hetpart's plan, as ``capped_rules_ab`` would make it: the same
profile, its CPU weight reads at the profile's ``weight_read_Bps`` or 90 GB/s, the cap) and
``DIR/hetpart_before.plan.json``: the same model with the expert-table kernels
(``tools/capped_moe_fused_plans.expert_kernels``: each one whole ``[E, K, N]`` table) mapped
(``Partition.weights == "mapped"``: read in place from pinned host memory), made by
``plan_for_assignment``:

* ``--mode all-gpu`` (default): every kernel on CUDA where it may run, the tables that fit the cap
  resident (first ones first), the rest mapped (``capped_mapped_whatif.all_gpu_seed``): the most
  mapped reads, the fewest CPU turns;
* ``--mode cpu-tables``: hetpart's placement with its CPU expert tables mapped instead.

``capped_rules_ab`` reads a contender's plan from ``DIR/<slug>.plan.json``; the contender
``hetpart before`` exists once ``--before`` names a switch (which only labels it here: its plan
is read, not made).  Prints both plans' predictions and their mapped tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(__file__))
    from capped_mapped_whatif import all_gpu_seed, counts
    from capped_moe_fused_plans import expert_kernels

    from hetpart.bench import capped
    from hetpart.costmodel import CostModel, Profile
    from hetpart.errors import HetpartError
    from hetpart.partitioner import plan_for_assignment
    from hetpart.partitioner.choice import MAPPED
    from hetpart.partitioner.plan_report import placement_of
    from hetpart.partitioner.problem import build_problem

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="zoo:moe")
    p.add_argument("--cap", default="1/2")
    p.add_argument("--profile", required=True)
    p.add_argument("--plans", required=True, metavar="DIR")
    p.add_argument("--mode", choices=("all-gpu", "cpu-tables"), default="all-gpu")
    args = p.parse_args(argv)
    try:
        t0 = time.time()
        prep = capped.prepare(capped.workload(args.workload, None))
        cap = capped.parse_cap(args.cap, prep.weight_bytes)
        base = CostModel(Profile.load(args.profile), graph=prep.graph)
        costs = base.with_weight_bandwidth({"cpu": base.cold_weight_bandwidth("cpu") or 90e9})
        print(f"imported {args.workload} in {time.time() - t0:.0f} s; cap {cap} B", flush=True)
        plan = capped._plan_contender("hetpart", prep, costs, cap)
        experts = expert_kernels(prep.graph)
        problem = build_problem(prep.graph, costs, (), cap, True, state=capped.graph_state_pairs(prep.graph))
        if args.mode == "all-gpu":
            placement = all_gpu_seed(problem, experts)
        else:
            placement = {k: MAPPED if k in experts and d == "cpu" else d for k, d in placement_of(plan).items()}
        mapped = plan_for_assignment(problem, placement)
    except HetpartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.plans)
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "hetpart.plan.json")
    mapped.save(out / "hetpart_before.plan.json")
    for name, pl in (("hetpart", plan), (f"mapped ({args.mode})", mapped)):
        print(f"{name}: predicted {pl.predicted['latency_s'] * 1e3:.2f} ms, {len(pl.partitions)} partitions, "
              f"expert tables {counts(placement_of(pl), experts)}, "
              f"GPU {pl.predicted['gpu_memory']['total'] / 1e6:.0f} MB of {cap / 1e6:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
