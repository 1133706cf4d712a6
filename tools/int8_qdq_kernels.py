"""Per-kernel CPU time of a QDQ-quantised model, by category: hetpart before/after a switch,
its float model, and ONNX Runtime's int8 and float nodes, on 1 thread by CPU time.

    PYTHONPATH=. python tools/int8_qdq_kernels.py /tmp/ciq/zoo_mobilenet.onnx \\
        --before hetpart.importer.qdq.FLOAT_FAKE_QUANT=0 --rounds 5

In: a float ONNX model (its QDQ file, ``<stem>.qdq.onnx``, made beside it as
:mod:`hetpart.bench.int8` makes it).  hetpart's sides are the quantised file built with
``--before``'s switches (``module.ATTR=value``, as ``tools/cpu_rule_ab.py``) and as checked
out, and the float file; each is a Relax VM on a leased thread with a TVM pool of one
whose instrument times every kernel call by the thread's CPU time (another job's time
slices on the core not counted; the instrument's own cost, ~1 us a call, is).  ORT's
sides are its profiler's node times (wall time, 1 intra-op thread) on the quantised and
float files.  Rounds take turns; per round each side runs ``--runs`` times and keeps
each kernel's median; the table gives per category the least round sum and the range
of the rounds' sums (ms), and with ``--kernels`` every hetpart kernel of the two
quantised sides (least round median, us).

Categories (:func:`category`): the conv's window and groups read off the fused
PrimFunc (depthwise, 1x1, other conv), the squeeze-excite gates (1x1 conv on a 1x1
image), pools, matmuls (the head), the rest element-wise; ORT's nodes by op type and
weight shape alike.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CATEGORIES = ("stem conv", "depthwise conv", "1x1 conv", "SE 1x1 conv", "other conv", "pool", "matmul",
              "element-wise", "VM instructions")


def _conv_kind(weight_shape, image_hw, group: int, first: bool) -> str:
    """The category of a convolution from its weight ``[O, I/g, kh, kw]``, output image and groups."""
    if first:
        return "stem conv"
    if group > 1 and weight_shape[1] == 1:
        return "depthwise conv"
    if tuple(weight_shape[2:]) == (1, 1):
        return "SE 1x1 conv" if tuple(image_hw) == (1, 1) else "1x1 conv"
    return "other conv"


def category(kernel, func, first_conv: bool) -> str:
    """A fused kernel's category (module doc): a conv by its conv2d block's weight and
    output (read off the PrimFunc ``func``), else by the kernel's anchor op."""
    import tvm_ffi
    from tvm import s_tir

    found: dict = {}

    def visit(block):
        if block.name_hint.startswith(("conv2d", "group_conv2d", "depthwise")):
            found["weight"] = [int(x) for x in block.reads[1].source.shape]
            found["hw"] = [int(x) for x in block.writes[0].source.shape[2:]]

    if "conv2d" in kernel.ops:
        tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit))
    if "weight" in found:
        weight = found["weight"]
        return _conv_kind(weight, found["hw"], 2 if weight[1] == 1 and weight[0] > 1 else 1, first_conv)
    if kernel.ops[0] in ("mean", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "sum"):
        return "pool"
    if kernel.ops[0] in ("matmul", "dense", "batch_matmul"):
        return "matmul"
    return "element-wise"


def _vm_side(model, switches):
    """(executable, {symbol: category}) of ``model`` imported and built with ``switches``."""
    from hetpart.bench.switches import switched

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    with switched(switches):
        graph = load(model)
        exe = kernels.build(graph.module, cpu_tvm_target())
    cats, seen_conv = {}, False
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        func = graph.module[k.func]
        cat = category(k, func, first_conv=not seen_conv and "conv2d" in k.ops)
        seen_conv = seen_conv or "conv2d" in k.ops
        cats[k.func] = cat
    return exe, cats


def _ort_categories(model) -> dict[str, str]:
    """ONNX node name -> category, for a float or QDQ model (a Conv's weight read through its
    DequantizeLinear)."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    shapes = {}
    inferred = onnx.shape_inference.infer_shapes(model)
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    out, first = {}, True
    for n in model.graph.node:
        if n.op_type == "Conv":
            w = n.input[1]
            if w not in inits and w in producer and producer[w].op_type == "DequantizeLinear":
                w = producer[w].input[0]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            out[n.name] = _conv_kind(list(inits[w].shape), shapes.get(n.output[0], [0, 0, 0, 0])[2:],
                                     attrs.get("group", 1), first)
            first = False
        elif n.op_type in ("MatMul", "Gemm"):
            out[n.name] = "matmul"
        elif "Pool" in n.op_type:
            out[n.name] = "pool"
        else:
            out[n.name] = "element-wise"
    return out


def _ort_profile(model, runs: int) -> dict[str, tuple[str, float]]:
    """ORT's per-node least time (us) over ``runs`` runs (its profiler's wall times: a
    time slice lost to another job shows as a 4 ms outlier), by ORT node name (its fused nodes keep
    the name of their first node), 1 intra-op thread."""
    import json
    import os
    import tempfile

    from hetpart.bench.int8 import feeds_for
    from hetpart.bench.peers import ort_session

    feeds = feeds_for(model, seed=100)
    samples, ops = collections.defaultdict(list), {}
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(model, threads=1, profile_prefix=os.path.join(tmp, "ort"))
        session.run(None, feeds)
        for _ in range(runs):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            samples[e["name"][:-len("_kernel_time")]].append(e["dur"])
            ops[e["name"][:-len("_kernel_time")]] = e["args"].get("op_name", "")
    return {n: (ops[n], float(np.min(v[1:] or v))) for n, v in samples.items()}


def _ort_by_category(model, runs: int) -> dict[str, float]:
    cats = _ort_categories(model)
    nodes = _ort_profile(model, runs)
    sums = collections.Counter()
    for name, (op, us) in nodes.items():
        # ORT's fused node names start with their first node's (a QLinearConv's, its Conv's); its
        # QuantizeLinear/DequantizeLinear nodes, named after the tensor, are element-wise whatever it is
        base = name if name in cats else max((n for n in cats if name.startswith(n)), key=len, default=None)
        quant = op in ("QuantizeLinear", "DequantizeLinear")
        sums["element-wise" if quant else cats.get(base, "element-wise")] += us
    return dict(sums)


def profile(float_path: Path, before: list[str], after: list[str], runs: int, rounds: int) -> dict:
    """Per side, per round: {category: us} and {kernel symbol: us} (module doc)."""
    import onnx
    import tvm
    from tvm import relax

    from hetpart.bench.int8 import feeds_for, quantize
    from hetpart.bench.kernel_table import call_times, numbered
    from hetpart.runtime.threads import call_leased

    qpath = float_path.with_name(f"{float_path.stem}.qdq.onnx")
    if not qpath.exists():
        quantize(float_path, "qdq", qpath)
    qmodel, fmodel = onnx.load(str(qpath)), onnx.load(str(float_path))
    sides = {"before": _vm_side(qmodel, before), "after": _vm_side(qmodel, after),
             "float": _vm_side(fmodel, [])}
    feeds = feeds_for(qmodel, seed=100)
    result = {name: {"cats": [], "kernels": [], "category": sides[name][1]} for name in sides}
    result["ort int8"] = {"cats": []}
    result["ort float"] = {"cats": []}

    def body():
        dev = tvm.cpu()
        vms = {}
        for name, (exe, _) in sides.items():
            vm = relax.VirtualMachine(exe, dev)
            args = [tvm.runtime.tensor(feeds[i.name]) for i in qmodel.graph.input]
            vm["main"](*args)
            vms[name] = (vm, args)
        outs = {name: vm["main"](*args) for name, (vm, args) in vms.items()}
        result["outputs"] = {k: (v.numpy() if hasattr(v, "numpy") else v[0].numpy()) for k, v in outs.items()}
        for _ in range(rounds):
            for name, (vm, args) in vms.items():
                cats = sides[name][1]
                samples = collections.defaultdict(list)
                for run in call_times(vm, args, runs, clock=time.thread_time):
                    for call, us in numbered(run):
                        samples[call].append(us)
                med = {call: float(np.median(v)) for call, v in samples.items()}
                by_cat = collections.Counter()
                for call, us in med.items():
                    symbol = call.split(" #")[0]
                    by_cat["VM instructions" if symbol.startswith("vm.builtin")
                           else cats.get(symbol.removesuffix("_prepacked"), "element-wise")] += us
                result[name]["cats"].append(dict(by_cat))
                result[name]["kernels"].append({call: us for call, us in med.items() if not call.startswith("vm.builtin")})

    for _ in range(1):
        call_leased("int8 qdq kernels", body, pool=1, role="cpu")
    for _ in range(rounds):
        result["ort int8"]["cats"].append(_ort_by_category(qmodel, runs))
        result["ort float"]["cats"].append(_ort_by_category(fmodel, runs))
    return result


def _cell(values: list[float]) -> str:
    return f"{min(values) / 1e3:.3f} [{min(values) / 1e3:.3f}-{max(values) / 1e3:.3f}]"


def render(result: dict, kernels: bool) -> str:
    sides = ("before", "after", "float", "ort int8", "ort float")
    lines = ["| category | " + " | ".join(sides) + " |", "|---|" + "---:|" * len(sides)]
    for cat in CATEGORIES + ("total",):
        row = []
        for side in sides:
            rounds = result[side]["cats"]
            vals = [sum(r.values()) if cat == "total" else r.get(cat, 0.0) for r in rounds]
            row.append(_cell(vals) if any(vals) else "-")
        if any(c != "-" for c in row):
            lines.append(f"| {cat} | " + " | ".join(row) + " |")
    outs = result["outputs"]
    scale = float(np.abs(outs["after"]).max()) or 1.0
    lines.append(f"\nmax|before - after| / max|after| = {np.abs(outs['before'] - outs['after']).max() / scale:.3g}")
    if kernels:
        for side in ("before", "after", "float"):
            best = collections.defaultdict(list)
            for r in result[side]["kernels"]:
                for k, us in r.items():
                    best[k].append(us)
            lines.append(f"\n{side}: per kernel, least round median (us)")
            cats = result[side]["category"]
            for k, v in sorted(best.items(), key=lambda kv: -min(kv[1])):
                cat = cats.get(k.split(" #")[0].removesuffix("_prepacked"), "element-wise")
                lines.append(f"  {k[:70]:<72}{min(v):9.1f}  {cat}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="float ONNX files")
    p.add_argument("--before", action="append", default=[], help="module.ATTR=value for the before side")
    p.add_argument("--after", action="append", default=[], help="module.ATTR=value for the after side")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--kernels", action="store_true", help="also every kernel of the two quantised sides")
    a = p.parse_args(argv)
    for path in a.models:
        print(f"### {path.name} QDQ, 1 thread, CPU time; {a.rounds} rounds x {a.runs} runs "
              f"(before: {' '.join(a.before) or 'as checked out'}; after: {' '.join(a.after) or 'as checked out'})\n")
        print(render(profile(path, a.before, a.after, a.runs, a.rounds), a.kernels), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
