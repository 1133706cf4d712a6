"""CPU sharing A/B without a GPU: CPU partitions of several sessions running at once.

The serving tail of issue 20 (detector+ResNet-50) came from CPU partitions of
concurrent runs, each on its own calling thread's TVM pool, overlapping on the same
pinned cores (:mod:`hetpart.runtime.cpu_share`).  This reproduces it on the CPU alone:
``callers`` threads, each with its own Session of the same all-CPU model (as the lane
threads and bucket sessions of a server), run back to back for ``seconds``; per
policy (``gate``, ``split:N``, ``none``) the run latencies alone (one caller) and
together, the runs per second together, and the OS threads of the process after::

    PYTHONPATH=. python3 -m hetpart.bench.serve_cpu_share --callers 2 --policies none,gate,split
    PYTHONPATH=. python3 -m hetpart.bench.serve_cpu_share --model zoo:detector --policies none,gate,split:4 --callers 2,4

The model: the synthetic chain of :mod:`hetpart.runtime.synthetic` (one parallel CPU
partition, ``--work`` sets its cost), or ``--model`` (a zoo spec or .onnx file)
compiled all-CPU.  Every answer is checked against the first answer of its payload.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class PolicyResult:
    policy: str
    callers: int
    alone_p50_ms: float
    alone_p99_ms: float
    together_p50_ms: float
    together_p99_ms: float
    runs_per_s: float
    cpu_ms_per_run: float  # process CPU time (user + system) per run together: spinning shows here
    os_threads: int | None
    wrong: int

    def line(self) -> str:
        return (f"{self.policy:<8} alone p50 {self.alone_p50_ms:7.2f} p99 {self.alone_p99_ms:7.2f} ms | "
                f"{self.callers} together p50 {self.together_p50_ms:7.2f} p99 {self.together_p99_ms:7.2f} ms, "
                f"{self.runs_per_s:8.1f} runs/s, {self.cpu_ms_per_run:6.2f} CPU ms/run | {self.os_threads} OS threads | wrong {self.wrong}")


def _os_threads() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _model(spec: str | None, work: int, shape: int):
    """(compiled all-CPU model, feeds maker)."""
    if spec is None:
        from ..runtime.synthetic import chain

        model = chain(["cpu"], (shape, shape), work=work, parallel=True)
        rng = np.random.default_rng(0)
        return model, lambda k: {"x": rng.standard_normal((shape, shape)).astype(np.float32)}
    import hetpart
    from hetpart import models as zoo
    from hetpart.backend import forced_plan

    graph = hetpart.load(spec)
    model = hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)
    from .serve_models import _zoo_proto

    proto = _zoo_proto(spec) if spec.startswith("zoo:") else __import__("onnx").load(spec)
    return model, lambda k: zoo.example_inputs(proto, seed=100 + k)


def _loop(session, payloads, answers, seconds: float, lat: list, wrong: list) -> None:
    end = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < end:
        i = k % len(payloads)
        t = time.perf_counter()
        out = session.run(payloads[i])
        lat.append(time.perf_counter() - t)
        if any(not np.array_equal(out[n], answers[i][n]) for n in answers[i]):
            wrong.append(i)
        k += 1


def measure(model, payloads, policy: str, callers: int, seconds: float) -> PolicyResult:
    """One policy: ``callers`` sessions of ``model``, alone then together."""
    from hetpart import Session

    sessions = [Session(model, cpu_sharing=policy) for _ in range(callers)]
    try:
        answers = [sessions[0].run(p) for p in payloads]
        for s in sessions[1:]:
            s.run(payloads[0])
        alone, wrong = [], []
        _loop(sessions[0], payloads, answers, seconds / 2, alone, wrong)
        lats = [[] for _ in sessions]
        threads = [threading.Thread(target=_loop, args=(s, payloads, answers, seconds, lats[k], wrong))
                   for k, s in enumerate(sessions)]
        start, cpu = time.perf_counter(), os.times()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took, cpu_end = time.perf_counter() - start, os.times()
        together = [x for v in lats for x in v]
        ms = lambda v, q: float(np.percentile(v, q) * 1e3)  # noqa: E731
        return PolicyResult(policy, callers, ms(alone, 50), ms(alone, 99), ms(together, 50), ms(together, 99),
                            len(together) / took,
                            (cpu_end.user + cpu_end.system - cpu.user - cpu.system) * 1e3 / max(len(together), 1),
                            _os_threads(), len(wrong))
    finally:
        for s in sessions:
            s.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", default="none,gate,split")
    p.add_argument("--callers", default="2", help="comma-separated caller counts, each a round of every policy")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--model", default=None, help="zoo spec or .onnx (default: the synthetic chain)")
    p.add_argument("--work", type=int, default=64, help="synthetic chain: reduction length per element")
    p.add_argument("--shape", type=int, default=256, help="synthetic chain: square tensor side")
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args(argv)
    from hetpart.runtime import cpu_share

    model, make = _model(args.model, args.work, args.shape)
    payloads = [make(k) for k in range(4)]
    results = []
    for callers in [int(c) for c in args.callers.split(",") if c]:
        for policy in [x for x in args.policies.split(",") if x]:
            r = measure(model, payloads, cpu_share.parse(policy).name, callers, args.seconds)
            print(r.line(), flush=True)
            results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": [asdict(r) for r in results], "shares": cpu_share.records(),
                       "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}, f, indent=1)
    return 0 if all(r.wrong == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
