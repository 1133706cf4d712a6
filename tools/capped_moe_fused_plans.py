"""Issue 19 offline, zoo moe: what ``hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER``
does to the capped plans.  No GPU.

For the switch off and on (the model imported under it), at the capped run's caps (1/2 and
1/3 of the weights: the caps of bench/results/capped-nvidia-h200.json), with the recorded
profile and the CPU's cold weight reads at ``--cpu-gbps``: hetpart's plan and the two memory
rules' (as ``hetpart.bench.capped`` builds them), each as its prediction, its kernels per
device (``cpu`` / ``cuda`` resident / ``stream``), the MB it streams, its partitions and where
the expert-table kernels go (kernels whose weights are one whole ``[E, K, N]`` expert table:
the takes when off, the fused ``gathered_matmul`` kernels when on), with
``tools/capped_plan_terms.terms`` beside it.  Then, per switch, how the cost model prices one
layer's expert kernels on each device: measured or predicted, the rule, the price and the
weight floor (rows read at the CPU's bandwidth); and the issue's limit
(``capped.limit_s``, ``capped.cpu_compute_limit_s``) at ``--h2d-gbps`` / ``--cpu-gbps``.  ~3 min a switch here.
Results: bench/results/capped-moe-fused-plans.md.

    PYTHONPATH=. python tools/capped_moe_fused_plans.py --json /tmp/moe-fused.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

from tool_output import save_json

SWITCH = "hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER"
CAPS = {"1/2": 1280477904, "1/3": 853651936}  # bench/results/capped-nvidia-h200.json's caps (bytes)
CONTENDERS = ("hetpart", "llama.cpp-style rule", "ORT-style rule")


def plan_parser(doc: str) -> argparse.ArgumentParser:
    """Input: a tool's module docstring (its first paragraph the description).  Output: the
    parser of the options the zoo:moe capped-plan what-ifs share (this tool and
    ``capped_mapped_whatif``): ``--workload``, ``--profile``, ``--cpu-gbps``, ``--h2d-gbps``,
    ``--caps``, ``--contenders`` and ``--json``; the tool adds its own."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--workload", default="zoo:moe")
    p.add_argument("--profile", default="bench/results/profile-capped-nvidia-h200.json")
    p.add_argument("--cpu-gbps", type=float, default=95.5, help="the CPU's cold weight reads (the floor)")
    p.add_argument("--h2d-gbps", type=float, default=55.5, help="the limit's host-to-device bandwidth")
    p.add_argument("--caps", default="1/2,1/3")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--json", default=None)
    return p


def expert_table_bytes(graph) -> int:
    """Bytes of one expert table: the most common ``param_bytes`` among kernels whose
    weights are larger than 50 MB and not an embedding / lm_head (zoo moe: 92.3 MB)."""
    sizes = collections.Counter(k.param_bytes for k in graph.kernels.values() if k.param_bytes > 50e6)
    return sizes.most_common(1)[0][0]


def expert_kernels(graph) -> list[str]:
    table = expert_table_bytes(graph)
    return [k for k, kern in graph.kernels.items() if kern.param_bytes == table]


def plan_row(name, prep, costs, cap, experts) -> dict:
    from capped_plan_terms import terms

    from hetpart.bench import capped
    from hetpart.partitioner.plan_report import placement_of
    from hetpart.partitioner.problem import build_problem

    t0 = time.time()
    plan = capped._plan_contender(name, prep, costs, cap)
    placement = placement_of(plan)
    problem = build_problem(prep.graph, costs, (), cap, True, state=capped.graph_state_pairs(prep.graph))
    t = terms(problem, placement)
    where = collections.Counter(placement.values())
    exp = collections.Counter(placement[k] for k in experts)
    return dict(contender=name, predicted_ms=plan.predicted["latency_s"] * 1e3,
                terms_ms=round(t["predicted_ms"], 3), kernels=dict(where), experts=dict(exp),
                streamed_MB=round(t["streamed_MB"], 1), cpu_MB=round(t["cpu_MB"], 1),
                resident_MB=round(t["resident_MB"], 1), partitions=t["partitions"],
                cpu_partitions=t["cpu_partitions"], streamed_partitions=t["streamed_partitions"],
                cpu_kernels_ms=round(t["cpu_kernels_ms"], 3), cuda_resident_ms=round(t["cuda_resident_ms"], 3),
                cuda_streamed_ms=round(t["cuda_streamed_ms"], 3), overhead_ms=round(t["overhead_ms"], 3),
                waits_ms=round(t["waits_ms"], 3), copy_busy_ms=round(t["copy_busy_ms"], 3), ring=t["ring"],
                plan_s=round(time.time() - t0, 1))


def layer0_prices(graph, costs) -> list[dict]:
    """How the cost model prices the first layer's expert-table kernels and the kernels
    reading what they write (the matmuls when off)."""
    from hetpart.costmodel.cost_model import cold_weight_traffic
    from hetpart.costmodel.kernel_shape import weight_bytes_read
    from hetpart.costmodel.profile_db import KernelFeatures

    experts = expert_kernels(graph)[:3]
    consumers = []
    for k in experts:  # off: the matmul reading the take's copy
        outs = set(graph.kernels[k].outputs)
        consumers += [c for c, kern in graph.kernels.items() if outs & set(kern.inputs) and c not in experts][:1]
    out = []
    for k in experts + consumers:
        kern = graph.kernels[k]
        f = KernelFeatures.of(kern)
        row = dict(kernel=k, func=kern.func, op_class=kern.op_class, param_MB=kern.param_bytes / 1e6,
                   read_MB=weight_bytes_read(f) / 1e6, floor_MB=cold_weight_traffic(f) / 1e6,
                   flops=kern.flops)
        for dev in ("cpu", "cuda"):
            row[dev] = dict(ms=costs.kernel_cost(kern, dev) * 1e3, predicted=costs.is_predicted(kern, dev),
                            rule=costs.rule_of(kern, dev), floor_ms=costs.weight_floor(kern, dev) * 1e3)
        out.append(row)
    return out


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(__file__))
    from hetpart.bench import capped
    from hetpart.bench.switches import switched
    from hetpart.costmodel import CostModel, Profile

    p = plan_parser(__doc__)
    p.add_argument("--switch", default="0,1", help="the switch's values to plan with")
    args = p.parse_args(argv)
    profile = Profile.load(args.profile)
    out = []
    for value in args.switch.split(","):
        with switched([f"{SWITCH}={value}"]):
            t0 = time.time()
            prep = capped.prepare(capped.workload(args.workload, None))
        g = prep.graph
        costs = CostModel(profile, graph=g).with_weight_bandwidth({"cpu": args.cpu_gbps * 1e9})
        experts = expert_kernels(g)
        print(f"switch {value}: {len(g.kernels)} kernels, {len(experts)} expert-table kernels of "
              f"{expert_table_bytes(g) / 1e6:.1f} MB, {prep.weight_bytes / 1e6:.0f} MB of weights, "
              f"imported in {time.time() - t0:.0f} s", flush=True)
        prices = layer0_prices(g, costs)
        for r in prices:
            print("  " + json.dumps(r), flush=True)
        out.append(dict(switch=int(value), kernels=len(g.kernels), prices=prices))
        bw = capped.Bandwidths(args.h2d_gbps * 1e9, args.cpu_gbps * 1e9)
        compute, share = capped.gpu_compute_s(g, costs), capped.read_share(g)
        for cap_text in args.caps.split(","):
            cap = CAPS.get(cap_text) or capped.parse_cap(cap_text, prep.weight_bytes)
            lim = dict(contender="limit", switch=int(value), cap=cap_text, cap_bytes=cap, read_share=round(share, 4),
                       gpu_compute_ms=round(compute * 1e3, 3),
                       limit_ms=round(capped.limit_s(compute, prep.weight_bytes, cap, bw, read_share=share) * 1e3, 3),
                       cpu_compute_limit_ms=round(capped.cpu_compute_limit_s(
                           g, costs, cap, bw, compute, prep.weight_bytes, share) * 1e3, 3))
            print(json.dumps(lim), flush=True)
            out.append(lim)
            for name in [c for c in args.contenders.split(",") if c]:
                try:
                    row = plan_row(name, prep, costs, cap, experts)
                except capped.Skip as exc:
                    row = dict(contender=name, skipped=str(exc))
                row.update(switch=int(value), cap=cap_text, cap_bytes=cap)
                print(json.dumps(row), flush=True)
                out.append(row)
        del prep, g, costs
    save_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
