"""Static parallelism of a model's CPU kernels: how well each would use T threads.

    PYTHONPATH=. python tools/cpu_parallelism.py zoo:resnet50 [--threads 16 2] [--top 40]
    PYTHONPATH=. python tools/cpu_parallelism.py /tmp/mobilenet_v2.onnx

In: a zoo spec or an ONNX file.  Every distinct kernel of the all-CPU build is
scheduled by hetpart's CPU rules (:func:`hetpart.kernels.schedule`) for this CPU's ISA
with ``--cores`` cores in the target (default 16: the GPU machine's Xeon, whose
AVX-512 gives the same vector width; a rule may read the core count, e.g. the
squeeze-excite gate's parallel threshold) and its
TIR walked: each loop nest under the root is *work* (block executions: the product
of the loop extents around every block, a vectorised loop counted by its lanes --
for a convolution its multiply-accumulates, for a copy its elements; a weight's
packing, done once at compile time, is not counted) and either
*parallel* (under a ``parallel`` loop of extent E) or *serial*.

Out, per kernel: the parallel extent E of its main (largest) nest, the share of its
work that is serial, and its *efficiency* at T threads -- the ideal time (work / T)
over the modelled time ``serial + parallel * ceil(E / T) / E`` (each thread runs
``ceil(E/T)`` of the E equal iterations; the rest wait) -- and, over the model, the
work-weighted efficiency.  A kernel on one thread (E = 1) at 16 threads is at 1/16.
The model ignores the pool's fork/join cost, memory bandwidth and caches: a kernel
with E = 448 and no serial part can still scale badly; one with E = 7 cannot scale
well.  Without a device: issue 18 (bench/results/cpu-convnets-2core.md).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


@dataclass
class Nest:
    """One loop nest under the root: its work, and the parallel loop's extent (0: serial)."""

    work: int
    extent: int


@dataclass
class KernelParallelism:
    name: str
    rule: str
    nests: list[Nest] = field(default_factory=list)

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

    def walk(stmt, mult: int, par: int, out: list) -> None:
        if isinstance(stmt, tirx.For):
            if stmt.kind == tirx.ForKind.PARALLEL and not par:
                par = extent(stmt)
            walk(stmt.body, mult * extent(stmt), par, out)
        elif isinstance(stmt, s_tir.SBlockRealize):
            blk = stmt.block
            if PREPACK in blk.annotations:
                return  # a weight packed once at compile time (weight_prepack)
            if blk.body is not None and not _has_loops(blk.body):
                out.append(Nest(mult, par))
            if blk.init is not None:
                walk(blk.init, mult, par, out)
            walk(blk.body, mult, par, out)
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                walk(s, mult, par, out)
        elif isinstance(stmt, tirx.IfThenElse):
            walk(stmt.then_case, mult, par, out)
            if stmt.else_case is not None:
                walk(stmt.else_case, mult, par, out)
        elif hasattr(stmt, "body") and stmt.body is not None:
            walk(stmt.body, mult, par, out)

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
        walk(top, 1, 0, leaves)
        if leaves:
            # One nest per top-level statement: its work the sum of its blocks'.
            nests.append(Nest(sum(n.work for n in leaves), max(n.extent for n in leaves)))
    return nests


def analyse(model, cores: int = 16) -> list[tuple[KernelParallelism, int]]:
    """``(kernel, occurrences)`` for every distinct kernel of ``model``'s all-CPU build."""
    import tvm

    from hetpart import kernels, load
    from hetpart.kernels import weight_prepack
    from hetpart.targets import cpu_tvm_target

    graph = load(model)
    target = cpu_tvm_target(cores)
    mod = kernels.schedule(weight_prepack.mark_weights(graph.module), target)
    rules = kernels.rules_applied(mod)
    counts: dict[str, int] = {}
    for k in graph.kernels.values():
        counts[k.func] = counts.get(k.func, 0) + 1
    out = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or gv.name_hint not in counts:
            continue
        kp = KernelParallelism(gv.name_hint, rules.get(gv.name_hint, "-"), nests_of(func))
        out.append((kp, counts[gv.name_hint]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a zoo spec (zoo:resnet50) or an .onnx file")
    p.add_argument("--threads", type=int, nargs="+", default=[16, 2])
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--cores", type=int, default=16, help="num-cores of the target the rules schedule for")
    args = p.parse_args(argv)
    from hetpart.importer.onnx_source import read_source

    rows = analyse(read_source(args.model).model, args.cores)
    total = sum(k.work * n for k, n in rows)
    ts = args.threads
    print(f"{args.model}: {len(rows)} distinct kernels, {total / 1e6:.1f} M block executions"
          f" (scheduled for {args.cores} cores)")
    for t in ts:
        ideal = total / t
        modelled = sum(k.work * n / t / k.efficiency(t) for k, n in rows)
        print(f"  model efficiency at {t:>2} threads: {ideal / modelled:.3f}")
    head = f"  {'kernel':<46}{'rule':<14}{'x':>3}{'Mwork':>8}{'share':>7}{'E':>6}{'serial':>8}"
    print(head + "".join(f"{'eff@' + str(t):>8}" for t in ts) + f"{'lost@' + str(ts[0]):>9}")
    # "lost": the share of the whole model's modelled time at ts[0] threads this kernel
    # adds over its ideal (work / T).
    t0 = ts[0]
    modelled0 = sum(k.work * n / t0 / k.efficiency(t0) for k, n in rows)
    order = sorted(rows, key=lambda r: -(r[0].work * r[1] / t0) * (1 / r[0].efficiency(t0) - 1))
    for k, n in order[: args.top]:
        lost = k.work * n / t0 * (1 / k.efficiency(t0) - 1) / modelled0
        print(f"  {k.name[:45]:<46}{k.rule[:13]:<14}{n:>3}{k.work / 1e6:8.2f}{k.work * n / total:7.1%}"
              f"{k.main_extent:>6}{k.serial_share:8.1%}" + "".join(f"{k.efficiency(t):8.2f}" for t in ts)
              + f"{lost:9.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
