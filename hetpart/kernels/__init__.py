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
from . import cuda_compile, cuda_pipeline, parallel_build, stack_tiles, weight_prepack
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
    mod = schedule(weight_prepack.mark_weights(mod), target, options)
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
        if target.kind.name == "cuda" and _all_parameters_fixed(mod):
            relax_pipeline = _cuda_pipeline_with_hoisted_storage(target)
    try:
        with tvm.transform.PassContext(opt_level=3, config=config):
            if is_cpu(target):  # its kernels lowered and code-generated on several threads
                return parallel_build.compile(mod, target, tir_pipeline=tir_pipeline)
            return tvm.compile(mod, target, tir_pipeline=tir_pipeline, relax_pipeline=relax_pipeline)
    except Exception as exc:  # noqa: BLE001 - TVM raises many types; all mean "did not compile"
        culprit = _failing_function(mod, target)
        where = f"function '{culprit}'" if culprit else "the module"
        raise CompileError(f"TVM failed to compile {where} for {target.kind.name}: {_first_line(exc)}") from exc


def _all_parameters_fixed(mod: tvm.IRModule) -> bool:
    """Some Relax function has ``num_input = 0`` (every parameter fixed for the CUDA-graph
    rewrite: :func:`hetpart.compiler.extract.static_io_signature`)."""
    return any(isinstance(f, tvm.relax.Function) and f.attrs is not None and "num_input" in f.attrs
               and int(f.attrs["num_input"]) == 0 for _, f in mod.functions_items())


def _is_static_storage(binding) -> bool:
    """``x = R.memory.alloc_storage(R.shape([constants]), ...)``: depends on nothing."""
    value = getattr(binding, "value", None)
    return (isinstance(binding, tvm.relax.VarBinding) and isinstance(value, tvm.relax.Call)
            and value.op.same_as(tvm.ir.Op.get("relax.memory.alloc_storage"))
            and isinstance(value.args[0], tvm.relax.ShapeExpr)
            and all(isinstance(v, tvm.tirx.IntImm) for v in value.args[0].values))


@tvm.transform.module_pass(opt_level=0, name="HoistStaticStorage")
def hoist_static_storage(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Each constant-size ``alloc_storage`` binding moved to the front of its block.

    Why: TVM 0.27's ``RewriteCUDAGraph`` emits a captured region's launch where the
    region's first binding was and the cached storages where the first ``alloc_storage``
    was; with every parameter fixed the region can begin at the function's first kernel,
    before that allocation, and the VM codegen fails ("Var storage2 is not defined").
    Such an allocation reads nothing, so it may move first: same program.  Likewise a
    returned tuple of fixed tensors (``main_dps``'s outputs) is a static binding the region
    swallows ("Var gv1 is not defined"): the function returns the tuple expression instead,
    its fields followed through variable aliases (``lv61 = lv6_out``) to what they name."""
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.relax.Function) or not isinstance(func.body, tvm.relax.SeqExpr):
            continue
        blocks, moved, result = [], False, func.body.body
        for block in func.body.blocks:
            first = [b for b in block.bindings if _is_static_storage(b)]
            rest = [b for b in block.bindings if not _is_static_storage(b)]
            moved |= bool(first) and list(block.bindings)[:len(first)] != first
            if rest and isinstance(rest[-1], tvm.relax.VarBinding) and rest[-1].var.same_as(result) and isinstance(
                    rest[-1].value, tvm.relax.Tuple):
                result, moved = rest.pop().value, True  # returned as is, not a binding a region takes
            kind = tvm.relax.DataflowBlock if isinstance(block, tvm.relax.DataflowBlock) else tvm.relax.BindingBlock
            blocks.append(kind(first + rest))
        # through aliases (``lv61 = lv6_out``), which a region swallows too
        alias = {b.var: b.value for blk in func.body.blocks for b in blk.bindings
                 if isinstance(b, tvm.relax.VarBinding) and isinstance(b.value, tvm.relax.Var)}

        def root(e):
            nonlocal moved
            while isinstance(e, tvm.relax.Var) and e in alias:
                e, moved = alias[e], True
            return e

        result = tvm.relax.Tuple([root(f) for f in result.fields]) if isinstance(result, tvm.relax.Tuple) \
            else root(result)
        if moved:
            body = tvm.relax.SeqExpr(blocks, result)
            out[gv] = tvm.relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
    return out


#: Give a CUDA-graph launch whose captured region returns nothing a result register
#: (:func:`keep_graph_launch_results`).  Off: TVM 0.27's VM fails the first call of every
#: build with all parameters fixed (device step 116: a write to the void register).
KEEP_GRAPH_LAUNCH_RESULTS = True

_RUN_OR_CAPTURE = "vm.builtin.cuda_graph.run_or_capture"


def _void_graph_launch(value) -> bool:
    """``R.call_builtin_with_ctx("vm.builtin.cuda_graph.run_or_capture", ...)`` of type ``R.Tuple()``."""
    return (isinstance(value, tvm.relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_builtin_with_ctx"))
            and isinstance(value.args[0], tvm.relax.ExternFunc) and value.args[0].global_symbol == _RUN_OR_CAPTURE
            and isinstance(value.ty, tvm.ir.TupleType) and len(value.ty.fields) == 0)


@tvm.relax.expr_functor.mutator
class _GraphLaunchResults(tvm.relax.PyExprMutator):
    """Rebinds each void graph launch to an ``R.Object`` variable (uses remapped)."""

    def visit_var_binding_(self, binding) -> None:
        value = self.visit_expr(binding.value)
        if not _void_graph_launch(value):
            super().visit_var_binding_(binding)
            return
        value = self.builder_.normalize(tvm.relax.Call(value.op, value.args, value.attrs, [tvm.relax.ObjectType()]))
        var = tvm.relax.Var(binding.var.name, tvm.relax.ObjectType())
        self.builder_.emit_normalized(tvm.relax.VarBinding(var, value))
        self.set_var_remap(binding.var, var)


@tvm.transform.module_pass(opt_level=0, name="KeepGraphLaunchResults")
def keep_graph_launch_results(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Each CUDA-graph launch whose captured region returns nothing (``R.Tuple()``) typed
    ``R.Object`` instead, so the VM codegen gives its result a register.

    Why: with every parameter fixed, ``main_dps``'s region writes only its parameters and
    returns the empty tuple; the codegen then sends ``run_or_capture``'s result to the void
    register, and on its first (capturing) call ``run_or_capture`` runs the capture function
    as a VM closure whose frame takes the *calling instruction's* destination as its return
    register, which ``Ret`` writes without checking (TVM 0.27 vm.cc ``WriteRegister``:
    "Check failed: reg < frame->register_file.size() (2^54 vs. N)").  Same program: the
    result (the empty tuple) is never read.  In: a module after ``RewriteCUDAGraph``; out:
    no such launch of void type."""
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.relax.Function) and isinstance(func.body, tvm.relax.SeqExpr) and any(
                _void_graph_launch(getattr(b, "value", None)) for blk in func.body.blocks for b in blk.bindings):
            out[gv] = _GraphLaunchResults(mod).visit_expr(func)
    return out


def static_graph_passes(finalize: list) -> list:
    """``finalize`` (a Relax backend's finalization passes) with :func:`hoist_static_storage`
    after ``StaticPlanBlockMemory`` and, under :data:`KEEP_GRAPH_LAUNCH_RESULTS`,
    :func:`keep_graph_launch_results` after ``RewriteCUDAGraph``: the passes a build whose
    parameters are all fixed needs around TVM's CUDA-graph rewrite.  Same order otherwise."""
    out = []
    for p in finalize:
        out.append(p)
        if p.info.name == "StaticPlanBlockMemory":
            out.append(hoist_static_storage)
        elif p.info.name == "RewriteCUDAGraph" and KEEP_GRAPH_LAUNCH_RESULTS:
            out.append(keep_graph_launch_results)
    return out


def _cuda_pipeline_with_hoisted_storage(target: Target):
    """TVM's default CUDA pipeline with :func:`static_graph_passes` in its finalization."""
    from tvm.relax.backend.cuda import pipeline as cuda_backend

    finalize = static_graph_passes(cuda_backend.finalize_passes(target))

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(
                cuda_backend.library_dispatch_passes(target) + cuda_backend.legalize_passes(target)
                + cuda_backend.dataflow_lower_passes(target) + finalize)(mod)

    return pipeline


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
