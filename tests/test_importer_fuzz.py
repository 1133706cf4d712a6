"""Fuzzed models (issue 21): mutants of the small zoo models, bytes and structure,
seeded.  Each must end in a clean typed error (HetpartError) or a correct result
(output shapes, and for the first few compiled mutants values, as onnxruntime /
onnx.reference compute them) -- never a crash, a hang, an internal error or an
output shape that disagrees with ONNX.

The mutants run in worker processes (:mod:`fuzz_models`), so a crash kills only a
worker: the parent sees a mutant started without a verdict, records it, and starts
a new worker on the rest.  The tally is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SEED = 21
MUTANTS = int(os.environ.get("HETPART_FUZZ_MUTANTS", "320"))
WORKERS = 2
COMPILED = 1  # per worker: the first mutants that import are also compiled and run
HANG_S = 120  # no single mutant may take longer


def _worker(indices: list[int]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p),
           "TVM_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(HERE / "fuzz_models.py"), str(SEED), str(COMPILED),
                             *map(str, indices)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)


def _lines(proc: subprocess.Popen, q: queue.Queue) -> None:
    for line in proc.stdout:
        q.put(line)
    q.put(None)


def _run_share(indices: list[int], results: dict) -> None:
    """Judge ``indices`` in one worker at a time, restarting after a crash or hang."""
    todo = list(indices)
    while todo:
        proc, q = _worker(todo), queue.Queue()
        threading.Thread(target=_lines, args=(proc, q), daemon=True).start()
        current = None
        while True:
            try:
                line = q.get(timeout=HANG_S)
            except queue.Empty:
                proc.kill()
                results[current if current is not None else todo[0]] = {"verdict": "hang"}
                break
            if line is None:  # the worker ended: done, or crashed inside ``current``
                proc.wait()
                if current is not None:
                    results[current] = {"verdict": "crash", "error": f"exit code {proc.returncode}"}
                break
            if not line.startswith("FUZZ "):
                continue  # TVM or a library printing to stdout
            msg = json.loads(line[5:])
            if msg.get("start"):
                current = msg["i"]
            else:
                results[msg["i"]] = msg
                current = None
        todo = [i for i in todo if i not in results]


@pytest.mark.slow
def test_fuzzed_zoo_models_give_typed_errors_or_correct_results():
    import fuzz_models  # noqa: F401 - fail here, not in every worker, if it does not import

    results: dict[int, dict] = {}
    shares = [list(range(w, MUTANTS, WORKERS)) for w in range(WORKERS)]
    threads = [threading.Thread(target=_run_share, args=(s, results)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally = Counter(r["verdict"] for r in results.values())
    compiled = sum(bool(r.get("compiled")) for r in results.values())
    print(f"\nfuzz tally over {len(results)} mutants (seed {SEED}): " +
          ", ".join(f"{k} {v}" for k, v in sorted(tally.items())) + f"; compiled and run {compiled}")
    bad = {i: r for i, r in results.items() if r["verdict"] not in ("typed", "correct", "unverified")}
    for i, r in sorted(bad.items()):
        print(f"  mutant {i}: {r}")
    assert len(results) == MUTANTS
    assert not bad, f"{len(bad)} mutants crashed, hung, raised an internal error or disagree with ONNX"
    assert tally["correct"] > 0 and tally["typed"] > 0
