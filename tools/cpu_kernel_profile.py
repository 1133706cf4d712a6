"""Per-kernel CPU time of a zoo model: hetpart's kernels against ONNX Runtime's nodes.

    PYTHONPATH=. python tools/cpu_kernel_profile.py zoo:efficientnet [--top 15] [--quick]
    PYTHONPATH=. python tools/cpu_kernel_profile.py /tmp/mobilenet_v2.onnx   # an ONNX file

hetpart side: every distinct kernel of the model's all-CPU build, timed alone by the
cost model's microbenchmark (:mod:`hetpart.costmodel.kernel_bench`: the kernel's
PrimFunc built by :func:`hetpart.kernels.build`, weights prepacked, random inputs,
the least time of the VM call -- so each time holds one VM call's fixed cost, a few us),
times how often it occurs.  ORT side: the same model with
``SessionOptions.enable_profiling`` on the same number of threads, the least time of
each node over the runs.  Minima on both sides: on a shared machine they are what
other jobs cannot raise; sums of minima under-state a run a little.

Each side's time is put in a category (depthwise conv, pointwise conv, SE FCs, SE
gating, pooling, stem/other conv, element-wise), read from the convolutions' weight
shapes (hetpart) and the ONNX node names and op types (ORT; ORT fuses and renames
nodes, so its categories are by the node whose name the fused node keeps).  Prints
the per-category table with the ratio, then hetpart's top kernels, each with the ORT
time of the ONNX Conv at the same position among the model's convolutions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402


def conv_category(weight_shape, in_shape) -> str:
    """``depthwise``, ``se_fc`` (a 1x1 conv of a 1x1 image), ``pointwise`` or ``conv``."""
    oc, icg, kh, kw = weight_shape
    if icg == 1 and kh * kw > 1:
        return "depthwise"
    if kh == kw == 1:
        return "se_fc" if tuple(in_shape[2:]) == (1, 1) else "pointwise"
    return "conv"


def kernels_timed_once(graph, time_kernel):
    """Inputs: an imported ``graph`` and ``time_kernel(kmod) -> seconds`` (``kmod`` a kernel
    alone, ``kernel_bench.single_kernel_module``).  Yields ``(kernel, kmod, seconds)`` per kernel
    in index order; invariant: each distinct signature is timed once, the later kernels of that
    signature share its seconds."""
    from hetpart.costmodel import kernel_bench

    timed: dict[str, float] = {}
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        kmod = kernel_bench.single_kernel_module(graph, k)
        if k.signature not in timed:
            timed[k.signature] = time_kernel(kmod)
        yield k, kmod, timed[k.signature]


def hetpart_kernels(model, quick: bool) -> list[dict]:
    """One row per kernel of ``model``'s all-CPU graph: id, func, category, seconds
    (the distinct kernels timed once, then shared by equal signatures)."""
    import tvm

    from hetpart import load
    from hetpart.costmodel import kernel_bench
    from hetpart.targets import cpu_tvm_target

    graph = load(model)
    settings = kernel_bench.MeasureSettings.quick() if quick else kernel_bench.MeasureSettings()
    target, dev = cpu_tvm_target(), tvm.cpu()
    rows = []
    for k, kmod, seconds in kernels_timed_once(graph, lambda kmod: kernel_bench.measure(
            kmod, kernel_bench.build_module(kmod.mod, target), dev, settings).min_s):
        shapes = [graph.tensors[t].shape for t in k.inputs]
        weights = [a.shape for a in kmod.args if a.weight and len(a.shape) == 4]
        if "conv2d" in k.ops and weights:
            cat = conv_category(weights[0], shapes[0])
            if cat == "se_fc" and "multiply" in k.ops and any(len(s) == 4 and s[2] > 1 for s in shapes):
                cat = "se_fc+gate"  # fc2 + sigmoid + the multiply of the block (fused)
        elif k.op_class == "reduce" or "mean" in k.ops:
            cat = "pool"
        else:
            cat = "elementwise/other"
        rows.append({"id": k.id, "func": k.func, "cat": cat, "s": seconds, "shape": shapes[0]})
    return rows


def ort_nodes(model, threads: int, runs: int, warm: int = 5) -> tuple[list[dict], float]:
    """Least seconds per ORT node over ``runs`` profiled runs after ``warm`` ones, and the
    least run (minima: the dev box is shared, and a minimum is what noise cannot raise)."""
    import onnxruntime as ort

    from hetpart import models
    from hetpart.bench.peers import ort_ir_version

    feeds = models.example_inputs(model, seed=0)
    m = type(model)()
    m.CopyFrom(model)
    m.ir_version = min(m.ir_version, ort_ir_version(m))
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for _ in range(warm + runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list] = defaultdict(list)
    op_of: dict[str, str] = {}
    run_times = []
    for ev in events:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            name = ev["name"][: -len("_kernel_time")]
            per_node[name].append(ev["dur"])
            op_of[name] = ev["args"].get("op_name", "")
        elif ev.get("cat") == "Session" and ev["name"] == "model_run":
            run_times.append(ev["dur"])
    nodes = [{"name": n, "op": op_of[n], "s": float(np.min(d[warm:] or d)) * 1e-6} for n, d in per_node.items()]
    return nodes, float(np.min(run_times[warm:] or run_times)) * 1e-6


def ort_category(node: dict, conv_cats: dict[str, str], conv_of: dict[str, str] | None = None) -> str:
    """The category of an ORT node (its name is the ONNX node's, with ORT's suffixes;
    a Conv fused with the SE gate's Sigmoid takes the Sigmoid's name; one fused with
    the BN / ReLU / Clip after it, that node's name: ``conv_of`` leads back to the Conv)."""
    name, op = node["name"], node["op"]
    base = name.split("/")[0].removesuffix("_nchwc")
    if "Conv" in op and conv_of and base not in conv_cats and conv_of.get(base) in conv_cats:
        base = conv_of[base]
    if "Conv" in op and base in conv_cats:
        return conv_cats[base]
    if ("Conv" in op and base.endswith(".sigmoid")) or (op == "Mul" and base.endswith(".block.2")):
        return "se_fc+gate"  # fc2 + sigmoid, and the gating Mul: one kernel in hetpart
    if "Pool" in op:
        return "pool"
    if op in ("ReorderInput", "ReorderOutput"):
        return "layout (ORT NCHWc reorders)"
    if op == "QuickGelu" or (op in ("Sigmoid", "Mul", "HardSwish", "HardSigmoid", "Relu") and ".act" in base):
        return "activation (in hetpart's convs)"
    return "elementwise/other"


def conv_producers(model, hops: int = 3) -> dict[str, str]:
    """ONNX node name -> the name of the Conv it follows through up to ``hops`` nodes of
    first inputs (the BN / activation / residual Add ORT fuses into the Conv and names
    the fused node after)."""
    by_output = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        cur = n
        for _ in range(hops):
            src = by_output.get(cur.input[0]) if cur.input else None
            if src is None:
                break
            if src.op_type == "Conv":
                out[n.name] = src.name
                break
            cur = src
    return out


def onnx_conv_categories(model) -> dict[str, str]:
    """ONNX Conv node name -> category, in graph order."""
    import onnx

    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    shapes = {}
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        shapes[vi.name] = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
    out = {}
    for n in model.graph.node:
        if n.op_type == "Conv":
            out[n.name] = conv_category(inits[n.input[1]], shapes.get(n.input[0], (0, 0, 0, 0)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a zoo spec, e.g. zoo:efficientnet, or an .onnx file")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    from hetpart.cpu_cores import pool_size
    from hetpart.importer.onnx_source import read_source

    model = read_source(args.model).model
    threads = pool_size()
    conv_cats = onnx_conv_categories(model)
    conv_of = conv_producers(model)
    ort_rows, ort_run = ort_nodes(model, threads, args.runs)
    het = hetpart_kernels(model, args.quick)
    h_cat, o_cat = defaultdict(float), defaultdict(float)
    for r in het:
        h_cat[r["cat"]] += r["s"]
    for r in ort_rows:
        o_cat[ort_category(r, conv_cats, conv_of)] += r["s"]
    # SE: hetpart fuses fc2 + sigmoid + the gate's multiply; ORT runs fc2 and a Mul.
    print(f"{args.model} all-CPU, {threads} threads; hetpart kernels timed alone, ORT nodes profiled in a run")
    print(f"  sum of hetpart kernels {sum(h_cat.values()) * 1e3:.3f} ms; ORT nodes {sum(o_cat.values()) * 1e3:.3f} ms"
          f" (ORT run {ort_run * 1e3:.3f} ms)")
    print(f"  {'category':<30}{'hetpart ms':>11}{'ORT ms':>9}{'ratio':>7}")
    for cat in sorted(set(h_cat) | set(o_cat), key=lambda c: -h_cat.get(c, 0)):
        h, o = h_cat.get(cat, 0.0), o_cat.get(cat, 0.0)
        print(f"  {cat:<30}{h * 1e3:11.3f}{o * 1e3:9.3f}{(h / o if o else float('nan')):7.2f}")
    conv_names = list(conv_cats)
    ort_by_name = {}
    for r in ort_rows:  # keyed by the ONNX Conv a fused node stands for
        n = r["name"].split("_token")[0].removesuffix("_nchwc")
        n = n if n in conv_cats or "Conv" not in r["op"] else conv_of.get(n, n)
        ort_by_name[n] = ort_by_name.get(n, 0.0) + r["s"]
    conv_rows = [r for r in het if r["cat"] in ("depthwise", "pointwise", "conv", "se_fc", "se_fc+gate")]
    for i, r in enumerate(conv_rows):
        r["onnx"] = conv_names[i] if i < len(conv_names) else ""
    print(f"\n  top {args.top} hetpart kernels (ORT: the Conv node at the same position)")
    print(f"  {'kernel':<44}{'cat':<12}{'input':<18}{'ms':>8}{'ORT ms':>8}{'ratio':>7}")
    for r in sorted(het, key=lambda r: -r["s"])[: args.top]:
        o = ort_by_name.get(r.get("onnx"), 0.0)
        print(f"  {r['func'][:43]:<44}{r['cat']:<12}{'x'.join(map(str, r['shape'])):<18}{r['s'] * 1e3:8.3f}"
              f"{o * 1e3:8.3f}{(r['s'] / o if o else float('nan')):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
