"""A benchmark run: several workloads (and pairs run at once) -> one :class:`BenchReport`.

Both ``partition bench`` and ``bench/e2e.py`` call :func:`run`.  Workloads run one
after another (nothing else runs while one is timed); a workload that fails outright
is recorded as a note and the run goes on, so one broken model never loses the rest.
"""

from __future__ import annotations

import datetime
import platform
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass

from tqdm import tqdm

from ..errors import HetpartError
from . import goals
from .harness import Options, Workload, bench_concurrent, bench_workload
from .results import BenchReport, ConcurrentResult


@dataclass(frozen=True)
class Pair:
    """Models to run at once in one MultiSession: labels of workloads in the same run."""

    label: str
    workloads: tuple[str, ...]


def machine() -> dict:
    """The machine the numbers were measured on, for the report header."""
    import tvm

    from .. import __version__
    from ..costmodel.fingerprint import this_machine

    fp = this_machine()
    return {"gpu": fp.gpu_name or "none", "cpu": f"{fp.cpu_model} ({fp.cpu_cores} cores)",
            "python": platform.python_version(), "tvm": tvm.__version__, "hetpart": __version__}


def gpu_slug(info: dict) -> str:
    """File-name form of the GPU name: ``NVIDIA H200`` -> ``nvidia-h200`` (``cpu-only`` without one).

    The memory size and kind a board's name may carry are dropped (``NVIDIA H100 80GB HBM3`` ->
    ``nvidia-h100``), so one GPU's records from every host meet in one file."""
    name = info.get("gpu") or "none"
    if name == "none":
        return "cpu-only"
    words = "".join(ch if ch.isalnum() else " " for ch in name.lower()).split()
    return "-".join(w for w in words if not re.fullmatch(r"\d+gb|hbm\d*e?|gddr\d*x?", w))


def run(workloads: list[Workload], options: Options, *, pairs: tuple[Pair, ...] = (), commands: list[str] = (),
        notes: list[str] = (), deadline: float | None = None) -> BenchReport:
    """Benchmark every workload, then every pair; evaluate the goals.

    ``deadline`` (a ``time.monotonic()`` value): workloads not started by then are
    skipped with a note, so a run fits a fixed slot of machine time.
    """
    report = BenchReport(created=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                         machine=machine(), commands=list(commands), settings=_settings(options), notes=list(notes))
    kept = {}
    wanted = {label for p in pairs for label in p.workloads}
    bar = tqdm(workloads, desc="bench", unit="workload", file=sys.stderr, disable=None if options.progress else True)
    for w in bar:
        bar.set_postfix_str(w.label)
        if deadline is not None and time.monotonic() > deadline:
            report.notes.append(f"{w.label}: not run (time budget spent)")
            continue
        try:
            result, handle = bench_workload(w, options, keep_builds=w.label in wanted)
        except HetpartError as exc:
            report.notes.append(f"{w.label}: failed: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a bug in one workload must not lose the others
            traceback.print_exc()
            report.notes.append(f"{w.label}: failed (bug?): {type(exc).__name__}: {exc}")
            continue
        report.workloads.append(result)
        if handle is not None:
            kept[w.label] = handle
    for p in pairs:
        report.concurrent.append(_run_pair(p, kept, options))
    kept.clear()
    report.goals = goals.evaluate(report)
    return report


def _run_pair(p: Pair, kept: dict, options: Options) -> ConcurrentResult:
    missing = [label for label in p.workloads if label not in kept]
    if missing:
        return ConcurrentResult(p.label, list(p.workloads), None, None, skipped=f"not measured: {', '.join(missing)}")
    compiled, feeds = [], []
    for label in p.workloads:
        prep, cache, contenders = kept[label]
        plan = next((c.plan for c in contenders if c.name == "hetpart:latency" and c.plan is not None), None)
        if plan is None:
            return ConcurrentResult(p.label, list(p.workloads), None, None, skipped=f"{label} has no plan")
        compiled.append(cache.get(plan, "hetpart:latency").compiled)
        feeds.append(prep.feeds)
    return bench_concurrent(p.label, compiled, feeds, list(p.workloads), options.settings)


def _settings(options: Options) -> dict:
    s = asdict(options.settings)
    s.update(simulate=options.simulate, objectives=",".join(options.objectives))
    return s
