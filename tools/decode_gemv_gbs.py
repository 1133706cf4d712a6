"""Cold-weight GB/s of llama_decode's CPU weight kernels against the weight-read probe (issues 18/19).

    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/decode_gemv_gbs.py --cpu-time            # this box, per core
    PYTHONPATH=. python tools/decode_gemv_gbs.py --json $OUT/gbs.json                      # the 16-core host
    ... --cores 16 --after hetpart.kernels.rules.cpu_matmul.GEMV_PACKED_PARTS=1 \
        --before hetpart.kernels.rules.cpu_matmul.GEMV_PACKED_PARTS=0                      # both sides, in turns

In: a zoo spec (default one full-width decoder layer of ``zoo:llama_decode``, vocab 1000: the
same kernel shapes as the 22-layer model, a minute less of import).  Out: one line per kernel
that holds weights (>= 1 MB) and for the probe's GEMV (:mod:`hetpart.costmodel.weight_read_bench`,
GEMV_K x GEMV_N): its rule, weight MB, the least sweep's seconds per call and GB/s.

Each kernel is built alone as the cost model builds it (:func:`kernel_bench.single_kernel_module`,
weights packed by ``main_transform_params``) and called on distinct weight copies in turn
(at least ``--sweep-mb`` of weights per sweep, as :func:`measure_weight_read` does), so every
call reads its weights from memory; GB/s = weight bytes / seconds per call.  ``--cpu-time``:
the process's CPU time (a shared box, 1 thread), else wall time.  Sweeps: the least of
``--sweeps`` after one unrecorded.  With ``--before``, each kernel is also built with those
switches set and the two builds' sweeps alternate (``--after``: switches set for the 'now'
side).  ``--cores N`` schedules for N cores (the target's ``num-cores``): the 16-core host's
column parts, run here on ``TVM_NUM_THREADS`` threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

DEFAULT_SPEC = "zoo:llama_decode:layers=1,vocab=1000"
MIN_WEIGHT_BYTES = 1 << 20


def weight_kernels(spec: str):
    """``[(kernel, KernelModule)]`` of the distinct kernels of ``spec`` holding >= 1 MB of weights."""
    from hetpart import load, models
    from hetpart.costmodel import kernel_bench

    name, small, cfg = models.parse_zoo_spec(spec)
    graph = load(models.build(name, small, **cfg))
    out, seen = [], set()
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        kmod = kernel_bench.single_kernel_module(graph, k)
        wb = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in kmod.args if a.weight)
        if wb >= MIN_WEIGHT_BYTES and k.signature not in seen and "matmul" in k.ops:
            seen.add(k.signature)
            out.append((k, kmod, wb))
    return out


def probe_module():
    """The probe's GEMV as a :class:`KernelModule` (x input, w weight)."""
    from hetpart.costmodel import kernel_bench, weight_read_bench as wr

    k, n = wr.GEMV_K, wr.GEMV_N
    return kernel_bench.KernelModule(wr.gemv_module(k, n), (kernel_bench.ArgSpec((1, k), "float32"),
                                     kernel_bench.ArgSpec((k, n), "float32", weight=True)), 1), k * n * 4


class Side:
    """One build of a kernel and its weight copies: :meth:`sweep` calls it once per copy."""

    def __init__(self, kmod, executable, dev, sweep_bytes: int, weight_bytes: int):
        import tvm
        from tvm import relax

        from hetpart.costmodel import kernel_bench

        self.vm = relax.VirtualMachine(executable, dev)
        self.f, self.dev = self.vm["main"], dev
        copies = max(2, -(-sweep_bytes // max(weight_bytes, 1)))
        rng = np.random.default_rng(0)
        specs = kmod.args
        n = kmod.num_inputs if kmod.num_inputs is not None else len(specs)
        self.inputs = [tvm.runtime.tensor(kernel_bench.random_array(s, rng), dev) for s in specs[:n]]
        pack = self.vm[kernel_bench.TRANSFORM_PARAMS] if kernel_bench._has_function(
            self.vm, kernel_bench.TRANSFORM_PARAMS) else None
        self.weights = []
        for _ in range(copies):
            w = [tvm.runtime.tensor(kernel_bench.random_array(s, rng), dev) for s in specs[n:]]
            self.weights.append(list(pack(w)) if pack is not None else w)
        self.copies = copies

    def sweep(self, clock) -> float:
        """Seconds per call over one sweep of the copies (by ``clock``)."""
        t0 = clock()
        for w in self.weights:
            self.f(*self.inputs, *w)
        self.dev.sync()
        return (clock() - t0) / self.copies

    def output(self):
        return self.f(*self.inputs, *self.weights[0]).numpy()


def run(spec: str, before: list[str], sweeps: int, sweep_mb: int, clock, only: str | None = None,
        cores: int | None = None, after: list[str] = ()) -> list[dict]:
    """One row per weight kernel of ``spec`` and the probe (see the module docstring)."""
    import tvm

    from hetpart.bench.switches import switched
    from hetpart import kernels
    from hetpart.costmodel import kernel_bench
    from hetpart.targets import cpu_tvm_target

    target, dev = cpu_tvm_target(cores), tvm.cpu()
    items = [(k.func, k.ops, kmod, wb) for k, kmod, wb in weight_kernels(spec)]
    pk, pwb = probe_module()
    items.append(("probe_gemv", ("matmul",), pk, pwb))
    rows = []
    for func, ops, kmod, wb in items:
        if only and only not in func:
            continue

        def build():
            ex = kernel_bench.build_module(kmod.mod, target)
            sched = kernels.schedule(kmod.mod, target)
            return ex, ",".join(sorted(set(kernels.rules_applied(sched).values()))) or "none"

        with switched(after):
            ex, rule = build()
        sides = {"now": Side(kmod, ex, dev, sweep_mb << 20, wb)}
        if before:
            with switched(before):
                ex_b, rule_b = build()
            sides["before"] = Side(kmod, ex_b, dev, sweep_mb << 20, wb)
        for s in sides.values():
            s.sweep(clock)  # pages touched, pool awake
        times = {name: [] for name in sides}
        for _ in range(sweeps):
            for name, s in sides.items():
                times[name].append(s.sweep(clock))
        row = {"kernel": func, "ops": "+".join(ops), "rule": rule, "weight_mb": wb / 1e6,
               "shapes": [list(a.shape) for a in kmod.args]}
        for name, ts in times.items():
            row[f"{name}_us"] = min(ts) * 1e6
            row[f"{name}_gbs"] = wb / min(ts) / 1e9
        if before:
            a, b = sides["now"].output(), sides["before"].output()
            row["max_abs_diff"] = float(np.max(np.abs(a - b)))
        rows.append(row)
        print(describe(row), flush=True)
        del sides
    return rows


def describe(row: dict) -> str:
    s = f"{row['kernel']:<44} {row['rule']:<10} {row['weight_mb']:7.1f} MB  now {row['now_us']:9.1f} us " \
        f"{row['now_gbs']:6.2f} GB/s"
    if "before_us" in row:
        s += f" | before {row['before_us']:9.1f} us {row['before_gbs']:6.2f} GB/s  x{row['before_us'] / row['now_us']:.2f}" \
             f"  diff {row['max_abs_diff']:.2e}"
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", default=DEFAULT_SPEC)
    p.add_argument("--before", action="append", default=[], help="module.ATTR=value, the 'before' side")
    p.add_argument("--after", action="append", default=[],
                   help="module.ATTR=value, set for the 'now' side (a switch still off in the checkout)")
    p.add_argument("--sweeps", type=int, default=5)
    p.add_argument("--sweep-mb", type=int, default=1024, help="weight MB per sweep (>> the last-level cache)")
    p.add_argument("--cpu-time", action="store_true", help="process CPU time (1 thread), else wall time")
    p.add_argument("--cores", type=int, help="schedule for this many cores (the target's num-cores; "
                   "default this host's): 16 on a 2-core box runs the Xeon's 16 parts on TVM_NUM_THREADS")
    p.add_argument("--only", help="only kernels whose name contains this")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    clock = time.process_time if a.cpu_time else time.perf_counter
    rows = run(a.spec, a.before, a.sweeps, a.sweep_mb, clock, a.only, a.cores, a.after)
    if a.json:
        Path(a.json).write_text(json.dumps({"spec": a.spec, "before": a.before, "after": a.after, "cpu_time": a.cpu_time, "cores": a.cores,
                                            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
