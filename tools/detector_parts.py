"""Where one detector run's time goes, per bucket build and placement (issue 20, serve-detector).

For each placement (``forced``: every kernel CUDA can build on CUDA, as bench/serve.py
builds it; ``cpu-tail``: NMS's trim kept on the CPU, :func:`hetpart.backend.forced_plan`)
and batch (1, 2, 4, 8): the zoo detector compiled, opened with the gate lane (as a server's
sessions are), run ``--runs`` times after 3 warm-ups on a real payload stacked to the batch,
profiled (``Session(profile=True)``); per span (track, name) the median ms, and the run's
median wall time.  Says whether the batched run is GPU work, CPU post-processing (NMS, TopK:
their lane calls), copies or host turns, and what the cpu-tail placement saves::

    PYTHONPATH=. python3 tools/detector_parts.py --json /tmp/parts.json        # GPU machine
    TVM_NUM_THREADS=1 PYTHONPATH=. python3 tools/detector_parts.py --simulate --batches 1,8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import hetpart
    from hetpart import models
    from hetpart.backend import forced_plan

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--placements", default="forced,cpu-tail")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--simulate", action="store_true")
    p.add_argument("--small", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    spec = "zoo:detector" + (":small" if args.small else "")
    jobs = [(pl, b) for pl in args.placements.split(",") for b in batches]
    graphs = {b: hetpart.load(f"{spec}:batch={b}") for b in batches}

    def build(job):
        pl, b = job
        plan = forced_plan(graphs[b], "cuda", cpu_tail=pl == "cpu-tail")
        return job, hetpart.compile(plan, graphs[b], simulate=args.simulate, progress=False)

    with ThreadPoolExecutor(max_workers=4) as ex:
        built = dict(ex.map(build, jobs))
    row = models.example_inputs(models.build("detector", small=args.small, batch=1), seed=100)
    out = []
    for (pl, b), compiled in built.items():
        feeds = {n: np.concatenate([a] * b) for n, a in row.items()}
        spans: dict[tuple[str, str], list[float]] = {}
        walls = []
        with hetpart.Session(compiled, profile=True, cpu_sharing="gate") as s:
            for _ in range(3):
                s.run(feeds)
            for _ in range(args.runs):
                t = time.perf_counter()
                s.run(feeds)
                walls.append(time.perf_counter() - t)
                for sp in s.last_run_stats.spans:
                    spans.setdefault((sp.track, sp.name), []).append(sp.end - sp.start)
        parts = " ".join(f"{q.device}:{len(q.kernels)}" for q in compiled.plan.partitions)
        rec = {"placement": pl, "batch": b, "partitions": parts, "run_ms": statistics.median(walls) * 1e3,
               "run_p90_ms": sorted(walls)[int(0.9 * len(walls))] * 1e3,
               "spans_ms": {f"{t} | {n}": statistics.median(v) * 1e3 for (t, n), v in spans.items()}}
        out.append(rec)
        print(f"{pl:<9} b{b}: run median {rec['run_ms']:.3f} ms (p90 {rec['run_p90_ms']:.3f}); partitions {parts}")
        for k, v in rec["spans_ms"].items():
            print(f"    {k:<55} {v:8.3f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"simulate": args.simulate, "model": spec, "results": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
