"""The whole ONNX node conformance suite through hetpart's ONNX backend.

    python bench/conformance.py                       # CPU path, every case
    python bench/conformance.py --device CUDA         # real CUDA partitions (GPU machine)
    python bench/conformance.py --sample 300          # a deterministic sample
    python bench/conformance.py --cases test_abs test_range_float_type_positive_delta

Writes ``bench/results/conformance-<device>.json`` (schema ``hetpart-conformance``):
per test its status (pass / expected-fail / wrong / typed-error / internal-error /
crash / hang / unexpected-pass) with the reason, and the counts.  Each case runs in
a worker process with a time limit (``--time-limit``), so a crash or hang costs one
case.  The expected failures are the reviewed table in
``tests/conformance/expected_failures.py``; ``--no-expected`` runs without it (the
raw outcomes).  Exits 1 when any case ends in neither pass nor expected-fail.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import zlib
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hetpart.bench import conformance  # noqa: E402


def expected_failures(device: str) -> dict:
    """The reviewed table for ``device`` (tests/conformance/expected_failures.py)."""
    path = ROOT / "tests" / "conformance" / "expected_failures.py"
    spec = importlib.util.spec_from_file_location("expected_failures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.expected_for(device)


def sample(names: list[str], n: int) -> list[str]:
    """``n`` names chosen by a stable hash of the name (the same sample every run)."""
    return sorted(sorted(names, key=lambda s: zlib.crc32(s.encode()))[:n])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="CPU", choices=["CPU", "CUDA"])
    ap.add_argument("--simulate", action="store_true", help="CUDA partitions on the CPU (default: only without a GPU)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes at once")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--nice", type=int, default=0, help="niceness of the workers")
    ap.add_argument("--sample", type=int, help="run a deterministic sample of this many cases")
    ap.add_argument("--cases", nargs="*", help="run only these test names")
    ap.add_argument("--no-expected", action="store_true", help="ignore the expected-failure table")
    ap.add_argument("-o", "--out", help="output JSON (default bench/results/conformance-<device>.json)")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    cases = conformance.load_cases()
    selection = "all"
    if args.cases:
        cases = {n: cases[n] for n in args.cases}
        selection = "named: " + " ".join(args.cases)
    elif args.sample:
        cases = {n: cases[n] for n in sample(list(cases), args.sample)}
        selection = f"sample of {args.sample} by crc32 of the name"
    expected = {} if args.no_expected else expected_failures(args.device)
    simulate = True if args.simulate else None
    done = [0]
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"conformance-{args.device.lower()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.jsonl")  # each result as it comes (a long run can be read early)
    partial.write_text("")

    def progress(r):
        with partial.open("a") as f:
            f.write(json.dumps(asdict(r)) + "\n")
        done[0] += 1
        if r.status not in conformance.GOOD:
            print(f"[{done[0]}/{len(cases)}] {r.name}: {r.status}: {r.detail[:200]}", flush=True)
        elif done[0] % 50 == 0:
            print(f"[{done[0]}/{len(cases)}] ...", flush=True)

    results = conformance.run_isolated(cases, args.device, expected, simulate=simulate, jobs=args.jobs,
                                       time_limit=args.time_limit, nice=args.nice, progress=progress)
    from hetpart.targets import cuda_available

    simulated = args.device == "CUDA" and (args.simulate or not cuda_available())
    doc = conformance.report(results, args.device, simulated, time.perf_counter() - start, selection)
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(json.dumps({k: doc[k] for k in ("device", "simulated", "total", "counts", "pass_rate", "wall_seconds")}))
    partial.unlink()
    print(f"wrote {out}")
    return 1 if doc["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
