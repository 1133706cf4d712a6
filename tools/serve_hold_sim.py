"""The detector+ResNet-50 serving scenario with sleeping stand-ins: batcher policies A/B'd on a CPU.

Issue 20 (branch serve-detector, bench/results/serve-detector-2core.md).  Each model is a
fake runner whose run costs what its bucket build cost on the H200 (serve-share-nvidia-h200.json's
setup timings: detector b1/2/4/8 1.93/2.72/4.24/7.23 ms, ResNet-50 1.69/2.26/3.19/4.36) split
into three parts that sleep (no core used, so the 2-core box can play it):

* host: ``--host-ms`` per run, no shared resource (Python, launches);
* GPU: the rest, on one shared GPU taken in ``--slice-ms`` slices under one lock, so runs
  in flight share it (about processor sharing, as kernels of several streams do);
* CPU lane (detector only): ``--nms-ms`` x rows + 0.03 ms under a second lock (the ``gate``
  lane: NonMaxSuppression and TopK cost the same per image at every batch: measured on 1
  thread, 1.35 / 2.56 / 5.00 / 9.58 ms at b1/2/4/8; 0.27 ms per image on the H200's 16).

A run's rows are padded to its bucket (1, 2, 4, 8) as the bucketed session does.  Contenders:
``hetpart`` (Server, 2 instances per model, batches 1,2,4,8, max_delay 2 ms), ``hetpart-hold<ms>``
(the same with ``hold``: :data:`hetpart.serving.batcher.HOLD_WHILE_BUSY`), ``hetpart-i1`` (one
instance), ``sequential`` (batch 1, one run at a time across the models); each swept by the
serving benchmark's own search (:func:`hetpart.bench.serve.run`), every answer checked::

    PYTHONPATH=. python3 tools/serve_hold_sim.py --holds 5,10 --window-s 1.5

Numbers say what a policy does to batch sizes and the tail *in this model*; whether the
H200's detector is GPU- or lane-bound is what device step 128 measures.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hetpart.bench import serve  # noqa: E402
from hetpart.bench.serve_load import LoadModel  # noqa: E402
from hetpart.serving import Server  # noqa: E402

LATENCY_MS = {"detector": {1: 1.93, 2: 2.72, 4: 4.24, 8: 7.23}, "resnet50": {1: 1.69, 2: 2.26, 4: 3.19, 8: 4.36}}


class Device:
    """The shared GPU (slices under one lock) and the CPU lane (one lock)."""

    def __init__(self, slice_s: float):
        self.slice_s, self.gpu, self.lane = slice_s, threading.Lock(), threading.Lock()

    def on_gpu(self, seconds: float) -> None:
        while seconds > 0:
            step = min(self.slice_s, seconds)
            with self.gpu:
                time.sleep(step)
            seconds -= step


class Stand:
    """One model's bucketed build: y = 3x - 1 row by row, costs as the module docstring says."""

    def __init__(self, name: str, device: Device, host_s: float, nms_s: float):
        self.name, self.device, self.host_s, self.max_batch = name, device, host_s, 8
        self.lane_s = {b: (nms_s * b + 3e-5 if name == "detector" else 0.0) for b in LATENCY_MS[name]}
        self.gpu_s = {b: max(0.0, ms / 1e3 - host_s - self.lane_s[b]) for b, ms in LATENCY_MS[name].items()}

    def run(self, feeds):
        rows = len(feeds["x"])
        bucket = next(b for b in sorted(self.gpu_s) if b >= rows)
        time.sleep(self.host_s)
        self.device.on_gpu(self.gpu_s[bucket])
        if self.lane_s[bucket]:
            with self.device.lane:
                time.sleep(self.lane_s[bucket])
        return {"y": 3 * feeds["x"] - 1}


def contenders(args, device: Device) -> list[serve.Contender]:
    def server(instances: int, hold: float | None, gate: int | None, sizes):
        def make():
            s = Server(max_delay=args.max_delay_ms / 1e3 if sizes != (1,) else 0.0, max_concurrent_batches=gate,
                       hold=hold, freeze_heap=False)
            for name in LATENCY_MS:
                s.add_model(name, Stand(name, device, args.host_ms / 1e3, args.nms_ms / 1e3), instances=instances,
                            batching=sizes)
            return s
        return make

    out = [serve.Contender("hetpart", server(2, None, None, (1, 2, 4, 8)))]
    out += [serve.Contender(f"hetpart-hold{h:g}", server(2, h / 1e3, None, (1, 2, 4, 8)), variant=True)
            for h in args.holds]
    out += [serve.Contender("hetpart-i1", server(1, None, None, (1, 2, 4, 8)), variant=True),
            serve.Contender("sequential", server(1, None, 1, (1,)))]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--holds", default="5,10", help="hold values (ms), each a variant hetpart-hold<ms>")
    p.add_argument("--host-ms", type=float, default=0.25)
    p.add_argument("--nms-ms", type=float, default=0.27, help="lane time per detector image (ms)")
    p.add_argument("--slice-ms", type=float, default=0.2)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--window-s", type=float, default=1.5)
    p.add_argument("--budget", type=float, default=300.0)
    p.add_argument("--contenders", default=None, help="comma-separated subset to run")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.holds = [float(h) for h in args.holds.split(",") if h]
    device = Device(args.slice_ms / 1e3)
    rng = np.random.default_rng(0)
    models = [LoadModel(n, [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(8)])
              for n in LATENCY_MS]
    chosen = contenders(args, device)
    if args.contenders:
        keep = set(args.contenders.split(","))
        chosen = [c for c in chosen if c.name in keep]
    options = serve.SweepOptions(window_s=args.window_s, probe=False)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    body = serve.run([serve.Scenario("detector+resnet50", models, chosen, args.slo_ms)], options, args.budget, log)
    print(f"model: host {args.host_ms} ms, lane {args.nms_ms} ms/image, GPU slices {args.slice_ms} ms")
    print(f"{'contender':<16} {'max rate/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'mean batch':>10}  curve (rate: p99, batch)")
    for r in body["results"]:
        curve = "; ".join(f"{c['rate_per_s']:.0f}: {c['p99_ms']:.1f}, {c.get('mean_batch_rows') or 0:.2f}"
                          for c in r["curve"])
        print(f"{r['contender']:<16} {r['max_rate_per_s']:10.1f} {r['p50_ms'] or 0:7.1f} {r['p99_ms'] or 0:7.1f} "
              f"{r['mean_batch_rows'] or 0:10.2f}  {curve}")
    if args.json:
        Path(args.json).write_text(json.dumps(body, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
