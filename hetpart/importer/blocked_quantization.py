"""Blocked QuantizeLinear / DequantizeLinear (opset 21's ``block_size``) as element-wise ops.

In: a checked ``ModelProto`` with static shapes.  Out: the same model where every
QuantizeLinear/DequantizeLinear with ``block_size > 0`` (TVM's converters refuse it)
is written with ops hetpart imports, by ONNX's definition: the scale (and zero
point) of shape ``x.shape`` but ``ceil(D / block_size)`` along ``axis`` is repeated
``block_size`` times along that axis and cut to ``D`` (Unsqueeze, Expand, Reshape,
Slice), then

* DequantizeLinear: ``(float(x) - float(zero_point)) * scale`` in the scale's type;
* QuantizeLinear: ``saturate(Round(x / scale) + zero_point)`` (Round: half to even),
  cast to the zero point's type (else ``output_dtype``, else uint8).

Unchanged (the same object) when there is none; a node whose shapes are unknown stays
(TVM's converter then names it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

_OPS = ("QuantizeLinear", "DequantizeLinear")


def blocked_quantization(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with blocked (de)quantisation rewritten (see the module doc)."""
    if not any(n.op_type in _OPS and _attrs(n).get("block_size", 0) for n in model.graph.node):
        return model
    from .onnx_types import value_types as _value_types

    types = {k: t.tensor_type for k, t in _value_types(model).items() if t.HasField("tensor_type")}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for i, node in enumerate(out.graph.node):
        rewritten = _rewrite(node, i, types) if node.op_type in _OPS and _attrs(node).get("block_size", 0) else None
        nodes.extend(rewritten if rewritten is not None else [node])
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _shape(tt) -> list[int] | None:
    if tt is None or not tt.HasField("shape") or any(not d.HasField("dim_value") for d in tt.shape.dim):
        return None
    return [d.dim_value for d in tt.shape.dim]


def _rewrite(node: onnx.NodeProto, i: int, types: dict) -> list[onnx.NodeProto] | None:
    x, scale, zp = (list(node.input) + ["", ""])[:3]
    attrs = _attrs(node)
    x_shape, s_shape = _shape(types.get(x)), _shape(types.get(scale))
    if x_shape is None or s_shape is None:
        return None
    axis = attrs.get("axis", 1) % len(x_shape)
    block = attrs["block_size"]
    prefix = f"{node.name or node.output[0]}/blocked{i}"
    out: list[onnx.NodeProto] = []

    def emit(op, inputs, **kw):
        name = f"{prefix}/{len(out)}"
        out.append(helper.make_node(op, inputs, [name], name=name, **kw))
        return name

    def const(values):
        name = f"{prefix}/{len(out)}"
        out.append(helper.make_node("Constant", [], [name], name=name, value=helper.make_tensor(
            name, TensorProto.INT64, [len(values)], values)))
        return name

    def full(value):
        """``value`` repeated block_size times along ``axis``, cut to x's extent."""
        up = emit("Unsqueeze", [value, const([axis + 1])])
        expanded = s_shape[:axis + 1] + [block] + s_shape[axis + 1:]
        merged = s_shape[:axis] + [s_shape[axis] * block] + s_shape[axis + 1:]
        flat = emit("Reshape", [emit("Expand", [up, const(expanded)]), const(merged)])
        return emit("Slice", [flat, const([0]), const([x_shape[axis]]), const([axis])])

    scale_type = types[scale].elem_type
    if node.op_type == "DequantizeLinear":
        real = emit("Cast", [x], to=TensorProto.FLOAT)
        if zp:
            real = emit("Sub", [real, emit("Cast", [full(zp)], to=TensorProto.FLOAT)])
        value = emit("Mul", [real, emit("Cast", [full(scale)], to=TensorProto.FLOAT)])
        out.append(helper.make_node("Cast", [value], [node.output[0]], name=f"{prefix}/out", to=scale_type))
        return out
    to = types[zp].elem_type if zp else (attrs.get("output_dtype") or TensorProto.UINT8)
    if to not in (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16):
        return None
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(to))
    q = emit("Round", [emit("Div", [emit("Cast", [x], to=TensorProto.FLOAT),
                                    emit("Cast", [full(scale)], to=TensorProto.FLOAT)])])
    if zp:
        q = emit("Add", [q, emit("Cast", [full(zp)], to=TensorProto.FLOAT)])
    lo, hi = (emit("Constant", [], value=helper.make_tensor("v", TensorProto.FLOAT, [], [float(v)]))
              for v in (info.min, info.max))
    clipped = emit("Clip", [q, lo, hi])
    out.append(helper.make_node("Cast", [clipped], [node.output[0]], name=f"{prefix}/out", to=to))
    return out
