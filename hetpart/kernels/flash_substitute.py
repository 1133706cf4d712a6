"""Run marked attention triples as the hand-written flash kernel on sm_90 (issue 17).

In:  a fused module, the build's target.  Its PrimFuncs may carry
     :data:`hetpart.importer.flash_triples.FLASH_ATTR` (set by
     :func:`~hetpart.importer.flash_triples.mark_triples` in a bf16 CUDA partition when
     :data:`FLASH_ATTENTION` is on): roles ``scores`` (``Q K^T`` [scaled], the scale in
     :data:`~hetpart.importer.flash_triples.SCALE_ATTR`), ``softmax``, ``values`` (``P V``).
     A *chain* in a Relax dataflow block is three bindings

         s = call_tir(scores, (Q, KT))    # Q [b,h,n,64], KT [b,h,64,n] float32 or bfloat16
         p = call_tir(softmax, (s,))      # s read here only
         o = call_tir(values, (p, V))     # p read here only; V [b,h,n,64], o [b,h,n,64] float32

Out: :func:`substitute`: for an sm_90 CUDA target, the module in which each chain is
     ``o = flash(Q', K', V')`` (:func:`.flash_attention.flash_attention`, ``out_dtype``
     float32, the marked scale): ``Q'``, ``V'`` are ``Q``, ``V`` rounded to bfloat16 (round to
     nearest even; a bfloat16 input is passed as it is), ``K'`` is ``KT`` transposed to
     ``[b,h,n,64]`` in the same narrowing kernel (a float32 K^T needs its narrowing pass anyway,
     so reading K^T in the flash kernel itself would save no pass); ``s`` and ``p`` are gone and
     a marked PrimFunc no Relax function calls any more is removed.  ``mod`` itself (the same
     object) for any other target or when nothing is marked -- CPU, TF32 and non-sm_90 builds
     run the three kernels as they are.
     With :data:`FUSE_K_NARROWING`, a chain whose ``KT`` is a dataflow var read by the scores call
     only and bound to ``call_tir(copy, (x,))``, ``copy`` a pure layout copy (:func:`_layout_copy`),
     gets ``K'`` from ONE ``flash_in_k`` kernel reading ``x`` (:func:`fused_k`: the copy's blocks
     inlined into the narrowing) instead of ``copy`` then the narrowing; ``copy`` is removed where
     nothing calls it any more.
     A *masked* chain (its scores PrimFunc also carries
     :data:`~hetpart.importer.flash_triples.BIAS_ATTR`, :data:`FLASH_MASKED_ATTENTION`): ``s =
     call_tir(scores, (..., Q, ..., KT, ..., mask inputs, constants))`` read as ``scale * Q K^T +
     bias`` by :func:`hetpart.importer.flash_bias.scores_form`; it becomes the same narrowings, one
     ``flash_bias`` kernel (:func:`~hetpart.importer.flash_bias.bias_te`: the float32 bias
     ``[1|b, 1|h, 1|n, n]`` from the scores call's other arguments) and ``o = flash(Q', K', V',
     bias)`` (the biased kernel); a Select fill that is not a constant at most
     :data:`~hetpart.importer.flash_bias.LOWEST_FILL`, or a kernel no longer of the form, leaves the
     chain as it is.
Invariant: a substituted chain computes ``softmax(scale * Q K^T) V`` with Q, K, V and the
probabilities rounded to bf16 (accumulation in float32; the flash module's numerics); a chain
whose ``s`` or ``p`` is read elsewhere, or whose shapes differ, is left as it is.  The flash
PrimFunc carries ``tirx.is_scheduled``, ``hetpart.rule`` = :data:`RULE` and the hand-written
mark, so :mod:`.wgmma_substitute`'s mixed pipeline and sm_90a target compile it.
"""

from __future__ import annotations

from typing import NamedTuple

import tvm
import tvm_ffi
from tvm import relax, s_tir, te, tirx
from tvm.target import Target

from ..errors import CompileError
from ..importer import flash_bias
from ..importer.flash_triples import BIAS_ATTR, FLASH_ATTR, SCALE_ATTR
from ..importer.relax_rewrite import var_reads
from . import flash_attention as fa
from . import flash_layout as fl
from .analysis import HAND_WRITTEN_ATTR, RULE_ATTR, SCHEDULED_ATTR, copy_module
from .call_substitution import rewrite_calls
from .tir_expr import substitute as substitute_vars
from .wgmma_match import eligible_target

FLASH_ATTENTION = True
"""Mark attention triples of bf16 CUDA partitions for the flash kernel
(:func:`hetpart.compiler.precision.lower_plan_weights`, read at call time).  On since device steps
162/164 (session 57, H100; ``bench/results/gpu-flash-attention-162-nvidia-h100.md``): whisper_encoder
b1 bf16 1.54 -> 1.07 ms, vit_b_16 b1 1.24 -> 1.12 ms (``tools/gpu_model_switch_ab.py ... --precision
bf16 --before hetpart.kernels.flash_substitute.FLASH_ATTENTION=0 --after ...=1``), vit_b_16 b32
10.85 -> 8.45 ms GPU-in in the corpus beside PyTorch; its cuda tests against float64 passed.  Off,
nothing is marked and this module returns every module unchanged."""

FLASH_MASKED_ATTENTION = True
"""With :data:`FLASH_ATTENTION`, also mark and substitute *masked* attention triples (the mask or
additive bias fused into the scores kernel: transformers' eager BERT / RoBERTa / DistilBERT /
GPT-2 exports; :mod:`hetpart.importer.flash_bias`): the flash kernel then takes the broadcast
float32 bias (``[1|b, 1|h, 1|n, n]``, one small kernel computing it from the mask) as a fourth
input.  On since device step 166 (session 58, H100; ``bench/results/gpu-steps-165-169-nvidia-h100.md``):
the real DistilBERT export gets its 6 masked triples marked; its cuda tests (float64 and ORT, a fully
masked row) passed; ``tools/gpu_model_switch_ab.py ... --precision bf16 --before
...FLASH_MASKED_ATTENTION=0 --after ...=1``: distilbert b32 4.875 -> 4.515 ms, distilbert b1 0.671 ->
0.677 and bert b1 1.229 -> 1.235 (inside the rounds' spread); the kernel beside SDPA with a boolean mask:
9.1 against 43.8 us (b1), 23.9 against 45.7 (b32).  Off, every build is what it was before the flag."""

FLASH_KEY_SPLIT_MAX_CTAS = 0
"""A substituted flash kernel whose grid (``ceil(n / 64) * h * b`` CTAs) has fewer CTAs than this
and at least two key tiles runs the key-split variant (:func:`.flash_attention.flash_attention`
``key_split=True``: 8 warps a CTA, two warp groups over alternate key tiles, merged at the end) --
for latency-bound small grids (Whisper's encoder at b1: 144 CTAs on 132 SMs, 33.3 us against SDPA's
20.5 on an H100).  0 (off, the default): every kernel is the unsplit one and the generated code is
what it was before the switch.  Not yet run on a GPU (issue 17; :func:`key_split`)."""

FUSE_K_NARROWING = False
"""With :data:`FLASH_ATTENTION`: a substituted chain whose K^T is made by a pure layout copy of one
tensor (:func:`_layout_copy`) read by the scores kernel only computes K bf16 ``[b, h, n, 64]`` in one
kernel straight from the copy's input (:func:`fused_k`) -- one layout kernel a layer fewer on the K
path (ViT-B/16 b32 bf16 on the H100: the K^T slice ~30 us then ``flash_in`` ~22 us, x 12 layers;
``bench/results/gpu-kernel-profile-vit-b32-bf16-161-nvidia-h100.md``).  Same K bf16 bit for bit (the
same float32 element, the same round-to-nearest-even cast).  Off (the default) until a device A/B
(``tools/gpu_model_switch_ab.py vit_b_16-b32.onnx --precision bf16 --before
hetpart.kernels.flash_substitute.FUSE_K_NARROWING=0 --after ...=1``); off, every build is what it
was before the switch (session 58)."""

RULE = "FlashAttention"
"""``hetpart.rule`` of a substituted flash kernel."""


def substitute(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """``mod`` with its marked attention chains running the flash kernel (module doc); ``mod``
    itself when the target is not sm_90 CUDA or nothing qualifies."""
    roles = {gv.name_hint: _role(f) for gv, f in mod.functions_items() if _role(f) is not None}
    if not roles or not eligible_target(target):
        return mod
    forms = {gv.name_hint: flash_bias.scores_form(f) for gv, f in mod.functions_items()
             if gv.name_hint in roles and f.attrs is not None and BIAS_ATTR in f.attrs}
    chains = {}
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            chains.update(_chains(func, roles, forms, mod if FUSE_K_NARROWING else None))
    if not chains:
        return mod
    copies = {c.k_copy[0] for c in chains.values() if c.k_copy is not None}
    out = rewrite_calls(mod, _Substituter(copy_module(mod), chains), set(roles) | copies)
    return mod if out is None else out


def key_split(b: int, h: int, n: int) -> bool:
    """Whether the flash kernel of these sizes runs key-split (:data:`FLASH_KEY_SPLIT_MAX_CTAS`,
    read at call time): fewer CTAs than the switch and more than one key tile."""
    return fl.kv_tiles(n) > 1 and fl.q_tiles(n) * h * b < FLASH_KEY_SPLIT_MAX_CTAS


def _role(func) -> tuple[str, float] | None:
    """(role, scale) of a marked PrimFunc, None for any other function."""
    if not isinstance(func, tirx.PrimFunc) or func.attrs is None or FLASH_ATTR not in func.attrs:
        return None
    scale = func.attrs.get(SCALE_ATTR, None)
    return str(func.attrs[FLASH_ATTR]), (float(scale.value) if scale is not None else 1.0)


def _callee(value, roles, role):
    """The callee name when ``value`` is a ``call_tir`` of a PrimFunc marked ``role``, else None."""
    if not isinstance(value, relax.Call) or getattr(value.op, "name", None) != "relax.call_tir":
        return None
    if not isinstance(value.args[0], tvm.ir.GlobalVar) or not isinstance(value.args[1], relax.Tuple):
        return None
    name = value.args[0].name_hint
    return name if name in roles and roles[name][0] == role else None


def _dims(x) -> tuple[int, ...] | None:
    ty = x.ty if isinstance(x, relax.Expr) else x
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        return None


class _Chain(NamedTuple):
    """One chain to substitute: the ``s`` and ``p`` vars its bindings drop, the operands, sizes and
    scale of the flash call, and for a masked chain ``(form, the scores call's arguments the bias
    reads)`` (:func:`_bias_args`), None for an unmasked one."""

    s: relax.Var
    p: relax.Var
    q: relax.Expr
    kt: relax.Expr
    v: relax.Expr
    dims: tuple[int, int, int]
    scale: float
    bias: tuple | None = None
    k_copy: tuple | None = None  # (copy name, its input, the K^T var, fused_k(copy)): FUSE_K_NARROWING


def _chains(func: relax.Function, roles: dict, forms: dict, mod: tvm.IRModule | None = None) -> dict:
    """``{o var: _Chain}`` for the chains of ``func``; a masked scores kernel's chain carries its bias
    (``forms``: its :func:`~hetpart.importer.flash_bias.scores_form`, None when it is not of that
    form: the chain is left as it is).  With ``mod`` (:data:`FUSE_K_NARROWING`), a chain whose K^T
    is a layout copy's output read by the scores call only carries ``k_copy`` (:func:`_k_copy`)."""
    value_of = {b.var: b.value for blk in func.body.blocks if isinstance(blk, relax.DataflowBlock)
                for b in blk.bindings if isinstance(b, relax.VarBinding)}
    reads = var_reads(func)
    block_of = {b.var: i for i, blk in enumerate(func.body.blocks) for b in blk.bindings}  # K^T's copy: o's block
    out = {}
    for o, value in value_of.items():
        if _callee(value, roles, "values") is None:
            continue
        p, v = value.args[1].fields if len(value.args[1].fields) == 2 else (None, None)
        if p is None or reads.get(p, 0) != 1 or _callee(value_of.get(p), roles, "softmax") is None:
            continue
        (s,) = value_of[p].args[1].fields if len(value_of[p].args[1].fields) == 1 else (None,)
        scores = _callee(value_of.get(s), roles, "scores") if s is not None else None
        if scores is None or reads.get(s, 0) != 1:
            continue
        bias = None
        if scores in forms:
            bias = _bias_args(forms[scores], value_of[s].args[1].fields)
            if bias is None:
                continue
            q, kt = value_of[s].args[1].fields[forms[scores].q], value_of[s].args[1].fields[forms[scores].kt]
        elif len(value_of[s].args[1].fields) != 2:
            continue
        else:
            q, kt = value_of[s].args[1].fields
        dq, dk, dv, do = _dims(q), _dims(kt), _dims(v), _dims(value.ty_args[0])
        if dq is None or len(dq) != 4:
            continue
        b, h, n, d = dq
        if (d != fl.HEAD_DIM or dk != (b, h, d, n) or dv != dq or do != dq
                or value.ty_args[0].dtype != "float32"
                or any(x.ty.dtype not in ("float32", "bfloat16") for x in (q, kt, v))):
            continue
        k_copy = _k_copy(kt, value_of, reads, mod) if mod is not None and block_of.get(kt) == block_of[o] else None
        out[o] = _Chain(s, p, q, kt, v, (b, h, n), roles[scores][1], bias, k_copy)
    return out


def _k_copy(kt, value_of: dict, reads: dict, mod: tvm.IRModule):
    """``(copy name, its input, kt, fused_k(copy))`` when ``kt`` is bound in a dataflow block to
    ``call_tir(copy, (x,))``, read once (by the scores call), ``copy`` a :func:`_layout_copy` whose
    blocks inline (:func:`fused_k`); else None."""
    value = value_of.get(kt)
    if reads.get(kt, 0) != 1 or not isinstance(value, relax.Call):
        return None
    if getattr(value.op, "name", None) != "relax.call_tir" or not isinstance(value.args[0], tvm.ir.GlobalVar):
        return None
    if not isinstance(value.args[1], relax.Tuple) or len(value.args[1].fields) != 1:
        return None
    name = value.args[0].name_hint
    if name not in {gv.name_hint for gv in mod.get_global_vars()} or not _layout_copy(mod[name]):
        return None
    try:
        return name, value.args[1].fields[0], kt, fused_k(mod[name])
    except CompileError:
        return None


def _layout_copy(func) -> bool:
    """Whether ``func`` is a pure layout copy of one tensor: two parameters (in, out), no attribute
    but ``s_tir`` and ``tirx.noalias``, a root block whose body is loop nests of blocks, each block spatial (no
    reduction, no init) and storing a plain load (``out[...] = in'[...]``: no arithmetic, no cast)."""
    if not isinstance(func, tirx.PrimFunc) or len(func.params) != 2:
        return False
    if func.attrs is not None and set(func.attrs.keys()) - {"s_tir", "tirx.noalias"}:
        return False
    realize = func.body
    if not isinstance(realize, s_tir.SBlockRealize) or realize.block.init is not None:
        return False
    nests = realize.block.body.seq if isinstance(realize.block.body, tirx.SeqStmt) else [realize.block.body]
    count = 0
    for nest in nests:
        while isinstance(nest, tirx.For):
            nest = nest.body
        if not isinstance(nest, s_tir.SBlockRealize):
            return False
        blk = nest.block
        if (blk.init is not None or len(blk.alloc_buffers) or any(int(iv.iter_type) != 0 for iv in blk.iter_vars)
                or not isinstance(blk.body, tirx.BufferStore) or not isinstance(blk.body.value, tvm.ir.TensorLoad)):
            return False
        count += 1
    return count > 0


def fused_k(copy: tirx.PrimFunc) -> tirx.PrimFunc:
    """``K [b, h, n, d]`` bfloat16 straight from a :func:`_layout_copy` ``copy``'s input (``copy``
    writes ``K^T [b, h, d, n]``): the narrowing of :func:`_narrow_transposed` with every block of
    ``copy`` inlined into it -- one block, ``K[i, j, k, m] = bf16(x[f(i, j, m, k)])``, the copy's index
    map composed with the transpose.  Params ``(x, K)``; :class:`~hetpart.errors.CompileError` if a
    block does not inline."""
    x, kt = copy.params
    ph = te.placeholder(kt.shape, kt.dtype, "kt")
    narrow = te.create_prim_func([ph, _narrow_transposed(ph)])
    n_kt, k = narrow.params
    root = copy.body.block
    body = tirx.SeqStmt([root.body, substitute_vars(narrow.body.block.body, [(n_kt, kt)])])
    joined = s_tir.SBlock([], [], [], "root", body, alloc_buffers=[*root.alloc_buffers, kt])
    func = tirx.PrimFunc([x, k], s_tir.SBlockRealize([], True, joined), attrs=narrow.attrs)
    func = func.without_attr("global_symbol")
    try:
        sch = s_tir.Schedule(func)
        for blk in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
            sch.compute_inline(blk)
    except tvm.error.TVMError as err:
        raise CompileError(f"flash K narrowing: the layout copy does not inline ({err})") from err
    return sch.mod["main"]


def _bias_args(form, args):
    """``(form, the call's arguments the bias reads)`` of a masked scores call, None when the form is
    unknown, the arguments do not match its parameters or a Select fill is not a constant at most
    :data:`~hetpart.importer.flash_bias.LOWEST_FILL`."""
    if form is None or len(args) != len(form.buffers) - 1:
        return None
    if form.fill_param is not None:
        fill = args[form.fill_param]
        if not isinstance(fill, tvm.ir.GenericConst) or fill.value.numpy().shape != ():
            return None
        if not float(fill.value.numpy()) <= flash_bias.LOWEST_FILL:
            return None
    return form, tuple(args[i] for i in form.bias_params)


def _narrow(x: te.Tensor) -> te.Tensor:
    """``[b, h, n, d]`` -> the same in bfloat16 (round to nearest even)."""
    return te.compute(x.shape, lambda *i: x(*i).astype("bfloat16"), name="flash_in")


def _narrow_transposed(kt: te.Tensor) -> te.Tensor:
    """``K^T [b, h, d, n]`` -> ``K [b, h, n, d]`` bfloat16 (round to nearest even)."""
    b, h, d, n = kt.shape
    return te.compute((b, h, n, d), lambda i, j, k, m: kt[i, j, m, k].astype("bfloat16"), name="flash_in")


@relax.expr_functor.mutator
class _Substituter(relax.PyExprMutator):
    """See :func:`substitute`; ``chains``: :func:`_chains`' entries of every function."""

    def __init__(self, mod: tvm.IRModule, chains: dict) -> None:
        super().__init__(mod)
        self._chains = chains
        self._drop = {x for c in chains.values() for x in (c.s, c.p)} | {
            c.k_copy[2] for c in chains.values() if c.k_copy is not None}
        self._biases: list = []  # (bias PrimFunc, its arguments, var) emitted in the current block
        self.added: set[str] = set()

    def visit_dataflow_block_(self, block):
        self._biases = []  # a dataflow var is not visible outside its block
        return super().visit_dataflow_block_(block)

    def visit_binding_block_(self, block):
        self._biases = []
        return super().visit_binding_block_(block)

    def visit_var_binding_(self, binding):
        if binding.var in self._drop:
            return
        chain = self._chains.get(binding.var)
        if chain is None:
            super().visit_var_binding_(binding)
            return
        b, h, n = chain.dims
        bb = self.builder_
        q, kt, v = (self.visit_expr(x) for x in (chain.q, chain.kt, chain.v))
        q = q if q.ty.dtype == "bfloat16" else bb.emit_te(_narrow, q, primfunc_name_hint="flash_in")
        if chain.k_copy is None:
            k = bb.emit_te(_narrow_transposed, kt, primfunc_name_hint="flash_in")
        else:
            k = self._fused_k(chain.k_copy[3], chain.k_copy[1])
        v = v if v.ty.dtype == "bfloat16" else bb.emit_te(_narrow, v, primfunc_name_hint="flash_in")
        inputs, bias_shape = [q, k, v], None
        if chain.bias is not None:
            form, args = chain.bias
            inputs.append(self._bias(form, [self.visit_expr(x) for x in args]))
            bias_shape = form.bias_shape
        call = relax.call_tir(self._kernel(b, h, n, chain.scale, bias_shape), relax.Tuple(inputs),
                              relax.TensorType([b, h, n, fl.HEAD_DIM], "float32"))
        bb.emit_normalized(relax.VarBinding(binding.var, bb.normalize(call)))

    def _fused_k(self, func: tirx.PrimFunc, x):
        """The K bf16 var of ``func`` (:func:`fused_k`) on ``x`` (the layout copy's input)."""
        out = func.params[1]
        gv = self.builder_.add_func(func, "flash_in_k")
        self.added.add(gv.name_hint)
        ty = relax.TensorType([int(d) for d in out.shape], out.dtype)
        return self.builder_.emit(relax.call_tir(gv, relax.Tuple([self.visit_expr(x)]), ty))

    def _bias(self, form, args):
        """The bias var of ``form`` on ``args``: one emitted earlier in this block on the same
        arguments (every layer of a model reads the same mask) or a new ``flash_bias`` call."""
        ins = [te.placeholder([int(d) for d in a.ty.shape.values], a.ty.dtype, f"b{i}") for i, a in enumerate(args)]
        func = te.create_prim_func([*ins, flash_bias.bias_te(form, ins)])
        for f, prev, var in self._biases:
            if tvm_ffi.structural_equal(f, func) and all(tvm_ffi.structural_equal(a, b) for a, b in zip(prev, args)):
                return var
        var = self.builder_.emit_te(lambda *ts: flash_bias.bias_te(form, ts), *args, primfunc_name_hint="flash_bias")
        self._biases.append((func, list(args), var))
        return var

    def _kernel(self, b: int, h: int, n: int, scale: float, bias_shape=None):
        """The GlobalVar of the flash kernel for these sizes and scale (and bias shape), added once."""
        new = f"flash_attention_b{b}_h{h}_n{n}_{_scale_tag(scale)}"
        if bias_shape is not None:
            new += "_bias" + "x".join(str(d) for d in bias_shape)
        split = key_split(b, h, n)
        if split:
            new += "_ks"
        existing = [gv for gv in self.builder_.get().get_global_vars() if gv.name_hint == new]
        if existing:
            return existing[0]
        func = (fa.flash_attention(b, h, n, scale=scale, out_dtype="float32", bias_shape=bias_shape,
                                   key_split=split)
                .without_attr("global_symbol").with_attr(RULE_ATTR, RULE).with_attr(HAND_WRITTEN_ATTR, True)
                .with_attr(SCHEDULED_ATTR, True))
        self.added.add(new)
        return self.builder_.add_func(func, new)


def _scale_tag(scale: float) -> str:
    """A name-safe tag of ``scale`` (its float32 bits)."""
    import struct

    return f"s{struct.unpack('<I', struct.pack('<f', scale))[0]:08x}"


__all__ = ["FLASH_ATTENTION", "FLASH_KEY_SPLIT_MAX_CTAS", "FLASH_MASKED_ATTENTION", "FUSE_K_NARROWING", "RULE",
           "fused_k", "key_split", "substitute"]
