"""Per-kernel CPU times of a model: hetpart's kernels against ONNX Runtime's nodes.

In: an ONNX model, its feeds and a thread count.  Out: :class:`KernelTable`, the
median time of each hetpart kernel call in one all-CPU run (the op graph's fused
module built by :func:`hetpart.kernels.build`, as the compiler builds a CPU
partition, run by a Relax VM whose instrument times every call; the run happens on a
thread whose TVM pool has ``threads`` threads) and of each ONNX Runtime node (its own
profiler, ``SessionOptions.enable_profiling``, ``intra_op_num_threads = threads``).

The VM's own instructions (``vm.builtin.*``: allocations, shape checks, tuples) are
summed into one line: with the kernels' sum, they say how much of a run is not in
any kernel.  The instrument's Python callback adds about a microsecond to every call,
so small calls read a little high.

Run alone for any model: ``python -m hetpart.bench.kernel_table zoo:resnet50 --threads 8 16``
(one table per thread count, to see which kernels stop scaling).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from .settle import settle


@dataclass(frozen=True)
class KernelTable:
    """``hetpart``/``ort``: (name, median microseconds) per kernel or node, largest first;
    ``builtin_us``: the VM's own instructions per run; ``threads``: both sides' pool."""

    threads: int
    hetpart: list[tuple[str, float]]
    builtin_us: float
    builtin_calls: int
    ort: list[tuple[str, float]]
    settle_ms: tuple[float, float] = (0.0, 0.0)  # waits before hetpart's runs and before ORT's

    def render(self) -> str:
        lines = [f"per-kernel medians, {self.threads} thread(s)",
                 f"  {'hetpart kernel':<64}{'us':>9}     {'ONNX Runtime node':<40}{'us':>9}"]
        for i in range(max(len(self.hetpart), len(self.ort))):
            h = self.hetpart[i] if i < len(self.hetpart) else ("", None)
            o = self.ort[i] if i < len(self.ort) else ("", None)
            hs = f"{h[1]:9.1f}" if h[1] is not None else " " * 9
            os_ = f"{o[1]:9.1f}" if o[1] is not None else " " * 9
            lines.append(f"  {h[0][:63]:<64}{hs}     {o[0][:39]:<40}{os_}")
        lines.append(f"  {'sum of kernels':<64}{sum(t for _, t in self.hetpart):9.1f}     "
                     f"{'sum of nodes':<40}{sum(t for _, t in self.ort):9.1f}")
        lines.append(f"  {f'VM instructions ({self.builtin_calls} calls)':<64}{self.builtin_us:9.1f}")
        lines.append(f"  settled {self.settle_ms[0]:.0f} ms before hetpart's runs, {self.settle_ms[1]:.0f} ms before "
                     "ORT's (the other threads quiet: hetpart.bench.settle)")
        return "\n".join(lines)


def measure(model, feeds: dict, threads: int, runs: int = 20) -> KernelTable:
    """Both sides' per-kernel medians over ``runs`` runs (after one warm-up run each), each
    side started once the process's other threads are quiet (:func:`.settle.settle`: an
    earlier ORT session's workers spin on after its runs, TVM's pool workers after hetpart's)."""
    before_hetpart = settle().waited_s
    calls, builtin_us, builtin_calls = _hetpart_calls(model, feeds, threads, runs)
    before_ort = settle().waited_s
    return KernelTable(threads, calls, builtin_us, builtin_calls, _ort_nodes(model, feeds, threads, runs),
                       (before_hetpart * 1e3, before_ort * 1e3))


def _hetpart_calls(model, feeds: dict, threads: int, runs: int):
    import tvm
    from tvm import relax

    from .. import kernels, load
    from ..runtime.threads import call_leased
    from ..targets import cpu_tvm_target

    graph = load(model)
    executable = kernels.build(graph.module, cpu_tvm_target())
    args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]
    samples: dict[str, list[float]] = collections.defaultdict(list)

    def body():
        vm = relax.VirtualMachine(executable, tvm.cpu())
        vm["main"](*args)  # warm-up, uninstrumented
        for run in call_times(vm, args, runs):
            for name, us in numbered(run):
                samples[name].append(us)

    call_leased("kernel table", body, pool=threads, role="cpu")
    medians = {name: float(np.median(v)) for name, v in samples.items()}
    builtins = {n: t for n, t in medians.items() if n.startswith("vm.builtin.")}
    kernel_rows = sorted(((n, t) for n, t in medians.items() if n not in builtins), key=lambda r: -r[1])
    return kernel_rows, sum(builtins.values()), len(builtins)


def call_times(vm, args, runs: int, clock=time.perf_counter) -> list[list[tuple[str, float]]]:
    """Per run of ``vm["main"](*args)`` (``runs`` of them), ``(symbol, microseconds)`` of every
    call the VM makes (kernels and ``vm.builtin.*`` instructions), in call order, timed by
    ``clock`` through the VM's instrument (left set on ``vm``): ``time.perf_counter`` for wall
    time, ``time.thread_time`` for the calling thread's CPU time on a shared machine."""
    started: dict[str, float] = {}
    run: list[tuple[str, float]] = []

    def instrument(func, symbol, before, ret, *call_args):
        if before:
            started[symbol] = clock()
        else:
            run.append((symbol, (clock() - started[symbol]) * 1e6))
        return 0

    vm.set_instrument(instrument)
    runs_out = []
    for _ in range(runs):
        run = []
        vm["main"](*args)
        runs_out.append(run)
    return runs_out


def kernel_seconds(run: list[tuple[str, float]]) -> dict[str, float]:
    """One run of :func:`call_times` summed per kernel function, in seconds (a kernel whose
    weights the build packed, ``NAME_prepacked``, under ``NAME``; VM builtins under their own)."""
    out: dict[str, float] = collections.defaultdict(float)
    for symbol, us in run:
        out[symbol.removesuffix("_prepacked")] += us * 1e-6
    return dict(out)


def least_kernel_seconds(vm, args, runs: int, clock=time.perf_counter) -> dict[str, float]:
    """Kernel function -> the least over ``runs`` whole runs of its summed seconds
    (:func:`kernel_seconds`): what each kernel costs inside the model, caches as it leaves them."""
    best: dict[str, float] = {}
    for run in call_times(vm, args, runs, clock=clock):
        for func, t in kernel_seconds(run).items():
            best[func] = min(best.get(func, t), t)
    return best


def numbered(run: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """``run``'s calls named as the table names them: a symbol's first call by the symbol, its
    n-th by ``"symbol #n"`` (a kernel called twice in one run, e.g. once per layer)."""
    seen: collections.Counter = collections.Counter()
    out = []
    for symbol, us in run:
        seen[symbol] += 1
        out.append((symbol if seen[symbol] == 1 else f"{symbol} #{seen[symbol]}", us))
    return out


def _ort_nodes(model, feeds: dict, threads: int, runs: int) -> list[tuple[str, float]]:
    from .peers import ort_session

    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(model, threads=threads, profile_prefix=os.path.join(tmp, "ort"))
        session.run(None, feeds)  # warm-up
        for _ in range(runs):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    samples: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            samples[f"{e['args'].get('op_name', '?')} {e['name'][:-len('_kernel_time')]}"].append(e["dur"])
    # the first record of each node is the warm-up run's
    return sorted(((n, float(np.median(v[1:] or v))) for n, v in samples.items()), key=lambda r: -r[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a zoo spec (zoo:resnet50) or an ONNX file with static input shapes")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts, one table each (default: hetpart's pool)")
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args(argv)
    import onnx

    from .. import models
    from ..cpu_cores import pool_size

    zoo = models.parse_zoo_spec(args.model)
    model = models.build(zoo[0], small=zoo[1], **zoo[2]) if zoo else onnx.load(args.model)
    feeds = models.example_inputs(model, seed=0)
    for threads in args.threads or [pool_size()]:
        print(measure(model, feeds, threads, args.runs).render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
