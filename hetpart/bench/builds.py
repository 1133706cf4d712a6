"""Compiled builds, one per distinct placement: plans that place and partition every kernel alike share one.

Compiling is the slow part of a benchmark, so a :class:`BuildCache` compiles each
distinct placement of one model once (keyed by :func:`~hetpart.partitioner.candidates.build_key`), and
compiles a batch of them on a thread pool before anything is timed (TVM releases the
GIL while it compiles).  Builds are named ``b0``, ``b1``, ... in the order first asked for.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from .. import compiler, targets
from ..kernels.options import DEFAULT, KernelOptions
from ..partitioner.candidates import build_key


@dataclass
class Build:
    """One compiled assignment.  ``latency``/``items_per_s`` are filled by the first
    measurement and reused by every plan sharing the build: the same libraries are
    the same measurement, and timing them twice would only add noise and time."""

    name: str
    compiled: object  # hetpart.compiler.CompiledModel
    compile_s: float
    plan_name: str  # the plan it was compiled from (others sharing it reuse it)
    latency: object = None  # timing.Stats
    items_per_s: float | None = None


class BuildCache:
    """Builds of one op graph.  ``simulate``/``cuda_arch``/``kernel_options`` as in
    :func:`hetpart.compile` (its ``options``)."""

    def __init__(self, graph, *, simulate: bool = False, cuda_arch: str | None = None, jobs: int | None = None,
                 kernel_options: KernelOptions = DEFAULT):
        self.graph = graph
        self.kernel_options = kernel_options
        self.simulate = simulate
        self.cuda_arch = cuda_arch
        self.jobs = jobs or max(1, min(4, targets.num_cores() // 2))
        self._builds: dict[tuple, Build] = {}

    def get(self, plan, plan_name: str) -> Build:
        """The build of ``plan``'s assignment, compiling it now if nobody has."""
        key = build_key(plan)
        if key not in self._builds:
            self._builds[key] = self._compile(plan, plan_name, f"b{len(self._builds)}", jobs=None)
        return self._builds[key]

    def prefetch(self, named_plans: list[tuple[str, object]], progress: bool = True) -> None:
        """Compile every not-yet-built assignment among ``named_plans``, ``jobs`` at a time."""
        todo: dict[tuple, tuple[str, object]] = {}
        for name, plan in named_plans:
            key = build_key(plan)
            if key not in self._builds and key not in todo:
                todo[key] = (name, plan)
        if not todo:
            return
        per_build_jobs = max(1, targets.num_cores() // min(self.jobs, len(todo)))
        first = len(self._builds)
        names = {key: f"b{first + i}" for i, key in enumerate(todo)}
        bar = tqdm(total=len(todo), desc=f"compiling {self.graph.name}", unit="build", file=sys.stderr,
                   disable=None if progress else True, leave=False)
        with bar, ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="hetpart-bench-build") as pool:
            futures = {key: pool.submit(self._compile, plan, name, names[key], per_build_jobs)
                       for key, (name, plan) in todo.items()}
            for key, fut in futures.items():
                self._builds[key] = fut.result()
                bar.update(1)

    def _compile(self, plan, plan_name: str, build_name: str, jobs: int | None) -> Build:
        compiled = compiler.compile(plan, self.graph, simulate=self.simulate, cuda_arch=self.cuda_arch,
                                    jobs=jobs, progress=False, options=self.kernel_options)
        return Build(build_name, compiled, compiled.compile_seconds, plan_name)

    def __len__(self) -> int:
        return len(self._builds)

    def clear(self) -> None:
        """Drop every build (frees the loaded libraries and their weights)."""
        self._builds.clear()
