"""Issue 18: where a channel-blocked build (``load(model, conv_block=c)``) loses against ONNX
Runtime, per kernel, on one thread: hetpart's kernels timed inside whole runs (the calling
thread's CPU time, least over ``--runs`` runs; :func:`hetpart.bench.kernel_table.least_kernel_seconds`)
beside ORT's nodes (its profiler, one intra-op thread, least over the runs per node).

    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/blocked_ort_table.py /tmp/googlenet.onnx --block 16
    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/blocked_ort_table.py zoo:mobilenet --block 16 \\
        --set hetpart.importer.blocked_regions.WIDEN_BLOCKED=0

Convolutions are paired with the ONNX ``Conv`` they came from (hetpart by input channels, output
shape and nearest MAC count; ORT by node name, a fused node named after its last op, walked back
to its ``Conv``) and grouped by kind (``conv 1x7 s1``, ``dw 3x3 s2``); other kernels by class
(``maxpool``, ``avgpool``, ``concat``, ``layout``, ``gemm``, ``global pool``, ``other``).
Prints the per-kind table (ms, and ms lost = hetpart - ORT), largest loss first, then the
convolution groups by signature, then the whole sums.  ``--set`` builds hetpart with switches set.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def onnx_convs(model) -> dict[str, dict]:
    """ONNX Conv node name -> its kind label, Cin, Cout, output H/W and MACs."""
    from onnx import shape_inference

    m = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        a = {x.name: x for x in n.attribute}
        w = inits.get(n.input[1]) or shapes[n.input[1]]
        g = a["group"].i if "group" in a else 1
        s = list(a["strides"].ints) if "strides" in a else [1, 1]
        y = shapes[n.output[0]]
        cin = shapes[n.input[0]][1]
        kind = ("dw" if g > 1 and g == cin else "conv") + f" {w[2]}x{w[3]} s{s[0]}"
        out[n.name] = {"kind": kind, "cin": cin, "cout": y[1], "hw": (y[2], y[3]),
                       "macs": y[1] * y[2] * y[3] * (cin // g) * w[2] * w[3]}
    return out


def ort_nodes(model, feeds, runs: int) -> list[tuple[str, str, float]]:
    """``(op_name, ONNX-side node name, least seconds)`` per ORT node, one thread."""
    from hetpart.bench.peers import ort_session

    with tempfile.TemporaryDirectory() as tmp:
        s = ort_session(model, threads=1, profile_prefix=os.path.join(tmp, "ort"))
        for _ in range(runs + 1):
            s.run(None, feeds)
        events = json.load(open(s.end_profiling()))
    d: dict = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            d[(e["args"].get("op_name", "?"), e["name"][: -len("_kernel_time")])].append(e["dur"] * 1e-6)
    return [(op, name, min(v[1:] or v)) for (op, name), v in d.items()]


def ort_conv_of(model, name: str, convs: dict) -> str | None:
    """The ONNX Conv an ORT node ``name`` runs (fused nodes carry their last op's name)."""
    base = name.removesuffix("_nchwc")
    by_name = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    todo, seen = [base], set()
    while todo:
        x = todo.pop(0)
        if x in convs:
            return x
        if x in seen or x not in by_name:
            continue
        seen.add(x)
        todo += [producer[i].name for i in by_name[x].input if i in producer]
    return None


def ort_class(op: str) -> str:
    return {"MaxPool": "maxpool", "AveragePool": "avgpool", "Concat": "concat", "ReorderInput": "layout",
            "ReorderOutput": "layout", "Gemm": "gemm", "FusedGemm": "gemm", "MatMul": "gemm",
            "GlobalAveragePool": "global pool", "ReduceMean": "global pool"}.get(op, "other")


def het_class(k) -> str:
    ops = " ".join(k.ops)
    if "concatenate" in ops:
        return "concat"
    if "max_pool" in ops:
        return "maxpool"
    if "avg_pool" in ops:
        return "avgpool" if "adaptive" not in ops else "global pool"
    if "adaptive" in ops or "mean" in ops:
        return "global pool"
    if all("layout_transform" in o for o in k.ops):
        return "layout"
    if "matmul" in ops or "dense" in ops:
        return "gemm"
    return "other"


def het_convs(graph, convs: dict) -> dict[str, str]:
    """hetpart conv kernel id -> the ONNX Conv it runs (module docstring)."""
    free = dict(convs)
    out = {}
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        if not any("conv2d" in o for o in k.ops):
            continue
        x, y = graph.tensors[k.inputs[0]].shape, graph.tensors[k.outputs[0]].shape
        cin = x[1] * (x[4] if len(x) == 5 else 1)
        cout = y[1] * (y[4] if len(y) == 5 else 1)
        cands = [n for n, c in free.items() if c["cin"] == cin and c["cout"] == cout and c["hw"] == tuple(y[2:4])]
        if not cands:
            continue
        n = min(cands, key=lambda n: abs(math.log(max(k.flops, 1) / (2 * free[n]["macs"]))))
        out[k.id] = n
        del free[n]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--set", action="append", default=[], metavar="MODULE.ATTR=VALUE")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    from hetpart import load
    from cpu_rule_ab import _feeds, _model, switched
    from nchwc_in_situ import in_situ

    model = _model(a.model, 1)
    feeds = _feeds(model)
    convs = onnx_convs(model)
    with switched(tuple(a.set)):
        graph = load(model, conv_block=a.block)
        het_t = in_situ(graph, [feeds[i.name] for i in model.graph.input], a.runs)
    ort = ort_nodes(model, feeds, a.runs)

    # hetpart: a PrimFunc shared by several kernels has its calls summed once; split evenly
    uses = collections.Counter(k.func for k in graph.kernels.values())
    het_conv = het_convs(graph, convs)
    het_rows: dict = collections.defaultdict(float)
    het_sig: dict = collections.defaultdict(float)
    funcs: dict = collections.defaultdict(set)
    for k in graph.kernels.values():
        t = het_t.get(k.func, 0.0) / uses[k.func]
        if k.id in het_conv:
            c = convs[het_conv[k.id]]
            het_rows[c["kind"]] += t
            het_sig[(c["kind"], c["cin"], c["cout"], c["hw"])] += t
            funcs[c["kind"]].add(k.func)
        else:
            het_rows[het_class(k)] += t
            funcs[het_class(k)].add(k.func)
    ort_rows: dict = collections.defaultdict(float)
    ort_sig: dict = collections.defaultdict(float)
    for op, name, t in ort:
        c = ort_conv_of(model, name, convs) if op in ("Conv", "FusedConv") else None
        if c is not None:
            ort_rows[convs[c]["kind"]] += t
            x = convs[c]
            ort_sig[(x["kind"], x["cin"], x["cout"], x["hw"])] += t
        else:
            ort_rows[ort_class(op)] += t
    print(f"== {a.model} NCHW{a.block}c, 1 thread; hetpart in whole runs (CPU time), ORT profiler; least of "
          f"{a.runs} runs, ms" + (f"; set {' '.join(a.set)}" if a.set else ""))
    print(f"   {'kind':<16}{'hetpart':>9}{'ORT':>9}{'lost':>9}{'x ORT':>7}   hetpart kernels")
    kinds = sorted(set(het_rows) | set(ort_rows), key=lambda k: -(het_rows[k] - ort_rows[k]))
    for k in kinds:
        h, o = het_rows[k] * 1e3, ort_rows[k] * 1e3
        print(f"   {k:<16}{h:>9.3f}{o:>9.3f}{h - o:>9.3f}{(h / o if o else 0):>7.2f}   {len(funcs[k])}")
    h, o = sum(het_rows.values()) * 1e3, sum(ort_rows.values()) * 1e3
    print(f"   {'sum':<16}{h:>9.3f}{o:>9.3f}{h - o:>9.3f}{h / o:>7.2f}")
    print("   convolutions by signature (kind, Cin, Cout, out HxW), largest loss first, ms")
    sigs = sorted(set(het_sig) | set(ort_sig), key=lambda s: -(het_sig[s] - ort_sig[s]))
    for s in sigs[: a.top]:
        h, o = het_sig[s] * 1e3, ort_sig[s] * 1e3
        print(f"   {s[0]:<12}{s[1]:>6}{s[2]:>6} {str(s[3]):<10}{h:>9.3f}{o:>9.3f}{h - o:>9.3f}{(h / o if o else 0):>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
