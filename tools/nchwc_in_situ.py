"""Issue 18: where a channel-blocked build (``load(model, conv_block=c)``) gains or loses against
the NCHW build, per kernel, timed *inside* whole runs (a Relax VM instrument around every call,
the calling thread's CPU time; ``TVM_NUM_THREADS=1``): weights and activations as the model
leaves the caches, which kernels timed alone (``tools/nchwc_ab.py --per-kernel``) miss.

    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/nchwc_in_situ.py /tmp/densenet121.onnx --runs 5
    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/nchwc_in_situ.py /tmp/densenet121.onnx \\
        --before hetpart.importer.blocked_regions.WIDEN_BLOCKED=0

Prints, per side (NCHW, NCHW{c}c, and with ``--before`` the NCHW{c}c build with that switch
set), the least over ``--runs`` runs of each kernel kind's summed time -- kinds: convolutions by
kernel size (``conv 1x1``, ``conv 3x3``, ``conv 7x7``), ``concat`` (a kernel holding a concat,
its BN-ReLU epilogue included), ``bn/elementwise`` (other injective kernels), ``pool``,
``layout_transform`` (a kernel that is only transforms), ``other`` -- then the convolutions
paired in binding order (one row per distinct NCHW signature, summed over its occurrences).
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def kind(graph, k) -> str:
    """The kernel kind of OpGraph kernel ``k`` (module docstring)."""
    ops = " ".join(k.ops)
    if "conv2d" in ops:  # the window from the MACs per output (weights are bound into the kernel)
        x, y = graph.tensors[k.inputs[0]].shape, graph.tensors[k.outputs[0]].shape
        ci = x[1] * (x[4] if len(x) == 5 else 1)
        outs = 1
        for d in y:
            outs *= d
        window = round(math.sqrt(k.flops / (2 * outs * ci))) if k.flops and ci else 0
        return f"conv {window}x{window}" if window else "conv"
    if "concatenate" in ops:
        return "concat (+BN-ReLU)"
    if "pool" in ops:
        return "pool"
    if all("layout_transform" in o for o in k.ops):
        return "layout_transform"
    if "matmul" in ops or "dense" in ops or "mean" in ops:
        return "other"
    return "bn/elementwise"


def in_situ(graph, feeds_list, runs: int) -> dict[str, float]:
    """Kernel func name -> least (over ``runs`` runs) summed CPU seconds inside whole runs."""
    import tvm
    from tvm import relax

    from hetpart import kernels
    from hetpart.bench.kernel_table import least_kernel_seconds
    from hetpart.targets import cpu_tvm_target

    vm = relax.VirtualMachine(kernels.build(graph.module, cpu_tvm_target()), tvm.cpu())
    args = [tvm.runtime.tensor(x) for x in feeds_list]
    vm["main"](*args)
    return least_kernel_seconds(vm, args, runs, clock=time.thread_time)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--block", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--before", action="append", default=[], metavar="MODULE.ATTR=VALUE")
    a = p.parse_args(argv)
    from hetpart import load
    from cpu_rule_ab import _feeds, _model, switched

    model = _model(a.model, a.batch)
    feeds = _feeds(model)
    feeds_list = [feeds[i.name] for i in model.graph.input]
    graphs = [("NCHW", load(model)), (f"NCHW{a.block}c", load(model, conv_block=a.block))]
    if a.before:
        with switched(tuple(a.before)):
            graphs.append(("before", load(model, conv_block=a.block)))
    times = []
    for name, g in graphs:
        if name == "before":
            with switched(tuple(a.before)):
                times.append(in_situ(g, feeds_list, a.runs))
        else:
            times.append(in_situ(g, feeds_list, a.runs))
    print(f"== {a.model} batch {a.batch}, in whole runs, 1 thread CPU time, least of {a.runs} runs, ms")
    per_kind = []
    for (name, g), t in zip(graphs, times):
        c: dict[str, float] = collections.defaultdict(float)
        n: collections.Counter = collections.Counter()
        funcs = {}
        for k in g.kernels.values():
            funcs.setdefault(k.func, kind(g, k))
            n[kind(g, k)] += 1
        for f, kd in funcs.items():  # a PrimFunc shared by several kernels: its calls summed once
            c[kd] += t.get(f, 0.0)
        per_kind.append((c, n))
    kinds = sorted({k for c, _ in per_kind for k in c})
    print(f"   {'kind (kernels)':<22}" + "".join(f"{name:>22}" for name, _ in graphs))
    for k in kinds:
        print(f"   {k:<22}" + "".join(f"{c[k] * 1e3:>14.3f} ({n[k]:>3})  " for c, n in per_kind))
    print(f"   {'sum':<22}" + "".join(f"{sum(c.values()) * 1e3:>20.3f}  " for c, _ in per_kind))
    print("   convolutions, NCHW vs blocked (summed over occurrences), ms")
    base, blocked = graphs[0][1], graphs[1][1]
    convs = [[k for k in sorted(g.kernels.values(), key=lambda k: k.index) if any("conv2d" in o for o in k.ops)]
             for g in (base, blocked)]
    rows: dict = {}
    for x, y in zip(*convs):
        r = rows.setdefault(x.func, [base.tensors[x.inputs[0]].shape, 0, set(), kind(base, x)])
        r[1] += 1
        r[2].add(y.func)
    tot = [0.0, 0.0]
    for func, (shape, cnt, bfuncs, kd) in rows.items():
        a_t, b_t = times[0].get(func, 0.0), sum(times[1].get(f, 0.0) for f in bfuncs)
        tot[0] += a_t
        tot[1] += b_t
        print(f"   {kd:<9}{str(list(shape)):<22}{cnt:>3}{a_t * 1e3:>9.3f}{b_t * 1e3:>9.3f}{(b_t / a_t if a_t else 0):>7.2f}")
    print(f"   convolutions: NCHW {tot[0] * 1e3:.3f}  blocked {tot[1] * 1e3:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
