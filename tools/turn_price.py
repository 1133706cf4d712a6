"""Issue 19 offline: a capped plan's predicted timeline against a traced run, turn by turn,
with :data:`hetpart.costmodel.cost_model.INLINE_TURNS` off and on; optionally the plan made
with each.  No GPU.

For each ``--trace`` (a Chrome trace of an inline run of ``--plan``, or of the ``--plan`` in
the same position where as many are given: tracks ``cpu: pN_cpu``,
``host: cuda calls``, ``cuda stream``) and each switch setting: per CPU partition its span
(predicted vs measured) and per turn (a CPU partition's end to the next CPU partition's
start) the measured gap, the measured gap less its CUDA partitions' GPU time (CUDA events;
the GPU's own miss is not a turn price) and the predicted gap less its CUDA kernels'
predicted seconds; the median absolute errors.  Prices at ``--cpu-gbps`` (CPU weight reads,
several: comma-separated).  ``--plan-dir DIR`` plans ``--workload`` at ``--cap`` with the
switch off and on (``capped._plan_contender("hetpart", ...)``, as tools/capped_rules_ab.py
plans it, at the profile's weight-read bandwidth) and writes ``DIR/{off,on}.plan.json``.
Numbers of bench/results/turn-price-2core.md:

    PYTHONPATH=. python tools/turn_price.py --plan /work/dev48/share/llama_decode_half_step115.plan.json \\
        --trace /work/dev48/share/llama_decode_half_s48.trace.json --cpu-gbps 96.1,140 --plan-dir DIR

``--rates weight_read=140e9,h2d=50.7e9`` prices (and ``--plan-dir`` plans) with the profile's CPU rates
and pinned host-to-device bandwidth replaced (:func:`with_rates`; keys :data:`RATE_KEYS`): how
bench/results/rule-gap-nvidia-h100.md repriced the rule and re-planned at a host's measured rates.

``--gpu-spans DIR`` (no model, no pricing; tools/device_round.sh 125): each CUDA partition of
``--plan`` with its GPU span (the ``cuda stream`` track) in each ``DIR/*.trace.json`` beside its
predicted seconds, the d2h copies on the stream, and the medians of the ~84 MB and ~38 MB
streamed partitions' spans.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


RATE_KEYS = {"weight_read": "weight_read_Bps", "contended_read": "contended_weight_read_Bps",
             "contended_h2d": "contended_h2d_Bps", "h2d": None}
"""``--rates`` keys: the CPU overheads' fields they replace (bytes per second); ``h2d`` the
pinned host-to-device fit's bandwidth."""


def parse_rates(text: str | None) -> dict[str, float]:
    """``"weight_read=140e9,h2d=50.7e9"`` -> ``{"weight_read": 140e9, "h2d": 50.7e9}``; ValueError
    naming a key not in :data:`RATE_KEYS` or a value that is not a positive number."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in RATE_KEYS:
            raise ValueError(f"--rates: unknown key {key!r}; known: {', '.join(RATE_KEYS)}")
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"--rates: {key}={value!r} is not a number") from None
        if not out[key] > 0:
            raise ValueError(f"--rates: {key} must be > 0 bytes per second, got {value}")
    return out


def with_rates(profile, rates: dict[str, float]):
    """A shallow copy of ``profile`` (a :class:`hetpart.costmodel.Profile`) whose CPU overheads
    carry ``rates`` (:data:`RATE_KEYS`) and whose pinned h2d fit has bandwidth ``rates["h2d"]``
    where given; ``profile`` itself is unchanged.  Empty ``rates``: ``profile``."""
    import copy
    import dataclasses

    if not rates:
        return profile
    out = copy.copy(profile)
    fields = {RATE_KEYS[k]: v for k, v in rates.items() if RATE_KEYS[k]}
    if fields:
        out.overheads = {**profile.overheads, "cpu": dataclasses.replace(profile.overheads["cpu"], **fields)}
    if "h2d" in rates:
        tm = copy.copy(profile.transfers)
        fit = tm.fit("h2d", "pinned")
        tm.fits = {**tm.fits, "h2d/pinned": dataclasses.replace(fit, bandwidth_Bps=rates["h2d"])}
        out.transfers = tm
    return out


def measured(path: str) -> dict:
    """``{"cpu": {pN_cpu: (start, end)}, "gpu": {pN_cuda: seconds}}`` of a trace's measured
    process (pid 1), us."""
    from hetpart.contracts.trace import read_trace

    ev = read_trace(path).of(1)
    cpu = {s.name: (s.start_us, s.end_us) for s in ev if s.track.startswith("cpu:")}
    gpu = {s.name: s.dur_us for s in ev if s.track == "cuda stream" and s.name.startswith("p")}
    return {"cpu": cpu, "gpu": gpu}


def gpu_spans(traces: Path, plan: dict) -> list[str]:
    """The ``--gpu-spans`` report's lines: per trace in ``traces`` (sorted ``*.trace.json``)
    the d2h spans on its measured (pid 1) ``cuda stream`` track; per CUDA partition of
    ``plan`` (a plan file's JSON) its MB, predicted us and GPU span in each trace (nan:
    not in it); the median and sum of the spans of the ~84 MB and ~38 MB streamed
    partitions and of all, per trace, us."""
    from hetpart.contracts.trace import read_trace

    parts = {p["name"]: p for p in plan["partitions"] if p["device"] == "cuda"}
    spans, lines = {}, []
    for f in sorted(traces.glob("*.trace.json")):
        xs = read_trace(f).spans_on("cuda stream", 1)
        spans[f.name.replace(".trace.json", "")] = {s.name: s.dur_us for s in xs if s.name in parts}
        d2h = [s for s in xs if s.name.startswith("d2h")]
        listed = ", ".join("%s %.0f" % (s.name, s.dur_us) for s in d2h[:12])
        lines.append(f"{f.name}: d2h on the cuda stream {len(d2h)} ({listed})")
    who = sorted(spans)
    lines.append(f"{'partition':10} {'MB':>6} {'pred us':>8} " + " ".join(f"{w:>16}" for w in who))
    for n, p in parts.items():
        lines.append(f"{n:10} {p['weight_bytes'] / 1e6:6.1f} {p['predicted_s'] * 1e6:8.0f} "
                     + " ".join(f"{spans[w].get(n, float('nan')):16.0f}" for w in who))
    groups = (("~84 MB streamed", lambda p: p["weights"] == "streamed" and p["weight_bytes"] > 80e6
               and len(p["kernels"]) > 10),
              ("~38 MB streamed", lambda p: p["weights"] == "streamed" and 30e6 < p["weight_bytes"] < 40e6),
              ("all cuda", lambda p: True))
    for label, test in groups:
        names = [n for n, p in parts.items() if test(p)]
        lines.append(f"{label} ({len(names)}): " + "; ".join(
            f"{w} median {statistics.median([spans[w][n] for n in names if n in spans[w]] or [float('nan')]):.0f} us"
            f" sum {sum(spans[w].get(n, 0) for n in names):.0f}" for w in who))
    return lines


def predicted(problem, placement) -> dict:
    """The sequential timeline of ``placement``: CPU partitions in run order as (start, end,
    overhead) and per turn the CUDA kernels' seconds, us."""
    from hetpart.partitioner.evaluate import evaluate
    from hetpart.partitioner.timeline import simulate

    lay = evaluate(problem, placement).layout
    sched = [s for s in simulate(lay, "sequential") if s.task.kind == "partition"]
    cpu, cuda_s, turns = [], 0.0, []
    for s in sorted(sched, key=lambda s: s.start):
        i = s.task.index
        if lay.groups[i].device == "cpu":
            if cpu:
                turns.append(cuda_s)
            cpu.append((s.start * 1e6, s.end * 1e6, lay.group_overhead[i] * 1e6))
            cuda_s = 0.0
        else:
            cuda_s += (s.end - s.start - lay.group_overhead[i]) * 1e6
    return {"cpu": cpu, "turn_cuda": turns, "partitions": len(lay.groups)}


def compare(meas: dict, pred: dict) -> dict:
    """Per CPU partition and per turn: measured vs predicted (us); median absolute errors."""
    order = sorted(meas["cpu"], key=lambda n: meas["cpu"][n][0])
    if len(order) != len(pred["cpu"]):
        raise SystemExit(f"the trace has {len(order)} CPU partitions, the repriced plan {len(pred['cpu'])}: not this plan's trace")
    rows, span_err, turn_err = [], [], []
    for j, n in enumerate(order):
        ms, me = meas["cpu"][n]
        ps, pe, po = pred["cpu"][j]
        row = {"cpu": n, "span": me - ms, "pred_span": pe - ps, "pred_overhead": po}
        span_err.append(abs(row["pred_span"] - row["span"]))
        if j + 1 < len(order):
            k = int(n[1:].split("_")[0])
            nxt = order[j + 1]
            gpu = sum(v for g, v in meas["gpu"].items() if k < int(g[1:].split("_")[0]) < int(nxt[1:].split("_")[0]))
            gap = meas["cpu"][nxt][0] - me
            pgap = pred["cpu"][j + 1][0] - pe
            row.update(gap=gap, gap_less_gpu=gap - gpu, pred_gap=pgap, pred_gap_less_gpu=pgap - pred["turn_cuda"][j],
                       next_overhead=pred["cpu"][j + 1][2])
            # the turn as the partitions and the gap price it: a CPU wake sits in the next span
            turn_err.append(abs(row["pred_gap_less_gpu"] + pred["cpu"][j + 1][2] - (row["gap_less_gpu"])))
        rows.append(row)
    return {"rows": rows, "span_mae": statistics.median(span_err), "turn_mae": statistics.median(turn_err)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="zoo:llama_decode")
    ap.add_argument("--cap", default="1/2")
    ap.add_argument("--profile", default="bench/results/profile-capped-nvidia-h200.json")
    ap.add_argument("--plan", action="append", required=True, help="one, or one per --trace (paired in order)")
    ap.add_argument("--trace", action="append", default=[])
    ap.add_argument("--cpu-gbps", default="96.1,140")
    ap.add_argument("--plan-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--rates", default=None, metavar="KEY=BPS[,...]",
                    help="replace the profile's CPU rates / pinned h2d bandwidth: " + ", ".join(RATE_KEYS))
    ap.add_argument("--gpu-spans", default=None, metavar="DIR",
                    help="only print the CUDA partitions' GPU spans in DIR/*.trace.json beside --plan's predictions")
    args = ap.parse_args(argv)
    try:
        rates = parse_rates(args.rates)  # before the model's import: a typo costs no minute
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.gpu_spans:
        print("\n".join(gpu_spans(Path(args.gpu_spans), json.load(open(args.plan[0])))))
        return 0

    from hetpart.bench import capped
    from hetpart.bench.switches import switched
    from hetpart.costmodel import CostModel, Profile
    from hetpart.partitioner import Plan
    from hetpart.partitioner.evaluate import evaluate
    from hetpart.partitioner.plan_report import placement_of
    from hetpart.partitioner.problem import build_problem

    t0 = time.time()
    prep = capped.prepare(capped.workload(args.workload, None))
    cap = capped.parse_cap(args.cap, prep.weight_bytes)
    print(f"imported in {time.time() - t0:.0f} s", flush=True)
    base = CostModel(with_rates(Profile.load(args.profile), rates), graph=prep.graph)
    # one plan and its traces, or as many plans as traces, paired in order
    plans = args.plan if len(args.plan) == len(args.trace) else args.plan[:1] * len(args.trace)
    placements = {p: placement_of(Plan.load(p, prep.graph)) for p in set(plans)}
    traces = {t: measured(t) for t in args.trace}
    out = {}
    for on in (0, 1):
        with switched([f"hetpart.costmodel.cost_model.INLINE_TURNS={on}"]):
            for gb in args.cpu_gbps.split(","):
                costs = base.with_weight_bandwidth({"cpu": float(gb) * 1e9})
                problem = build_problem(prep.graph, costs, (), cap, True, state=capped.graph_state_pairs(prep.graph))
                for plan_path, (t, meas) in zip(plans, traces.items()):
                    placement = placements[plan_path]
                    pred = predicted(problem, placement)
                    total = evaluate(problem, placement).sequential_s * 1e3
                    c = compare(meas, pred)
                    key = f"inline={on} cpu={gb} {Path(plan_path).name} {Path(t).name}"
                    out[key] = dict(c, predicted_ms=total, partitions=pred["partitions"])
                    print(f"{key}: predicted {total:.2f} ms ({pred['partitions']} partitions); CPU span median abs err "
                          f"{c['span_mae']:.0f} us, turn (less GPU) median abs err {c['turn_mae']:.0f} us", flush=True)
                    for r in c["rows"]:
                        print("   " + " ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
        if args.plan_dir:
            t0 = time.time()
            with switched([f"hetpart.costmodel.cost_model.INLINE_TURNS={on}"]):
                bps = base.cold_weight_bandwidth("cpu") or 90e9
                plan = capped._plan_contender("hetpart", prep, base.with_weight_bandwidth({"cpu": bps}), cap)
            Path(args.plan_dir).mkdir(parents=True, exist_ok=True)
            path = Path(args.plan_dir) / f"{'on' if on else 'off'}.plan.json"
            plan.save(path)
            cpu_parts = sum(p.device == "cpu" for p in plan.partitions)
            print(f"planned inline={on} in {time.time() - t0:.0f} s: {len(plan.partitions)} partitions ({cpu_parts} CPU, "
                  f"{len(plan.streamed)} streamed), streamed {plan.predicted.get('streamed_bytes', 0) / 1e6:.0f} MB, "
                  f"predicted {plan.predicted['latency_s'] * 1e3:.2f} ms at {bps / 1e9:.1f} GB/s -> {path}", flush=True)
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
