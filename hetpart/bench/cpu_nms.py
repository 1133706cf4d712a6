"""The zoo detector on the CPU against ONNX Runtime, and its NonMaxSuppression alone.

Run by ``bench/cpu_nms.py``; prints, in one run:

* hetpart with every kernel on the CPU (pinned as :mod:`hetpart.backend` does) and
  ONNX Runtime's CPU run of the same ONNX model: median ``Session.run`` /
  ``InferenceSession.run`` latency and their ratio, and whether hetpart's selected rows
  are ONNX Runtime's NonMaxSuppression of hetpart's own boxes and scores;
* the NonMaxSuppression node alone, fed the detector's own boxes and scores: TVM's
  TOPI lowering (what hetpart used before :mod:`hetpart.importer.non_max_suppression`),
  hetpart's lowering, and ONNX Runtime; each lowering's selected rows are checked
  against ONNX Runtime's;
* with ``--kernels``, the detector's per-kernel table (:mod:`hetpart.bench.kernel_table`:
  hetpart's kernels against ONNX Runtime's profiler);
* with ``--dispatch``, what one more kernel costs the CPU runtime
  (:mod:`hetpart.bench.dispatch`).

Timings are wall-clock medians (:func:`hetpart.bench.timing.time_calls`).  Both sides
run on ``--threads`` threads (default: hetpart's pool, one per physical core): hetpart's
session through ``Session(cpu_threads=)``, ONNX Runtime through ``intra_op_num_threads``;
the header says what each got; the NMS-alone lines too (hetpart's lowerings on a
leased thread whose pool has that size).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .settle import settle
from .timing import Settings, time_calls


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    from .. import models
    from ..cpu_cores import pool_size

    threads = args.threads or pool_size()
    model = models.build("detector", small=args.small, batch=args.batch)
    entry = models.registry.entry("detector")
    cfg = entry.small if args.small else entry.full
    feeds = models.example_inputs(model, seed=0)
    ort_run = _ort_runner(model, threads)
    outputs = dict(zip([o.name for o in model.graph.output], ort_run(feeds)))
    boxes, scores = outputs["boxes"], outputs["scores"]
    nms = _nms_model(boxes.shape, scores.shape, cfg.max_detections, cfg.iou_threshold, cfg.score_threshold)
    print(f"zoo:detector{':small' if args.small else ''} batch {args.batch}; {threads} thread(s) asked of "
          f"hetpart's CPU pool and ONNX Runtime's intra-op pool")
    _whole_model(model, feeds, ort_run, _ort_runner(nms), settings, threads)
    _nms_alone(nms, boxes, scores, settings, threads)
    if args.kernels:
        from . import kernel_table

        print(kernel_table.measure(model, feeds, threads).render())
    if args.dispatch:
        from . import dispatch

        print("CPU runtime dispatch cost")
        for rows in (1, 256):
            print(dispatch.measure(threads, rows, settings).render())
    return 0


def _whole_model(model, feeds, ort_run, ort_nms, settings: Settings, threads: int) -> None:
    """hetpart all-CPU and ONNX Runtime latency, their ratio, and hetpart's rows checked."""
    hetpart_run, pool = _hetpart_runner(model, feeds, threads)
    got = hetpart_run()
    # The two models' scores differ in the last bits (their convolutions), which can swap
    # near-tied boxes; so hetpart's rows are checked against ONNX Runtime's NMS of
    # hetpart's own boxes and scores.
    want = ort_nms({"boxes": got["boxes"], "scores": got["scores"]})[0]
    same = "yes" if np.array_equal(got["selected_indices"], want) else "NO"
    waits = [settle()]  # ORT's workers spin on after the check's run
    hetpart_s = time_calls(hetpart_run, settings).median_s
    waits.append(settle())
    ort_s = time_calls(lambda: ort_run(feeds), settings).median_s
    print(f"  hetpart all-CPU     {hetpart_s * 1e3:9.3f} ms   pool {pool}; "
          f"its rows = ONNX Runtime's NMS of its boxes: {same}")
    print(f"  ONNX Runtime CPU    {ort_s * 1e3:9.3f} ms")
    print(f"  ratio hetpart/ORT   {hetpart_s / ort_s:9.2f}x   (each side timed once the other's threads were "
          f"quiet, hetpart.bench.settle: waited {waits[0].waited_s * 1e3:.0f} ms, {waits[1].waited_s * 1e3:.0f} ms)")


def _nms_alone(nms: onnx.ModelProto, boxes, scores, settings: Settings, threads: int) -> None:
    """The NMS node alone: TVM's lowering, hetpart's (timed on a thread whose TVM pool has
    ``threads`` threads), ONNX Runtime (on ``threads``); rows checked against ORT's."""
    from ..runtime.threads import lease

    ort_nms = _ort_runner(nms, threads)
    feeds = {"boxes": boxes, "scores": scores}
    want = ort_nms(feeds)[0]
    print(f"NonMaxSuppression alone ({scores.shape[1]} classes x {scores.shape[2]} boxes, "
          f"{len(want)} selected by ONNX Runtime)")
    lines: list[str] = []

    def lowerings():
        try:
            for label, hetpart_lowering in (("TVM TOPI lowering", False), ("hetpart lowering", True)):
                run = _nms_runner(nms, hetpart_lowering)
                got = run(boxes, scores)
                settle()
                t = time_calls(lambda: run(boxes, scores), settings).median_s
                same = "yes" if np.array_equal(got, want) else f"NO ({len(got)} rows)"
                lines.append(f"  {label:<20}{t * 1e3:9.3f} ms   same rows as ONNX Runtime: {same}")
        except BaseException as exc:  # noqa: BLE001 - reported on the caller's thread
            lines.append(f"  failed: {type(exc).__name__}: {exc}")

    lease("nms alone", lowerings, pool=threads, role="cpu").join()
    print("\n".join(lines))
    settle()
    print(f"  {'ONNX Runtime':<20}{time_calls(lambda: ort_nms(feeds), settings).median_s * 1e3:9.3f} ms")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="the small detector (fast smoke run)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="few repeats (not a publishable number)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both sides (default: hetpart's pool, one per physical core)")
    p.add_argument("--kernels", action="store_true", help="also the per-kernel table against ORT's profiler")
    p.add_argument("--dispatch", action="store_true", help="also the CPU runtime's cost per added kernel")
    return p


def _hetpart_runner(model: onnx.ModelProto, feeds: dict, threads: int):
    """``(run(), pool)``: ``run()`` of a Session with every kernel of ``model`` on the CPU
    and a pool of ``threads``; ``pool`` says what the run got (TVM's default or its size)."""
    from .. import compile as hp_compile
    from .. import load
    from ..backend import forced_plan
    from ..cpu_cores import pool_size
    from ..runtime import Session

    graph = load(model)
    session = Session(hp_compile(forced_plan(graph, "cpu"), graph, progress=False), cpu_threads=threads)
    session.run(feeds)  # the worker sizes its pool before its first run
    used = next(iter(session.pool_threads_used.values()), None)
    pool = f"{used} threads (cpu_threads)" if used else f"TVM's default, {pool_size()} threads"
    return (lambda: session.run(feeds)), pool


def _ort_runner(model: onnx.ModelProto, threads: int | None = None):
    from .peers import ort_session

    session = ort_session(model, threads=threads)  # at an IR version this ORT reads (make_model stamps the newest)
    return lambda feeds: session.run(None, feeds)


def _nms_model(boxes_shape, scores_shape, max_boxes: int, iou: float, score: float) -> onnx.ModelProto:
    """One NonMaxSuppression node with constant limits, as the detector has it."""
    limits = [numpy_helper.from_array(np.array([max_boxes], np.int64), "max_boxes"),
              numpy_helper.from_array(np.array([iou], np.float32), "iou"),
              numpy_helper.from_array(np.array([score], np.float32), "score")]
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_boxes", "iou", "score"], ["selected"])
    graph = helper.make_graph([node], "nms", [
        helper.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, list(boxes_shape)),
        helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, list(scores_shape))],
        [helper.make_tensor_value_info("selected", onnx.TensorProto.INT64, ["selected", 3])], initializer=limits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _nms_runner(model: onnx.ModelProto, hetpart_lowering: bool):
    """``run(boxes, scores) -> selected`` of ``model`` lowered by hetpart's NMS kernel or by
    TVM's TOPI one, otherwise through hetpart's own passes and CPU build."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from .. import kernels
    from ..importer.fusion import AFTER_FUSION, BEFORE_FUSION
    from ..importer.non_max_suppression import LEGALIZE
    from ..targets import cpu_tvm_target

    legalize = relax.transform.LegalizeOps(LEGALIZE if hetpart_lowering else None)
    passes = [legalize if n == "LegalizeOps" else getattr(relax.transform, n)()
              for n in (*BEFORE_FUSION, *AFTER_FUSION)]
    with tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(passes)(from_onnx(model))
    vm = relax.VirtualMachine(kernels.build(mod, cpu_tvm_target()), tvm.cpu())
    return lambda boxes, scores: vm["main"](tvm.runtime.tensor(boxes), tvm.runtime.tensor(scores)).numpy()


if __name__ == "__main__":
    sys.exit(main())
