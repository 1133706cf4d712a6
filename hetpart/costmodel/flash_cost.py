"""What a flash-marked attention triple costs on CUDA: the substituted chain, priced once (issue 17).

In: an op graph some of whose kernels :func:`hetpart.importer.flash_triples.mark_triples`
marked (:data:`~hetpart.importer.flash_triples.FLASH_ATTR` = ``scores`` / ``softmax`` /
``values`` on their PrimFuncs; a *masked* triple's scores kernel, with the mask or bias fused in,
also :data:`~hetpart.importer.flash_triples.BIAS_ATTR`), a kernel of it, the CUDA target it would
be built for.
Out:

* :func:`role`: ``(role, scale)`` of a marked kernel, None for any other;
* :func:`substitutes`: whether a target runs marked chains as the flash kernel
  (:mod:`hetpart.kernels.flash_substitute`: sm_90 CUDA);
* :func:`chain_module`: for a ``values`` kernel, a module whose ``main(Q, KT, V, *mask inputs)``
  calls its triple's three marked PrimFuncs once each (a masked scores kernel's other tensor
  arguments -- the mask -- are further parameters, its constants stay constants as in the model)
  -- :func:`hetpart.kernels.build` then substitutes the chain exactly as in a model (narrowing
  kernels, for a masked chain the ``flash_bias`` kernel, the flash kernel), so
  :mod:`.kernel_bench` times what runs and the profile records it (:data:`CHAIN` in
  :attr:`.profile_db.KernelRecord.flash`) under the chain's signature;
* :func:`chain_signature`: that signature, its triple's three kernel signatures (a masked and an
  unmasked chain, or two mask forms, whose ``values`` kernels share a signature differ in their
  scores kernels); :func:`record_signature`: the signature any kernel's record has in a profile
  for a target (the chain's for a ``values`` kernel where the target substitutes, else its own);
* :func:`chain_features`: the kernels of the substituted chain (the narrowing kernels; for a
  masked chain the bias kernel: reads the mask, writes the float32 bias
  ``[1|b, 1|h, 1|n, n]`` of :attr:`hetpart.importer.flash_bias.ScoresForm.bias_shape`; the flash
  kernel: reads Q, K, V once in bf16 and the bias once, writes O once in float32,
  ``4 b h n^2 64`` FLOPs) for the predictor, where nothing was measured.

Invariant (the sum rule): on a target that substitutes, the three kernels of a marked triple
cost together what the substituted chain costs: ``scores`` and ``softmax`` 0, ``values`` the
chain (its :data:`CHAIN` record under :func:`chain_signature`, else the sum of
:func:`chain_features`' predictions: the narrowing and bias kernels by the predictor, the flash
kernel by :func:`predicted_flash_s`).  A triple is marked only when all three kernels lie in one
bf16 CUDA partition and nothing else calls their PrimFuncs
(:mod:`~hetpart.importer.flash_triples`), so the zero never stands for a kernel that runs.  Each
masked chain is priced with its own bias kernel, where a model's build emits one per dataflow
block for layers reading the same mask (an over-count of one small kernel per further layer).
A chain record of an older hetpart, kept under the ``values`` kernel's own signature (which a
masked and an unmasked chain can share), is ignored: nothing reads a chain at a kernel's own
signature, so that chain is predicted until profiled again (then under its chain signature).
Any other target ignores the marks: each kernel is priced as itself.
With ``FLASH_ATTENTION`` off nothing is marked and nothing here applies.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import tvm
from tvm import relax, tirx

from ..errors import InternalError
from ..importer.flash_bias import scores_form
from ..importer.flash_triples import BIAS_ATTR, FLASH_ATTR, HEAD_DIM, SCALE_ATTR, q_kt_inputs
from ..importer.op_graph import dtype_bytes
from .profile_db import KernelFeatures

CHAIN = "chain"
""":attr:`.profile_db.KernelRecord.flash` of a ``values`` kernel timed as its whole substituted chain
(the record's signature: :func:`chain_signature`); also the prefix of that signature."""

FLASH_RULE = "FlashAttention"
"""The flash kernel's schedule rule (:data:`hetpart.kernels.flash_substitute.RULE`)."""

MASK_INT_HIGH = 2
"""An integer mask input of a chain module is drawn from ``[0, MASK_INT_HIGH)``: 0 / 1, a valid
key-padding mask (a value of 8 would make BERT's ``(1 - mask) * finfo.min`` overflow)."""


def role(graph, kernel) -> tuple[str, float] | None:
    """``(role, scale)`` of ``kernel`` when its PrimFunc in ``graph`` carries a flash mark, else None."""
    try:
        func = graph.module[kernel.func]
    except (KeyError, ValueError, AttributeError):
        return None
    if not isinstance(func, tirx.PrimFunc) or func.attrs is None or FLASH_ATTR not in func.attrs:
        return None
    scale = func.attrs.get(SCALE_ATTR, None)
    return str(func.attrs[FLASH_ATTR]), (float(scale.value) if scale is not None else 1.0)


def substitutes(target) -> bool:
    """True when a build for ``target`` (a Target or its JSON) runs marked chains as the flash kernel."""
    from ..kernels.wgmma_match import eligible_target

    if not target:
        return False
    try:
        return eligible_target(target if isinstance(target, tvm.target.Target) else tvm.target.Target(target))
    except Exception:  # noqa: BLE001 - a target this TVM cannot parse substitutes nothing
        return False


def triple_of(graph, values) -> tuple | None:
    """``(scores, softmax, values)`` kernels of the marked ``values`` kernel, None if the chain is not whole."""
    kernels, tensors = graph.kernels, graph.tensors
    sm_id = tensors[values.inputs[0]].producer if values.inputs else None
    sm = kernels.get(sm_id) if sm_id is not None else None
    qk_id = tensors[sm.inputs[0]].producer if sm is not None and sm.inputs else None
    qk = kernels.get(qk_id) if qk_id is not None else None
    if qk is None or (role(graph, sm) or ("",))[0] != "softmax" or (role(graph, qk) or ("",))[0] != "scores":
        return None
    return qk, sm, values


def chain_signature(graph, values) -> str | None:
    """The signature a profile keeps the chain record of ``values`` under:
    ``chain-<scores>-<softmax>-<values>``, the signatures of its triple's kernels.

    In: a graph, a kernel of it.  Out: that string, None when ``values`` is not the ``values``
    kernel of a whole marked chain (:func:`triple_of`).  Invariant: two chains share it only when
    their three marked PrimFuncs are structurally equal -- the scores kernel's signature hashes
    whether the chain is masked (``BIAS_ATTR``), its mask form and mask parameters and its scale --
    so a masked and an unmasked chain whose ``values`` kernels share a signature (BERT with a mask,
    a ViT, same ``b, h, n``) keep two records; and it never equals a kernel's signature (a hex
    structural hash).  The mask's and fill's values (constants of the scores call) are not in it:
    they change what the chain computes, not what it costs."""
    if (role(graph, values) or ("",))[0] != "values":
        return None
    triple = triple_of(graph, values)
    return None if triple is None else "-".join((CHAIN, *(k.signature for k in triple)))


def record_signature(graph, kernel, target) -> str:
    """The signature of ``kernel``'s record in a profile of a device built for ``target`` (a Target
    or its JSON): :func:`chain_signature` for the ``values`` kernel of a whole marked chain where
    ``target`` substitutes (:func:`substitutes`; the profiler times it as its chain), else
    ``kernel.signature``.  What the profiler writes and the cost model reads (where
    :func:`chain_module` cannot make the chain, the profiler times the kernel alone and records it
    there without :data:`CHAIN`: the cost model predicts that chain)."""
    chain = chain_signature(graph, kernel)
    return chain if chain is not None and substitutes(target) else kernel.signature


@dataclass(frozen=True)
class _Scores:
    """A scores kernel's PrimFunc, equal and hashed by its signature (the key of :func:`_form_of`)."""

    signature: str
    func: object = field(compare=False)


@functools.lru_cache(maxsize=256)
def _form_of(scores: _Scores):
    """:func:`scores_form` of ``scores.func``, once per signature among the last 256 asked (it inlines
    the kernel's blocks, and the cost model asks per pricing)."""
    return scores_form(scores.func)


def _form(graph, qk):
    """The :class:`~hetpart.importer.flash_bias.ScoresForm` of a masked (``BIAS_ATTR``) scores
    kernel, None for an unmasked one or one not of the form (:func:`_form_of`: cached per signature)."""
    if not _masked(graph, qk):
        return None
    return _form_of(_Scores(qk.signature, graph.module[qk.func]))


def _masked(graph, qk) -> bool:
    """Whether the scores kernel ``qk`` is a masked triple's (carries ``BIAS_ATTR``)."""
    func = graph.module[qk.func]
    return func.attrs is not None and BIAS_ATTR in func.attrs


def _operands(graph, values):
    """``(Q, KT, V)`` tensors of a whole marked chain (None for a masked one whose scores kernel
    is not of the form)."""
    qk, _, pv = triple_of(graph, values)
    if _masked(graph, qk):
        form = _form(graph, qk)
        q_kt = q_kt_inputs(graph.tensors, qk.inputs, form) if form is not None else None
        if q_kt is None:
            return None
        q, kt = q_kt
    else:
        q, kt = qk.inputs[0], qk.inputs[1]
    return graph.tensors[q], graph.tensors[kt], graph.tensors[pv.inputs[1]]


def chain_module(graph, values):
    """A :class:`.kernel_bench.KernelModule` whose ``main(Q, KT, V, *mask inputs)`` runs ``values``'
    marked chain (module docstring): the mask inputs are the scores call's tensor arguments other
    than Q and K^T, once each, in call order (``num_input`` counts them; an integer one is drawn
    from ``[0, MASK_INT_HIGH)`` unless it indexes, a bool one 0 / 1), the call's constants stay
    constants (a Select fill must, for the substitution to read it); None when ``values`` is not
    the ``values`` kernel of a whole chain."""
    from tvm.ir import GenericConst

    from .kernel_bench import ArgSpec, KernelModule, _binding_of, _flat_args, index_bounds

    if (role(graph, values) or ("",))[0] != "values" or triple_of(graph, values) is None:
        return None
    qk, sm, pv = triple_of(graph, values)
    form = _form(graph, qk)
    s_args = _flat_args(_binding_of(graph, qk).value)[0]
    if _masked(graph, qk):
        if form is None or len(s_args) != len(form.buffers) - 1:
            return None
        iq, ik = form.q, form.kt
    elif len(s_args) != 2:
        return None
    else:
        iq, ik = 0, 1
    v_arg = _flat_args(_binding_of(graph, pv).value)[0][1]
    bounds = index_bounds(graph.module[qk.func]) if form is not None else {}

    def spec(x, i=None):
        dtype = str(x.ty.dtype)
        bound = (bounds.get(i, MASK_INT_HIGH) if i is not None else None) if "int" in dtype else None
        return ArgSpec(tuple(int(d) for d in x.ty.shape.values), dtype, None, bound)

    extras = []  # (position in the scores call, the argument) of the mask inputs, each var once
    for i, a in enumerate(s_args):
        if i not in (iq, ik) and not isinstance(a, GenericConst) and not any(a.same_as(x) for _, x in extras):
            extras.append((i, a))
    specs = (spec(s_args[iq]), spec(s_args[ik]), spec(v_arg), *(spec(a, i) for i, a in extras))
    names = ("q", "kt", "v", *(f"mask{j}" for j in range(len(extras))))
    params = [relax.Var(n, relax.TensorType(list(s.shape), s.dtype)) for n, s in zip(names, specs)]
    by_arg = [(s_args[iq], params[0]), (s_args[ik], params[1]), *((a, p) for (_, a), p in zip(extras, params[3:]))]
    scores_args = [a if isinstance(a, GenericConst) else next(p for x, p in by_arg if x.same_as(a)) for a in s_args]
    bb = relax.BlockBuilder()
    gvs = {k.func: bb.add_func(graph.module[k.func], k.func) for k in (qk, sm, pv)}

    def ty(name):
        t = graph.tensors[name]
        return relax.TensorType([int(d) for d in t.shape], str(t.dtype))

    with bb.function("main", params):
        with bb.dataflow():
            s = bb.emit(relax.call_tir(gvs[qk.func], relax.Tuple(scores_args), ty(qk.outputs[0])))
            p = bb.emit(relax.call_tir(gvs[sm.func], relax.Tuple([s]), ty(sm.outputs[0])))
            o = bb.emit_output(relax.call_tir(gvs[pv.func], relax.Tuple([p, params[2]]), ty(pv.outputs[0])))
        bb.emit_func_output(o)
    mod = bb.get()
    mod["main"] = mod["main"].with_attr("num_input", len(params))
    return KernelModule(mod, specs, len(params), pv.func)


FLASH_FLOPS_PER_S = 1.0e14
"""The flash kernel's effective rate on sm_90 where nothing measured it (:func:`predicted_flash_s`).

From the H100's whisper_encoder bf16 b1 (6 heads of 64, 1500 tokens, 4 layers): the three kernels
of a triple ran 81.8 + 47.6 + 28.1 = 157.5 us a layer (bench/results/kernel-profile-whisper-bf16-159-nvidia-h100.md),
and the flash switch's A/B took the forward from 1.54 to 1.07 ms, ~117 us a layer: the chain ~40 us,
of it ~10 us the three narrowing passes, for ``4 * 6 * 1500^2 * 64`` = 3.46 GFLOP: ~1.1e14 FLOP/s
(cuDNN's SDPA: 18.7 us).  One shape, one host: an order of magnitude, not a fit -- the device test
``tests/test_costmodel_flash.py::test_gpu_chain_is_measured_under_values`` prints the measured rate.
The predictor's matmul fit would price it at the float32 GEMMs' rate (the recorded H200 profile:
60 us for this kernel, the chain above the three kernels it replaces)."""


def predicted_flash_s(features: KernelFeatures, launch_s: float) -> float:
    """Seconds of one flash kernel of ``features`` (:func:`chain_features`' last) where nothing
    measured it: one launch plus its FLOPs at :data:`FLASH_FLOPS_PER_S`."""
    return launch_s + features.flops / FLASH_FLOPS_PER_S


def chain_features(graph, values) -> list[tuple[KernelFeatures, str]]:
    """``(features, rule)`` of each kernel the substituted chain of ``values`` launches, in launch
    order: a narrowing of Q and of V where they are float32 and K^T narrowed and transposed (rule
    ``""``: the predictor's injective fit prices them); for a masked chain the ``flash_bias`` kernel
    (rule ``""``, injective: reads the scores kernel's bias parameters -- the mask, a fill --
    writes the float32 bias of :attr:`~hetpart.importer.flash_bias.ScoresForm.bias_shape`); then
    the flash kernel (rule :data:`FLASH_RULE`, :func:`predicted_flash_s`; an attention-shaped
    ``matmul``: ``4 b h n^2 64`` FLOPs, Q, K, V read once in bf16 and the bias once, O written once
    in float32)."""
    operands = _operands(graph, values)
    if operands is None:  # mark_triples marks a masked triple only where its scores kernel is of the form
        raise InternalError(f"{values.id} ({values.func}): its masked scores kernel is not of the flash bias form")
    q, kt, v = operands
    b, h, n = (int(d) for d in q.shape[:3])
    elems = b * h * n * HEAD_DIM
    out = []
    for name, t in (("q", q), ("kt", kt), ("v", v)):
        if name == "kt" or str(t.dtype) != "bfloat16":
            out.append((KernelFeatures("injective", ("astype",), f"flash_in_{name}", 0, int(t.nbytes), 2 * elems, 0),
                        ""))
    form = _form(graph, triple_of(graph, values)[0])
    bias_bytes = 0
    if form is not None:
        bias_bytes = 4 * form.bias_shape[0] * form.bias_shape[1] * form.bias_shape[2] * form.bias_shape[3]
        mask_bytes = sum(_buffer_bytes(form.buffers[i]) for i in form.bias_params)
        out.append((KernelFeatures("injective", ("flash_bias",), "flash_bias", 0, mask_bytes, bias_bytes, 0), ""))
    flops = 4 * b * h * n * n * HEAD_DIM
    out.append((KernelFeatures("matmul", ("flash_attention",), "flash_attention", flops, 3 * 2 * elems + bias_bytes,
                               4 * elems, 0), FLASH_RULE))
    return out


def _buffer_bytes(buf) -> int:
    n = 1
    for d in buf.shape:
        n *= int(d)
    return n * dtype_bytes(str(buf.dtype))


__all__ = ["CHAIN", "FLASH_FLOPS_PER_S", "FLASH_RULE", "MASK_INT_HIGH", "chain_features", "chain_module",
           "chain_signature", "predicted_flash_s", "record_signature", "role", "substitutes", "triple_of"]
