"""The CPU's cold weight reads beside a pinned host-to-GPU copy, and the copy beside them (issue 19).

Runs :func:`hetpart.costmodel.contention_bench.measure_contention` (the compiler's GEMV over
1 GiB of distinct weights, a chain of 64 MiB pinned copies; alone, then together) and prints
each rate alone and contended.  ``--save PROFILE`` writes into that profile's CPU overheads
``weight_read_Bps`` (the GEMV alone, this run), ``contended_weight_read_Bps`` and
``contended_h2d_Bps``, which the timeline prices overlapping CPU weight reads and weight
copies with (:data:`hetpart.partitioner.timeline.COPY_CONTENTION`; the copy's ratio is taken
against the profile's pinned h2d fit, printed beside this run's alone rate).  Without a CUDA
GPU it says so and exits 0, saving nothing.

    python tools/contention_check.py [--rounds 3] [--save PROFILE] [--json OUT]
"""

from __future__ import annotations

import argparse

from tool_output import save_json
from weight_read_check import built_gemv


def main(argv=None) -> int:
    import tvm

    from hetpart.costmodel.contention_bench import WINDOW_S, measure_contention
    from hetpart.errors import NoGPUError, ProfileError
    from hetpart.targets import cpu_tvm_target

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window-s", type=float, default=WINDOW_S)
    p.add_argument("--save", default=None, help="a profile to write the rates into (its CPU overheads)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    target = cpu_tvm_target()
    ex = built_gemv(target)
    try:
        s = measure_contention(target, tvm.cpu(), rounds=args.rounds, window_s=args.window_s, executable=ex)
    except (NoGPUError, ProfileError) as exc:
        print(f"skipped: {exc}")
        return 0
    print(s.describe(), flush=True)
    if args.save:
        from dataclasses import replace

        from hetpart.costmodel import Profile

        prof = Profile.load(args.save)
        fit = prof.transfers.fit("h2d", "pinned") if prof.transfers else None
        if fit is not None:
            print(f"the profile's pinned h2d fit: {fit.bandwidth_Bps / 1e9:.1f} GB/s (this run alone: "
                  f"{s.h2d_alone / 1e9:.1f}); priced copy rate kept: {min(1.0, s.h2d_contended / fit.bandwidth_Bps):.2f}")
        prof.overheads["cpu"] = replace(prof.overheads["cpu"], weight_read_Bps=s.read_alone,
                                        contended_weight_read_Bps=s.read_contended, contended_h2d_Bps=s.h2d_contended)
        prof.save()
        print(f"saved weight_read_Bps {s.read_alone:.4g}, contended_weight_read_Bps {s.read_contended:.4g}, "
              f"contended_h2d_Bps {s.h2d_contended:.4g} into {args.save}")
    if args.json:
        from dataclasses import asdict

        save_json(args.json, asdict(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
