"""Dropout in inference, mask output included, as the ops ONNX defines it by.

In: a checked ``ModelProto``.  Out: the same model where every Dropout that does
not drop (no ``training_mode`` input, or a constant false one; or a constant ratio
of 0; before opset 7, ``is_test=1``) is ``Identity(data)`` and, when its ``mask``
output is named, an all-true mask computed from ``data``; the model is returned
unchanged (the same object) when there is none.

ONNX: "If training_mode is false or ratio is 0, the output equals the input and the
mask is all true" (``onnx.reference`` returns ``ones(shape, bool)``).  TVM's
converter returns no mask, and a mask of constant ``true`` would be an output that
is constant once the shapes are fixed, which hetpart does not compile; so the mask
is ``IsNaN(x) or not IsNaN(x)``: true everywhere, computed from the input, one
fused element-wise kernel.  Dropout in training mode stays (the preflight refuses it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def inference_dropout(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with non-dropping Dropout nodes rewritten (see the module doc)."""
    if not any(n.op_type == "Dropout" for n in model.graph.node):
        return model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    consts = _constants(model.graph)
    targets = [i for i, n in enumerate(model.graph.node)
               if n.op_type == "Dropout" and n.domain in ("", "ai.onnx") and _keeps_everything(n, opset, consts)]
    if not targets:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    # Before opset 10 the mask has the input's element type (1.0 where kept), after it bool.
    types = _value_types(model) if opset < 10 else {}
    nodes = []
    for i, node in enumerate(out.graph.node):
        nodes.extend(_rewrite(node, types.get(node.input[0])) if i in targets else [node])
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the Dropouts' ratio and training_mode inputs that are initializers or
    Constant nodes (value= tensors); one that does not read (malformed: the checker
    names it later) is left out."""
    wanted = {i for n in graph.node if n.op_type == "Dropout" for i in n.input[1:3] if i}
    inputs = {i.name for i in graph.input}  # an input-overridable default is no constant
    protos = {t.name: t for t in graph.initializer if t.name in wanted and t.name not in inputs}
    protos.update({n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant"
                   and n.output[0] in wanted and len(n.attribute) == 1 and n.attribute[0].name == "value"})
    values = {}
    for name, proto in protos.items():
        try:
            values[name] = numpy_helper.to_array(proto)
        except (ValueError, TypeError):
            continue
    return values


def _keeps_everything(node: onnx.NodeProto, opset: int, consts: dict) -> bool:
    """Whether this Dropout passes its input through (inference, or a ratio of 0)."""
    if opset < 7:
        return any(a.name == "is_test" and a.i == 1 for a in node.attribute)
    if opset < 12:
        return True  # no training mode before opset 12: Dropout is an identity at inference
    training = node.input[2] if len(node.input) > 2 else ""
    if not training:
        return True
    if training in consts and not bool(np.asarray(consts[training]).reshape(-1)[0]):
        return True
    ratio = node.input[1] if len(node.input) > 1 else ""
    return bool(ratio) and ratio in consts and float(np.asarray(consts[ratio]).reshape(-1)[0]) == 0.0


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the model's tensor values (shape inference's)."""
    from .onnx_types import value_types

    return {k: t.tensor_type.elem_type for k, t in value_types(model).items() if t.HasField("tensor_type")}


def _rewrite(node: onnx.NodeProto, mask_type: int | None) -> list[onnx.NodeProto]:
    """Identity for the output; the all-true mask, cast to ``mask_type`` when given
    (opset < 10: the mask has the input's type)."""
    x, name = node.input[0], node.name or node.output[0]
    out = [helper.make_node("Identity", [x], [node.output[0]], name=f"{name}/identity")]
    mask = node.output[1] if len(node.output) > 1 else ""
    if mask:
        nan, not_nan = f"{name}/isnan", f"{name}/not_isnan"
        true = f"{name}/mask_bool" if mask_type else mask
        out += [helper.make_node("IsNaN", [x], [nan], name=nan),
                helper.make_node("Not", [nan], [not_nan], name=not_nan),
                helper.make_node("Or", [nan, not_nan], [true], name=f"{name}/mask")]
        if mask_type:
            out.append(helper.make_node("Cast", [true], [mask], to=mask_type, name=f"{name}/mask_cast"))
    return out
