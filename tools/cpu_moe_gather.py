"""One MoE layer's expert kernels alone, on the CPU: the gather of the chosen experts' weights plus
the matmul that reads the copy (``FUSE_EXPERT_GATHER`` off) against the one kernel that reads the
rows in place (on; :mod:`hetpart.importer.expert_matmul`).

For a ``zoo:moe`` spec, layer 0's three projections (gate with SwiGLU, up, down) are each built as
the cost model times a kernel (:func:`hetpart.costmodel.kernel_bench.single_kernel_module`, random
inputs, ids in range) by :func:`hetpart.kernels.build`, and timed in turns of ``--calls`` calls,
each after :func:`hetpart.bench.settle.settle`, ``--rounds`` rounds, on a leased thread with a TVM
pool of ``--threads`` (``--cpu-time``: the thread's CPU time; needs 1 thread).  Hot, as a profile
times them: a kernel repeated keeps what of its weights fits the last-level cache.  Prints per
projection the least call (ms) of take, matmul, their sum, and the fused kernel.

    PYTHONPATH=. python tools/cpu_moe_gather.py zoo:moe:layers=1 --threads 1 --cpu-time
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _kernels(spec: str, on: bool) -> tuple:
    """``(graph, {key: kernels})``: layer 0's expert kernels of ``spec`` -- off: per projection
    ``(take, matmul)``; on: ``(fused,)`` -- keyed by the fused kernel's ops and output bytes."""
    from hetpart import importer
    from hetpart.bench.switches import switched
    from hetpart.importer.expert_matmul import OP

    with switched([f"hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER={int(on)}"]):
        graph = importer.load(spec)
    found: dict = {}
    for k in graph.nodes:
        if on and OP in k.ops:
            found.setdefault((k.ops, k.bytes_written), (k,))
        elif not on and k.ops == ("take",):
            for r in (graph.kernels[c] for t in k.outputs for c in graph.tensors[t].consumers):
                if r.op_class == "matmul" and r.param_bytes == 0:  # it reads the copy (not a residual of it)
                    found.setdefault(((OP,) + tuple(r.ops[1:]), r.bytes_written), (k, r))
    return graph, found


def _runner(graph, kernel):
    """A call of ``kernel`` alone, built for this host, on its random inputs."""
    import tvm
    from tvm import relax

    from hetpart import kernels
    from hetpart.costmodel.kernel_bench import prepared_inputs, single_kernel_module
    from hetpart.targets import cpu_tvm_target

    kmod = single_kernel_module(graph, kernel)
    exe = kernels.build(kmod.mod, cpu_tvm_target())
    args = prepared_inputs(kmod, exe, tvm.cpu())
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return lambda: vm["main"](*args)


def main(argv=None) -> int:
    import cpu_rule_ab

    from hetpart.runtime.threads import call_leased

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec", help="a zoo:moe spec, e.g. zoo:moe:layers=1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu-time", action="store_true", help="time by the calling thread's CPU time (1 thread)")
    a = p.parse_args(argv)
    if a.cpu_time and a.threads != 1:
        p.error("--cpu-time needs --threads 1")
    clock = time.thread_time if a.cpu_time else time.perf_counter
    off_graph, off = _kernels(a.spec, False)
    on_graph, on = _kernels(a.spec, True)
    rows = [(key, off[key], on[key]) for key in on if key in off]

    def body():
        sides = []
        for _, pair, (fused,) in rows:
            sides += [_runner(off_graph, pair[0]), _runner(off_graph, pair[1]), _runner(on_graph, fused)]
        return cpu_rule_ab.turns(sides, a.calls, a.rounds, clock)

    best = call_leased("cpu moe gather", body, pool=a.threads, role="cpu")
    clock_name = ", CPU time" if a.cpu_time else ""
    print(f"{'projection':<44}{'take ms':>9}{'matmul ms':>11}{'sum ms':>9}{'fused ms':>10}{'fused/sum':>10}"
          f"   ({a.spec}, {a.threads} threads, {a.calls} calls x {a.rounds} rounds{clock_name})")
    for i, (key, _, _) in enumerate(rows):
        take, mm, fused = (min(best[3 * i + j]) for j in range(3))
        print(f"{'+'.join(key[0]):<44}{take:9.3f}{mm:11.3f}{take + mm:9.3f}{fused:10.3f}{fused / (take + mm):10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
