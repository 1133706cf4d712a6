"""Issue 19: the two memory rules' plans of a capped workload timed interleaved, each
round beside the CPU's weight-read bandwidth, to tell a per-plan effect from drift.

The capped bench times each contender once, minutes apart: on the H200 the ORT-style
rule's plan ran 24.70 ms (its 2.34 GB of CPU weights at >= 106 GB/s) and the llama.cpp
style rule's 29.56 ms (2.11 GB at ~79 GB/s) in one run, while the run's torch sum read
66.4 GB/s at its start (bench/results/capped-pricing-nvidia-h200.md).  Here both plans
are built once and stay open (caches on their devices, as the bench runs them); each
round times A, then B, then the GEMV weight-read sweep (the cost model's
:mod:`hetpart.costmodel.weight_read_bench`), alternating which plan goes first.  Each
plan's prediction is printed at the profile's ``weight_read_Bps`` (when it has one) and
at each round's GEMV bandwidth: the placement built and timed, re-priced there (a rule
re-applied and hetpart re-planned at each bandwidth, as before, cost ~40 s of planning a
bandwidth for llama_decode's interleaved plan).

``--before module.ATTR=value`` (repeatable, as ``tools/cpu_rule_ab.py`` takes it) adds the
contender ``hetpart before``: hetpart's plan made with those switches set (e.g.
``hetpart.partitioner.overlap.OVERLAP_SEEDS=0``), built and timed beside the others.
``--session-before module.ATTR=value`` (repeatable) sets run-time switches while that
contender's session opens (rules a Session reads then, e.g.
``hetpart.runtime.handoff.COPY_TO_GPU=0``); without ``--before`` its plan is hetpart's.
``--build-before module.ATTR=value`` (repeatable) sets compile-time switches while that
contender is built, as a build of its own (e.g. ``hetpart.compiler.extract.STREAMING_CUDA_GRAPHS=0``;
its plan is hetpart's unless ``--before`` says otherwise).
``--variant "NAME:module.ATTR=value[,module.ATTR=value]"`` (repeatable) adds a contender NAME:
hetpart's plan built (a build of its own) with those compile-time switches (e.g. ``"hetpart
graphs:hetpart.compiler.extract.STATIC_IO_CUDA_GRAPHS=0"``).  A contender whose build or
session fails is reported (``<name>: FAILED``) and left out; the others are still timed.
``--set module.ATTR=value`` sets a switch for the whole run.  ``--plans DIR`` reads each
contender's plan from ``DIR/<contender>.plan.json`` where one is there (planned on another
machine with the same code, profile and cap: llama_decode's hetpart plan costs a device run
~1-2 minutes), and writes the plans it makes there.

``--json`` writes the rounds and a summary, and a ``meta`` block (workload, cap, GPU, date, the
limit, each contender's plan prediction and what makes it a variant); the same run's records in
the capped benchmark's schema (one a contender: the median of its rounds' medians, its plan's
prediction, ``capped.limit_s`` with this profile; tools/capped_ab_records.py) are merged by key
into ``--records PATH``, by default the ``capped-<gpu>.json`` beside ``--json``.

    python tools/capped_rules_ab.py --profile PROFILE [--rounds 5] [--simulate] [--before M.ATTR=V]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def huge_pages() -> str:
    """The THP settings and this process's anonymous huge-page bytes (the CPU weights'
    buffers are advised for them: runtime.external_weights; 4 KiB pages read a 1 GiB
    GEMV 8-20% slower), '' where the files are not there."""
    out = []
    for knob in ("enabled", "defrag"):
        try:
            out.append(f"THP {knob}: {open(f'/sys/kernel/mm/transparent_hugepage/{knob}').read().strip()}")
        except OSError:
            pass
    try:
        for line in open("/proc/self/smaps_rollup"):
            if line.startswith(("Rss:", "AnonHugePages:")):
                out.append(" ".join(line.split()))
    except OSError:
        pass
    return "; ".join(out)


BEFORE = "hetpart before"
"""The contender ``--before`` adds: hetpart's plan made with the ``--before`` switches set."""


def plan_contender(name: str, prep, costs, cap: int, before: list[str]):
    """``capped._plan_contender``; :data:`BEFORE` is hetpart's plan with ``before``'s
    ``module.ATTR=value`` switches set while it is made (restored after)."""
    from hetpart.bench import capped

    if name != BEFORE:
        return capped._plan_contender(name, prep, costs, cap)
    with _switched(before):
        return capped._plan_contender("hetpart", prep, costs, cap)


def _switched(assignments: list[str]):
    """:func:`hetpart.bench.switches.switched`: those ``module.ATTR=value`` switches set for a block."""
    from hetpart.bench.switches import switched

    return switched(assignments)


def slug(name: str) -> str:
    """A contender's name as a file name: ``llama.cpp-style rule`` -> ``llamacpp-style_rule``."""
    return name.replace(" ", "_").replace(".", "").replace(",", "")


_PROBLEMS: dict = {}


def round_order(names: list[str], r: int, how: str = "alternate") -> list[str]:
    """The contenders' order in round ``r``: ``alternate`` (the default) ``names`` in even rounds and
    reversed in odd ones -- with three contenders the middle one is always second and the others
    always follow the GEMV probe or the middle one (step 132: a CPU-bound plan ran 3.4 ms slower first
    than last, two rounds each); ``rotate`` the rotations of ``names`` and then of its reverse, one a
    round (``2 * len(names)`` rounds put each contender in each position twice, after each other
    contender at least once).  ValueError for another ``how``."""
    if how == "alternate":
        return list(names) if r % 2 == 0 else list(names)[::-1]
    if how != "rotate":
        raise ValueError(f"--order: {how!r} is not 'alternate' or 'rotate'")
    n = len(names)
    base = list(names) if (r // n) % 2 == 0 else list(names)[::-1]
    k = r % n
    return base[k:] + base[:k]


def trace_paths(directory: Path, name: str, runs: int) -> list[Path]:
    """Where ``runs`` traced runs of contender ``name`` go: ``<slug>.trace.json`` for the first
    (the name one traced run always had), ``<slug>.run<i>.trace.json`` for run i = 1.."""
    first = directory / f"{slug(name)}.trace.json"
    return [first] + [directory / f"{slug(name)}.run{i}.trace.json" for i in range(1, max(1, runs))]


def trace_runs(sessions: dict, failed: dict, directory: Path, runs: int = 1) -> dict[str, list[Path]]:
    """``runs`` back-to-back traced runs of each open contender (``sessions``: name ->
    (session, feeds)) not in ``failed``, written to :func:`trace_paths`; a contender whose
    traced run raises is reported and its other runs skipped.  Returns the paths written
    per contender."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for n, (session, feeds) in sessions.items():
        if n in failed:
            continue
        written[n] = []
        for path in trace_paths(directory, n, runs):
            try:
                session.run(feeds, trace=str(path))
            except Exception as exc:  # noqa: BLE001 - reported, the others' traces still written
                print(f"{n}: FAILED trace: {type(exc).__name__}: {exc}", flush=True)
                break
            written[n].append(path)
        print(f"{n}: {len(written[n])} traced runs, {written[n][0] if written[n] else '-'} ...", flush=True)
    return written


def repriced_ms(plan, prep, costs, cap: int) -> float:
    """``plan``'s placement (streamed partitions as streamed) predicted under ``costs``
    (its latency objective's sequential timeline), in ms; one problem per ``costs``."""
    from hetpart.bench.capped import graph_state_pairs
    from hetpart.partitioner.evaluate import evaluate
    from hetpart.partitioner.plan_report import placement_of
    from hetpart.partitioner.problem import build_problem

    key = (id(costs), cap)
    if key not in _PROBLEMS:
        _PROBLEMS[key] = (costs, build_problem(prep.graph, costs, (), cap, True, state=graph_state_pairs(prep.graph)))
    return evaluate(_PROBLEMS[key][1], placement_of(plan)).sequential_s * 1e3


def main(argv=None) -> int:
    import tvm

    from hetpart.bench import capped
    from hetpart.bench.builds import BuildCache
    from hetpart.bench.harness import placement
    from hetpart.bench.timing import Settings, time_calls
    from hetpart.costmodel import CostModel, Profile
    from hetpart.costmodel.weight_read_bench import build_gemv, measure_weight_read
    from hetpart.partitioner import Plan
    from hetpart.targets import cpu_tvm_target

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="bench/results/profile-capped-nvidia-h200.json")
    p.add_argument("--workload", default="zoo:llama_decode")
    p.add_argument("--cap", default="1/2")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--contenders", default="llama.cpp-style rule,ORT-style rule")
    p.add_argument("--order", default="alternate", choices=("alternate", "rotate"),
                   help="the contenders' order a round (round_order): alternate (names, then reversed) or rotate "
                        "(each contender in each position; use 2 x contenders rounds)")
    p.add_argument("--sweep-mib", type=int, default=1024)
    p.add_argument("--simulate", action="store_true", help="CUDA partitions on the CPU (a smoke test)")
    p.add_argument("--json", default=None)
    p.add_argument("--records", default=None, metavar="PATH",
                   help="merge this run's records (capped schema) into PATH by key (default: capped-<gpu>.json "
                        "beside --json; none without --json or this)")
    p.add_argument("--trace", default=None, metavar="DIR",
                   help="after the rounds, one traced run per contender: DIR/<contender>.trace.json "
                        "(Chrome/Perfetto, the predicted timeline beside it)")
    p.add_argument("--trace-runs", type=int, default=1, metavar="N",
                   help="with --trace: N back-to-back traced runs per contender (the first "
                        "DIR/<contender>.trace.json, then DIR/<contender>.run<i>.trace.json): one run after the "
                        "rounds may be in another state than the timed loop (issue 19, rule-gap-nvidia-h100.md)")
    p.add_argument("--before", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                   help="switches for the contender 'hetpart before' (hetpart's plan made with them set)")
    p.add_argument("--session-before", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                   help="switches set while the contender 'hetpart before' opens its session (run-time rules)")
    p.add_argument("--build-before", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                   help="switches set while the contender 'hetpart before' is built (compile-time rules; "
                        "a build of its own)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:MODULE.ATTR=VALUE[,...]",
                   help="a contender NAME: hetpart's plan built with those compile-time switches")
    p.add_argument("--plans", default=None, metavar="DIR",
                   help="DIR/<contender>.plan.json: a contender's plan read from there if present (made "
                        "elsewhere with the same code, profile and cap: device time not spent planning), "
                        "else planned and written there")
    p.add_argument("--plan-only", action="store_true", help="stop after planning (with --plans: write them)")
    p.add_argument("--set", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                   help="switches set for the whole run: every contender's plan and every repricing")
    args = p.parse_args(argv)
    held = _switched(args.set)  # held for main's life: a dropped one is collected at once and
    held.__enter__()  # its generator's finally restores the switches (--set did nothing before)

    t0 = time.time()
    prep = capped.prepare(capped.workload(args.workload, None))
    cap = capped.parse_cap(args.cap, prep.weight_bytes)
    print(f"imported {args.workload} in {time.time() - t0:.0f} s; cap {cap} B", flush=True)
    profile = Profile.load(args.profile)
    base = CostModel(profile, graph=prep.graph)
    profile_bps = base.cold_weight_bandwidth("cpu")
    priced_at = (lambda bps: base.with_weight_bandwidth({"cpu": bps}))
    names = [c for c in args.contenders.split(",") if c]
    if (args.before or args.session_before or args.build_before) and BEFORE not in names:
        names.append(BEFORE)
    variants = {}
    for v in args.variant:
        vname, _, switches = v.partition(":")
        variants[vname.strip()] = [a for a in switches.split(",") if a]
        names.append(vname.strip())
    plans = {}
    for n in names:
        t0 = time.time()
        if n in variants:  # hetpart's plan (planned first: the contenders' order says so)
            plans[n] = plans["hetpart"]
            continue
        if n == BEFORE and not args.before and "hetpart" in plans:  # run-time switches only: hetpart's plan
            plans[n] = plans["hetpart"]
            continue
        stored = Path(args.plans) / f"{slug(n)}.plan.json" if args.plans else None
        if stored is not None and stored.exists():
            plans[n] = Plan.load(stored, prep.graph)
            print(f"read {n}'s plan from {stored} (predicted {plans[n].predicted['latency_s'] * 1e3:.2f} ms "
                  f"where it was made)", flush=True)
            continue
        plans[n] = plan_contender(n, prep, priced_at(profile_bps or 90e9), cap, args.before)
        print(f"planned {n} in {time.time() - t0:.0f} s", flush=True)
        if stored is not None:
            plans[n].save(stored)
    if args.plan_only:
        return 0
    t0 = time.time()
    own = {n: variants[n] for n in variants}  # contenders built apart, their switches set
    if args.build_before and BEFORE in plans:
        own[BEFORE] = list(args.build_before)
    caches, failed = {}, {}
    shared = BuildCache(prep.graph, simulate=args.simulate)
    for n, plan in plans.items():  # one at a time: a contender's failure leaves the others
        try:
            cache = shared if n not in own else BuildCache(prep.graph, simulate=args.simulate)
            with _switched(own.get(n, [])):
                cache.prefetch([(n, plan)], progress=False)
            caches[n] = cache
        except Exception as exc:  # noqa: BLE001 - reported, the others still measured
            failed[n] = f"build: {type(exc).__name__}: {exc}"
            print(f"{n}: FAILED {failed[n]}", flush=True)
    print(f"built {len(caches)} plans in {time.time() - t0:.0f} s", flush=True)
    sessions = {}
    print(f"before the sessions: {huge_pages()}", flush=True)
    for n, plan in plans.items():
        if n in failed:
            continue
        try:
            with _switched(args.session_before if n == BEFORE else []):
                session, feeds, note = capped.open_stepping(caches[n].get(plan, n).compiled, prep.feeds)
            session.run(feeds)  # the weights read in (external weights: at the first run)
        except Exception as exc:  # noqa: BLE001 - reported, the others still measured
            failed[n] = f"session: {type(exc).__name__}: {exc}"
            print(f"{n}: FAILED {failed[n]}", flush=True)
            continue
        sessions[n] = (session, feeds)
        print(f"{n} open: {huge_pages()}", flush=True)
        print(f"{n}: {placement(plan)}; {note}; predicted {plan.predicted['latency_s'] * 1e3:.2f} ms at "
              f"{(profile_bps or 90e9) / 1e9:.1f} GB/s", flush=True)
    names = [n for n in names if n in sessions]
    plans = {n: plans[n] for n in names}
    gemv = build_gemv(cpu_tvm_target())
    settings = Settings(warmup=2, min_repeats=10, max_repeats=40, budget_s=0.6)
    rounds = []
    try:
        for r in range(args.rounds):
            order = round_order(names, r, args.order)
            row = {"round": r, "order": order}
            for n in order:
                if n in failed:
                    continue
                session, feeds = sessions[n]
                try:
                    stats = time_calls(lambda: session.run(feeds), settings)
                except Exception as exc:  # noqa: BLE001 - reported, the others still measured
                    failed[n] = f"round {r}: {type(exc).__name__}: {exc}"
                    print(f"{n}: FAILED {failed[n]}", flush=True)
                    continue
                row[n] = {"median_ms": stats.median_s * 1e3, "p10_ms": stats.p10_s * 1e3, "n": stats.n}
            wr = measure_weight_read(None, tvm.cpu(), sweep_bytes=args.sweep_mib << 20, executable=gemv)
            row["gemv_gbps"] = wr.bytes_per_s / 1e9
            rounds.append(row)
            print(json.dumps(row), flush=True)
        if args.trace:
            trace_runs(sessions, failed, Path(args.trace), args.trace_runs)
    finally:
        for n, (session, _) in sessions.items():
            try:
                session.close()
            except Exception as exc:  # noqa: BLE001 - the results are kept
                print(f"{n}: close failed: {type(exc).__name__}: {exc}", flush=True)
    summary = {}
    at = {f"{bps / 1e9:.1f}": priced_at(bps) for bps in
          sorted({row["gemv_gbps"] * 1e9 for row in rounds} | ({profile_bps} if profile_bps else set()))}
    for n, plan in plans.items():
        meds = [row[n]["median_ms"] for row in rounds if n in row]
        if not meds:
            continue
        summary[n] = {"measured_median_ms": statistics.median(meds), "measured_range_ms": [min(meds), max(meds)],
                      "predicted_ms": {gb: repriced_ms(plan, prep, c, cap) for gb, c in at.items()},
                      "partitions": len(plan.partitions), "streamed_partitions": len(plan.streamed),
                      "streamed_bytes": plan.predicted.get("streamed_bytes", 0)}
        print(n, json.dumps(summary[n]), flush=True)
    data = {"rounds": rounds, "summary": summary, "profile_weight_read_Bps": profile_bps, "failed": failed}
    if args.json or args.records:
        try:
            data["meta"] = run_meta(args, prep, cap, base, plans, profile_bps, rounds, variants)
        except Exception as exc:  # noqa: BLE001 - the rounds are kept without it
            print(f"meta: FAILED {type(exc).__name__}: {exc}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    if "meta" in data:
        records = _records_tool()
        meta = data["meta"]
        out = Path(args.records) if args.records else Path(args.json).with_name(f"capped-{meta['gpu']}.json")
        source = records.source_of(args.json or "(no --json)", data, meta["date"])
        records.fold(out, meta["gpu"], records.records_of(data, workload=meta["workload"], cap_bytes=cap,
                                                          limit_ms=meta["limit_ms"], source=source),
                     {"source": source, "bandwidths": meta["limit_bandwidths"], "costs": args.profile})
        print(f"records merged into {out}", flush=True)
    return 0


def _records_tool():
    """tools/capped_ab_records.py (the A/B -> capped records conversion), imported."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import capped_ab_records

    return capped_ab_records


def variant_text(name: str, args, variants: dict[str, list[str]]) -> str:
    """What contender ``name`` changes against hetpart ("" for a contender of
    ``capped.CONTENDERS``): its ``--before`` / ``--session-before`` / ``--build-before``
    switches (``hetpart before``) or its ``--variant`` switches."""
    if name in variants:
        return "hetpart's plan built with " + ", ".join(variants[name])
    if name != BEFORE:
        return ""
    parts = [f"plan made with {', '.join(args.before)}" if args.before else "hetpart's plan"]
    if args.session_before:
        parts.append(f"session opened with {', '.join(args.session_before)}")
    if args.build_before:
        parts.append(f"built with {', '.join(args.build_before)}")
    return "; ".join(parts)


def run_meta(args, prep, cap: int, costs, plans: dict, profile_bps, rounds: list, variants: dict) -> dict:
    """The ``meta`` block of ``--json``: what tools/capped_ab_records.py makes records of
    (workload as the capped bench names it, cap, GPU slug, UTC date, the float32 limit by
    ``capped.profile_limit_ms`` at the fastest CPU rate measured, each plan's prediction as
    made and its variant text)."""
    import datetime
    from dataclasses import asdict

    from hetpart.bench import capped, gpu_slug, machine
    from hetpart.bench.harness import placement

    rates = [row["gemv_gbps"] * 1e9 for row in rounds if row.get("gemv_gbps")] + ([profile_bps] if profile_bps else [])
    limit_ms, bw = capped.profile_limit_ms(prep.graph, prep.weight_bytes, cap, costs, max(rates or [0.0]) or 1.0,
                                           "the fastest GEMV rate of the rounds (or the profile's)")
    return {"workload": capped.record_name(args.workload), "workload_arg": args.workload, "cap": args.cap,
            "cap_bytes": cap, "weight_bytes": prep.weight_bytes,
            "gpu": "simulated" if args.simulate else gpu_slug(machine()),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "profile": args.profile, "note": f"run with {', '.join(args.set)}" if args.set else "",
            "limit_ms": limit_ms, "limit_bandwidths": asdict(bw),
            "contenders": {n: {"predicted_ms": float(plan.predicted["latency_s"]) * 1e3,
                               "placement": placement(plan), "variant": variant_text(n, args, variants)}
                           for n, plan in plans.items()}}


if __name__ == "__main__":
    raise SystemExit(main())
