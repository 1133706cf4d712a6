"""hetpart's CPU softmax (and exp-based element-wise) kernels against ONNX Runtime's,
one node at a time.

Run by ``bench/cpu_softmax.py``.  For each case (an ONNX ``Softmax`` or
``LogSoftmax`` over the last axis of one input, or an element-wise op of
:data:`ELEMENTWISE`: ``Sigmoid``, ``SiLU`` = ``Mul(x, Sigmoid(x))``, ``Exp``, ...),
prints the median time of:

* hetpart's kernel: the one-node model imported by :func:`hetpart.load`, its fused
  module built by :func:`hetpart.kernels.build` for the host CPU (what a CPU
  partition runs), called through the VM on an input already in a TVM tensor;
* ONNX Runtime's CPU run of the same model (input from numpy, zero copy);

their ratio, and the largest difference between the two outputs.  With ``--model
zoo:NAME[:small]`` it times a whole zoo model instead: hetpart with every kernel on
the CPU (:func:`hetpart.backend.forced_plan`), ``Session.run``, against ONNX
Runtime's CPU ``run``.  Both run on the
same number of threads: hetpart's pool (``TVM_NUM_THREADS``, one per physical core
by default, :mod:`hetpart.cpu_cores`) and ORT's intra-op pool set to it.

The default cases are the shapes issue 18 names: BERT-base attention
``[1,12,128,128]``, a larger attention ``[1,16,512,512]``, and a vocabulary-wide
row softmax ``[128,30522]``; EfficientNet-B0's SiLU/Sigmoid shapes are
``--shapes 1x96x112x112,1x1280x7x7``.  Timings are wall-clock medians
(:func:`hetpart.bench.timing.time_calls`).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import helper

from .settle import settle
from .timing import Settings, time_calls

DEFAULT_SHAPES = ((1, 12, 128, 128), (1, 16, 512, 512), (128, 30522))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    from ..cpu_cores import pool_size

    threads = pool_size()
    if args.model:
        return whole_model(args.model, threads, settings)
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")] if args.shapes else DEFAULT_SHAPES
    print(f"CPU kernels, {threads} threads each (hetpart's pool; ORT intra-op set to it)")
    print(f"  {'op':<11}{'shape':<20}{'hetpart ms':>11}{'ORT ms':>10}{'ratio':>8}{'max |diff|':>12}")
    for op in args.ops.split(","):
        for shape in shapes:
            row = measure(op, shape, threads, settings)
            print(f"  {op:<11}{'x'.join(map(str, shape)):<20}{row['hetpart_s'] * 1e3:11.3f}{row['ort_s'] * 1e3:10.3f}"
                  f"{row['ratio']:8.2f}{row['max_abs_diff']:12.2e}")
    return 0


def measure(op: str, shape: tuple[int, ...], threads: int, settings: Settings) -> dict:
    """``{hetpart_s, ort_s, ratio, max_abs_diff}`` of a one-node ``op`` (:func:`op_model`) on ``shape``."""
    import tvm

    from .peers import ort_session

    model = op_model(op, shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 4
    run = kernel_runner(model)
    x_tvm = tvm.runtime.tensor(x)
    got = run(x_tvm).numpy()
    sess = ort_session(model, threads=threads)
    want = sess.run(None, {"x": x})[0]
    waits = [settle()]  # ORT's workers spin on after the reference run
    hetpart_s = time_calls(lambda: run(x_tvm), settings).median_s
    waits.append(settle())
    ort_s = time_calls(lambda: sess.run(None, {"x": x}), settings).median_s
    return {"hetpart_s": hetpart_s, "ort_s": ort_s, "ratio": hetpart_s / ort_s,
            "max_abs_diff": float(np.max(np.abs(got - want))), "settle_ms": [round(w.waited_s * 1e3, 1) for w in waits]}


def whole_model(spec: str, threads: int, settings: Settings) -> int:
    """Print hetpart all-CPU and ONNX Runtime CPU latency of zoo model ``spec``, their ratio
    and the largest output difference."""
    from .. import compile as hp_compile
    from .. import load, models
    from ..backend import forced_plan
    from ..runtime import Session
    from .peers import ort_session

    name, small, cfg = models.parse_zoo_spec(spec)
    model = models.build(name, small=small, **cfg)
    feeds = models.example_inputs(model, seed=0)
    graph = load(model)
    sess = ort_session(model, threads=threads)
    with Session(hp_compile(forced_plan(graph, "cpu"), graph, progress=False)) as session:
        got = session.run(feeds)
        want = dict(zip([o.name for o in model.graph.output], sess.run(None, feeds)))
        diff = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
        waits = [settle()]  # ORT's workers spin on after the reference run
        hetpart_s = time_calls(lambda: session.run(feeds), settings).median_s
    waits.append(settle())
    ort_s = time_calls(lambda: sess.run(None, feeds), settings).median_s
    print(f"{spec} all-CPU, {threads} threads each (hetpart's pool; ORT intra-op set to it)")
    print(f"  hetpart {hetpart_s * 1e3:9.3f} ms   ORT {ort_s * 1e3:9.3f} ms   ratio {hetpart_s / ort_s:5.2f}   "
          f"max |diff| {diff:.2e}")
    print(f"  each side timed once the other's threads were quiet (hetpart.bench.settle): waited "
          f"{waits[0].waited_s * 1e3:.0f} ms, {waits[1].waited_s * 1e3:.0f} ms")
    return 0


def softmax_model(op: str, shape: tuple[int, ...], axis: int = -1) -> onnx.ModelProto:
    """One ``op`` node (``Softmax`` or ``LogSoftmax``, opset 13) over ``axis`` of ``x``."""
    node = helper.make_node(op, ["x"], ["y"], axis=axis)
    graph = helper.make_graph([node], op.lower(), [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


ELEMENTWISE = ("Sigmoid", "SiLU", "Exp", "Tanh", "Elu", "Selu", "Softplus")
"""Element-wise ops :func:`op_model` builds (``SiLU`` as ``Mul(x, Sigmoid(x))``)."""


def op_model(op: str, shape: tuple[int, ...]) -> onnx.ModelProto:
    """A one-``op`` model of ``x`` (float32, ``shape``) to ``y``: a softmax over the
    last axis (:func:`softmax_model`) or an element-wise op of :data:`ELEMENTWISE`."""
    if op in ("Softmax", "LogSoftmax"):
        return softmax_model(op, shape)
    if op not in ELEMENTWISE:
        raise ValueError(f"unknown op {op!r}: use Softmax, LogSoftmax or one of {', '.join(ELEMENTWISE)}")
    nodes = ([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])] if op == "SiLU"
             else [helper.make_node(op, ["x"], ["y"])])
    graph = helper.make_graph(nodes, op.lower(), [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def kernel_runner(model: onnx.ModelProto):
    """``run(x: tvm Tensor) -> tvm Tensor``: ``model``'s fused module built for the host
    CPU by hetpart's one per-target build, called through the VM."""
    import tvm
    from tvm import relax

    from .. import kernels, load
    from ..targets import cpu_tvm_target

    graph = load(model)
    vm = relax.VirtualMachine(kernels.build(graph.module, cpu_tvm_target()), tvm.cpu())
    main = vm["main"]
    return lambda x: main(x)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="Softmax,LogSoftmax", help="comma-separated: Softmax, LogSoftmax, " + ", ".join(ELEMENTWISE))
    p.add_argument("--shapes", default="", help="e.g. 1x12x128x128,128x30522 (default: issue 18's three)")
    p.add_argument("--model", default="", help="a zoo spec (zoo:bert:small): time the whole model all-CPU instead")
    p.add_argument("--quick", action="store_true", help="few repeats (not a publishable number)")
    return p


if __name__ == "__main__":
    sys.exit(main())
