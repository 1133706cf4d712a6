"""Where a CUDA partition's handoff time goes, on a chain of alternating CPU / CUDA partitions (issue 19).

A zoo mlp of ``--width`` x ``--width`` Gemm+Relu kernels, cut into ``--layers`` CPU
partitions of ``--cpu-kernels`` kernels each, a one-GEMV CUDA partition after each
(the CPU partitions long enough that the streamed copies never hold a call back;
``late`` says if one did), is compiled twice: every CUDA
partition resident (CUDA graphs on) and every one streamed through a 2-slot ring (no
CUDA graphs: ``compiler.extract``).  Each plan runs with the handoff ``mapped`` and
``copy``; per variant: the median wall time of a warm ``Session.run`` (inline) per
partition, and from ``--timed`` profiled runs the medians, per CUDA partition, of

* ``gpu``: its span on the GPU stream (CUDA events around its launch);
* ``launch``: the host's time inside the launch (the VM call; ``executor.HOST_LAUNCH_SPANS``);
* ``host``: the host's whole turn for it (inputs, ring acquire, launch, refill enqueue, handoff out);
* ``in``: from the CPU partition's end (host clock) to the GPU span's start;
* ``out``: from the GPU span's end to the next CPU partition's start;
* ``late``: how long after the CPU partition's end its weights' copy landed (streamed);
* ``host_in``: from the CPU partition's end to the start of the host's turn for the call (one
  clock: ``in`` adds the GPU-to-host clock offset and the time to the start marker).

``gpu`` much above ``launch`` + the kernel means the device (e.g. mapped input reads,
``mapped`` against ``copy`` says); ``launch`` near ``gpu`` means the host's call.  The
streamed variants' excess over the resident ones is what streaming itself costs.
Without a GPU (``--simulate``) the numbers are the simulation's, not a GPU's.

    python tools/handoff_probe.py --layers 20 --cpu-kernels 4 --width 1024 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def chain_plan(graph, streamed: bool, cpu_kernels: int):
    """Partitions alternating ``cpu_kernels`` kernels on the CPU and one on CUDA, in
    topological order; CUDA weights streamed (a 2-slot ring) or resident."""
    from hetpart.partitioner import Partition, Plan

    groups: list[tuple[str, list[str]]] = []
    for kid in graph.topological_order():
        device = "cuda" if groups and groups[-1][0] == "cpu" and len(groups[-1][1]) == cpu_kernels else "cpu"
        if not groups or groups[-1][0] != device or device == "cuda":
            groups.append((device, []))
        groups[-1][1].append(kid)
    parts = []
    for i, (device, kernels) in enumerate(groups):
        weights = sum(graph.kernels[k].param_bytes for k in kernels)
        p = Partition(f"p{i}_{device}", device, kernels, weight_bytes=weights)
        if streamed and device == "cuda":
            p.weights = "streamed"
        parts.append(p)
    biggest = max((p.weight_bytes for p in parts if p.weights == "streamed"), default=0)
    return Plan(model=graph.name, objective="handoff probe", assignment={k: p.device for p in parts for k in p.kernels},
                partitions=parts, cuts=[], timeline=[], predicted={}, profile_origin="probe", graph=graph,
                stream_slots=2 if streamed else 0, stream_slot_bytes=biggest if streamed else 0)


def _med(values) -> float | None:
    return statistics.median(values) * 1e6 if values else None


def probe(session, feeds, runs: int, timed: int) -> dict:
    from hetpart.runtime import executor
    from hetpart.runtime.overhead import run_seconds

    walls = run_seconds(session, feeds, runs)
    gpu, launch, host, gap_in, gap_out, late, host_in = [], [], [], [], [], [], []
    session.profile = True
    try:
        for _ in range(timed):
            session.run(feeds)
            spans = session.last_run_stats.spans
            cpu = sorted((s for s in spans if s.track.startswith("cpu: ")), key=lambda s: s.start)
            by_name = {(s.track, s.name): s for s in spans}
            for s in spans:
                if s.track != session.stream_track or s.kind != "partition":
                    continue
                gpu.append(s.seconds)
                for key, out in (("launch", launch), ("host", host)):
                    h = by_name.get((executor.HOST_TRACK, f"{key} {s.name}"))
                    if h is not None:
                        out.append(h.seconds)
                # the CPU partitions either side, found on the host's clock where the host
                # turn is recorded (the GPU's spans carry the clocks' offset)
                turn = by_name.get((executor.HOST_TRACK, f"host {s.name}"))
                ref = turn.start if turn is not None else s.start
                i = max((k for k, c in enumerate(cpu) if c.start < ref), default=None)
                if i is None:
                    continue
                cpu_end = cpu[i].end
                gap_in.append(s.start - cpu_end)
                if turn is not None:
                    host_in.append(turn.start - cpu_end)
                copy = by_name.get((session.copy_track, f"weights {s.name}"))
                if copy is not None:
                    late.append(max(0.0, copy.end - cpu_end))
                if i + 1 < len(cpu):  # the next CPU partition (one CUDA call between two CPU ones)
                    gap_out.append(cpu[i + 1].start - s.end)
    finally:
        session.profile = False
    n = len(session.compiled.partitions)
    return {"wall_us_per_run": _med(walls), "wall_us_per_partition": _med(walls) / n,
            "gpu_us": _med(gpu), "launch_us": _med(launch), "host_us": _med(host),
            "in_us": _med(gap_in), "out_us": _med(gap_out), "late_us": _med(late), "host_in_us": _med(host_in),
            "inline_runs": session.inline_runs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--cpu-kernels", type=int, default=4)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--timed", type=int, default=20)
    p.add_argument("--handoffs", default="mapped,copy")
    p.add_argument("--simulate", action="store_true")
    p.add_argument("--spin-wait", type=int, default=1, help="Session(spin_wait=...): 0 sleeps on CUDA events")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import numpy as np

    from hetpart import compiler, importer, models
    from hetpart.runtime import Session

    w = args.width
    kernels = args.layers * (args.cpu_kernels + 1)
    graph = importer.load(models.build("mlp", in_features=w, hidden=(w,) * (kernels - 1), num_classes=w))
    feeds = {"input": np.random.default_rng(0).standard_normal((1, w)).astype("float32")}
    results = {}
    cols = "".join(f"{c:>8}" for c in ("gpu", "launch", "host", "in", "out", "late", "host_in"))
    print(f"{'variant':<18}{'wall/part':>10}{cols}   (us, medians)", flush=True)
    for streamed in (False, True):
        t0 = time.time()
        plan = chain_plan(graph, streamed, args.cpu_kernels)
        model = compiler.compile(plan, graph, simulate=args.simulate, progress=False)
        print(f"# compiled {'streamed' if streamed else 'resident'} in {time.time() - t0:.0f} s "
              f"(TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS', 'default')})", flush=True)
        for handoff in args.handoffs.split(","):
            name = f"{'streamed' if streamed else 'resident'}-{handoff}"
            with Session(model, handoff=handoff, spin_wait=bool(args.spin_wait)) as s:
                r = results[name] = probe(s, feeds, args.runs, args.timed)
            cells = "".join(f"{r[k]:>8.0f}" if r[k] is not None else f"{'-':>8}"
                            for k in ("gpu_us", "launch_us", "host_us", "in_us", "out_us", "late_us", "host_in_us"))
            print(f"{name:<18}{r['wall_us_per_partition']:>10.1f}{cells}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
