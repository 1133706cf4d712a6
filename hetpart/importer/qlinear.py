"""QLinearMatMul and QLinearConv as an integer contraction and a requantisation.

In: a checked ``ModelProto``.  Out: the same model where every ``QLinearMatMul`` is
``MatMulInteger`` and every ``QLinearConv`` is ``ConvInteger`` (+ its int32 bias),
followed by ``Cast`` to float32, ``Mul`` by ``a_scale * b_scale`` (per-row /
per-column / per-output-channel scales broadcast to the accumulator) and
``QuantizeLinear(y_scale, y_zero_point)``; unchanged (the same object) when the
model has neither.

This is ONNX's definition of the two ops (onnx.reference: the int32 accumulator of
the zero-point-shifted inputs, times ``a_scale * b_scale / y_scale``, rounded half to
even, plus ``y_zero_point``, saturated), written with ops hetpart imports: the
contraction stays integer (int8/uint8 inputs, int32 accumulation; see
:mod:`.integer_ops` for ConvInteger), only the requantisation is float.  Float16
scales (opset 21) are widened to float32 first.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

_OPS = ("QLinearMatMul", "QLinearConv")


def lower_qlinear(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with QLinearMatMul/QLinearConv rewritten (see the module doc)."""
    if not any(n.op_type in _OPS and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    ranks = _ranks(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for i, node in enumerate(out.graph.node):
        if node.op_type == "QLinearMatMul" and node.domain in ("", "ai.onnx"):
            nodes.extend(_matmul(node, f"{node.name or node.output[0]}/qlinear{i}", ranks))
        elif node.op_type == "QLinearConv" and node.domain in ("", "ai.onnx"):
            nodes.extend(_conv(node, f"{node.name or node.output[0]}/qlinear{i}", ranks))
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor value shape inference can shape."""
    from .onnx_types import value_types as _value_types

    out = {}
    for name, t in _value_types(model).items():
        if t.HasField("tensor_type") and t.tensor_type.HasField("shape"):
            out[name] = len(t.tensor_type.shape.dim)
    return out


class _Emit:
    """Builds the replacement nodes of one QLinear node under a unique prefix."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes = prefix, []

    def __call__(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        name = out or f"{self.prefix}/{op.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [name], name=f"{self.prefix}/{len(self.nodes)}", **attrs))
        return name

    def const(self, name: str, values: list[int]) -> str:
        tensor = helper.make_tensor(f"{self.prefix}/{name}", TensorProto.INT64, [len(values)], values)
        return self("Constant", [], f"{self.prefix}/{name}", value=tensor)

    def float32(self, value: str) -> str:
        return self("Cast", [value], to=TensorProto.FLOAT)


def _requantize(emit: _Emit, acc: str, scale: str, y_scale: str, y_zp: str, out: str, axis: int | None) -> None:
    """``QuantizeLinear(float(acc) * scale, y_scale, y_zp)`` into ``out``."""
    real = emit("Mul", [emit.float32(acc), scale])
    inputs = [real, emit.float32(y_scale)] + ([y_zp] if y_zp else [])
    emit("QuantizeLinear", inputs, out, **({"axis": axis} if axis is not None else {}))


def _matmul(node: onnx.NodeProto, prefix: str, ranks: dict) -> list[onnx.NodeProto]:
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (list(node.input) + [""] * 8)[:8]
    emit = _Emit(prefix)
    acc = emit("MatMulInteger", [a, b, a_zp, b_zp])
    row_scale = emit.float32(a_scale)
    if ranks.get(a_scale, 0) == 1:  # per-row: [M] -> [M, 1]
        row_scale = emit("Reshape", [row_scale, emit.const("row", [-1, 1])])
    scale = emit("Mul", [row_scale, emit.float32(b_scale)])
    out_rank = max(ranks.get(a, 2), ranks.get(b, 2))
    per_row = ranks.get(y_scale, 0) == 1
    _requantize(emit, acc, scale, y_scale, y_zp, node.output[0], out_rank - 2 if per_row else None)
    return emit.nodes


def _conv(node: onnx.NodeProto, prefix: str, ranks: dict) -> list[onnx.NodeProto]:
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias = (list(node.input) + [""] * 9)[:9]
    emit = _Emit(prefix)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    acc = emit("ConvInteger", [x, w, x_zp, w_zp], **attrs)
    if bias:
        rank = ranks.get(w, 4)
        acc = emit("Add", [acc, emit("Reshape", [bias, emit.const("bias_shape", [-1] + [1] * (rank - 2))])])
    scale = emit.float32(w_scale)
    if ranks.get(w_scale, 0) == 1:  # per output channel: [M] -> [M, 1, ...]
        scale = emit("Reshape", [scale, emit.const("channel", [-1] + [1] * (ranks.get(w, 4) - 2))])
    scale = emit("Mul", [emit.float32(x_scale), scale])
    _requantize(emit, acc, scale, y_scale, y_zp, node.output[0], None)
    return emit.nodes
