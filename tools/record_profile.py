"""Record the shipped cost-model profile: every zoo model's kernels + the transfer model.

Run on the GPU machine from the repository root (hetpart need not be installed)::

    PYTHONPATH=. python3 tools/record_profile.py --out hetpart/costmodel/recorded/h100.json

Measures, for cpu and cuda, every distinct kernel of every zoo model at full size
(batch 1, plus batch 32 of the models in --batch32), the per-call overheads and
the host<->GPU transfer model, into --out.  Re-running resumes: kernels already in
the file are skipped (so an interrupted run loses nothing).  Prints the time each
model took and, at the end, whether every model's kernels are covered.
Budget: under ~8 minutes on a 16-core CPU + H100; --quick takes fewer repeats.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="profile JSON to write (resumed if it exists)")
    ap.add_argument("--models", default=None, help="comma list of zoo models (default: all)")
    ap.add_argument("--batch32", default="resnet50,bert",
                    help="models also profiled at batch 32 (comma list; '' for none)")
    ap.add_argument("--also", default="",
                    help="more zoo specs to profile, comma list (e.g. zoo:resnet50:batch=8)")
    ap.add_argument("--devices", default=None, help="comma list (default: cpu,cuda; cpu only without a GPU)")
    ap.add_argument("--small", action="store_true", help="the small zoo variants (a smoke test)")
    ap.add_argument("--quick", action="store_true", help="fewer timing repeats")
    ap.add_argument("--no-transfer", action="store_true", help="skip the transfer model")
    ap.add_argument("--retransfer", action="store_true", help="measure transfers even if the file has them")
    ap.add_argument("--session", action="store_true", help="measure the session overheads even if the file has them")
    ap.add_argument("--jobs", type=int, default=None, help="build worker processes (default: all cores)")
    args = ap.parse_args(argv)

    from hetpart import importer, models
    from hetpart.costmodel import measure_transfers, profile
    from hetpart.costmodel.build_pool import BuildPool
    from hetpart.costmodel.kernel_bench import MeasureSettings
    from hetpart.costmodel.profiler import open_profile
    from hetpart.costmodel.transfer_bench import QUICK_SIZES, SIZES
    from hetpart.errors import HetpartError
    from hetpart.targets import cuda_available, num_cores

    t_start = time.perf_counter()
    out = Path(args.out)
    names = args.models.split(",") if args.models else models.names()
    specs = [f"zoo:{n}" + (":small" if args.small else "") for n in names]
    specs += [f"zoo:{n}" + (":small" if args.small else "") + ":batch=32"
              for n in filter(None, args.batch32.split(",")) if n in names]
    specs += [s for s in args.also.split(",") if s]
    devices = tuple(args.devices.split(",")) if args.devices else (("cpu", "cuda") if cuda_available() else ("cpu",))
    settings = MeasureSettings.quick() if args.quick else MeasureSettings()
    print(f"recording {len(specs)} models on {', '.join(devices)} into {out}", flush=True)

    graphs = {}
    pool = BuildPool(args.jobs or num_cores())  # one set of build workers for every model
    for spec in specs:
        t0 = time.perf_counter()
        try:
            graph = importer.load(spec)
        except HetpartError as exc:
            print(f"{spec}: SKIPPED, import failed: {exc}", flush=True)
            continue
        t1 = time.perf_counter()
        prof = profile(graph, devices, out, settings=settings, pool=pool,
                       label=spec[len("zoo:"):])
        rep = prof.last_report
        graphs[spec] = graph
        counts = ", ".join(f"{d}: {rep.measured[d]} new ({rep.failed[d]} failed), {rep.reused[d]} reused"
                           for d in devices)
        print(f"{spec}: {len(graph)} kernels; import {t1 - t0:.1f} s, profile {rep.seconds:.1f} s; {counts}",
              flush=True)

    pool.close()
    prof = open_profile(out)
    if "cuda" in devices and not args.no_transfer and (prof.transfers is None or args.retransfer):
        t0 = time.perf_counter()
        prof.transfers = measure_transfers(QUICK_SIZES if args.quick else SIZES, repeats=10 if args.quick else 20)
        prof.save()
        for key, fit in sorted(prof.transfers.fits.items()):
            print(f"transfer {key:<14} latency {fit.latency_s * 1e6:7.1f} us, {fit.bandwidth_Bps / 1e9:6.2f} GB/s")
        print(f"transfers: {time.perf_counter() - t0:.1f} s", flush=True)
    if "cuda" in devices and (args.session or not any(o.session_s for o in prof.overheads.values())):
        from hetpart.runtime.overhead import session_overheads

        t0 = time.perf_counter()
        prof.set_session_overheads(session_overheads(repeats=100 if args.quick else 300))
        prof.save()
        print("session overhead per partition: " + ", ".join(
            f"{d} {o.session_s * 1e6:.1f} us" for d, o in sorted(prof.overheads.items()))
            + f" ({time.perf_counter() - t0:.1f} s)", flush=True)

    missing = [(spec, d) for spec, g in graphs.items() for d in devices
               for k in g.nodes if prof.record(d, k.signature) is None]
    print(f"coverage: {'complete' if not missing else f'{len(missing)} kernels missing'}; "
          f"total {time.perf_counter() - t_start:.1f} s; wrote {out}")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
