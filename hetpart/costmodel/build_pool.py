"""Compile many single-kernel modules at once, in worker processes.

Why processes: most of a build is Python (hetpart's schedule rules, TVM's pass
callbacks) and holds the GIL, so a thread pool built 16 kernels no faster than one
thread (measured: 0.89 s with 1 thread, 1.24 s with 2, on this 2-core CI machine).

In: IRModules and a target.  Out: per module, an executable that
``relax.VirtualMachine`` takes, or a :class:`BuildFailed` saying why.  A module
travels to its worker as TVM JSON; the worker builds it with
:func:`kernel_bench.build_module` (so with :func:`hetpart.kernels.build`) and exports a
shared library, which is loaded here.  With ``jobs == 1`` everything is built in
this process, no workers.  Workers start on the first big enough batch (a few
seconds each: they import TVM), so share one pool across models
(``profile(..., pool=pool)``).

Workers are *spawned*: like any multiprocessing code, a script that calls
:func:`hetpart.costmodel.profile` with ``jobs > 1`` needs the
``if __name__ == "__main__":`` guard (without it the pool falls back to building
in-process, with a warning).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import tvm

from ..kernels.options import DEFAULT, KernelOptions


class BuildFailed(Exception):
    """A module TVM could not build for the target (the message is TVM's last line)."""


def error_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


def _build_in_worker(mod_json: str, target_json: str, path: str, options: KernelOptions) -> str | None:
    """Build and export one module; None on success, else the error line."""
    from hetpart.costmodel import kernel_bench

    try:
        ex = kernel_bench.build_module(tvm.ir.load_json(mod_json), tvm.target.Target(target_json), options)
        ex.export_library(path)
        return None
    except Exception as exc:  # noqa: BLE001 - any TVM failure means "cannot build here"
        return error_line(exc)


#: what each build worker sets before it builds anything (see :func:`start_worker`)
WORKER_ENV = {"TVM_NUM_THREADS": "1", "TVM_THREAD_POOL_SPIN_COUNT": "0"}
#: how long :meth:`BuildPool.start` waits for every worker to be up (each imports TVM)
START_TIMEOUT_S = 300.0


def start_worker(ready) -> None:
    """Run first in each build worker, once it has imported TVM: a TVM thread pool of one
    thread that never spins, then the worker's pid on ``ready`` (a queue the parent reads).

    Builds need no parallel CPU time, and TVM's default pool (a thread per core, each
    spinning 300000 ``sched_yield`` calls when idle, created by the first CPU kernel a
    build runs, e.g. a weight prepack) would keep cores busy after the builds return."""
    os.environ.update(WORKER_ENV)
    ready.put(os.getpid())


def _noop() -> None:
    """A task that makes the executor start one more worker (it starts them on demand)."""


class BuildPool:
    """``jobs`` worker processes (started on first use) and a scratch dir for libraries."""

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, int(jobs))
        self._pool: ProcessPoolExecutor | None = None
        self._pids: list[int] = []
        self._dir = tempfile.TemporaryDirectory(prefix="hetpart-build-")
        self._count = 0

    def build_all(self, mods: list, target, options: KernelOptions = DEFAULT) -> list:
        """Executables (or :class:`BuildFailed`) for ``mods``, in order, built with ``options``."""
        from . import kernel_bench

        if self.jobs == 1 or len(mods) <= 2:  # too little work to pay for starting workers
            out = []
            for mod in mods:
                try:
                    out.append(kernel_bench.build_module(mod, target, options))
                except Exception as exc:  # noqa: BLE001 - see _build_in_worker
                    out.append(BuildFailed(error_line(exc)))
            return out
        paths = []
        for _ in mods:
            self._count += 1
            paths.append(os.path.join(self._dir.name, f"k{self._count}.so"))
        try:
            self.start()
            futures = [self._pool.submit(_build_in_worker, tvm.ir.save_json(m), str(target), p, options)
                       for m, p in zip(mods, paths)]
            errors = [f.result() for f in futures]
        except BrokenProcessPool:
            # Typically a script without `if __name__ == "__main__":` (spawned workers
            # re-import it); build here instead of failing the whole profile.
            warnings.warn("hetpart: build workers died; building kernels in this process (one at a time). "
                          "Guard your script with `if __name__ == \"__main__\":` to build in parallel.")
            self.close()
            self.jobs = 1
            return self.build_all(mods, target, options)
        from ..targets import amx_tile_permission

        amx_tile_permission()  # a worker's int8 kernels may be AMX code (rules.cpu_int8_matmul): run here
        return [BuildFailed(e) if e else tvm.runtime.load_module(p) for e, p in zip(errors, paths)]

    def start(self) -> list[int]:
        """Start all ``jobs`` workers and return once each has imported TVM (their pids).

        Why wait: the executor starts workers on demand, and a worker started late (a
        second batch finding the first batch's workers busy) may still be importing TVM,
        a few seconds of one core's work, when the builds it was started for are already
        done by the others.  The parent then timed kernels beside it: on the H200 host
        every parallel CPU kernel of llama_decode read one 4 ms scheduler tick (device
        steps 45-51: 13 of 25 at 4.00 ms through ``profile(jobs=16)``, whose overhead
        builds had started 4 workers before the kernels' batch started 12 more; none with
        the overheads already measured, or with ``jobs=1``)."""
        if self._pool is not None:
            return list(self._pids)
        ctx = multiprocessing.get_context("spawn")  # not fork: a forked TVM thread pool can deadlock
        ready = ctx.Queue()
        self._pool = ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=start_worker, initargs=(ready,))
        # no worker is idle yet, so each submit starts one
        started = [self._pool.submit(_noop) for _ in range(self.jobs)]
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(self._pids) < self.jobs:
            try:
                self._pids.append(ready.get(timeout=0.5))
            except queue.Empty:
                broken = next((f.exception() for f in started if f.done() and f.exception()), None)
                if broken is not None or time.monotonic() > deadline:
                    self.close()
                    raise BrokenProcessPool(f"build workers did not start: {broken or 'timed out'}")
        return list(self._pids)

    def close(self) -> None:
        """Stop the workers without waiting for queued builds (also on Ctrl-C).

        Built libraries stay until the pool is garbage collected: loaded modules
        may still need their files.
        """
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self._pids = []

    def __enter__(self) -> "BuildPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
