"""Backfill the schedule rule and access pattern of every kernel record of a recorded profile.

In: a profile file (default: the committed hetpart/costmodel/recorded/h200.json).
Out: the same file with each record's ``rule`` set to the hetpart schedule rule
that schedules that kernel for the device's recorded target, and its ``access`` to
the kernel's access pattern (:mod:`hetpart.costmodel.access_pattern`); nothing else
changes (timings, timestamps, models are kept as they are).

How: every model the profile lists (``resnet50``, ``resnet50:batch=8``, ...) is
imported from the zoo (``zoo:<key>``), and each kernel's PrimFunc is scheduled for
``profile.targets[device]`` (:func:`hetpart.costmodel.schedule_rule.kernel_rule`)
and its index expressions read (:func:`hetpart.costmodel.access_pattern.kernel_access`).
Scheduling only transforms TIR, so this runs on a machine without the GPU the
profile was recorded on.  Records are matched by signature.

Usage: python tools/backfill_rules.py [PROFILE] [--check]
(``--check``: report, write nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / "hetpart" / "costmodel" / "recorded" / "h200.json"


def rules_of_model(spec: str, targets: dict[str, str]
                   ) -> tuple[dict[str, dict[str, str]], set[str], dict[str, str]]:
    """``{device: {signature: rule}}`` for every kernel of zoo model ``spec``, the
    signatures of its kernels that call no PrimFunc (e.g. ``relax.topk``: TVM
    legalizes it inside ``tvm.compile``, after hetpart's rules; its rule is ``""``),
    and ``{signature: access pattern}`` (the same on every device)."""
    from hetpart import importer
    from hetpart.costmodel.access_pattern import kernel_access
    from hetpart.costmodel.schedule_rule import kernel_rule, target_of

    graph = importer.load(spec)
    funcs = {gv.name_hint for gv, _ in graph.module.functions_items()}
    out: dict[str, dict[str, str]] = {d: {} for d in targets}
    for device, target in targets.items():
        tgt = target_of(target)
        for k in graph.nodes:
            if k.signature not in out[device]:  # same signature, same PrimFunc: schedule once
                out[device][k.signature] = kernel_rule(graph, k, tgt)
    access = {k.signature: kernel_access(graph, k) for k in {k.signature: k for k in graph.nodes}.values()}
    return out, {k.signature for k in graph.nodes if k.func not in funcs}, access


def backfill(path: Path, write: bool = True) -> tuple[int, int, int]:
    """Set ``rule`` and ``access`` on every record of ``path`` whose kernel a listed model has.

    Returns ``(records with a rule, records of kernels that call no PrimFunc,
    records)``.  The file is rewritten (atomically, through :meth:`Profile.save`)
    only when ``write``.
    """
    from hetpart.costmodel import Profile

    prof = Profile.load(path)
    found: dict[str, dict[str, str]] = {d: {} for d in prof.targets}
    no_func: set[str] = set()
    access: dict[str, str] = {}
    for key in prof.models:
        t0 = time.perf_counter()
        rules, calls, pattern = rules_of_model(f"zoo:{key}", prof.targets)
        for device, by_sig in rules.items():
            found[device].update(by_sig)
        no_func |= calls
        access.update(pattern)
        print(f"{key}: {time.perf_counter() - t0:.1f} s", flush=True)
    total = with_rule = without_func = 0
    for device, records in prof.kernels.items():
        for sig, rec in records.items():
            rule = found.get(device, {}).get(sig, "")
            # set in place, not through add_kernel: the profile's timestamps stay as recorded
            records[sig] = replace(rec, rule=rule, access=access.get(sig, ""))
            total += 1
            with_rule += bool(rule)
            without_func += sig in no_func
        counts = Counter(r.rule or "(none)" for r in records.values())
        print(f"{device}: " + ", ".join(f"{r} {n}" for r, n in sorted(counts.items())))
        counts = Counter(r.access or "(unknown)" for r in records.values())
        print(f"{device} access: " + ", ".join(f"{a} {n}" for a, n in sorted(counts.items())))
    if write:
        prof.save(path)
    return with_rule, without_func, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", nargs="?", default=str(DEFAULT))
    ap.add_argument("--check", action="store_true", help="report only; do not write the file")
    args = ap.parse_args(argv)
    path = Path(args.profile)
    before = json.loads(path.read_text())
    with_rule, without_func, total = backfill(path, write=not args.check)
    print(f"{with_rule} of {total} records have a rule; {without_func} are of kernels that call no PrimFunc "
          "(no hetpart rule applies)" + (" (not written: --check)" if args.check else ""))
    if not args.check:
        _check_only_rules_changed(before, json.loads(path.read_text()))
    return 0 if with_rule + without_func == total else 1  # every kernel with a PrimFunc got its rule


BACKFILLED = ("rule", "access")


def _check_only_rules_changed(before: dict, after: dict) -> None:
    """Raise if anything but the records' :data:`BACKFILLED` keys differs between two profile JSONs."""
    def strip(data: dict) -> dict:
        return {**data, "kernels": {d: {s: {k: v for k, v in r.items() if k not in BACKFILLED}
                                        for s, r in recs.items()} for d, recs in data["kernels"].items()}}

    if strip(after) != strip(before):
        raise SystemExit("backfill changed more than the rules and access patterns: not expected")


if __name__ == "__main__":
    sys.exit(main())
