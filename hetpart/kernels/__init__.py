"""Turn fused kernels into fast code for one target.

In: a *fused* Relax module (:func:`hetpart.importer.fusion.fuse`'s output: ``main``
calls fused PrimFuncs such as ``fused_conv2d_add_relu``) and a TVM target.  Out:
the same module with every PrimFunc scheduled (:func:`schedule`), or a compiled VM
executable (:func:`build`).  TVM 0.27 schedules nothing on CPUs by default (serial
scalar loops) and its GPU defaults leave speed on the table; the rules in
:mod:`hetpart.kernels.rules` fill that gap without any tuning.  Tuning is opt-in
(:mod:`hetpart.kernels.tuning`); its records take precedence over the rules.

Invariant: scheduling never changes what a function computes, only its loops --
except that the CPU reduction, injective, conv2d and matmul rules compute float32
``exp``, ``sigmoid`` and ``tanh`` by :func:`~hetpart.kernels.fast_exp.replace_exp`
(within 4, 6 and 16 ulps, same special values), since LLVM leaves ``exp`` a scalar libm call per element; a
function no rule can schedule is left as it was (on a CPU with its outer loop run in
parallel where legal).  Each scheduled function records the rule that scheduled it
in the attribute ``hetpart.rule``.
"""

from __future__ import annotations

import logging

import tvm
from tvm import tirx
from tvm.target import Target

from ..errors import CompileError
from .analysis import RULE_ATTR, SCHEDULED_ATTR, copy_module, is_cpu, is_gpu
from . import (cuda_compile, cuda_pipeline, flash_substitute, parallel_build, stack_tiles, static_graphs, weight_prepack,
               wgmma_substitute)
from .cuda_bool_vectors import unvectorize_bool_access
from .options import DEFAULT, KernelOptions
from .rules import cpu_rules, gpu_rules, rule_name

log = logging.getLogger(__name__)

# TVM's CUDA compile callback uses fast math (powf of a negative base is NaN): every
# CUDA module this process builds or loads is compiled by hetpart's instead.
cuda_compile.install()


def rules_for(target: Target, options: KernelOptions = DEFAULT) -> list:
    """The rule list :func:`schedule` tries for ``target`` with ``options`` (see :mod:`.rules`)."""
    if is_gpu(target):
        return gpu_rules(options)
    if is_cpu(target):
        return cpu_rules()
    return []


def _is_scheduled(func) -> bool:
    return bool(func.attrs is not None and func.attrs.get(SCHEDULED_ATTR, False))


def schedule_primfunc(func: tirx.PrimFunc, target: Target, options: KernelOptions = DEFAULT) -> tirx.PrimFunc:
    """``func`` scheduled by the first rule that applies to it on ``target`` with ``options``.

    A rule that raises while scheduling is skipped (logged at debug level), the next
    one tried.  Returns ``func`` unchanged when it is already scheduled or no rule
    applies; otherwise the new function carries ``tirx.is_scheduled`` and
    ``hetpart.rule``.
    """
    target = _as_target(target)
    if _is_scheduled(func):
        return func
    for rule in rules_for(target, options):
        try:
            with target:  # dlight GPU rules read Target.current()
                sch = rule.apply(func, target, False)
        except Exception as exc:  # noqa: BLE001 - a rule that cannot cope declines
            log.debug("rule %s failed: %s", rule_name(rule), exc)
            continue
        if sch is None:
            continue
        if isinstance(sch, list):
            sch = sch[0]
        if is_gpu(target):
            unvectorize_bool_access(sch)  # TVM's CUDA C reads a bool pair as ushort2
        return sch.mod["main"].with_attr(SCHEDULED_ATTR, True).with_attr(RULE_ATTR, rule_name(rule))
    return func


def schedule(mod: tvm.IRModule, target: Target, options: KernelOptions = DEFAULT) -> tvm.IRModule:
    """Every not-yet-scheduled PrimFunc of ``mod`` scheduled for ``target`` with ``options``.

    ``mod`` is a fused module (see the module docstring); Relax functions are kept.
    On a CPU target the functions are scheduled on threads (:func:`.parallel_build.map_threads`:
    each independently, as in turn; TVM's schedule primitives release the GIL).
    """
    target = _as_target(target)
    out = copy_module(mod)
    todo = [(gv, func) for gv, func in mod.functions_items()
            if isinstance(func, tirx.PrimFunc) and not _is_scheduled(func)]
    run = parallel_build.map_threads if is_cpu(target) else (lambda fn, items: [fn(x) for x in items])
    for (gv, _), func in zip(todo, run(lambda item: schedule_primfunc(item[1], target, options), todo)):
        out[gv] = func
    return out


def rules_applied(mod: tvm.IRModule) -> dict[str, str]:
    """``{function name: rule name}`` of the scheduled PrimFuncs of ``mod`` (tuned
    ones say ``"tuned"``; unscheduled ones are absent)."""
    out = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and func.attrs is not None and RULE_ATTR in func.attrs:
            out[gv.name_hint] = str(func.attrs[RULE_ATTR])
    return out


def build(
    mod: tvm.IRModule,
    target: Target,
    *,
    cuda_graph: bool = True,
    tuning_db: str | None = None,
    options: KernelOptions = DEFAULT,
    lift=None,
):
    """Compile a fused module for one target into a VM executable, with the
    code-generation choices ``options`` (:mod:`.options`; they affect GPU code only).

    The single path by which hetpart compiles kernels (the cost model's
    microbenchmarks and the compiler alike), so a kernel measured is the kernel run:

    1. with ``tuning_db`` (a MetaSchedule work dir holding records), apply the tuned
       schedules found there (:func:`hetpart.kernels.tuning.apply_database`);
    2. :func:`schedule` every other PrimFunc with hetpart's rules; the weights those
       schedules repack (CPU panels, the GPU tensor-core layout) are packed now, once
       (:mod:`.weight_prepack`);
    3. ``lift`` (optional, ``IRModule -> IRModule``), e.g. the compiler's
       :class:`~hetpart.compiler.external.WeightLifter`, which turns the (packed)
       weight constants into parameters so the library does not embed them;
    4. ``tvm.compile`` with TVM's remaining lowering (on a CPU its kernels lowered and
       code-generated on several threads, :mod:`.parallel_build`); on CUDA with
       ``relax.backend.use_cuda_graph`` when ``cuda_graph``; a module with
       tensor-core kernels through :mod:`.cuda_pipeline` (TVM's TIR pipeline, every
       warp buffer lowered).

    Returns what ``relax.VirtualMachine(ex, dev)`` takes.  Raises
    :class:`~hetpart.errors.CompileError` naming the function that failed.
    """
    target = _as_target(target)
    cuda_compile.install()
    if tuning_db is not None:
        from .tuning import apply_database

        mod = apply_database(mod, target, tuning_db)
    # options.wgmma (default wgmma_match.WGMMA_GEMM, off): dense layers replaced by the hand-written wgmma GEMM first
    # and attention triples a bf16 CUDA partition marked (importer.flash_triples) by the flash kernel on sm_90
    mod = wgmma_substitute.substitute(weight_prepack.mark_weights(mod), target, options)
    mod = schedule(flash_substitute.substitute(mod, target), target, options)
    if is_cpu(target):
        mod = weight_prepack.split_and_fold(mod, weight_prepack.packing_target(target))
    else:
        # Packing functions left in the module (weights passed as parameters, lifted
        # into main_transform_params) run on the GPU too: schedule them as well.
        mod = schedule(weight_prepack.split_and_fold(mod, Target(weight_prepack.HOST_TARGET)), target, options)
    if lift is not None:
        mod = lift(mod)
    config = {}
    tir_pipeline = "default"
    if target.kind.name == "cuda" and cuda_pipeline.has_warp_buffers(mod):
        # Tensor-core kernels: every warp buffer lowered (cuda_pipeline), and no TIR CSE,
        # which runs before that lowering and hides the lane term of a warp buffer's
        # index in a let-bound variable the lowering rejects (nvcc does its own CSE).
        tir_pipeline = cuda_pipeline.register()
        config["tirx.disable_cse_tir"] = True
        # Software-pipelined shared-memory stages (the tensor-core rule's) copy with cp.async.
        config["tirx.use_async_copy"] = True
    elif is_cpu(target) and stack_tiles.ENABLED:
        tir_pipeline = stack_tiles.register()  # 1 KiB register tiles on the stack, not the workspace
    relax_pipeline = "default"
    if is_gpu(target) and cuda_graph:
        config["relax.backend.use_cuda_graph"] = True
        if target.kind.name == "cuda" and static_graphs.all_parameters_fixed(mod):
            relax_pipeline = static_graphs.relax_pipeline(target)
    if wgmma_substitute.has_substituted(mod):  # only with options.wgmma on
        tir_pipeline = wgmma_substitute.mixed_pipeline("s_tir" if tir_pipeline == "default" else tir_pipeline)
        target = wgmma_substitute.build_target(target)
    try:
        with tvm.transform.PassContext(opt_level=3, config=config):
            if wgmma_substitute.has_substituted(mod):
                with target:  # the CUDA compile callback reads sm_90a's "a" from the current target
                    return tvm.compile(mod, target, tir_pipeline=tir_pipeline, relax_pipeline=relax_pipeline)
            if is_cpu(target):  # its kernels lowered and code-generated on several threads
                return parallel_build.compile(mod, target, tir_pipeline=tir_pipeline)
            return tvm.compile(mod, target, tir_pipeline=tir_pipeline, relax_pipeline=relax_pipeline)
    except Exception as exc:  # noqa: BLE001 - TVM raises many types; all mean "did not compile"
        culprit = _failing_function(mod, target)
        where = f"function '{culprit}'" if culprit else "the module"
        raise CompileError(f"TVM failed to compile {where} for {target.kind.name}: {_first_line(exc)}") from exc


def _failing_function(mod: tvm.IRModule, target: Target) -> str | None:
    """Name of the first PrimFunc of ``mod`` that fails to build alone, else None
    (then the Relax part failed).  Only called after a failure, so its cost is moot."""
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        try:
            single = tvm.IRModule({gv: func.with_attr("global_symbol", gv.name_hint)})
            tvm.tirx.build(single, target=target)
        except Exception:  # noqa: BLE001
            return gv.name_hint
    return None


def _first_line(exc: Exception) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _as_target(target) -> Target:
    return target if isinstance(target, Target) else Target(target)


def tune(*args, **kwargs):
    """See :func:`hetpart.kernels.tuning.tune` (imported lazily: it needs the ``tune`` extra)."""
    from .tuning import tune as _tune

    return _tune(*args, **kwargs)


__all__ = ["DEFAULT", "KernelOptions", "build", "rules_applied", "rules_for", "schedule", "schedule_primfunc", "tune", "RULE_ATTR"]
