"""A float32 ``exp`` that vectorises on CPUs, and the rewrite that puts it in a PrimFunc.

Why: TVM lowers ``T.exp`` to LLVM's ``llvm.exp.f32``, which LLVM turns into one libm
``expf`` call per element even inside a vectorised loop (no vector math library is
linked), so a softmax spends most of its time in scalar calls.  TVM's own
``topi.fast_exp`` is a TE operator (not an expression to put in a scheduled block),
and it clamps its argument first, which makes NaN finite.

:func:`fast_exp` is an expression of plain arithmetic, ``floor``, casts, shifts and
``reinterpret``, all of which TVM's LLVM code generator emits as vector instructions:
Cody-Waite range reduction ``x = n ln2 + r`` (``|r| <= ln2/2``, ``n ln2`` in two
parts so ``r`` is exact), Cephes' degree-7 ``expf`` polynomial for ``e^r``, and
``2^n`` as two float32 powers of two built from their exponent bits (two, so that
every ``n`` from -150 to 128 is a normal number and the product rounds to the
subnormals as ``expf`` does).

The argument is bound once by a ``Let`` (so are ``fast_tanh``'s, and its ``exp``):
TIR's CSE does not merge loads, and in a conv tile's write-back the argument
``acc[w, oc] + bias[oc]`` is a gather, which copied into each of its ~30 uses made a
1x1 conv + SiLU 4-12x slower than the conv alone (now ~2x: the SiLU's own cost).

Contract (``tests/test_kernels_fast_exp.py`` checks it against float64 ``exp``):
relative error at most 4 float32 ulps (``4 * 2**-23``, about 4.8e-7) where
``exp(x)`` is a normal float32; for subnormal results an absolute error below
``2**-149``-scale rounding (1e-44); ``exp(-inf) = 0``, ``exp(+inf) = +inf``, ``+inf``
for ``x > ln(FLT_MAX)``, NaN for NaN.  ``fast_exp(x, nonpositive=True)`` (softmax's
``exp(x - max(row))``) is a shorter form with its own contract (:func:`_below_max_exp`).

:func:`replace_exp` rewrites every float32 ``T.exp`` call of a PrimFunc into it, and
every float32 ``T.sigmoid`` into ``1 / (1 + fast_exp(-x))`` (TVM's LLVM lowering of
``sigmoid`` is that expression with libm's ``exp``; same 0, 1 and NaN for -inf, +inf,
NaN, within 6 ulps of the exact sigmoid where it is a normal float32).  The CPU
rules that make vector loops apply it to the functions they schedule: reduction
(softmax, log-softmax, log-sum-exp), injective (Sigmoid, SiLU = ``x * sigmoid(x)``,
Exp, Elu, Selu, ...), conv2d and matmul (their fused epilogues: EfficientNet's SiLU).
The int8 matmul rule too (a GELU in its write-back); not the fallback rule (scalar loops).  Float32 ``T.tanh`` too
(:func:`fast_tanh`): TOPI's ``tanh`` is an odd polynomial only below ``|x| < 1/16`` and
``T.tanh`` elsewhere, which LLVM lowers to two libm ``exp`` calls.  ``erf`` needs
nothing: TOPI writes it for float32 as a rational approximation (plain arithmetic).
Float32 ``T.pow(x, 3.0)`` and ``T.pow(x, 4.0)`` become products of ``x``
(:func:`integer_power`): LLVM keeps a libm ``powf`` call per element for them (it
rewrites only ``pow(x, 2.0)``), and GPT-2's ``gelu_new`` has ``x**3``; one thread,
zoo:gpt2 303 -> 252 ms (ONNX Runtime 261; its MLP input with the gelu 14.5 -> 9.4 ms).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

from .analysis import contains

# Beyond ln(FLT_MAX) the result is +inf; below ln(2**-150) it is 0 (rounded from the
# subnormals, so clamping there changes nothing).
_HI = 88.72283935546875
_LO = -104.0
_LOG2E = 1.44269504088896341
# ln 2 = _LN2_HI + _LN2_LO; _LN2_HI has 9 significant bits, so n * _LN2_HI is exact.
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
# Cephes expf: e^r ~ 1 + r + r^2 * P(r) on |r| <= ln2 / 2.
_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)

_EXP = tvm.ir.Op.get("tirx.exp")
_POW = tvm.ir.Op.get("tirx.pow")
_SIGMOID = tvm.ir.Op.get("tirx.sigmoid")
_TANH = tvm.ir.Op.get("tirx.tanh")
# tanh(x) = x (1 + x^2 (-1/3 + x^2 (2/15 - 17/315 x^2))) + O(x^9) for |x| < 1/16, as TOPI's.
_TANH_SMALL = 0.0625
_TANH_P = (-0.053968253968253971, 0.13333333333333333, -0.33333333333333331, 1.0)


def _f32(v: float):
    return tirx.const(v, "float32")


def _pow2(k):
    """``2**k`` as float32 from its exponent bits, for an int32 ``k`` in [-126, 127]."""
    return tirx.reinterpret("float32", tirx.shift_left(k + tirx.const(127, "int32"), tirx.const(23, "int32")))


def _bound(x, body, bind: bool = True):
    """``body(v)`` with ``v`` bound to ``x`` by a ``Let`` (``x`` itself when it is a
    variable or constant, or ``bind`` is False): ``x`` is computed once, however often
    ``body`` uses it.

    :func:`replace_exp` passes ``bind=False`` in a function that has any bfloat16 or
    float16 value: there the built kernel computed garbage with the ``Let`` (BERT's
    bf16 pooler tanh gave 1.0 everywhere, GPT-2 and EfficientNet bf16 builds were off
    by 65% and 24x; the precision tests against ONNX Runtime caught it).  Where in
    TVM's lowering of 16-bit floats a ``Let`` goes wrong is not pinned down; the
    unbound form is what was correct before."""
    if not bind or isinstance(x, (tirx.Var, tirx.IntImm, tirx.FloatImm)):
        return body(x)
    v = tirx.Var("x", x.ty if hasattr(x, "ty") else x.dtype)
    return tirx.Let(v, x, body(v))


def _has_half(x) -> bool:
    """Whether ``x`` (an expression or statement) has a bfloat16/float16 value anywhere."""
    return contains(x, tvm.ir.Expr, lambda e: str(getattr(e, "dtype", "")).startswith(("bfloat16", "float16")))


def fast_exp(x, bind: bool = True, *, nonpositive: bool = False):
    """``exp(x)`` for a float32 expression ``x``, as vectorisable arithmetic (see the
    module docstring for its error and its special values); ``bind``: see :func:`_bound`.

    ``nonpositive``: the caller knows ``x <= 0`` or NaN (softmax's ``x - max(row)``:
    :func:`hetpart.kernels.rules.cpu_reduction.row_max_exps`); the upper clamp and the
    overflow select, no-ops there, are left out: with :data:`SHORT_NONPOSITIVE` the
    whole computation is :func:`_below_max_exp` (14 vector operations, its own error
    bound), else :func:`fast_exp`'s bits for every such ``x``, 3 operations fewer."""
    return _bound(x, _fast_exp_nonpositive if nonpositive else _fast_exp, bind)


def _fast_exp_nonpositive(x):
    """:func:`fast_exp` of a variable or constant ``x <= 0`` (or NaN): :func:`_below_max_exp`
    where :data:`SHORT_NONPOSITIVE`, else :func:`_fast_exp` without its upper clamp."""
    return _below_max_exp(x) if SHORT_NONPOSITIVE else _fast_exp(x, upper=False)


SHORT_NONPOSITIVE = True
"""Whether ``fast_exp(x, nonpositive=True)`` is :func:`_below_max_exp` (14 vector
operations) rather than :func:`_fast_exp` less its overflow handling (~32)."""

# _below_max_exp: x * log2(e) + _BM_BIAS rounds (to nearest) to an integer n + 127 kept in
# the low mantissa bits of a float in [2**23, 2**24): 1.5 * 2**23 + 127.
_BM_BIAS = 12583039.0
# Clamp: n >= -127 for every x >= _BM_LO (-88 * log2 e = -126.96); n = -127 makes the scale 0.
_BM_LO = -88.0
# e^r ~ 1 + r + r^2 (c2 + c3 r + c4 r^2 + c5 r^3 + c6 r^4) on |r| <= ln2 / 2: a minimax fit
# of the relative error (Lawson's iteration on 4001 Chebyshev points, 3.1e-9 before the
# coefficients' rounding to float32); c6 first.
_BM_P = (0.001381461275741458, 0.008368710055947304, 0.04166838899254799, 0.1666652113199234,
         0.4999999403953552, 1.0, 1.0)


def _below_max_exp(x):
    """``exp(x)`` for a variable or constant ``x <= 0`` or NaN (softmax's ``x - max(row)``)
    in 14 vector operations, as ONNX Runtime's softmax computes its exps: one clamp,
    ``n = round(x log2 e)`` by the rounding of a float add (no floor, no int conversion),
    ``r = x - n ln2`` (ln 2 in two parts), a degree-6 polynomial (Horner, 6 FMAs), and
    ``2**n`` as ``(n + 127) << 23`` -- one scale, not :func:`_fast_exp`'s two halves.

    Contract (tests/test_kernels_fast_exp.py; every float32 in [-88, 0] checked once,
    bench/results/cpu-softmax-exp-2core.md: the largest 7.71e-8 = 0.65 * 2**-23, at
    x = -26.737): relative error at most ``2**-23`` where ``exp(x) >= 2**-126``
    (x >= -87.34); where ``exp(x) < 2**-126`` a result in
    ``[0, 2**-126)`` (subnormals kept down to x ~ -87.68, 0 below: the flush ONNX Runtime's
    softmax exp makes too), so an absolute error below ``2**-126``; ``exp(-inf) = 0``,
    ``exp(-0) = exp(0) = 1``; NaN for NaN (the clamp is a select that keeps a NaN, and a NaN
    times the scale, whatever its bits, is NaN).  For ``x > 0`` it is not ``exp``."""
    xc = tirx.Select(x < _f32(_BM_LO), _f32(_BM_LO), x)
    biased = xc * _f32(_LOG2E) + _f32(_BM_BIAS)
    n = tirx.reinterpret("float32", tirx.reinterpret("int32", biased)) - _f32(_BM_BIAS)
    r = (xc - n * _f32(_LN2_HI)) - n * _f32(_LN2_LO)
    poly = _f32(_BM_P[0])
    for c in _BM_P[1:]:
        poly = poly * r + _f32(c)
    # The low 9 bits of ``biased``'s bits are n + 127 in [0, 127]: shifted into the exponent
    # field the rest of the bits fall off the top (a shift left without overflow flags).
    scale = tirx.reinterpret("float32", tirx.shift_left(tirx.reinterpret("int32", biased),
                                                        tirx.const(23, "int32")))
    return poly * scale


def _fast_exp(x, upper: bool = True):
    """:func:`fast_exp` of a variable or constant ``x``; without ``upper``, for ``x <= 0``
    or NaN only (no clamp at ln(FLT_MAX), no +inf past it)."""
    xc = tirx.max(tirx.min(x, _f32(_HI)) if upper else x, _f32(_LO))
    n = tirx.floor(xc * _f32(_LOG2E) + _f32(0.5))
    r = (xc - n * _f32(_LN2_HI)) - n * _f32(_LN2_LO)
    poly = _f32(_P[0])
    for c in _P[1:]:
        poly = poly * r + _f32(c)
    er = poly * (r * r) + r + _f32(1.0)
    k = tirx.Cast("int32", n)
    half = tirx.shift_right(k, tirx.const(1, "int32"))  # floor(k / 2): k = half + (k - half)
    y = er * _pow2(half) * _pow2(k - half)
    if upper:
        y = tirx.Select(x > _f32(_HI), tirx.infinity("float32"), y)
    return tirx.Select(tirx.isnan(x), x, y)


def _is_f32(call, op) -> bool:
    return isinstance(call.op, tvm.ir.Op) and call.op.same_as(op) and str(call.ty) == "float32"


def _is_f32_exp(call) -> bool:
    """A float32 call that LLVM would compute with libm's scalar ``exp`` (``T.exp``,
    ``T.sigmoid`` or ``T.tanh``) or ``pow`` (:func:`_small_power`)."""
    return (_is_f32(call, _EXP) or _is_f32(call, _SIGMOID) or _is_f32(call, _TANH)
            or _small_power(call) is not None)


INTEGER_POW = True
"""Whether :func:`replace_exp` computes ``T.pow(x, 3.0)`` / ``T.pow(x, 4.0)`` as products."""


def _small_power(call) -> int | None:
    """The exponent of a float32 ``T.pow(x, c)`` whose ``c`` is the constant 3 or 4, else None.
    (LLVM rewrites ``pow(x, 2.0)`` into ``x * x`` itself; ``pow(x, 3.0)`` it leaves a libm call
    per element without fast-math: GPT-2's ``gelu_new``, ``x + 0.044715 x**3``.)"""
    if not (INTEGER_POW and _is_f32(call, _POW) and isinstance(call.args[1], tirx.FloatImm)):
        return None
    c = float(call.args[1].value)
    return int(c) if c in (3.0, 4.0) else None


def integer_power(x, n: int, bind: bool = True):
    """``x ** n`` for a float32 expression ``x`` and ``n`` 3 or 4, as products of ``x``
    (bound once): ``x * x * x``, ``(x * x) * (x * x)``.  Within 2 roundings of the exact power
    (relative error below ``2 * 2**-24`` plus rounding: tests/test_kernels_fast_exp.py), the
    same signs, zeros, infinities and NaN as libm's ``powf`` for these exponents."""
    if n == 3:
        return _bound(x, lambda v: v * v * v, bind)
    return _bound(x, lambda v: _bound(v * v, lambda sq: sq * sq, bind), bind)


def fast_sigmoid(x, bind: bool = True):
    """``sigmoid(x) = 1 / (1 + exp(-x))`` for a float32 expression ``x``, the exp by
    :func:`fast_exp` (0 for -inf and below about -88.7, 1 for +inf, NaN for NaN); with
    :data:`SHORT_SIGMOID` by :func:`_short_sigmoid`."""
    one = _f32(1.0)
    if SHORT_SIGMOID:
        return _bound(x, lambda v: _short_sigmoid(v, bind), bind)
    return one / (one + fast_exp(-x, bind))


SHORT_SIGMOID = True
"""Whether :func:`fast_sigmoid` is :func:`_short_sigmoid` (about 20 vector operations and a
division) rather than ``1 / (1 + fast_exp(-x))`` (about 35 and a division).  Measured (1
AVX-512 thread, CPU time, in a whole run, least of 15): EfficientNet's 16 -> 96 1x1 conv + SiLU
on 112x112 (NCHW16c) 1.163 ms, the same conv + ReLU 0.338 -- the SiLU cost 2.4x the conv
(bench/results/cpu-incep-blocked-1core.md has the after)."""


def _short_sigmoid(v, bind: bool = True):
    """``sigmoid(v)`` of a variable or constant ``v`` from ``e = exp(-|v|)`` (an argument
    ``<= 0``: :func:`fast_exp`'s ``nonpositive`` form, 14 operations): ``1 / (1 + e)`` for
    ``v >= 0``, ``e / (1 + e)`` below.  Contract (tests/test_kernels_fast_exp.py): within 6
    ulps of the exact sigmoid where that is a normal float32 (``v > -87.3``); below, an
    absolute error under ``2**-126``; 0, 1, NaN for -inf, +inf, NaN (``min(v, -v)`` keeps a
    NaN, whose exp is NaN, and the select takes ``e / (1 + e)`` for it)."""
    one = _f32(1.0)
    e = fast_exp(tirx.min(v, -v), bind, nonpositive=True)
    return _bound(e, lambda ev: _bound(one / (one + ev), lambda r: tirx.Select(v >= _f32(0.0), r, ev * r), bind),
                  bind)


def fast_tanh(x, bind: bool = True):
    """``tanh(x)`` for a float32 expression ``x``: ``(1 - e) / (1 + e)``, ``e =``
    :func:`fast_exp` ``(-2|x|)``, with ``x``'s sign -- LLVM's lowering of ``T.tanh``
    with libm's ``exp`` -- and TOPI's odd polynomial below ``|x| < 1/16``, where
    ``1 - e`` would cancel.  +-1 for +-inf, NaN for NaN, -0 for -0; within 16 ulps
    (the cancellation just above 1/16 multiplies exp's 4 ulps by up to 4)."""
    return _bound(x, lambda v: _fast_tanh(v, bind), bind)


def _fast_tanh(x, bind: bool = True):
    ax = tirx.abs(x)
    one = _f32(1.0)
    big = _bound(fast_exp(_f32(-2.0) * ax, bind), lambda e: tirx.copysign((one - e) / (one + e), x), bind)
    x2 = x * x
    poly = _f32(_TANH_P[0])
    for c in _TANH_P[1:]:
        poly = poly * x2 + _f32(c)
    return tirx.Select(ax < _f32(_TANH_SMALL), x * poly, big)


def has_exp(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` calls float32 ``T.exp``, ``T.sigmoid``, ``T.tanh`` or a small ``T.pow`` anywhere."""
    found = []
    tvm_ffi.structural_walk(func.body, (tvm.ir.Call, lambda c: found.append(c) if _is_f32_exp(c) else None))
    return bool(found)


def replace_exp(func: tirx.PrimFunc, nonpositive=None) -> tirx.PrimFunc:
    """``func`` with every float32 ``T.exp(a)`` computed as :func:`fast_exp` ``(a)``,
    every float32 ``T.sigmoid(a)`` / ``T.tanh(a)`` as :func:`fast_sigmoid` /
    :func:`fast_tanh` ``(a)`` and ``T.pow(a, 3.0 | 4.0)`` as :func:`integer_power`;
    everything else unchanged (the same function when it
    has none of them).  ``nonpositive(a)`` (optional): True for an argument the caller
    proved ``<= 0`` or NaN, then computed by ``fast_exp(a, nonpositive=True)``."""
    if not has_exp(func):
        return func
    bind = not _has_half(func.body)  # see _bound

    def visit(call):
        if _is_f32(call, _EXP):
            return fast_exp(call.args[0], bind, nonpositive=bool(nonpositive and nonpositive(call.args[0])))
        if _is_f32(call, _SIGMOID):
            return fast_sigmoid(call.args[0], bind)
        if _is_f32(call, _TANH):
            return fast_tanh(call.args[0], bind)
        n = _small_power(call)
        if n is not None:
            return integer_power(call.args[0], n, bind)
        return call

    return func.with_body(tvm_ffi.structural_map(func.body, (tvm.ir.Call, visit)))
