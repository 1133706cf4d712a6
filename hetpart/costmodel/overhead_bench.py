"""Fixed per-call costs on one device: partition call, kernel launch, host switch.

In: a TVM target and device.  Out: :class:`Overheads`.

A chain of ``n`` tiny kernels (``y = x + 1`` on one float) is built for n in
:data:`CHAIN_LENGTHS` and timed like a kernel (:func:`kernel_bench.time_executable`).
A straight-line fit ``t(n) = call + n * launch`` gives the fixed cost of calling a
partition (``call_s``) and the cost each extra kernel adds (``launch_s``: on a GPU
one kernel launch).  ``empty_s`` is the measured ``t(1)``: what every single-kernel
timing contains besides the kernel's own work.  ``switch_s`` is the host wall clock
of calling the one-kernel function and waiting for the device (``dev.sync()``),
beyond ``empty_s``: the cost of handing data back at a partition boundary.
"""

from __future__ import annotations

import time

import numpy as np
import tvm
from tvm import relax, te

from ..errors import CompileError
from .build_pool import BuildFailed, BuildPool
from .kernel_bench import MeasureSettings, time_executable
from .profile_db import Overheads

CHAIN_LENGTHS = (1, 4, 16, 64)
SWITCH_ROUNDS = 200


def tiny_kernel():
    """``y[0] = x[0] + 1``: a kernel whose work is negligible next to calling it."""
    x = te.placeholder((1,), "float32", name="x")
    y = te.compute((1,), lambda i: x[i] + tvm.tirx.const(1.0, "float32"), name="y")
    return te.create_prim_func([x, y]).with_attr("global_symbol", "tiny")


def chain_module(n: int) -> tvm.IRModule:
    """``main(x)`` applies the tiny kernel ``n`` times in sequence (each depends on the last)."""
    bb = relax.BlockBuilder()
    gv = bb.add_func(tiny_kernel(), "tiny")
    x = relax.Var("x", relax.TensorType([1], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            v = x
            for _ in range(n):
                v = bb.emit(relax.call_tir(gv, [v], relax.TensorType([1], "float32")))
            out = bb.emit_output(v)
        bb.emit_func_output(out)
    return bb.get()


def _switch_seconds(executable, x, dev) -> float:
    vm = relax.VirtualMachine(executable, dev)
    f = vm["main"]
    f(x)
    dev.sync()
    times = []
    for _ in range(SWITCH_ROUNDS):
        t0 = time.perf_counter()
        f(x)
        dev.sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure_overheads(target, dev, settings: MeasureSettings | None = None, pool: BuildPool | None = None) -> Overheads:
    """Measure :class:`Overheads` for ``target`` on ``dev`` (built in ``pool`` if given)."""
    settings = settings or MeasureSettings()
    exes = (pool or BuildPool(1)).build_all([chain_module(n) for n in CHAIN_LENGTHS], target)
    for ex in exes:
        if isinstance(ex, BuildFailed):
            raise CompileError(f"cannot build the overhead benchmark for {target.kind.name}: {ex}")
    x = tvm.runtime.tensor(np.array([0.5], dtype="float32"), dev)
    medians = [time_executable(ex, [x], dev, settings).median_s for ex in exes]
    launch, call = np.polyfit(np.array(CHAIN_LENGTHS, dtype=float), np.array(medians), 1)
    empty = medians[0]
    switch = _switch_seconds(exes[0], x, dev)
    return Overheads(call_s=max(float(call), 0.0), launch_s=max(float(launch), 0.0),
                     empty_s=float(empty), switch_s=max(switch - empty, 0.0))
