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

``wake_s`` (CPU only; 0.0 on a GPU, whose work is queued, not run by a pool) is what a
*parallel* kernel (:func:`wake_kernel`: an elementwise op over :data:`WAKE_ELEMENTS`
floats, its loop split over the whole thread pool) costs more when called after the
pool has been idle for :data:`WAKE_IDLE_S` than when called back to back: TVM's pool
workers spin ``TVM_THREAD_POOL_SPIN_COUNT`` (300000) ``sched_yield`` rounds after a
parallel job, then sleep on a condition variable, and the next job must wake each of
them (on a VM, a halted vCPU each).  The kernels and the other overheads are all timed
hot, back to back; a CPU partition entered after a GPU partition waited for the GPU is
not (issue 19: a 108-partition plan ran 21 ms slower than predicted).  Median over
:data:`WAKE_ROUNDS` cold calls minus the median hot call (:class:`WakeSample`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te

from ..errors import CompileError
from .build_pool import BuildFailed, BuildPool
from .kernel_bench import MeasureSettings, time_executable
from .profile_db import Overheads

CHAIN_LENGTHS = (1, 4, 16, 64)
SWITCH_ROUNDS = 200
WAKE_ELEMENTS = 1 << 16
"""Floats the wake kernel reads (256 KiB) and writes: every worker gets work, the whole
job stays in the caches, so the cold call differs from the hot ones by the wake-up."""
WAKE_IDLE_S = 0.25
"""Idle time before each cold call: longer than 300000 ``sched_yield`` rounds (~0.1 us
each where the core is otherwise idle: ~30-100 ms), so every worker sleeps; issue 19
asked for >= 200 ms."""
WAKE_ROUNDS = 7
WAKE_HOT_CALLS = 50
WAKE_SETTLE_CALLS = 3


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


def wake_kernel(n: int = WAKE_ELEMENTS, parallel: bool = True):
    """``y = x * 2 + 1`` over ``n`` floats, its one loop parallel over the pool (serial
    with ``parallel=False``: the same work without the pool, tools/wake_check.py's control)."""
    from tvm import s_tir

    x = te.placeholder((n,), "float32", name="x")
    y = te.compute((n,), lambda i: x[i] * tvm.tirx.const(2.0, "float32") + tvm.tirx.const(1.0, "float32"),
                   name="y")
    prim = te.create_prim_func([x, y]).with_attr("global_symbol", "wake")
    if not parallel:
        return prim
    sch = s_tir.Schedule(prim)
    block = sch.get_sblock("y")
    sch.parallel(sch.get_loops(block)[0])
    return sch.mod["main"].with_attr("global_symbol", "wake")


def wake_module(n: int = WAKE_ELEMENTS, parallel: bool = True) -> tvm.IRModule:
    """``main(x)`` calls :func:`wake_kernel` once."""
    bb = relax.BlockBuilder()
    gv = bb.add_func(wake_kernel(n, parallel), "wake")
    x = relax.Var("x", relax.TensorType([n], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.call_tir(gv, [x], relax.TensorType([n], "float32"))))
        bb.emit_func_output(out)
    return bb.get()


@dataclass(frozen=True)
class WakeSample:
    """Seconds of the wake kernel's calls: ``hot`` back to back, ``cold`` each after
    ``idle_s`` of idling.  ``wake_s`` = median(cold) - median(hot), never negative."""

    hot: tuple[float, ...]
    cold: tuple[float, ...]
    idle_s: float

    @property
    def hot_s(self) -> float:
        return float(np.median(self.hot))

    @property
    def cold_s(self) -> float:
        return float(np.median(self.cold))

    @property
    def wake_s(self) -> float:
        return max(self.cold_s - self.hot_s, 0.0)

    def describe(self) -> str:
        us = lambda v: f"{v * 1e6:.1f}"  # noqa: E731
        return (f"idle {self.idle_s * 1e3:.0f} ms: hot median {us(self.hot_s)} us (min {us(min(self.hot))}, "
                f"max {us(max(self.hot))}), cold median {us(self.cold_s)} us (min {us(min(self.cold))}, "
                f"max {us(max(self.cold))}) over {len(self.cold)} rounds -> wake {us(self.wake_s)} us")


def measure_wake(executable, dev, idle_s: float | None = None, rounds: int | None = None,
                 hot_calls: int | None = None, n: int = WAKE_ELEMENTS, sleep=time.sleep) -> WakeSample:
    """Time ``executable``'s ``main`` (the wake kernel) hot and after ``idle_s`` idle.

    In: a built :func:`wake_module` of ``n`` floats and its (CPU) device; ``idle_s``,
    ``rounds``, ``hot_calls`` default to :data:`WAKE_IDLE_S`, :data:`WAKE_ROUNDS`,
    :data:`WAKE_HOT_CALLS` as they are when called.  Out: a :class:`WakeSample`.
    Each round idles, calls once (cold), calls :data:`WAKE_SETTLE_CALLS` times
    unrecorded (the pool spins again), then back to back (hot), so hot and cold calls
    interleave and drift on a shared machine hits both alike."""
    idle_s = WAKE_IDLE_S if idle_s is None else idle_s
    rounds = WAKE_ROUNDS if rounds is None else rounds
    hot_calls = WAKE_HOT_CALLS if hot_calls is None else hot_calls
    vm = relax.VirtualMachine(executable, dev)
    f = vm["main"]
    x = tvm.runtime.tensor(np.ones(n, dtype="float32"), dev)
    for _ in range(10):  # the pool exists and every page is touched
        f(x)
    dev.sync()
    hot, cold = [], []
    per_round = max(hot_calls // max(rounds, 1), 1)
    for _ in range(rounds):
        sleep(idle_s)
        cold.append(_call_seconds(f, x, dev))
        for _ in range(WAKE_SETTLE_CALLS):
            f(x)
        hot += [_call_seconds(f, x, dev) for _ in range(per_round)]
    return WakeSample(tuple(hot), tuple(cold), float(idle_s))


def _call_seconds(f, x, dev) -> float:
    t0 = time.perf_counter()
    f(x)
    dev.sync()
    return time.perf_counter() - t0


def _switch_seconds(executable, x, dev) -> float:
    vm = relax.VirtualMachine(executable, dev)
    f = vm["main"]
    f(x)
    dev.sync()
    return float(np.median([_call_seconds(f, x, dev) for _ in range(SWITCH_ROUNDS)]))


def measure_overheads(target, dev, settings: MeasureSettings | None = None, pool: BuildPool | None = None) -> Overheads:
    """Measure :class:`Overheads` for ``target`` on ``dev`` (built in ``pool`` if given);
    ``wake_s`` only on a CPU target (see the module docstring), 0.0 elsewhere."""
    settings = settings or MeasureSettings()
    cpu = target.kind.name == "llvm"
    mods = [chain_module(n) for n in CHAIN_LENGTHS] + ([wake_module()] if cpu else [])
    exes = (pool or BuildPool(1)).build_all(mods, target)
    for ex in exes:
        if isinstance(ex, BuildFailed):
            raise CompileError(f"cannot build the overhead benchmark for {target.kind.name}: {ex}")
    x = tvm.runtime.tensor(np.array([0.5], dtype="float32"), dev)
    wake = measure_wake(exes.pop(), dev).wake_s if cpu else 0.0
    medians = [time_executable(ex, [x], dev, settings).median_s for ex in exes]
    launch, call = np.polyfit(np.array(CHAIN_LENGTHS, dtype=float), np.array(medians), 1)
    empty = medians[0]
    switch = _switch_seconds(exes[0], x, dev)
    return Overheads(call_s=max(float(call), 0.0), launch_s=max(float(launch), 0.0),
                     empty_s=float(empty), switch_s=max(switch - empty, 0.0), wake_s=float(wake))
