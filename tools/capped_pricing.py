"""Issue 19 offline: a capped plan's prediction broken into its terms, at several CPU
cold-weight bandwidths, beside what the device measured.

For each contender (the memory rules' plans, as `bench/capped.py` builds them; with
``--hetpart``, hetpart's own plan, planned once at the first bandwidth and re-priced at
the others) and each bandwidth: the predicted latency and its terms -- CPU kernels
that read weights (their bytes, their price, the bandwidth that price implies, and what
the same kernels were timed at alone, hot), the other CPU kernels, the CUDA kernels,
transfers, partition overheads (wakes included) -- and the CPU bandwidth at which the
prediction would meet the measured ms (the other terms held).  No GPU is used.

    python tools/capped_pricing.py --profile bench/results/profile-capped-nvidia-h200.json \\
        --results bench/results/capped-ticks-nvidia-h200.json --cpu-gbps run,89,95,99
"""

from __future__ import annotations

import argparse
import json
import time

from tool_output import save_json


def terms(plan, costs, graph) -> dict:
    """The plan's predicted terms (ms; bytes for ``cpu_weight_bytes``); see the module docstring."""
    from hetpart.costmodel.kernel_shape import weight_bytes_read
    from hetpart.costmodel.profile_db import KernelFeatures

    out = dict.fromkeys(("cpu_weight_ms", "cpu_weight_hot_ms", "cpu_other_ms", "cuda_ms"), 0.0)
    out["cpu_weight_bytes"] = 0
    prof = costs.profile
    for k, device in plan.assignment.items():
        kern = graph.kernels[k]
        priced = costs.kernel_cost(kern, device) * 1e3
        if device != "cpu":
            out["cuda_ms"] += priced
            continue
        read = weight_bytes_read(KernelFeatures.of(kern))
        if not read:
            out["cpu_other_ms"] += priced
            continue
        rec = prof.record("cpu", kern.signature)
        out["cpu_weight_bytes"] += read
        out["cpu_weight_ms"] += priced
        out["cpu_weight_hot_ms"] += rec.cost(prof.overheads["cpu"]) * 1e3 if rec is not None and rec.ok else priced
    p = plan.predicted
    out.update(latency_ms=p["latency_s"] * 1e3, transfer_ms=p["transfer_s"] * 1e3, overhead_ms=p["overhead_s"] * 1e3,
               stream_ms=p.get("stream_s", 0.0) * 1e3, cpu_wakes=p.get("cpu_wakes"), partitions=len(plan.partitions),
               cpu_partitions=sum(1 for q in plan.partitions if q.device == "cpu"))
    gb = out["cpu_weight_bytes"] / 1e9
    out["cpu_weight_gbps"] = gb / out["cpu_weight_ms"] * 1e3 if out["cpu_weight_ms"] else None
    out["cpu_weight_hot_gbps"] = gb / out["cpu_weight_hot_ms"] * 1e3 if out["cpu_weight_hot_ms"] else None
    return out


def implied_gbps(row: dict, measured_ms: float | None) -> float | None:
    """The CPU weight bandwidth at which ``row``'s prediction meets ``measured_ms``,
    every other term as predicted (None when the rest alone exceeds it)."""
    if measured_ms is None or not row["cpu_weight_bytes"]:
        return None
    rest = row["latency_ms"] - row["cpu_weight_ms"]
    return row["cpu_weight_bytes"] / 1e9 / ((measured_ms - rest) / 1e3) if measured_ms > rest else None


def rows(prep, profile, cap: int, bandwidths: list[float | None], contenders: list[str],
         measured: dict, hetpart: bool = False, placement: dict | None = None) -> list[dict]:
    """One row per (bandwidth, contender): :func:`terms`, the measured ms and the implied bandwidth.
    ``bandwidths`` in bytes/s (None: no floor, the kernels as timed hot)."""
    from hetpart.bench import capped
    from hetpart.costmodel import CostModel
    from hetpart.partitioner.plan_report import placement_of

    out = []
    for bps in bandwidths:
        # this bandwidth, whatever the profile holds; None: no floor, not even the profile's own
        costs = CostModel(profile, weight_bandwidth={} if bps is None else {"cpu": bps})
        costs.add_graph(prep.graph)
        todo = [(name, None) for name in contenders]
        if hetpart:
            todo.append(("hetpart", placement))
        for name, fixed in todo:
            t0 = time.time()
            if name == "hetpart" and fixed is not None:
                plan = capped.plan_of_placement(prep, costs, cap, fixed)
            else:
                plan = capped._plan_contender(name, prep, costs, cap)
                if name == "hetpart":
                    placement = placement_of(plan)
            row = {"contender": name, "cpu_gbps": None if bps is None else bps / 1e9, **terms(plan, costs, prep.graph),
                   "measured_ms": measured.get(name), "plan_s": time.time() - t0}
            row["implied_cpu_gbps"] = implied_gbps(row, row["measured_ms"])
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def recorded_run_parser(doc: str) -> argparse.ArgumentParser:
    """Input: a tool's module docstring (its first paragraph the description).  Output: the
    parser of the options that price one recorded capped run again (this tool and
    ``wake_predictions``): ``--profile``, ``--results`` (the run's JSON), ``--workload`` and
    ``--cap`` (bytes), their defaults the H200 llama_decode run; the tool adds its own."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--profile", default="bench/results/profile-capped-nvidia-h200.json")
    p.add_argument("--results", default="bench/results/capped-ticks-nvidia-h200.json")
    p.add_argument("--workload", default="zoo:llama_decode")
    p.add_argument("--cap", type=int, default=2200106522)
    return p


def main(argv=None) -> int:
    from hetpart.bench import capped
    from hetpart.costmodel import Profile

    p = recorded_run_parser(__doc__)
    p.add_argument("--cpu-gbps", default="run,89,95,99", help="GB/s, comma list; 'run': the results' torch sum, "
                   "'profile': the profile's weight_read_Bps, 'hot': no floor")
    p.add_argument("--contenders", default="llama.cpp-style rule,ORT-style rule")
    p.add_argument("--hetpart", action="store_true", help="also hetpart's plan (planned at the first bandwidth)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    results = json.load(open(args.results))
    run_bw = capped.Bandwidths(**results["runs"][-1]["bandwidths"])
    measured = {r["contender"]: r["ms"] for r in results["records"]}
    profile = Profile.load(args.profile)
    named = {"run": run_bw.cpu_bytes_per_s, "hot": None,
             "profile": profile.overheads["cpu"].weight_read_Bps if "cpu" in profile.overheads else None}
    if "profile" in args.cpu_gbps.split(",") and named["profile"] is None:
        p.error(f"{args.profile} has no weight_read_Bps (measure it: tools/weight_read_check.py --save)")
    bandwidths = [named[v] if v in named else float(v) * 1e9 for v in args.cpu_gbps.split(",") if v]
    t0 = time.time()
    prep = capped.prepare(capped.workload(args.workload, None))
    print(f"imported {args.workload}: {len(prep.graph.kernels)} kernels in {time.time() - t0:.0f} s", flush=True)
    table = rows(prep, profile, args.cap, bandwidths, [c for c in args.contenders.split(",") if c],
                 measured, args.hetpart)
    save_json(args.json, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
