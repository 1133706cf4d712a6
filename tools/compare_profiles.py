"""How two cost profiles' kernel timings differ, per device (e.g. a re-recorded profile against the shipped one).

For every kernel signature timed in both: the ratio new / old of the median.  Prints per
device the count, the median and spread of the ratios, how many moved by more than 1.5x
either way, and the kernels that moved most.

    python3 tools/compare_profiles.py OLD.json NEW.json [--top 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def medians(path: str) -> dict[str, dict[str, tuple[str, float]]]:
    """device -> signature -> (function name, median ms) of the kernels timed in ``path``."""
    data = json.loads(Path(path).read_text())
    out: dict[str, dict[str, tuple[str, float]]] = {}
    for device, records in data.get("kernels", {}).items():
        for sig, rec in records.items():
            median = (rec.get("timing") or {}).get("median_s")
            if median:
                out.setdefault(device, {})[sig] = (rec.get("func", sig), median * 1e3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    old, new = medians(args.old), medians(args.new)
    for device in sorted(set(old) & set(new)):
        both = sorted(set(old[device]) & set(new[device]))
        if not both:
            continue
        rows = [(new[device][s][1] / old[device][s][1], old[device][s][0], old[device][s][1], new[device][s][1])
                for s in both]
        ratios = [r[0] for r in rows]
        q = statistics.quantiles(ratios, n=10) if len(ratios) >= 10 else [min(ratios), max(ratios)]
        print(f"{device}: {len(both)} kernels in both; new/old median {statistics.median(ratios):.2f} "
              f"(p10 {q[0]:.2f}, p90 {q[-1]:.2f}); {sum(r > 1.5 for r in ratios)} slower by >1.5x, "
              f"{sum(r < 1 / 1.5 for r in ratios)} faster by >1.5x; sum old {sum(r[2] for r in rows):.2f} ms, "
              f"new {sum(r[3] for r in rows):.2f} ms")
        for ratio, func, a, b in sorted(rows, key=lambda r: -abs(__import__('math').log(r[0])))[:args.top]:
            print(f"  {func[:50]:<50} {a:9.3f} -> {b:9.3f} ms  ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
