"""Replace dense layers by the hand-written Hopper ``wgmma`` GEMM (issue 17; off by default).

In:  a fused module with weights marked (:func:`~.weight_prepack.mark_weights`), the build's
     target and :class:`~.options.KernelOptions`.
Out: :func:`substitute`: for an sm_90 CUDA target, the module in which every ``call_tir`` of a
     kernel :func:`.wgmma_match.match` accepts and :func:`.wgmma_match.substituted` takes (all with
     ``options.wgmma`` on -- :class:`~.options.KernelOptions`, default
     :data:`.wgmma_match.WGMMA_GEMM`, off; else a bf16 build's ``bf16``- and ``f32a``-family
     matches above one 128-row tile, :data:`.wgmma_match.WGMMA_BF16` / ``WGMMA_F32A``, on), whose
     weight (and bias) are constants or parameters, calls the ``wgmma`` GEMM instead
     (:func:`.wgmma_splitk.gemm_module`: the GEMM, and for split-K its reduction; its layout
     -- bn, stages, 128B swizzle, consumer warpgroups, split, and with
     :data:`.wgmma_variant.WARP_PRODUCER_ROWS` set the producer -- :func:`.wgmma_variant.choose`'s
     for the match's M, N, K and precision) on the activation viewed as ``[M, K]``, the weight
     packed now as ``[N, K]`` (``tf32r``: float32 rounded to tf32, nearest, ties away;
     ``f32a`` / ``bf16``: its bf16 bits), the bias widened to float32 and a residual
     (a ``bias_residual`` / ``residual`` epilogue) viewed as ``[M, N]``, the result viewed
     back in the call's shape (of the call's dtype: a bf16 A is passed as is, the ``bf16``
     family; an output the fused kernel rounds to bf16 is stored bf16 by the GEMM or, split,
     its reduction: ``out_dtype``).  A ``call_tir_inplace`` of such a
     kernel (a partition's output, written by ``main_dps``) is rewritten the same way, its last
     kernel (split-K's reduction, or the GEMM at split 1) called in place on an ``[M, N]`` view
     of the destination: ``main`` and ``main_dps`` -- and the cost model's one-kernel module,
     which has no in-place call -- run the same kernels.  A split GEMM with no bias and no residual
     (its reduction a ``call_tir`` of the partials alone, which Relax's RewriteDataflowReshape
     cannot inspect in a function without blocks) keeps its fused kernel unless written in
     place.  The module unchanged otherwise -- always with the switches off, and for TF32 and
     float32 builds while ``options.wgmma`` is.  :func:`mixed_pipeline` / :func:`build_target`: the
     TIR pipeline and target :func:`hetpart.kernels.build` compiles such a module with.
Invariant: a substituted call computes the fused kernel's function (same shapes and dtypes
in and out; numerics: :mod:`.wgmma_match`'s and the spike write-up's section 6); the new
PrimFuncs carry ``tirx.is_scheduled`` (no rule touches them), ``hetpart.rule`` =
:data:`RULE` and :data:`TIRX_ATTR` (compiled by TVM's ``tirx`` pipeline, everything else by
the pipeline the build chose).  Design: ``bench/results/gpu-wgmma-spike.md`` section 6.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.target import Target

from . import wgmma_match as wm
from . import wgmma_splitk as wsk
from . import wgmma_variant as wv
from .call_substitution import rewrite_calls
from .analysis import HAND_WRITTEN_ATTR, RULE_ATTR, SCHEDULED_ATTR, copy_module, is_hand_written
from .options import DEFAULT, KernelOptions

RULE = "WgmmaGemm"
"""``hetpart.rule`` of a substituted kernel (and its split-K reduction)."""
TIRX_ATTR = HAND_WRITTEN_ATTR
"""PrimFunc attribute: compile with TVM's ``tirx`` pipeline (hand-written, no blocks)."""
MIXED_PREFIX = "hetpart_mixed_"


def substitute(mod: tvm.IRModule, target: Target, options: KernelOptions = DEFAULT) -> tvm.IRModule:
    """``mod`` with the eligible dense layers calling the ``wgmma`` GEMM (module doc); ``mod``
    itself (the same object) when the switches are off, the target not sm_90 or nothing is taken."""
    matches = taken(mod, target, options)
    if not matches:
        return mod
    rewriter = _Substituter(copy_module(mod), matches, options)
    out = rewrite_calls(mod, rewriter, matches)
    if out is None:
        return mod
    if rewriter.lifts:
        out = relax.transform.LiftTransformParams()(out)
    return out


def taken(mod: tvm.IRModule, target: Target, options: KernelOptions = DEFAULT) -> dict[str, wm.WgmmaGemm]:
    """``{PrimFunc name: match}`` of the fused kernels of ``mod`` that :func:`substitute` takes with the
    same ``target`` and ``options`` (empty when the switches are off or the target is not sm_90);
    recognition only -- ``mod`` unchanged.  A taken kernel may still be kept where the rewrite
    cannot replace its call (module doc: a split GEMM with no bias and no residual, not in place):
    the PrimFuncs :func:`substitute`'s result no longer has are the ones replaced."""
    if not (options.wgmma or wm.WGMMA_BF16 or wm.WGMMA_F32A) or not wm.eligible_target(target):
        return {}
    matches = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and not (func.attrs is not None and func.attrs.get(SCHEDULED_ATTR, False)):
            found = wm.match(func, target, options)
            if found is not None and wm.substituted(found, options) and len(func.params) == _arity(found):
                matches[gv.name_hint] = found
    return matches


def _arity(found: wm.WgmmaGemm) -> int:
    """The parameters a kernel computing ``found`` alone has: (x, w[, b][, r], out)."""
    return 3 + (found.bias is not None) + (found.residual is not None)


def has_substituted(mod: tvm.IRModule) -> bool:
    """True when a PrimFunc of ``mod`` asks for the ``tirx`` pipeline (:data:`TIRX_ATTR`)."""
    return any(is_hand_written(f) for _, f in mod.functions_items())


def build_target(target: Target) -> Target:
    """``target`` for ``sm_90a`` (wgmma is an arch-specific feature of compute 9.0)."""
    conf = dict(target.export())
    conf["arch"] = "sm_90a"
    return Target(conf)


def mixed_pipeline(base: str) -> str:
    """Register (idempotent) and name a TIR pipeline: :data:`TIRX_ATTR` functions through
    TVM's ``tirx`` pipeline, the others through ``base`` (a registered pipeline name), the
    host/device finalisation ``base``'s."""
    name = MIXED_PREFIX + base

    def factory():
        base_main, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline(base)
        tirx_main, _, _ = tvm.tirx.get_tir_pipeline("tirx")

        @tvm.transform.module_pass(opt_level=0, name="hetpart.MixedTIRPipeline")
        def main(mod, _ctx):
            marked = tvm.IRModule({gv: f for gv, f in mod.functions_items() if is_hand_written(f)})
            rest = tvm.IRModule({gv: f for gv, f in mod.functions_items()
                                 if not any(gv.same_as(g) for g in marked.get_global_vars())}, attrs=mod.attrs)
            out = base_main(rest)
            if len(marked.get_global_vars()):
                out.update(tirx_main(marked))
            return out

        return main, finalize_host, finalize_device

    tvm.tirx.compilation_pipeline.register_tir_pipeline(name, factory)
    return name


def pack_weight(w: np.ndarray, layout: str, precision: str) -> np.ndarray:
    """The weight as the kernel reads it: ``[N, K]`` contiguous (``layout`` ``"KN"``
    transposed), float32 rounded to tf32 for ``tf32r`` (:func:`round_tf32`), bf16 as is for
    ``f32a``."""
    w = np.ascontiguousarray(w.T if layout == "KN" else w)
    return round_tf32(w) if precision == "tf32r" else w


def round_tf32(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` rounded to the nearest tf32 value, ties away from zero (PTX's
    ``cvt.rna.tf32.f32``: add half a unit of the 13 dropped bits to the magnitude, then drop
    them); NaN stays NaN, infinities stay."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = np.where(finite, (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000), bits)
    return rounded.astype(np.uint32).view(np.float32)


def _out(found: wm.WgmmaGemm) -> dict:
    """``gemm_module``'s ``out_dtype`` argument where the output is narrowed (none otherwise: the
    float32 kernels built exactly as before)."""
    return {} if found.out_dtype == "float32" else {"out_dtype": found.out_dtype}


def _view(x, shape, dtype: str):
    """``x`` reshaped as a view (``vm.builtin.reshape``): a Relax ``reshape`` of a function's
    input or output stays a copy kernel (RewriteDataflowReshape skips those)."""
    shape = shape if isinstance(shape, relax.ShapeExpr) else relax.ShapeExpr([tirx.IntImm("int64", int(d)) for d in shape])
    return relax.op.call_pure_packed("vm.builtin.reshape", x, shape, ty_args=relax.TensorType(shape, dtype))


def _round_tf32_te(w):
    """TE of :func:`round_tf32` (the packing of a weight passed as a parameter)."""
    from tvm import te

    def one(*i):
        bits = tirx.reinterpret("uint32", w(*i))
        finite = (bits & tirx.const(0x7F800000, "uint32")) != tirx.const(0x7F800000, "uint32")
        rounded = (bits + tirx.const(0x1000, "uint32")) & tirx.const(0xFFFFE000, "uint32")
        return tirx.reinterpret("float32", tirx.Select(finite, rounded, bits))

    return te.compute(w.shape, one, name="round_tf32")


def _destination(call, args: list):
    """The buffer a ``call_tir_inplace`` writes its (single) output into -- a partition's
    output, passed to ``main_dps`` -- or None (``call_tir``, or an output not in place)."""
    if call.op.name != "relax.call_tir_inplace":
        return None
    index = int(call.attrs.inplace_indices[0])
    return args[index] if index >= 0 else None


def _last_call(bb, kernel, args: list, ty, dest):
    """The call producing the ``[M, N]`` result: ``call_tir`` (a fresh tensor), or, with a
    destination, ``call_tir_inplace`` writing into a ``[M, N]`` view of it -- so ``main_dps``
    writes its output where the caller asked, as the replaced call did (the view shares the
    destination's memory: ``vm.builtin.reshape``)."""
    if dest is None:
        return relax.call_tir(kernel, relax.Tuple(args), ty)
    view = bb.emit(_view(dest, [int(d) for d in ty.shape.values], str(ty.dtype)))
    return relax.call_tir_inplace(kernel, relax.Tuple([*args, view]), [len(args)], ty)


@relax.expr_functor.mutator
class _Substituter(relax.PyExprMutator):
    """See :func:`substitute`."""

    def __init__(self, mod: tvm.IRModule, matches: dict, options: KernelOptions) -> None:
        super().__init__(mod)
        self._matches, self._options = matches, options
        self.added: set[str] = set()
        self.lifts = False  # a weight parameter packed by Relax bindings (to lift)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name in ("relax.call_tir", "relax.call_tir_inplace")):
            return call
        found = self._matches.get(call.args[0].name_hint)
        if found is None:
            return call
        args = call.args[1]
        args = list(args.fields) if isinstance(args, relax.Tuple) else [args]
        weight = args[found.weight]
        bias = args[found.bias] if found.bias is not None else None
        if not all(isinstance(a, (tvm.ir.GenericConst, relax.Var)) for a in (weight, bias) if a is not None):
            return call
        m, n, k = found.m, found.n, found.k
        variant = wv.choose(m, n, k, found.precision, sms=self._options.sm_count)
        split = variant.split
        dest = _destination(call, args)
        if split > 1 and bias is None and found.residual is None and dest is None:
            # the reduction would be a call_tir of the partials alone: Relax's RewriteDataflowReshape
            # asks HasReshapePattern about such a call, which fails on a function without blocks
            # (TVM 0.27) -- the fused kernel is kept
            return call
        gemm, reduction = self._kernels(call.args[0].name_hint, found, variant)
        bb = self.builder_
        x = bb.emit(_view(args[found.activation], [m, k], found.activation_dtype))
        w = self._packed_weight(weight, found)
        extra = [self._float32_bias(bias)] if bias is not None else []
        if found.residual is not None:  # float32, the output's shape: viewed as [M, N]
            extra.append(bb.emit(_view(args[found.residual], [m, n], "float32")))
        c_ty = relax.TensorType([m, n], found.out_dtype)  # bfloat16: the last kernel's store rounds
        if split == 1:
            c = bb.emit(_last_call(bb, gemm, [x, w, *extra], c_ty, dest))
        else:
            p = bb.emit(relax.call_tir(gemm, relax.Tuple([x, w]), relax.TensorType([split * m, n], "float32")))
            c = bb.emit(_last_call(bb, reduction, [p, *extra], c_ty, dest))
        return _view(c, call.ty_args[0].shape, found.out_dtype)

    def _packed_weight(self, weight, found: wm.WgmmaGemm):
        """The weight as the kernel reads it (:func:`pack_weight`): packed now when a constant;
        when a parameter (the cost model's one-call modules pass weights so), the same packing as
        Relax bindings on it alone, which ``LiftTransformParams`` moves into
        ``main_transform_params`` (run once before the kernel is timed or called)."""
        if isinstance(weight, tvm.ir.GenericConst):
            return relax.const(pack_weight(weight.value.numpy(), found.weight_layout, found.precision))
        bb = self.builder_
        w = bb.emit(relax.op.permute_dims(weight, [1, 0])) if found.weight_layout == "KN" else weight
        if found.precision == "tf32r":
            w = bb.emit_te(_round_tf32_te, w, primfunc_name_hint="wgmma_round_tf32")
        self.lifts = True
        return w

    def _float32_bias(self, bias):
        if isinstance(bias, tvm.ir.GenericConst):
            return relax.const(bias.value.numpy().astype(np.float32))
        if str(bias.ty.dtype) == "float32":
            return bias
        self.lifts = True
        return self.builder_.emit(relax.op.astype(bias, "float32"))

    def _kernels(self, name: str, found: wm.WgmmaGemm, variant: wv.Variant):
        """The GlobalVars of the GEMM (and reduction) replacing kernel ``name``, added once."""
        prims = wsk.gemm_module(found.m, found.n, found.k, variant.bn, epilogue=found.epilogue,
                                **variant.gemm_options(), **_out(found))
        gvs = []
        for symbol in (wsk.GEMM_SYMBOL, wsk.REDUCE_SYMBOL):
            if symbol not in [gv.name_hint for gv in prims.get_global_vars()]:
                gvs.append(None)
                continue
            new = f"{name}_wgmma" if symbol == wsk.GEMM_SYMBOL else f"{name}_wgmma_reduce"
            func = (prims[symbol].without_attr("global_symbol").with_attr(RULE_ATTR, RULE)
                    .with_attr(TIRX_ATTR, True))
            existing = [gv for gv in self.builder_.get().get_global_vars() if gv.name_hint == new]
            gv = existing[0] if existing else self.builder_.add_func(func, new)
            gvs.append(gv)
            self.added.add(gv.name_hint)
        return gvs[0], gvs[1]


__all__ = ["RULE", "TIRX_ATTR", "build_target", "has_substituted", "mixed_pipeline", "pack_weight", "round_tf32",
           "substitute"]
