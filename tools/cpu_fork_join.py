"""The cost of one parallel region of TVM's CPU thread pool: fork, a trivial body, join.

    PYTHONPATH=. python tools/cpu_fork_join.py --threads 16 8 2 [--regions 64] [--calls 200]

In: thread counts.  For each, two kernels are built for this CPU: ``regions`` loops in
a row, each ``parallel`` over ``threads`` iterations that store one float apiece (the
shape of a model's kernels one after another: every parallel loop is one
``TVMBackendParallelLaunch``), and the same with one loop.  Both run on a leased thread
whose TVM pool has ``threads`` threads (:func:`hetpart.runtime.threads.call_leased`),
in turns, ``--rounds`` rounds of ``--calls`` calls; the least call of each side.

Out, per thread count: microseconds per parallel region, ``(t(regions) - t(1)) /
(regions - 1)`` -- the fork and join alone, the body's stores being negligible.  Times
that by a model's parallel regions (``tools/cpu_parallelism.py`` counts them: resnet50
b1 76) for what the pool costs it per inference (issue 18:
bench/results/cpu-r50-threads-analysis.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def regions_func(regions: int, threads: int):
    """A PrimFunc of ``regions`` parallel loops over ``threads`` iterations, each storing
    ``x[r, i] = r + i`` (one region each: the loops are siblings, not nested)."""
    import tvm
    from tvm import te

    x = te.compute((regions, threads), lambda r, i: (r + i).astype("float32"), name="x")
    func = te.create_prim_func([x])
    sch = tvm.s_tir.Schedule(func)
    blk = sch.get_sblock("x")
    r, i = sch.get_loops(blk)
    sch.reorder(r, i)
    sch.parallel(i)  # the outer loop r serial: one parallel region per r
    return sch.mod["main"]


def fork_join_us(threads: int, regions: int, calls: int, rounds: int) -> tuple[float, float]:
    """``(us per region, us of the one-region call)``: least calls of ``rounds`` turns."""
    import numpy as np
    import tvm

    from hetpart.runtime.threads import call_leased
    from hetpart.targets import cpu_tvm_target

    target = cpu_tvm_target(threads)
    many = tvm.compile(regions_func(regions, threads), target=target)
    one = tvm.compile(regions_func(1, threads), target=target)

    def body():
        bufs = [tvm.runtime.tensor(np.zeros((n, threads), "float32")) for n in (regions, 1)]
        best = [float("inf"), float("inf")]
        for _ in range(rounds):
            for side, (fn, buf) in enumerate(((many, bufs[0]), (one, bufs[1]))):
                for _ in range(calls):
                    t = time.perf_counter()
                    fn(buf)
                    best[side] = min(best[side], time.perf_counter() - t)
        return best

    t_many, t_one = call_leased("fork join", body, pool=threads, role="cpu")
    return (t_many - t_one) / (regions - 1) * 1e6, t_one * 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[16, 8, 2])
    p.add_argument("--regions", type=int, default=64)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    print(f"{'threads':>8}{'us/region':>11}{'us one-region call':>20}   ({a.regions} regions, least of {a.calls} "
          f"calls x {a.rounds} rounds)")
    for t in a.threads:
        per, one = fork_join_us(t, a.regions, a.calls, a.rounds)
        print(f"{t:>8}{per:>11.2f}{one:>20.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
