"""Issue 19: tools/capped_rules_ab.py's interleaved A/B results as records of the capped
benchmark (:mod:`hetpart.bench.capped`, schema ``hetpart-capped``), merged by key
``(workload, cap_bytes, contender)`` into ``bench/results/capped-<gpu>.json`` with
``capped.load_results`` / ``capped.add`` / ``capped.save`` (the benchmark's own merge and
markdown table), so the issue's record file holds the newest measurements.

In: an A/B JSON (``--json`` of capped_rules_ab: ``rounds``, each contender's median per round
and the host's GEMV rate between rounds; ``summary``; since branch capped-records a ``meta``
block: workload, cap, cap bytes, GPU, date, limit, each contender's plan prediction and what
makes it a variant).  Out: one :class:`capped.Record` per contender timed:

* ``contender``: the A/B's name.  A name of ``capped.CONTENDERS`` (``hetpart``,
  ``llama.cpp-style rule``, ``ORT-style rule``) stays itself; any other (``hetpart before``,
  a ``--variant``) keeps its own name with ``variant`` saying what it changes (the meta's
  switches; for an older file what ``--variant NAME=TEXT`` says, else "not recorded").
* ``ms``: the median of the rounds' medians; ``host_gemv_gbps``: the rounds' median GEMV rate.
* ``predicted_ms``: the plan's own prediction (meta); an older file has none, so the summary's
  repricing at the rate nearest the rounds' median GEMV (the note says so).
* ``limit_ms``: ``capped.profile_limit_ms`` (``capped.limit_s`` with the A/B's profile: its
  host-to-device link, the CPU at the fastest rate measured); meta's, or for an older file
  computed from the workload imported here (~100 s and ~10 GB for llama_decode).
* ``source``: the file, its date (meta's; for an older file the commit that last changed it),
  its rounds and GEMV range.

Older files name no workload, cap or GPU: ``--workload`` / ``--cap`` give the first two, the
file name's ``-nvidia-<gpu>.json`` suffix the last.  Of several files of one (workload, cap) only
the newest is folded (a row from one run, one host) unless ``--all`` (oldest first, so the
newest measurement of each contender wins its key).

    python tools/capped_ab_records.py bench/results/capped-graphless-plan-ab-nvidia-h100.json \\
        --workload zoo:llama_decode --cap 1/2 --profile bench/results/profile-capped-nvidia-h200.json
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
from pathlib import Path

from hetpart.bench import capped

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def contender_of(name: str, variants: dict[str, str]) -> tuple[str, str]:
    """``(contender, variant)`` of an A/B contender ``name``: a name of
    ``capped.CONTENDERS`` is itself with no variant (``hetpart`` -> ``hetpart``); any other
    keeps its name, its variant ``variants[name]`` (what it changes) or "not recorded"."""
    if name in capped.CONTENDERS:
        return name, ""
    return name, variants.get(name) or "a variant of hetpart (its switches not recorded in the A/B file)"


def round_medians(ab: dict, name: str) -> list[float]:
    """The per-round medians (ms) of ``name`` in ``ab``'s rounds (a failed round has none)."""
    return [row[name]["median_ms"] for row in ab.get("rounds", []) if isinstance(row.get(name), dict)]


def gemv_rates(ab: dict) -> list[float]:
    """The host's GEMV weight-read rates (GB/s) measured between ``ab``'s rounds."""
    return [row["gemv_gbps"] for row in ab.get("rounds", []) if row.get("gemv_gbps") is not None]


def predicted_of(ab: dict, name: str) -> tuple[float | None, str]:
    """``(ms, how)``: ``name``'s plan prediction from the meta (as made), else the summary's
    repricing at the rate nearest the rounds' median GEMV (older files), else None."""
    plan = ((ab.get("meta") or {}).get("contenders") or {}).get(name) or {}
    if plan.get("predicted_ms") is not None:
        return float(plan["predicted_ms"]), ""
    repriced = (ab.get("summary", {}).get(name) or {}).get("predicted_ms") or {}
    rates = gemv_rates(ab)
    if not repriced or not rates:
        return None, ""
    at = statistics.median(rates)
    key = min(repriced, key=lambda gb: abs(float(gb) - at))
    return float(repriced[key]), (f"predicted_ms: the plan repriced at {key} GB/s (nearest the rounds' median "
                                  f"GEMV; the plan's own prediction is not in the file)")


def source_of(path: Path | str, ab: dict, date: str) -> str:
    """``"capped_rules_ab <file>, <date>, N rounds interleaved, host GEMV a-b GB/s"``."""
    rates = gemv_rates(ab)
    gemv = f", host GEMV {min(rates):.1f}-{max(rates):.1f} GB/s" if rates else ""
    return f"capped_rules_ab {Path(path).name}, {date}, {len(ab.get('rounds', []))} rounds interleaved{gemv}"


def records_of(ab: dict, *, workload: str, cap_bytes: int, limit_ms: float | None, source: str,
               variants: dict[str, str] | None = None, note: str = "") -> list[capped.Record]:
    """One Record per contender ``ab`` timed (a contender with no round is left out; the
    order the summary's, else the first round's).  ``variants``: what each variant name
    changes, over the meta's; ``note``: added to every record's (run-wide switches)."""
    meta = ab.get("meta") or {}
    plans = meta.get("contenders") or {}
    told = {n: p.get("variant", "") for n, p in plans.items() if p.get("variant")} | dict(variants or {})
    rates = gemv_rates(ab)
    names = list(ab.get("summary") or {}) or [n for n in (ab.get("rounds") or [{}])[0].get("order", [])]
    out = []
    for name in names:
        meds = round_medians(ab, name)
        if not meds:
            continue
        contender, variant = contender_of(name, told)
        predicted, how = predicted_of(ab, name)
        plan = plans.get(name) or {}
        out.append(capped.Record(
            workload, int(cap_bytes), contender, statistics.median(meds), predicted, limit_ms,
            placement=plan.get("placement") or _placement(ab, name),
            note="; ".join(filter(None, [note or meta.get("note", ""), how])),
            variant=variant, source=source, host_gemv_gbps=statistics.median(rates) if rates else None))
    return out


def _placement(ab: dict, name: str) -> str:
    s = (ab.get("summary") or {}).get(name) or {}
    if "partitions" not in s:
        return ""
    return f"{s['partitions']} partitions, {s.get('streamed_partitions', 0)} streamed"


def fold(out: Path, gpu: str, records: list[capped.Record], run: dict | None = None) -> dict:
    """Merge ``records`` into the record file ``out`` by key (``capped.add``), ``run`` (a
    header without ``workload``: what the records were measured with) appended to its runs;
    written with its markdown table (``capped.save``).  Returns the results."""
    results = capped.load_results(Path(out), gpu)
    for r in records:
        capped.add(results, r)
    if run is not None:
        capped.add(results, run)
    capped.save(Path(out), results)
    return results


def gpu_of(path: Path | str, ab: dict) -> str:
    """The GPU slug of an A/B file: its meta's, else its name's ``-nvidia-...json`` suffix."""
    gpu = (ab.get("meta") or {}).get("gpu")
    if gpu:
        return gpu
    m = re.search(r"-(nvidia-[a-z0-9-]+?)\.json$", Path(path).name)
    if not m:
        raise SystemExit(f"{path}: no meta and no -nvidia-<gpu>.json suffix: give --gpu")
    return m.group(1)


DATE_FORMAT = "%Y-%m-%d %H:%M UTC"
"""The form of every date here (a meta's, a commit's): sortable as text."""


def committed_date(path: Path | str) -> str | None:
    """The UTC time (:data:`DATE_FORMAT`) of the commit that last changed ``path`` (None
    outside git or uncommitted)."""
    p = Path(path).resolve()
    try:
        out = subprocess.run(["git", "log", "-1", f"--date=format-local:{DATE_FORMAT}", "--format=%cd", "--",
                              p.name], cwd=p.parent, capture_output=True, text=True, check=True,
                             env={**os.environ, "TZ": "UTC"}).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


def parse_variants(items: list[str]) -> dict[str, str]:
    """``["hetpart before=GRAPHLESS_CUDA_LAUNCH=0's plan"]`` -> ``{"hetpart before": "..."}``."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {item!r}: give NAME=TEXT")
        out[name.strip()] = text.strip()
    return out


def main(argv=None) -> int:
    import json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="capped_rules_ab --json files")
    p.add_argument("--workload", default=None, help="files without meta: the workload (name or zoo: spec)")
    p.add_argument("--cap", default=None, help="files without meta: the cap (1/2, bytes)")
    p.add_argument("--profile", default="bench/results/profile-capped-nvidia-h200.json",
                   help="files without meta: the profile the A/B ran with (the limit's link and compute)")
    p.add_argument("--gpu", default=None, help="the record file's GPU slug (default: meta's, else the file name's)")
    p.add_argument("--out", default=None, help="record file (default bench/results/capped-<gpu>.json)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=TEXT",
                   help="what a variant contender of a file without meta changes (repeatable)")
    p.add_argument("--note", default="", help="a note for every record of these files (run-wide switches)")
    p.add_argument("--all", action="store_true", help="fold every file, oldest first (default: the newest "
                                                      "file of each workload and cap)")
    args = p.parse_args(argv)

    loaded = []
    for f in args.files:
        ab = json.loads(Path(f).read_text())
        meta = ab.get("meta") or {}
        workload = meta.get("workload") or (args.workload and capped.record_name(args.workload))
        cap = meta.get("cap") or args.cap
        if not workload or not cap:
            raise SystemExit(f"{f}: no meta: give --workload and --cap")
        date = meta.get("date") or (f"committed {committed_date(f)}" if committed_date(f) else "date unknown")
        loaded.append((date, f, ab, workload, cap))
    loaded.sort(key=lambda t: t[0].removeprefix("committed "))  # both forms "YYYY-MM-DD HH:MM UTC"
    if not args.all:  # the newest file of each (workload, cap)
        newest = {(t[3], t[4]): t[1] for t in loaded}
        for date, f, *_ in loaded:
            if f not in newest.values():
                print(f"{f} ({date}): older than another file of its workload and cap, not folded (--all folds it)")
        loaded = [t for t in loaded if t[1] in newest.values()]
    prepared: dict = {}
    for date, f, ab, workload, cap in loaded:
        meta = ab.get("meta") or {}
        if meta.get("cap_bytes") is not None and "limit_ms" in meta:
            cap_bytes, limit_ms, bw = int(meta["cap_bytes"]), meta["limit_ms"], meta.get("limit_bandwidths")
        else:
            cap_bytes, limit_ms, bw = _limit_here(prepared, args.workload or workload, cap, args.profile, ab)
        gpu = args.gpu or gpu_of(f, ab)
        out = Path(args.out) if args.out else RESULTS / f"capped-{gpu}.json"
        source = source_of(f, ab, date)
        recs = records_of(ab, workload=workload, cap_bytes=cap_bytes, limit_ms=limit_ms, source=source,
                          variants=parse_variants(args.variant), note=args.note)
        fold(out, gpu, recs, {"source": source, "bandwidths": bw, "costs": meta.get("profile") or args.profile})
        for r in recs:
            print(f"{out.name}: {r.workload} {r.cap_bytes} {r.contender}: {r.ms:.2f} ms (predicted "
                  f"{r.predicted_ms if r.predicted_ms is None else round(r.predicted_ms, 2)}, limit "
                  f"{limit_ms if limit_ms is None else round(limit_ms, 2)})" + (f" [{r.variant}]" if r.variant else ""))
    return 0


def _limit_here(prepared: dict, workload_arg: str, cap: str, profile: str, ab: dict) -> tuple[int, float, dict]:
    """``(cap bytes, limit ms, bandwidths)`` of an older file: the workload imported here
    (once per workload), the limit with ``profile`` at the fastest CPU rate the file measured."""
    from dataclasses import asdict

    from hetpart.costmodel import CostModel, Profile

    if workload_arg not in prepared:
        prep = capped.prepare(capped.workload(workload_arg, None))
        prepared[workload_arg] = (prep, CostModel(Profile.load(profile), graph=prep.graph))
    prep, costs = prepared[workload_arg]
    cap_bytes = capped.parse_cap(cap, prep.weight_bytes)
    rates = [g * 1e9 for g in gemv_rates(ab)] + ([ab["profile_weight_read_Bps"]]
                                                  if ab.get("profile_weight_read_Bps") else [])
    ms, bw = capped.profile_limit_ms(prep.graph, prep.weight_bytes, cap_bytes, costs, max(rates),
                                     "the fastest GEMV rate of the A/B's rounds (or its profile's)")
    return cap_bytes, ms, asdict(bw)


if __name__ == "__main__":
    raise SystemExit(main())
