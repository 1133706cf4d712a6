"""Static parallelism of a model's CPU kernels: how well each would use T threads.

    PYTHONPATH=. python tools/cpu_parallelism.py zoo:resnet50 [--threads 16 2] [--top 40]
    PYTHONPATH=. python tools/cpu_parallelism.py zoo:resnet50:batch=32 --mcpu sapphirerapids
    PYTHONPATH=. python tools/cpu_parallelism.py /tmp/mobilenet_v2.onnx

In: a zoo spec or an ONNX file.  Every distinct kernel of the all-CPU build is
scheduled by hetpart's CPU rules (:func:`hetpart.kernels.schedule_primfunc`) for this
CPU's ISA, or ``--mcpu``'s (``sapphirerapids``: the GPU machine's AVX-512 Xeon; built
here, not run), with ``--cores`` cores in the target (default 16: the Xeon's; a rule may
read the core count, e.g. the squeeze-excite gate's parallel threshold, the AVX-512
tile's rows) and its TIR walked: each loop nest under the root is *work* (block
executions: the product of the loop extents around every block, a vectorised loop
counted by its lanes -- for a convolution its multiply-accumulates, for a copy its
elements; a weight's packing, done once at compile time, is not counted) and either
*parallel* (under a ``parallel`` loop of extent E) or *serial*.

Out (markdown), per kernel: its register tile (rows x vectors x lanes, where the conv or
matmul rule tiled it), the parallel extent E of its main (largest) nest, the work per
iteration and per thread, the *balance* at T threads (TVM gives each thread a contiguous
``ceil(E/T)`` of the E iterations: the busiest thread over the mean), the share of its
work that is serial, and its *efficiency* at T threads -- the ideal time (work / T) over
the modelled time ``serial + parallel * ceil(E / T) / E`` -- and, over the model, the
work-weighted efficiency, the parallel regions per inference and how many of them give a
thread under :data:`SMALL_REGION` of work.  A kernel on one thread (E = 1) at 16 threads
is at 1/16.  The model ignores the pool's fork/join cost (``tools/cpu_fork_join.py``
measures it), memory bandwidth and caches, and weighs an element of an element-wise pass
like a vectorised MAC: a kernel with E = 448 and no serial part can still scale badly; one
with E = 7 cannot scale well.  Issue 18 (bench/results/cpu-r50-threads-analysis.md).
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


@dataclass
class Nest:
    """One loop nest under the root: its work, the parallel loop's extent (0: serial), and
    ``forks``: how many times a parallel region is entered per call (the product of the serial
    loops above each parallel loop, summed: a parallel loop per image under a serial batch
    loop of 8 forks 8 times; 0 for a serial nest)."""

    work: int
    extent: int
    forks: int = 1


@dataclass
class KernelParallelism:
    name: str
    rule: str
    nests: list[Nest] = field(default_factory=list)
    tile: str = "-"  # the register tile, rows x vectors x lanes (:func:`recording_tiles`)

    @property
    def work(self) -> int:
        return sum(n.work for n in self.nests)

    @property
    def main_extent(self) -> int:
        """The parallel extent of the largest nest (1 when it is serial)."""
        big = max(self.nests, key=lambda n: n.work) if self.nests else Nest(0, 0)
        return big.extent or 1

    @property
    def serial_share(self) -> float:
        return sum(n.work for n in self.nests if not n.extent) / max(1, self.work)

    def efficiency(self, threads: int) -> float:
        """ideal time / modelled time at ``threads`` (module docstring)."""
        modelled = sum(n.work if not n.extent else n.work * math.ceil(n.extent / threads) / n.extent
                       for n in self.nests)
        return (self.work / threads) / modelled if modelled else 1.0


def nests_of(func) -> list[Nest]:
    """The loop nests of a scheduled PrimFunc (see the module docstring)."""
    from tvm import s_tir, tirx

    from hetpart.kernels.register_tile import LAYOUT_REWRITE_PREPROC as PREPACK

    def extent(loop) -> int:
        e = loop.extent
        return int(e.value) if isinstance(e, tirx.IntImm) else 1

    def walk(stmt, mult: int, par: int, out: list, serial: int = 1) -> None:
        if isinstance(stmt, tirx.For):
            if stmt.kind == tirx.ForKind.PARALLEL and not par:
                par = extent(stmt)
                forks.append(serial)
            walk(stmt.body, mult * extent(stmt), par, out, serial if par else serial * extent(stmt))
        elif isinstance(stmt, s_tir.SBlockRealize):
            blk = stmt.block
            if PREPACK in blk.annotations:
                return  # a weight packed once at compile time (weight_prepack)
            if blk.body is not None and not _has_loops(blk.body):
                out.append(Nest(mult, par))
            if blk.init is not None:
                walk(blk.init, mult, par, out, serial)
            walk(blk.body, mult, par, out, serial)
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                walk(s, mult, par, out, serial)
        elif isinstance(stmt, tirx.IfThenElse):
            walk(stmt.then_case, mult, par, out, serial)
            if stmt.else_case is not None:
                walk(stmt.else_case, mult, par, out, serial)
        elif hasattr(stmt, "body") and stmt.body is not None:
            walk(stmt.body, mult, par, out, serial)

    def _has_loops(stmt) -> bool:
        return any(isinstance(s, (tirx.For, s_tir.SBlockRealize)) for s in _children(stmt))

    def _children(stmt):
        if isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                yield s
                yield from _children(s)
        elif isinstance(stmt, (tirx.For, s_tir.SBlockRealize)):
            yield stmt
        elif hasattr(stmt, "body") and stmt.body is not None:
            yield from _children(stmt.body)

    leaves: list[Nest] = []
    root = func.body
    tops = root.block.body if isinstance(root, s_tir.SBlockRealize) else root
    tops = tops.seq if isinstance(tops, tirx.SeqStmt) else [tops]
    nests = []
    for top in tops:
        leaves = []
        forks: list[int] = []
        walk(top, 1, 0, leaves)
        if leaves:
            # One nest per top-level statement: its work the sum of its blocks'.
            ext = max(n.extent for n in leaves)
            nests.append(Nest(sum(n.work for n in leaves), ext, sum(forks) if ext else 0))
    return nests


def target_for(cores: int, mcpu: str | None = None):
    """The LLVM target the rules schedule for: this machine's CPU, or ``mcpu`` (e.g.
    ``sapphirerapids``: the GPU machine's AVX-512 Xeon; built, not run), ``cores`` cores."""
    import tvm

    from hetpart.targets import cpu_tvm_target, host_triple

    if not mcpu:
        return cpu_tvm_target(cores)
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": int(cores)})


def analyse(model, cores: int = 16, mcpu: str | None = None,
            conv_block: int | None = None) -> list[tuple[KernelParallelism, int]]:
    """``(kernel, occurrences)`` for every distinct kernel of ``model``'s all-CPU build,
    scheduled for :func:`target_for` ``(cores, mcpu)``; ``conv_block``: the channel-blocked
    import (``load(model, conv_block=c)``, NCHW{c}c), else the default NCHW one."""
    from hetpart import load

    return analyse_graph(load(model, conv_block=conv_block) if conv_block else load(model), cores, mcpu)


def analyse_graph(graph, cores: int = 16, mcpu: str | None = None) -> list[tuple[KernelParallelism, int]]:
    """:func:`analyse` of an imported model (an :class:`~hetpart.importer.op_graph.OpGraph`)."""
    import tvm

    from hetpart import kernels
    from hetpart.kernels import weight_prepack

    target = target_for(cores, mcpu)
    counts: dict[str, int] = {}
    for k in graph.kernels.values():
        counts[k.func] = counts.get(k.func, 0) + 1
    out = []
    with recording_tiles() as tiles:
        for gv, func in weight_prepack.mark_weights(graph.module).functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or gv.name_hint not in counts:
                continue
            tiles.clear()
            done = kernels.schedule_primfunc(func, target)
            rule = kernels.rules_applied(tvm.IRModule({gv.name_hint: done})).get(gv.name_hint, "-")
            kp = KernelParallelism(gv.name_hint, rule, nests_of(done), tiles[-1] if tiles else "-")
            out.append((kp, counts[gv.name_hint]))
    return out


@contextmanager
def recording_tiles():
    """A list that, while open, receives ``"RxVxL"`` (rows x vectors x lanes) for every
    register tile the conv and matmul rules apply (:func:`hetpart.kernels.register_tile.register_tile`)."""
    from hetpart.kernels.rules import cpu_conv2d, cpu_matmul

    seen: list[str] = []
    original = cpu_conv2d.register_tile

    def record(sch, mac, plan, shape, **kw):
        seen.append(f"{plan.rows}x{plan.vecs}x{plan.lanes}")
        return original(sch, mac, plan, shape, **kw)

    cpu_conv2d.register_tile = cpu_matmul.register_tile = record
    try:
        yield seen
    finally:
        cpu_conv2d.register_tile = cpu_matmul.register_tile = original


SMALL_REGION = 64 << 10
"""Block executions a thread runs in one parallel region below which the region is
*small* in :func:`report` (64 Ki vectorised MACs: ~5-10 us a thread, the order of a
thread pool's fork and join)."""


def balance(extent: int, threads: int) -> float:
    """Max iterations a thread runs over the mean: ``ceil(E/T) / (E/T)`` (1.0: even)."""
    return math.ceil(extent / threads) * threads / extent if extent > 0 else float(threads)


def report(rows: list[tuple[KernelParallelism, int]], threads: list[int], top: int) -> list[str]:
    """Markdown lines: the model's totals at each thread count, then the ``top`` kernels
    by the share of the model's modelled time at ``threads[0]`` they add over the ideal.

    Per kernel: its register tile (rows x vectors x lanes), occurrences, work (M block
    executions: a conv's MACs), its share, the main nest's parallel extent E, work per
    parallel iteration and per thread at ``threads[0]`` (K), balance at each T
    (:func:`balance`), serial share, efficiency at each T, and the loss at ``threads[0]``
    (ties, a loss under 0.01%, by work).
    """
    total = sum(k.work * n for k, n in rows)
    regions = sum(n * sum(1 for x in k.nests if x.extent) for k, n in rows)
    serial = sum(n * sum(1 for x in k.nests if not x.extent) for k, n in rows)
    out = [f"{len(rows)} distinct kernels, {total / 1e6:.1f} M block executions; per inference "
           f"{regions} parallel regions, {serial} serial nests", ""]
    for t in threads:
        modelled = sum(k.work * n / t / k.efficiency(t) for k, n in rows)
        small = [(x, n) for k, n in rows for x in k.nests if x.extent and x.work * math.ceil(x.extent / t) / x.extent
                 < SMALL_REGION]
        out.append(f"* model efficiency at {t} threads: {total / t / modelled:.3f}; "
                   f"{sum(n for _, n in small)} parallel regions with under {SMALL_REGION // 1024} K block "
                   f"executions a thread ({sum(x.work * n for x, n in small) / total:.2%} of the work)")
    t0 = threads[0]
    modelled0 = sum(k.work * n / t0 / k.efficiency(t0) for k, n in rows)
    out += ["", "| kernel | rule | tile | x | Mwork | share | E | Kwork/iter | "
            + f"Kwork/thread@{threads[0]} | "
            + " | ".join(f"bal@{t}" for t in threads) + " | serial | "
            + " | ".join(f"eff@{t}" for t in threads) + f" | lost@{t0} |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|" + "--:|" * (2 * len(threads) + 2)]
    lost = lambda k, n: k.work * n / t0 * (1 / k.efficiency(t0) - 1) / modelled0  # noqa: E731
    for k, n in sorted(rows, key=lambda r: (-round(lost(*r), 4), -r[0].work * r[1]))[:top]:
        e = k.main_extent
        big = max(k.nests, key=lambda x: x.work).work if k.nests else 0
        out.append(f"| {k.name[:48]} | {k.rule[:16]} | {k.tile} | {n} | {k.work / 1e6:.2f} | {k.work * n / total:.1%} | {e} | "
                   f"{big / e / 1e3:.1f} | {big * math.ceil(e / t0) / e / 1e3:.0f} | " + " | ".join(f"{balance(e, t):.2f}" for t in threads)
                   + f" | {k.serial_share:.1%} | " + " | ".join(f"{k.efficiency(t):.2f}" for t in threads)
                   + f" | {lost(k, n):.1%} |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a zoo spec (zoo:resnet50) or an .onnx file")
    p.add_argument("--threads", type=int, nargs="+", default=[16, 2])
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--cores", type=int, default=16, help="num-cores of the target the rules schedule for")
    p.add_argument("--conv-block", type=int, default=None, help="the channel-blocked import, NCHW{c}c")
    p.add_argument("--mcpu", default=None,
                   help="schedule for this LLVM CPU (sapphirerapids: the GPU machine's AVX-512 Xeon), not the host's")
    args = p.parse_args(argv)
    from hetpart.importer.onnx_source import read_source

    rows = analyse(read_source(args.model).model, args.cores, args.mcpu, args.conv_block)
    print(f"### {args.model}, scheduled for {args.mcpu or 'the host CPU'} with {args.cores} cores\n")
    print("\n".join(report(rows, args.threads, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
