"""Make the ops TVM lowers with ``max``/``min``, a multiply by a mask or a floor
division give NaN and infinities as ONNX does, before fusion.

In: a Relax module of high-level ops (``from_onnx``'s output).  Out: the same module
where every float ``relax.nn.relu``, ``relax.clip``, ``relax.maximum`` /
``relax.minimum`` (and the ``maximum`` / ``minimum`` PrimFuncs the frontend emits for
``Clip`` with tensor bounds), ONNX ``Max`` / ``Min`` (imported as a max/min over a
stack of the operands), ``relax.sign``, ONNX ``ThresholdedRelu`` (imported as
``x * (x > alpha)``), the ``relax.max`` / ``relax.min`` reductions (ReduceMax,
ReduceMin) and ``relax.floor_mod`` (``Mod`` with ``fmod=0``; a float16 ``relax.mod`` too, in float32) is computed by a
``call_te`` of the same name that propagates NaN and infinities; they fuse into
their neighbours like the ops they replace.

Why: TVM lowers ``max(x, 0)`` to ``x > 0 ? x : 0`` (NaN becomes 0: Relu, Clip, Max,
Min, and Elu/Selu/HardSigmoid/HardSwish built from them), ``sign`` to two compares
(NaN becomes 0), and ``x * (x > alpha)`` is NaN for x = -inf where ONNX gives 0.
Its max (min) reduction starts from the lowest (highest) *finite* value, so a row
of -inf reduces to -3.4e38 (onnx's Attention function then misses a fully masked
row), and it skips NaN.  Its float ``floor_mod`` is ``x - floor(x / y) * y``: NaN
for an infinite ``y``, where C's ``fmod`` and numpy give ``x`` or ``y``.  (CUDA has no
half-precision ``fmod``: float16 mods compute in float32, as numpy does, and round once.)  ONNX
(numpy, onnxruntime) propagates NaN.  The rewritten ops cost the same compares and
selects, no extra memory traffic.  ArgMax / ArgMin still ignore NaN (README,
"Numerics").
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx, topi
from tvm.relax import Call, PyExprMutator, expr_functor

from .relax_rewrite import rewrite_functions
from .te_broadcast import broadcast

_MAXMIN_PRIMFUNCS = {"maximum": "max", "minimum": "min"}

BOUNDS_AS_CONSTANTS = False
"""Whether a ``Clip`` bound the frontend imports as ``maximum``/``minimum`` with a rank-0
constant (mobilenet_v2's ReLU6: ``Clip(x, lo, hi)`` with initializer bounds, which the
frontend wraps in ``where(isnan(c), -inf, c)``) is computed as ``x < lo ? lo : x`` with
the value folded in (:func:`_bounded`; the same NaN and infinity results), not as
``isnan(x) or isnan(lo) ? x + lo : max(x, lo)`` reading the bound from a kernel
parameter: in every conv's write-back four vector ops per bound where one compare-select
suffices.  Measured on the CPU (2-core EPYC znver3, AVX2, 1 thread, CPU time, both builds
in one process in turns, least of 10 calls x 5 rounds; bench/results/cpu-convnets2-2core.md):
mobilenet_v2 10.84 -> 10.42 ms (ONNX Runtime 9.18), its 24->144 + ReLU6 on 56x56 0.280 ->
0.263, 32x112x112 depthwise 0.236 -> 0.216.

Off by default: the import is the GPU's too, and there the folded Clip is a ReLU-like
epilogue with no side inputs, so at batch 1 MobileNet-v2's Clip-ended convs would leave the
SIMT schedules issue 17 measured (``gpu_tensor_core.SIDE_INPUTS_MIN_BATCH``) for the tensor
cores, unmeasured; turn on once a GPU run has timed mobilenet_v2 at batch 1 both ways."""


def _is_float(expr) -> bool:
    return str(getattr(getattr(expr, "ty", None), "dtype", "")).startswith("float")


# The TE outputs are named "compute", as topi names them, so generated code and the
# rules' buffer names read as before the rewrite.
def _relu(x):
    zero = tirx.const(0, x.dtype)
    return te.compute(x.shape, lambda *i: tirx.Select(x(*i) < zero, zero, x(*i)), name="compute")


def _clip(x, lo, hi):
    lo, hi = tirx.const(lo, x.dtype), tirx.const(hi, x.dtype)
    return te.compute(x.shape, lambda *i: tirx.Select(x(*i) < lo, lo, tirx.Select(x(*i) > hi, hi, x(*i))),
                      name="compute")


def _nan_extremum(which: str):
    """Broadcasting ``max``/``min`` that is NaN where either operand is."""
    pick = topi.maximum if which == "max" else topi.minimum

    def compute(a, b):
        either_nan = topi.logical_or(topi.isnan(a), topi.isnan(b))
        return topi.where(either_nan, topi.add(a, b), pick(a, b))

    return compute


def _bounded(which: str, bound: float):
    """``max``/``min`` of a tensor and a constant scalar that is no NaN (an ONNX ``Clip``'s
    bound, imported as ``maximum(x, lo)``): ``x < lo ? lo : x``, a NaN ``x`` kept as it is
    (the compare is false), as :func:`_clip` computes it."""
    def compute(x):
        b = tirx.const(bound, x.dtype)

        def pick(v):
            return tirx.Select(v < b if which == "max" else v > b, b, v)
        return te.compute(x.shape, lambda *i: pick(x(*i)), name="compute")

    return compute


def _scalar_bound(expr):
    """The value of ``expr`` where it is a rank-0 float constant that is no NaN, else None."""
    if not isinstance(expr, tvm.ir.GenericConst):
        return None
    value = expr.value.numpy()
    if value.ndim != 0 or value.dtype.kind != "f" or value != value:
        return None
    return float(value)


def _nan_extremum_of(which: str, count: int):
    """``max``/``min`` of ``count`` same-shape tensors, NaN where any is."""
    pairwise = _nan_extremum(which)

    def compute(*xs):
        out = xs[0]
        for x in xs[1:count]:
            out = pairwise(out, x)
        return out

    return compute


def _sign(x):
    one, zero = tirx.const(1, x.dtype), tirx.const(0, x.dtype)

    def sign(v):
        return tirx.Select(tirx.isnan(v), v, tirx.Select(v > zero, one, tirx.Select(v < zero, -one, zero)))

    return te.compute(x.shape, lambda *i: sign(x(*i)), name="compute")


def _reducer(which: str):
    """A max/min reducer that starts from -inf/+inf and keeps a NaN once it meets one.

    ``a`` wins when it is further out or NaN: a NaN in either operand gives NaN, so
    the combiner stays commutative and associative (as a TVM reducer must be)."""
    def combine(a, b):
        further = a > b if which == "max" else a < b
        return tirx.Select(tirx.Or(further, tirx.isnan(a)), a, b)

    def identity(dtype):
        return tirx.const(float("-inf") if which == "max" else float("inf"), dtype)

    return te.comm_reducer(combine, identity, name=which)


def _extremum_reduction(which: str, axes, keepdims: bool):
    """ONNX ReduceMax/ReduceMin of ``x`` over ``axes`` (None: all), as numpy computes it."""
    reducer = _reducer(which)

    def compute(x):
        ndim = len(x.shape)
        axes_ = sorted({int(a) % ndim for a in axes} if axes is not None else range(ndim))
        kept = [d for d in range(ndim) if d not in axes_]
        rk = [te.reduce_axis((0, x.shape[d]), name=f"k{d}") for d in axes_]
        out_shape = [1 if d in axes_ else x.shape[d] for d in range(ndim)] if keepdims \
            else [x.shape[d] for d in kept]

        def body(*i):
            it, kt, index = iter(i), iter(rk), []
            for d in range(ndim):
                if d in axes_:
                    index.append(next(kt).var)
                    if keepdims:
                        next(it)
                else:
                    index.append(next(it))
            return reducer(x(*index), axis=rk)

        return te.compute(out_shape, body, name=f"{which}_red")

    return compute


def _wide(dtype) -> str:
    """The type a float mod computes in: float16 in float32 (CUDA has no half fmod;
    numpy also computes half in float and rounds once)."""
    return "float32" if str(dtype) == "float16" else str(dtype)


def _floor_mod(a, b):
    """numpy's ``mod`` of floats: C's ``fmod``, moved by ``b`` where the signs
    differ; a zero takes ``b``'s sign."""
    dtype, wide = str(a.dtype), _wide(a.dtype)
    zero, neg_zero = tirx.const(0.0, wide), tirx.const(-0.0, wide)

    def mod(x, y):
        x, y = x.astype(wide), y.astype(wide)
        r = tirx.truncmod(x, y)  # C fmod for floats (LLVM frem, CUDA fmodf); tirx.fmod has no LLVM lowering
        # signs differ (a bool != bool would become an fcmp on i1, which LLVM rejects)
        differ = tirx.Or(tirx.And(r < zero, y > zero), tirx.And(r > zero, y < zero))
        moved = tirx.Select(differ, r + y, r)
        signed_zero = tirx.Select(y < zero, neg_zero, zero)  # tirx.copysign has no float16 lowering
        return tirx.Select(r == zero, signed_zero, moved).astype(dtype)

    return broadcast(mod, a, b)


def _half_trunc_mod(a, b):
    """C's ``fmod`` of float16 operands, computed in float32 (CUDA has no half fmod)."""
    return broadcast(lambda x, y: tirx.truncmod(x.astype("float32"), y.astype("float32")).astype("float16"), a, b)


def _thresholded_relu(x, alpha):
    zero, alpha = tirx.const(0, x.dtype), tirx.const(alpha, x.dtype)
    return te.compute(x.shape, lambda *i: tirx.Select(x(*i) > alpha, x(*i), zero), name="compute")


@expr_functor.mutator
class _NaNSemantics(PyExprMutator):
    def visit_call_(self, call: Call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", None)
        if name == "relax.call_tir":
            return self._maybe_maxmin_primfunc(call)
        if not call.args or not _is_float(call.args[0]):
            return call
        if name == "relax.nn.relu":
            return self.builder_.call_te(_relu, call.args[0], primfunc_name_hint="relu")
        if name == "relax.clip" and all(hasattr(a, "value") and isinstance(a.value, (int, float))
                                        for a in call.args[1:]):
            lo, hi = (float(a.value) for a in call.args[1:])  # IntImm / FloatImm bounds
            return self.builder_.call_te(_clip, call.args[0], lo, hi, primfunc_name_hint="clip")
        if name in ("relax.maximum", "relax.minimum"):
            which = name.split(".")[-1][:3]
            return self.builder_.call_te(_nan_extremum(which), *call.args, primfunc_name_hint=name.split(".")[-1])
        if name in ("relax.max", "relax.min"):
            return self._extremum(call, name.split(".")[-1])
        if name == "relax.floor_mod":
            return self.builder_.call_te(_floor_mod, *call.args, primfunc_name_hint="floor_mod")
        if name == "relax.mod" and str(call.args[0].ty.dtype) == "float16":
            return self.builder_.call_te(_half_trunc_mod, *call.args, primfunc_name_hint="mod")
        if name == "relax.sign":
            return self.builder_.call_te(_sign, call.args[0], primfunc_name_hint="sign")
        if name == "relax.multiply":
            return self._maybe_thresholded_relu(call)
        return call

    def _bound(self, expr, op_name: str):
        """The call ``expr`` (a var) is bound to, if it is a call of ``op_name``."""
        if not isinstance(expr, relax.Var):
            return None
        value = self.lookup_binding(expr)
        if isinstance(value, Call) and getattr(value.op, "name", None) == op_name:
            return value
        return None

    def _maybe_maxmin_primfunc(self, call: Call):
        """``call_tir(maximum|minimum, (a, b))`` as the frontend emits for Clip's bounds."""
        which = _MAXMIN_PRIMFUNCS.get(getattr(call.args[0], "name_hint", "").rstrip("0123456789"))  # maximum1 ...
        args = list(call.args[1].fields) if isinstance(call.args[1], relax.Tuple) else []
        if which is None or len(args) != 2 or not all(_is_float(a) for a in args):
            return call
        for x, bound in ((args[0], args[1]), (args[1], args[0])):
            value = self._constant_bound(bound) if BOUNDS_AS_CONSTANTS else None
            if value is not None and str(bound.ty.dtype) == str(x.ty.dtype):
                # A constant bound: one compare and select, no NaN tests of a bound that is none.
                return self.builder_.call_te(_bounded(which, value), x, primfunc_name_hint=call.args[0].name_hint)
        return self.builder_.call_te(_nan_extremum(which), *args, primfunc_name_hint=call.args[0].name_hint)

    def _constant_bound(self, expr, depth: int = 3):
        """The value of a rank-0 float bound that is no NaN: a constant, or as the frontend
        imports a Clip bound, ``where(isnan(c), -inf, c)`` of a constant ``c``; else None."""
        value = _scalar_bound(expr)
        if value is not None or depth == 0 or not isinstance(expr, relax.Var):
            return value
        bound = self.lookup_binding(expr)
        if not (isinstance(bound, Call) and getattr(bound.op, "name", None) == "relax.where"):
            return None
        test = bound.args[0]
        test = self.lookup_binding(test) if isinstance(test, relax.Var) else test
        if not (isinstance(test, Call) and getattr(test.op, "name", None) == "relax.isnan"):
            return None
        checked = self._constant_bound(test.args[0], depth - 1)
        return None if checked is None else self._constant_bound(bound.args[2], depth - 1)

    def _extremum(self, call: Call, which: str):
        """ONNX Max/Min of several tensors, else a ReduceMax/ReduceMin."""
        stacked = self._maybe_stacked_extremum(call, which)
        if stacked is not call:
            return stacked
        axis = call.attrs.axis
        axes = None if axis is None else [int(a) for a in axis]
        return self.builder_.call_te(_extremum_reduction(which, axes, bool(call.attrs.keepdims)), call.args[0],
                                     primfunc_name_hint=which)

    def _maybe_stacked_extremum(self, call: Call, which: str):
        """ONNX Max/Min: ``max(stack(xs, axis=k), axis=[k])`` -> NaN-propagating max of ``xs``."""
        stack = self._bound(call.args[0], "relax.stack")
        axis = getattr(call.attrs, "axis", None)
        if stack is None or axis is None or len(axis) != 1 or call.attrs.keepdims:
            return call
        fields = stack.args[0]
        fields = list(fields.fields) if isinstance(fields, relax.Tuple) else None
        if not fields or int(axis[0]) != int(stack.attrs.axis):
            return call
        if len(fields) == 1:
            return fields[0]
        return self.builder_.call_te(_nan_extremum_of(which, len(fields)), *fields,
                                     primfunc_name_hint="maximum" if which == "max" else "minimum")

    def _maybe_thresholded_relu(self, call: Call):
        """ThresholdedRelu as imported: ``astype(greater(x, alpha)) * x``."""
        mask, x = call.args
        cast = self._bound(mask, "relax.astype")
        greater = self._bound(cast.args[0], "relax.greater") if cast is not None else None
        if greater is None or not greater.args[0].same_as(x) or not isinstance(greater.args[1], tvm.ir.GenericConst):
            return call
        alpha = greater.args[1].value.numpy()
        if alpha.size != 1:
            return call
        return self.builder_.call_te(_thresholded_relu, x, float(alpha), primfunc_name_hint="thresholded_relu")


def propagate_nan(mod):
    """``mod`` with the ops of the module docstring computed NaN-propagating."""
    return rewrite_functions(mod, _NaNSemantics(mod))
