"""The whole end-to-end benchmark: every zoo model, the heterogeneous cases, the peers.

Run from the repository root (hetpart need not be installed)::

    PYTHONPATH=. python3 bench/e2e.py --out bench/out --results-md bench/results/<gpu-name>.md

Workloads, cheapest first so a tight time budget loses the least: every zoo model at
full size at batch 1 and at a larger batch (--batches), the oracle check on the
smaller models (mlp, resnet18 at batch 1), dlrm with --gpu-memory below its
embedding tables (compared with all-CPU, and with all-CUDA with the cap lifted),
detector with its post-processing, detector + resnet50 at once in one MultiSession
against one after another, and the PyTorch twins (torchvision ResNet-50,
transformers BERT-base; exported here) against PyTorch eager and ONNX Runtime.

Writes OUT/e2e.json and OUT/e2e.md; --results-md also writes the file to commit
(date, machine, exact commands, tables, goals).  Progress goes to stderr.  Workloads
not started within --budget-min minutes are skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hetpart import bench, models  # noqa: E402
from hetpart.errors import HetpartError  # noqa: E402
from hetpart.targets import cuda_available  # noqa: E402

ORACLE_MODELS = ("mlp", "resnet18")
HETEROGENEOUS = ("detector",)
PAIR = ("detector", "resnet50")
TWINS = ("resnet50_torchvision", "bert_base_transformers")
ORDER = ("mlp", "resnet18", "detector", "dlrm", "resnet50", "bert")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(m for m in ORDER if m in models.names()),
                   help="comma-separated zoo models (default: all)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and oracle candidates")
    p.add_argument("--small", action="store_true", help="the zoo's small variants (a smoke test, not the benchmark)")
    p.add_argument("--simulate", action="store_true", help="CUDA partitions on the CPU (no GPU needed)")
    p.add_argument("--profile", default=None, help="cost-model profile (default: this machine's)")
    p.add_argument("--no-measure", action="store_true",
                   help="do not measure the kernels the profile lacks first (default: measure them on a GPU)")
    p.add_argument("--no-twins", action="store_true", help="skip the exported PyTorch models")
    p.add_argument("--budget-min", type=float, default=9.0, help="start no workload after this many minutes")
    p.add_argument("--out", default="bench/out", help="writes e2e.json and e2e.md here")
    p.add_argument("--results-md", default=None, help="also write the results file to commit here")
    return p.parse_args(argv)


def dlrm_cap(small: bool) -> int:
    """Half the embedding tables' bytes: all-CUDA cannot fit, a CPU+GPU plan can."""
    from hetpart.models.dlrm import FULL, SMALL

    cfg = SMALL if small else FULL
    return cfg.num_tables * cfg.table_rows * cfg.embedding_dim * 4 // 2


def zoo_workloads(names: list[str], batches: list[int], small: bool) -> list[bench.Workload]:
    """Each model at each of ``batches``, and at its own serving batch (dlrm: 256) last."""
    size = ":small" if small else ""
    first, rest = [], []
    # models served batched (dlrm) also run at their serving batch
    serving = {n: models.registry.entry(n).default_batch for n in names}
    served = sorted({b for b in serving.values() if b != 1} - set(batches))
    for batch in batches + served:
        for name in names:
            if batch in served and serving[name] != batch:
                continue
            spec = f"zoo:{name}{size}:batch={batch}"
            out = first if batch == batches[0] else rest
            out.append(bench.Workload(f"{name} b{batch}", spec, batch=batch, heterogeneous=name in HETEROGENEOUS,
                                      oracle=name in ORACLE_MODELS and batch == batches[0]))
            if name == "dlrm":
                out.append(bench.Workload(f"dlrm b{batch} capped", spec, batch=batch, gpu_memory=dlrm_cap(small),
                                          heterogeneous=True))
    return first + rest


def twin_workloads(batches: list[int], out: Path, notes: list[str]) -> list[bench.Workload]:
    from hetpart.bench import export

    found = []
    for name in TWINS:
        for batch in batches:
            try:
                e = export.export(name, batch, out / "onnx")
            except HetpartError as exc:
                notes.append(f"{name} b{batch}: not exported: {exc}")
                continue
            notes.append(f"{name} b{batch}: exported with the {e.exporter} exporter to {e.path}")
            found.append(bench.Workload(f"{name} b{batch}", str(e.path), batch=batch, torch_module=e.module,
                                        torch_input_names=e.input_names))
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    out = Path(args.out)
    names = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]
    settings = bench.Settings.quick() if args.quick else bench.Settings(budget_s=1.0, max_repeats=100)
    gpu = cuda_available() and not args.simulate
    options = bench.Options(settings=settings, simulate=args.simulate, profile=args.profile,
                            measure_missing=gpu and not args.no_measure,
                            oracle_top=2 if args.quick else 4, oracle_random=1 if args.quick else 2)
    notes = [] if gpu else ["no GPU used: CUDA partitions simulated on the CPU"]
    workloads = zoo_workloads(names, batches, args.small)
    if not args.no_twins:
        workloads += twin_workloads(batches, out, notes)
    pair_labels = tuple(f"{m} b{batches[0]}" for m in PAIR if m in names)
    pairs = (bench.Pair(" + ".join(pair_labels), pair_labels),) if len(pair_labels) == 2 else ()
    command = "PYTHONPATH=. python3 bench/e2e.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    report = bench.run(workloads, options, pairs=pairs, commands=[command], notes=notes,
                       deadline=start + args.budget_min * 60)
    report.notes.append(f"total wall time {time.monotonic() - start:.0f} s")
    written = bench.write(report, out / "e2e.json", out / "e2e.md")
    if args.results_md:
        Path(args.results_md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results_md).write_text(bench.render_markdown(report, title=f"hetpart on {report.machine['gpu']}"))
        written.append(Path(args.results_md))
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    print(bench.render_markdown(report))
    return 0 if report.workloads else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
