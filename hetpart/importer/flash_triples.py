"""Attention's three kernels a bf16 CUDA partition may run as the flash kernel (issue 17): find and mark.

In: an :class:`~hetpart.importer.OpGraph` (after the other bf16 passes of
:func:`hetpart.compiler.precision.lower_plan_weights`) and groups of kernel ids (each the
kernels of one CUDA partition that computes in bfloat16).  A *triple* of a group is three
of its kernels

    S = QK(Q, KT)     # ops matmul [+ multiply | divide by a float constant]: Q [b,h,s,64], KT [b,h,64,s]
    P = softmax(S)    # ops softmax alone (no mask or bias fused in), over the last axis
    O = PV(P, V)      # ops matmul alone: V [b,h,s,64], O [b,h,s,64] float32

(:mod:`.low_precision_scores`' two score edges: ``S`` read by the softmax alone, ``P`` by
``PV`` alone), static shapes, one sequence length (self-attention), head dim
:data:`~hetpart.kernels.flash_layout.HEAD_DIM`; ``S`` / ``P`` may already be stored in bf16
and Q, K^T, V be float32 or bf16.  Out (:func:`mark_triples`): the same graph whose three
PrimFuncs of each triple carry :data:`FLASH_ATTR` = their role (:data:`ROLES`), the Q K^T
one also :data:`SCALE_ATTR` (the factor its scores are multiplied by), and whose kernels'
``signature`` is the marked PrimFunc's structural hash; the graph itself (same object) when
no triple qualifies.  :mod:`hetpart.kernels.flash_substitute` then, on sm_90, rewrites the
three consecutive calls into one flash call; any other target ignores the marks.

Invariant: kernel ids, order, edges, tensors and the generated code of every target unchanged
(an attribute is all that is added).  A triple whose PrimFuncs some other kernel of the graph
also calls (a CPU partition's identical layer, a softmax of the same shape elsewhere) is not
marked, so no kernel outside a marked triple sees a mark.

``masked=True`` (:data:`hetpart.kernels.flash_substitute.FLASH_MASKED_ATTENTION`) also marks a
*masked* triple: its scores kernel has the mask or bias fused in -- ``S = scale * Q K^T + bias`` or
``Where(mask, fill, scale * Q K^T)`` with any further inputs (the mask) and constants, the form
:func:`hetpart.importer.flash_bias.scores_form` reads -- and carries :data:`BIAS_ATTR` too (the
kernel that makes the mask stays; the substitution computes the broadcast bias from its inputs).
``masked=False`` marks exactly what it did before the flag existed.
"""

from __future__ import annotations

import dataclasses

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from .flash_bias import scores_form

FLASH_ATTR = "hetpart.flash_attention"
"""PrimFunc attribute: the role of the kernel in a flash triple (one of :data:`ROLES`)."""
SCALE_ATTR = "hetpart.flash_scale"
"""PrimFunc attribute of the ``scores`` kernel: the factor its ``Q K^T`` is multiplied by."""
BIAS_ATTR = "hetpart.flash_bias"
"""PrimFunc attribute of a masked triple's ``scores`` kernel (1): its mask / bias goes into the flash kernel."""
ROLES = ("scores", "softmax", "values")
HEAD_DIM = 64
"""The flash kernel's head dim (:data:`hetpart.kernels.flash_layout.HEAD_DIM`)."""
_SCORE_OPS = {("matmul",), ("matmul", "multiply"), ("matmul", "divide")}


@dataclasses.dataclass(frozen=True)
class Triple:
    """Kernel ids of one attention block and the scale of its scores."""

    scores: str
    softmax: str
    values: str
    scale: float
    masked: bool = False


def flash_triples(graph, group, masked: bool = False) -> list[Triple]:
    """The triples of one group of kernel ids (module docstring), in graph order; their
    PrimFuncs not yet checked for sharing (:func:`mark_triples` does); with ``masked`` also the
    masked ones."""
    group = set(group)
    kernels, tensors = graph.kernels, graph.tensors
    out = []
    for kid in sorted(group, key=lambda k: kernels[k].index):
        sm = kernels[kid]
        if sm.ops != ("softmax",) or len(sm.inputs) != 1 or len(sm.outputs) != 1:
            continue
        s, p = tensors[sm.inputs[0]], tensors[sm.outputs[0]]
        qk_id = s.producer
        if qk_id not in group or tuple(s.consumers) != (kid,) or len(p.consumers) != 1 or s.is_output or p.is_output:
            continue
        pv_id = p.consumers[0]
        qk, pv = kernels[qk_id], kernels[pv_id]
        form = None
        if masked and pv_id in group and "matmul" in qk.ops and qk.ops not in _SCORE_OPS:
            form = scores_form(graph.module[qk.func])
            qk_inputs = q_kt_inputs(tensors, qk.inputs, form) if form is not None else None
            if qk_inputs is None or pv.ops != ("matmul",) or pv.param_bytes or len(pv.inputs) != 2 or len(
                    qk.outputs) != 1 or len(pv.outputs) != 1 or pv.inputs[0] != p.name:
                continue
        elif (pv_id not in group or qk.ops not in _SCORE_OPS or pv.ops != ("matmul",) or qk.param_bytes
                or pv.param_bytes or len(qk.inputs) != 2 or len(pv.inputs) != 2 or len(qk.outputs) != 1
                or len(pv.outputs) != 1 or pv.inputs[0] != p.name):
            continue
        else:
            qk_inputs = tuple(qk.inputs)
        shapes = [_shape(tensors[t]) for t in (*qk_inputs, s.name, p.name, pv.inputs[1], pv.outputs[0])]
        if any(x is None or len(x) != 4 for x in shapes):
            continue
        (q, kt, ss, pp, v, o) = shapes
        b, h, n = q[0], q[1], q[2]
        if not (q == [b, h, n, HEAD_DIM] and kt == [b, h, HEAD_DIM, n] and ss == pp == [b, h, n, n]
                and v == o == [b, h, n, HEAD_DIM] and tensors[pv.outputs[0]].dtype == "float32"
                and all(tensors[t].dtype in ("float32", "bfloat16") for t in (*qk_inputs, pv.inputs[1]))):
            continue
        scale = _scale(graph.module[qk.func]) if form is None else form.scale
        if scale is None or not _softmax_over_last_axis(graph.module[sm.func]):
            continue
        out.append(Triple(qk_id, kid, pv_id, scale, form is not None))
    return out


def q_kt_inputs(tensors, inputs, form) -> tuple[str, str] | None:
    """The Q and K^T tensors among a masked scores kernel's ``inputs`` (``form``: its
    :func:`~hetpart.importer.flash_bias.scores_form`): the one input of Q's and of K^T's parameter
    shape (None unless each is one)."""
    out = []
    for i in (form.q, form.kt):
        want = _shape_of(form.buffers[i].shape)
        hits = [t for t in inputs if _shape(tensors[t]) == want]
        if len(hits) != 1:
            return None
        out.append(hits[0])
    return None if out[0] == out[1] else (out[0], out[1])


def _shape_of(dims) -> list[int] | None:
    try:
        return [int(d) for d in dims]
    except (TypeError, ValueError):
        return None


def mark_triples(graph, groups, masked: bool = False):
    """``graph`` with the triples of ``groups`` marked (module docstring; ``masked``: the masked
    triples too)."""
    triples = [t for g in groups for t in flash_triples(graph, g, masked)]
    kernels = graph.kernels
    roles: dict[str, tuple[str, float]] = {}  # PrimFunc name -> (role, scale)
    members = set()
    biased = {kernels[t.scores].func for t in triples if t.masked}
    for t in triples:
        for role, kid in zip(ROLES, (t.scores, t.softmax, t.values)):
            roles.setdefault(kernels[kid].func, (role, t.scale))
            members.add(kid)
    # a PrimFunc with two roles or two scales, or called by a kernel outside the triples: not marked
    bad = {kernels[k].func for k in kernels if k not in members}
    for t in triples:
        for role, kid in zip(ROLES, (t.scores, t.softmax, t.values)):
            if roles[kernels[kid].func] != (role, t.scale):
                bad.add(kernels[kid].func)
    triples = [t for t in triples if not {kernels[k].func for k in (t.scores, t.softmax, t.values)} & bad]
    if not triples:
        return graph
    funcs = {kernels[k].func for t in triples for k in (t.scores, t.softmax, t.values)}
    module = tvm.IRModule(dict(graph.module.functions_items()), attrs=graph.module.attrs,
                          global_infos=graph.module.global_infos)
    signatures = {}
    for name in sorted(funcs):
        gv = module.get_global_var(name)
        role, scale = roles[name]
        marked = module[gv].with_attr(FLASH_ATTR, role)
        if role == "scores":
            marked = marked.with_attr(SCALE_ATTR, tirx.FloatImm("float32", scale))
        if name in biased:
            marked = marked.with_attr(BIAS_ATTR, tirx.IntImm("int32", 1))
        module[gv] = marked
        signatures[name] = f"{tvm_ffi.structural_hash(marked):016x}"
    new = {kid: dataclasses.replace(k, signature=signatures[k.func]) if k.func in signatures else k
           for kid, k in kernels.items()}
    return dataclasses.replace(graph, kernels=new, module=module)


def _shape(tensor) -> list[int] | None:
    try:
        return [int(d) for d in tensor.shape]
    except (TypeError, ValueError):
        return None


def _scale(func) -> float | None:
    """The factor the scores kernel multiplies ``Q K^T`` by: 1.0 with no constant, ``c`` for one
    ``* c``, ``1 / c`` for one ``/ c`` (``c`` a float immediate); None for anything else."""
    if not isinstance(func, tirx.PrimFunc):
        return None
    found: list[float] = []
    other = []

    def visit(node):
        if isinstance(node, tirx.Mul):
            imms = [float(x.value) for x in (node.a, node.b) if isinstance(x, tirx.FloatImm)]
            found.extend(imms)
        elif isinstance(node, tirx.Div):
            if isinstance(node.b, tirx.FloatImm) and float(node.b.value) != 0.0:
                found.append(1.0 / float(node.b.value))
            else:
                other.append(node)

    tvm_ffi.structural_walk(func.body, ((tirx.Mul, tirx.Div), visit), order="post")
    if other or len(found) > 1:
        return None
    return found[0] if found else 1.0


def _softmax_over_last_axis(func) -> bool:
    """TVM's legalised softmax: its max block reduces its input over the last axis."""
    if not isinstance(func, tirx.PrimFunc):
        return False
    ok = []

    def visit(node):
        if isinstance(node, s_tir.SBlock) and node.name_hint.startswith("T_softmax_maxelem"):
            reduce = [iv.var for iv in node.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
            ok.append(len(reduce) == 1 and all(r.region[-1].min.same_as(reduce[0]) for r in node.reads))

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit), order="post")
    return len(ok) == 1 and ok[0]


__all__ = ["BIAS_ATTR", "FLASH_ATTR", "ROLES", "SCALE_ATTR", "Triple", "flash_triples", "mark_triples", "q_kt_inputs"]
