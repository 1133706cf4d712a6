"""Where an all-CPU run's time goes: the whole model against the sum of its kernels alone.

Usage::

    PYTHONPATH=. python3 bench/cpu_gap.py zoo:bert [--out cpu_gap.json] [--rounds 5]
        [--no-profile] [--no-cold]

In: a model spec (``zoo:bert``, ``zoo:bert:layers=2``, an ONNX path).  Out: a JSON
report (``--out``) and a table on stdout, last.  The model is compiled all-CPU (one
partition) and timed as

* ``session``: ``hetpart.Session.run`` (what ``partition bench`` reports as all-CPU);
* ``vm``: the partition's Relax VM ``main`` called directly;
* ``in_situ``: the sum of every kernel call's time inside a VM run (VM
  instrumentation; what each kernel costs where it really runs);
* ``alone_real``: each kernel call of the compiled model run again by itself, on the
  very arguments it had in the model (weights and activations), caches warm;
* ``alone_random``: the same functions on the cost model's random inputs (floats
  uniform in [0.1, 1)), caches warm -- data-dependent kernels show up as
  ``alone_random`` != ``alone_real``;
* ``alone_cold``: as ``alone_real``, but with the last-level cache flushed before
  each call and only the kernel's activations touched again: the weights come from
  DRAM, as they do in a batch-1 run (the part of the gap caching explains);
* ``profile``: the sum over kernels of the cost model's own microbenchmarks
  (:func:`hetpart.costmodel.profile` into a scratch file; separate single-kernel builds).

Every figure is the minimum over ``--rounds`` interleaved rounds (other load on the
machine only ever adds time).  Invariant: the sums cover the same kernel calls, in the
order the VM makes them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

FLUSH_FACTOR = 2  # flush buffer = FLUSH_FACTOR x the last-level cache


@dataclass
class Call:
    """One kernel call made by the VM in a run: its function, a copy of its arguments,
    and which argument positions are model constants (weights)."""

    symbol: str
    func: object
    args: list  # numpy copies, in the PrimFunc's parameter order
    constant: set = field(default_factory=set)


# --- building -------------------------------------------------------------------------
def all_cpu_compiled(spec: str):
    """(op graph, compiled all-CPU model with one partition) for ``spec``."""
    import hetpart
    from hetpart.partitioner import Partition, Plan

    graph = hetpart.load(spec)
    order = list(graph.topological_order())
    plan = Plan(model=graph.name, objective="all_cpu", assignment={k: "cpu" for k in order},
                partitions=[Partition("p0_cpu", "cpu", order)], cuts=[], timeline=[], predicted={},
                profile_origin="cpu_gap", graph=graph)
    return graph, hetpart.compile(plan, graph, progress=False)


def constant_positions(graph) -> list[tuple[str, set[int]]]:
    """Per kernel in binding order: (PrimFunc name, argument positions that are constants)."""
    import tvm

    from hetpart.costmodel.kernel_bench import _binding_of, _flat_args

    out = []
    for kernel in sorted(graph.nodes, key=lambda k: k.index):
        args, _ = _flat_args(_binding_of(graph, kernel).value)
        out.append((kernel.func, {i for i, a in enumerate(args) if isinstance(a, tvm.ir.GenericConst)}))
    return out


# --- timing -----------------------------------------------------------------------------
def best_of(fn, rounds: int) -> float:
    """Minimum seconds of ``fn()`` over ``rounds`` calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def faults_per_run(fn, rounds: int) -> float:
    """Minor page faults of the process per steady-state call of ``fn`` (fresh pages a
    run touches, e.g. buffers allocated per run through mmap); after one warm-up."""
    import resource

    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds


def all_cpu_pool_variant(fn, rounds: int) -> dict:
    """``{"vm_all_cpus_s", "all_cpus_threads"}``: ``fn`` timed with this thread's TVM pool
    sized to every CPU, when TVM's default pool (half the logical CPUs on x86) is
    smaller; {} otherwise.  The pool is put back to its old size afterwards."""
    import tvm

    from hetpart.runtime.threads import configure_current_pool

    default, cpus = int(tvm.runtime.num_threads()), len(os.sched_getaffinity(0))
    if default >= cpus:
        return {}
    try:
        got = configure_current_pool(cpus)
        return {"vm_all_cpus_s": best_of(fn, rounds), "all_cpus_threads": got}
    finally:
        configure_current_pool(default)


def capture_calls(vm, main, args, graph) -> list[Call]:
    """Run ``main(*args)`` once under VM instrumentation, copying every PrimFunc call's
    arguments; returns the calls in order (VM builtins such as allocations excluded)."""
    import tvm_ffi

    prims = {k.func for k in graph.nodes}
    calls: list[Call] = []

    def instrument(func, symbol, before, ret, *a):
        if before and symbol in prims:
            calls.append(Call(symbol, func, [x.numpy() for x in a]))
        return 0

    vm.set_instrument(tvm_ffi.convert(instrument))
    try:
        main(*args)
    finally:
        vm.set_instrument(tvm_ffi.convert(lambda *a: 0))
    positions = iter(constant_positions(graph))
    for call in calls:
        func, consts = next(positions, (None, set()))
        call.constant = consts if func == call.symbol else set()
    return calls


def in_situ_times(vm, main, args, rounds: int) -> tuple[dict[str, float], float]:
    """(per-symbol seconds of the fastest run, VM overhead outside kernels of that run)
    from instrumented VM runs; builtins (allocation etc.) appear under their own names."""
    import tvm_ffi

    best_total, best = float("inf"), {}
    for _ in range(rounds):
        spans: dict[str, float] = collections.defaultdict(float)
        state = {}

        def instrument(func, symbol, before, ret, *a):
            now = time.perf_counter()
            if before:
                state["t"] = now
            else:
                spans[symbol] += now - state["t"]
            return 0

        vm.set_instrument(tvm_ffi.convert(instrument))
        t = time.perf_counter()
        main(*args)
        total = time.perf_counter() - t
        vm.set_instrument(tvm_ffi.convert(lambda *a: 0))
        if total < best_total:
            best_total, best = total, dict(spans)
    return best, best_total - sum(best.values())


def llc_bytes() -> int:
    """The last-level cache's size in bytes (sysfs), 256 MiB when unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in os.listdir(base):
            with open(f"{base}/{idx}/size") as f:
                text = f.read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)
            best = max(best, int(text.rstrip("KM")) * mult)
    except OSError:
        pass
    return best or 256 << 20


class Flusher:
    """Evicts the caches by writing a buffer of FLUSH_FACTOR x the LLC."""

    def __init__(self):
        self.buf = np.ones(FLUSH_FACTOR * llc_bytes() // 8, dtype=np.float64)

    def __call__(self) -> None:
        self.buf += 1.0


def alone_times(calls: list[Call], dev, rounds: int, data: str, flush: Flusher | None = None) -> list[float]:
    """Seconds per call of each captured call run alone.  ``data``: ``"real"`` (its own
    arguments) or ``"random"`` (floats uniform in [0.1, 1), integers kept).  With
    ``flush``, the caches are flushed before each timed call and the non-constant
    arguments read back in (weights cold, activations warm); one call per distinct
    function is timed then and reused for its other calls."""
    import tvm

    rng = np.random.default_rng(0)
    out, cold_cache = [], {}
    for call in calls:
        if flush is not None and call.symbol in cold_cache:
            out.append(cold_cache[call.symbol])
            continue
        arrays = call.args if data == "real" else [_randomised(a, rng) for a in call.args]
        tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
        if flush is None:
            out.append(best_of(lambda: call.func(*tensors), rounds))
            continue
        warm = [a for i, a in enumerate(arrays) if i not in call.constant]
        best = float("inf")
        for _ in range(rounds):
            flush()
            with np.errstate(all="ignore"):  # output buffers hold garbage: inf/NaN sums are fine
                for a in warm:
                    a.sum()  # bring activations back: in the model they were just written
            t = time.perf_counter()
            call.func(*tensors)
            best = min(best, time.perf_counter() - t)
        cold_cache[call.symbol] = best
        out.append(best)
    return out


def _randomised(a: np.ndarray, rng) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating):
        return rng.uniform(0.1, 1.0, size=a.shape).astype(a.dtype)
    return a


def profile_sum(graph) -> float:
    """Sum over the graph's kernels of the cost model's microbenchmark medians (seconds)."""
    from hetpart.costmodel import profile
    from hetpart.costmodel.kernel_bench import MeasureSettings

    with tempfile.TemporaryDirectory() as d:
        prof = profile(graph, ("cpu",), os.path.join(d, "p.json"), settings=MeasureSettings.quick(), progress=False)
        recs = prof.kernels["cpu"]
        return sum(recs[k.signature].timing.median_s for k in graph.nodes if recs[k.signature].timing)


# --- the report ---------------------------------------------------------------------------
def measure(spec: str, rounds: int, with_profile: bool, with_cold: bool) -> dict:
    """Every figure of the module docstring for ``spec``, in seconds."""
    import tvm
    from tvm import relax

    import hetpart

    t0 = time.perf_counter()
    graph, compiled = all_cpu_compiled(spec)
    art = compiled.partitions[0]
    report: dict = {"model": spec, "kernels": len(graph.nodes), "tvm_threads": int(tvm.runtime.num_threads()),
                    "cpu_count": os.cpu_count(), "compile_s": time.perf_counter() - t0}
    from hetpart.runtime import random_feeds

    feeds = random_feeds(compiled.inputs)
    dev = tvm.cpu(0)
    vm = relax.VirtualMachine(art.module, dev)
    main = vm[art.function]
    args = [tvm.runtime.tensor(feeds[t.name], dev) for t in art.inputs]
    calls = capture_calls(vm, main, args, graph)
    report["calls"] = len(calls)
    report["calls_with_weights"] = sum(bool(c.constant) for c in calls)
    session = hetpart.Session(compiled)
    try:
        report["session_s"] = best_of(lambda: session.run(feeds), rounds)
        report["session_faults_per_run"] = faults_per_run(lambda: session.run(feeds), rounds)
    finally:
        session.close()
    report["vm_s"] = best_of(lambda: main(*args), rounds)
    report["vm_faults_per_run"] = faults_per_run(lambda: main(*args), rounds)
    report.update(all_cpu_pool_variant(lambda: main(*args), rounds))
    spans, vm_overhead = in_situ_times(vm, main, args, rounds)
    prims = {c.symbol for c in calls}
    report["in_situ_s"] = sum(v for k, v in spans.items() if k in prims)
    report["in_situ_builtins_s"] = sum(v for k, v in spans.items() if k not in prims)
    report["in_situ_vm_overhead_s"] = vm_overhead
    real = alone_times(calls, dev, rounds, "real")
    rand = alone_times(calls, dev, rounds, "random")
    report["alone_real_s"], report["alone_random_s"] = sum(real), sum(rand)
    if with_cold:
        report["alone_cold_s"] = sum(alone_times(calls, dev, max(rounds // 2, 2), "real", Flusher()))
        report["llc_bytes"] = llc_bytes()
    if with_profile:
        report["profile_s"] = profile_sum(graph)
    report["per_function"] = per_function(calls, spans, real, rand)
    report["total_s"] = time.perf_counter() - t0
    return report


def per_function(calls: list[Call], spans: dict, real: list[float], rand: list[float]) -> list[dict]:
    """Per PrimFunc: calls, in-situ, alone-real and alone-random seconds (largest first)."""
    rows: dict[str, dict] = {}
    for call, r, q in zip(calls, real, rand):
        row = rows.setdefault(call.symbol, {"function": call.symbol, "calls": 0, "in_situ_s": spans.get(call.symbol, 0.0),
                                            "alone_real_s": 0.0, "alone_random_s": 0.0})
        row["calls"] += 1
        row["alone_real_s"] += r
        row["alone_random_s"] += q
    return sorted(rows.values(), key=lambda r: -r["in_situ_s"])


def table(report: dict, top: int = 8) -> str:
    """The compact table printed last."""
    ms = lambda s: f"{s * 1e3:9.2f}"  # noqa: E731
    base = report["alone_real_s"]
    lines = [f"{report['model']}: {report['kernels']} kernels, TVM threads {report['tvm_threads']} "
             f"of {report['cpu_count']} CPUs", f"{'figure':<34}{'ms':>9}  {'x alone_real':>12}"]
    for key, label in [("session_s", "whole model, hetpart.Session"), ("vm_s", "whole model, VM main"),
                       ("vm_all_cpus_s", f"whole, VM, pool of {report.get('all_cpus_threads')} threads"),
                       ("in_situ_s", "sum of kernels in situ"), ("in_situ_builtins_s", "VM builtins in situ"),
                       ("alone_real_s", "sum alone, real data, warm"), ("alone_random_s", "sum alone, random data, warm"),
                       ("alone_cold_s", "sum alone, real data, LLC flushed"),
                       ("profile_s", "sum alone, cost-model profile")]:
        if key in report:
            lines.append(f"{label:<34}{ms(report[key])}  {report[key] / base:12.2f}")
    lines.append(f"page faults per run: session {report['session_faults_per_run']:.1f}, "
                 f"VM {report['vm_faults_per_run']:.1f}")
    lines.append(f"\n{'function (top by in-situ)':<48}{'calls':>5}{'in situ':>9}{'real':>9}{'random':>9}")
    for row in report["per_function"][:top]:
        lines.append(f"{row['function'][:48]:<48}{row['calls']:>5}{ms(row['in_situ_s'])}"
                     f"{ms(row['alone_real_s'])}{ms(row['alone_random_s'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="model spec, e.g. zoo:bert or zoo:bert:layers=2")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per figure (minimum kept)")
    p.add_argument("--no-profile", action="store_true", help="skip the cost model's microbenchmarks")
    p.add_argument("--no-cold", action="store_true", help="skip the LLC-flushed variant")
    a = p.parse_args(argv)
    report = measure(a.model, a.rounds, not a.no_profile, not a.no_cold)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
