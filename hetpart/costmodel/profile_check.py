"""Is every number in a profile one the cost model can use?

In: a :class:`~.profile_db.Profile` (just parsed from a file, or about to be saved).
Out: the list of problems, each naming the record (``kernels["cuda"]["3fa1.."]
timing.median_s is 'fast'``); empty when the profile is sound.

Why: a profile is a file users (and crashes, and other tools) can edit.  A timing
of ``"fast"``, NaN or infinity does not fail where it is read but deep in the
partitioner (a ``TypeError``, a singular fit, a plan of "nan us").  So
:meth:`Profile.load` rejects such a file naming the record, and :meth:`Profile.save`
never writes one.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import fields

STATUSES = ("ok", "failed", "dynamic")
OPTIONAL = ("wake_s", "weight_read_Bps", "contended_weight_read_Bps", "contended_h2d_Bps")
"""Overheads that may be None (not measured: profiles older than them)."""


def _number(value, *, positive: bool = False) -> str:
    """``""`` when ``value`` is a finite real >= 0 (> 0 if ``positive``), else why not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"is {value!r}, expected a number"
    if not math.isfinite(value):
        return f"is {value!r}, expected a finite number"
    if value < 0 or (positive and value == 0):
        return f"is {value!r}, expected a number {'>' if positive else '>='} 0"
    return ""


def _count(value) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        return f"is {value!r}, expected a whole number >= 1"
    return ""


def _fields(where: str, obj, checks: dict) -> list[str]:
    out = []
    for name, check in checks.items():
        why = check(getattr(obj, name))
        if why:
            out.append(f"{where}.{name} {why}")
    return out


def _record_problems(where: str, rec) -> list[str]:
    out = []
    if rec.status not in STATUSES:
        out.append(f"{where}.status is {rec.status!r}, expected one of {', '.join(STATUSES)}")
    f = rec.features
    out += _fields(f"{where}", f, {n: _number for n in ("flops", "bytes_read", "bytes_written", "param_bytes")})
    if rec.status == "ok" and rec.timing is None:
        out.append(f"{where} has status 'ok' but no timing")
    if rec.timing is not None:
        t = rec.timing
        out += _fields(f"{where}.timing", t, {"median_s": _number, "min_s": _number, "max_s": _number,
                                              "count": _count, "number": _count})
    return out


def problems_of_record(rec) -> list[str]:
    """What is wrong with one :class:`~.profile_db.KernelRecord` (empty: nothing)."""
    return _record_problems(f"record {rec.signature}", rec)


def problems(prof) -> list[str]:
    """Every value of ``prof`` the cost model could not use, each naming its record."""
    out: list[str] = []
    for device, recs in prof.kernels.items():
        for sig, rec in recs.items():
            out += _record_problems(f'kernels["{device}"]["{sig}"]', rec)
    for device, oh in prof.overheads.items():
        checks = {f.name: _number for f in fields(oh) if getattr(oh, f.name) is not None or f.name not in OPTIONAL}
        for name in ("weight_read_Bps", "contended_weight_read_Bps", "contended_h2d_Bps"):
            if getattr(oh, name) is not None:
                checks[name] = lambda v: _number(v, positive=True)
        out += _fields(f'overheads["{device}"]', oh, checks)
    for name in ("gpu_memory_bytes", "cpu_llc_bytes"):  # optional sizes: None, or a whole number of bytes
        value = getattr(prof, name)
        if value is not None and _count(value):
            out.append(f"{name} {_count(value)}")
    if prof.transfers is not None:
        for i, p in enumerate(prof.transfers.points):
            out += _fields(f"transfers.points[{i}]", p, {"nbytes": _count, "median_s": _number, "min_s": _number,
                                                         "max_s": _number, "count": _count})
        for key, fit in prof.transfers.fits.items():
            out += _fields(f'transfers.fits["{key}"]', fit,
                           {"latency_s": _number, "bandwidth_Bps": lambda v: _number(v, positive=True)})
    return out


def describe(found: list[str], limit: int = 3) -> str:
    """The first ``limit`` problems in one line, with how many more there are."""
    more = f" (and {len(found) - limit} more)" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more
