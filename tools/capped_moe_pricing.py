"""Issue 19 offline, zoo moe: hetpart's plan and the memory rules' (and all-CPU), planned at
the capped profile with the CPU's cold weight bandwidth at 66.4 (the old run's torch sum)
and 95.5 GB/s (the GEMV-measured Xeon), with ``cost_model.GATHER_FLOOR_COUNTS_COPY`` off
(rows only: before) and on, at the capped run's caps (1/2 and 1/3 of the weights), each
prediction split into terms by ``tools/capped_pricing.terms``.  No GPU; ~4 min here.
Results: bench/results/capped-moe-pricing.md.

    PYTHONPATH=. python tools/capped_moe_pricing.py --json /tmp/moe.json
"""

from __future__ import annotations

import argparse
import os
import sys

from tool_output import save_json

MEASURED = {  # bench/results/capped-nvidia-h200.json (2026-12-04, pre-ec998ec plans for hetpart)
    1280477904: {"hetpart": 20.52, "ORT-style rule": 11.21, "llama.cpp-style rule": 12.45, "hetpart all-CPU": 17.42},
    853651936: {"hetpart": 18.49},
}


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(__file__))
    import capped_pricing as cp

    from hetpart.bench import capped
    from hetpart.costmodel import Profile
    from hetpart.costmodel import cost_model as cm

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="bench/results/profile-capped-nvidia-h200.json")
    p.add_argument("--cpu-gbps", default="66.4,95.5")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    profile = Profile.load(args.profile)
    prep = capped.prepare(capped.workload("zoo:moe", None))
    out = []
    for switch in (False, True):
        cm.GATHER_FLOOR_COUNTS_COPY = switch
        for cap, measured in MEASURED.items():
            for gbps in args.cpu_gbps.split(","):
                for r in cp.rows(prep, profile, cap, [float(gbps) * 1e9],
                                 ["ORT-style rule", "llama.cpp-style rule", "hetpart all-CPU"], measured, hetpart=True):
                    r.update(cap=cap, gather_copy=switch)
                    out.append(r)
    save_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
