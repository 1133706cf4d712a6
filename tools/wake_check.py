"""Issue 19: the CPU thread pool's wake-up cost on this machine, measured several ways.

Builds the overhead benchmark's wake kernel (:func:`hetpart.costmodel.overhead_bench.wake_kernel`:
a parallel elementwise op over 256 KiB), then for each idle length times a call after
idling (cold) against back-to-back calls (hot), in several repeats: the median wake,
its min and range, and the curve over idle lengths (when the workers fall asleep:
TVM's pool spins ``TVM_THREAD_POOL_SPIN_COUNT`` sched_yields first).  A serial
build of the same kernel (one thread: no pool to wake) separates the pool's wake-up
from what any idle process pays (caches, the core's own wake-up).  ``--save PROFILE``
writes the wake at :data:`~hetpart.costmodel.overhead_bench.WAKE_IDLE_S` into that
profile's CPU overheads (``wake_s``), the number the cost model charges.

    python tools/wake_check.py [--idle-ms 0,1,5,20,50,250] [--repeats 3] [--save PROFILE]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from tool_output import save_json


def main(argv=None) -> int:
    import numpy as np
    import tvm

    from hetpart.costmodel import overhead_bench as ob

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idle-ms", default="0,1,5,20,50,250")
    p.add_argument("--repeats", type=int, default=3, help="measurements per idle length (each WAKE_ROUNDS rounds)")
    p.add_argument("--save", default=None, metavar="PROFILE", help="record the wake at WAKE_IDLE_S in PROFILE")
    p.add_argument("--json", default=None, help="write the numbers here too")
    args = p.parse_args(argv)

    target, dev = tvm.target.Target("llvm"), tvm.cpu()
    par = tvm.compile(ob.wake_module(), target)
    serial = tvm.compile(ob.wake_module(parallel=False), target)
    print(f"TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')} pool={tvm.runtime.num_threads()} "
          f"TVM_THREAD_POOL_SPIN_COUNT={os.environ.get('TVM_THREAD_POOL_SPIN_COUNT', 'default (300000)')}",
          flush=True)
    out = {"pool_threads": int(tvm.runtime.num_threads()), "rows": []}
    for idle in [float(v) * 1e-3 for v in args.idle_ms.split(",")]:
        for label, exe in (("parallel", par), ("serial", serial)):
            wakes = []
            for r in range(args.repeats):
                s = ob.measure_wake(exe, dev, idle_s=idle)
                wakes.append(s.wake_s)
                print(f"{label:8s} repeat {r}: {s.describe()}", flush=True)
                out["rows"].append({"kind": label, "idle_s": idle, "hot_s": s.hot_s, "cold_s": s.cold_s,
                                    "wake_s": s.wake_s, "cold": list(s.cold), "hot_min_s": min(s.hot)})
            print(f"{label:8s} idle {idle * 1e3:6.1f} ms: wake median {np.median(wakes) * 1e6:8.1f} us, "
                  f"min {min(wakes) * 1e6:8.1f}, max {max(wakes) * 1e6:8.1f} ({args.repeats} repeats)", flush=True)
    at = [r["wake_s"] for r in out["rows"] if r["kind"] == "parallel" and abs(r["idle_s"] - ob.WAKE_IDLE_S) < 1e-9]
    if args.save:
        from hetpart.costmodel.profiler import open_profile

        wake = float(np.median(at)) if at else ob.measure_wake(par, dev).wake_s
        prof = open_profile(args.save)
        if "cpu" not in prof.overheads:  # profiling measures it with the other overheads
            print(f"{args.save} has no CPU overheads yet: not recorded (profiling will measure wake_s)")
        else:
            prof.overheads["cpu"] = replace(prof.overheads["cpu"], wake_s=wake)
            prof.save()
            print(f"recorded cpu wake_s = {wake * 1e6:.1f} us in {args.save}")
    save_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
