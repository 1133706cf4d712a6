"""Store attention's score and probability tensors in bfloat16 between kernels.

In: an :class:`~hetpart.importer.OpGraph` and groups of kernel ids (each group the
kernels of one partition on a device that computes in bfloat16).  Out
(:func:`lower_scores`): the same kernels, where for each softmax kernel ``S`` of a group

* its input, when a single-output contraction ``P`` of the group computes it and ``S``
  alone reads it (attention's ``Q K^T`` scores, scale and mask fused in), and
* its output, when only contractions of the group read it (the probabilities ``P V``
  multiplies),

are stored in bfloat16: the writer's kernel ends in a rounding ``astype`` (round to
nearest even) of its float32 result, the reader's widens the element to float32 as it
reads it (FuseTIR of TVM's ``astype`` into the kernels, as
:mod:`~hetpart.importer.low_precision` widens weights; a contraction reading one is marked
:data:`NARROW_ACTIVATION_ATTR`, so the tensor-core rule stages it in bf16 by ``cp.async``).  The softmax itself computes in
float32 (max, exponentials, their sum, the division); the contractions accumulate in
float32.  At Whisper's 1500 tokens a layer's scores are ``[6, 1500, 1500]``: 54 MB
written, read, written and read again in float32, half that in bfloat16.

Why: ``cuda=bf16`` stores only weights in bfloat16 (activations float32), so the
bf16 build moves exactly the float32 build's activation bytes; at Whisper's shapes
the four passes over the scores are most of them (bench/results/gpu-whisper-bf16-static.md).
``torch.autocast`` likewise keeps its bf16 matmul's scores in bf16 (softmax reads
them in float32 math).

Switch: :data:`STORE_SCORES_BF16` (on since device step 155; off: the compiler never calls
this, generated code as before it).  Only edges inside one group are changed, so partition boundaries and the
model's inputs and outputs keep their dtypes.

Invariant: the graph computes the float32 graph's function with those tensors rounded
to bfloat16 once each; kernel ids, order and edges are unchanged; each changed
tensor's ``dtype`` is ``bfloat16`` and its kernels' ``bytes_read`` / ``bytes_written``
count it so.
"""

from __future__ import annotations

import dataclasses

import tvm
import tvm_ffi
from tvm import relax, te

from ..errors import InternalError
from .low_precision import _BLOCK_BUILDER_LOCK, _callees, _is_call_tir, fuse_primitive, kernel_calls

STORE_SCORES_BF16 = True
"""Store softmax's input and output in bfloat16 in a ``cuda=bf16`` build (module
docstring).  On since device step 155 (H100, all-CUDA bf16,
``bench/results/gpu-bf16-defaults-nvidia-h100.md``): whisper_encoder 1.95 -> 1.84 ms alone at batch 1
(1,500-token scores), 1.619 -> 1.518 on top of the other two defaults; vit_b_16 and distilbert within
the rounds' spread at batch 1 and 32.  A/B: ``tools/gpu_model_switch_ab.py ... --precision bf16 --before hetpart.importer.low_precision_scores.STORE_SCORES_BF16=0``."""

NARROW_ACTIVATION_ATTR = "hetpart.narrow_activation"
"""Function attribute of a retyped kernel that reads a contraction operand in bfloat16:
the tensor-core rule stages that operand in bfloat16 by ``cp.async`` and widens it in the
fragment loads (:func:`hetpart.kernels.rules.gpu_tensor_core._narrow_activation`)."""

DTYPE = "bfloat16"
SUFFIX = "bf16s"
CONTRACTIONS = ("matmul",)
"""Op classes whose kernels may write the scores or read the probabilities."""


@dataclasses.dataclass(frozen=True)
class Edge:
    """A tensor stored in bfloat16: its name, the kernel writing it, and the kernels reading it."""

    tensor: str
    producer: str
    consumers: tuple[str, ...]


def score_edges(graph, group) -> list[Edge]:
    """The tensors of ``graph`` that :func:`lower_scores` stores in bfloat16 for one
    group of kernel ids (module docstring), in graph order."""
    group = set(group)
    kernels = graph.kernels
    out: dict[str, Edge] = {}

    def eligible(name: str, readers: tuple[str, ...]) -> bool:
        t = graph.tensors[name]
        if t.is_output or t.is_input or t.dtype != "float32" or t.producer not in group or not t.consumers:
            return False
        if len(kernels[t.producer].outputs) != 1:
            return False
        return set(t.consumers) == set(readers) and all(c in group for c in readers)

    for kid in sorted(group, key=lambda k: kernels[k].index):
        k = kernels[kid]
        if k.op_class != "softmax" or len(k.outputs) != 1:
            continue
        dst = k.outputs[0]
        for src in k.inputs:  # the scores (a mask or bias fused in is another input: left as it is)
            producer = graph.tensors[src].producer
            if (graph.tensors[src].shape == graph.tensors[dst].shape and producer is not None
                    and kernels[producer].op_class in CONTRACTIONS and eligible(src, (kid,))):
                out[src] = Edge(src, producer, (kid,))
        readers = graph.tensors[dst].consumers
        if readers and all(kernels[c].op_class in CONTRACTIONS for c in readers) and eligible(dst, readers):
            out[dst] = Edge(dst, kid, tuple(readers))
    return sorted(out.values(), key=lambda e: kernels[e.producer].index)


def retyped_kernel(kernel: tvm.tirx.PrimFunc, call: relax.Call, widen: tuple[int, ...], narrow: bool):
    """``kernel`` taking the arguments at ``widen`` of ``call`` (a ``call_tir`` of it)
    in bfloat16 and, with ``narrow``, returning its (one) output rounded to bfloat16:
    one PrimFunc built by FuseTIR from ``astype`` -> ``call_tir(kernel)`` -> ``astype``."""
    args = list(call.args[1].fields)
    out_ty = call.ty_args[0]
    with _BLOCK_BUILDER_LOCK:
        bb = relax.BlockBuilder()
        kernel_gv = bb.add_func(kernel, "kernel")
        params = [relax.Var(f"a{i}", relax.TensorType(a.ty.shape, DTYPE) if i in widen else a.ty)
                  for i, a in enumerate(args)]
        with bb.function("retyped", params, {"Primitive": True}, private=True):
            with bb.dataflow():
                ins = [bb.emit_te(_cast, p, "float32", primfunc_name_hint="widen") if i in widen else p
                       for i, p in enumerate(params)]
                y = bb.emit(relax.call_tir(kernel_gv, ins, out_ty))
                if narrow:
                    y = bb.emit_te(_cast, y, DTYPE, primfunc_name_hint="narrow")
                out = bb.emit_output(y)
            bb.emit_func_output(out)
        prim = fuse_primitive(bb, "retyped", params, "retyping")
    func = _inline_casts(prim)
    marked = kernel.attrs is not None and NARROW_ACTIVATION_ATTR in kernel.attrs
    return func.with_attr(NARROW_ACTIVATION_ATTR, 1) if widen or marked else func


def _cast(x: te.Tensor, dtype: str) -> te.Tensor:
    return te.compute(x.shape, lambda *i: x(*i).astype(dtype), name="widen" if dtype == "float32" else "narrow")


def _inline_casts(func):
    """``func`` with its cast blocks inlined where TIR allows: a widening into its
    readers, except a contraction's (it stays a block: the tensor-core rule, seeing
    :data:`NARROW_ACTIVATION_ATTR`, stages the operand in bf16 and widens it in the
    fragment loads), the final rounding into the block computing the value it rounds."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        name = sch.get(block).name_hint
        try:
            if name.startswith("widen"):
                if not any(_is_contraction(sch.get(c)) for c in sch.get_consumers(block)):
                    sch.compute_inline(block)
            elif name.startswith("narrow"):
                sch.reverse_compute_inline(block)
        except Exception:  # noqa: BLE001 - the primitive refuses by raising: the block stays
            pass
    return sch.mod["main"]


def _is_contraction(block) -> bool:
    """A reduction block whose update multiplies (a matmul's), not a max or a sum."""
    body = block.body
    return (any(iv.iter_type != tvm.tirx.IterVar.DataPar for iv in block.iter_vars)
            and isinstance(body, tvm.tirx.BufferStore) and isinstance(body.value, tvm.tirx.Add)
            and isinstance(body.value.b, tvm.tirx.Mul))


def lower_scores(graph, groups):
    """``graph`` with the :func:`score_edges` of each group of kernel ids stored in
    bfloat16 (module docstring); ``graph`` itself is unchanged."""
    return lower_edges(graph, [e for g in groups for e in score_edges(graph, g)])


def lower_edges(graph, edges, suffix: str = SUFFIX):
    """``graph`` with each tensor of ``edges`` stored in bfloat16: its producer's kernel
    rounds its float32 result (``narrow``), each consumer's widens it as it reads it, the
    retyped PrimFuncs named ``<func>_<suffix>``; ``graph`` itself is unchanged.  Each
    edge's tensor is a float32 activation, the one output of its producer, read by
    its consumers only (the callers' edge finders check it).  A kernel already marked
    :data:`NARROW_ACTIVATION_ATTR` (retyped by an earlier call) keeps the mark."""
    if not edges:
        return graph
    calls = kernel_calls(graph)
    kernels = graph.kernels
    narrow = {e.producer for e in edges}
    widen: dict[str, set[str]] = {}  # kernel -> names of its inputs read in bfloat16
    for e in edges:
        for c in e.consumers:
            widen.setdefault(c, set()).add(e.tensor)
    changed = sorted(narrow | set(widen), key=lambda k: kernels[k].index)
    # the bindings' vars, by kernel (kernel_calls numbers call bindings as the op graph does)
    binding_var = _binding_vars(graph.module["main"], calls)
    var_of = {kernels[k].outputs[0]: binding_var[k] for k in narrow}
    bb = relax.BlockBuilder(graph.module)
    funcs: dict = {}
    new_calls: dict = {}
    new_kernels = dict(kernels)
    for kid in changed:
        call = calls[kid]
        if not _is_call_tir(call) or len(call.args) != 2:
            raise InternalError(f"{kid} is not a call_tir: its scores cannot be retyped")
        args = list(call.args[1].fields)
        positions = tuple(i for i, a in enumerate(args)
                          for t in widen.get(kid, ()) if a.same_as(var_of[t]))
        key = (call.args[0].name_hint, positions, kid in narrow)
        if key not in funcs:
            prim = retyped_kernel(graph.module[call.args[0]], call, positions, kid in narrow)
            funcs[key] = (bb.add_func(prim, f"{call.args[0].name_hint}_{suffix}"),
                          f"{tvm_ffi.structural_hash(prim):016x}")
        gv, signature = funcs[key]
        out_ty = call.ty_args[0]
        if kid in narrow:
            out_ty = relax.TensorType(out_ty.shape, DTYPE)
        new_calls[kid] = (gv, positions, out_ty, call)
        k = kernels[kid]
        read = sum(graph.tensors[t].nbytes // 2 for t in widen.get(kid, ()))
        written = sum(graph.tensors[t].nbytes // 2 for t in k.outputs if kid in narrow)
        new_kernels[kid] = dataclasses.replace(k, func=gv.name_hint, signature=signature,
                                               bytes_read=k.bytes_read - read, bytes_written=k.bytes_written - written)
    module = bb.get()
    main = _rebuild_main(graph.module["main"], binding_var, new_calls)
    before = _callees(calls.values())
    after = {gv.name_hint for gv, _, _, _ in new_calls.values()} | {
        c.args[0].name_hint for k, c in calls.items() if k not in new_calls and _is_call_tir(c)}
    functions = {gv: f for gv, f in module.functions_items()
                 if not isinstance(f, tvm.tirx.PrimFunc) or gv.name_hint in after or gv.name_hint not in before}
    out = tvm.IRModule(functions, attrs=module.attrs, global_infos=module.global_infos)
    out[module.get_global_var("main")] = main
    tensors = dict(graph.tensors)
    for e in edges:
        tensors[e.tensor] = dataclasses.replace(tensors[e.tensor], dtype=DTYPE)
    return dataclasses.replace(graph, kernels=new_kernels, tensors=tensors, module=relax.transform.Normalize()(out))


def _binding_vars(main: relax.Function, calls: dict) -> dict:
    """``{kernel id: the var its call binds}``."""
    by_call = {}
    for block in main.body.blocks:
        for b in block.bindings:
            by_call[b.value] = b.var
    return {kid: by_call[call] for kid, call in calls.items()}


def _rebuild_main(main: relax.Function, binding_var: dict, new_calls: dict) -> relax.Function:
    """``main`` with the calls of ``new_calls`` (``kid -> (callee, widened positions,
    output type, old call)``) replaced, a narrowed output bound to a new var of its
    bfloat16 type (same name) and every later use of the old var reading the new one."""
    replaced = {}
    renamed: dict = {}  # old var -> new var
    for kid, (gv, _positions, out_ty, old) in new_calls.items():
        replaced[old] = (gv, out_ty)
        var = binding_var[kid]
        if str(out_ty.dtype) != str(var.ty.dtype):
            cls = relax.DataflowVar if isinstance(var, relax.DataflowVar) else relax.Var
            renamed[var] = cls(var.name, out_ty)

    def subst(expr):
        for old, new in renamed.items():
            if expr.same_as(old):
                return new
        return expr

    blocks = []
    for block in main.body.blocks:
        bindings = []
        for b in block.bindings:
            value = b.value
            if isinstance(value, relax.Call) and _is_call_tir(value) and len(value.args) == 2:
                args = relax.Tuple([subst(a) for a in value.args[1].fields])
                if value in replaced:
                    gv, out_ty = replaced[value]
                    value = relax.Call(value.op, [gv, args], value.attrs, [out_ty])
                elif any(not a.same_as(s) for a, s in zip(value.args[1].fields, args.fields)):
                    value = relax.Call(value.op, [value.args[0], args], value.attrs, value.ty_args)
            bindings.append(relax.VarBinding(renamed.get(b.var, b.var), value))
        blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                      else relax.BindingBlock(bindings))
    body = subst(main.body.body)
    return relax.Function(main.params, relax.SeqExpr(blocks, body), main.ret_ty, main.is_pure, main.attrs)


__all__ = ["DTYPE", "NARROW_ACTIVATION_ATTR", "Edge", "STORE_SCORES_BF16", "lower_edges", "lower_scores",
           "retyped_kernel", "score_edges"]
