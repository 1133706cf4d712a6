"""Accumulate float16 matmuls, convolutions, softmaxes and sums in float32, before fusion.

In: a Relax module of high-level ops (``from_onnx``'s output).  Out: the same module
where every ``relax.matmul`` and ``relax.nn.conv1d/2d/3d`` of float16 operands with a
float16 result computes with ``out_dtype="float32"`` and is cast to float16 once,
every float16 ``relax.sum`` / ``relax.mean`` runs on its input cast to float32, its
result cast back, and a float16 ``relax.nn.softmax`` is ONNX's definition
``exp(x - max) / sum(exp(x - max))`` with each of those ops rounding to float16 once
(the sum accumulated in float32).

Why: TVM accumulates in the output type, so a float16 dot product or row sum rounds
at every step; ONNX's ops round their *result* to the tensor type, and numpy
(onnx.reference, hence the onnx test data) and onnxruntime accumulate float16 in
float32.  The float16 attention tests came out 1 ulp off numpy's results in up to
17% of the elements.  The casts fuse into the kernels' epilogue and prologue; on a
GPU this is also the precision tensor cores accumulate in.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax import Call, PyExprMutator, expr_functor

from .relax_rewrite import rewrite_functions

F16, F32 = "float16", "float32"
_CONVS = {"relax.nn.conv1d": relax.op.nn.conv1d, "relax.nn.conv2d": relax.op.nn.conv2d,
          "relax.nn.conv3d": relax.op.nn.conv3d}
_WIDENED = {"relax.sum", "relax.mean"}


def _dtype(expr) -> str:
    return str(getattr(getattr(expr, "ty", None), "dtype", ""))


@expr_functor.mutator
class _Float16Accumulation(PyExprMutator):
    def visit_call_(self, call: Call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", None)
        if not call.args or _dtype(call.args[0]) != F16 or _dtype(call) != F16:
            return call
        if name == "relax.matmul" and _dtype(call.args[1]) == F16:
            return relax.op.astype(self.builder_.emit(relax.op.matmul(*call.args, out_dtype=F32)), F16)
        if name in _CONVS and _dtype(call.args[1]) == F16:
            a = call.attrs
            wide = _CONVS[name](*call.args, strides=a.strides, padding=a.padding, dilation=a.dilation,
                                groups=a.groups, data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                                out_layout=a.out_layout, out_dtype=F32)
            return relax.op.astype(self.builder_.emit(wide), F16)
        if name == "relax.nn.softmax":
            return self._softmax(call.args[0], int(call.attrs.axis))
        if name in _WIDENED:
            x = self.builder_.emit(relax.op.astype(call.args[0], F32))
            wide = relax.Call(call.op, [x, *call.args[1:]], call.attrs)
            return relax.op.astype(self.builder_.emit(wide), F16)
        return call


    def _softmax(self, x, axis: int):
        bb = self.builder_
        shifted = bb.emit(relax.op.subtract(x, relax.op.max(x, axis=[axis], keepdims=True)))
        e = bb.emit(relax.op.exp(shifted))
        total = bb.emit(relax.op.sum(bb.emit(relax.op.astype(e, F32)), axis=[axis], keepdims=True))
        return relax.op.divide(e, bb.emit(relax.op.astype(total, F16)))


def accumulate_float16_in_float32(mod):
    """``mod`` with its float16 accumulations as the module docstring says."""
    return rewrite_functions(mod, _Float16Accumulation(mod))
