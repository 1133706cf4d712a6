"""int8 on the CPU (issue 18): hetpart all-CPU vs ONNX Runtime int8 CPU on models
quantised by ORT's quantizer (``hetpart.bench.int8`` says how and what a record holds).

    python bench/int8.py                                   # zoo models, both quantisations
    python bench/int8.py --models zoo:bert,zoo:resnet50 --quant dynamic
    python bench/int8.py --models zoo:gpt2 --quant dynamic --set hetpart.kernels.rules.cpu_int8_matmul.AMX_INT8=0
    python bench/int8.py --onnx bert=/tmp/corpus/bert-b1.onnx   # a corpus export (bench/corpus.py)
    python bench/int8.py --models zoo:gpt2:layers=2 --quant dynamic --threads 2 --kernels
                                                           # + per-kernel table vs ORT's profiler

On the GPU machine (the CPU of the H200 host; no GPU is used)::

    source .tvmpack/unpack.sh
    python3 bench/int8.py --export-dir /tmp/int8 --out $OUT/int8-nvidia-h200.json

Writes ``bench/results/int8-<gpu>.json`` (schema ``hetpart-corpus``, records with
``precision: "int8"``), one record per model and quantisation, as they come.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hetpart.bench import gpu_slug, machine  # noqa: E402
from hetpart.bench.int8 import FLOOR, QUANTIZATIONS, SCHEMA, SLACK, VERSION, run_model  # noqa: E402
from hetpart.contracts import write_json  # noqa: E402

DEFAULT_MODELS = "zoo:bert,zoo:resnet18,zoo:mobilenet,zoo:gpt2"


def _float_model(spec: str, export_dir: Path, onnx_paths: dict) -> tuple[str, Path]:
    """(record name, float ONNX path) of a ``zoo:NAME[:small]`` spec or an ``--onnx`` name."""
    if spec in onnx_paths:
        return spec, Path(onnx_paths[spec])
    from hetpart import models

    name, small, cfg = models.parse_zoo_spec(spec)
    path = export_dir / (spec.replace(":", "_") + ".onnx")
    if not path.exists():
        export_dir.mkdir(parents=True, exist_ok=True)
        models.save(models.build(name, small, **cfg), path)
    return spec, path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated zoo specs (zoo:NAME[:small])")
    ap.add_argument("--onnx", action="append", default=[], metavar="NAME=PATH", help="a float ONNX file to quantise")
    ap.add_argument("--quant", default=",".join(QUANTIZATIONS), help="comma-separated: dynamic, qdq")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per measurement (median)")
    ap.add_argument("--export-dir", default="/tmp/hetpart-int8", help="float and quantised models are cached here")
    ap.add_argument("--out", help="output JSON (default bench/results/int8-<gpu>.json)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both runtimes (default: hetpart's pool, one per physical core)")
    ap.add_argument("--kernels", action="store_true",
                    help="also each model's per-kernel table against ORT's profiler (printed, and in the record)")
    ap.add_argument("--set", action="append", default=[], metavar="module.ATTR=value",
                    help="a module switch for hetpart's builds (tools/cpu_rule_ab.py's form), e.g. "
                         "hetpart.kernels.rules.cpu_int8_matmul.AMX_INT8=0")
    ap.add_argument("--verbose", action="store_true",
                    help="show TVM's own log on stderr (otherwise it goes to ~/.cache/hetpart/tvm.log, as the CLI's)")
    args = ap.parse_args(argv)
    if args.verbose:
        return _run(args)
    from hetpart.cli.tvm_log import TvmLog, default_path

    log = TvmLog(default_path(), "bench/int8.py " + " ".join(sys.argv[1:] if argv is None else argv))
    with log:
        rc = _run(args)
    if log.wrote:
        print(f"TVM's own log of this run: {log.path}")
    return rc


def _run(args) -> int:
    """The benchmark of :func:`main`'s parsed ``args``: each model and quantisation, one record
    each, written as they finish; 0 when every record passes."""
    from hetpart.bench.switches import apply_switches, parse_switches

    apply_switches(parse_switches(args.set))  # for the whole run

    onnx_paths = dict(item.split("=", 1) for item in args.onnx)
    specs = list(onnx_paths) + [m for m in args.models.split(",") if m and not args.onnx]
    info = machine()
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"int8-{gpu_slug(info)}.json"
    host = info["cpu"]
    records = []
    for spec in specs:
        name, path = _float_model(spec, Path(args.export_dir), onnx_paths)
        for quant in args.quant.split(","):
            record = run_model(name, path, quant, repeat=args.repeat, work_dir=Path(args.export_dir),
                               threads=args.threads, kernels=args.kernels)
            record["host"] = host
            if args.set:
                record["switches"] = args.set
            records.append(record)
            table = record.pop("kernel_table", None)
            print(json.dumps(record), flush=True)
            if table:
                print(table, flush=True)
                record["kernel_table"] = table
            write_json(out, SCHEMA, VERSION, {
                "relative_error": "max|a-b| / max|b| per output (a: hetpart all-CPU, b: ONNX Runtime int8 CPU), "
                                  "largest over outputs",
                "tolerance": f"max({FLOOR}, {SLACK} x ORT int8's relative error to the float model)", "machine": info, "records": records})
    print(f"wrote {out}")
    return 0 if all(r["status"] == "pass" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
