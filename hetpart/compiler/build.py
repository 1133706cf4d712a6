"""Compile a plan: build every partition for its device, in parallel, into a staging dir.

In: a plan (``plan.partitions``; ``plan.graph`` or an explicit op graph) and how to
reach the devices (``simulate``, ``cuda_arch``).  Out: a :class:`CompiledModel` whose
libraries sit in a private staging directory until :meth:`CompiledModel.save`.

Each partition goes through :func:`hetpart.kernels.build` -- the one per-target build
the cost model measures with too -- with CUDA graph capture on for real GPUs, then
``export_library``.  Partitions build on a thread pool: TVM's C++ passes, LLVM/NVRTC
code generation and the linker subprocess release the GIL, so one partition's
Python-side scheduling overlaps another's code generation (threads, not processes:
an IRModule need not be serialised, and a process pool would pay a TVM import per
worker).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from .. import kernels, targets
from ..errors import CompileError, HetpartError, PlanError, TargetError
from ..kernels.options import DEFAULT, KernelOptions
from ..kernels.tuning import default_database
from ..importer.op_graph import OpGraph
from ..partitioner.plan import Plan
from .artifact import CompiledModel, PartitionArtifact, WeightFile, sha256_of, target_json
from . import external as external_weights_policy
from .external import EXTERNAL_MIN_BYTES, WeightLifter, write_weight_file
from .extract import PartitionProgram, extract, slot_graph_signature, static_io_signature, tensor_spec
from .precision import lower_plan_weights, options_for, with_precision
from .precision import resolve as precision_of

log = logging.getLogger(__name__)


def compile(plan: Plan, graph: OpGraph | None = None, *, simulate: bool = False, cuda_arch: str | None = None,
            cpu_arch: str | None = None, jobs: int | None = None,
            progress: bool = True, options: KernelOptions = DEFAULT,
            library_cache: "LibraryCache | None" = None, precision=None,
            external_weights: int | None | str = external_weights_policy.DEFAULT) -> CompiledModel:  # noqa: A001
    # (``compile`` is the public name)
    """Compile every partition of ``plan`` for its device.

    ``graph`` defaults to ``plan.graph``.  ``simulate`` compiles ``cuda`` partitions
    for the CPU (they keep ``device="cuda"``); ``cuda_arch`` (``"sm_90"``)
    cross-compiles them for a GPU this machine need not have.  ``cpu_arch`` (an LLVM
    CPU name such as ``"x86-64-v3"`` or ``"sapphirerapids"``) builds the CPU code --
    CPU partitions and the host side of CUDA ones -- for another machine's CPU;
    default: this machine's.  ``jobs`` partitions build at once (default: one per
    core, at most one per partition); ``progress`` shows a bar on a terminal.
    ``options``: the kernel options (TF32, split-K, SM count) every partition is built
    with, recorded in the manifest.  ``library_cache`` (a :class:`LibraryCache`
    shared by several compiles, e.g. the shape buckets of one model) reuses the library
    of a partition built before whose module, target and options are the same.
    ``precision`` (a :class:`~hetpart.contracts.precision.Precision` or
    ``"cuda=bf16,cpu=fp32"``; default: the plan's): each partition's float32 weights
    are stored in its device's format (:mod:`.precision`), recorded in the manifest.
    ``external_weights`` (bytes): a partition whose weights exceed it keeps them all in
    a ``.params.bin`` file instead of its library (:mod:`.external`: why, and why the
    default, :data:`~.external.EXTERNAL_MIN_BYTES`, is 256 MiB); 0 does so for every
    partition with weights, None for none.  Recorded in the manifest (``external_min_bytes``).

    Raises :class:`~hetpart.errors.PlanError` when the plan does not fit the graph (or
    places a partition of a graph imported with ``conv_block`` off the CPU) and
    :class:`~hetpart.errors.CompileError` naming the partition (and function)
    that failed to build.
    """
    _check_arguments(plan, graph)
    graph = graph if graph is not None else plan.graph
    if graph is None:
        raise CompileError("the plan carries no op graph; pass the graph: compile(plan, graph)")
    start = time.perf_counter()
    external_weights = external_weights_policy.resolve(external_weights)
    _require_cxx()
    prec = precision_of(plan, precision)
    plan = with_precision(plan, graph, prec)
    options = options_for(options, prec)
    programs = extract(lower_plan_weights(graph, plan, prec), plan)
    _cpu_only_layout(graph, programs)
    specs = {d: _resolve(d, simulate, cuda_arch, cpu_arch) for d in _devices(programs)}
    staging = tempfile.TemporaryDirectory(prefix="hetpart-compile-")
    artifacts = _build_all(programs, specs, Path(staging.name), jobs, progress, graph.name, options, library_cache,
                           external_weights)
    return CompiledModel(
        plan=plan,
        partitions=artifacts,
        inputs=[tensor_spec(graph, t) for t in graph.inputs],
        outputs=[tensor_spec(graph, t) for t in graph.outputs],
        output_names=list(graph.model_output_names),
        directory=Path(staging.name),
        compile_seconds=time.perf_counter() - start,
        model=plan.model or graph.name,
        targets={d: target_json(s.tvm_target) for d, s in specs.items()},
        simulated=any(s.simulated for s in specs.values()),
        kernel_options=options,
        precision=prec,
        index_limits=dict(graph.index_limits),
        external_min_bytes=external_weights,
        conv_block=graph.conv_block,
        _staging=staging,
    )


def _check_arguments(plan, graph) -> None:
    """CompileError, saying what to pass, unless ``plan`` is a Plan and ``graph`` an
    OpGraph or None (the arguments swapped, a plan file's path, a model file's path)."""
    if isinstance(plan, OpGraph) and isinstance(graph, Plan):
        raise CompileError("compile takes the plan first, then its graph: compile(plan, graph)")
    if not isinstance(plan, Plan):
        hint = (" (a plan file is read with hetpart.partitioner.Plan.load(path, graph))"
                if isinstance(plan, (str, Path)) else "")
        raise CompileError(f"compile takes a plan (hetpart.partition(graph)), got {type(plan).__name__}{hint}")
    if graph is not None and not isinstance(graph, OpGraph):
        raise CompileError(f"compile's graph is the op graph the plan was made of (hetpart.load(model)), "
                           f"got {type(graph).__name__}")


def _cpu_only_layout(graph: OpGraph, programs: list[PartitionProgram]) -> None:
    """A graph imported with channel-blocked convolutions (``graph.conv_block``,
    :mod:`hetpart.importer.conv_layout`) compiles for the CPU only: the GPU rules were
    written and measured for NCHW.  Raises :class:`~hetpart.errors.PlanError` naming the
    first partition placed elsewhere."""
    if not graph.conv_block:
        return
    for p in programs:
        if p.device != "cpu":
            raise PlanError(f"partition '{p.name}' is placed on {p.device}, but the model was imported with "
                            f"conv_block={graph.conv_block} (NCHW{graph.conv_block}c convolutions: all-CPU builds "
                            "only); import it without conv_block or place every partition on the CPU")


def _require_cxx() -> None:
    """Exporting a partition links a shared library: TVM runs the C++ compiler it finds
    ($CXX, $CC, else g++/gcc/clang++/clang/c++/cc on PATH).  Without one it would fail
    deep inside with a TypeError, so say here what is missing and how to get it."""
    from tvm.support.cc import get_cc

    if get_cc() is None:
        raise CompileError("compiling needs a C++ compiler to link each partition's library, and none is on "
                           "PATH (g++, gcc, clang++, clang, c++ or cc; or set CXX); install one, e.g. "
                           "`apt-get install g++` (Debian/Ubuntu) or `dnf install gcc-c++` (Fedora)")


def _resolve(device: str, simulate: bool, cuda_arch: str | None, cpu_arch: str | None) -> targets.TargetSpec:
    spec = targets.resolve(device, simulate=simulate, cuda_arch=cuda_arch)
    if cpu_arch is None:
        return spec
    return dataclasses.replace(spec, tvm_target=with_cpu_arch(spec.tvm_target, cpu_arch))


def with_cpu_arch(target, cpu_arch: str):
    """``target`` with its LLVM ``mcpu`` (or its host's, for a GPU target) set to
    ``cpu_arch``, less the host's AMX ``mattr`` (:func:`hetpart.targets.host_amx_mattr`); :class:`~hetpart.errors.TargetError` if LLVM does not know it."""
    from tvm.target import Target, codegen

    if not codegen.llvm_is_valid_cpu(cpu_arch, targets.host_triple()):
        raise TargetError(f"'{cpu_arch}' is not a CPU LLVM knows; try 'x86-64-v3' (any AVX2 x86 CPU) "
                          f"or a name such as 'sapphirerapids' or 'znver4'")
    spec = target_json(target)
    llvm = spec["host"] if "host" in spec else spec
    llvm["mcpu"] = cpu_arch
    # the host's AMX features (targets.host_amx_mattr) are not the other CPU's
    mattr = [f for f in llvm.get("mattr", []) if f not in targets.host_amx_mattr()]
    if mattr:
        llvm["mattr"] = mattr
    else:
        llvm.pop("mattr", None)
    return Target(spec)


def _devices(programs: list[PartitionProgram]) -> list[str]:
    return list(dict.fromkeys(p.device for p in programs))


def default_jobs(n_partitions: int) -> int:
    """Partitions built at once: one per CPU this process may use, at most one per partition --
    the CPUs, not the kernels' thread-pool size (:func:`hetpart.targets.num_cores`: physical
    cores, or ``TVM_NUM_THREADS``, which timing runs set to 1 and which then built every partition
    in turn)."""
    return max(1, min(n_partitions, kernels.parallel_build.jobs()))


class LibraryCache:
    """Libraries built so far, by (partition module, target, options, external-weight
    threshold): a partition whose module is structurally equal to one built before (same
    kernels, same shapes, same constants) gets a copy of that library, and of its weight
    files, instead of a build.  ``hits`` and ``misses`` count what it saved.
    Thread-safe.  It keeps its own copy of each library and weight file (a compiled
    model's staging directory goes when the model does)."""

    def __init__(self):
        self._entries: dict[tuple, list[tuple[object, Path, PartitionArtifact]]] = {}
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="hetpart-libcache-")
        self.hits = 0
        self.misses = 0

    def key(self, program: PartitionProgram, spec: targets.TargetSpec, options: KernelOptions,
            external_weights: int | None = EXTERNAL_MIN_BYTES) -> tuple:
        import tvm_ffi

        return (tvm_ffi.structural_hash(program.module), json.dumps(target_json(spec.tvm_target), sort_keys=True),
                repr(options), program.dps, program.cuda_graph, program.static_io, external_weights, program.mapped)

    def find(self, key: tuple, program: PartitionProgram):
        import tvm_ffi

        with self._lock:
            for module, path, art in self._entries.get(key, []):
                if tvm_ffi.structural_equal(module, program.module):
                    self.hits += 1
                    return path, art
            self.misses += 1
        return None

    def add(self, key: tuple, program: PartitionProgram, out_dir: Path, art: PartitionArtifact) -> None:
        """Keep copies of ``art``'s library (and weight files, all in ``out_dir``)."""
        with self._lock:
            stem = Path(self._dir.name) / str(sum(map(len, self._entries.values())))
            kept = {}
            for name in _files_of(art):
                kept[name] = stem.with_name(f"{stem.name}-{name}")
                shutil.copyfile(out_dir / name, kept[name])
            self._entries.setdefault(key, []).append((program.module, kept, art))


def _files_of(art: PartitionArtifact) -> list[str]:
    """The files of the artifact directory that belong to ``art``: its library, then its weight files."""
    return [art.library] + [wf.file for wf in (art.weights, art.external) if wf is not None]


def _build_or_reuse(program, spec, out_dir: Path, options, cache: LibraryCache | None,
                    external_weights: int | None = EXTERNAL_MIN_BYTES) -> PartitionArtifact:
    if cache is None:
        return build_partition(program, spec, out_dir, options, external_weights)
    key = cache.key(program, spec, options, external_weights)
    found = cache.find(key, program)
    if found is None:
        art = build_partition(program, spec, out_dir, options, external_weights)
        cache.add(key, program, out_dir, art)
        return art
    kept, art = found
    renamed = {name: name.replace(art.name, program.name, 1) for name in kept}
    for name, path in kept.items():
        shutil.copyfile(path, out_dir / renamed[name])
    library = out_dir / renamed[art.library]
    return dataclasses.replace(
        art, name=program.name, library=library.name, inputs=list(program.inputs), outputs=list(program.outputs),
        kernels=list(program.kernels), contraction_reads=list(program.contraction_reads),
        module=load_library(library, spec.device_type), weights=_renamed(art.weights, renamed), external=_renamed(art.external, renamed))


def _renamed(wf: WeightFile | None, renamed: dict) -> WeightFile | None:
    return None if wf is None else dataclasses.replace(wf, file=renamed[wf.file])


def _build_all(programs, specs, out_dir: Path, jobs, progress, model, options,
               cache: LibraryCache | None = None,
               external_weights: int | None = EXTERNAL_MIN_BYTES) -> list[PartitionArtifact]:
    """Build ``programs`` on ``jobs`` threads; results in plan order."""
    jobs = jobs or default_jobs(len(programs))
    bar = tqdm(total=len(programs), desc=f"compiling {model}", unit="partition",
               file=sys.stderr, disable=None if progress else True)
    with bar, ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="hetpart-compile") as pool:
        futures = [pool.submit(_build_or_reuse, p, specs[p.device], out_dir, options, cache, external_weights)
                   for p in programs]
        results = []
        for f in futures:
            results.append(f.result())
            bar.update(1)
    return results


def build_partition(program: PartitionProgram, spec: targets.TargetSpec, out_dir: Path,
                    options: KernelOptions = DEFAULT,
                    external_weights: int | None = EXTERNAL_MIN_BYTES) -> PartitionArtifact:
    """Build one partition for ``spec`` with ``options``, export ``<name>.so`` into ``out_dir`` and load
    it back (unless it is CUDA code and this machine has no GPU to load it on).  Its
    weights go to ``<name>.params.bin`` instead of the library when they exceed
    ``external_weights`` bytes (:mod:`.external`; never for a streamed partition)."""
    static_io = program.static_io
    cuda_graph = spec.is_gpu and program.cuda_graph
    try:
        try:
            lifter, library = _build_one(program, spec, out_dir, options, external_weights, static_io, cuda_graph)
        except CompileError as exc:
            if not static_io:
                raise
            # TVM's CUDA-graph rewrite over every parameter failed (a form hoist_static_storage does
            # not cover): built as before instead, resident partitions with graphs, streamed without
            log.warning("partition '%s': built without graphs over its inputs and outputs (%s)", program.name, exc)
            static_io, cuda_graph = False, cuda_graph and not program.weights
            lifter, library = _build_one(program, spec, out_dir, options, external_weights, static_io, cuda_graph)
    except HetpartError as exc:
        raise CompileError(f"partition '{program.name}' ({program.device}): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - export runs g++ and TVM; any failure is a compile failure
        raise CompileError(f"partition '{program.name}' ({program.device}) could not be exported: {exc}") from exc
    external = None
    if isinstance(lifter, WeightLifter) and lifter.values:
        external = write_weight_file(out_dir / f"{program.name}.params.bin", lifter.names, lifter.values,
                                     f"partition '{program.name}'")
    return PartitionArtifact(
        weights=_write_weights(program, out_dir),
        external=external,
        mapped=program.mapped and external is not None,
        name=program.name,
        device=program.device,
        device_type=spec.device_type,
        target=target_json(spec.tvm_target),
        library=library.name,
        inputs=list(program.inputs),
        outputs=list(program.outputs),
        kernels=list(program.kernels),
        contraction_reads=list(program.contraction_reads),
        cuda_graph=cuda_graph,
        slot_graphs=program.slot_graphs,
        static_io=static_io,
        sha256=sha256_of(library),
        simulated=spec.simulated,
        dps=program.dps,
        module=load_library(library, spec.device_type),
    )


def _build_one(program: PartitionProgram, spec: targets.TargetSpec, out_dir: Path, options: KernelOptions,
               external_weights: int | None, static_io: bool, cuda_graph: bool):
    """One build of :func:`build_partition`: ``(lifter, library path)``; the lifter holds
    the external weights it took out (a WeightLifter), if any."""
    lifter = (WeightLifter(program.name, external_weights)
              if external_weights is not None and not program.weights else None)
    if program.slot_graphs:  # streamed weights as fixed parameters, last (also when simulated: one convention)
        lifter = slot_graph_signature(program)
    if (static_io or program.mapped) and not program.weights:
        # Every constant lifted out (bound once per runner): the runtime keeps a VM per set of
        # argument addresses, and each VM would copy its library's constants to the GPU again;
        # a mapped partition's are read in place from pinned host memory (external_weights).
        lifter = WeightLifter(program.name, 0)
    lift = static_io_signature(program, lifter) if static_io else lifter  # every parameter fixed
    executable = kernels.build(program.module, spec.tvm_target, cuda_graph=cuda_graph,
                               tuning_db=default_database(spec.tvm_target), options=options, lift=lift)
    library = out_dir / f"{program.name}.so"
    kernels.parallel_build.export_library(executable, str(library))  # objects written on threads
    return lifter, library


def _write_weights(program: PartitionProgram, out_dir: Path) -> WeightFile | None:
    """Write a streamed partition's weights packed into ``<name>.weights.bin``; None
    for a partition without streamed weights."""
    if not program.weights:
        return None
    return write_weight_file(out_dir / f"{program.name}.weights.bin", [w.name for w in program.weights],
                             program.weight_values, f"partition '{program.name}'")


def load_library(path: Path, device_type: str):
    """The runtime module in ``path``, or None for CUDA code on a machine without a
    GPU (TVM cannot load a CUDA module there; the file is still complete).  Its ELF
    structure is checked first (:func:`.elf.check_bounds`): a library TVM's LLVM cut at
    4 GiB would crash the process in ``LoadFromFile``; it is a CompileError instead."""
    import tvm

    from .elf import check_bounds

    check_bounds(path)
    if device_type == "cuda" and not targets.cuda_available():
        return None
    kernels.cuda_compile.install()  # a cross-compiled library's CUDA C is compiled now
    try:
        return tvm.runtime.load_module(str(path))
    except Exception as exc:  # noqa: BLE001
        raise CompileError(f"cannot load compiled library {path}: {exc}") from exc


__all__ = ["LibraryCache", "build_partition", "compile", "default_jobs", "load_library"]
