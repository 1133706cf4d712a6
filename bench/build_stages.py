"""Where an all-CPU build's time goes: seconds per stage of the import and of ``hetpart.compile``.

    PYTHONPATH=. python bench/build_stages.py zoo:resnet50 --blocks 0 16
    PYTHONPATH=. python bench/build_stages.py /tmp/dn.onnx --blocks 16 --sides serial parallel
    PYTHONPATH=. python bench/build_stages.py zoo:resnet50 --blocks 16 --json out/stages.json

Per model and layout (``--blocks``: 0 = NCHW, c = the channel-blocked import ``conv_block=c``)
and side (``--sides``: ``serial`` = :data:`hetpart.importer.constant_builds.ENABLED` and
:data:`hetpart.kernels.parallel_build.ENABLED` off, i.e. the build before those modules;
``parallel`` = both on) it imports the model, then compiles it as one all-CPU partition, and
prints each stage's seconds.  Stages are timed by wrapping the functions that do them, in this process:

import:  ``read`` (ONNX -> Relax), ``prepare`` (:func:`~hetpart.importer.fusion.prepare_for_inference`:
         BN folding, the blocked layout), ``fuse`` (legalisation, FoldConstant, FuseOps/FuseTIR;
         ``  of which tirx.build``: FoldConstant compiling each constant subexpression; ``prebuild
         (wall)``: :func:`hetpart.importer.constant_builds.prebuild`, its threads' CPU in the
         import's ``cpu`` only), ``op graph``;
compile: ``extract``, ``schedule`` (hetpart's rules), ``prepack`` (weight packing, its own small
         build included), ``relax`` (Relax pipeline + VM codegen), ``tir passes`` (TVM's TIR
         pipeline: ``tvm.tirx.build`` less its ``llvm ir``), ``llvm ir`` (``target.build.llvm``: LLVM
         IR and its optimisation), ``objects`` (``write_to_file``: machine code), ``link`` (the C++
         compiler), ``load``, ``sha256``.

Per stage it prints CPU seconds (``cpu-s``: the thread's own CPU time, summed over calls and
threads; the linker's from the child-process usage), which other jobs on a shared box barely
move, and for the compile also wall seconds summed over threads (``wall-s``); ``wall`` and
``cpu`` (process CPU seconds, all threads, the linker's included) are the whole import's or
compile's.  ``wall`` is what a user waits for on idle cores.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES_IMPORT = ("read", "prepare", "fuse", "  of which tirx.build", "  prebuild (wall)", "op graph")
STAGES_COMPILE = ("extract", "schedule", "prepack", "relax", "tir passes", "llvm ir", "objects", "link", "load",
                  "sha256")


class Clock:
    """CPU seconds per stage (the calling thread's, ``time.thread_time``; the linker's, a child
    process, from ``RUSAGE_CHILDREN``), summed over calls and threads, and wall seconds likewise
    (``wall_seconds``).  Thread-safe."""

    def __init__(self):
        self.seconds: collections.Counter = collections.Counter()
        self.wall_seconds: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    scope, scope_thread = "", None

    def wrap(self, stage: str, fn, child: bool = False, scoped: bool = False):
        """``fn`` timed as ``stage``; a ``scoped`` stage called inside a :meth:`scope_of` call
        counts as ``SCOPE:stage`` (and, on that call's thread, also ``SCOPE:stage@owner``)."""
        def timed(*args, **kwargs):
            start, cpu = time.perf_counter(), (_children() if child else time.thread_time())
            try:
                return fn(*args, **kwargs)
            finally:
                used = (_children() if child else time.thread_time()) - cpu
                names = [stage]
                if scoped and self.scope:
                    names = [self.scope + stage]
                    if threading.get_ident() == self.scope_thread:
                        names.append(self.scope + stage + "@owner")
                with self._lock:
                    for name in names:
                        self.seconds[name] += used
                        self.wall_seconds[name] += time.perf_counter() - start
        return timed

    def scope_of(self, stage: str, fn):
        """``fn`` timed as ``stage``, the scoped stages it runs (on any thread) named after it."""
        inner = self.wrap(stage, fn)

        def scoped(*args, **kwargs):
            self.scope, self.scope_thread = stage + ":", threading.get_ident()
            try:
                return inner(*args, **kwargs)
            finally:
                self.scope, self.scope_thread = "", None
        return scoped

    def take(self) -> tuple[dict[str, float], dict[str, float]]:
        """(CPU, wall) seconds per stage since the last take."""
        with self._lock:
            out = dict(self.seconds), dict(self.wall_seconds)
            self.seconds, self.wall_seconds = collections.Counter(), collections.Counter()
        return out


def _children() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def instrumented(clock: Clock):
    """Every stage function wrapped by ``clock`` for the duration of the block."""
    import tvm
    import tvm_ffi
    from tvm.support import cc

    from hetpart import kernels
    from hetpart.compiler import build as cbuild
    from hetpart.importer import constant_builds, fusion, relax_import
    from hetpart.kernels import weight_prepack

    tirx_build = sys.modules["tvm.tirx.build"]

    def relax_pipeline(get):
        return lambda *a, **k: clock.wrap("relax", get(*a, **k))

    with contextlib.ExitStack() as stack:
        for obj, name, stage in (
                (relax_import, "read_model", "read"), (relax_import, "to_relax", "read"),
                (fusion, "prepare_for_inference", "prepare"), (relax_import, "build_op_graph", "op graph"),
                (cbuild, "extract", "extract"), (kernels, "schedule_primfunc", "schedule"),
                (tvm_ffi.module.Module, "write_to_file", "objects"),
                (cbuild, "load_library", "load"), (cbuild, "sha256_of", "sha256")):
            stack.enter_context(patched(obj, name, clock.wrap(stage, getattr(obj, name))))
        stack.enter_context(patched(cc, "create_shared", clock.wrap("link", cc.create_shared, child=True)))
        stack.enter_context(patched(constant_builds, "prebuild", clock.wrap("prebuild", constant_builds.prebuild)))
        stack.enter_context(patched(weight_prepack, "split_and_fold",
                                    clock.scope_of("prepack", weight_prepack.split_and_fold)))
        stack.enter_context(patched(tirx_build, "codegen_build",
                                    clock.wrap("llvm ir", tirx_build.codegen_build, scoped=True)))
        fuse = relax_import.fuse_with_ops
        stack.enter_context(patched(relax_import, "fuse_with_ops", clock.wrap("fuse+prepare", fuse)))
        timed = clock.wrap("tirx.build", tvm.tirx.build, scoped=True)
        stack.enter_context(patched(tvm.tirx, "build", timed))
        # FoldConstant (C++) calls the registered "tirx.build": importer.constant_builds's, which
        # calls the module's
        constant_builds.install()
        stack.enter_context(patched(tirx_build, "build", timed))
        stack.enter_context(patched(tvm.relax, "get_pipeline", relax_pipeline(tvm.relax.get_pipeline)))
        # VM codegen (tvm.compile's, or parallel_build's reference to it)
        from tvm.relax import vm_build

        stack.enter_context(patched(vm_build, "_vmcodegen", clock.wrap("relax", vm_build._vmcodegen)))  # noqa: SLF001
        yield


def _cpu() -> float:
    return time.process_time() + _children()


def import_stages(clock: Clock, model: str, block: int, side: str):
    from hetpart import importer
    from hetpart.importer import constant_builds

    clock.take()
    with patched(constant_builds, "ENABLED", side == "parallel"):
        start, cpu = time.perf_counter(), _cpu()
        graph = importer.load(model, conv_block=block or None)
        wall, cpu = time.perf_counter() - start, _cpu() - cpu
    row = {}
    taken = clock.take()
    clock_wall = taken[1]
    for kind, s in zip(("cpu", "wall"), taken):
        row[kind] = {"read": s.get("read", 0.0), "prepare": s.get("prepare", 0.0),
                     "fuse": s.get("fuse+prepare", 0.0) - s.get("prepare", 0.0),
                     "  of which tirx.build": s.get("tirx.build", 0.0), "op graph": s.get("op graph", 0.0)}
    row["wall"]["  prebuild (wall)"] = row["cpu"]["  prebuild (wall)"] = clock_wall.get("prebuild", 0.0)
    row.update(wall_s=wall, cpu_s=cpu)
    return graph, row


def compile_stages(clock: Clock, graph, side: str) -> dict[str, float]:
    from hetpart import compiler
    from hetpart.kernels import parallel_build

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compile_times import plan_from_assignment

    plan = plan_from_assignment(graph, {k: "cpu" for k in graph.kernels}, "cpu")
    clock.take()
    with patched(parallel_build, "ENABLED", side == "parallel"):
        start, cpu = time.perf_counter(), _cpu()
        cm = compiler.compile(plan, progress=False)
        wall, cpu = time.perf_counter() - start, _cpu() - cpu
    row = {}
    for kind, s in zip(("cpu", "wall"), clock.take()):
        row[kind] = {k: s.get(k, 0.0) for k in STAGES_COMPILE}
        # codegen_build runs inside tirx.build; prepack's own build (on its thread or others) is prepack's
        row[kind]["tir passes"] = s.get("tirx.build", 0.0) - s.get("llvm ir", 0.0)
        row[kind]["prepack"] += s.get("prepack:tirx.build", 0.0) - s.get("prepack:tirx.build@owner", 0.0)
    row.update(wall_s=wall, cpu_s=cpu, kernels=len(graph.kernels))
    del cm
    return row


def _fmt(row: dict, keys) -> str:
    return "  ".join(f"{k.strip()} {row.get(k, 0.0):.2f}" for k in keys)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="zoo:NAME or an ONNX path")
    p.add_argument("--blocks", type=int, nargs="+", default=[0, 16], help="0: NCHW; c: conv_block=c")
    p.add_argument("--sides", nargs="+", default=["serial", "parallel"], choices=["serial", "parallel"])
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    clock, rows = Clock(), []
    with instrumented(clock):
        for model in a.models:
            for block in a.blocks:
                layout = "NCHW" if not block else f"NCHW{block}c"
                for side in a.sides:
                    graph, imp = import_stages(clock, model, block, side)
                    print(f"{model} {layout} import {side}: wall {imp['wall_s']:.2f}  cpu {imp['cpu_s']:.2f}  "
                          f"cpu-s: {_fmt(imp['cpu'], STAGES_IMPORT)}", flush=True)
                    row = compile_stages(clock, graph, side)
                    print(f"{model} {layout} compile {side}: wall {row['wall_s']:.2f}  cpu {row['cpu_s']:.2f}  "
                          f"cpu-s: {_fmt(row['cpu'], STAGES_COMPILE)}", flush=True)
                    print(f"{model} {layout} compile {side}: wall-s (summed over threads): "
                          f"{_fmt(row['wall'], STAGES_COMPILE)}", flush=True)
                    rows.append({"model": model, "layout": layout, "side": side, "import": imp, "compile": row})
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
