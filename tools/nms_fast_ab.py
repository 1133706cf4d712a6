"""NonMaxSuppression A/B of a module switch on the zoo detector's own inputs, 1 thread, CPU time.

Issues 18/20 (branch nms-fast, bench/results/nms-fast-2core.md).  For each batch of
``--batches``: the detector's boxes and scores (:func:`nms_scaling._detections`: ONNX
Runtime's run of the detector on a real payload, stacked to the batch) fed to the NMS node
alone; hetpart's kernel built with ``--before`` switches set and as the checkout has them
(or with ``--after``), ONNX Runtime's NMS beside (1 intra-op thread: it runs on the calling
thread).  The three run in turns of ``--calls`` calls for ``--rounds`` rounds on a leased
thread with a TVM pool of one, each call timed by the thread's CPU time; reported per side:
the least call and the range of the rounds' least calls (ms).  The selected rows of before,
after and ORT must be equal (else it exits 1).

    PYTHONPATH=. python tools/nms_fast_ab.py --batches 1,8 \\
        --before hetpart.importer.non_max_suppression.SELECT_CANDIDATES=0 \\
        --after hetpart.importer.non_max_suppression.SELECT_CANDIDATES=1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    import tvm

    import hetpart
    from hetpart import models
    from hetpart.bench.cpu_nms import _nms_model
    from hetpart.bench.peers import ort_session
    from hetpart.bench.switches import switched
    from hetpart.costmodel import kernel_bench
    from hetpart.runtime.threads import call_leased
    from hetpart.targets import cpu_tvm_target
    from nms_scaling import _detections

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--before", action="append", default=[])
    p.add_argument("--after", action="append", default=[])
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    cfg = models.registry.entry("detector").full
    print(f"{'batch':>5}{'before ms':>24}{'after ms':>24}{'ORT ms':>24}{'a/b':>7}{'b/ORT':>7}{'a/ORT':>7}"
          f"   (1 thread, CPU time, {a.calls} calls x {a.rounds} rounds; before {a.before}, after {a.after})")
    ok = True
    for b in (int(x) for x in a.batches.split(",")):
        boxes, scores = _detections(b)
        nms = _nms_model(boxes.shape, scores.shape, cfg.max_detections, cfg.iou_threshold, cfg.score_threshold)
        exes = []
        for sw in (a.before, a.after):
            with switched(sw):
                graph = hetpart.load(nms)
                kernel = next(k for k in graph.nodes if k.func == "all_class_non_max_suppression")
                exes.append(kernel_bench.build_module(kernel_bench.single_kernel_module(graph, kernel).mod,
                                                      cpu_tvm_target()))
        ort = ort_session(nms, threads=1)
        feeds = {"boxes": boxes, "scores": scores}
        calls = max(3, a.calls // b)
        res: dict = {}

        def body():
            from tvm import relax

            args = [tvm.runtime.tensor(boxes), tvm.runtime.tensor(scores)]
            vms = [relax.VirtualMachine(e, tvm.cpu()) for e in exes]
            outs = [vm["main"](*args) for vm in vms]
            rows = [_rows(o) for o in outs] + [ort.run(None, feeds)[0]]
            res["equal"] = all(r.shape == rows[2].shape and (r == rows[2]).all() for r in rows[:2])
            sides = [lambda vm=vm: vm["main"](*args) for vm in vms] + [lambda: ort.run(None, feeds)]
            best = [[], [], []]
            for _ in range(a.rounds):
                for i, side in enumerate(sides):
                    ts = []
                    for _ in range(calls):
                        t = time.thread_time()
                        side()
                        ts.append(time.thread_time() - t)
                    best[i].append(min(ts) * 1e3)
            res["best"] = best

        call_leased("nms fast ab", body, pool=1, role="cpu")
        bb, af, o = (min(x) for x in res["best"])
        ok &= res["equal"]
        print(f"{b:>5}" + "".join(f"{_fmt(x):>24}" for x in res["best"])
              + f"{af / bb:7.2f}{bb / o:7.2f}{af / o:7.2f}   rows equal: {res['equal']}", flush=True)
    return 0 if ok else 1


def _rows(out) -> np.ndarray:
    """The selected rows from the NMS graph's output (the trimmed ``[n, 3]`` tensor)."""
    item = out
    while not hasattr(item, "numpy"):
        item = item[0]
    return item.numpy()


def _fmt(b: list[float]) -> str:
    return f"{min(b):.3f} [{min(b):.3f}-{max(b):.3f}]"


if __name__ == "__main__":
    sys.exit(main())
