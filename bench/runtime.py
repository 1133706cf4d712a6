"""GPU measurements of the runtime (run on the GPU machine, < 4 minutes).

    PYTHONPATH=. python3 bench/runtime.py --out bench_runtime.json

1. handoff bandwidth: the session's h2d/d2h copies (measured with CUDA events on its
   stream) against a raw pinned cudaMemcpyAsync of the same size (target >= 90%),
   and, for h2d, against a raw copy of a buffer the CPU has just written (as a CPU
   partition's output always is: its lines sit in the CPU caches, not in DRAM);
2. pipelined throughput against the ideal 1/max(stage) (target >= 90%);
3. two models in a MultiSession against running them one after another.
Prints a table and writes JSON (schema "hetpart-bench-runtime").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from hetpart.compiler.artifact import TensorSpec
from hetpart.runtime import MultiSession, Session, measure_pipeline
from hetpart.runtime import cuda_api
from hetpart.runtime.memory import CudaMemory, aligned_array
from hetpart.runtime.streams import CudaStream
from hetpart.runtime.synthetic import chain

SIZES_MIB = (0.25, 1, 4, 16, 64)


def feeds_for(shape, seed=0):
    x = aligned_array(TensorSpec("x", shape, "float32"))
    x[...] = np.random.default_rng(seed).standard_normal(shape)
    return {"x": x}


def raw_copy_seconds(nbytes: int, kind: str, repeats: int = 20, written: bool = False) -> float:
    """Median time of one cudaMemcpyAsync between pinned host and device memory;
    ``written``: the host buffer is rewritten by the CPU right before each h2d copy
    (as a CPU partition's output is), so it is in the CPU's caches, not DRAM."""
    mem, stream = CudaMemory(), CudaStream()
    spec = TensorSpec("raw", (nbytes // 4,), "float32")
    host, dev = mem.pinned(spec), mem.device(spec)
    src, dst = (host, dev) if kind == "h2d" else (dev, host)
    times = []
    for i in range(repeats):
        if written:
            host.array[...] = float(i)
        a = stream.record()
        stream.copy(dst, src, kind)
        b = stream.record()
        b.synchronize()
        times.append(b.seconds_since(a))
        a.release()
        b.release()
    stream.close()
    mem.close()
    return float(np.median(times))


def handoff_bandwidth(repeats: int = 20) -> list[dict]:
    rows = []
    for mib in SIZES_MIB:
        shape = (int(mib * 2**20) // 4 // 256, 256)
        nbytes = shape[0] * shape[1] * 4
        with Session(chain(["cpu", "cuda", "cpu"], shape, simulate=False), handoff="copy", profile=True) as s:
            f = feeds_for(shape)
            s.run(f)
            spans = {"h2d": [], "d2h": []}
            for _ in range(repeats):
                s.run(f)
                for sp in s.last_run_stats.spans:
                    if sp.category == "transfer":
                        spans[sp.name.split()[0]].append(sp.seconds)
        for kind in ("h2d", "d2h"):
            ours, raw = float(np.median(spans[kind])), raw_copy_seconds(nbytes, kind)
            row = {"size_bytes": nbytes, "direction": kind, "session_GBps": nbytes / ours / 1e9,
                   "raw_GBps": nbytes / raw / 1e9, "ratio": raw / ours}
            if kind == "h2d":
                hot = raw_copy_seconds(nbytes, kind, written=True)
                row.update(raw_written_GBps=nbytes / hot / 1e9, ratio_written=hot / ours)
            rows.append(row)
    return rows


def pipelined_throughput(batches: int = 64, spin_wait: bool = True) -> dict:
    shape = (256, 1024)
    model = chain(["cpu", "cuda"], shape, work=8, simulate=False)
    with Session(model, slots=2, spin_wait=spin_wait) as s:
        report = measure_pipeline(s, feeds_for(shape), batches=batches)
    return {"batches": batches, "spin_wait": spin_wait, "throughput_per_s": report.throughput,
            "ideal_per_s": report.ideal, "efficiency": report.efficiency, "stage_seconds": report.stage_seconds}


def two_models(rounds: int = 30) -> dict:
    shape = (256, 1024)
    a = chain(["cpu", "cuda", "cpu"], shape, work=4, simulate=False, model="detector-like")
    b = chain(["cuda", "cpu"], shape, work=4, simulate=False, model="classifier-like")
    with MultiSession([a, b]) as ms:
        report = ms.benchmark([feeds_for(shape, 1), feeds_for(shape, 2)], rounds=rounds)
    print(report.render())
    return {"models": report.models, "concurrent_latency_s": report.concurrent_latency_s,
            "sequential_latency_s": report.sequential_latency_s,
            "concurrent_rounds_per_s": report.concurrent_rounds_per_s,
            "sequential_rounds_per_s": report.sequential_rounds_per_s, "speedup": report.speedup}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_runtime.json")
    p.add_argument("--parts", default="handoff,pipeline,multi", help="which measurements (comma list)")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    cuda_api.cudart()
    start = time.perf_counter()
    # the CPU thread pool's settings change how much the orchestration threads wait for a core
    env = {k: os.environ[k] for k in ("TVM_NUM_THREADS", "TVM_THREAD_POOL_SPIN_COUNT") if k in os.environ}
    result = {"schema": "hetpart-bench-runtime", "version": 1, "env": env}
    print(f"environment: {env or 'TVM defaults'}")
    if "handoff" in parts:
        result["handoff"] = handoff_bandwidth()
        print(f"{'bytes':>10} {'dir':>4} {'session GB/s':>13} {'raw GB/s':>9} {'ratio':>6} "
              f"{'raw, just written GB/s':>23} {'ratio':>6}")
        for r in result["handoff"]:
            hot = (f"{r['raw_written_GBps']:>23.2f} {r['ratio_written']:>6.2f}" if "raw_written_GBps" in r else "")
            print(f"{r['size_bytes']:>10} {r['direction']:>4} {r['session_GBps']:>13.2f} "
                  f"{r['raw_GBps']:>9.2f} {r['ratio']:>6.2f} {hot}")
    if "pipeline" in parts:
        result["pipeline"] = pipe = pipelined_throughput()
        result["pipeline_blocking_wait"] = block = pipelined_throughput(spin_wait=False)
        for name, r in (("spinning waits", pipe), ("blocking waits", block)):
            print(f"pipelined ({name}): {r['throughput_per_s']:.1f}/s vs ideal {r['ideal_per_s']:.1f}/s "
                  f"({r['efficiency']:.0%}); stages {r['stage_seconds']}")
    if "multi" in parts:
        result["multi"] = two_models()
    result["seconds"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} in {result['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
