"""A/B of CPU rule switches per kernel inside whole runs of a model: what a switch does to the
kernels it changes where the model leaves the caches (weights and a residual read cold, the
image left by the conv before), not alone as ``tools/kernel_switch_ab.py`` times them.

    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/cpu_insitu_ab.py zoo:resnet50 \\
        --before hetpart.kernels.rules.cpu_matmul.PLANE_CHUNK_B1=0 [--after ...] [--runs 15 --rounds 2]
    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/cpu_insitu_ab.py zoo:resnet50 --block 16 \
        --before hetpart.kernels.rules.cpu_blocked_conv.ROWS_OUTSIDE_BLOCKS=0

In: a model (a ``bench/cpu_layers.py`` layer name, a zoo spec or an ONNX file, ``--batch``),
``--before`` / ``--after`` assignments as ``tools/cpu_rule_ab.py`` takes them; ``--block N``: both
sides the channel-blocked import (``load(model, conv_block=N)``).  Both builds' VMs
run alternately, one whole run each turn, ``--runs x --rounds`` turns; every kernel call timed by a
Relax VM instrument (the calling thread's CPU time: ``TVM_NUM_THREADS=1``; ``--wall`` for a pool
of several threads).  Out: per kernel the least over the runs of its calls' sum, before / after /
ratio -- first the kernels the switches change (``tools/rule_switch_tir_diff.py``'s test: their
scheduled TIR differs), then the unchanged kernels' total both ways (the noise of the run) and the
whole runs' least sums.  On the 2-vCPU box shared by other jobs an unchanged kernel's ratio
wanders by 5-15%; the changed ones are read against that.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--before", action="append", default=[], help="module.ATTR=value for the before build")
    p.add_argument("--after", action="append", default=[], help="module.ATTR=value for the after build")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--wall", action="store_true", help="wall time per call (a pool of several threads)")
    p.add_argument("--block", type=int, default=None,
                   help="both sides imported channel-blocked (load(model, conv_block=N)), a switch's effect there")
    p.add_argument("--cores", type=int, default=None,
                   help="num-cores of the target both sides are built for (default: this host's); e.g. 16 on a "
                        "2-core box times a 16-core schedule's kernels per core")
    a = p.parse_args(argv)

    import tvm
    from tvm import relax

    from cpu_layer_gap import hetpart_keyed
    from cpu_rule_ab import _model, switched
    from rule_switch_tir_diff import scripts
    from hetpart import kernels, load
    from hetpart.bench.kernel_table import call_times, kernel_seconds
    from hetpart.models import example_inputs
    from hetpart.targets import cpu_tvm_target

    m = _model(a.model, a.batch)
    keyed = {f: k for k, f, _ in hetpart_keyed(m, 0, graph=load(m, conv_block=a.block))}
    target = cpu_tvm_target(a.cores)
    texts, vms = [], []
    for sw in (a.before, a.after):
        with switched(sw):
            graph = load(m, conv_block=a.block)
            texts.append(scripts(graph.module, target))
            vms.append(relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu()))
    changed = {f for f in texts[0] if texts[0][f] != texts[1].get(f)}
    feeds = example_inputs(m, seed=0)
    args = [tvm.runtime.tensor(feeds[i.name]) for i in m.graph.input]
    clock = time.perf_counter if a.wall else time.thread_time
    best: list[dict[str, float]] = [{}, {}]
    whole = [float("inf"), float("inf")]
    for vm in vms:
        vm["main"](*args)
    for _ in range(a.runs * a.rounds):
        for side, vm in enumerate(vms):
            for calls in call_times(vm, args, 1, clock=clock):
                run = {f: t * 1e3 for f, t in kernel_seconds(calls).items()}  # ms
                whole[side] = min(whole[side], sum(run.values()))
                for f, t in run.items():
                    best[side][f] = min(best[side].get(f, t), t)
    print(f"{a.model} batch {a.batch}: {len(changed)} of {len(texts[0])} kernels changed; least of "
          f"{a.runs * a.rounds} runs each, {'wall' if a.wall else 'CPU time'}, ms")
    print(f"  {'before':>8} {'after':>8} {'a/b':>6}  {'layer':34s} kernel")
    for f in sorted(changed, key=lambda f: -best[0].get(f, 0.0)):
        b, t = best[0].get(f, 0.0), best[1].get(f, 0.0)
        print(f"  {b:8.3f} {t:8.3f} {t / b if b else float('nan'):6.3f}  {keyed.get(f, ''):34s} {f}")
    rest = [sum(v for f, v in best[s].items() if f not in changed) for s in (0, 1)]
    print(f"  unchanged kernels (sum of least): {rest[0]:.3f} -> {rest[1]:.3f} ({rest[1] / rest[0]:.3f}); "
          f"whole runs (least sum): {whole[0]:.3f} -> {whole[1]:.3f} ({whole[1] / whole[0]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
