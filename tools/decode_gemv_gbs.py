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

``--precision bf16`` (or ``fp16``): each kernel is also built with its weights stored in that
format as ``--precision cpu=bf16`` compiles it (:func:`hetpart.importer.low_precision.lower_weights`:
the same kernel reading 2-byte weights, widened to float32 in its loads), with the 'now' side's
switches, and swept in the same turns: its GB/s counts its own (half as many) weight bytes, ``x``
is float32's time over its, ``rel`` is max|low - fp32| / max|fp32| of the two outputs (the same
random values, the low side's rounded to its format).  A MoE expert kernel
(:data:`hetpart.importer.expert_matmul.OP`) reads only the chosen experts' rows of its table:
its GB/s counts those (the distinct ids of its random input, :func:`read_bytes`).

    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/decode_gemv_gbs.py --cpu-time --precision bf16
    TVM_NUM_THREADS=1 PYTHONPATH=. python tools/decode_gemv_gbs.py zoo:moe:layers=1 --cpu-time --precision bf16
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


def weight_kernels(spec: str, low: str | None = None):
    """``[(kernel, KernelModule, weight bytes, low)]`` of the distinct matmul kernels of ``spec``
    holding >= 1 MB of float32 weights (dense, or a MoE expert kernel); ``low``: None, or (with
    ``low`` a storage dtype, ``bfloat16`` / ``float16``) ``(KernelModule, weight bytes)`` of the
    same kernel with its weights stored in that dtype (:func:`lower_weights`)."""
    from hetpart import load, models
    from hetpart.costmodel import kernel_bench
    from hetpart.importer.expert_matmul import OP
    from hetpart.importer.low_precision import lower_weights

    name, small, cfg = models.parse_zoo_spec(spec)
    graph = load(models.build(name, small, **cfg))
    lowered = lower_weights(graph, list(graph.kernels), low) if low else None
    out, seen = [], set()
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        kmod = kernel_bench.single_kernel_module(graph, k)
        wb = weight_bytes(kmod)
        if wb >= MIN_WEIGHT_BYTES and k.signature not in seen and ("matmul" in k.ops or OP in k.ops):
            seen.add(k.signature)
            lk = kernel_bench.single_kernel_module(lowered, lowered.kernels[k.id]) if lowered is not None else None
            out.append((k, kmod, wb, (lk, weight_bytes(lk)) if lk is not None else None))
    return out


def weight_bytes(kmod) -> int:
    """Bytes of ``kmod``'s weight arguments, in their dtypes (bfloat16: 2)."""
    return sum(int(np.prod(a.shape)) * (2 if a.dtype == "bfloat16" else np.dtype(a.dtype).itemsize)
               for a in kmod.args if a.weight)


def read_bytes(ops: tuple, side: "Side", wb: int) -> int:
    """The weight bytes one call of ``side`` reads: all ``wb``, or for a MoE expert kernel
    (:data:`~hetpart.importer.expert_matmul.OP` in ``ops``) the rows its ids choose: ``wb`` x
    distinct ids / the table's rows (its first weight's leading dim)."""
    from hetpart.importer.expert_matmul import OP

    if OP not in ops:
        return wb
    ids = [t.numpy() for t in side.inputs if "int" in str(t.dtype)]
    table = next(s for s in side.specs if s.weight)
    chosen = len(np.unique(np.concatenate([i.ravel() for i in ids]))) if ids else table.shape[0]
    return wb * min(chosen, table.shape[0]) // table.shape[0]


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
        specs = self.specs = kmod.args
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
        cores: int | None = None, after: list[str] = (), low: str | None = None) -> list[dict]:
    """One row per weight kernel of ``spec`` and the probe (see the module docstring); ``low``
    (a storage dtype): each kernel's low-precision build is a side too (not the probe's)."""
    import tvm

    from hetpart.targets import cpu_tvm_target

    target, dev = cpu_tvm_target(cores), tvm.cpu()
    items = [(k.func, k.ops, kmod, wb, lk) for k, kmod, wb, lk in weight_kernels(spec, low)]
    pk, pwb = probe_module()
    items.append(("probe_gemv", ("matmul",), pk, pwb, None))
    rows = []
    for func, ops, kmod, wb, lk in items:
        if only and only not in func:
            continue
        builds = {"now": (kmod, wb, after)}
        if before:
            builds["before"] = (kmod, wb, before)
        if lk is not None:
            builds["low"] = (lk[0], lk[1], after)
        row = {"kernel": func, "ops": "+".join(ops), "weight_mb": wb / 1e6, "shapes": [list(a.shape) for a in kmod.args]}
        row.update(_time_sides(builds, ops, target, dev, sweeps, sweep_mb << 20, clock))
        rows.append(row)
        print(describe(row), flush=True)
    return rows


def _build(kmod, target, switches) -> tuple:
    """``(executable, rules)`` of ``kmod`` built for ``target`` with ``switches`` set."""
    from hetpart import kernels
    from hetpart.bench.switches import switched
    from hetpart.costmodel import kernel_bench

    with switched(switches):
        ex = kernel_bench.build_module(kmod.mod, target)
        sched = kernels.schedule(kmod.mod, target)
    return ex, ",".join(sorted(set(kernels.rules_applied(sched).values()))) or "none"


def _time_sides(builds: dict, ops: tuple, target, dev, sweeps: int, sweep_bytes: int, clock) -> dict:
    """In: ``{side: (KernelModule, weight bytes, switches)}`` ('now' first).  Out: the row's
    ``rule``, per side ``<side>_us`` (least sweep) and ``<side>_gbs`` (bytes read / that), and
    ``max_abs_diff`` (now vs before) / ``low_rel`` (low vs now, over max|now|) where those sides
    exist.  The sides' sweeps alternate, after one unrecorded sweep each."""
    sides, row, read = {}, {}, {}
    for name, (kmod, wb, switches) in builds.items():
        ex, rule = _build(kmod, target, switches)
        row.setdefault("rule", rule)
        sides[name] = Side(kmod, ex, dev, sweep_bytes, wb)
        read[name] = read_bytes(ops, sides[name], wb)
    for s in sides.values():
        s.sweep(clock)  # pages touched, pool awake
    times = {name: [] for name in sides}
    for _ in range(sweeps):
        for name, s in sides.items():
            times[name].append(s.sweep(clock))
    for name, ts in times.items():
        row[f"{name}_us"], row[f"{name}_gbs"] = min(ts) * 1e6, read[name] / min(ts) / 1e9
    now = sides["now"].output()
    if "before" in sides:
        row["max_abs_diff"] = float(np.max(np.abs(now - sides["before"].output())))
    if "low" in sides:
        row["low_rel"] = float(np.max(np.abs(sides["low"].output() - now)) / (np.max(np.abs(now)) or 1.0))
    return row


def describe(row: dict) -> str:
    s = f"{row['kernel']:<44} {row['rule']:<10} {row['weight_mb']:7.1f} MB  now {row['now_us']:9.1f} us " \
        f"{row['now_gbs']:6.2f} GB/s"
    if "before_us" in row:
        s += f" | before {row['before_us']:9.1f} us {row['before_gbs']:6.2f} GB/s  x{row['before_us'] / row['now_us']:.2f}" \
             f"  diff {row['max_abs_diff']:.2e}"
    if "low_us" in row:
        s += f" | low {row['low_us']:9.1f} us {row['low_gbs']:6.2f} GB/s  x{row['now_us'] / row['low_us']:.2f}" \
             f"  rel {row['low_rel']:.2e}"
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
    p.add_argument("--precision", choices=("bf16", "fp16"),
                   help="also each kernel with its weights stored in this format (the 'low' side)")
    a = p.parse_args(argv)
    from hetpart.contracts.precision import STORAGE

    clock = time.process_time if a.cpu_time else time.perf_counter
    low = STORAGE[a.precision] if a.precision else None
    rows = run(a.spec, a.before, a.sweeps, a.sweep_mb, clock, a.only, a.cores, a.after, low)
    if a.json:
        Path(a.json).write_text(json.dumps({"spec": a.spec, "before": a.before, "after": a.after, "cpu_time": a.cpu_time, "cores": a.cores,
                                            "precision": a.precision, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
