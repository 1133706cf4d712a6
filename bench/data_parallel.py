"""Data-parallel split across the CPU and the GPU (issue 20): a model at large batches run
all on the GPU, all on the CPU, and split between the two at once; measured ratios and
the partitioner's decision.  The logic is ``hetpart.bench.data_parallel``.

Each (model, batch): the split the cost model picks (or, where it picks none, the best
split that still gives both devices rows, to show where it does not pay), both
single-device builds, every output checked against ONNX Runtime on the whole batch.
Prints one line per way and one with the ratios; writes
bench/results/dataparallel-<gpu>.json (schema ``hetpart-bench-dataparallel``).

On the GPU machine (one call of at most 10 min; --budget stops between batches)::

    source .tvmpack/unpack.sh
    python bench/data_parallel.py --models zoo:dlrm --batches 32,64,128 --budget 480
    python bench/data_parallel.py --models zoo:mobilenet --batches 32,64,128 --budget 480 \\
        --out $OUT/dataparallel-nvidia-h200-mobilenet.json
    # the GPU busy with another model; the split priced with a tenth of the GPU
    python bench/data_parallel.py --models zoo:mobilenet --batches 64,128 --busy zoo:resnet50:batch=32 \\
        --gpu-share 0.1 --budget 480 --out $OUT/dataparallel-nvidia-h200-busy.json

Here (no GPU; CUDA builds simulated on the CPU, numbers meaningless)::

    python bench/data_parallel.py --models zoo:mlp:small --batches 8 --simulate --quick
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hetpart.bench import data_parallel as dp  # noqa: E402
from hetpart.bench import gpu_slug, machine  # noqa: E402
from hetpart.bench.timing import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SETTINGS = Settings(warmup=3, min_repeats=10, max_repeats=100, budget_s=1.5)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    start = time.monotonic()
    info = machine()
    gpu = "simulated" if args.simulate else gpu_slug(info)
    out = Path(args.out or RESULTS / f"dataparallel-{gpu}.json")
    settings = Settings.tiny() if args.tiny else Settings.quick() if args.quick else SETTINGS
    log = (lambda msg: print(f"[{time.monotonic() - start:6.1f} s] {msg}", file=sys.stderr, flush=True))  # noqa: E731
    share = args.gpu_share if args.gpu_share is not None else (0.5 if args.busy else 1.0)
    options = dp.Options(settings=settings, profile=args.profile, simulate=args.simulate,
                         deadline=start + args.budget if args.budget else float("inf"), step=args.step,
                         kernel_options=_kernel_options(args.simulate), busy=args.busy, gpu_share=share, log=log)
    command = "python bench/data_parallel.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results = dp.new_results(info, settings, [command])
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]
    for item in dp.bench(models, batches, options):
        dp.add(results, item)
        dp.save(out, results)
        print(dp.line(item), flush=True)
    dp.save(out, results)
    print(f"wrote {out}", flush=True)
    return 0


def _kernel_options(simulate: bool):
    """This GPU's kernel options; ``HETPART_TF32=0`` asks for full-float32 builds."""
    import os

    from hetpart.kernels.options import DEFAULT, resolve

    return DEFAULT if simulate else resolve(tf32=os.environ.get("HETPART_TF32", "1") != "0")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="zoo:dlrm", help="comma list of zoo specs (rebuilt per batch) or ONNX files "
                   "with a symbolic batch dim (default: %(default)s)")
    p.add_argument("--batches", default="32,64,128", help="comma list of whole batches (default: %(default)s)")
    p.add_argument("--step", type=int, default=None, help="rows per step of the split grid (default: batch // 8)")
    p.add_argument("--profile", default=None, help="cost-model profile (default: the default profile)")
    p.add_argument("--busy", default="", metavar="SPEC",
                   help="keep the GPU busy with this model (all-CUDA, in a loop) while measuring, e.g. "
                        "zoo:resnet50:batch=8")
    p.add_argument("--gpu-share", type=float, default=None,
                   help="the GPU share the split is priced with (default: 0.5 with --busy, else 1)")
    p.add_argument("--budget", type=float, default=0.0, help="seconds; no new batch starts after (0: none)")
    p.add_argument("--simulate", action="store_true", help="CUDA builds run on the CPU (smoke test)")
    p.add_argument("--quick", action="store_true", help="few timed calls")
    p.add_argument("--tiny", action="store_true", help="two timed calls (tests)")
    p.add_argument("--out", default=None, help="results JSON (default: bench/results/dataparallel-<gpu>.json)")
    return p


if __name__ == "__main__":
    sys.exit(main())
