"""Which step of ``hetpart.costmodel.profile`` makes its CPU timings read one 4 ms tick?

Device step 51 (H200 host): the same llama_decode kernels timed with
``kernel_bench.measure`` after a 16-worker build read 3.2-3.7 ms in all, with no tick;
through ``profile(..., jobs=16)`` in the same process 26 of 50 read 4.00 ms (sum 112
ms); ``profile(..., jobs=1)`` had none (step 49).  Each variant here is a fresh process
(``--variant NAME`` runs one; no argument runs them all, one after another):

  control    profile(jobs=16)
  serial     profile(jobs=1)
  overheads  jobs=16, the CPU overheads already in the file (ensure_overheads skipped)
  bare       jobs=16, no per-kernel schedule-rule lookup and one save at the end

    python3 tools/tick_bisect.py [--layers 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpu_tick_check import at_ticks  # noqa: E402  (beside this script: python3 tools/...)
VARIANTS = ("control", "serial", "overheads", "bare")


def run_variant(name: str, layers: int, path: str) -> None:
    import hetpart
    from hetpart.costmodel import profile, profiler
    from hetpart.costmodel.kernel_bench import MeasureSettings

    graph = hetpart.load(f"zoo:llama_decode:layers={layers}")
    if name == "overheads":
        # time the overheads in a throwaway profile first (jobs=1), then profile into a file that has them
        seed = profile(graph, ("cpu",), path + ".seed", settings=MeasureSettings.quick(), progress=False, jobs=1)
        data = json.loads(Path(path + ".seed").read_text())
        data["kernels"] = {}
        data["models"] = {}
        Path(path).write_text(json.dumps(data))
        del seed
    if name == "bare":
        profiler.module_rule = lambda *a, **k: ""
        profiler.module_access = lambda *a, **k: None
    t0 = time.time()
    profile(graph, ("cpu",), path, settings=MeasureSettings.quick(), progress=False,
            jobs=1 if name == "serial" else 16)
    vals = [r["timing"]["median_s"] * 1e3 for r in json.loads(Path(path).read_text())["kernels"]["cpu"].values()
            if r.get("timing")]
    ticks = at_ticks(vals)
    print(f"{name:<10} {len(vals)} kernels, sum {sum(vals):8.2f} ms, {ticks} at 4.00/8.00 ms, "
          f"profile took {time.time() - t0:.1f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--variant", choices=VARIANTS)
    args = ap.parse_args()
    if args.variant:
        run_variant(args.variant, args.layers, tempfile.mktemp(suffix=".json"))
        return 0
    for name in VARIANTS:
        subprocess.run([sys.executable, __file__, "--layers", str(args.layers), "--variant", name], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
