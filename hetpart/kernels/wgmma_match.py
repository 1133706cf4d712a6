"""Which fused kernels the hand-written Hopper ``wgmma`` GEMM could replace (issue 17).

In:  a fused PrimFunc (the importer's, weights marked by
     :func:`~hetpart.kernels.weight_prepack.mark_weights`), the build's target and its
     :class:`~hetpart.kernels.options.KernelOptions`.
Out: :func:`match`: a :class:`WgmmaGemm` -- M, N, K, the kernel's precision, its epilogue,
     how the weight is stored and which parameters are the activation, the weight, the
     bias and the residual -- when the function is a dense layer ``y = epilogue(x[M, K] @ W + b)``
     (or ``(x @ W (+ b)) + r``, ``r`` an activation of y's shape) that
     :func:`hetpart.kernels.wgmma_gemm.wgmma_gemm` (with :mod:`.wgmma_splitk`) computes;
     None otherwise.
Invariant: recognition only -- nothing here changes a module.  A match means: one
multiply-accumulate block ``C[.., m, n] += A[.., m, k] * W[k, n]`` (or ``W[n, k]``) over
static extents, A a parameter that is not a weight (float32, or bf16 widened by one
element-wise cast block when W is bf16 too), W a model weight (float32, or
bf16 widened by one element-wise cast block: :mod:`hetpart.importer.low_precision`), then
element-wise blocks whose value at each output is, for every probe value of the
accumulator and the bias (and the residual: a float32 activation of the output's shape read at
the store's own indices), the epilogue's (:func:`epilogue_of`: evaluated, not pattern-matched,
so any export's spelling of bias + erf-GELU is recognised and a tanh-GELU or a ReLU is not).
The output is float32, or bfloat16 when the last store's outermost node is the cast to it (the
producer's rounding of :mod:`hetpart.importer.low_precision_activations`; no other narrowing):
:attr:`WgmmaGemm.out_dtype`, which the kernel's store (or split-K's reduction) repeats.

:data:`WGMMA_GEMM` (off) is the default of ``KernelOptions.wgmma``, which the substitution
reads; :func:`match` itself answers whatever either says, so tests and tools can ask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir import TensorLoad
from tvm.target import Target

WGMMA_GEMM = False
"""The default of :attr:`~hetpart.kernels.options.KernelOptions.wgmma` (read when a
``KernelOptions`` is made, :data:`~hetpart.kernels.options.DEFAULT` at its import): replace
matching dense layers by the hand-written ``wgmma`` kernel on sm_90 builds (design:
``bench/results/gpu-wgmma-spike.md`` section 6).  Off: nothing reads a match, and every build
is the one before this module existed.  Off because measured slower: on the H100 (step 146,
spike write-up section 8) the kernel is correct but peaks at ~40 TFLOP/s like ``mma.sync``
(ViT-B/16 whole model bf16 1.02x, tf32 1.32x the time).  Since step 150 (128B swizzle, two consumer
warpgroups) a bf16 build substitutes :func:`.wgmma_variant.choose`'s variants -- by default through
:data:`WGMMA_BF16` alone (step 155); this switch stays off because it also substitutes every ``f32a``
and TF32 match (step 152: distilbert bf16 0.68 -> 0.88 ms; TF32's kernels no faster than ``mma.sync``)
and would change what profiles record.  Bound before the imports below: ``options`` reads it
while it makes ``DEFAULT``, whichever of the two modules is imported first."""

WGMMA_BF16 = True
"""Substitute a ``bf16``-family match (its A input bfloat16 already: a bf16 build with
:data:`hetpart.importer.low_precision_activations.STORE_GEMM_INPUTS_BF16`) whatever
``KernelOptions.wgmma`` says -- a rule of bf16 builds, not an option: TF32 and float32 builds
are untouched.  On since device step 155 (H100, ``bench/results/gpu-bf16-defaults-nvidia-h100.md``):
with both bf16-activation switches, vit_b_16 bf16 1.592 -> 1.199 ms at batch 1 and 21.29 -> 11.05 at
32, whisper_encoder 1.960 -> 1.518 and 51.48 -> 43.56, distilbert b32 7.74 -> 6.81 (b1: see
:data:`ONE_TILE_ROWS`)."""
WGMMA_F32A = True
"""Substitute an ``f32a``-family match (A float32, narrowed to bf16 in the kernel: a post-LN model's
q/k/v and fc1, whose LayerNorm output the residual reads too) whatever ``KernelOptions.wgmma`` says,
above :data:`ONE_TILE_ROWS` rows like the ``bf16`` family.  On since device step 158 (H100,
``bench/results/gpu-bf16-defaults-nvidia-h100.md``): distilbert bf16 b32 6.39 -> 5.20 ms on top of the
other defaults, vit_b_16 b32 the same build (no ``f32a`` match: every projection's A is bf16).  At
M = 128 it lost (steps 152 / 155: distilbert b1 0.68 -> 0.88 ms, 0.702 -> 0.851), which
:data:`ONE_TILE_ROWS` leaves; at M = 197 alone it gained (step 152: vit_b_16 b1 1.604 -> 1.487,
whisper_encoder 1.936 -> 1.780)."""

from . import options as _options  # noqa: E402  (a module: DEFAULT read at call time, see above)
from . import wgmma_layout as lay  # noqa: E402
from . import wgmma_variant as wv  # noqa: E402
from .analysis import arch_of, block_infos, find_mac, is_gpu, is_layout_free  # noqa: E402

ARCH = 90
"""The only compute capability with ``wgmma`` (sm_90 / sm_90a; sm_100 has tcgen05 instead)."""

EPILOGUE_TOL = 1e-5
"""Largest difference (absolute, plus as much relative) between an evaluated epilogue and the
reference one at a probe point: hetpart's erf is TVM's ``fast_erf`` (error below 5e-7,
:mod:`hetpart.importer.fast_erf`), the reference here ``math.erf``."""

OUT_DTYPES = ("float32", "bfloat16")
"""Output dtypes the kernel stores: float32, or bfloat16 rounded (nearest even) in the last
store -- the only narrowing :func:`epilogue_of` accepts (a cast to bf16 elsewhere is declined)."""

PROBES = (-9.0, -3.5, -1.25, -0.5, -1e-3, 0.0, 0.375, 1.0, 2.5, 7.0)
"""Accumulator and bias values the epilogue is evaluated at (every pair)."""


@dataclass(frozen=True)
class WgmmaGemm:
    """A dense layer the ``wgmma`` kernel computes.

    ``m``: rows (every dim of the output but the last, multiplied: tokens x batch); ``n``, ``k``;
    ``precision``: a key of :data:`~hetpart.kernels.wgmma_layout.PRECISIONS` (``tf32r`` for a
    TF32 build's float32 weight; for a bf16-stored weight the family of A's dtype,
    :func:`.wgmma_variant.family`: ``f32a`` for a float32 A, ``bf16`` for a bf16 one); ``epilogue``: one of
    :data:`~hetpart.kernels.wgmma_gemm.EPILOGUES`; ``weight_layout``: ``"KN"`` (ONNX MatMul's
    ``[K, N]``: transposed when packed) or ``"NK"`` (the kernel's own); ``activation``,
    ``weight``, ``bias``: parameter positions (``bias`` None without one); ``weight_dtype``,
    ``bias_dtype``: their stored dtypes (the kernel takes a float32 bias: a bf16 one is widened
    when packed); ``activation_dtype``: A's stored dtype (a bf16 A is the kernel's A as is);
    ``residual``: the position of the float32 activation of the output's shape that a
    ``bias_residual`` / ``residual`` epilogue adds at the store's indices (None otherwise);
    ``out_dtype``: the output's stored dtype -- ``bfloat16`` when the fused kernel rounds its
    last store to bf16 (:mod:`hetpart.importer.low_precision_activations`: an output read only
    as another GEMM's A), which the kernel's store (or split-K's reduction) then does too."""

    m: int
    n: int
    k: int
    precision: str
    epilogue: str | None
    weight_layout: str
    activation: int
    weight: int
    bias: int | None
    weight_dtype: str
    bias_dtype: str | None
    activation_dtype: str = "float32"
    residual: int | None = None
    out_dtype: str = "float32"

    @property
    def bn(self) -> int:
        """N of one warpgroup's tile of the first spike's variant: 128 where N allows, else 64
        (the substitution's own choice is :func:`.wgmma_variant.choose`)."""
        return 128 if self.n % 128 == 0 else 64


def eligible_target(target: Target) -> bool:
    """A CUDA target for compute capability 9.0 (the build must then compile for sm_90a)."""
    return is_gpu(target) and target.kind.name == "cuda" and arch_of(target) == ARCH


ONE_TILE_ROWS = 64 * wv.CONSUMERS
"""Rows of one CTA's tile in the ``bf16`` / ``f32a`` variants.  A GEMM with no more rows than that
(DistilBERT at 128 tokens) stays on ``mma.sync`` by the family switches: its grid is half of a
197-row one's, and every such model measured slower substituted (device step 155, H100: distilbert
bf16 0.663 -> 0.707 ms with its bf16-family GEMMs substituted; step 152: 0.68 -> 0.88 with all
``f32a``), while every model at M >= 197 gained (vit_b_16, whisper_encoder)."""


def substituted(found: "WgmmaGemm", options: _options.KernelOptions) -> bool:
    """Whether a build with ``options`` replaces the match ``found``: every match with
    ``options.wgmma``; else a ``bf16`` one with :data:`WGMMA_BF16` on, an ``f32a`` one with
    :data:`WGMMA_F32A` on (read now, so a tool that sets them builds with them), each only
    above :data:`ONE_TILE_ROWS` rows."""
    if options.wgmma:
        return True
    return found.m > ONE_TILE_ROWS and {"bf16": WGMMA_BF16, "f32a": WGMMA_F32A}.get(found.precision, False)


def match(func: tirx.PrimFunc, target: Target, options: _options.KernelOptions | None = None) -> WgmmaGemm | None:
    """``func`` read as a dense layer the ``wgmma`` kernel computes (module doc), or None:
    not an sm_90 CUDA target, not a dense layer of a weight, an epilogue other than none /
    bias / bias + erf-GELU / (bias +) residual, a weight dtype with no kernel (fp16; float32 with TF32 off), or a
    shape the kernel does not take (N % 64, K % the precision's K tile)."""
    options = _options.DEFAULT if options is None else options
    if not eligible_target(target):
        return None
    try:
        sch = s_tir.Schedule(func)
        infos = block_infos(sch)
    except Exception:  # noqa: BLE001 - a function dlight cannot normalise is no dense layer
        return None
    if infos is None:
        return None
    mac = find_mac(sch, infos)
    if mac is None or len(mac.reduce) != 1:
        return None
    blocks = [sch.get(i.block_rv) for i in infos]
    at = next(i for i, b in enumerate(blocks) if b.same_as(sch.get(mac.block)))
    widened = {}  # buffer a widen block writes -> the parameter it reads (a weight, or a bf16 A)
    for b in blocks[:at]:
        src = _widened_param(func, b)
        if src is None:
            return None
        widened[b.writes[0].source] = src
    operands = _operands(func, mac, widened)
    if operands is None:
        return None
    (act, act_idx), (weight, weight_src, w_idx) = operands
    k_var, spatial = mac.reduce[0], list(mac.spatial)
    if not spatial:
        return None
    n_var = spatial[-1]
    out_idx = list(mac.out_indices)
    if not (_same_indices(act_idx[:-1], out_idx[:-1]) and _is(act_idx[-1], k_var) and _is(out_idx[-1], n_var)):
        return None
    if len(w_idx) != 2:
        return None
    if _is(w_idx[0], k_var) and _is(w_idx[1], n_var):
        layout = "KN"
    elif _is(w_idx[0], n_var) and _is(w_idx[1], k_var):
        layout = "NK"
    else:
        return None
    n, k = mac.extents[n_var], mac.extents[k_var]
    m = math.prod(mac.extents[v] for v in spatial[:-1])
    tail = blocks[at + 1:]
    if _dims(func.params[-1]) != _dims(mac.out) or any(
            math.prod(_extent(iv) for iv in b.iter_vars) != m * n for b in tail):
        return None  # the epilogue covers the product exactly, element for element
    found = epilogue_of(func, mac.out, tail)
    if found is None:
        return None
    epilogue, bias, residual = found
    out_dtype = str(func.params[-1].dtype)
    if out_dtype not in OUT_DTYPES:
        return None
    w_dtype, a_dtype = str(weight_src.dtype), str(act.dtype)
    precision = {"bfloat16": wv.family(a_dtype), "float32": "tf32r" if options.tf32 else None}.get(w_dtype)
    if a_dtype != "float32" and precision != "bf16":
        return None  # a bf16 A needs a bf16 weight (no kernel takes bf16 A with float32 B)
    if precision is None or n % 64 or n % 4 or k % lay.precision(precision).tile_k:
        return None
    return WgmmaGemm(m, n, k, precision, epilogue, layout, _position(func, act), _position(func, weight_src),
                     _position(func, bias) if bias is not None else None, w_dtype,
                     str(bias.dtype) if bias is not None else None, a_dtype,
                     _position(func, residual) if residual is not None else None, out_dtype)


def _dims(buf) -> list:
    return [int(d) if isinstance(d, tirx.IntImm) else None for d in buf.shape]


def _extent(iv) -> int:
    return int(iv.dom.extent) if isinstance(iv.dom.extent, tirx.IntImm) else -1


def _is(e, var) -> bool:
    return isinstance(e, tirx.Var) and e.same_as(var)


def _same_indices(a: list, b: list) -> bool:
    """Index lists equal element by element (the same iterator, or equal constants)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, tirx.Var) and isinstance(y, tirx.Var):
            if not x.same_as(y):
                return False
        elif isinstance(x, tirx.IntImm) and isinstance(y, tirx.IntImm):
            if int(x) != int(y):
                return False
        else:
            return False
    return True


def _param_buffer(func: tirx.PrimFunc, buf):
    """``buf`` when it is one of ``func``'s parameter buffers, else None."""
    return buf if any(b.same_as(buf) for b in func.params) else None


def _widened_param(func: tirx.PrimFunc, block):
    """The parameter ``block`` widens to float32 element for element: a layout-free one (a
    weight), or a bfloat16 one that is not (an activation stored in bf16), else None."""
    body = block.body
    if block.init is not None or not isinstance(body, tirx.BufferStore) or len(block.reads) != 1:
        return None
    if not (isinstance(body.value, tirx.Cast) and isinstance(body.value.value, TensorLoad)):
        return None
    load = body.value.value
    src = _param_buffer(func, load.source)
    if src is None or not (is_layout_free(func, src) or str(src.dtype) == "bfloat16"):
        return None
    if str(body.buffer.dtype) != "float32" or not _same_indices(list(load.indices), list(body.indices)):
        return None
    return src


def _position(func: tirx.PrimFunc, buf) -> int:
    """The parameter position of ``func``'s parameter buffer ``buf``."""
    return next(i for i, p in enumerate(func.params) if p.same_as(buf))


def _operands(func, mac, widened):
    """``((activation buffer, its indices), (weight buffer read, weight parameter, its
    indices))`` of the multiply-accumulate, else None (two activations, two weights, or a
    buffer computed in the function)."""
    found_act, found_w = None, None
    for buf, idx in mac.operands:
        src = widened.get(buf)
        if src is None:
            src = _param_buffer(func, buf)
            if src is None:
                return None
            if is_layout_free(func, src):
                if str(src.dtype) != "float32":
                    return None
                found_w = (buf, src, idx) if found_w is None else False
            else:
                if str(src.dtype) != "float32":
                    return None
                found_act = (src, idx) if found_act is None else False
        elif is_layout_free(func, src):
            found_w = (buf, src, idx) if found_w is None else False
        else:  # a bf16 activation, widened
            found_act = (src, idx) if found_act is None else False
    if not found_act or not found_w or str(mac.out.dtype) != "float32":
        return None
    return found_act, found_w


def epilogue_of(func: tirx.PrimFunc, acc, blocks: list):
    """``(epilogue, bias parameter buffer or None, residual parameter buffer or None)`` of the
    element-wise ``blocks`` after the multiply-accumulate writing ``acc``, else None.

    Each block must store at its own iterators, read only ``acc``, the blocks before it at
    the same indices (element-wise), constants, at most one 1-D weight (the bias) at the
    last iterator, and at most one float32 parameter that is not a weight, of the output's
    shape, read at exactly the store's indices (the residual: not transposed, not broadcast);
    the last block (or ``acc`` with no blocks) must write ``func``'s output.
    Its value is then evaluated at every pair of :data:`PROBES` (accumulator, bias; with a
    residual every triple) and compared with ``acc`` (no epilogue), ``acc + bias``,
    ``gelu(acc + bias)`` (erf form), ``(acc + bias) + residual`` and ``acc + residual`` -- and, for
    a bfloat16 output (the last store's cast, :func:`_narrowing_only_last`), ``acc`` itself (no
    epilogue: the product rounded in the store)."""
    out_param = func.params[-1]
    if not blocks:
        return (None, None, None) if acc.same_as(out_param) else None
    bias, residual = [], []
    local = {acc}
    out_dims = _dims(out_param)

    def check(e, store_idx) -> bool:
        ok = [True]

        def visit(x):  # every TensorLoad of the block's value
            if any(x.source.same_as(b) for b in local):
                ok[0] &= _same_indices(list(x.indices), store_idx)
            elif _param_buffer(func, x.source) is not None and len(x.indices) == 1 \
                    and is_layout_free(func, x.source) and _is(x.indices[0], store_idx[-1]):
                if not any(x.source.same_as(b) for b in bias):
                    bias.append(x.source)
            elif _param_buffer(func, x.source) is not None and not is_layout_free(func, x.source) \
                    and not x.source.same_as(out_param) and str(x.source.dtype) == "float32" \
                    and _dims(x.source) == out_dims and None not in out_dims \
                    and _same_indices(list(x.indices), store_idx):
                if not any(x.source.same_as(b) for b in residual):
                    residual.append(x.source)
            else:
                ok[0] = False

        tvm_ffi.structural_walk(e, (TensorLoad, visit), order="post")
        return ok[0]

    for b in blocks:
        body = b.body
        if b.init is not None or not isinstance(body, tirx.BufferStore):
            return None
        idx = list(body.indices)
        named = [e for e in idx if not isinstance(e, tirx.IntImm)]
        if not named or not _same_indices(named, [v.var for v in b.iter_vars]):
            return None
        if not check(body.value, idx):
            return None
        local.add(body.buffer)
    if not blocks[-1].body.buffer.same_as(out_param) or len(bias) > 1 or len(residual) > 1:
        return None
    if residual and len(blocks[-1].body.indices) != len(out_dims):
        return None  # the store's indices (read at) are the output's own
    if not _narrowing_only_last(blocks, out_param):
        return None
    # every block writes a buffer of its own (no block rewrites a buffer read before)
    if len({b.body.buffer for b in blocks}) != len(blocks):
        return None
    bias_buf = bias[0] if bias else None
    res_buf = residual[0] if residual else None
    got = {}
    for a in PROBES:
        for c in PROBES if bias_buf is not None else (0.0,):
            for r in PROBES if res_buf is not None else (0.0,):
                env = {acc: a}
                if res_buf is not None:
                    env[res_buf] = r
                for b in blocks:
                    v = _eval(b.body.value, env, bias_buf, c)
                    if v is None:
                        return None
                    env[b.body.buffer] = v
                got[(a, c, r)] = env[blocks[-1].body.buffer]
    if res_buf is not None:
        refs = {"bias_residual": lambda a, c, r: (a + c) + r} if bias_buf is not None else \
            {"residual": lambda a, c, r: a + r}
    elif bias_buf is not None:
        refs = {"bias": lambda a, c, r: a + c, "bias_gelu": lambda a, c, r: _gelu(a + c)}
    elif str(out_param.dtype) == "bfloat16":  # no epilogue, the product rounded in the store
        refs = {None: lambda a, c, r: a}
    else:
        refs = {}
    for name, ref in refs.items():
        if all(_close(v, ref(a, c, r)) for (a, c, r), v in got.items()):
            return name, bias_buf, res_buf
    return None


def _narrowing_only_last(blocks: list, out_param) -> bool:
    """No block's value narrows (a cast to a floating type other than float32), except the last one's,
    whose outermost node may be the cast to the output's bfloat16 (the rounding of the final
    store, which the kernel's store repeats; :func:`_eval` reads casts as the identity)."""
    narrow = []

    def visit(x):
        if _dtype(x) not in ("float32", "bool") and not _dtype(x).startswith(("int", "uint")):
            narrow.append(x)

    for b in blocks:
        tvm_ffi.structural_walk(b.body.value, (tirx.Cast, visit), order="post")
    last = blocks[-1].body.value
    if not narrow:
        return True
    return (len(narrow) == 1 and narrow[0].same_as(last) and str(out_param.dtype) == "bfloat16"
            and _dtype(last) == "bfloat16" and _dtype(last.value) == "float32")


def _dtype(e) -> str:
    """The dtype of a TIR expression (``ty`` in this TVM, ``dtype`` in older ones)."""
    return str(e.ty) if hasattr(e, "ty") else str(e.dtype)


def _gelu(y: float) -> float:
    return 0.5 * y * (1.0 + math.erf(y / math.sqrt(2.0)))


def _close(got: float, want: float) -> bool:
    return not math.isnan(got) and abs(got - want) <= EPILOGUE_TOL * (1.0 + abs(want))


def _eval(e, env: dict, bias, bias_value: float):
    """The scalar value of the TIR expression ``e`` (float64 arithmetic; loads from
    ``env`` by buffer, ``bias`` loads give ``bias_value``), or None for a node this
    evaluator does not know (the epilogue is then not recognised)."""
    ev = lambda x: _eval(x, env, bias, bias_value)  # noqa: E731
    if isinstance(e, (tirx.FloatImm, tirx.IntImm)):
        return float(e.value) if isinstance(e, tirx.FloatImm) else int(e.value)
    if isinstance(e, TensorLoad):
        if bias is not None and e.source.same_as(bias):
            return bias_value
        return next((v for b, v in env.items() if b.same_as(e.source)), None)
    if isinstance(e, tirx.Cast):
        v = ev(e.value)
        if v is None:
            return None
        dt = str(e.ty) if hasattr(e, "ty") else str(e.dtype)
        return float(v) if dt.startswith(("float", "bfloat")) else (int(v) if not isinstance(v, bool) else int(v))
    binary = {tirx.Add: lambda x, y: x + y, tirx.Sub: lambda x, y: x - y, tirx.Mul: lambda x, y: x * y,
              tirx.Div: lambda x, y: x / y, tirx.Min: min, tirx.Max: max, tirx.LT: lambda x, y: x < y,
              tirx.LE: lambda x, y: x <= y, tirx.GT: lambda x, y: x > y, tirx.GE: lambda x, y: x >= y,
              tirx.EQ: lambda x, y: x == y, tirx.NE: lambda x, y: x != y}
    for cls, fn in binary.items():
        if isinstance(e, cls):
            x, y = ev(e.a), ev(e.b)
            if x is None or y is None:
                return None
            try:
                return fn(x, y)
            except ZeroDivisionError:
                return None
    if isinstance(e, tirx.Select):
        c = ev(e.condition)
        return None if c is None else (ev(e.true_value) if c else ev(e.false_value))
    if isinstance(e, tvm.ir.Call):
        name = str(getattr(e.op, "name", ""))
        args = [ev(a) for a in e.args]
        if any(a is None for a in args):
            return None
        if name == "tirx.isnan" or name.endswith(".isnan"):
            return math.isnan(args[0])
        if name.endswith("if_then_else"):
            return args[1] if args[0] else args[2]
        if name.endswith(".erf"):
            return math.erf(args[0])
        if name.endswith(".tanh"):
            return math.tanh(args[0])
        if name.endswith(".exp"):
            return math.exp(args[0]) if args[0] < 700 else math.inf
        return None
    return None


__all__ = ["ARCH", "ONE_TILE_ROWS", "OUT_DTYPES", "WGMMA_BF16", "WGMMA_F32A", "WGMMA_GEMM", "WgmmaGemm", "arch_of",
           "eligible_target", "epilogue_of", "match", "substituted"]
