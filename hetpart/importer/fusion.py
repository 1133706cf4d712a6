"""Lower an imported Relax module to TVM's fused kernels, as every target compiles them.

In: the IRModule that ``from_onnx`` returns (high-level Relax ops, weights embedded as
constants).  Out: an IRModule whose ``main`` is one dataflow block of ``call_tir``
bindings, each calling one fused PrimFunc (e.g. ``fused_conv2d_add_relu``).

The passes are TVM's own legalisation and operator fusion -- the same ones TVM's
default CUDA pipeline runs first -- so a node of hetpart's op graph is exactly one
kernel the compiler will emit, on either target (NonMaxSuppression alone is
lowered by hetpart's own kernel, :mod:`.non_max_suppression`).  Batch norms are folded into
the convolutions before them (their weight arithmetic in numpy, see
:mod:`.fold_constants`), as inference compilers do, and ``erf`` is computed by TVM's
fast approximation (:mod:`.fast_erf`); FoldConstant compiles each distinct function it
evaluates once (:mod:`.constant_builds`).  Schedules are *not* applied here:
kernels stay target-neutral until :mod:`hetpart.kernels` schedules them.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .accurate_math import accurate_math
from . import constant_builds, conv_layout
from .bit_shift import guard_shift_range
from .concat_projections import concat_projections
from .constant_take import slice_constant_takes
from .expert_matmul import fuse_expert_gather
from .shared_layout import duplicate_shared_layout
from .fake_quantize import float_fake_quantize
from .qdq_conv import window_rows_2d
from .fast_erf import fast_erf
from .float16_accumulation import accumulate_float16_in_float32
from .fold_constants import fold_weight_arithmetic
from .nan_semantics import propagate_nan
from .non_max_suppression import LEGALIZE as NMS_LEGALIZE
from .top_k import LEGALIZE as TOPK_LEGALIZE

# TVM's legalisations, but NonMaxSuppression and TopK lowered by hetpart's kernels (see
# :mod:`.non_max_suppression`: TOPI's is slow on CPUs and departs from ONNX; :mod:`.top_k`:
# TVM's runtime builtin orders NaN wrongly).
LEGALIZE = {**NMS_LEGALIZE, **TOPK_LEGALIZE}
_PASSES = {"LegalizeOps": lambda: relax.transform.LegalizeOps(LEGALIZE),
           "InjectiveLayoutTransforms": lambda: conv_layout.injective_transforms}

BEFORE_FUSION = ("FoldConstant", "LegalizeOps", "AnnotateTIROpPattern", "FoldConstant", "FuseOps")
AFTER_FUSION = ("FuseTIR", "DeadCodeElimination")


def _run(mod: tvm.IRModule, names, legalize: dict | None = None) -> tvm.IRModule:
    """``mod`` through the passes ``names``; ``legalize``: LegalizeOps's map in place of
    :data:`LEGALIZE`."""
    passes = {**_PASSES, "LegalizeOps": lambda: relax.transform.LegalizeOps(legalize)} if legalize else _PASSES
    seq = tvm.transform.Sequential([(passes[n] if n in passes else getattr(relax.transform, n))() for n in names])
    with tvm.transform.PassContext(opt_level=3):
        return seq(mod)


def fuse(mod: tvm.IRModule) -> tvm.IRModule:
    """Legalise and fuse ``mod``; keeps the function signature of ``main`` unchanged."""
    return fuse_with_ops(mod)[0]


def fuse_with_ops(mod: tvm.IRModule, conv_block: int | None = None) -> tuple[tvm.IRModule, dict[str, tuple[str, ...]]]:
    """Like :func:`fuse`, also returning, per fused PrimFunc, the operators inside it.
    ``conv_block``: convolutions in ``NCHW{conv_block}c`` (:mod:`.conv_layout`; None: NCHW).

    FuseTIR names each fused PrimFunc after the Relax function FuseOps grouped the
    operators into, so reading that group before FuseTIR gives the operator list
    (``{"fused_conv2d_add_relu": ("conv2d", "add", "relu")}``).
    """
    legalize = {**LEGALIZE, **conv_layout.LEGALIZE} if conv_block else None
    names = BEFORE_FUSION
    if conv_block and conv_layout.FUSED_TRANSFORMS:  # layout transforms fuse like any injective op
        names = (*BEFORE_FUSION[:-1], "InjectiveLayoutTransforms", BEFORE_FUSION[-1])
    with constant_builds.cached() as cache:  # FoldConstant builds each distinct function once
        prepared = prepare_for_inference(mod, conv_block)
        constant_builds.prebuild(prepared, cache)  # ... on threads, ahead
        grouped = _run(prepared, names, legalize)
    fused_ops: dict[str, tuple[str, ...]] = {}
    for gv, func in grouped.functions.items():
        if isinstance(func, relax.Function) and func.attrs and "Primitive" in func.attrs:
            fused_ops[gv.name_hint] = tuple(_callees(func))
    return _run(grouped, AFTER_FUSION), fused_ops


def prepare_for_inference(mod: tvm.IRModule, conv_block: int | None = None) -> tvm.IRModule:
    """Fold batch norms into the convolutions before them; other batch norms become
    elementwise arithmetic that fuses into its neighbours (the ReLU after one too); erf becomes TVM's fast
    approximation (:mod:`.fast_erf`); max/min-based ops, reductions and float mod
    give NaN and infinities as ONNX's do (:mod:`.nan_semantics`); bit shifts out of
    range give ONNX's fill (:mod:`.bit_shift`); ``log(1 + u)`` and ``tanh`` keep their
    digits near 0 (:mod:`.accurate_math`); float16 matmuls, convolutions, softmaxes
    and sums accumulate in float32 (:mod:`.float16_accumulation`); a QDQ pair on an
    activation is computed in float (:mod:`.fake_quantize`); :mod:`.qdq_conv`'s im2col
    (``take`` + reshape) is one 2-D compute (:func:`.qdq_conv.window_rows_2d`); projections of one
    input by constant weights are one GEMM when :data:`.concat_projections.CONCAT_PROJECTIONS` is on; a
    ``take`` of one constant row is a strided slice that fuses (:mod:`.constant_take`, first), and a layout
    chain read by several layout ops is copied per reader (:mod:`.shared_layout`, next).  ``conv_block`` (None: NCHW):
    convolutions converted to ``NCHW{conv_block}c`` after the folding, before NaN semantics
    (:mod:`.conv_layout`)."""
    # a take of one constant row as a strided slice, which fuses (a take is an opaque kernel)
    mod = slice_constant_takes(mod)
    # a matmul by gathered expert weights reads them in place (FUSE_EXPERT_GATHER, on)
    mod = fuse_expert_gather(mod)
    # a layout chain read by several layout ops (the slices above): a copy per reader, each fuses into it
    mod = duplicate_shared_layout(mod)
    mod = window_rows_2d(float_fake_quantize(mod))  # qdq_conv's im2col: one 2-D gather
    # DecomposeOpsForInference leaves a batch norm not after a convolution as
    # ``(y, mean, var)[0]``; FuseOps does not fuse across that tuple, so the norm and the
    # ReLU after it (densenet's pre-activation BN-ReLU on each concatenated input) became
    # two kernels, the ReLU a whole extra pass.  CanonicalizeBindings reads ``y`` through.
    mod = _run(mod, ("FoldBatchnormToConv2D", "DecomposeOpsForInference", "CanonicalizeBindings"))
    # float16 first: the max its softmax emits is then made NaN/Inf-exact too
    mod = accumulate_float16_in_float32(fast_erf(concat_projections(fold_weight_arithmetic(mod))))
    if conv_block:
        mod = conv_layout.convert(mod, conv_block)
    return accurate_math(guard_shift_range(propagate_nan(mod)))


def _callees(func: relax.Function) -> list[str]:
    """Operator names of the ``call_tir`` calls in a grouped function, in order."""
    names: list[str] = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == "relax.call_tir":
            names.append(expr.args[0].name_hint.rstrip("0123456789").rstrip("_"))

    relax.analysis.post_order_visit(func.body, visit)
    return names
