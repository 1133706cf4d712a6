"""Lower and code-generate a CPU build's kernels on several threads, and write their objects so.

Why: an all-CPU plan is one partition, so :func:`hetpart.compiler.compile`'s partition pool
builds it on one thread, and TVM lowers every PrimFunc of a module through one TIR pipeline
into one LLVM module (``tvm.tirx.build``: one ``target.build.llvm``, LLVM's optimisation of the
whole module on one core) and :meth:`~tvm.runtime.Module.export_library` emits each LLVM module's
machine code in turn.  Those C++ stages (TIR passes, LLVM IR optimisation, instruction selection)
were most of a build (densenet121 NCHW16c on the 2-vCPU dev box: 33 of 39 s;
``bench/results/build-time-2core.md``); TVM's FFI releases the GIL around them, so threads run them
in parallel.

In: the scheduled module :func:`hetpart.kernels.build` hands ``tvm.compile`` (Relax ``main`` and
PrimFuncs) and a CPU target; the :class:`~tvm.transform.PassContext` it is called under.  Out:
:func:`compile` -- the same executable ``tvm.compile(mod, target, tir_pipeline=...)`` returns, its
kernels built as several LLVM modules (``lib.imports``) of :func:`chunks` of the PrimFuncs, one
per thread; :func:`export_library` -- ``executable.export_library(path)`` with the LLVM modules'
objects (and the packed imports) written on threads.

Invariant: every kernel's code is unchanged.  Each PrimFunc goes through the same TIR pipeline
with the same pass context (re-entered on each thread: :class:`~tvm.transform.PassContext` is
thread-local) and the same LLVM target; only which LLVM module holds it changes, and the TIR
passes and LLVM's per-function optimisation see one function at a time (``tools/build_code_hash.py``
compares each kernel's scheduled TIR and each symbol's disassembly before and after).  A chunk
holds at least two functions (a module of one gets TVM's ``__tvm_main__`` entry alias, which two
modules would both define).  :func:`map_threads` schedules a CPU module's PrimFuncs on threads too
(:data:`SCHEDULE_THREADS`).  Switch: :data:`ENABLED` (False: ``tvm.compile``, TVM's export
and scheduling in turn, as before).
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

import tvm
from tvm import relax, tirx

from ..cpu_cores import allowed_cpus

ENABLED = True
"""False: one ``tvm.compile`` and TVM's ``export_library`` (the serial build, for A/Bs)."""
MIN_FUNCTIONS = 8
"""Modules with fewer PrimFuncs build as one (a kernel benchmark's module: threads buy nothing)."""
SCHEDULE_THREADS = True
"""False: :func:`hetpart.kernels.schedule` schedules a CPU module's functions in turn (with
:data:`ENABLED` on, its lowering still on threads)."""
CHUNKS_PER_JOB = 2
"""Chunks per thread, so that one large kernel does not leave the other threads idle."""


def jobs() -> int:
    """Threads a build uses: the CPUs this process may run on (not the kernels' thread-pool
    size, :func:`hetpart.targets.num_cores`, which ``TVM_NUM_THREADS=1`` sets to 1 for timing)."""
    return max(1, len(allowed_cpus()))


def map_threads(fn, items: list, threads: int | None = None) -> list:
    """``[fn(x) for x in items]``, on ``threads`` threads (default :func:`jobs`) when
    :data:`SCHEDULE_THREADS` and :data:`ENABLED` are on and there are :data:`MIN_FUNCTIONS`
    items; results in order, the first exception raised.  For :func:`hetpart.kernels.schedule`:
    each PrimFunc is scheduled on its own (its rules read no state another one writes); the
    Python of the rules holds the GIL, TVM's schedule primitives (about half of scheduling)
    release it."""
    threads = threads or jobs()
    if not (ENABLED and SCHEDULE_THREADS) or threads < 2 or len(items) < MIN_FUNCTIONS:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hetpart-schedule") as pool:
        return list(pool.map(fn, items))


def chunks(names: list[str], n: int) -> list[list[str]]:
    """``names`` dealt round-robin into at most ``n`` lists of at least two each (neighbouring
    kernels differ in size more than kernels ``n`` apart; every list keeps the module's order).
    in: function names, n >= 1. out: a partition of ``names``; one list when ``n`` < 2 or fewer
    than 4 names."""
    n = max(1, min(n, len(names) // 2))
    return [names[i::n] for i in range(n)]


def _tir_module(mod: tvm.IRModule, names: list[str]) -> tvm.IRModule:
    by_name = {gv.name_hint: (gv, f) for gv, f in mod.functions_items()}
    return tvm.IRModule({by_name[n][0]: by_name[n][1] for n in names}, attrs=mod.attrs)


def build_tir(tir_mod: tvm.IRModule, target, tir_pipeline, threads: int | None = None):
    """``tvm.tirx.build(tir_mod, target, tir_pipeline)`` as several LLVM modules built on
    ``threads`` threads (default :func:`jobs`): the first, importing the others."""
    threads = threads or jobs()
    if not ENABLED:
        return tvm.tirx.build(tir_mod, target=target, pipeline=tir_pipeline)
    names = [gv.name_hint for gv, f in tir_mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    parts = chunks(names, threads * CHUNKS_PER_JOB) if len(names) >= MIN_FUNCTIONS else [names]
    if len(parts) < 2:
        return tvm.tirx.build(tir_mod, target=target, pipeline=tir_pipeline)
    ctx = tvm.transform.PassContext.current()

    def one(part):
        with ctx:
            return tvm.tirx.build(_tir_module(tir_mod, part), target=target, pipeline=tir_pipeline)

    with ThreadPoolExecutor(max_workers=min(threads, len(parts)), thread_name_prefix="hetpart-codegen") as pool:
        libs = list(pool.map(one, parts))
    for lib in libs[1:]:
        libs[0].import_module(lib)
    return libs[0]


def compile(mod: tvm.IRModule, target, tir_pipeline="default", threads: int | None = None):  # noqa: A001
    """``tvm.compile(mod, target, tir_pipeline=tir_pipeline)`` for a CPU ``target`` (Relax's default
    pipeline, bytecode VM), the kernels by :func:`build_tir`; the plain call when :data:`ENABLED`
    is off or the module carries external modules.  Call it inside the build's PassContext."""
    from tvm.relax import vm_build

    if not ENABLED:
        return tvm.compile(mod, target, tir_pipeline=tir_pipeline)
    with target:
        lowered = relax.get_pipeline("default")(mod)
    attrs = dict(lowered.attrs) if lowered.attrs else {}
    if attrs.get("external_mods") or vm_build._auto_attach_system_lib_prefix(  # noqa: SLF001
            lowered, target, None).get_attr("system_lib_prefix") is not None:
        return tvm.compile(mod, target, tir_pipeline=tir_pipeline)
    builder = relax.ExecBuilder()
    left = vm_build._vmcodegen(builder, lowered, "bytecode")  # noqa: SLF001
    tir_mod = vm_build._filter_tir(left)  # noqa: SLF001
    lib = None if tir_mod is None else build_tir(tir_mod, target, tir_pipeline, threads)
    params = dict(attrs.get("const_name_to_constant", {}))
    return vm_build.VMExecutable(vm_build._ffi_api.VMLink(builder, target, lib, [], params))  # noqa: SLF001


def export_library(executable, file_name: str, threads: int | None = None) -> None:
    """``executable.export_library(file_name)`` (a shared library, linked by TVM's default
    ``create_shared``), with every LLVM module's object and the packed imports written on
    ``threads`` threads; TVM's own export when :data:`ENABLED` is off or the module tree holds
    anything but LLVM modules."""
    from tvm.runtime import _ffi_api
    from tvm.support import cc

    mod = executable.mod
    modules = mod._collect_dso_modules()  # noqa: SLF001
    if not ENABLED or len(modules) < 2 or any(m.kind != "llvm" for m in modules):
        executable.export_library(file_name)
        return
    first = modules[0]
    is_system_lib = first.get_function("__tvm_is_system_module")()
    llvm_target = first.get_function("_get_target_string")()
    prefix = first.get_function("__tvm_get_system_lib_prefix")() or ""
    with tempfile.TemporaryDirectory(prefix="hetpart-export-") as work:
        files = [os.path.join(work, f"lib{i}.o") for i in range(len(modules))]
        jobs_ = [(m, f) for m, f in zip(modules, files)]
        if mod.imports:
            devc = os.path.join(work, f"{prefix}devc.o")
            jobs_.insert(0, (None, devc))  # the largest (the weights) first
            files.append(devc)

        def write(job):
            module, path = job
            if module is None:
                module = _ffi_api.ModulePackImportsToLLVM(mod, is_system_lib, llvm_target, prefix)
            module.write_to_file(path)

        with ThreadPoolExecutor(max_workers=min(threads or jobs(), len(jobs_)),
                                thread_name_prefix="hetpart-export") as pool:
            list(pool.map(write, jobs_))
        cc.create_shared(str(file_name), files)


__all__ = ["CHUNKS_PER_JOB", "ENABLED", "MIN_FUNCTIONS", "SCHEDULE_THREADS", "build_tir", "chunks", "compile",
           "export_library", "jobs", "map_threads"]
