"""Compile time of every zoo model (full size): an all-CUDA plan and a mixed plan.

Run on the GPU machine from the repository root::

    PYTHONPATH=. python3 bench/compile_times.py                  # all models, full size
    PYTHONPATH=. python3 bench/compile_times.py --models resnet18 bert --small
    PYTHONPATH=. python3 bench/compile_times.py --simulate        # no GPU: "cuda" built for the CPU

For each model it prints the import time, then per plan the number of partitions
and the wall time of ``hetpart.compile`` (extraction, per-partition builds on a
thread pool, export, load), and writes everything to ``-o`` as JSON
(``"schema": "hetpart-bench-compile"``).  Lines are printed as soon as each
measurement ends, so a run cut short still reports what it finished.

The mixed plan cuts the model into about ``--mixed-partitions`` runs of random
length (seeded), alternating CPU and CUDA -- the shape of a real partitioner's plan.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SCHEMA = "hetpart-bench-compile"
VERSION = 1


def all_cuda(graph) -> dict[str, str]:
    return {kid: "cuda" for kid in graph.kernels}


def mixed(graph, partitions: int, seed: int = 0) -> dict[str, str]:
    """Runs of random length, about ``partitions`` of them, alternating devices."""
    rng = np.random.default_rng(seed)
    flip = min(1.0, (partitions - 1) / max(1, len(graph.kernels) - 1))
    device, out = "cuda", {}
    for kid in graph.topological_order():
        if out and rng.random() < flip:
            device = "cpu" if device == "cuda" else "cuda"
        out[kid] = device
    return out


def measure(model: str, args) -> dict:
    from hetpart import compiler, importer
    from hetpart.partitioner import Plan

    spec = f"zoo:{model}" + (":small" if args.small else "")
    start = time.perf_counter()
    graph = importer.load(spec)
    row = {"model": model, "spec": spec, "kernels": len(graph.kernels),
           "import_s": round(time.perf_counter() - start, 2), "plans": {}}
    print(f"{model:10s} {len(graph.kernels):4d} kernels  import {row['import_s']:7.1f} s", flush=True)
    plans = {"all_cuda": all_cuda(graph), "mixed": mixed(graph, args.mixed_partitions)}
    for name, assignment in plans.items():
        plan = Plan.by_hand(graph, assignment, name, origin="bench")
        start = time.perf_counter()
        cm = compiler.compile(plan, simulate=args.simulate, cuda_arch=args.cuda_arch, jobs=args.jobs,
                              progress=not args.no_progress)
        seconds = time.perf_counter() - start
        size = sum(cm.library_path(p).stat().st_size for p in cm.partitions)
        row["plans"][name] = {"partitions": len(cm.partitions), "compile_s": round(seconds, 2),
                              "library_bytes": size}
        print(f"{'':10s} {name:9s} {len(cm.partitions):3d} partitions  compile {seconds:7.1f} s  "
              f"libraries {size / 2**20:8.1f} MiB", flush=True)
    return row


def main(argv=None) -> int:
    from hetpart import models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=models.names(), help="zoo models (default: all)")
    p.add_argument("--small", action="store_true", help="the small (CI) variants instead of full size")
    p.add_argument("--simulate", action="store_true", help="build the CUDA partitions for the CPU")
    p.add_argument("--cuda-arch", default=None, help="e.g. sm_90 (default: the local GPU)")
    p.add_argument("--jobs", type=int, default=None, help="partitions built at once (default: one per core)")
    p.add_argument("--mixed-partitions", type=int, default=8, help="about this many partitions in the mixed plan")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-o", "--out", default="out/compile_times.json", help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)
    import tvm

    from hetpart import __version__, targets

    result = {"schema": SCHEMA, "version": VERSION, "hetpart": __version__, "tvm": tvm.__version__,
              "cores": targets.num_cores(), "simulated": args.simulate, "models": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for model in args.models:
        result["models"].append(measure(model, args))
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"total {time.perf_counter() - start:.1f} s; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
