"""Where the host time of a CPU->CUDA->CPU "turn" goes in a streaming plan's run (issue 19).

A zoo mlp of ``--width`` x ``--width`` Gemm+Relu kernels is cut into ``--layers``
repeats of one CPU partition (``--cpu-kernels`` kernels) followed by ``--cuda-parts``
one-kernel CUDA partitions whose weights are streamed through a 2-slot ring (as
llama_decode at 1/2: a CPU GEMV layer, then CUDA partitions, some streamed:
``--streamed every|first|none``).  ``--model llama_decode`` uses the zoo's small
decode step instead (the same grouping over its kernels; opened as the capped benchmark
opens it, ``capped.open_stepping``: the caches bound on their device where the plan
allows, a :class:`~hetpart.runtime.state.DeviceState`).  The session is opened as the
benchmark does (``Session(compiled)``, warm runs inline on the calling thread), then:

* **plain** runs: wall time and the calling thread's CPU time (``time.thread_time``)
  of ``Session.run``, no instrumentation;
* **calls** runs: only the partitions' VM calls timed (``PartitionRunner.call``): a CPU
  partition's compute, a CUDA partition's launch (in simulation its compute too);
* **phases** runs: every runtime function of the path wrapped (exclusive time, per
  stage): ``get`` (RunContext.get: a value, a host wait on a marker), ``outbuf``,
  ``acquire`` / ``retire`` (the weight ring), ``call``, ``enqueue`` (RunContext.enqueue
  around a stream op), ``publish`` (executor.publish / _to_gpu / _to_host),
  ``record`` / ``copy`` / ``wait`` / ``launch`` / ``sync`` (the stream's own calls:
  CUDA runtime calls on a GPU), ``stats`` (RunStats), ``done`` (stage_done), ``other``
  (the rest of run_stage); per run ``open`` (feeds checked, context, publish_feeds,
  state begin) and ``complete`` (wait, outputs, ring finish, state end).

``host/turn`` = (plain run time - the VM calls' time) / turns, a turn being one
CPU partition's end to the next one's start (the run's other host work counted in).
The wrappers add ~0.5 us per wrapped call to the phase table, not to ``host/turn``.

Streams: on a GPU the session's own (``--stream real``, the default there).  In
simulation ``--stream null`` (the default) replaces the session's simulated streams,
after it opened, with ones that do each operation at once on the calling thread (a
copy is a memcpy, a marker is reached when recorded): an inline run then is the
product's host path minus the CUDA runtime calls, which are counted ("stream operations
per turn"; on a GPU each is a CUDA call, its host us in the summary).  ``--stream sim`` keeps
the simulated streams (thread hand-offs per operation: the simulation's, not a GPU's).

Sides: ``--set M.A=V`` for every session; ``--before M.A=V`` and ``--variant "NAME:M.A=V,..."``
add sides measured from the same build, a fresh session each, the sides alternating
round by round (``--repeats`` rounds); switches a session reads when it opens.  Values as
:mod:`hetpart.bench.switches` reads them (``0``/``1``/``True``/``False`` for a bool switch).
``--save DIR`` / ``--load DIR`` reuse a build in another process (e.g. under another
``TVM_THREAD_POOL_SPIN_COUNT``).

    PYTHONPATH=. TVM_NUM_THREADS=1 python tools/turn_cost.py --layers 12 --json out.json
    python tools/turn_cost.py --repeats 5 --before hetpart.runtime.executor.LEAN_MARKERS=False
    python tools/turn_cost.py --model llama_decode --layers 6 --set hetpart.runtime.handoff.GROUPED_H2D=True \
        --variant "ungrouped:hetpart.runtime.handoff.GROUPED_H2D=False"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PHASES = ("get", "outbuf", "acquire", "call", "launch", "enqueue", "record", "copy", "wait", "sync",
          "retire", "publish", "stats", "done", "other")
RUN_PHASES = ("open", "complete")


# --- the model and plan -------------------------------------------------------------------
def turn_plan(graph, cpu_kernels: int, cuda_parts: int, streamed: str, layers: int | None = None):
    """Partitions in topological order: ``cpu_kernels`` kernels on the CPU, then
    ``cuda_parts`` CUDA partitions of one kernel each, repeated (``layers`` times at most,
    the rest of the kernels in one last CPU partition).  CUDA weights streamed
    through a 2-slot ring: ``every`` CUDA partition, the ``first`` of each group, or ``none``."""
    from hetpart.partitioner import Partition, Plan

    order = graph.topological_order()
    groups: list[tuple[str, list[str]]] = []
    i, layer = 0, 0
    while i < len(order):
        if layers is not None and layer >= layers:
            groups.append(("cpu", order[i:]))
            break
        groups.append(("cpu", order[i:i + cpu_kernels]))
        i += cpu_kernels
        for k in range(cuda_parts):
            if i < len(order):
                groups.append(("cuda", [order[i]]))
                i += 1
        layer += 1
    parts, first = [], True
    for n, (device, kernels) in enumerate(groups):
        weights = sum(graph.kernels[k].param_bytes for k in kernels)
        p = Partition(f"p{n}_{device}", device, kernels, weight_bytes=weights)
        if device == "cuda":
            if weights and (streamed == "every" or (streamed == "first" and first)):
                p.weights = "streamed"
            first = False
        else:
            first = True
        parts.append(p)
    biggest = max((p.weight_bytes for p in parts if p.weights == "streamed"), default=0)
    return Plan(model=graph.name, objective="turn cost", assignment={k: p.device for p in parts for k in p.kernels},
                partitions=parts, cuts=[], timeline=[], predicted={}, profile_origin="probe", graph=graph,
                stream_slots=2 if biggest else 0, stream_slot_bytes=biggest)


def build(args):
    """``(compiled, feeds)`` for the options."""
    import numpy as np

    from hetpart import compiler, importer, models

    if args.model == "mlp":
        w = args.width
        kernels = args.layers * (args.cpu_kernels + args.cuda_parts) + 1
        graph = importer.load(models.build("mlp", in_features=w, hidden=(w,) * (kernels - 1), num_classes=w))
        feeds = {"input": np.random.default_rng(0).standard_normal((1, w)).astype("float32")}
        plan = turn_plan(graph, args.cpu_kernels, args.cuda_parts, args.streamed)
    else:
        onnx_model = models.build(args.model, small=True)
        graph = importer.load(onnx_model)
        rng = np.random.default_rng(0)
        feeds = {}
        for name in graph.inputs:
            t = graph.tensors[name]
            feeds[name] = (np.zeros(t.shape, t.dtype) if "int" in str(t.dtype)
                           else rng.standard_normal(t.shape).astype(t.dtype))
        plan = turn_plan(graph, args.cpu_kernels, args.cuda_parts, args.streamed, args.layers)
    load = getattr(args, "load", None)
    if load and (Path(load) / "manifest.json").exists():  # the same options' build, saved by --save
        from hetpart.compiler import load_compiled

        return load_compiled(load), feeds
    compiled = compiler.compile(plan, graph, simulate=args.simulate, progress=False)
    save = getattr(args, "save", None)
    if save:
        compiled.save(save)
        from hetpart.compiler import load_compiled

        compiled = load_compiled(save)  # saving moves the libraries: run what was saved
    return compiled, feeds


# --- streams that do everything at once on the calling thread ------------------------------
class _NowMarker:
    """A marker reached when recorded (everything before it is done already)."""

    def __init__(self):
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def seconds_since(self, earlier) -> float:
        return self.time - earlier.time

    def release(self) -> None:
        pass


class NowStream:
    """A stream whose every operation is done when enqueued, on the calling thread."""

    simulated = True
    handle = 0
    priority = None

    def launch(self, fn, reads=()) -> None:
        fn()

    def launch_in_order(self, fn) -> None:
        fn()

    def wait(self, marker) -> None:
        pass

    def copy(self, dst, src, kind: str) -> None:
        import numpy as np

        np.copyto(dst.array, src.array)

    def record(self):
        return _NowMarker()

    def close(self) -> None:
        pass


def use_now_streams(session) -> None:
    """Swap the session's simulated streams for :class:`NowStream` s (after it opened:
    the ring's first fills are done; the old streams drained and closed)."""
    old = []
    now = NowStream()
    if session._stream is not None:
        old.append(session._stream)
        session._stream = now
        session._epoch = now.record()
        session._epoch_host = session._epoch.time
    if session._ring is not None:
        engine = session._ring.engine
        old.append(engine.copier)
        engine.compute, engine.copier = now, NowStream()
    for s in old:
        s.record().synchronize()  # everything enqueued so far has run
        s.close()


# --- instrumentation ---------------------------------------------------------------------
class Profiler:
    """Exclusive host time per (stage, phase) of wrapped functions, on one thread."""

    def __init__(self):
        self.acc: dict[tuple[str, str], int] = defaultdict(int)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.stack: list[int] = []
        self.stage = "open"
        self.calls: list[tuple[str, str, int, int]] = []  # (stage, device, start ns, end ns) of VM calls
        self._undo: list = []

    def reset(self) -> None:
        self.acc.clear()
        self.counts.clear()
        self.calls.clear()
        self.stack.clear()
        self.stage = "open"

    def wrap(self, owner, attr: str, phase: str) -> None:
        orig = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        prof = self

        def wrapped(*a, **k):
            stack = prof.stack
            stack.append(0)
            t0 = time.perf_counter_ns()
            try:
                return orig(*a, **k)
            finally:
                dt = time.perf_counter_ns() - t0
                child = stack.pop()
                key = (prof.stage, phase)
                prof.acc[key] += dt - child
                prof.counts[key] += 1
                if stack:
                    stack[-1] += dt

        setattr(owner, attr, wrapped)
        self._undo.append((owner, attr, orig))

    def wrap_stage(self, executor) -> None:
        orig = executor.run_stage
        prof = self

        def run_stage(ctx, stage):
            prof.stage = stage.name
            prof.stack.append(0)
            t0 = time.perf_counter_ns()
            try:
                return orig(ctx, stage)
            finally:
                dt = time.perf_counter_ns() - t0
                prof.acc[(stage.name, "other")] += dt - prof.stack.pop()
                prof.stage = "complete"

        executor.run_stage = run_stage
        self._undo.append((executor, "run_stage", orig))

    def wrap_calls(self, runner_cls, devices: dict) -> None:
        """Time the VM calls (start/end per call) and count them as phase ``call``."""
        orig = runner_cls.__dict__["call"]
        prof = self

        def call(runner, *a, **k):
            prof.stack.append(0)
            t0 = time.perf_counter_ns()
            try:
                return orig(runner, *a, **k)
            finally:
                t1 = time.perf_counter_ns()
                child = prof.stack.pop()
                name = runner.artifact.name
                prof.calls.append((name, devices.get(name, "?"), t0, t1))
                prof.acc[(prof.stage, "call")] += t1 - t0 - child
                prof.counts[(prof.stage, "call")] += 1
                if prof.stack:
                    prof.stack[-1] += t1 - t0

        runner_cls.call = call
        self._undo.append((runner_cls, "call", orig))

    def unwrap(self) -> None:
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo.clear()


def install_phases(prof: Profiler, session) -> None:
    from hetpart.runtime import executor, session as session_mod, state, stats, weight_stream

    ex = executor
    prof.wrap_stage(ex)
    for attr, phase in (("get", "get"), ("output_buffer", "outbuf"), ("enqueue", "enqueue"), ("put", "get"),
                        ("stage_done", "done"), ("host_span", "stats")):
        prof.wrap(ex.RunContext, attr, phase)
    for attr in ("publish", "_to_gpu", "_to_host"):
        prof.wrap(ex, attr, "publish")
    prof.wrap(ex, "publish_feeds", "open")
    prof.wrap(weight_stream.WeightRing, "acquire", "acquire")
    prof.wrap(weight_stream.WeightRing, "retire", "retire")
    for attr in ("count", "edge", "span"):
        prof.wrap(stats.RunStats, attr, "stats")
    streams = {type(s) for s in (session._stream, getattr(session._ring, "engine", None) and session._ring.engine.copier)
               if s is not None}
    for cls in streams:
        for attr, phase in (("record", "record"), ("copy", "copy"), ("wait", "wait"), ("launch", "launch"),
                            ("launch_in_order", "launch")):
            if attr in cls.__dict__:
                prof.wrap(cls, attr, phase)
    marker = getattr(session, "_epoch", None)
    if marker is not None and "synchronize" in type(marker).__dict__:
        prof.wrap(type(marker), "synchronize", "sync")
    for attr in ("_checked", "_context", "_reserve_weights"):
        prof.wrap(session_mod.Session, attr, "open")
    prof.wrap(session_mod.Session, "_complete", "complete")
    if session.state is not None:
        prof.wrap(state.DeviceState, "begin", "open")
        prof.wrap(state.DeviceState, "end", "complete")


# --- measuring -----------------------------------------------------------------------------
def turns_of(compiled) -> int:
    """CPU->CUDA->CPU turns in a run: CUDA groups with a CPU partition after them."""
    devices = [p.device for p in compiled.partitions]
    return sum(1 for a, b in zip(devices, devices[1:]) if a == "cuda" and b == "cpu")


def measure(session, feeds, runs: int, warmup: int = 10) -> dict:
    from hetpart.runtime import partition_runner

    for _ in range(warmup):
        session.run(feeds)
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        session.run(feeds)
        wall.append(time.perf_counter_ns() - t0)
        cpu.append(time.thread_time_ns() - c0)
    devices = {p.name: p.device for p in session.compiled.partitions}
    # the VM calls alone
    prof = Profiler()
    prof.wrap_calls(partition_runner.PartitionRunner, devices)
    call_wall, call_cpu_per, gaps = [], [], []
    try:
        for _ in range(runs):
            prof.reset()
            session.run(feeds)
            call_wall.append(sum(e - s for _, _, s, e in prof.calls))
            gaps.append(_turn_gaps(prof.calls))
    finally:
        prof.unwrap()
    # the phases
    prof = Profiler()
    prof.wrap_calls(partition_runner.PartitionRunner, devices)
    install_phases(prof, session)
    per_run: list[dict] = []
    counts: dict[str, float] = {}
    try:
        for _ in range(runs):
            prof.reset()
            session.run(feeds)
            per_run.append(dict(prof.acc))
        for (stage, phase), n in prof.counts.items():  # the last run's stream operations, by kind
            if phase in ("record", "copy", "wait", "sync", "launch"):
                counts[phase] = counts.get(phase, 0) + n
    finally:
        prof.unwrap()
    keys = sorted({k for r in per_run for k in r})
    phases = {k: statistics.median(r.get(k, 0) for r in per_run) / 1e3 for k in keys}
    turns = turns_of(session.compiled)
    med = statistics.median
    n_gaps = max(len(g) for g in gaps) if gaps else 0
    gap_med = [med(g[i] for g in gaps if len(g) > i) / 1e3 for i in range(n_gaps)]
    return {
        "runs": runs, "turns": turns, "partitions": len(devices), "inline_runs": session.inline_runs,
        "run_wall_us": med(wall) / 1e3, "run_cpu_us": med(cpu) / 1e3,
        "calls_us": med(call_wall) / 1e3,
        "host_us": (med(wall) - med(call_wall)) / 1e3,
        "host_per_turn_us": (med(wall) - med(call_wall)) / 1e3 / max(turns, 1),
        # the same from the calling thread's CPU time (a shared box: time another process ran is not counted)
        "host_cpu_per_turn_us": (med(cpu) - med(call_wall)) / 1e3 / max(turns, 1),
        # the 10th percentiles (a shared box: the runs other processes slowed least)
        "host_p10_per_turn_us": (_p10(wall) - _p10(call_wall)) / 1e3 / max(turns, 1),
        "stream_calls_per_run": {p: n for p, n in counts.items()},
        "turn_gaps_us": gap_med,  # per turn: CPU call end -> next CPU call start, host clock
        "phases_us": {f"{s}|{p}": v for (s, p), v in phases.items()},
    }


def _p10(values) -> float:
    return sorted(values)[len(values) // 10]


def _turn_gaps(calls) -> list[int]:
    """ns from each CPU call's end to the next CPU call's start, where CUDA calls lie between."""
    out = []
    last_cpu_end, crossed = None, False
    for name, device, start, end in calls:
        if device == "cpu":
            if last_cpu_end is not None and crossed:
                out.append(start - last_cpu_end)
            last_cpu_end, crossed = end, False
        else:
            crossed = True
    return out


def table(result: dict, compiled) -> str:
    """Per stage: median host us per phase (exclusive), and the run-level rows."""
    phases = defaultdict(dict)
    for key, v in result["phases_us"].items():
        stage, phase = key.split("|")
        phases[stage][phase] = v
    used = [p for p in PHASES if any(p in row for row in phases.values())]
    lines = [f"{'stage':<12}{'dev':>5}" + "".join(f"{p:>8}" for p in used) + f"{'total':>9}{'-call':>8}"]
    devices = {p.name: p.device for p in compiled.partitions}
    for name in ["open"] + [p.name for p in compiled.partitions] + ["complete"]:
        row = phases.get(name, {})
        if not row:
            continue
        total = sum(row.values())
        lines.append(f"{name:<12}{devices.get(name, '-'):>5}" + "".join(f"{row.get(p, 0):>8.1f}" for p in used)
                     + f"{total:>9.1f}{total - row.get('call', 0) if devices.get(name) == 'cpu' else total:>8.1f}")
    sums = defaultdict(float)
    for name, row in phases.items():
        for p, v in row.items():
            if devices.get(name) == "cuda" or (devices.get(name) == "cpu" and p != "call") or name in RUN_PHASES:
                sums[p] += v
    t = max(result["turns"], 1)
    lines.append(f"{'per turn':<12}{'':>5}" + "".join(f"{sums.get(p, 0) / t:>8.1f}" for p in used)
                 + f"{sum(sums.values()) / t:>9.1f}   (host work other than CPU compute, / {t} turns)")
    return "\n".join(lines)


def summarize(results: list[dict]) -> dict:
    """One side's result: the middle repeat's tables, medians of the repeats' totals."""
    med = statistics.median
    result = dict(sorted(results, key=lambda r: r["host_per_turn_us"])[len(results) // 2])
    for key in ("run_wall_us", "run_cpu_us", "calls_us", "host_us", "host_per_turn_us", "host_cpu_per_turn_us",
                "host_p10_per_turn_us"):
        result[key] = med(r[key] for r in results)
        result[key + "_all"] = [r[key] for r in results]
    return result


def per_call_us(result: dict) -> dict[str, float]:
    """Median host us of one stream operation of each kind: its phase's sum over the
    stages of a run / its count in a run (a ``sync`` includes the wait for the GPU)."""
    totals: dict[str, float] = defaultdict(float)
    for key, v in result["phases_us"].items():
        phase = key.split("|")[1]
        if phase in result["stream_calls_per_run"]:
            totals[phase] += v
    return {k: totals[k] / n for k, n in result["stream_calls_per_run"].items() if n}


def report(result: dict, compiled, note: str) -> None:
    print(table(result, compiled))
    print(f"run {result['run_wall_us']:.1f} us wall, {result['run_cpu_us']:.1f} us CPU (calling thread); "
          f"VM calls {result['calls_us']:.1f}; host {result['host_us']:.1f} = "
          f"{result['host_per_turn_us']:.1f} us / turn (CPU time: {result['host_cpu_per_turn_us']:.1f}, "
          f"10th percentiles: {result['host_p10_per_turn_us']:.1f}; "
          f"{result['turns']} turns, {result['partitions']} partitions, {result['inline_runs']} runs inline); "
          f"{note or ''}")
    t = max(result["turns"], 1)
    print("stream operations per turn (CUDA runtime calls on a GPU): " + ", ".join(
        f"{k} {v / t:.2f}" for k, v in sorted(result["stream_calls_per_run"].items())))
    each = per_call_us(result)
    print("host us per stream operation (phase tables, wrappers included): " + ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(each.items())))
    gaps = result["turn_gaps_us"]
    if gaps:
        print("turn gaps (CPU call end -> next CPU call start, us): " + " ".join(f"{g:.0f}" for g in gaps))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mlp", choices=("mlp", "llama_decode"))
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--cpu-kernels", type=int, default=3)
    p.add_argument("--cuda-parts", type=int, default=2)
    p.add_argument("--streamed", default="every", choices=("every", "first", "none"))
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1, help="measure this many times (per side); medians")
    p.add_argument("--simulate", action="store_true", help="CUDA partitions built for the CPU (default with no GPU)")
    p.add_argument("--stream", default=None, choices=("null", "sim", "real"),
                   help="null (simulation's default), sim, real (a GPU's)")
    p.add_argument("--set", action="append", default=[], help="module.SWITCH=value for every session (before the build)")
    p.add_argument("--before", action="append", default=[],
                   help="module.SWITCH=value: also measure a 'before' side with these set (same build; the "
                        "sides alternate, a fresh session each)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:M.A=V[,M.A=V]",
                   help="another side NAME with these switches set (as --before)")
    p.add_argument("--save", default=None, metavar="DIR", help="save the build there (for --load)")
    p.add_argument("--load", default=None, metavar="DIR",
                   help="run the build saved there by --save with the same options (built if none is)")
    p.add_argument("--cprofile", type=int, default=0, help="also cProfile this many runs; print the top functions")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from hetpart.bench.switches import apply_switches, parse_switches
    from hetpart.errors import HetpartError
    from hetpart.targets import cuda_available

    if not args.simulate and not cuda_available():
        args.simulate = True
    if args.stream is None:
        args.stream = "null" if args.simulate else "real"
    try:
        sets = parse_switches(args.set)
        before = parse_switches(args.before)
        variants = {v.partition(":")[0].strip(): parse_switches([a for a in v.partition(":")[2].split(",") if a])
                    for v in args.variant}
    except HetpartError as exc:
        raise SystemExit(f"--set/--before/--variant: {exc}") from None
    apply_switches(sets)

    from hetpart.bench import capped
    from hetpart.runtime import Session

    t0 = time.time()
    compiled, feeds = build(args)
    print(f"# compiled {len(compiled.partitions)} partitions ({turns_of(compiled)} turns, "
          f"{sum(1 for a in compiled.partitions if a.weights is not None)} streamed) in {time.time() - t0:.0f} s; "
          f"stream {args.stream}; set {sets or '-'}; before {before or '-'}", flush=True)
    sides = {"after": {}, **variants}
    if before:
        sides["before"] = before
    results: dict[str, list] = {side: [] for side in sides}
    failed: dict[str, str] = {}
    note = ""
    for rep in range(args.repeats):
        order = list(sides) if rep % 2 == 0 else list(reversed(list(sides)))
        for side in order:
            if side in failed:
                continue
            old = apply_switches(sides[side])
            try:
                if args.model == "mlp":
                    session, step, note = Session(compiled), feeds, ""
                else:
                    session, step, note = capped.open_stepping(compiled, feeds)
                with session:
                    if args.stream == "null":
                        if not session.simulated:
                            raise SystemExit("--stream null needs a simulated build")
                        use_now_streams(session)
                    results[side].append(measure(session, step, args.runs))
                    if args.cprofile and side == "after" and rep == 0:
                        import cProfile
                        import pstats

                        pr = cProfile.Profile()
                        pr.enable()
                        for _ in range(args.cprofile):
                            session.run(step)
                        pr.disable()
                        pstats.Stats(pr).sort_stats("tottime").print_stats(25)
            except Exception as exc:  # noqa: BLE001 - reported; the other sides are still measured
                failed[side] = f"{type(exc).__name__}: {exc}"
                print(f"{side}: FAILED {failed[side]}", flush=True)
            finally:
                apply_switches(old)
    summary = {side: summarize(rs) for side, rs in results.items() if rs}
    for side, result in summary.items():
        if len(summary) > 1:
            print(f"\n== {side} {sides[side] or ''}")
        report(result, compiled, note)
    if len(summary) > 1:
        print()
        for side, r in summary.items():
            print(f"{side:<12} host / turn {r['host_per_turn_us']:7.1f} us (10th percentiles {r['host_p10_per_turn_us']:7.1f}), "
                  f"run wall {r['run_wall_us']:8.1f} us, VM calls {r['calls_us']:8.1f} us; "
                  + ", ".join(f"{k} {v:.1f} us x {r['stream_calls_per_run'][k] / max(r['turns'], 1):.2f}"
                              for k, v in sorted(per_call_us(r).items())) + " a turn")
    if args.json:
        out = {"args": vars(args), "set": sets, "sides": {k: v for k, v in sides.items()}, "note": note,
               "result": summary.get("after"), "repeats": results["after"],
               "results": summary, "all_repeats": results, "failed": failed}
        if before:
            out["result_before"] = summary.get("before")
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
