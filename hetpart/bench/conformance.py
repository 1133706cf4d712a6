"""ONNX operator conformance: the onnx package's backend node tests through hetpart.

In: test names of ``onnx.backend.test`` node cases (one-node models with inputs and
expected outputs), a device (``"CPU"``/``"CUDA"``) and the reviewed table of
expected failures (name -> (category, reason)).  Out: one :class:`CaseResult` per
case and their counts (``hetpart-conformance`` JSON).

A case is run through :mod:`hetpart.backend` and compared with the onnx runner's
own ``assert_similar_outputs`` (the tolerances the test case carries).  Raw
outcomes: ``pass``, ``wrong`` (ran, outputs differ), ``typed-error`` (a
:class:`~hetpart.errors.HetpartError`: hetpart says it cannot run the model),
``internal-error`` (any other exception: a bug), ``crash`` (the process died) and
``hang`` (past the time limit).  Against the table, a listed case that fails with a
typed error (categories :data:`WRONG_ALLOWED`: a wrong result) is
``expected-fail``; a listed case that passes is ``unexpected-pass``
(the table must lose it); anything else but ``pass``/``expected-fail`` is a
failure of the run.

Cases run in worker processes (:func:`run_isolated`) so a crash or hang costs one
case, not the run: a worker announces each case before it starts it; when it dies
or goes silent past the time limit, that case is recorded and a fresh worker takes
the rest.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

SCHEMA = "hetpart-conformance"
VERSION = 2  # 2: passing tests listed by name in "passed", details cut to DETAIL_CHARS
DETAIL_CHARS = 160
GOOD = ("pass", "expected-fail")
"""Final statuses that do not fail a conformance run."""
WRONG_ALLOWED = ("precision", "nan", "edge-case", "gpu-wrong")
"""Expected-failure categories that may end as a wrong result (listed open bugs)."""
_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding this hetpart package
_MARK = "@@hetpart-conformance "  # prefixes the worker's protocol lines on stdout


@dataclass
class CaseResult:
    """One test case's outcome; ``status`` is final (after the expected-failure table)."""

    name: str
    status: str
    detail: str = ""
    category: str = ""  # the table's category for expected failures
    seconds: float = 0.0


def load_cases(names=None) -> dict:
    """The onnx package's node test cases (generated in memory, ~15 s), by test name."""
    import onnx.backend.test.loader as loader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators divide by zero on purpose
        cases = {c.name: c for c in loader.load_model_tests(kind="node")}
    if names is None:
        return cases
    missing = sorted(set(names) - set(cases))
    if missing:
        raise KeyError(f"no onnx node test named {missing[:5]}")
    return {n: cases[n] for n in names}


def run_case(case, device: str = "CPU", simulate: bool | None = None) -> tuple[str, str]:
    """Run one test case in this process -> (raw status, detail)."""
    import numpy as np
    from onnx.backend.test.runner import Runner

    from ..backend import HetpartBackend
    from ..errors import HetpartError

    def arrays(items):
        return [item if isinstance(item, (list, dict)) else _to_array(item) for item in items]

    try:
        rep = HetpartBackend.prepare(case.model, device, simulate=simulate)
        try:
            for inputs, expected in case.data_sets:
                got = rep.run(arrays(inputs))
                try:
                    Runner.assert_similar_outputs(arrays(expected), got, rtol=case.rtol, atol=case.atol)
                except (AssertionError, TypeError, ValueError) as exc:
                    return "wrong", _short(exc)
        finally:
            rep.close()
    except HetpartError as exc:
        return "typed-error", f"{type(exc).__name__}: {_short(exc)}"
    except Exception as exc:  # noqa: BLE001 - anything else is a bug to report
        return "internal-error", f"{type(exc).__name__}: {_short(exc)}"
    del np
    return "pass", ""


def _to_array(item):
    import numpy as np
    import onnx

    if isinstance(item, onnx.TensorProto):
        return onnx.numpy_helper.to_array(item)
    return np.asarray(item) if not isinstance(item, np.ndarray) else item


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def judge(name: str, raw: str, detail: str, expected: dict, seconds: float = 0.0) -> CaseResult:
    """Raw outcome + the expected-failure table -> the final :class:`CaseResult`.

    A listed case must fail with a typed error (its category says why hetpart cannot
    run it), or, in a :data:`WRONG_ALLOWED` category, with a wrong result; failing any other way keeps the raw status, passing is ``unexpected-pass``.
    """
    if name not in expected:
        return CaseResult(name, raw, detail, "", seconds)
    category, reason = expected[name]
    if raw == "pass":
        return CaseResult(name, "unexpected-pass", f"listed as expected to fail ({category}: {reason}) "
                          "but passes: remove it from tests/conformance/expected_failures.py", category, seconds)
    if raw == "typed-error" or (raw == "wrong" and category in WRONG_ALLOWED):
        return CaseResult(name, "expected-fail", f"{reason} [{detail}]", category, seconds)
    return CaseResult(name, raw, detail, category, seconds)


def counts(results) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r.status] = out.get(r.status, 0) + 1
    return dict(sorted(out.items()))


def report(results, device: str, simulate: bool, seconds: float, selection: str) -> dict:
    """The ``hetpart-conformance`` JSON document of a run."""
    results = sorted(results, key=lambda r: r.name)
    c = counts(results)
    total = len(results)
    return {
        "schema": SCHEMA, "version": VERSION, "device": device, "simulated": simulate,
        "selection": selection, "total": total, "counts": c,
        "pass_rate": round(c.get("pass", 0) / total, 4) if total else 0.0,
        "failures": sum(v for k, v in c.items() if k not in GOOD), "wall_seconds": round(seconds, 1),
        # Compact, as the file is committed: passing tests by name, the rest with status
        # and the first DETAIL_CHARS of what happened (the table holds the full reasons).
        "passed": [r.name for r in results if r.status == "pass"],
        "tests": {r.name: {"status": r.status, "detail": r.detail[:DETAIL_CHARS]}
                  for r in results if r.status != "pass"},
    }


# --- crash isolation -------------------------------------------------------------
def run_isolated(cases: dict, device: str, expected: dict, *, simulate: bool | None = None,
                 jobs: int = 1, time_limit: float = 300.0, nice: int = 0, progress=None) -> list[CaseResult]:
    """Run ``cases`` (name -> TestCase) in ``jobs`` worker processes; one result per case.

    ``time_limit`` seconds without a finished case kills the worker (the case is a
    ``hang``); a worker that dies makes its case a ``crash``.  ``progress(result)`` is
    called for each result.
    """
    todo = sorted(cases)
    lock = threading.Lock()
    results: list[CaseResult] = []

    def take(n: int) -> list[str]:
        with lock:
            chunk = todo[:n]
            del todo[:n]
            return chunk

    def record(r: CaseResult) -> None:
        with lock:
            results.append(r)
        if progress is not None:
            progress(r)

    def worker_loop() -> None:
        while chunk := take(25):
            while chunk:
                chunk = _run_chunk({n: cases[n] for n in chunk}, device, simulate, expected, time_limit,
                                   nice, record)

    threads = [threading.Thread(target=worker_loop, daemon=True) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _run_chunk(chunk: dict, device, simulate, expected, time_limit, nice, record) -> list[str]:
    """Run ``chunk`` in one worker; returns the names left when the worker died or hung."""
    with tempfile.TemporaryDirectory(prefix="hetpart-conf-") as tmp:
        payload = Path(tmp) / "cases.pkl"
        payload.write_bytes(pickle.dumps(list(chunk.values())))
        errlog = open(Path(tmp) / "stderr.txt", "w+b")  # noqa: SIM115 - closed below
        cmd = [sys.executable, "-m", "hetpart.bench.conformance", "--worker", str(payload), device,
               json.dumps(simulate)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, start_new_session=True, env=env,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)
        left = list(chunk)
        current, started = None, time.monotonic()
        buf = b""
        try:
            while left:
                ready, _, _ = select.select([proc.stdout], [], [], 1.0)
                if ready:
                    data = os.read(proc.stdout.fileno(), 65536)
                    if not data:  # the worker exited
                        break
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        msg = _parse(line)
                        if msg is None:
                            continue
                        if "start" in msg:
                            current, started = msg["start"], time.monotonic()
                        else:
                            record(judge(msg["name"], msg["status"], msg["detail"], expected, msg["seconds"]))
                            left.remove(msg["name"])
                            current = None
                elif time.monotonic() - started > time_limit:  # silent past the limit (a case, or start-up)
                    _kill(proc)
                    victim = current or left[0]
                    record(judge(victim, "hang", f"no result after {time_limit:.0f} s; killed", expected,
                                 time.monotonic() - started))
                    left.remove(victim)
                    return left
            proc.wait()
            if left:
                errlog.seek(0)
                tail = " | ".join(errlog.read().decode(errors="replace").strip().splitlines()[-3:])
                victim = current or left[0]
                why = _exit_reason(proc.returncode)
                record(judge(victim, "crash", f"worker died ({why}) running this case: {tail[-300:]}", expected,
                             time.monotonic() - started))
                left.remove(victim)
            return left
        finally:
            if proc.poll() is None:
                _kill(proc)
            errlog.close()


def _parse(line: bytes):
    text = line.decode(errors="replace")
    if not text.startswith(_MARK):
        return None
    return json.loads(text[len(_MARK):])


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _exit_reason(rc: int | None) -> str:
    if rc is not None and rc < 0:
        return f"signal {signal.Signals(-rc).name}"
    return f"exit code {rc}"


def _worker(payload: str, device: str, simulate) -> None:
    """Worker process: run each pickled case, announcing it first (see the module doc)."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything TVM prints goes to stderr, not into the protocol
    cases = pickle.loads(Path(payload).read_bytes())
    for case in cases:
        out.write(_MARK + json.dumps({"start": case.name}) + "\n")
        t0 = time.perf_counter()
        status, detail = run_case(case, device, simulate)
        out.write(_MARK + json.dumps({"name": case.name, "status": status, "detail": detail,
                                      "seconds": round(time.perf_counter() - t0, 3)}) + "\n")


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    warnings.simplefilter("ignore")
    _worker(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
