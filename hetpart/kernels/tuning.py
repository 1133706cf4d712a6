"""Opt-in MetaSchedule tuning of a fused module's kernels, and applying its records.

:func:`tune` searches schedules for the PrimFuncs of a *fused* module (what
:func:`hetpart.importer.fusion.fuse` returns -- tuning anything else gives task keys
that never match the kernels :func:`hetpart.kernels.build` compiles) and stores the
best ones in a JSON database in ``work_dir`` (``database_workload.json`` and
``database_tuning_record.json``).  :func:`apply_database` puts those schedules into a
module; ``build(..., tuning_db=work_dir)`` calls it before the default rules, so tuned
kernels win and the rest keep hetpart's schedules.

Tuning needs the ``tune`` extra (``pip install hetpart[tune]``: xgboost-cpu, psutil,
cloudpickle).  Interrupting it (Ctrl-C) keeps every record already committed: the
JSON database appends each measured record to disk as it goes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.target import Target

from ..errors import HetpartError

log = logging.getLogger(__name__)

TUNE_DEPS = ("xgboost", "psutil", "cloudpickle")
_RECORDS = "database_tuning_record.json"
_WORKLOADS = "database_workload.json"


class TuningDependencyError(HetpartError):
    """Tuning was asked for but its optional dependencies are not installed."""


def missing_tune_deps() -> list[str]:
    """Names of the ``tune`` extra's modules that cannot be imported here."""
    return [m for m in TUNE_DEPS if importlib.util.find_spec(m) is None]


def has_records(work_dir: str) -> bool:
    """True when ``work_dir`` holds a MetaSchedule JSON database with any record."""
    path = os.path.join(work_dir, _RECORDS)
    return os.path.isfile(path) and os.path.getsize(path) > 0 and os.path.isfile(
        os.path.join(work_dir, _WORKLOADS)
    )


def tune(
    mod: tvm.IRModule,
    target: Target,
    trials: int,
    work_dir: str,
    progress: bool = True,
) -> int:
    """Tune the PrimFuncs of the fused module ``mod`` for ``target`` with up to
    ``trials`` measured candidates in total; records go to ``work_dir``.

    Returns the number of tuning records in the database afterwards.  A
    ``KeyboardInterrupt`` stops the search and keeps what was recorded (reported on
    stderr when ``progress``).  Raises :class:`TuningDependencyError` when xgboost,
    psutil or cloudpickle is missing.
    """
    missing = missing_tune_deps()
    if missing:
        raise TuningDependencyError(
            f"tuning needs {', '.join(missing)}; install them with `pip install hetpart[tune]` "
            "(xgboost-cpu, psutil, cloudpickle)"
        )
    from tvm.s_tir import meta_schedule as ms

    target = target if isinstance(target, Target) else Target(target)
    os.makedirs(work_dir, exist_ok=True)
    # Only functions hetpart would schedule: those already scheduled (by hand or a
    # previous apply) are left alone, as build() would.
    todo = [
        gv.name_hint
        for gv, f in mod.functions_items()
        if isinstance(f, tirx.PrimFunc) and not (f.attrs is not None and f.attrs.get("tirx.is_scheduled", False))
    ]
    if progress:
        print(f"tuning {len(todo)} kernels for {target.kind.name}, {trials} trials -> {work_dir}", file=sys.stderr)
    try:
        ms.relax_integration.tune_relax(
            mod,
            params={},
            target=target,
            work_dir=work_dir,
            max_trials_global=int(trials),
            num_trials_per_iter=min(64, max(1, int(trials))),
        )
    except KeyboardInterrupt:
        if progress:
            print("tuning interrupted; keeping the records measured so far", file=sys.stderr)
    return count_records(work_dir)


def count_records(work_dir: str) -> int:
    """Number of tuning records in ``work_dir`` (0 when there is no database)."""
    if not has_records(work_dir):
        return 0
    with open(os.path.join(work_dir, _RECORDS), encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def apply_database(mod: tvm.IRModule, target: Target, work_dir: str) -> tvm.IRModule:
    """``mod`` with the best schedule from the database in ``work_dir`` applied to each
    PrimFunc that has one; those get ``tirx.is_scheduled`` and ``hetpart.rule="tuned"``
    so the default rules leave them alone.  A missing or empty database changes
    nothing."""
    if not has_records(work_dir):
        return mod
    from tvm.s_tir import meta_schedule as ms

    target = target if isinstance(target, Target) else Target(target)
    database = ms.Database.create("json", work_dir=work_dir, module_equality="structural")
    out = mod.shallow_copy() if hasattr(mod, "shallow_copy") else tvm.IRModule(dict(mod.functions_items()))
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or (func.attrs is not None and func.attrs.get("tirx.is_scheduled", False)):
            continue
        sch = _query(database, func, target)
        if sch is not None:
            tuned = sch.mod["main"].without_attr("global_symbol")
            out[gv] = tuned.with_attr("tirx.is_scheduled", True).with_attr("hetpart.rule", "tuned")
    return out


def _query(database, func: tirx.PrimFunc, target: Target):
    """The database's best schedule for ``func``, or None.

    Tasks are recorded as a module ``{"main": func}`` whose function is *public*
    (``global_symbol="main"``), while fused functions are private, so the key is
    rebuilt that way rather than relying on ``MetaScheduleApplyDatabase`` (which
    misses these records in TVM 0.27).
    """
    for f in (func.with_attr("global_symbol", "main"), func):
        sch = database.query_schedule(tvm.IRModule({"main": f}), target=target, workload_name="main")
        if sch is not None:
            return sch
    return None
