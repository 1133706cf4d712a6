"""Issue 18: which kernels of a model's all-CPU build cannot feed T cores, ranked by the time
they would lose at T threads -- the NCHW import and the channel-blocked one side by side.

    PYTHONPATH=. python tools/parallel_audit.py /tmp/densenet121.onnx --layouts 0 16 --measure
    PYTHONPATH=. python tools/parallel_audit.py zoo:resnet50 --layouts 16 --threads 16 --top 15
    PYTHONPATH=. python tools/parallel_audit.py /tmp/googlenet.onnx --layouts 16 --measure \\
        --set hetpart.kernels.rules.cpu_injective.PARALLEL_BLOCKED_CONCAT=0     # the audit "before"

In: models (a zoo spec or an ONNX file), the layouts (0: NCHW, ``c``: ``load(model,
conv_block=c)``), the target's core count (``--cores``, default 16: the GPU machine's
Xeon; a rule may read it) and the thread count T of the estimate.  Each distinct kernel
of the all-CPU build is scheduled by hetpart's CPU rules for that target
(:func:`cpu_parallelism.analyse`: the loop nests, each one's work and the extent E of
its parallel loop, 0 where it runs serial) and, with ``--measure``, built the same way
and timed alone on one thread of this machine (CPU time, least of ``--calls`` x
``--rounds``; :mod:`hetpart.costmodel.kernel_bench`'s one-kernel module, weights packed
as the model has them) -- this box's cores have the Xeon's ISA, so that is its per-core
time.  Without ``--measure`` the per-core time is a static guess:
``max(flops / --gflops, bytes / --gbs)``.

Out (markdown), per model and layout: the per-core time ``t1`` (sum over the kernels'
occurrences), the ideal ``t1 / T``, the modelled time at T threads (each nest: serial, or
its work spread as TVM spreads a parallel loop -- contiguous ``ceil(E/T)`` iterations a
thread -- plus ``--fork-us`` per parallel region), and per kernel (occurrences folded):
E, the FLOPs and bytes (:class:`hetpart.importer.op_graph.Kernel`'s) per parallel
iteration, the serial share, ``t1``, the modelled ms at T and the ms it loses over the
ideal (*lost*), ranked by lost.  The model ignores memory bandwidth and caches: a kernel
with enough iterations can still scale badly; one with E < T cannot scale well.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class Row:
    """One distinct kernel: its nests (:class:`cpu_parallelism.KernelParallelism`), occurrences,
    FLOPs and bytes of one occurrence, and its one-thread time (ms; measured or guessed)."""

    kp: object
    count: int
    flops: int
    bytes: int
    t1_ms: float
    shape: str = ""

    def modelled_ms(self, threads: int, fork_us: float) -> float:
        """One occurrence at ``threads``: serial nests whole, parallel nests as TVM splits them."""
        work = max(1, self.kp.work)
        ms = 0.0
        for n in self.kp.nests:
            share = self.t1_ms * n.work / work
            ms += share if not n.extent else share * math.ceil(n.extent / threads) / n.extent + n.forks * fork_us / 1e3
        return ms

    def lost_ms(self, threads: int, fork_us: float) -> float:
        return self.count * (self.modelled_ms(threads, fork_us) - self.t1_ms / threads)

    @property
    def regions(self) -> int:
        return sum(n.forks for n in self.kp.nests if n.extent)


def rows_of(model, block: int | None, cores: int, measure: bool, calls: int, rounds: int,
            gflops: float, gbs: float) -> list[Row]:
    """The :class:`Row` of every distinct kernel of ``model``'s all-CPU build (``block``: the
    channel-blocked import's c, None: NCHW), scheduled for ``cores`` cores."""
    from hetpart import load
    from cpu_parallelism import analyse_graph, target_for

    graph = load(model, conv_block=block) if block else load(model)
    first: dict[str, object] = {}
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        first.setdefault(k.func, k)
    times = _measure(graph, first, target_for(cores), calls, rounds) if measure else {}
    out = []
    for kp, n in analyse_graph(graph, cores):
        k = first[kp.name]
        byt = k.bytes_read + k.bytes_written
        t1 = times.get(kp.name)
        if t1 is None:
            t1 = max(k.flops / (gflops * 1e6), byt / (gbs * 1e6))
        shape = graph.tensors[k.outputs[0]].shape if k.outputs and k.outputs[0] in graph.tensors else ""
        out.append(Row(kp, n, k.flops, byt, t1, "x".join(map(str, shape)) if shape else ""))
    return out


def _measure(graph, first: dict, target, calls: int, rounds: int) -> dict[str, float]:
    """Least CPU-time ms of one call of each kernel alone, one thread (module docstring)."""
    import tvm
    from tvm import relax

    from hetpart.costmodel import kernel_bench as kb
    from hetpart.runtime.threads import call_leased

    dev = tvm.cpu()
    out: dict[str, float] = {}

    def body():
        for name, k in first.items():
            try:
                kmod = kb.single_kernel_module(graph, k)
                ex = kb.build_module(kmod.mod, target)
                args = kb.prepared_inputs(kmod, ex, dev)
                vm = relax.VirtualMachine(ex, dev)
                f = vm["main"]
                f(*args)
                best = math.inf
                for _ in range(rounds):
                    for _ in range(calls):
                        t = time.thread_time()
                        f(*args)
                        best = min(best, time.thread_time() - t)
                out[name] = best * 1e3
            except Exception as exc:  # noqa: BLE001 - a kernel that cannot run alone keeps the static guess
                print(f"  ({name}: not measured: {type(exc).__name__}: {str(exc)[:80]})", file=sys.stderr)

    call_leased("parallel audit", body, pool=1, role="cpu")
    return out


def report(rows: list[Row], threads: int, fork_us: float, top: int) -> list[str]:
    """Markdown lines: totals, then the ``top`` kernels by lost ms at ``threads`` (module docstring)."""
    t1 = sum(r.t1_ms * r.count for r in rows)
    mod = sum(r.modelled_ms(threads, fork_us) * r.count for r in rows)
    serial = sum(r.t1_ms * r.count * r.kp.serial_share for r in rows)
    regions = sum(r.regions * r.count for r in rows)
    short = sum(r.count for r in rows if r.regions and r.kp.main_extent < threads)
    t = threads
    out = [f"t1 {t1:.2f} ms, ideal@{t} {t1 / t:.3f} ms, modelled@{t} {mod:.3f} ms (efficiency "
           f"{t1 / t / mod:.2f}); serial nests {serial:.3f} ms; {regions} parallel regions "
           f"(fork/join {regions * fork_us / 1e3:.3f} ms at {fork_us:g} us), {short} kernels with E < {t}", "",
           f"| kernel | rule | out | x | E | MFLOP/iter | KB/iter | serial | t1 ms | ms@{t} | lost ms@{t} (all x) |",
           "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in sorted(rows, key=lambda r: -r.lost_ms(t, fork_us))[:top]:
        e = r.kp.main_extent
        out.append(f"| {r.kp.name[:44]} | {r.kp.rule[:14]} | {r.shape} | {r.count} | {e} | "
                   f"{r.flops / e / 1e6:.2f} | {r.bytes / e / 1e3:.1f} | {r.kp.serial_share:.0%} | "
                   f"{r.t1_ms:.3f} | {r.modelled_ms(t, fork_us):.3f} | {r.lost_ms(t, fork_us):.3f} |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=int, default=1, help="the model's batch (zoo spec's batch=, a file rebatched)")
    p.add_argument("--layouts", type=int, nargs="+", default=[0, 16], help="0: NCHW; c: NCHW{c}c (conv_block=c)")
    p.add_argument("--cores", type=int, default=16, help="num-cores of the target the rules schedule for")
    p.add_argument("--threads", type=int, default=16, help="T of the estimate")
    p.add_argument("--fork-us", type=float, default=5.0, help="the pool's cost of one parallel region at T, us")
    p.add_argument("--measure", action="store_true", help="time each kernel alone on one thread (CPU time)")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--gflops", type=float, default=100.0, help="static per-core rate, without --measure")
    p.add_argument("--gbs", type=float, default=10.0, help="static per-core bytes rate, without --measure")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--set", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                   help="a switch set for the import and schedules (e.g. the audit's before)")
    a = p.parse_args(argv)
    from hetpart.importer.onnx_source import read_source
    from cpu_rule_ab import _model, switched

    with switched(a.set):
        for name in a.models:
            model = read_source(name).model if a.batch == 1 else _model(name, a.batch)
            for block in a.layouts:
                rows = rows_of(model, block or None, a.cores, a.measure, a.calls, a.rounds, a.gflops, a.gbs)
                how = "measured t1 (1 thread, CPU time, this host)" if a.measure else "static t1"
                print(f"### {name}{f' batch {a.batch}' if a.batch != 1 else ''}, {'NCHW' if not block else f'NCHW{block}c'}, {a.cores} cores, T={a.threads}, {how}"
                      + (f", set {' '.join(a.set)}" if a.set else "") + "\n")
                print("\n".join(report(rows, a.threads, a.fork_us, a.top)) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
