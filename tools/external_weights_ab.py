"""External vs embedded weights on one all-CPU model: compile and load cost, peak memory.

A GEMV whose weight is ``--mb`` MiB of float32 (``y = x @ W``, every weight byte read
each run), compiled all-CPU twice: ``embedded`` (``external_weights=None``: the weights
inside the library, hetpart before branch big-weights) and ``external``
(``external_weights=0``: the weights in ``p0_cpu.params.bin``, as the default
threshold of 256 MiB does for any partition above it).  Every measurement runs in a
fresh process (``ru_maxrss`` is a process's peak): a build (compile + save), then
``--rounds`` loads of each, alternated A/B: ``load_compiled`` + ``Session`` open + first
run, then 10 runs (min and median), each output checked against numpy.  Prints per variant the min and range of the
times and of the peak RSS, and the RSS split (anonymous / file-backed) after the first
run: an anonymous copy of the weights is what external weights avoid.

    PYTHONPATH=. python tools/external_weights_ab.py --mb 1024 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K = 1024  # rows of W (the input's width)


def _model(mb: int):
    from onnx import TensorProto, helper, numpy_helper

    n = mb * (1 << 20) // (4 * K)
    w = _weight(n)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _weight(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((K, n), dtype=np.float32) / 32


def _rss() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024  # MiB
    fields["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return fields


def child_build(mb: int, variant: str, out: str) -> dict:
    from hetpart import compiler, importer
    from hetpart.partitioner import Partition, Plan

    graph = importer.load(_model(mb))
    order = graph.topological_order()
    plan = Plan(model="gemv", objective="pinned", assignment={k: "cpu" for k in order},
                partitions=[Partition("p0_cpu", "cpu", list(order))], cuts=[], timeline=[], predicted={},
                profile_origin="tool", graph=graph)
    start = time.perf_counter()
    compiled = compiler.compile(plan, progress=False, external_weights=None if variant == "embedded" else 0)
    compiled.save(out)
    seconds = time.perf_counter() - start
    files = {p.name: p.stat().st_size for p in Path(out).iterdir() if p.suffix in (".so", ".bin")}
    return {"compile_s": seconds, "files": files, **_rss()}


def child_load(mb: int, out: str) -> dict:
    from hetpart import compiler
    from hetpart.runtime import Session

    x = np.random.default_rng(1).standard_normal((1, K), dtype=np.float32)
    t0 = time.perf_counter()
    compiled = compiler.load_compiled(out)
    t1 = time.perf_counter()
    session = Session(compiled)
    t2 = time.perf_counter()
    y = session.run({"x": x})["y"]
    t3 = time.perf_counter()
    rss = _rss()
    steady = []
    for _ in range(10):
        t = time.perf_counter()
        session.run({"x": x})
        steady.append(time.perf_counter() - t)
    session.close()
    want = x @ _weight(y.shape[1])
    ok = bool(np.allclose(y, want, rtol=1e-3, atol=1e-3))
    return {"load_s": t1 - t0, "open_s": t2 - t1, "first_run_s": t3 - t2, "run_min_s": min(steady),
            "run_median_s": sorted(steady)[5], "ok": ok, **rss}


def _run(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", choices=["build", "load"])
    p.add_argument("--variant", default="external")
    p.add_argument("--out")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child_build(a.mb, a.variant, a.out) if a.child == "build" else child_load(a.mb, a.out)))
        return
    variants = ("embedded", "external")
    with tempfile.TemporaryDirectory(prefix="ext-ab-") as tmp:
        dirs = {v: str(Path(tmp) / v) for v in variants}
        for v in variants:
            b = _run(["--child", "build", "--mb", str(a.mb), "--variant", v, "--out", dirs[v]])
            print(f"{v:9s} build: {b['compile_s']:.1f} s, peak RSS {b['maxrss_mb']} MiB, files {b['files']}", flush=True)
        loads: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(a.rounds):
            for v in variants:
                loads[v].append(_run(["--child", "load", "--mb", str(a.mb), "--out", dirs[v]]))
        for v in variants:
            rows = loads[v]
            print(f"{v:9s} load ({len(rows)} fresh processes; min [range]):")
            for key in ("load_s", "open_s", "first_run_s", "run_min_s", "run_median_s", "maxrss_mb", "RssAnon",
                        "RssFile", "RssShmem"):
                vals = [r[key] for r in rows]
                print(f"    {key:13s} {min(vals):9.3f} [{min(vals):.3f} .. {max(vals):.3f}]")
            print(f"    outputs right: {all(r['ok'] for r in rows)}")


if __name__ == "__main__":
    main()
