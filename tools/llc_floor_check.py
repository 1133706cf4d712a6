"""Issue 19: a model whose weights fit in the CPU's last-level cache, all on the CPU --
predicted with the cold-weight floor, with the cache rule and hot, beside measured.

Profiles MODEL's CPU kernels into PROFILE (the cache size is recorded there), measures
the cold weight-read bandwidth into it where missing (``--no-weight-read``: keep what it
has), builds the all-CPU plan and prices it three ways: ``floored`` (every weight kernel
at least its weight bytes at the cold bandwidth: the cost model before the cache rule,
``cache_bytes={"cpu": 0}``), ``rule`` (the default cost model: floored only if the
graph's weights exceed the recorded cache) and ``hot`` (no floor).  Then compiles the
plan and times ``Session.run`` in rounds (median per round; min and range reported),
warm (back to back) and cold (each run after reading 256 MiB of other memory), interleaved.
Runs on the CPU only (threads: TVM's default, this machine's cores).

    python tools/llc_floor_check.py --model zoo:mlp --profile /tmp/llc/prof.json --rounds 7 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from tool_output import save_json


def predictions(graph, prof) -> dict:
    """The all-CPU plan's predicted latency (s) under each pricing, and that plan."""
    from hetpart.costmodel import CostModel
    from hetpart.partitioner import plan_for_assignment
    from hetpart.partitioner.problem import build_problem

    both = _with_gpu(prof)
    out, plan = {}, None
    for name, costs in (("floored", CostModel(both, cache_bytes={"cpu": 0})), ("rule", CostModel(both)),
                        ("hot", CostModel(both, weight_bandwidth={}))):
        problem = build_problem(graph, costs)
        plan = plan_for_assignment(problem, {k: "cpu" for k in graph.kernels})
        out[name] = plan.predicted["latency_s"]
    return out, plan


EVICT_BYTES = 256 << 20
"""What a cold run reads (untimed) before it: 8x the sandbox's 32 MiB L3."""


def _with_gpu(prof):
    """``prof`` with the recorded profile's CUDA overheads, kernels and transfers where it
    has none (it measured the CPU only, also on a machine with a GPU): the partitioner
    prices both devices even for an all-CPU placement.  CPU numbers stay ``prof``'s."""
    from dataclasses import replace

    from hetpart.costmodel.locate import pick_recorded

    if "cuda" in prof.overheads and prof.transfers is not None:
        return prof
    rec = pick_recorded()
    return replace(prof, overheads={**rec.overheads, **prof.overheads},
                   kernels={**{d: r for d, r in rec.kernels.items() if d != "cpu"}, **prof.kernels},
                   transfers=prof.transfers or rec.transfers, targets={**rec.targets, **prof.targets},
                   gpu_memory_bytes=prof.gpu_memory_bytes or rec.gpu_memory_bytes, path=None)


def measure(plan, graph, rounds: int, runs: int) -> dict[str, list[float]]:
    """Per round, the median seconds of ``runs`` ``Session.run`` calls, two ways
    interleaved round by round: ``warm`` back to back (the weights stay cached if they
    fit), ``cold`` each after reading :data:`EVICT_BYTES` of other memory (untimed), so
    no weight is cached -- what the floor prices."""
    import numpy as np

    import hetpart

    compiled = hetpart.compile(plan, graph, simulate=True)
    feeds = _feeds(graph)
    other = np.ones(EVICT_BYTES // 8)
    out = {"warm": [], "cold": []}
    with hetpart.Session(compiled) as session:
        for _ in range(20):
            session.run(feeds)
        for _ in range(rounds):
            for kind in out:
                times = []
                for _ in range(runs if kind == "warm" else max(runs // 4, 5)):
                    if kind == "cold":
                        float(other.sum())
                    t0 = time.perf_counter()
                    session.run(feeds)
                    times.append(time.perf_counter() - t0)
                out[kind].append(statistics.median(times))
    return out


def _feeds(graph) -> dict:
    """Random inputs (negatives included) for ``graph``'s inputs."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        out[name] = (rng.standard_normal(t.shape) * 2).astype(t.dtype)
    return out


def main(argv=None) -> int:
    import tvm

    from hetpart import importer
    from hetpart.costmodel import profile
    from hetpart.costmodel.kernel_bench import MeasureSettings
    from hetpart.costmodel.kernel_shape import graph_weight_bytes
    from hetpart.costmodel.profiler import ensure_weight_read, open_profile

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="zoo:mlp")
    p.add_argument("--profile", required=True)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--no-weight-read", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    graph = importer.load(args.model)
    t0 = time.time()
    prof = profile(graph, ("cpu",), args.profile, settings=MeasureSettings(), progress=False)
    print(f"profiled {args.model} in {time.time() - t0:.0f} s; threads {tvm.runtime.num_threads()}", flush=True)
    if not args.no_weight_read:
        prof = open_profile(args.profile)
        if ensure_weight_read(prof):
            prof.save()
    weights = graph_weight_bytes(graph)
    predicted, plan = predictions(graph, prof)
    medians = measure(plan, graph, args.rounds, args.runs)
    row = {"model": args.model, "threads": int(tvm.runtime.num_threads()), "weight_bytes": weights,
           "cpu_llc_bytes": prof.cpu_llc_bytes, "weight_read_Bps": prof.overheads["cpu"].weight_read_Bps,
           "predicted_ms": {k: v * 1e3 for k, v in predicted.items()},
           "measured_ms": {kind: {"min": min(m) * 1e3, "max": max(m) * 1e3, "median": statistics.median(m) * 1e3,
                                  "rounds": [x * 1e3 for x in m]} for kind, m in medians.items()},
           "load_avg": os.getloadavg()}
    print(json.dumps(row, indent=1))
    save_json(args.json, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
