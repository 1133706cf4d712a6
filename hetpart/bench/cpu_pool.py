"""A/B of hetpart's CPU thread pool: size (every core, or one left free) and pinning.

Why (issue 18, "ResNet-50 did not scale from 8 to 16 threads"): hetpart's default pool
(:mod:`hetpart.cpu_cores`) is one thread per physical core, and TVM 0.27's pool is a
static fork-join: ``TVM_NUM_THREADS - 1`` workers each **pinned** to one core
(``sorted_order_[1..n-1]``, ``threading_backend.cc``) plus the calling thread, free on
the first ``n`` cores, running task 0; every parallel kernel waits for its slowest
task.  In an all-CPU run nothing of hetpart's competes (an idle session runs inline on
the caller; its worker and collector threads block on queues), but any other runnable
thread on a worker's core -- a daemon of the machine, another pool's leftover spin --
holds that one task back for a scheduler time slice, since a pinned worker cannot
move and no other worker takes its task.  ONNX Runtime's intra-op threads, by
contrast, are not pinned when their count is set and split loops dynamically.  Leaving
one core free (``cores - 1``) or unpinning (``TVM_BIND_THREADS=0``) are the two cheap
remedies; this benchmark measures whether either pays on a given machine.

In: models (zoo specs or ONNX files with static shapes), rounds, runs.  Out: per model
and variant, the median over rounds of each round's median and least run (ms), with
ONNX Runtime on every core as the reference.  Every variant runs in a fresh
subprocess (``TVM_NUM_THREADS``/``TVM_BIND_THREADS`` are read when a thread's pool is
made), on one all-CPU build made once, variants interleaved round by round so a
neighbour's load hits them alike; nothing else of the benchmark runs meanwhile.

    python -m hetpart.bench.cpu_pool zoo:resnet50 /tmp/corpus/mobilenet_v2-b1.onnx --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Variant:
    """One pool configuration: its label and the environment it runs under (``ort``:
    ONNX Runtime's CPU session on ``threads`` intra-op threads instead of hetpart)."""

    label: str
    threads: int
    env: dict = field(default_factory=dict)
    ort: bool = False


def variants(cores: int) -> list[Variant]:
    """The A/B grid on ``cores`` physical cores: hetpart's default (every core, pinned),
    one core left free, unpinned, both; and ORT on every core.  Sizes below 1 are
    dropped (a 1-core machine has only the pinned/unpinned pair)."""
    grid = []
    for n in dict.fromkeys((cores, cores - 1)):
        if n < 1:
            continue
        for bind in ("1", "0"):
            grid.append(Variant(f"hetpart {n} {'pinned' if bind == '1' else 'unpinned'}", n,
                                {"TVM_NUM_THREADS": str(n), "TVM_BIND_THREADS": bind}))
    grid.append(Variant(f"ORT {cores}", cores, ort=True))
    return grid


def summarize(samples: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant label, from its rounds' ``{"median_ms", "min_ms"}``: the median of
    each over the rounds, and the rounds' count."""
    return {label: {"median_ms": float(np.median([r["median_ms"] for r in rs])),
                    "min_ms": float(np.median([r["min_ms"] for r in rs])), "rounds": len(rs)}
            for label, rs in samples.items() if rs}


def build(model_spec: str, out_dir: Path) -> None:
    """The all-CPU build of ``model_spec`` saved to ``out_dir`` (every kernel pinned to
    the CPU, as ``bench/corpus.py`` builds a CPU record)."""
    import hetpart
    from hetpart.importer.onnx_source import read_source
    from hetpart.partitioner import Pin

    graph = hetpart.load(read_source(model_spec).model)
    plan = hetpart.partition(graph, pins=[Pin(k.id, "cpu") for k in graph.nodes], progress=False)
    hetpart.compile(plan, graph, progress=False).save(out_dir)


def _feeds(model_spec: str) -> dict:
    from hetpart.importer.onnx_source import read_source
    from hetpart.models import example_inputs

    return example_inputs(read_source(model_spec).model, seed=0)


def worker(model_spec: str, build_dir: str | None, threads: int, runs: int) -> dict:
    """One variant's round, in this (fresh) process: warm-up, wait for quiet, ``runs``
    timed calls.  ``build_dir`` None: ONNX Runtime on ``threads`` threads."""
    import time

    from hetpart.bench.settle import settle

    feeds = _feeds(model_spec)
    if build_dir is None:
        from hetpart.bench.peers import ort_session
        from hetpart.importer.onnx_source import read_source

        sess = ort_session(read_source(model_spec).model, threads=threads)
        call = lambda: sess.run(None, feeds)  # noqa: E731
        pool = threads
    else:
        import hetpart
        from hetpart.cpu_cores import pool_size

        session = hetpart.Session(build_dir)
        names = [t.name for t in session.compiled.inputs]
        run_feeds = feeds if set(names) == set(feeds) else dict(zip(names, feeds.values()))
        call = lambda: session.run(run_feeds)  # noqa: E731
        pool = pool_size()
    for _ in range(3):
        call()
    waited = settle().waited_s
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "min_ms": float(min(times)), "pool": pool,
            "bind": os.environ.get("TVM_BIND_THREADS", "1"), "settle_ms": round(waited * 1e3, 1)}


def _run_variant(v: Variant, model_spec: str, build_dir: Path, runs: int, timeout: float) -> dict | str:
    cmd = [sys.executable, "-m", "hetpart.bench.cpu_pool", "--worker", model_spec, "--threads", str(v.threads),
           "--runs", str(runs)] + ([] if v.ort else ["--build-dir", str(build_dir)])
    env = {**os.environ, **v.env}
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help="zoo specs or ONNX files with static input shapes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=30, help="timed calls per variant per round")
    p.add_argument("--cores", type=int, default=None, help="physical cores (default: hetpart.cpu_cores)")
    p.add_argument("--timeout", type=float, default=120, help="seconds per variant's subprocess")
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    p.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--build-dir", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.build_dir, a.threads, a.runs)), flush=True)
        return 0
    from hetpart.cpu_cores import physical_cores

    cores = a.cores or physical_cores()
    grid = variants(cores)
    report = {"cores": cores, "rounds": a.rounds, "runs": a.runs, "models": {}}
    for spec in a.models:
        with tempfile.TemporaryDirectory(prefix="hetpart-pool-") as tmp:
            build(spec, Path(tmp) / "cpu")
            samples: dict[str, list[dict]] = {v.label: [] for v in grid}
            errors: dict[str, str] = {}
            for _ in range(a.rounds):
                for v in grid:
                    r = _run_variant(v, spec, Path(tmp) / "cpu", a.runs, a.timeout)
                    if isinstance(r, str):
                        errors[v.label] = r
                    else:
                        samples[v.label].append(r)
        table = summarize(samples)
        report["models"][spec] = {"variants": table, "errors": errors}
        print(f"{spec}: {cores} cores, median over {a.rounds} rounds of {a.runs} runs each, fresh process per run")
        ref = table.get(grid[-1].label, {}).get("median_ms")
        for v in grid:
            row = table.get(v.label)
            if row is None:
                print(f"  {v.label:<22} failed: {errors.get(v.label, '?')}")
                continue
            vs = f"   {row['median_ms'] / ref:5.2f}x ORT" if ref and not v.ort else ""
            print(f"  {v.label:<22} median {row['median_ms']:9.3f} ms   least {row['min_ms']:9.3f} ms{vs}", flush=True)
        if a.json:  # after every model: a run cut by a time limit keeps the models done
            Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
