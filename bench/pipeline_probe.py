"""Where a pipelined batch loses time (issue 6): variants side by side, on the GPU machine.

    PYTHONPATH=. python3 bench/pipeline_probe.py --out $OUT/pipeline_probe.json

Model: the ``cpu -> cuda`` synthetic chain of ``bench/runtime.py`` ((256, 1024), work 8;
its CPU kernel is serial: one thread, TVM's pool unused), and the same chain with a
parallel CPU kernel (work 64, so the pool matters).  Each variant is measured with
:func:`~hetpart.runtime.measure_pipeline` (rounds interleaving stage-alone runs and
pipelined passes: medians and per-round min-max), plus one timed pipelined pass that
says where the CPU worker waits: its idle gap between batches and the slot-held time
of a batch (submit to collected).  With k slots a CPU-bound pipeline needs
slot-held time <= k x CPU stage.  Variants: slots 2/3/4, spinning/blocking CUDA
waits, CPU pool threads (TVM_NUM_THREADS is set to every CPU first, so 16/15/14 are
all possible on a 16-CPU machine).  Prints one compact table last; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))  # before any TVM pool exists

import numpy as np  # noqa: E402

from hetpart.compiler.artifact import TensorSpec  # noqa: E402
from hetpart.runtime import Session, measure_pipeline  # noqa: E402
from hetpart.runtime.memory import aligned_array  # noqa: E402
from hetpart.runtime.synthetic import chain  # noqa: E402
from hetpart.cpu_cores import pool_size  # noqa: E402
from hetpart.runtime.threads import PROCESS_CPUS, thread_affinities  # noqa: E402

SHAPE = (256, 1024)


def feeds():
    x = aligned_array(TensorSpec("x", SHAPE, "float32"))
    x[...] = np.random.default_rng(0).standard_normal(SHAPE)
    return {"x": x}


def timeline(session, f, batches: int) -> dict:
    """One timed pipelined pass: the CPU worker's idle gap between consecutive batches and
    each batch's slot-held time (context made after the slot was taken -> collected)."""
    futures = [session.submit(f, timed=True) for _ in range(batches)]
    stats = [fu.result() and fu.stats for fu in futures]
    cpu = [next(sp for sp in s.spans if sp.track.startswith("cpu")) for s in stats]
    gaps = [cpu[i + 1].start - cpu[i].end for i in range(len(cpu) - 1)]
    return {"cpu_idle_gap_ms": float(np.median(gaps)) * 1e3,
            "cpu_pipelined_ms": float(np.median([c.seconds for c in cpu])) * 1e3,
            "slot_held_ms": float(np.median([s.latency_s for s in stats])) * 1e3}


def variant(name: str, model, f, *, slots=2, spin=True, cpu_threads=None, rounds=7, batches=48) -> dict:
    with Session(model, slots=slots, spin_wait=spin, cpu_threads=cpu_threads) as s:
        rep = measure_pipeline(s, f, batches=batches, warmup=8, rounds=rounds, alone=7)
        tl = timeline(s, f, batches)
        lo, hi = rep.efficiency_range
        row = {"variant": name, "slots": slots, "spin_wait": spin, "cpu_threads": cpu_threads,
               "pool_threads_used": dict(s.pool_threads_used), "throughput_per_s": rep.throughput,
               "ideal_per_s": rep.ideal, "efficiency": rep.efficiency, "efficiency_min": lo,
               "efficiency_max": hi, "stage_ms": {k: v * 1e3 for k, v in rep.stage_seconds.items()},
               "rounds": [{"seconds": r.seconds, "efficiency": r.efficiency,
                           "stage_ms": {k: v * 1e3 for k, v in r.stage_seconds.items()}} for r in rep.rounds],
               **tl}
        if name == "serial slots2 spin":
            row["thread_affinities"] = thread_affinities()
    print(f"  {name}: {row['efficiency']:.0%} ({lo:.0%}-{hi:.0%})", file=sys.stderr, flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="pipeline_probe.json")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--simulate", action="store_true", help="smoke test without a GPU (the cuda stage on the CPU)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    ncpu = len(PROCESS_CPUS)
    siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
    env = {"cpus": ncpu, "tvm_default_threads": pool_size(),
           "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS"),
           "TVM_THREAD_POOL_SPIN_COUNT": os.environ.get("TVM_THREAD_POOL_SPIN_COUNT"),
           "cpu0_thread_siblings": siblings.read_text().strip() if siblings.exists() else None}
    print(f"environment: {env}", file=sys.stderr)
    f = feeds()
    serial = chain(["cpu", "cuda"], SHAPE, work=8, simulate=args.simulate)
    parallel = chain(["cpu", "cuda"], SHAPE, work=[64, 8], simulate=args.simulate, parallel=True)
    r = args.rounds
    rows = [
        variant("serial slots2 spin", serial, f, rounds=r),  # what bench/runtime.py measures
        variant("serial slots2 block", serial, f, spin=False, rounds=r),
        variant("serial slots3 spin", serial, f, slots=3, rounds=r),
        variant("serial slots3 block", serial, f, slots=3, spin=False, rounds=r),
        variant("serial slots4 spin", serial, f, slots=4, rounds=r),
    ]
    for threads in sorted({max(ncpu - k, 1) for k in (0, 1, 2)}, reverse=True) + [None]:  # None: the session's policy
        label = "auto" if threads is None else str(threads)
        rows.append(variant(f"parallel pool={label} slots3", parallel, f, slots=3, cpu_threads=threads, rounds=r))
    rows.append(variant("parallel pool=auto slots2", parallel, f, slots=2, rounds=r))
    result = {"schema": "hetpart-bench-pipeline-probe", "version": 1, "env": env, "variants": rows,
              "seconds": time.perf_counter() - start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n{'variant':<28} {'eff':>5} {'min-max':>9} {'items/s':>8} {'ideal/s':>8} {'cpu ms':>7} "
          f"{'gpu ms':>7} {'cpu@pipe':>8} {'idle gap':>8} {'slot held':>9} pool")
    for row in rows:
        st = row["stage_ms"]
        cpu = next((v for k, v in st.items() if k.startswith("cpu")), 0.0)
        gpu = next((v for k, v in st.items() if not k.startswith("cpu")), 0.0)
        print(f"{row['variant']:<28} {row['efficiency']:>5.0%} {row['efficiency_min']:>4.0%}-{row['efficiency_max']:<4.0%}"
              f"{row['throughput_per_s']:>8.0f} {row['ideal_per_s']:>8.0f} {cpu:>7.3f} {gpu:>7.3f} "
              f"{row['cpu_pipelined_ms']:>8.3f} {row['cpu_idle_gap_ms']:>8.3f} {row['slot_held_ms']:>9.3f} "
              f"{row['pool_threads_used']}")
    print(f"wrote {args.out} in {result['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
