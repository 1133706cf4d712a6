"""Measure what a profile is missing for one model: overheads and kernels per device.

In: an :class:`OpGraph`, device names, a profile (path, Profile or None for this
machine's default file).  Out: the updated :class:`Profile`, saved after every
measurement so Ctrl-C or a crash loses nothing already measured; running again
resumes where it stopped (measured signatures are skipped, on any model).

Compiling is the slow part, so each chunk of kernels is compiled in parallel worker
processes (:mod:`.build_pool`), then timed one by one with nothing else running, so
compile work never disturbs a timing.
"""

from __future__ import annotations

from ..kernels.capabilities import unsupported_reason

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import tvm
from tqdm import tqdm

from ..errors import ProfileError
from ..kernels.tuning import default_database
from ..targets import num_cores, resolve
from . import flash_cost, kernel_bench, profile_check
from .build_pool import BuildFailed, BuildPool, error_line
from ..kernels.options import DEFAULT, KernelOptions
from .fingerprint import OPTIONS_KEY, check_options, this_machine
from .kernel_bench import MeasureSettings
from .locate import default_profile_path
from .overhead_bench import CHAIN_LENGTHS, measure_overheads
from .access_pattern import kernel_access, module_access
from .profile_db import KernelFeatures, KernelRecord, Profile
from .schedule_rule import kernel_rule, module_rule


@dataclass
class ProfileReport:
    """What one :func:`profile` call did, per device: measured, reused, failed, seconds;
    ``weight_read``: whether it measured the CPU's cold weight reads (:func:`needs_weight_read`)."""

    measured: dict[str, int]
    reused: dict[str, int]
    failed: dict[str, int]
    seconds: float
    weight_read: bool = False  # the CPU's cold weight-read bandwidth was measured in this call


def open_profile(profile: str | os.PathLike | Profile | None) -> Profile:
    """The profile to measure into: loaded if its file exists, else new; must be this machine's."""
    if isinstance(profile, Profile):
        prof = profile
    else:
        path = Path(profile) if profile is not None else default_profile_path()
        prof = Profile.load(path) if path.exists() else Profile(this_machine(), path=path)
        prof.origin = prof.describe()
    if prof.fingerprint != this_machine():
        where = prof.path or "the given profile"
        raise ProfileError(
            f"{where} was measured on another machine ({'; '.join(prof.fingerprint.differences(this_machine()))}); "
            "measure this machine into another file (--profile PATH)")
    return prof


def adopt_options(prof: Profile, options: KernelOptions) -> None:
    """Record ``options`` as the kernel options ``prof`` is measured with; a profile
    that already holds kernels or overheads measured with others raises
    :class:`ProfileError` (an empty one takes any)."""
    if prof.kernels or prof.overheads or OPTIONS_KEY in prof.settings:
        check_options(prof.settings, options, str(prof.path or "the profile"))
    prof.settings[OPTIONS_KEY] = options.to_json()


def ensure_overheads(prof: Profile, spec, settings: MeasureSettings, pool: BuildPool) -> None:
    """Record ``spec``'s target and, where missing, measure its device's overheads
    (and, for CUDA, the GPU's memory size: a plan's default memory cap; for the CPU,
    its last-level cache: :func:`record_cpu_cache`) into ``prof``, saved.  What every
    other measurement of the device builds on."""
    prof.targets[spec.name] = str(spec.tvm_target)
    if spec.name == "cuda":
        prof.gpu_memory_bytes = int(spec.device().total_global_memory)
    if spec.name == "cpu":
        record_cpu_cache(prof)
    if spec.name not in prof.overheads:
        prof.overheads[spec.name] = measure_overheads(spec.tvm_target, spec.device(), settings, pool)
    prof.save()


def record_cpu_cache(prof: Profile) -> None:
    """Record this machine's last-level CPU cache in ``prof`` (:mod:`.cpu_cache`; kept
    as it was where sysfs does not say).  A hardware fact, read here, at profiling time,
    only: the cost model reads the profile (``CostModel.weights_stay_cached``)."""
    from .cpu_cache import last_level_cache_bytes

    found = last_level_cache_bytes()
    if found is not None:
        prof.cpu_llc_bytes = found


def needs_weight_read(prof: Profile, graph) -> bool:
    """Whether profiling ``graph`` should measure the CPU's cold weight reads by default:
    ``prof`` lacks them, and ``graph``'s weights do not fit in the CPU's last-level cache
    as recorded (the only graphs the cost model floors when it knows the cache:
    ``CostModel.weights_stay_cached``).  A model that fits never uses the value, so it
    does not pay the ~12 s sweep; neither does a machine whose cache is not known
    (then ``partition profile --weight-read`` measures it).  One measurement serves
    every later model of the profile."""
    from .kernel_shape import graph_weight_bytes

    oh = prof.overheads.get("cpu")
    if oh is None or oh.weight_read_Bps is not None or prof.cpu_llc_bytes is None:
        return False
    return graph_weight_bytes(graph) > prof.cpu_llc_bytes


def ensure_weight_read(prof: Profile) -> bool:
    """Measure the CPU's cold weight-read bandwidth (:mod:`.weight_read_bench`: the compiler's
    GEMV over 1 GiB of distinct weights) into ``prof``'s CPU overheads where they lack it;
    True when it measured (``prof`` is not saved: the caller saves).  A profile without the
    CPU's overheads is left as it is: the value belongs beside them."""
    from dataclasses import replace

    import tvm

    from ..targets import cpu_tvm_target
    from .weight_read_bench import measure_weight_read

    oh = (getattr(prof, "overheads", None) or {}).get("cpu")
    if oh is None or oh.weight_read_Bps is not None:
        return False
    sample = measure_weight_read(cpu_tvm_target(), tvm.cpu())
    prof.overheads["cpu"] = replace(oh, weight_read_Bps=sample.bytes_per_s)
    return True


def _distinct_missing(graph, prof: Profile, device: str, target, retry_failed: bool = False) -> list:
    """One kernel per record signature (:func:`.flash_cost.record_signature` for ``target``: a flash
    chain's own, else the kernel's) that ``prof`` lacks on ``device`` (or recorded as failed, if retrying)."""
    seen, out = set(), []
    for k in graph.nodes:
        key = flash_cost.record_signature(graph, k, target)
        rec = prof.record(device, key)
        if key in seen or (rec is not None and not (retry_failed and rec.failed)):
            continue
        seen.add(key)
        out.append(k)
    return out


def is_dynamic(graph, kernel) -> bool:
    """True when a tensor of ``kernel`` has a data-dependent dim: it cannot be built alone."""
    return not all(graph.tensors[t].static for t in (*kernel.inputs, *kernel.outputs))


def _measure_chunk(graph, chunk, spec, prof, settings, pool, bar, options: KernelOptions) -> int:
    """Build ``chunk`` in ``pool``, then time each kernel alone; returns how many failed.

    Each record built or predicted here also names the schedule rule the kernel gets
    on the device (:mod:`.schedule_rule`: the build's own choice, made again here --
    the build ran in a worker process; it is deterministic and takes milliseconds)
    and every record its access pattern (:mod:`.access_pattern`: from the PrimFunc
    alone, so also for a kernel that failed)."""
    dev = spec.device()
    keys = {k.id: flash_cost.record_signature(graph, k, spec.tvm_target) for k in chunk}  # what each is recorded as
    dynamic = [k for k in chunk if is_dynamic(graph, k)]
    for kernel in dynamic:
        prof.add_kernel(spec.name, KernelRecord(keys[kernel.id], KernelFeatures.of(kernel), "dynamic",
                                                error="data-dependent shapes: not measurable alone; cost predicted",
                                                rule=kernel_rule(graph, kernel, spec.tvm_target, options),
                                                access=kernel_access(graph, kernel)))
        bar.update(1)
    chunk = [k for k in chunk if k not in dynamic]
    for kernel in [k for k in chunk if unsupported_reason(k, spec.name)]:
        # Known not to build there; trying can crash the process (see kernels.capabilities).
        prof.add_kernel(spec.name, KernelRecord(keys[kernel.id], KernelFeatures.of(kernel), "failed",
                                                error=unsupported_reason(kernel, spec.name),
                                                access=kernel_access(graph, kernel)))
        bar.update(1)
    chunk = [k for k in chunk if not unsupported_reason(k, spec.name)]
    benched = [kernel_bench.bench_module(graph, k, spec.tvm_target) for k in chunk]  # a failure here is a hetpart bug
    kmods = [km for km, _ in benched]
    built = pool.build_all([km.mod for km in kmods], spec.tvm_target, options)
    tuning_db = default_database(spec.tvm_target)  # what the build applied before the rules
    failed = 0
    for kernel, (kmod, flash), exe in zip(chunk, benched, built):
        feats, key = KernelFeatures.of(kernel), keys[kernel.id]
        if isinstance(exe, BuildFailed):
            rec = KernelRecord(key, feats, "failed", error=f"build failed: {exe}")
        else:
            try:
                rec = KernelRecord(key, feats, "ok", kernel_bench.measure(kmod, exe, dev, settings))
            except Exception as exc:  # noqa: BLE001 - a kernel that crashes at run time cannot run here
                rec = KernelRecord(key, feats, "failed", error=f"run failed: {error_line(exc)}")
            if profile_check.problems_of_record(rec):  # e.g. a NaN time: never stored as a measurement
                rec = KernelRecord(key, feats, "failed",
                                   error=f"unusable timing: {profile_check.problems_of_record(rec)[0]}")
        rec = replace(rec, rule=module_rule(kmod.mod, spec.tvm_target, tuning_db, options),
                      access=module_access(kmod.mod), inputs=kernel_bench.inputs_label(kmod) if rec.ok else "")
        if flash:  # a flash chain (several PrimFuncs; under its chain signature): timed as the flash kernel's chain
            rec = replace(rec, rule=flash_cost.FLASH_RULE, access="", flash=flash_cost.CHAIN)
        failed += not rec.ok
        prof.add_kernel(spec.name, rec)
        prof.save()
        bar.update(1)
    return failed


def profile(graph, targets=("cpu", "cuda"), profile=None, *, settings: MeasureSettings | None = None,
            jobs: int | None = None, progress: bool | None = None, chunk: int | None = None,
            retry_failed: bool = False, label: str | None = None, pool: BuildPool | None = None,
            options: KernelOptions = DEFAULT, weight_read: bool | None = None):
    """Measure ``graph``'s missing kernels (and the devices' overheads) into ``profile``.

    ``targets``: device names (``"cuda"`` needs a GPU: :class:`NoGPUError` otherwise).
    ``profile``: a path, a :class:`Profile`, or None for this machine's default file.
    ``jobs``: compile processes (default: all cores); ``pool``: a :class:`BuildPool`
    to reuse across calls (its workers start once).  ``progress``: tqdm bar on stderr
    (None: only on a terminal).  ``retry_failed``: measure again kernels recorded as
    failed (e.g. after a hetpart upgrade fixed their build).  ``label``: the name the
    profile lists the model under (default ``graph.name``; e.g. ``bert:batch=32``
    to keep a variant apart).  ``options``: the kernel options to build with, recorded
    in the profile (:class:`ProfileError` if it holds timings built with others).
    ``weight_read``: measure the CPU's cold weight-read bandwidth where the profile lacks
    it (:func:`ensure_weight_read`, ~12 s): None (default) when ``graph``'s weights
    exceed the CPU's last-level cache (:func:`needs_weight_read`), True always (with
    "cpu" in ``targets``), False never.
    Returns the :class:`Profile`; its
    ``last_report`` attribute is a :class:`ProfileReport`.
    """
    t0 = time.perf_counter()
    settings = settings or MeasureSettings()
    prof = open_profile(profile)
    if prof.path is None:
        prof.path = default_profile_path()
    adopt_options(prof, options)
    kernel_bench.kernel_builder()  # fail now, not per kernel, if the build is missing
    specs = [resolve(d) for d in targets]
    # no more workers than builds: the pool starts every worker up front (BuildPool.start)
    builds = sum(len(_distinct_missing(graph, prof, s.name, s.tvm_target, retry_failed)) + len(CHAIN_LENGTHS)
                 for s in specs)
    jobs = max(1, min(jobs or num_cores(), builds))
    chunk = chunk or max(4 * jobs, 16)
    measured, reused, failed = {}, {}, {}
    prof.settings.setdefault("repeat", settings.repeat)
    prof.settings.setdefault("min_repeat_ms", settings.min_repeat_ms)
    prof.settings.setdefault("cpu_threads", int(tvm.runtime.num_threads()))
    own_pool = pool is None
    pool = pool or BuildPool(jobs)
    try:
        for spec in specs:
            ensure_overheads(prof, spec, settings, pool)
            todo = _distinct_missing(graph, prof, spec.name, spec.tvm_target, retry_failed)
            keys = {flash_cost.record_signature(graph, k, spec.tvm_target) for k in graph.nodes}
            reused[spec.name] = len(keys) - len(todo)
            failed[spec.name] = 0
            with tqdm(total=len(todo), desc=f"{graph.name} on {spec.name}", unit="kernel",
                      file=sys.stderr, disable=(None if progress is None else not progress)) as bar:
                for i in range(0, len(todo), chunk):
                    failed[spec.name] += _measure_chunk(graph, todo[i:i + chunk], spec, prof, settings, pool, bar,
                                                        options)
            measured[spec.name] = len(todo)
    finally:
        if own_pool:  # on Ctrl-C too: do not wait for queued builds; what was timed is saved
            pool.close()
    prof.models[label or graph.name] = sorted({k.signature for k in graph.nodes})
    wanted = needs_weight_read(prof, graph) if weight_read is None else weight_read
    read = "cpu" in measured and wanted and ensure_weight_read(prof)
    prof.save()
    prof.last_report = ProfileReport(measured, reused, failed, time.perf_counter() - t0, bool(read))
    return prof
