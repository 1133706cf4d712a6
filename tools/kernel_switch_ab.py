"""Per-kernel A/B of a CPU rule switch: only the kernels whose schedule it changes, each
timed alone before and after in one process, in turns, on 1 thread by CPU time.

For every model, the kernels whose scheduled TIR differs with ``--before`` applied
(:func:`rule_switch_tir_diff.changed`) are built alone (the cost model's single-kernel
module, :func:`hetpart.costmodel.kernel_bench.single_kernel_module`) with the switch as
``--before`` sets it and as the checkout has it, both fed the same seeded inputs
(weights packed as the build packs them), and timed in turns of ``--calls`` calls for
``--rounds`` rounds on a leased thread with a TVM pool of one, each call by that
thread's CPU time (other jobs' time slices on the core not counted).  Reported per
kernel: how often the model calls it, the least call before and after with the range
of the rounds' least calls (ms), after/before, and the largest difference between the
two outputs (0: the same sums in the same order); a last line sums the model's changed
kernels, each times its calls.

    PYTHONPATH=. python tools/kernel_switch_ab.py /tmp/mobilenet_v2.onnx zoo:resnet50 \\
        --before hetpart.kernels.ragged_rows.SHIFT_RAGGED_ROWS=0 --rounds 5

A switch that is off by default is timed on with ``--before X=0 --after X=1`` (both named:
the changed kernels are found under the after side's values); ``--block N`` imports the models
channel-blocked (``load(model, conv_block=N)``).

Models as tools/rule_switch_tir_diff.py takes them (a layer name, a zoo spec, an ONNX file).
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


def _outputs(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [a for item in out for a in _outputs(item)]


def _build(kmod, target, before: list[str]):
    from hetpart.bench.switches import switched

    from hetpart.costmodel import kernel_bench

    with switched(before):
        return kernel_bench.build_module(kmod.mod, target)


def ab_kernels(model, before: list[str], calls: int, rounds: int, kernels: list[str] | None = None,
               cores: int | None = None, after: tuple[str, ...] = (), block: int | None = None) -> list[dict]:
    """One row per changed kernel of ``model`` (or per kernel named in ``kernels``: a switch
    that acts past scheduling, e.g. the TIR pipeline's ``stack_tiles.ENABLED``, changes no
    scheduled TIR): name, calls, before/after least ms per round, max |before - after| of
    the outputs.  ``after``: assignments for the after side (a switch off by default, on;
    ``before`` then sets the same switch to its default, explicitly); ``block``: the
    channel-blocked import (``load(model, conv_block=block)``)."""
    import tvm
    from tvm import relax

    from hetpart.bench.switches import switched

    from hetpart import load
    from hetpart.costmodel import kernel_bench
    from hetpart.runtime.threads import call_leased
    from hetpart.targets import cpu_tvm_target
    from rule_switch_tir_diff import changed

    target = cpu_tvm_target(cores)
    with switched(after):
        names = kernels if kernels else changed(model, target, before, block)[1]
        graph = load(model, conv_block=block)
    uses = collections.Counter(k.func for k in graph.kernels.values())
    firsts = {}
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        firsts.setdefault(k.func, k)
    rows = []
    for name in names:
        if name not in firsts:
            continue
        kmod = kernel_bench.single_kernel_module(graph, firsts[name])
        exes = [_build(kmod, target, before), _build(kmod, target, list(after))]
        row = {"kernel": name, "calls": uses[name]}

        def body(kmod=kmod, exes=exes, row=row):
            dev = tvm.cpu()
            vms = [relax.VirtualMachine(e, dev) for e in exes]
            args = [kernel_bench.prepared_inputs(kmod, e, dev, seed=0) for e in exes]
            outs = [_outputs(vm["main"](*a)) for vm, a in zip(vms, args)]
            row["diff"] = max(float(np.abs(x - y).max()) for x, y in zip(*outs))
            best = [[], []]
            for _ in range(rounds):
                for i, (vm, a) in enumerate(zip(vms, args)):
                    ts = []
                    for _ in range(calls):
                        t = time.thread_time()
                        vm["main"](*a)
                        ts.append(time.thread_time() - t)
                    best[i].append(min(ts) * 1e3)
            row["before"], row["after"] = best

        call_leased("kernel switch ab", body, pool=1, role="cpu")
        rows.append(row)
    return rows


def _fmt(b: list[float]) -> str:
    return f"{min(b):.4f} [{min(b):.4f}-{max(b):.4f}]"


def main(argv=None) -> int:
    import onnx

    from cpu_rule_ab import _model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--before", action="append", default=[], help="module.ATTR=value (as cpu_rule_ab.py)")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cores", type=int, default=None,
                   help="num-cores of the target the kernels are scheduled for (default: this host's; 16: the Xeon's "
                        "schedules timed per core)")
    p.add_argument("--kernels", default="", help="comma list of kernel functions to time (default: those whose "
                   "scheduled TIR the switch changes)")
    p.add_argument("--after", action="append", default=[], help="module.ATTR=value for the after side")
    p.add_argument("--block", type=int, default=None, help="the channel-blocked import, load(model, conv_block=N)")
    a = p.parse_args(argv)
    for spec in a.models:
        model = onnx.load(spec) if spec.endswith(".onnx") else _model(spec, 1)
        rows = ab_kernels(model, a.before, a.calls, a.rounds, [k for k in a.kernels.split(",") if k], a.cores,
                          tuple(a.after), a.block)
        print(f"{spec}: {len(rows)} changed kernels (1 thread, CPU time, {a.calls} calls x {a.rounds} rounds)")
        tb = ta = 0.0
        for r in rows:
            b, af = min(r["before"]), min(r["after"])
            tb, ta = tb + b * r["calls"], ta + af * r["calls"]
            print(f"  {r['kernel'][:52]:<53}x{r['calls']:<3}{_fmt(r['before']):>28}{_fmt(r['after']):>28}"
                  f"{af / b:7.2f}{r['diff']:10.2e}", flush=True)
        if rows:
            print(f"  {'sum (x calls)':<57}{tb:>28.4f}{ta:>28.4f}{ta / tb:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
