"""A masked attention scores kernel as ``scale * Q K^T + bias`` (issue 17, the flash kernel's mask path).

In:  a fused scores PrimFunc (TVM's legalised ops, ``s_tir`` blocks) whose one reduction block
     is ``matmul[v0, v1, v2, v3] += Q[v0, v1, v2, k] * KT[v0, v1, k, v3]`` (``Q``, ``KT`` two of
     its parameters) and whose output ``S [b, h, n, n]`` (float32 or a narrowing ``Cast``) is,
     after every other block is inlined, one of

         S = scale * M + bias                 # BERT / RoBERTa: (1 - mask) * finfo.min added
         S = Select(c, fill, scale * M)       # DistilBERT: masked_fill(mask == 0, finfo.min)
         S = Select(c, scale * M, fill)       # GPT-2's Where(causal, scores, lowest)

     ``M`` the matmul, ``scale`` a product / quotient of float immediates, ``bias`` / ``c`` any
     expression of the other parameters (not of Q, KT or M) and ``fill`` a float immediate or a
     0-d parameter (a Relax constant) at most :data:`LOWEST_FILL`.
Out: :func:`scores_form`: the :class:`ScoresForm` (Q's and KT's parameter positions, the scale,
     the bias expression over the output block's iteration variables, the parameters it reads
     and its broadcast shape ``[1|b, 1|h, 1|n, n]``: an axis whose variable the bias does not
     read is 1), None for anything else; :func:`bias_te`: the bias as a float32 TE compute of
     that shape from TE tensors of those parameters.
Invariant: ``S = scale * M + bias`` exactly in the additive form; in the Select form
``Select(c, fill, scale * M)`` and ``scale * M + Select(c, fill, 0)`` are the same softmax input
after float32 rounding whenever ``|scale * M|`` is below half an ulp of ``fill`` (``fill <= -1e30``:
an ulp there is above 1e22), so a fully masked row is the reference's uniform row either way.
Nothing here changes a module: the flash substitution (:mod:`hetpart.kernels.flash_substitute`)
calls it on a marked kernel.
"""

from __future__ import annotations

import dataclasses

import tvm
import tvm_ffi
from tvm import s_tir, te, tirx
from tvm.ir import TensorLoad

LOWEST_FILL = -1e30
"""The largest Select fill read as a mask (``finfo(float32).min``, ``-inf`` and the like)."""


@dataclasses.dataclass(frozen=True)
class ScoresForm:
    """A scores PrimFunc as ``scale * Q K^T + bias`` (module doc); ``params``: parameter positions."""

    q: int
    kt: int
    scale: float
    bias: tirx.PrimExpr
    bias_params: tuple[int, ...]
    bias_shape: tuple[int, int, int, int]
    fill_param: int | None
    """The 0-d parameter holding a Select form's fill (the caller checks its value); None otherwise."""
    axes: tuple
    """The output block's four iteration variables (the bias reads some of them)."""
    buffers: tuple
    """The parameters' buffers, in parameter order (the bias loads some of them)."""


def scores_form(func) -> ScoresForm | None:
    """``func`` as :class:`ScoresForm` (module doc), None when it is not of that form."""
    if not isinstance(func, tirx.PrimFunc) or len(func.params) < 3:
        return None
    try:
        inlined = _inline_all_but_matmul(func)
    except Exception:  # noqa: BLE001 - a block TVM cannot inline: not this form
        return None
    if inlined is None:
        return None
    func, matmul, store = inlined
    buffers = tuple(func.params)  # tirx: the parameters are the buffers
    out = buffers[-1]
    shape = _ints(out.shape)
    if shape is None or len(shape) != 4 or shape[2] != shape[3] or not store.buffer.same_as(out):
        return None
    if str(out.dtype) not in ("float32", "bfloat16", "float16") or str(store.value.ty) != str(out.dtype):
        return None
    axes = tuple(store.indices)
    if len(axes) != 4 or not all(isinstance(a, tirx.Var) for a in axes):
        return None
    qk = _matmul_operands(matmul, buffers)
    if qk is None:
        return None
    value = store.value
    if str(out.dtype) != "float32":
        if not isinstance(value, tirx.Cast) or str(value.value.ty) != "float32":
            return None
        value = value.value
    acc = matmul.block.writes[0].source if len(matmul.block.writes) == 1 else None
    split = _split(value, acc, axes)
    if split is None:
        return None
    scale, bias, fill = split
    reads = _loads(bias)
    if _member(acc, reads) or any(_member(buffers[i], reads) for i in qk) or _member(out, reads):
        return None
    params = tuple(i for i, b in enumerate(buffers[:-1]) if _member(b, reads))
    if any(not _member(b, buffers) for b in reads):
        return None
    fill_param = None
    if isinstance(fill, TensorLoad):
        if not _member(fill.source, buffers) or len(fill.source.shape) != 0:
            return None
        fill_param = _index(fill.source, buffers)
    elif not (isinstance(fill, tirx.FloatImm) or fill is None) or (fill is not None and fill.value > LOWEST_FILL):
        return None
    used = _vars(bias)
    b, h, n = shape[0], shape[1], shape[2]
    bias_shape = (b if _member(axes[0], used) else 1, h if _member(axes[1], used) else 1,
                  n if _member(axes[2], used) else 1, n)
    return ScoresForm(qk[0], qk[1], scale, bias, params, bias_shape, fill_param, axes, buffers)


def bias_te(form: ScoresForm, tensors) -> te.Tensor:
    """The bias ``[bias_shape]`` float32 of ``form`` from TE tensors of its :attr:`~ScoresForm.bias_params`
    (same order): the bias expression with a broadcast axis' variable at 0."""
    by_buffer = [(form.buffers[i], t) for i, t in zip(form.bias_params, tensors)]

    index_ty = str(form.axes[0].ty)

    def compute(*idx):
        zero = tirx.IntImm(index_ty, 0)
        sub = [(a, i if ext > 1 or key else zero)
               for a, i, ext, key in zip(form.axes, idx, form.bias_shape, (False, False, False, True))]
        expr = tvm_ffi.structural_map(form.bias, (tvm.ir.Var, lambda v: next((e for k, e in sub if v.same_as(k)), v)))

        def load(node):
            t = next((t for b, t in by_buffer if b.same_as(node.source)), None)
            return node if t is None else t(*node.indices)

        expr = tvm_ffi.structural_map(expr, (TensorLoad, load))
        return expr if str(expr.ty) == "float32" else expr.astype("float32")

    return te.compute([tirx.IntImm(index_ty, d) for d in form.bias_shape], compute, name="flash_bias")


def _ints(shape):
    try:
        return [int(d) for d in shape]
    except (TypeError, ValueError):
        return None


def _blocks(func) -> list:
    found = []
    tvm_ffi.structural_walk(func.body, (s_tir.SBlockRealize, found.append), order="pre")
    return [r for r in found if r.block.name_hint != "root"]


def _inline_all_but_matmul(func):
    """(func with every block but the one reduction and the output block inlined, the reduction's
    SBlockRealize, the output block's BufferStore); None if the blocks are not those."""
    realizes = _blocks(func)
    reductions = [r for r in realizes if any(iv.iter_type != tirx.IterVar.DataPar for iv in r.block.iter_vars)]
    out = func.params[-1]
    writers = [r for r in realizes if any(w.source.same_as(out) for w in r.block.writes)]
    if len(reductions) != 1 or len(writers) != 1 or writers[0] is reductions[0]:
        return None
    keep = {reductions[0].block.name_hint, writers[0].block.name_hint}
    sch = s_tir.Schedule(func)
    for r in realizes:
        if r.block.name_hint not in keep:
            sch.compute_inline(sch.get_sblock(r.block.name_hint))
    func = sch.mod["main"]
    realizes = _blocks(func)
    if len(realizes) != 2:
        return None
    by_name = {r.block.name_hint: r for r in realizes}
    matmul, store = by_name[reductions[0].block.name_hint], by_name[writers[0].block.name_hint].block.body
    if not isinstance(store, tirx.BufferStore):
        return None
    return func, matmul, store


def _matmul_operands(matmul, buffers) -> tuple[int, int] | None:
    """Parameter positions of Q, KT when the reduction is ``acc[v0..v3] += Q[v0,v1,v2,k] * KT[v0,v1,k,v3]``."""
    block = matmul.block
    body = block.body
    ivs = [iv.var for iv in block.iter_vars]
    if len(ivs) != 5 or not isinstance(body, tirx.BufferStore) or not isinstance(body.value, tirx.Add):
        return None
    acc = tirx.BufferLoad(body.buffer, body.indices)
    add = body.value
    prod = add.b if tvm_ffi.structural_equal(add.a, acc) else add.a if tvm_ffi.structural_equal(add.b, acc) else None
    if not isinstance(prod, tirx.Mul) or not all(isinstance(x, TensorLoad) for x in (prod.a, prod.b)):
        return None
    v0, v1, v2, v3, k = ivs
    want_q, want_k = [v0, v1, v2, k], [v0, v1, k, v3]
    same = lambda idx, want: len(idx) == 4 and all(a.same_as(b) for a, b in zip(idx, want))  # noqa: E731
    if not same(body.indices, [v0, v1, v2, v3]):
        return None
    if same(prod.a.indices, want_q) and same(prod.b.indices, want_k):
        q, kt = prod.a.source, prod.b.source
    elif same(prod.b.indices, want_q) and same(prod.a.indices, want_k):
        q, kt = prod.b.source, prod.a.source
    else:
        return None
    if not _member(q, buffers) or not _member(kt, buffers) or q.same_as(kt):
        return None
    return _index(q, buffers), _index(kt, buffers)


def _is_acc(e, acc, axes) -> bool:
    return (isinstance(e, TensorLoad) and e.source.same_as(acc) and len(e.indices) == 4
            and all(a.same_as(b) for a, b in zip(e.indices, axes)))


def _has_acc(e, acc) -> bool:
    return _member(acc, _loads(e))


def _scaled(e, acc, axes) -> float | None:
    """``c`` when ``e`` is ``c * M`` (products / quotients of float immediates), None otherwise."""
    if _is_acc(e, acc, axes):
        return 1.0
    if isinstance(e, tirx.Mul):
        for x, c in ((e.a, e.b), (e.b, e.a)):
            if isinstance(c, tirx.FloatImm):
                s = _scaled(x, acc, axes)
                return None if s is None else s * float(c.value)
        return None
    if isinstance(e, tirx.Div) and isinstance(e.b, tirx.FloatImm) and float(e.b.value) != 0.0:
        s = _scaled(e.a, acc, axes)
        return None if s is None else s / float(e.b.value)
    return None


def _split(e, acc, axes):
    """(scale, bias, fill) of the output value ``e`` (module doc); fill None in the additive form."""
    if isinstance(e, tirx.Add):
        for x, y in ((e.a, e.b), (e.b, e.a)):
            if _has_acc(x, acc) and not _has_acc(y, acc):
                s = _scaled(x, acc, axes)
                return None if s is None else (s, y, None)
        return None
    if isinstance(e, tirx.Select) and not _has_acc(e.condition, acc):
        zero = tirx.FloatImm("float32", 0.0)
        for m, fill, bias in ((e.false_value, e.true_value, lambda f: tirx.Select(e.condition, f, zero)),
                              (e.true_value, e.false_value, lambda f: tirx.Select(e.condition, zero, f))):
            if _has_acc(m, acc) and not _has_acc(fill, acc) and str(fill.ty) == "float32":
                s = _scaled(m, acc, axes)
                if s is None or not isinstance(fill, (tirx.FloatImm, TensorLoad)):
                    return None
                return s, bias(fill), fill
    return None


def _loads(e) -> list:
    found = []
    tvm_ffi.structural_walk(e, (TensorLoad, lambda n: found.append(n.source)), order="post")
    return found


def _vars(e) -> list:
    found = []
    tvm_ffi.structural_walk(e, (tirx.Var, found.append), order="post")
    return found


def _member(x, xs) -> bool:
    return any(x.same_as(y) for y in xs)


def _index(x, xs) -> int:
    return next(i for i, y in enumerate(xs) if x.same_as(y))


__all__ = ["LOWEST_FILL", "ScoresForm", "bias_te", "scores_form"]
