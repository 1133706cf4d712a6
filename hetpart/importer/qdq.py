"""QDQ contractions as integer ones: ``MatMul(DequantizeLinear(x), DequantizeLinear(w))``
as ``MatMulInteger(x, w) * (x_scale * w_scale)``.

In: a checked ``ModelProto``.  Out: the same model where every MatMul (and Gemm with
``transA=0, alpha=1, beta=1``) both of whose inputs are DequantizeLinear of 8-bit
tensors with constant scales -- per-tensor, or per output column for the weight --
and constant (or no) zero points is ``MatMulInteger`` on the quantised tensors, a
``Cast`` to float32 and a ``Mul`` by the product of the scales (a Gemm's bias added
after; ``transB`` a Transpose of the quantised weight); the DequantizeLinear nodes
nothing else reads are dropped.  Unchanged (the same object) when no node qualifies.

This is the QDQ format's meaning (ONNX Runtime's quantizer writes it so that a
runtime executes the contraction in int8, as ORT itself does), exactly: the integer
product of the zero-point-shifted values times the scales equals the float product
of the dequantised values, up to float rounding (the integer sum has none).  The
contraction then runs as :mod:`.integer_ops`' MatMulInteger: 8-bit operands, int32
accumulation (AVX-512 VNNI where the CPU has it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_EIGHT_BIT = (TensorProto.INT8, TensorProto.UINT8)


def qdq_contractions(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its QDQ MatMul/Gemm nodes as integer contractions (module doc)."""
    return rewrite_planned(model, _types, _plan, lambda node, i, plan: (_rewrite(node, i, *plan), []))


def rewrite_planned(model: onnx.ModelProto, facts, plan, rewrite) -> onnx.ModelProto:
    """The QDQ rewrites' one driver.  In: ``model``; ``facts(model)`` (what ``plan`` reads
    about values: types, shapes); ``plan(node, producer, consts, facts)`` -> a plan or None;
    ``rewrite(node, index, plan)`` -> (nodes, initializers) replacing ``node``.  Out: a copy of
    ``model`` with every planned node rewritten (plans made on the original graph) and the
    DequantizeLinear nodes nothing reads any more dropped; ``model`` itself when it has no
    DequantizeLinear or nothing is planned."""
    g = model.graph
    if not any(n.op_type == "DequantizeLinear" for n in g.node):
        return model
    producer = {o: n for n in g.node for o in n.output}
    consts, known = _Constants(g), facts(model)
    plans = {i: p for i, node in enumerate(g.node) if (p := plan(node, producer, consts, known)) is not None}
    if not plans:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, inits = [], []
    for i, node in enumerate(out.graph.node):
        new_nodes, new_inits = rewrite(node, i, plans[i]) if i in plans else ([node], [])
        nodes.extend(new_nodes)
        inits.extend(new_inits)
    out.graph.initializer.extend(inits)
    _drop_unread(out.graph, nodes)
    return out


class _Constants:
    """The values of a graph's initializers and Constant nodes, read on demand (only
    the scales and zero points asked for); one that does not read (a malformed
    tensor: the checker names it later) counts as no constant."""

    def __init__(self, graph: onnx.GraphProto):
        self._protos = {t.name: t for t in graph.initializer}
        self._protos.update({n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant"
                             and len(n.attribute) == 1 and n.attribute[0].name == "value"})
        self._values: dict[str, np.ndarray | None] = {}

    def get(self, name: str):
        if name not in self._values:
            try:
                self._values[name] = numpy_helper.to_array(self._protos[name]) if name in self._protos else None
            except (ValueError, TypeError):
                self._values[name] = None
        return self._values[name]

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __getitem__(self, name: str) -> np.ndarray:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value


def _types(model: onnx.ModelProto) -> dict[str, int]:
    from .onnx_types import value_types as _value_types

    return {k: t.tensor_type.elem_type for k, t in _value_types(model).items() if t.HasField("tensor_type")}


def dequantize_linear(name: str, producer, consts):
    """(input, scale name, zero point name or "", attributes) of the DequantizeLinear producing
    ``name`` (``producer``: output name -> node) whose scale is a float32 constant and zero point,
    if any, a constant (``consts``: :class:`_Constants`), not blocked (no ``block_size``); else None.
    The QDQ rewrites' common test (:func:`_dq`, :func:`.qdq_conv._dq` add their own)."""
    node = producer.get(name)
    if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return None
    x, scale, zp = (list(node.input) + ["", ""])[:3]
    if scale not in consts or consts[scale].dtype != np.float32 or (zp and zp not in consts):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("block_size", 0):
        return None
    return x, scale, zp, attrs


def _dq(name: str, producer, consts, types, weight: bool):
    """(quantised, scale, zero point or "") of a DequantizeLinear feeding ``name`` that
    qualifies, else None: an 8-bit input, a float32 constant scale (per-tensor, or for
    a 2-D weight per column: ``axis`` 1), a constant zero point."""
    found = dequantize_linear(name, producer, consts)
    if found is None or types.get(found[0]) not in _EIGHT_BIT:
        return None
    x, scale, zp, attrs = found
    if consts[scale].size != 1:
        w = consts.get(x)
        if not weight or w is None or w.ndim != 2 or attrs.get("axis", 1) not in (1, -1):
            return None
    return x, scale, zp


def _plan(node, producer, consts, types):
    """(a, b, bias) DequantizeLinear triples of a qualifying MatMul/Gemm, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm"):
        return None
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None
    a = _dq(node.input[0], producer, consts, types, weight=False)
    b = _dq(node.input[1], producer, consts, types, weight=True)
    if a is None or b is None:
        return None
    if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) and b[0] not in consts:
        return None
    return a, b


def _rewrite(node, i: int, a, b) -> list[onnx.NodeProto]:
    prefix = f"{node.name or node.output[0]}/int{i}"
    out = []

    def emit(op, inputs, name, **attrs):
        out.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    weight = b[0]
    if node.op_type == "Gemm" and any(x.name == "transB" and x.i for x in node.attribute):
        weight = emit("Transpose", [weight], f"{prefix}/weight_t", perm=[1, 0])
    inputs = [a[0], weight, a[2], b[2]]
    while inputs and not inputs[-1]:
        inputs.pop()
    acc = emit("MatMulInteger", inputs, f"{prefix}/acc")
    real = emit("Cast", [acc], f"{prefix}/real", to=TensorProto.FLOAT)
    scale = emit("Mul", [a[1], b[1]], f"{prefix}/scale")
    bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 else ""
    if bias:
        product = emit("Mul", [real, scale], f"{prefix}/product")
        emit("Add", [product, bias], node.output[0])
    else:
        emit("Mul", [real, scale], node.output[0])
    return out


def _drop_unread(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Set ``graph``'s nodes to ``nodes`` less DequantizeLinear nodes whose output
    nothing reads any more (the graph's outputs count as readers)."""
    read = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in nodes if not (n.op_type == "DequantizeLinear" and n.output[0] not in read)]
    del graph.node[:]
    graph.node.extend(keep)
