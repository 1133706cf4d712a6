"""Which part of the profiler's build makes its CPU timings read one 4 ms tick?

Device steps 45-50 (H200 host): with build workers (``profile(..., jobs=16)``) 12-13 of
llama_decode's 25 CPU kernels timed at exactly 4.00 ms; with ``jobs=1`` (built in this
process) none did, and the sum fell from 56 to 4.1 ms.  Two differences remain after the
workers' spinning pools were removed (hetpart.costmodel.build_pool.start_worker): the
workers are alive while the parent times, and the kernels are libraries loaded from
disk rather than in-memory builds.  This times the same kernels (same inputs, quick
settings) four ways in one process, rounds interleaved:

  live   built by 16 workers, loaded from .so, workers alive
  dead   the same loaded modules, after the workers exited
  mem    built in this process (jobs=1)
  mem2   the in-memory ones again (order check)

    python3 tools/tick_ab.py [--layers 2] [--jobs 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpu_tick_check import at_ticks  # noqa: E402  (beside this script: python3 tools/...)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--torch", action="store_true", help="then measure bandwidths with torch and time again, "
                    "and run hetpart.costmodel.profile as the capped bench does")
    args = ap.parse_args()
    import tvm

    import hetpart
    from hetpart.costmodel import kernel_bench
    from hetpart.costmodel.build_pool import BuildPool
    from hetpart.costmodel.kernel_bench import MeasureSettings
    from hetpart.targets import cpu_tvm_target

    graph = hetpart.load(f"zoo:llama_decode:layers={args.layers}")
    kernels = [k for k in graph.kernels.values()]
    kmods = [kernel_bench.single_kernel_module(graph, k) for k in kernels]
    target, dev, quick = cpu_tvm_target(), tvm.cpu(), MeasureSettings.quick()

    def times(exes) -> list[float]:
        out = []
        for km, exe in zip(kmods, exes):
            try:
                out.append(kernel_bench.measure(km, exe, dev, quick).median_s * 1e3)
            except Exception:  # noqa: BLE001 - a kernel that cannot run alone is left out of the sums
                out.append(float("nan"))
        return out

    t0 = time.time()
    pool = BuildPool(args.jobs)
    loaded = pool.build_all([km.mod for km in kmods], target)
    print(f"built by {args.jobs} workers in {time.time() - t0:.1f} s", flush=True)
    runs = {"live": times(loaded)}
    procs = list(pool._pool._processes.values())
    pool._pool.shutdown(wait=True)
    for p in procs:
        p.join(timeout=30)
    print("workers exited:", all(not p.is_alive() for p in procs), flush=True)
    time.sleep(1.0)
    runs["dead"] = times(loaded)
    t0 = time.time()
    inmem = BuildPool(1).build_all([km.mod for km in kmods], target)
    print(f"built in-process in {time.time() - t0:.1f} s", flush=True)
    runs["mem"] = times(inmem)
    runs["dead2"] = times(loaded)
    runs["mem2"] = times(inmem)
    if args.torch:
        # the capped bench measures bandwidths with torch (a 16-thread sum, a pinned copy) before profiling
        from hetpart.bench.capped import measure_bandwidths

        print("bandwidths:", measure_bandwidths(), flush=True)
        runs["torch"] = times(loaded)
        time.sleep(2.0)
        runs["torch+2s"] = times(loaded)
        from hetpart.costmodel import profile

        import tempfile
        prof = profile(graph, ("cpu",), tempfile.mktemp(suffix=".json"), settings=quick, progress=False)
        def ms(k):
            rec = prof.record("cpu", k.signature)
            return rec.timing.median_s * 1e3 if rec is not None and rec.timing is not None else float("nan")

        runs["profile()"] = [ms(k) for k in kernels]
    names = list(runs)
    print("| kernel | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    order = sorted(range(len(kernels)), key=lambda i: -runs["live"][i] if runs["live"][i] == runs["live"][i] else 0)
    for i in order:
        print(f"| {kernels[i].func[:44]} | " + " | ".join(f"{runs[n][i]:.3f}" for n in names) + " |")
    for n in names:
        vals = [v for v in runs[n] if v == v]
        ticks = at_ticks(vals)
        print(f"{n}: {len(vals)} kernels, sum {sum(vals):.2f} ms, {ticks} at 4.00/8.00 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
