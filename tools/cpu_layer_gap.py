"""Where an all-CPU model trails ONNX Runtime, per layer kind: hetpart's kernels and ORT's
nodes grouped by what they compute, sorted by the gap (hetpart - ORT).

    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/cpu_layer_gap.py /tmp/inception_v3.onnx [--top 30]

The key of a layer: a Conv's ``conv ci->co kh x kw s{stride} @ H x W`` (input plane), a pool's
``{op} k s pad @ C x H``, else the op (Concat, Gemm, ...).  hetpart side: every kernel of
the model's all-CPU build timed alone by the cost model's microbenchmark (least of its
single calls by the calling thread's CPU time, ``TVM_NUM_THREADS=1``), keyed from its weight
and input / output shapes and its ops.  ORT side: its profiler per node (least over the
runs, ``intra_op_num_threads`` = ``TVM_NUM_THREADS`` or this host's pool), each node keyed
by the ONNX node it keeps the name of (names are required: ``tools/inception_onnx.py``
names every node after its output); ORT's NCHWc reorders are a group of their own.  Both
sides' minima: sums of minima under-state a run a little.  ``--in-situ``: hetpart's kernels
timed inside whole runs instead (a VM instrument, CPU time; ``--wall``: wall time, for a pool of
several threads): alone, a kernel's weights stay in the caches between calls, where in the model
(and in ORT's profile) they are read cold.  ORT's nodes are keyed through the BatchNormalization /
ReLU / Add it fuses a Conv with (a model with unfolded BN, as the zoo's).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _nchw(shape) -> tuple:
    """An NCHW{c}c activation shape (5-d) as its NCHW shape; a 4-d one as it is."""
    return (shape[0], shape[1] * shape[4], shape[2], shape[3]) if len(shape) == 5 else tuple(shape)


def _conv_key(w, x, y) -> str:
    if len(w) == 6:  # OIHW{i}i{o}o: the blocked import's weights
        w = (w[0] * w[5], w[1] * w[4], w[2], w[3])
    x, y = _nchw(x), _nchw(y)
    co, ci, kh, kw = w
    s = max(1, round(x[2] / y[2])) if y[2] else 1
    return f"conv {ci}->{co} {kh}x{kw} s{s} @{x[2]}x{x[3]}"


FUSED_ACTIVATIONS = ("Relu", "Clip", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh")
"""ONNX ops ORT's Conv fusion takes into the Conv node, which then keeps the activation's name
(mobilenet_v2's ReLU6 is a Clip: keyed as the activation before, the convs read 0 ms)."""


def onnx_keys(model) -> dict[str, str]:
    """ONNX node name -> its layer key (a Relu / Concat keyed by itself)."""
    import onnx

    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
              for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    out = {}
    for n in model.graph.node:
        x = shapes.get(n.input[0], ())
        if n.op_type == "Conv":
            out[n.name] = _conv_key(inits[n.input[1]], x, shapes[n.output[0]])
        elif n.op_type in ("MaxPool", "AveragePool"):
            a = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
            out[n.name] = f"{n.op_type} {a['kernel_shape'][0]} s{a.get('strides', [1])[0]} p{a.get('pads', [0])[0]} " \
                          f"@{x[1]}x{x[2]}"
        else:
            out[n.name] = n.op_type
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:  # ORT names a Conv fused with its activation after the activation
        src = producer.get(n.input[0]) if n.op_type in FUSED_ACTIVATIONS else None
        if src is not None and src.op_type == "Conv":
            out[n.name] = out[src.name]
    for n in model.graph.node:  # SiLU: x * Sigmoid(x) after a Conv, keyed as that Conv
        if n.op_type == "Mul" and len(n.input) == 2:
            for a, b in (n.input, n.input[::-1]):
                sig, src = producer.get(b), producer.get(a)
                if (sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == a
                        and src is not None and src.op_type == "Conv"):
                    out[n.name] = out[src.name]
                gate = producer.get(sig.input[0]) if sig is not None and sig.op_type == "Sigmoid" else None
                if gate is not None and gate.op_type == "Conv" and sig.input[0] != a:
                    out[n.name] = out[gate.name]  # a squeeze-excite gate: with its fc2 (hetpart fuses them)
    return out


def ort_key(node: dict, keys: dict[str, str], producer: dict[str, str], conv_of: dict[str, str] | None = None) -> str:
    """The layer key of an ORT profiled node (``{"name", "op"}``): its ONNX node's (:func:`onnx_keys`),
    ORT's suffixes dropped (``_nchwc``, ``_token_N``, a fusion's ``/QuickGeluFusion/``: a SiLU keyed
    by its Mul, hence with its conv), else its output's producer's (ORT names the nodes its NCHWc
    pass makes by their output); a fused Conv named after the BatchNormalization, ReLU or residual
    Add it absorbed keyed by that node's Conv (``conv_of``: ``cpu_kernel_profile.conv_producers``;
    before, with the BN unfolded as in the zoo's resnet50, every conv showed 0 ms); else its op.
    NCHWc reorders have a key of their own."""
    if node["op"] in ("ReorderInput", "ReorderOutput"):
        return "NCHWc reorders (ORT)"
    base = node["name"].split("_token")[0].split("/")[0].removesuffix("_nchwc")
    name = base if keys.get(base) else producer.get(base, "")
    if conv_of and "Conv" in node["op"] and name in conv_of and not keys.get(name, "").startswith("conv"):
        name = conv_of[name]
    return keys.get(name, node["op"])


def ort_keyed(model, rows: list[dict]) -> list[tuple[str, float]]:
    """``(layer key, seconds)`` per profiled ORT node (``rows``: ``cpu_kernel_profile.ort_nodes``'s
    ``name`` / ``op`` / ``s``), keyed by :func:`ort_key`."""
    from cpu_kernel_profile import conv_producers

    keys = onnx_keys(model)
    producer = {o: n.name for n in model.graph.node for o in n.output}
    conv_of = conv_producers(model)
    return [(ort_key(r, keys, producer, conv_of), r["s"]) for r in rows]


def _least_cpu_time(kmod, executable, dev, calls: int) -> float:
    """The least CPU time of the calling thread over ``calls`` single calls of the kernel
    (TVM_NUM_THREADS=1: TVM's pool runs its one task on the calling thread), after one warm-up;
    another job's time slices on the core do not count, as in tools/cpu_rule_ab.py --cpu-time."""
    import time

    from tvm import relax

    from hetpart.costmodel import kernel_bench

    args = kernel_bench.prepared_inputs(kmod, executable, dev)
    fn = relax.VirtualMachine(executable, dev)["main"]
    fn(*args)
    best = float("inf")
    for _ in range(calls):
        t = time.thread_time()
        fn(*args)
        best = min(best, time.thread_time() - t)
    return best


def hetpart_keyed(model, calls: int, graph=None, block: int | None = None) -> list[tuple[str, str, float]]:
    """(key, func, seconds) per kernel of the all-CPU build, each timed alone (least CPU time;
    ``calls`` 0: keys only, no timing); ``block``: the channel-blocked import
    (``load(model, conv_block=block)``), its 5-d shapes keyed as their NCHW ones."""
    import tvm
    from cpu_kernel_profile import kernels_timed_once

    from hetpart import load
    from hetpart.costmodel import kernel_bench
    from hetpart.targets import cpu_tvm_target

    graph = graph or load(model, conv_block=block)
    target, dev = cpu_tvm_target(), tvm.cpu()
    rows = []
    for k, kmod, seconds in kernels_timed_once(graph, lambda kmod: 0.0 if not calls else _least_cpu_time(
            kmod, kernel_bench.build_module(kmod.mod, target), dev, calls)):
        xs = [_nchw(graph.tensors[t].shape) for t in k.inputs]
        y = _nchw(graph.tensors[k.outputs[0]].shape)
        w4 = [a.shape for a in kmod.args if a.weight and len(a.shape) in (4, 6)]
        if any(o.startswith("conv2d") for o in k.ops) and w4:
            key = _conv_key(w4[0], xs[0], y)
        elif any("pool" in o for o in k.ops):
            op = "MaxPool" if any("max_pool" in o for o in k.ops) else "AveragePool"
            s = max(1, round(xs[0][2] / y[2]))
            pad = max(0, -(-((y[2] - 1) * s + 3 - xs[0][2]) // 2))  # a 3x3 window's padding from the shapes
            key = f"{op} 3 s{s} p{pad} @{xs[0][1]}x{xs[0][2]}" if "global" not in " ".join(k.ops) \
                else "GlobalAveragePool"
        elif tuple(k.ops) == ("mean",) and len(y) == 4 and y[2] == y[3] == 1:
            key = "GlobalAveragePool"
        elif all("layout_transform" in o for o in k.ops):
            key = "layout transforms (hetpart)"
        elif "concatenate" in k.ops:
            key = "Concat"
        elif "matmul" in k.ops or "dense" in " ".join(k.ops):
            key = "Gemm"
        else:
            key = "+".join(k.ops[:3])
        rows.append((key, k.func, seconds))
    return rows


def hetpart_in_situ(model, runs: int, wall: bool = False, block: int | None = None,
                    cores: int | None = None) -> list[tuple[str, str, float]]:
    """(key, func, seconds) per kernel call inside whole runs of the all-CPU build (a Relax VM
    instrument around every call, the calling thread's CPU time; ``TVM_NUM_THREADS=1``; ``wall``:
    wall time, for a pool of several threads, whose work the calling thread's clock misses), the
    least over ``runs`` runs of each key's sum: what a kernel costs with the caches as the model
    leaves them (weights read cold, as ORT's profiled nodes read them).  ``cores``: the build's target
    has that many (default: this host's), e.g. a 16-core schedule timed per core on a small box."""
    import time

    import tvm
    from tvm import relax

    from hetpart import kernels, load
    from hetpart.bench.kernel_table import least_kernel_seconds
    from hetpart.models import example_inputs
    from hetpart.targets import cpu_tvm_target

    graph = load(model, conv_block=block)
    keyed = {func: key for key, func, _ in hetpart_keyed(model, 0, graph=graph)}
    vm = relax.VirtualMachine(kernels.build(graph.module, cpu_tvm_target(cores)), tvm.cpu())
    feeds = example_inputs(model, seed=0)
    args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]
    vm["main"](*args)
    best = least_kernel_seconds(vm, args, runs, clock=time.perf_counter if wall else time.thread_time)
    best = {func: t for func, t in best.items() if func in keyed}
    return [(keyed[f], f, t) for f, t in best.items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--calls", type=int, default=20, help="calls per hetpart kernel (least CPU time)")
    p.add_argument("--in-situ", action="store_true",
                   help="hetpart's kernels timed inside whole runs (--runs of them), not alone")
    p.add_argument("--wall", action="store_true",
                   help="with --in-situ: wall time per kernel call (several threads: TVM_NUM_THREADS=16)")
    p.add_argument("--block", type=int, default=None,
                   help="hetpart's channel-blocked import (load(model, conv_block=N)), kernels keyed as NCHW layers")
    p.add_argument("--cores", type=int, default=None,
                   help="with --in-situ: num-cores of hetpart's build target (default: this host's)")
    a = p.parse_args(argv)
    import onnx

    from cpu_kernel_profile import ort_nodes
    from hetpart.cpu_cores import pool_size

    model = onnx.load(a.model)
    threads = pool_size()
    ort_rows, ort_run = ort_nodes(model, threads, a.runs)
    o_sum, o_n = defaultdict(float), defaultdict(int)
    for key, s in ort_keyed(model, ort_rows):
        o_sum[key] += s
        o_n[key] += 1
    h_sum, h_n = defaultdict(float), defaultdict(int)
    for key, _, s in (hetpart_in_situ(model, a.runs, a.wall, a.block, a.cores) if a.in_situ
                        else hetpart_keyed(model, a.calls, block=a.block)):
        h_sum[key] += s
        h_n[key] += 1
    print(f"{a.model} all-CPU, {threads} thread(s): hetpart kernels {'in whole runs' if a.in_situ else 'alone'} (sum {sum(h_sum.values()) * 1e3:.3f} ms), "
          f"ORT nodes profiled (sum {sum(o_sum.values()) * 1e3:.3f} ms, least run {ort_run * 1e3:.3f} ms)")
    print(f"  {'layer':<40}{'n':>4}{'hetpart ms':>11}{'ORT ms':>9}{'gap ms':>9}{'ratio':>7}")
    allk = sorted(set(h_sum) | set(o_sum), key=lambda k: -(h_sum.get(k, 0) - o_sum.get(k, 0)))
    for k in allk[: a.top]:
        h, o = h_sum.get(k, 0.0), o_sum.get(k, 0.0)
        print(f"  {k:<40}{max(h_n[k], o_n[k]):4d}{h * 1e3:11.3f}{o * 1e3:9.3f}{(h - o) * 1e3:9.3f}"
              f"{(h / o if o else float('nan')):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
