"""Serving benchmark (issue 20): several models on one GPU under open-loop Poisson load.

Run from the repository root on the GPU machine (one call, within --budget seconds)::

    PYTHONPATH=. python3 bench/serve.py --budget 420

Scenarios (--scenarios): ``resnet50+bert`` and ``detector+resnet50``.  Contenders:
hetpart's Server with dynamic batching, the same without batching, one request at a
time across the models (sequential), and PyTorch with CUDA graphs from two threads
(skipped with the reason where torch+CUDA are missing or a model has no twin).  Per
contender: the highest offered rate whose p99 stays under --slo-ms with every answer
checked against its own request (for hetpart's batching server: against its answer on
every bucket build it may be batched into).  hetpart batches a model only on the
bucket builds that pay: at setup each build is timed on real payloads and kept where
latency(b)/b <= --pays x latency(1) (a model where none pays is served unbatched, no
wait); --batch-sizes gives the sizes outright instead (nothing timed; it wins).  The
policy per model is recorded (JSON ``batching``, a line in the .md).  The rates:
from --start-fraction of the one-at-a-time capacity, up by SLO/p99 clamped to
[--growth, --max-growth] while the SLO holds (down likewise until it does), then
--refine bisections down to --resolution; the report states this rule.  Writes bench/results/serve-<gpu>.json (schema
``hetpart-bench-serve``), .md (table) and .svg (p99 against offered load).
``--small --simulate`` is a CPU smoke test of the whole path (zoo small models,
CUDA partitions on the CPU); its numbers mean nothing.  Progress goes to stderr.

Where hetpart's tail comes from (schema 2): every load point of a hetpart server
records each request's latency split into phases (generator lag, queue, batch
forming, run, delivery), the slowest 1 % of requests split likewise with their GC
overlap and the batches running beside theirs, run p99 alone vs beside other runs,
the GC's pauses per generation and a thread wake-up lag probe
(:mod:`hetpart.bench.serve_tail`); the .md has a line of it per scenario at
hetpart's best rate and at the first rate over the SLO.  --contenders runs only
some contenders (a focused run); --instances sets how many batches of a model
hetpart's servers run at once, --variant-instances adds hetpart variants with other
counts (an A/B in one run); --no-freeze leaves the GC alone (the before of an A/B);
--cpu-sharing gate,split,none sets how hetpart's sessions share the cores among CPU
partitions running at once (:mod:`hetpart.runtime.cpu_share`: the first policy for
every hetpart contender, each other one a variant hetpart-<policy>); the record says
which ran (JSON ``cpu_sharing``: the policies, each one's lanes, their CPUs and pool
sizes, and how often a CPU partition waited for a lane; a line in the .md).
Issue 20's detector (branch serve-detector): --placement forced,cpu-tail builds every model
a second way (``cpu-tail``: kernels fed only by CPU kernels, the detector's NMS trim, stay
on the CPU; a model placed alike is shared) served as variant hetpart-cpu-tail;
--hold-ms adds variants hetpart-hold<ms> (a partial batch waits while another batch of
its model runs, :mod:`hetpart.serving.batcher`); --nospin-variant adds hetpart-nospin
(host threads sleep while waiting for the GPU); --combined-variant adds hetpart-all, all
three at once.  --gates 1 adds hetpart-gate1 (issue 20, branch serve-serial): hetpart's
bucketed sessions, batching policy and max_delay behind a 1-slot gate across the models
(``Server(max_concurrent_batches=1)``, one instance per model): sequential's one run at
a time, which beat hetpart beside the detector's CPU partitions (step 140), with
batching's amortisation; --gates n gives hetpart-gate<n> (n slots, min(--instances, n)
instances per model).  Every load point records ``resources``:
the process's cores busy and each CPU-sharing lane's busy fraction and wait per call (a
line per contender in the .md).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hetpart.bench import serve, serve_models, serve_report  # noqa: E402
from hetpart.bench.suite import gpu_slug, machine  # noqa: E402
from hetpart.contracts import atomic_write_text, write_json  # noqa: E402
from hetpart.runtime import cpu_share  # noqa: E402
from hetpart.serving import heap  # noqa: E402
from hetpart.serving.policy import PAYS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SETUP_SHARE = 0.6  # the most of the budget model export + compilation may take before load starts


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default="resnet50+bert,detector+resnet50,detector+resnet50+bert",
                   help="comma-separated scenarios, models joined by '+' (default: %(default)s)")
    p.add_argument("--slo-ms", type=float, default=50.0, help="p99 latency SLO in ms (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=8, help="hetpart's batch (compiled for it; default: %(default)s)")
    p.add_argument("--batch-sizes", default=None,
                   help="hetpart batches every model at these sizes, e.g. 1,2,4,8 (default: the bucket builds "
                        "that pay, measured at setup)")
    p.add_argument("--pays", type=float, default=PAYS,
                   help="a bucket build b is kept where latency(b)/b <= PAYS x latency(1) (default: %(default)s)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="the batcher's max delay (default: %(default)s)")
    p.add_argument("--instances", type=int, default=2,
                   help="batches of one model hetpart's servers run at once (default: %(default)s)")
    p.add_argument("--variant-instances", default="",
                   help="comma-separated instance counts, each adding a variant contender hetpart-i<n> (an A/B "
                        "in one run, reported beside hetpart, never counted as the best other)")
    p.add_argument("--cpu-sharing", default="gate",
                   help="comma-separated CPU-sharing policies of hetpart's sessions (gate, split, split:N, none; "
                        "hetpart.runtime.cpu_share): the first for every hetpart contender, each other one adding "
                        "a variant hetpart-<policy> (an A/B in one run; default: %(default)s)")
    p.add_argument("--hold-ms", default="",
                   help="comma-separated hold times (ms), each adding a variant hetpart-hold<ms> whose batchers hold a "
                        "partial batch while another batch of its model runs (hetpart.serving.batcher; default: none)")
    p.add_argument("--nospin-variant", action="store_true",
                   help="add a variant hetpart-nospin: sessions whose host threads sleep while waiting for the GPU")
    p.add_argument("--combined-variant", action="store_true",
                   help="add a variant hetpart-all with the other placement, the first --hold-ms and "
                        "--nospin-variant's sessions at once")
    p.add_argument("--gates", default="",
                   help="comma-separated slot counts, each adding a variant hetpart-gate<n>: hetpart's batching with at "
                        "most n batches running at once across the models (max_concurrent_batches=n), min(--instances, "
                        "n) instance(s) per model; 1: one run at a time, as sequential, but batched (default: none)")
    p.add_argument("--placement", default="forced",
                   help="comma-separated placements of every build (forced, cpu-tail: hetpart.bench.serve_models."
                        "PLACEMENTS): the first for every contender, each other one adding a variant "
                        "hetpart-<placement> over models built so (default: %(default)s)")
    p.add_argument("--contenders", default=None,
                   help="comma-separated contenders to run, e.g. hetpart,sequential (default: all; the speedup "
                        "is then over the best of those run)")
    p.add_argument("--no-freeze", action="store_true",
                   help="servers leave the GC alone (no gc.freeze() at their first request): the before of an A/B")
    p.add_argument("--no-probe", action="store_true",
                   help="no wake-up lag probe thread during the load windows (GC pauses are still recorded)")
    p.add_argument("--window-s", type=float, default=2.0, help="seconds of load per rate (default: %(default)s)")
    p.add_argument("--start-fraction", type=float, default=1.0,
                   help="first rate, as a fraction of the one-at-a-time capacity (default: %(default)s)")
    p.add_argument("--growth", type=float, default=1.4,
                   help="least rate multiplier per step; the step is SLO/p99 clamped to [growth, max-growth] "
                        "(default: %(default)s)")
    p.add_argument("--max-growth", type=float, default=3.0, help="most rate multiplier per step (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=24,
                   help="most rates per contender before bisecting (default: %(default)s)")
    p.add_argument("--refine", type=int, default=5,
                   help="most bisections between the best rate under the SLO and the first over it "
                        "(default: %(default)s)")
    p.add_argument("--resolution", type=float, default=1.08,
                   help="bisection stops once those two rates are within this ratio (default: %(default)s)")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds for everything, setup included (default: %(default)s)")
    p.add_argument("--small", action="store_true", help="zoo small models (smoke test, not the benchmark)")
    p.add_argument("--simulate", action="store_true", help="CUDA partitions on the CPU (no GPU needed)")
    p.add_argument("--out", default=None, help="JSON path (default: bench/results/serve-<gpu>.json; .md and .svg beside)")
    args = p.parse_args(argv)
    try:
        gates = [int(n) for n in args.gates.split(",") if n]
    except ValueError:
        gates = [0]
    if any(n < 1 for n in gates):
        p.error(f"--gates takes slot counts >= 1, got '{args.gates}'")
    args.gate_slots = tuple(gates)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    start = time.monotonic()
    log = lambda msg: print(f"[{time.monotonic() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    scenarios = [s.split("+") for s in args.scenarios.split(",") if s]
    explicit_sizes = [int(b) for b in args.batch_sizes.split(",") if b] if args.batch_sizes else None
    wanted = {c for c in args.contenders.split(",") if c} if args.contenders else None
    sharing = tuple(dict.fromkeys(cpu_share.parse(x).name for x in args.cpu_sharing.split(",") if x)) or ("gate",)
    names = sorted({n for s in scenarios for n in s}, key=lambda n: [n for s in scenarios for n in s].index(n))
    placements = [x for x in args.placement.split(",") if x] or ["forced"]
    from hetpart.compiler import LibraryCache

    libraries = LibraryCache()  # a partition two placements share is built once
    with tempfile.TemporaryDirectory(prefix="hetpart-serve-") as work:
        served = {m.name: m for m in serve_models.build(names, max_batch=args.max_batch, small=args.small,
                                                         simulate=args.simulate, work=Path(work), log=log,
                                                         placement=placements[0], library_cache=libraries)}
        placed = {p: {m.name: m for m in serve_models.build(names, max_batch=args.max_batch, small=args.small,
                                                             simulate=args.simulate, work=Path(work), log=log,
                                                             placement=p, reuse=list(served.values()),
                                                             library_cache=libraries)}
                  for p in placements[1:]}
    if libraries.hits:
        log(f"{libraries.hits} partition(s) of a later placement reused a library built before")
    setup_s = time.monotonic() - start
    log(f"setup done in {setup_s:.0f} s")
    if setup_s > SETUP_SHARE * args.budget:
        log(f"setup took more than {SETUP_SHARE:.0%} of --budget: the sweeps get what is left")
    sessions: dict = {}
    try:
        built = []
        for models in scenarios:
            members = [served[n] for n in models]
            offered = serve_models.contenders(members, max_delay=args.max_delay_ms / 1e3, sessions=sessions,
                                              batch_sizes=explicit_sizes, pays=args.pays, instances=args.instances,
                                              freeze_heap=not args.no_freeze,
                                              variants=tuple(int(n) for n in args.variant_instances.split(",") if n),
                                              cpu_sharing=sharing,
                                              holds=tuple(float(h) / 1e3 for h in args.hold_ms.split(",") if h),
                                              no_spin=args.nospin_variant,
                                              placed={p: [by[n] for n in models] for p, by in placed.items()},
                                              combined=args.combined_variant,
                                              gates=args.gate_slots)
            built.append(serve.Scenario("+".join(models), serve_models.load_models(members),
                                        [c for c in offered if wanted is None or c.name in wanted or c.variant], args.slo_ms))
        options = serve.SweepOptions(window_s=args.window_s, start_fraction=args.start_fraction, growth=args.growth,
                                     max_growth=args.max_growth, max_steps=args.max_steps, refine=args.refine,
                                     resolution=args.resolution, probe=not args.no_probe)
        left = args.budget - (time.monotonic() - start) - 10  # 10 s to close sessions and write files
        body = serve.run(built, options, max(left, 0.0), log)
    finally:
        for s in sessions.values():
            try:
                s.close()
            except Exception as exc:  # noqa: BLE001 - a failed close must not lose the numbers measured
                log(f"closing a session failed: {type(exc).__name__}: {exc}")
    info = machine()
    body.update(created=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), machine=info,
                command="PYTHONPATH=. python3 bench/serve.py " + shlex.join(sys.argv[1:] if argv is None else argv),
                setup_s=setup_s, simulate=args.simulate, small=args.small, python=sys.version.split()[0],
                gc_at_end=heap.state(), freeze_heap=not args.no_freeze, instances=args.instances,
                cpu_sharing={"hetpart": sharing[0], "variants": list(sharing[1:]), "shares": cpu_share.records()},
                process=_process_threads(),
                models={m.name: m.notes for m in served.values()},
                batching={m.name: m.batching.record() for m in served.values() if m.batching is not None},
                placement=placements[0],
                placed={p: {m.name: {"batching": m.batching.record() if m.batching is not None else None,
                                     "plans": {str(b): _plan_shape(c) for b, c in sorted(m.compiled.items())}}
                            for m in by.values()} for p, by in {placements[0]: served, **placed}.items()})
    out = Path(args.out or RESULTS / f"serve-{gpu_slug(info) if not args.simulate else 'simulated'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, serve.SCHEMA, serve.VERSION, body)
    header = [f"# hetpart serving on {info['gpu']}", "", f"* date: {body['created']}", f"* cpu: {info['cpu']}",
              f"* command: `{body['command']}`", f"* setup (export + compile): {setup_s:.0f} s",
              "* models: " + "; ".join(n for m in served.values() for n in m.notes),
              "* hetpart batching (per model, decided at setup): " + ("; ".join(
                  f"{m.name}: {m.batching.describe()}" for m in served.values() if m.batching is not None) or "none"),
              f"* serving: {args.instances} instance(s) per model; the GC: "
              + ("left alone (--no-freeze)" if args.no_freeze else "heap frozen at each server's first request")
              + f"; python {body['python']}; {body['process']['os_threads']} OS threads at the end "
              f"(TVM CPU pool size {body['process']['cpu_pool_size']} per calling thread)",
              "* CPU sharing (hetpart's sessions' CPU partitions): " + serve_report.cpu_sharing_line(body["cpu_sharing"]),
              "* placement (per placement, model and build: its partitions, device:kernels): " + "; ".join(
                  f"{p}: " + ", ".join(f"{n} b{b} {plan}" for n, rec in by.items() for b, plan in rec["plans"].items()
                                       if b in ("1", "8"))
                  for p, by in body["placed"].items()),
              f"* plot: {out.with_suffix('.svg').name}"]
    atomic_write_text(out.with_suffix(".md"), serve_report.markdown(body, header))
    atomic_write_text(out.with_suffix(".svg"), serve_report.svg(body))
    print(serve_report.markdown(body, header))
    log(f"wrote {out}, .md, .svg")
    return 0 if all(s["lost"] == 0 and s["crossed"] == 0 for s in body["scenarios"]) else 1


def _plan_shape(compiled) -> str:
    """A build's partitions in one word each, e.g. ``cuda:10 cpu:1 cuda:3 cpu:1``."""
    return " ".join(f"{p.device}:{len(p.kernels)}" for p in compiled.plan.partitions)


def _process_threads() -> dict:
    """The process's OS threads now (Python's and native: TVM pools, CUDA) and the TVM
    CPU pool size in force: how crowded the cores were (a fork-join pool per calling thread)."""
    import os
    import threading

    from hetpart.cpu_cores import pool_size

    try:
        native = len(os.listdir("/proc/self/task"))
    except OSError:
        native = None
    return {"os_threads": native, "python_threads": threading.active_count(), "cpu_pool_size": pool_size()}


if __name__ == "__main__":
    sys.exit(main())
