"""The build workers of the cost model (hetpart.costmodel.build_pool)."""

from __future__ import annotations

import os
import sys

import pytest

from hetpart.costmodel import kernel_bench
from hetpart.costmodel.build_pool import BuildPool
from hetpart.targets import cpu_tvm_target


def threads_around_a_tvm_pool() -> tuple[int, int]:
    """In a worker: its OS threads before and after TVM makes its CPU thread pool (the
    first parallel kernel a build runs, e.g. a weight prepack, makes it the same way)."""
    import tvm

    before = len(os.listdir("/proc/self/task"))
    tvm.get_global_func("runtime.NumThreads")()  # creates the calling thread's pool
    return before, len(os.listdir("/proc/self/task"))


# the thread count needs /proc, on a machine where TVM's default pool would have 2+ threads
COUNTS_THREADS = os.path.isdir("/proc/self/task") and (os.cpu_count() or 1) >= 2


def test_every_worker_is_up_before_the_first_build_returns_and_keeps_no_spinning_thread_pool(zoo_graph):
    """Two checks of one started pool (each worker imports TVM: a pool per check cost CI ~5 s a worker).

    All ``jobs`` workers have imported TVM before ``build_all`` returns, even for a batch
    smaller than ``jobs``: the executor starts workers on demand, and one started for a
    later batch kept importing TVM (a core's worth of work for seconds) after the others
    had done the builds, beside the parent's timing (device steps 45-51).

    A build worker's TVM pool adds no thread: by default it adds one per core, and their
    idle spinning (sched_yield) outlived the builds by seconds; with a worker per core that
    kept every core busy while the parent timed the kernels (each parallel kernel then read
    one 4 ms scheduler tick on the H200 host, device step 49).  (Counted where
    :data:`COUNTS_THREADS`.)"""
    graph = zoo_graph("mlp")
    kmods = [kernel_bench.single_kernel_module(graph, k) for k in list(graph.kernels.values())[:3]]
    with BuildPool(4) as pool:
        built = pool.build_all([km.mod for km in kmods], cpu_tvm_target())
        live = {p.pid for p in pool._pool._processes.values()}
        assert len(live) == 4, f"{len(live)} of 4 workers started"
        assert set(pool.start()) == live  # already started: the same workers, each of them reported in
        assert all(not isinstance(b, Exception) for b in built), built
        if COUNTS_THREADS:
            before, after = pool._pool.submit(threads_around_a_tvm_pool).result()
    if COUNTS_THREADS:
        assert after == before, f"a build worker's TVM pool added {after - before} spinning threads"


def test_a_pool_whose_workers_cannot_start_falls_back_to_building_here(zoo_graph, monkeypatch):
    """Workers that die at start (a script without the ``__main__`` guard) do not hang the
    start-up wait: the pool warns and builds in this process."""
    import hetpart.costmodel.build_pool as build_pool

    # Each worker's first call, sys.exit(ready), raises SystemExit: it dies at start before importing
    # anything of hetpart (an initializer defined in this module would make it import this module,
    # hetpart and TVM first: ~4 s a worker on CI's cores, for a death that comes either way).
    monkeypatch.setattr(build_pool, "start_worker", sys.exit)
    graph = zoo_graph("mlp")
    kmods = [kernel_bench.single_kernel_module(graph, k) for k in list(graph.kernels.values())[:3]]
    with BuildPool(2) as pool, pytest.warns(UserWarning, match="build workers died"):
        built = pool.build_all([km.mod for km in kmods], cpu_tvm_target())
    assert pool.jobs == 1 and all(not isinstance(b, Exception) for b in built)
