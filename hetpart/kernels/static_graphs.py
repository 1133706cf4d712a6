"""The Relax passes a CUDA build whose parameters are all fixed needs around TVM's CUDA-graph rewrite.

A partition built with every parameter fixed (``num_input = 0``,
:func:`hetpart.compiler.extract.static_io_signature`, under ``STATIC_IO_CUDA_GRAPHS``) lets
TVM 0.27's ``RewriteCUDAGraph`` capture the kernels that read its inputs and write its
outputs too.  That rewrite then meets forms it mishandles; :func:`static_graph_passes` puts
hetpart's two fixes in TVM's finalization, and :func:`relax_pipeline` is TVM's default CUDA
pipeline with them, which :func:`hetpart.kernels.build` uses where
:func:`all_parameters_fixed`.  Each pass keeps the program's meaning (its docstring says why).
"""

from __future__ import annotations

import tvm
from tvm.target import Target


def all_parameters_fixed(mod: tvm.IRModule) -> bool:
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


def relax_pipeline(target: Target):
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
