"""The CPU's cold weight-read bandwidth (issue 19), as the cost model measures it, beside
the torch sum the capped benchmark measured before.

Rounds interleave :func:`hetpart.costmodel.weight_read_bench.measure_weight_read` (the
compiler's GEMV over 1 GiB of distinct weights) with a torch sum over 1 GiB (16 threads,
best of 5: ``bench.capped.measure_bandwidths``' CPU read), so drift on a shared host hits
both.  ``--save PROFILE`` writes the median GEMV bandwidth into that profile's CPU
overheads (``weight_read_Bps``), what ``bench/capped.py --profile quick`` would measure.

    python tools/weight_read_check.py --rounds 3 [--save PROFILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import statistics
import time

from tool_output import save_json


def built_gemv(target):
    """Input: the CPU's TVM ``target``.  Output: the compiler's weight-read GEMV built for it
    (``weight_read_bench.build_gemv``), after printing the thread count, the target and the
    build's seconds (the line this check and ``contention_check`` start with)."""
    import tvm

    from hetpart.costmodel.weight_read_bench import build_gemv

    t0 = time.time()
    ex = build_gemv(target)
    print(f"threads {tvm.runtime.num_threads()}, target {target}, GEMV built in {time.time() - t0:.1f} s", flush=True)
    return ex


def main(argv=None) -> int:
    import tvm

    from hetpart.bench.capped import _cpu_read
    from hetpart.costmodel.weight_read_bench import SWEEP_BYTES, measure_weight_read
    from hetpart.targets import cpu_tvm_target

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sweep-mib", type=int, default=SWEEP_BYTES >> 20)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--save", default=None, help="a profile to write weight_read_Bps into (its CPU overheads)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    target = cpu_tvm_target()
    ex = built_gemv(target)
    rows = []
    for r in range(args.rounds):
        s = measure_weight_read(target, tvm.cpu(), sweep_bytes=args.sweep_mib << 20, executable=ex)
        row = {"round": r, "gemv_gbps": s.bytes_per_s / 1e9, "gemv_sweeps_s": list(s.sweeps)}
        if not args.no_torch:
            try:
                bps, how = _cpu_read(1 << 30)
                row.update(torch_gbps=bps / 1e9, torch_how=how)
            except Exception as exc:  # noqa: BLE001 - the check goes on without torch
                row["torch_error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        print(f"round {r}: GEMV {s.describe()}; torch sum "
              f"{row.get('torch_gbps', float('nan')):.1f} GB/s", flush=True)
    median = statistics.median(r["gemv_gbps"] for r in rows) * 1e9
    print(f"median GEMV weight read: {median / 1e9:.1f} GB/s", flush=True)
    if args.save:
        from dataclasses import replace

        from hetpart.costmodel import Profile

        prof = Profile.load(args.save)
        prof.overheads["cpu"] = replace(prof.overheads["cpu"], weight_read_Bps=median)
        prof.save()
        print(f"saved weight_read_Bps {median:.4g} into {args.save}")
    save_json(args.json, {"rounds": rows, "median_gemv_Bps": median})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
