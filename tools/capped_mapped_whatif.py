"""Issue 19 offline, zoo moe: what would "mapped" expert tables (left in pinned host memory, read
by the CUDA kernel through their mapped device pointer, each row read crossing PCIe once) buy
hetpart's capped plans?  No GPU; a what-if over the cost model, nothing in hetpart changes.

    PYTHONPATH=. python tools/capped_mapped_whatif.py --json bench/results/capped-mapped-whatif.json

At the capped run's caps (1/2, 1/3; ``tools/capped_moe_fused_plans.CAPS``), with the expert
Gather fused (:data:`hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER`, on by default), the
recorded profile and the CPU's cold weight reads at ``--cpu-gbps``:

* ``plan``: hetpart's plan and the two memory rules' as ``hetpart.bench.capped`` makes them, and
  the issue's limit (``capped.limit_s`` at ``--h2d-gbps``);
* ``mapped (chain)``: hetpart's search given a fourth choice for each expert-table kernel,
  ``mapped``: on CUDA, its table outside the cap, a call priced ``max(its CUDA cost, launch +
  rows read / --mapped-gbps)`` (:func:`mapped_seconds`), as the latency objective prices any
  kernel: one after another on the chain.  A first-improvement search over the expert-table
  kernels' choices (cpu / cuda resident / mapped; the cap held with mapped tables left out,
  :func:`fits`) from hetpart's placement and from "all on CUDA, the tables that fit resident
  (first ones first), the rest mapped" (:func:`all_gpu_seed`);
* ``hetpart, MAPPED_WEIGHTS on``: hetpart's own planner with the mapped choice
  (:data:`hetpart.partitioner.streaming.MAPPED_WEIGHTS`), priced by ``CostModel.mapped_cost``
  (the rows at the profile's pinned host-to-device fit) with mapped reads and weight copies
  taking the link in turns;
* ``split (concurrent)``: hetpart's placement with each CPU expert-table kernel's rows shared
  between the CPU and a mapped CUDA kernel running at the same time, each taking the share
  that makes them end together: the kernel priced ``rows / (cpu + mapped) + --join-us`` (the
  launch and the wait for the GPU's share).  It needs a kernel split by columns across the two
  devices, which hetpart does not have: an upper bound on what concurrency could buy here.

Out: one line per row, and ``--json``.  Results: bench/results/capped-mapped-weights.md.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time

from tool_output import save_json

SEARCH_BUDGET = 400


def mapped_seconds(kern, costs, mapped_bps: float) -> float:
    """A call of ``kern`` with its weights read over PCIe through a mapped pointer: its CUDA
    cost, or one launch plus the bytes it reads (a gather only its rows) at ``mapped_bps``,
    whichever is more."""
    from hetpart.costmodel.kernel_shape import weight_bytes_read
    from hetpart.costmodel.profile_db import KernelFeatures

    launch = costs._overheads("cuda").launch_s
    return max(costs.kernel_cost(kern, "cuda"), launch + weight_bytes_read(KernelFeatures.of(kern)) / mapped_bps)


def priced(problem, placement: dict, mapped_s: dict):
    """``(sequential seconds, GPU bytes with mapped tables left out, evaluation)`` of
    ``placement`` (kernel -> ``cpu`` / ``cuda`` / ``stream`` / ``mapped``): mapped kernels
    evaluated as CUDA kernels at their :func:`mapped_seconds`."""
    from hetpart.partitioner.evaluate import evaluate

    mapped = [k for k, d in placement.items() if d == "mapped"]
    if mapped:
        seconds = dict(problem.seconds)
        for k in mapped:
            seconds[k] = {**seconds[k], "cuda": mapped_s[k]}
        problem = dataclasses.replace(problem, seconds=seconds)
    a = {k: "cuda" if d == "mapped" else d for k, d in placement.items()}
    e = evaluate(problem, a)
    kernels = problem.graph.kernels
    return e.sequential_s, e.memory.total - sum(kernels[k].param_bytes for k in mapped), e


def fits(problem, total: int) -> bool:
    return problem.gpu_memory is None or total <= problem.gpu_memory


def all_gpu_seed(problem, experts: list[str]) -> dict:
    """Every kernel CUDA (where allowed), the expert tables resident in order while they fit,
    the rest mapped."""
    from hetpart.partitioner.gpu_memory import gpu_memory

    a = {k: "cuda" if "cuda" in problem.allowed[k] else problem.allowed[k][0] for k in problem.order}
    base = gpu_memory(problem, a, streamed=frozenset(experts)).total
    room = (problem.gpu_memory or 0) - base
    kernels = problem.graph.kernels
    for k in experts:
        if kernels[k].param_bytes <= room:
            room -= kernels[k].param_bytes
        else:
            a[k] = "mapped"
    return a


def search(problem, start: dict, experts: list[str], mapped_s: dict) -> tuple[dict, float]:
    """First-improvement search over the expert-table kernels' choices from ``start``
    (a fitting placement): the best fitting placement found and its seconds."""
    best = dict(start)
    best_s, total, _ = priced(problem, best, mapped_s)
    assert fits(problem, total), "the start must fit"
    spent, improved = 0, True
    while improved and spent < SEARCH_BUDGET:
        improved = False
        for k in experts:
            for there in ("cpu", "cuda", "mapped"):
                if there == best[k] or (there != "cpu" and "cuda" not in problem.allowed[k]):
                    continue
                b = {**best, k: there}
                s, total, _ = priced(problem, b, mapped_s)
                spent += 1
                if fits(problem, total) and s < best_s - 1e-9:
                    best, best_s, improved = b, s, True
                    break
            if improved or spent >= SEARCH_BUDGET:
                break
    return best, best_s


def split_seconds(kern, costs, cpu_bps: float, mapped_bps: float, join_s: float) -> float:
    """A CPU expert kernel whose rows a mapped CUDA kernel shares, both ending together."""
    from hetpart.costmodel.kernel_shape import weight_bytes_read
    from hetpart.costmodel.profile_db import KernelFeatures

    shared = weight_bytes_read(KernelFeatures.of(kern)) / (cpu_bps + mapped_bps) + join_s
    return min(costs.kernel_cost(kern, "cpu"), shared)


def counts(placement: dict, experts: list[str]) -> str:
    c = collections.Counter(placement[k] for k in experts)
    return " / ".join(f"{c.get(d, 0)} {d}" for d in ("cpu", "cuda", "stream", "mapped"))


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(__file__))
    from capped_moe_fused_plans import CAPS, expert_kernels, expert_table_bytes, plan_parser

    from hetpart.bench import capped
    from hetpart.costmodel import CostModel, Profile
    from hetpart.partitioner.plan_report import placement_of
    from hetpart.partitioner.problem import build_problem

    p = plan_parser(__doc__)
    p.add_argument("--mapped-gbps", type=float, default=55.5, help="a mapped kernel's reads over PCIe")
    p.add_argument("--join-us", type=float, default=15.0, help="split: the GPU share's launch and wait")
    args = p.parse_args(argv)

    t0 = time.time()
    prep = capped.prepare(capped.workload(args.workload, None))
    g = prep.graph
    cpu_bps, mapped_bps = args.cpu_gbps * 1e9, args.mapped_gbps * 1e9
    costs = CostModel(Profile.load(args.profile), graph=g).with_weight_bandwidth({"cpu": cpu_bps})
    experts = expert_kernels(g)
    mapped_s = {k: mapped_seconds(g.kernels[k], costs, mapped_bps) for k in experts}
    k0 = g.kernels[experts[0]]
    per = dict(kernel=experts[0], table_MB=expert_table_bytes(g) / 1e6,
               cpu_ms=costs.kernel_cost(k0, "cpu") * 1e3, cuda_resident_ms=costs.kernel_cost(k0, "cuda") * 1e3,
               mapped_ms=mapped_s[experts[0]] * 1e3,
               split_ms=split_seconds(k0, costs, cpu_bps, mapped_bps, args.join_us * 1e-6) * 1e3)
    print(f"{args.workload}: {len(g.kernels)} kernels, {len(experts)} expert-table kernels, imported in "
          f"{time.time() - t0:.0f} s; one expert kernel: {json.dumps(per)}", flush=True)
    out = [dict(row="per kernel", **per)]
    bw = capped.Bandwidths(args.h2d_gbps * 1e9, cpu_bps)
    compute, share = capped.gpu_compute_s(g, costs), capped.read_share(g)
    for cap_text in args.caps.split(","):
        cap = CAPS.get(cap_text) or capped.parse_cap(cap_text, prep.weight_bytes)
        limit = capped.limit_s(compute, prep.weight_bytes, cap, bw, read_share=share)
        rows = [dict(row="limit", cap=cap_text, ms=limit * 1e3)]
        problem = build_problem(g, costs, (), cap, True, state=capped.graph_state_pairs(g))
        for name in [c for c in args.contenders.split(",") if c]:
            plan = capped._plan_contender(name, prep, costs, cap)
            placement = placement_of(plan)
            s, total, _ = priced(problem, placement, mapped_s)
            rows.append(dict(row=name, cap=cap_text, ms=plan.predicted["latency_s"] * 1e3, repriced_ms=s * 1e3,
                             experts=counts(placement, experts), gpu_MB=total / 1e6))
            if name != "hetpart":
                continue
            t1 = time.time()
            from hetpart.bench.switches import switched
            from hetpart.partitioner.choice import MAPPED

            with switched(["hetpart.partitioner.streaming.MAPPED_WEIGHTS=1"]):
                on = capped._plan_contender(name, prep, costs, cap)
            placed = placement_of(on)
            rows.append(dict(row="hetpart, MAPPED_WEIGHTS on", cap=cap_text, ms=on.predicted["latency_s"] * 1e3,
                             experts=counts(placed, experts), mapped_kernels=sum(d == MAPPED for d in placed.values()),
                             gpu_MB=on.predicted["gpu_memory"]["total"] / 1e6, plan_s=round(time.time() - t1, 1)))
            ends = []
            starts = (("from hetpart's plan", placement), ("from all-GPU + mapped", all_gpu_seed(problem, experts)))
            for label, start in starts:
                s0, total0, _ = priced(problem, start, mapped_s)
                best, best_s = search(problem, start, experts, mapped_s)
                _, total, e = priced(problem, best, mapped_s)
                ends.append(best_s)
                rows.append(dict(row=f"mapped (chain) {label}", cap=cap_text, start_ms=s0 * 1e3,
                                 start_experts=counts(start, experts), ms=best_s * 1e3, experts=counts(best, experts),
                                 gpu_MB=total / 1e6, partitions=len(e.layout.groups)))
            split = dict(problem.seconds)
            on_cpu = [k for k in experts if placement[k] == "cpu"]
            for k in on_cpu:
                split[k] = {**split[k], "cpu": split_seconds(g.kernels[k], costs, cpu_bps, mapped_bps,
                                                             args.join_us * 1e-6)}
            s_split, total, _ = priced(dataclasses.replace(problem, seconds=split), placement, mapped_s)
            rows.append(dict(row="split (concurrent) on hetpart's plan", cap=cap_text, ms=s_split * 1e3,
                             split_kernels=len(on_cpu), gpu_MB=total / 1e6, search_s=round(time.time() - t1, 1)))
        for r in rows:
            print(json.dumps(r), flush=True)
        out += rows
    save_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
