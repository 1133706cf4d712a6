"""Pack model weights into the layout a kernel reads -- once, at compile time.

The CPU matmul and conv2d rules read their vector operand in contiguous panels
(:func:`hetpart.kernels.register_tile._pack_operand`); the GPU tensor-core rule reads
a weight as a ``[N, K]`` matrix padded to whole tiles, K in its own order
(:mod:`hetpart.kernels.rules.gpu_tensor_core`).  When that operand is a
weight of the model, repacking it on every call costs a pass over the weights per
inference (ResNet-50's 100 MB at batch 1).  This module moves that copy to compile
time, with the machinery TVM's MetaSchedule uses for the same job:

1. :func:`mark_weights` (before scheduling) records on each PrimFunc which of its
   parameters are bound to model constants (or to parameters past ``main``'s
   ``num_input``), as Relax's ``AttachAttrLayoutFreeBuffers`` would; the rules read it through
   :func:`hetpart.kernels.analysis.is_layout_free` and annotate the packing block
   with ``meta_schedule.layout_rewrite_preproc``.
2. :func:`split_and_fold` (after scheduling): ``SplitLayoutRewritePreproc`` cuts each
   annotated block out into its own ``<f>_weight_prepack`` PrimFunc that Relax calls
   before ``<f>_prepacked``; then every such call on a constant is evaluated here and
   replaced by the packed constant -- once per weight, even where two Relax
   functions (a partition's ``main`` and ``main_dps``) call it -- and calls on
   parameters are lifted into ``main_transform_params`` (``LiftTransformParams``),
   which the single-kernel benchmarks run once before timing.

Keeps: every value the program computes (the packing is a pure permutation of a
weight's elements).  Removes: the per-call copy, and the unpacked weight constants
the folded calls no longer use.  Packing runs on this machine (:func:`packing_target`:
a CPU build's own target where this machine runs its code, else :data:`HOST_TARGET`);
on a GPU the copy is then a constant uploaded with the others.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx

from ..errors import CompileError
from . import parallel_build
from .analysis import LAYOUT_FREE_ATTR, RULE_ATTR, SCHEDULED_ATTR, contains, copy_module, is_hand_written, runs_on_host
from .register_tile import LAYOUT_REWRITE_PREPROC

PREPACK_SUFFIX = "_weight_prepack"
HOST_TARGET = "llvm"
"""Target the packing of a GPU build's weights is compiled for, and a CPU build's when
this machine cannot run its target's code (see :func:`packing_target`)."""
TRANSFORM_PARAMS = "main_transform_params"


def mark_weights(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with ``layout_free_buffers`` (parameter positions) on every PrimFunc
    that each of its call sites calls with a weight at those positions.

    The attribute Relax's ``AttachAttrLayoutFreeBuffers`` sets, set here in place: that
    pass copies every called PrimFunc under a new name (keeping a public one's
    ``global_symbol``, so the copies then clash at build time)."""
    positions: dict = {}  # GlobalVar -> set of weight positions common to its call sites
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            _collect_weight_args(func, positions)
    out = copy_module(mod)
    for gv, free in positions.items():
        if free:
            out[gv] = mod[gv].with_attr(LAYOUT_FREE_ATTR, sorted(free))
    return out


def _collect_weight_args(func: relax.Function, positions: dict) -> None:
    n_inputs = int(func.attrs["num_input"]) if _has_num_input(func) else len(func.params)
    weights = list(func.params[n_inputs:])

    def is_weight(arg) -> bool:
        return isinstance(arg, tvm.ir.GenericConst) or any(arg.same_as(w) for w in weights)

    def visit(call):
        target = _call_tir(call)
        if target is None:
            return
        gv, args = target
        free = {i for i, a in enumerate(args) if is_weight(a)}
        positions[gv] = positions[gv] & free if gv in positions else free

    relax.analysis.post_order_visit(func.body, lambda e: visit(e) if isinstance(e, relax.Call) else None)


def _call_tir(call) -> tuple | None:
    """``(GlobalVar, [arguments])`` of a ``call_tir``, None for any other call."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir"):
        return None
    args = call.args[1]
    return call.args[0], (list(args.fields) if isinstance(args, relax.Tuple) else [args])


def packing_target(target: tvm.target.Target) -> tvm.target.Target:
    """The LLVM target that packs a ``target`` build's constant weights, here and now.

    in: the build's target. out: ``target`` itself when this machine runs its code
    (:func:`~.analysis.runs_on_host`), else :data:`HOST_TARGET`. invariant: the packing
    runs on this machine, so a cross build (``skylake-avx512`` or ``cascadelake`` from an
    AVX2 host) must not pack with its own ISA -- it died of SIGILL here; the packed
    constants are the same either way (a permutation of the weight's elements).
    """
    if runs_on_host(target):
        return target
    return tvm.target.Target(HOST_TARGET)


def split_and_fold(mod: tvm.IRModule, host: tvm.target.Target) -> tvm.IRModule:
    """Split the annotated packing blocks off and run them now where the weight is a
    constant (``host``: the LLVM target that evaluates them); see the module doc."""
    if not _has_prepack_blocks(mod):
        return mod
    hand = _hand_written(mod)  # no root block: the pass cannot read them (only with options.wgmma)
    if hand:
        mod = copy_module(mod)
        for gv in hand:
            del mod[gv]
    mod = _unscheduled_prepacks(relax.transform.SplitLayoutRewritePreproc()(mod))
    for gv, func in hand.items():
        mod[gv] = func
    mod = _prepack_in_place_calls(mod)
    mod = _fold_constant_prepacks(mod, host)
    if any(_has_num_input(f) for _, f in mod.functions_items()):
        mod = relax.transform.LiftTransformParams()(mod)
    return relax.transform.DeadCodeElimination()(mod)


def _hand_written(mod: tvm.IRModule) -> dict:
    """``{GlobalVar: PrimFunc}`` of the hand-written kernels of ``mod`` (:func:`~.analysis.is_hand_written`)."""
    return {gv: f for gv, f in mod.functions_items() if is_hand_written(f)}


def _prepack_in_place_calls(mod: tvm.IRModule) -> tvm.IRModule:
    """Route every ``call_tir_inplace`` of a split kernel through its packing too.

    ``SplitLayoutRewritePreproc`` rewrites ``call_tir`` sites only.  A partition's
    ``main_dps`` calls the kernels producing its outputs with ``call_tir_inplace``;
    left alone, that call kept the original PrimFunc, whose packing block no thread
    is bound to -- on a GPU build it became host code reading the weight's device
    pointer (the segfault of BERT-base under a 160 MiB cap on the H200, 2026-12-03).
    Here ``call_tir_inplace(f, args)`` becomes ``call_tir_inplace(f_prepacked, args')``
    where each argument ``f_prepacked`` takes packed is packed the way a ``call_tir``
    site of it packs it (every kernel ``main_dps`` calls, ``main`` calls too), then
    folded to a constant like the others."""
    names = {gv.name_hint: gv for gv, _ in mod.functions_items()}
    rewriter = _InPlacePrepacker(mod, names, _packed_arguments(mod))
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = rewriter.visit_expr(func)
    return mod


def _packed_arguments(mod: tvm.IRModule) -> dict:
    """``{<f>_prepacked name: {argument position: (packing GlobalVar, packed type)}}``,
    read off the ``call_tir`` sites: an argument bound to a ``call_tir`` of a packing
    function is a packed one."""
    found: dict = {}
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
            continue
        bound = {b.var: b.value for block in func.body.blocks for b in block.bindings
                 if isinstance(b, relax.VarBinding)}
        for value in bound.values():
            target = _call_tir(value) if isinstance(value, relax.Call) else None
            if target is None or not target[0].name_hint.endswith("_prepacked"):
                continue
            packed = found.setdefault(target[0].name_hint, {})
            for i, arg in enumerate(target[1]):
                source = bound.get(arg) if isinstance(arg, relax.Var) else None
                pack = _call_tir(source) if isinstance(source, relax.Call) else None
                if pack is not None and pack[0].name_hint.endswith(PREPACK_SUFFIX):
                    packed[i] = (pack[0], source.ty_args[0])
    return found


@relax.expr_functor.mutator
class _InPlacePrepacker(relax.PyExprMutator):
    """See :func:`_prepack_in_place_calls`."""

    def __init__(self, mod: tvm.IRModule, names: dict, packed: dict) -> None:
        super().__init__(mod)
        self._names, self._packed = names, packed

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir_inplace"):
            return call
        name = call.args[0].name_hint
        packed_fn = self._names.get(name + "_prepacked")
        if packed_fn is None:
            return call
        positions = self._packed.get(packed_fn.name_hint)
        if not positions:
            raise CompileError(f"kernel '{name}' is called in place and packs a weight, but no call of it shows "
                               "how; please report this model")
        args = list(call.args[1].fields)
        for pos, (pack, ty) in positions.items():
            args[pos] = relax.call_tir(pack, relax.Tuple([args[pos]]), ty)
        return relax.call_tir_inplace(packed_fn, relax.Tuple(args), list(call.attrs.inplace_indices),
                                      call.ty_args[0] if len(call.ty_args) == 1 else list(call.ty_args))


def _unscheduled_prepacks(mod: tvm.IRModule) -> tvm.IRModule:
    """The split-off packing functions inherit their kernel's attributes, "scheduled"
    included; they are plain loops, so drop that mark: a GPU build schedules the ones
    left in the module (weights passed as parameters), which would otherwise reach
    the CUDA build with no thread bound (test_kernels_tensor_core)."""
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and gv.name_hint.endswith(PREPACK_SUFFIX):
            mod[gv] = func.without_attr(SCHEDULED_ATTR).without_attr(RULE_ATTR)
    return mod


def _has_num_input(func) -> bool:
    return isinstance(func, relax.Function) and func.attrs is not None and "num_input" in func.attrs


def _has_prepack_blocks(mod: tvm.IRModule) -> bool:
    return any(isinstance(func, tirx.PrimFunc)
               and contains(func.body, s_tir.SBlock, lambda b: LAYOUT_REWRITE_PREPROC in b.annotations)
               for _, func in mod.functions_items())


def _fold_constant_prepacks(mod: tvm.IRModule, host) -> tvm.IRModule:
    prepacks = {gv.name_hint: f for gv, f in mod.functions_items()
                if isinstance(f, tirx.PrimFunc) and gv.name_hint.endswith(PREPACK_SUFFIX)}
    if not prepacks:
        return mod
    # One build for all of them: a build per weight cost ResNet-50 ~2 s of compile time.
    # (several LLVM modules built on threads, parallel_build; tvm.compile's TIR path when it is off)
    lib = parallel_build.build_tir(
        tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in prepacks.items()}),
        tvm.target.Target(host), "default")
    folder = _PrepackFolder(mod, lib)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = folder.visit_expr(func)
    return mod


@relax.expr_functor.mutator
class _PrepackFolder(relax.PyExprMutator):
    """Replaces ``call_tir(<f>_weight_prepack, (constant,))`` by its value (``lib``:
    the prepack functions built for the host, by name)."""

    def __init__(self, mod: tvm.IRModule, lib) -> None:
        super().__init__(mod)
        self._lib = lib
        self._done: list[tuple[str, object, object]] = []  # (function, weight, packed)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        target = _call_tir(call)
        if target is None:
            return call
        gv, fields = target
        if not gv.name_hint.endswith(PREPACK_SUFFIX) or len(fields) != 1:
            return call
        weight = fields[0]
        if not isinstance(weight, tvm.ir.GenericConst):
            return call  # a parameter: LiftTransformParams takes it
        for name, seen, packed in self._done:
            if name == gv.name_hint and seen.same_as(weight):
                return packed
        packed = relax.const(self._run(gv.name_hint, weight.value, call.ty_args[0]))
        self._done.append((gv.name_hint, weight, packed))
        return packed

    def _run(self, name: str, value, out_ty):
        dev = tvm.cpu()
        out = tvm.runtime.empty([int(d) for d in out_ty.shape.values], str(out_ty.dtype), dev)
        self._lib.get_function(name, query_imports=True)(tvm.runtime.tensor(value.numpy(), dev), out)
        return out.numpy()
