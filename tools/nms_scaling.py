"""NonMaxSuppression per batch and thread count, ONNX Runtime beside, and its profiled price.

Issues 18/20 (branch nms-batch, bench/results/nms-batch-2core.md).  For each batch of
``--batches``: the zoo detector's own boxes and scores (ONNX Runtime's run of the detector
on a real payload stacked to the batch) fed to the detector's NMS node alone
(:func:`hetpart.bench.cpu_nms._nms_model`, the same kernel signature as in the detector):

* ``real``: hetpart's kernel on those inputs, on a leased thread whose TVM pool has T
  threads, for each T of ``--threads`` (wall clock, median of ``time_evaluator`` repeats);
* ``maker`` / ``random``: the same kernel on the cost model's inputs
  (:mod:`hetpart.costmodel.data_inputs`: what ``partition profile`` now times) and on the
  uniform random floats every kernel got before;
* ``ort``: ONNX Runtime's NonMaxSuppression alone on the same inputs, T intra-op threads;
* ``alt``: with ``--alt-mcpu CPU``, hetpart's kernel built for that ``-mcpu`` (no extra
  ``mattr``) on the real inputs, per T: whether this CPU's own code generation (AVX-512
  masks, 16 lanes) is what makes the kernel slow or fast per core;
* ``price``: with ``--price``, the CostModel's price of the kernel from a fresh CPU profile of
  the NMS graph (the profiler end to end, TVM's default pool) and from each ``--profile``
  file (the shipped h200.json: predicted unless it holds the kernel); with ``--patched OUT``
  also a copy of the first ``--profile`` file that holds each batch's kernel at the fresh
  profile's price (timing adjusted to that file's empty call and launch), to plan with:
  ``partition zoo:detector:batch=8 --profile OUT`` shows the plan at the measured price.

    PYTHONPATH=. python3 tools/nms_scaling.py --batches 1,8 --threads 1,2 --json /tmp/nms.json
    PYTHONPATH=. python3 tools/nms_scaling.py --threads 1,2,4,8,16 --price \\
        --profile hetpart/costmodel/recorded/h200.json          # the GPU machine (step 130)

``--set module.NAME=value`` (repeatable) builds hetpart's kernel with those switches set
(:mod:`hetpart.bench.switches`), e.g. ``--set hetpart.importer.non_max_suppression.SELECT_CANDIDATES=1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _detections(batch: int):
    from hetpart import models
    from hetpart.bench.peers import ort_session

    model = models.build("detector", batch=batch)
    row = models.example_inputs(models.build("detector", batch=1), seed=100)
    feeds = {n: np.concatenate([a] * batch) for n, a in row.items()}
    sess = ort_session(model)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    return outs["boxes"], outs["scores"]


def main(argv=None) -> int:
    import tvm

    import hetpart
    from hetpart import models
    from hetpart.bench.cpu_nms import _nms_model
    from hetpart.bench.peers import ort_session
    from hetpart.costmodel import CostModel, Profile, kernel_bench, profile
    from hetpart.costmodel.kernel_bench import MeasureSettings
    from hetpart.runtime.threads import call_leased
    from hetpart.targets import cpu_tvm_target

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--price", action="store_true", help="also profile the NMS graph and price it")
    p.add_argument("--profile", action="append", default=[], help="a profile file to price the kernel from")
    p.add_argument("--alt-mcpu", default=None, help="also time the kernel built for this -mcpu (e.g. haswell)")
    p.add_argument("--patched", default=None, help="write the first --profile with the measured NMS records here")
    p.add_argument("--budget", type=float, default=1e9, help="seconds; later batches are skipped past it")
    p.add_argument("--json", default=None)
    p.add_argument("--set", action="append", default=[], help="module.NAME=value switches for hetpart's build")
    args = p.parse_args(argv)
    from hetpart.bench.switches import apply_switches, parse_switches

    apply_switches(parse_switches(args.set))
    cfg = models.registry.entry("detector").full
    settings = MeasureSettings(repeat=7, min_repeat_ms=20)
    threads = [int(t) for t in args.threads.split(",")]
    t0, out = time.perf_counter(), []
    print(f"target {cpu_tvm_target()}" + (f"; switches {args.set}" if args.set else ""))
    for b in (int(x) for x in args.batches.split(",")):
        if time.perf_counter() - t0 > args.budget:
            print(f"b{b}: skipped (budget)")
            continue
        boxes, scores = _detections(b)
        nms = _nms_model(boxes.shape, scores.shape, cfg.max_detections, cfg.iou_threshold, cfg.score_threshold)
        graph = hetpart.load(nms)
        kernel = next(k for k in graph.nodes if k.func == "all_class_non_max_suppression")
        kmod = kernel_bench.single_kernel_module(graph, kernel)
        exe = kernel_bench.build_module(kmod.mod, cpu_tvm_target())
        alt = None
        if args.alt_mcpu:
            spec = json.loads(str(cpu_tvm_target()))
            spec.update(mcpu=args.alt_mcpu, mattr=[])
            alt = kernel_bench.build_module(kmod.mod, tvm.target.Target(spec))
        real_in = [tvm.runtime.tensor(boxes), tvm.runtime.tensor(scores)]
        rnd_in = [tvm.runtime.tensor(kernel_bench.random_array(s, np.random.default_rng(0))) for s in kmod.args]
        rec = {"batch": b, "signature": kernel.signature, "real_ms": {}, "maker_ms": {}, "random_ms": {}, "ort_ms": {}}
        for t in threads:
            def timed(inputs):
                return kernel_bench.time_executable(exe, inputs, tvm.cpu(), settings).median_s * 1e3

            rec["real_ms"][t] = call_leased("nms real", lambda: timed(real_in), pool=t, role="cpu")
            rec["maker_ms"][t] = call_leased("nms maker", lambda: timed(kernel_bench.random_inputs(kmod, tvm.cpu())),
                                             pool=t, role="cpu")
            rec["random_ms"][t] = call_leased("nms random", lambda: timed(rnd_in), pool=t, role="cpu")
            if alt is not None:
                rec.setdefault("alt_ms", {})[t] = call_leased(
                    "nms alt", lambda: kernel_bench.time_executable(alt, real_in, tvm.cpu(), settings).median_s * 1e3,
                    pool=t, role="cpu")
            ort = ort_session(nms, threads=t)
            feeds = {"boxes": boxes, "scores": scores}
            ort.run(None, feeds)
            walls = []
            for _ in range(max(5, int(0.3 / max(rec["real_ms"][t] * 1e-3, 1e-4)))):
                s = time.perf_counter()
                ort.run(None, feeds)
                walls.append(time.perf_counter() - s)
            rec["ort_ms"][t] = float(np.median(walls)) * 1e3
            print(f"b{b} {t:>2} threads: hetpart real {rec['real_ms'][t]:8.3f} ms  maker {rec['maker_ms'][t]:8.3f}  "
                  f"random {rec['random_ms'][t]:8.3f}  ORT {rec['ort_ms'][t]:8.3f}  "
                  f"hetpart/ORT {rec['real_ms'][t] / rec['ort_ms'][t]:.2f}"
                  + (f"  {args.alt_mcpu} build {rec['alt_ms'][t]:8.3f}" if alt is not None else ""), flush=True)
        base = rec["real_ms"][threads[0]]
        print(f"b{b}: speedup over {threads[0]} thread(s): "
              + ", ".join(f"{t}: {base / rec['real_ms'][t]:.2f}x" for t in threads[1:]), flush=True)
        if args.price:
            rec["price_ms"] = {}
            with tempfile.TemporaryDirectory() as d:
                prof = profile(graph, ("cpu",), Path(d) / "cpu.json", progress=False)
                rec["price_ms"]["fresh profile"] = CostModel(prof).kernel_cost(kernel, "cpu") * 1e3
                fresh = prof.record("cpu", kernel.signature)
                rec["fresh_inputs"] = fresh.inputs
                rec["fresh_record"] = fresh.to_json()
            for path in args.profile:
                cm = CostModel(Profile.load(path))
                rec["price_ms"][path] = cm.kernel_cost(kernel, "cpu") * 1e3
                rec.setdefault("predicted", {})[path] = cm.is_predicted(kernel, "cpu")
            print(f"b{b}: price " + ", ".join(f"{k} {v:.3f} ms" + (" (predicted)" if rec.get("predicted", {}).get(k)
                                                                   else "") for k, v in rec["price_ms"].items())
                  + f"; fresh profile timed on {rec['fresh_inputs']!r} inputs", flush=True)
        out.append(rec)
        # after every batch: a step's timeout then loses only the batch it cut
        if args.patched and args.profile:
            _patch(args.profile[0], args.patched, out)
        if args.json:
            Path(args.json).write_text(json.dumps({"target": str(cpu_tvm_target()), "results": out}, indent=1))
    return 0


def _patch(src: str, dst: str, results: list) -> None:
    """``src`` with each result's NMS record (fresh profile) on "cpu", its timing shifted so
    ``src``'s CostModel charges the fresh price (``src``'s empty call and launch, not the fresh ones)."""
    data = json.loads(Path(src).read_text())
    oh = data["overheads"]["cpu"]
    for r in results:
        if "fresh_record" not in r:
            continue
        rec = dict(r["fresh_record"])
        t = max(r["price_ms"]["fresh profile"] * 1e-3 - oh["launch_s"], 0.0) + oh["empty_s"]
        rec["timing"] = {**rec["timing"], "median_s": t, "min_s": min(t, rec["timing"]["min_s"]),
                         "max_s": max(t, rec["timing"]["max_s"])}
        data["kernels"]["cpu"][r["signature"]] = rec
    Path(dst).write_text(json.dumps(data, indent=1))
    print(f"wrote {dst}: {src} with the measured NMS records")


if __name__ == "__main__":
    sys.exit(main())
