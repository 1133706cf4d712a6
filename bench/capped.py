"""Bigger than the GPU (issue 19): each workload under GPU memory caps below its weight
bytes, hetpart (float32, and ``hetpart bf16``: weights held and streamed in bfloat16,
``precision="cuda=bf16,cpu=fp32"``, outputs checked against ONNX Runtime within 2e-2,
beside its own limit for the bytes it moves) against all-CPU, ONNX Runtime CPU, PyTorch CPU, accelerate's offload and
the llama.cpp-style and ORT-style memory rules, beside the physical limit from
bandwidths measured in the run.  The logic is ``hetpart.bench.capped``.

Workloads: ``bert_large`` (transformers BertConfig, 24 layers, hidden 1024, seq 128,
batch 1), ``llama_prefill`` (a transformers LlamaConfig of TinyLlama-1.1B's shape,
seq 512), ``llama_decode`` (the zoo's decode step: one token against a 2,048-position
KV cache), ``moe`` (the zoo's mixture-of-experts stack, 8 experts top-2, 2.6 GB), ``dlrm``
(``zoo:dlrm:table_rows=1000000,num_tables=26``, 6.7 GB), any ``zoo:NAME[...]`` spec.
The device steps for the LLM, MoE and DLRM rows: ``tools/capped_round.sh``.  Random weights from configs, nothing
downloaded; exports are cached in ``--export-dir``.

Caps: a share of the workload's weight bytes (``1/2``) or bytes (``512MiB``).

Costs: on a machine with a GPU each workload's kernels are measured first (``--profile
auto``, the default; ``quick`` forces it, ``recorded`` plans on the recorded profile,
its missing kernels predicted and counted in the table); CPU weights are priced at the
CPU memory bandwidth measured in the run (``--hot-weights``: as timed alone).  Why:
bench/results/capped-predictions.md.

On the GPU machine (one call of at most 10 min; --budget stops between contenders
and writes what it has; a second call with --skip-done goes on)::

    source .tvmpack/unpack.sh
    # smoke (about 2 min): every contender, torch and accelerate included, on small zoo models
    python bench/capped.py --workloads zoo:llama_decode:small,zoo:moe:small --caps 1/2 --quick \
        --bandwidth-mib 256 --out $OUT/capped-smoke.json
    python bench/capped.py --workloads bert_large --caps 512MiB,1/2,1/3,1/4 --budget 500 \\
        --out $OUT/capped-nvidia-h200.json
    python bench/capped.py --workloads llama_prefill,llama_decode --caps 1/2 --budget 500 \\
        --skip-done bench/results/capped-nvidia-h200.json --out $OUT/capped-nvidia-h200.json
    # float32 against bf16 weights (tools/device_round.sh 16)
    python bench/capped.py --workloads bert_large --caps 512MiB,1/2,1/3,1/4 --contenders "hetpart,hetpart bf16" \\
        --budget 500 --out $OUT/capped-bf16.json
    # bf16 on the GPU, CPU weights float32 against bf16 (the opt-in contender, capped.OPT_IN)
    python bench/capped.py --workloads zoo:moe,zoo:llama_decode --caps 1/2,1/4 \
        --contenders "hetpart bf16,hetpart bf16 cpu-bf16" --budget 500 --out $OUT/capped-cpu-bf16.json

DLRM at several GB: ``--workloads "zoo:dlrm:table_rows=2000000,num_tables=26"`` (13 GB).

Here (no GPU, no torch): ``python bench/capped.py --workloads zoo:mlp:small --simulate --quick``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hetpart.bench import capped, gpu_slug, machine  # noqa: E402
from hetpart.bench.timing import Settings  # noqa: E402
from hetpart.importer.summary import human_bytes  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SETTINGS = Settings(warmup=2, min_repeats=5, max_repeats=30, budget_s=1.0)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    start = time.monotonic()
    gpu = "simulated" if args.simulate else gpu_slug(machine())
    out = Path(args.out or RESULTS / f"capped-{gpu}.json")
    results = capped.load_results(out, gpu)
    done = set()
    if args.skip_done:  # measured there: kept in the output and not measured again
        earlier = [r for r in capped.load_results(Path(args.skip_done), gpu)["records"] if r.get("ms") is not None]
        done = {capped._key(r) for r in earlier}
        results["records"] = [r for r in results["records"] if capped._key(r) not in done] + earlier
    options = capped.Options(
        settings=Settings.quick() if args.quick else SETTINGS,
        profile=None if args.profile in ("recorded", "quick", "auto") else args.profile,
        simulate=args.simulate,
        deadline=start + args.budget - args.reserve if args.budget else float("inf"),
        bandwidth_bytes=args.bandwidth_mib << 20,
        measure=args.profile == "quick" or (args.profile == "auto" and capped.measure_by_default(args.simulate)),
        cold_weights=not args.hot_weights,
        progress=args.verbose,
        kernel_options=_kernel_options(args.simulate),
        contenders=_contenders(args.contenders),
    )
    names = capped.split_names(args.workloads)
    caps = [c for c in args.caps.split(",") if c]
    for item in capped.bench(names, caps, options, Path(args.export_dir), done):
        capped.add(results, item)
        capped.save(out, results)
        print(_line(item), flush=True)
    if options.deadline < time.monotonic():
        print(f"budget of {args.budget:g} s spent: stopped; rerun with --skip-done {out} to go on", flush=True)
    print(f"wrote {out} and {out.with_suffix('.md')}", flush=True)
    return 0


def _kernel_options(simulate: bool):
    """This GPU's kernel options; ``HETPART_TF32=0`` asks for full-float32 builds (read
    here, at the script's edge, as bench/corpus.py does)."""
    import os

    from hetpart.kernels.options import DEFAULT, resolve

    return DEFAULT if simulate else resolve(tf32=os.environ.get("HETPART_TF32", "1") != "0")


def _contenders(text: str) -> tuple[str, ...]:
    if not text:
        return capped.CONTENDERS
    chosen = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in chosen if c not in capped.KNOWN]
    if unknown:
        raise SystemExit(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(capped.KNOWN)}")
    return chosen


def _line(item) -> str:
    if isinstance(item, capped.Record):
        ms = "skipped" if item.ms is None else f"{item.ms:9.2f} ms"
        pred = "" if item.predicted_ms is None else f"  predicted {item.predicted_ms:.2f} ms"
        limit = "" if item.limit_ms is None else f"  limit {item.limit_ms:.2f} ms"
        why = f"  ({item.skipped})" if item.skipped else (f"  [{item.placement or item.note}]"
                                                          if item.placement or item.note else "")
        err = "" if item.rel_error is None else f"  rel err {item.rel_error:.1e}"
        return (f"{item.workload:<16} cap {human_bytes(item.cap_bytes):>10}  {item.contender:<22} {ms}{pred}{limit}"
                f"{err}{why}")
    return "  ".join(f"{k}={v}" for k, v in item.items())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="bert_large,llama_prefill,llama_decode,moe,dlrm",
                   help="comma list: bert_large, llama_prefill, llama_decode, moe, dlrm, zoo:NAME[...]")
    p.add_argument("--caps", default=",".join(capped.DEFAULT_CAPS),
                   help="comma list of shares of the weights (1/2) or bytes (512MiB)")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/capped-<gpu>.json)")
    p.add_argument("--skip-done", default=None, metavar="FILE", help="keep and skip what FILE has measured")
    p.add_argument("--export-dir", default=str(Path.home() / ".cache" / "hetpart" / "capped"),
                   help="cached ONNX exports of the transformers workloads")
    p.add_argument("--contenders", default="",
                   help="comma list of contenders to run (default: all of " + ", ".join(capped.CONTENDERS)
                   + "; run only when named: " + ", ".join(capped.OPT_IN) + ")")
    p.add_argument("--budget", type=float, default=0, help="seconds for the whole call (0: no limit)")
    p.add_argument("--reserve", type=float, default=60,
                   help="seconds of --budget kept free: no contender starts after budget - reserve")
    p.add_argument("--profile", default="auto",
                   help="'auto' (default: 'quick' where there is a GPU, else 'recorded'), 'recorded' (this "
                        "machine's profile, else the shipped recording; kernels it lacks are predicted and "
                        "counted in the table), 'quick' (first measure the workload's kernels and the link with "
                        "few repeats), or a profile PATH")
    p.add_argument("--hot-weights", action="store_true",
                   help="price CPU weights as timed alone (cached), not at the run's CPU memory bandwidth")
    p.add_argument("--bandwidth-mib", type=int, default=1024, help="buffer the bandwidths are measured with")
    p.add_argument("--simulate", action="store_true", help="CUDA partitions compiled and run on the CPU")
    p.add_argument("--quick", action="store_true", help="few repeats (not a publishable number)")
    p.add_argument("--verbose", action="store_true", help="compile progress bars")
    return p


if __name__ == "__main__":
    sys.exit(main())
