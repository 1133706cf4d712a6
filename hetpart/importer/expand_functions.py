"""Expand ONNX ops that TVM cannot import but ONNX defines as functions of other ops.

In: a checked ``ModelProto`` with static input shapes.  Out: the same model where
every such node is replaced by the body ONNX itself defines for it (the op schema's
function for the model's opset, or its context-dependent function built from the
node's attributes and input types), inlined by onnx's own inliner; the model is
returned unchanged (the same object) when nothing needs expanding.

Which nodes: an op in the default domain that TVM 0.27's importer lacks, plus the
few it has whose converter is wrong or incomplete (:data:`EXPAND_ALWAYS`, each with
the reason).  Nothing is hand-written here: the bodies are onnx's definitions
(``onnx.defs.get_schema(op, opset)``), attribute defaults come from the schema, and
inlining (renaming, attribute references, version conversion) is
``onnx.inliner.inline_local_functions``.  An expanded body may itself use ops that
need expanding, so the pass repeats until nothing changes.
"""

from __future__ import annotations

import onnx
import onnx.inliner
from onnx import FunctionProto, helper

from .onnx_types import skeleton_with_functions, value_types

EXPAND_ALWAYS: dict[str, str] = {
    "Attention": "TVM's converter is com.microsoft's Attention (a num_heads attribute), not ONNX's opset-23 op",
    "RMSNormalization": "TVM's converter fails inside TIR (a scale of rank 1 read with no index)",
}
"""Ops TVM imports, but wrongly or partly, that are expanded anyway: op -> why."""

_DOMAIN = "hetpart.expanded"  # the local functions' domain while they are being inlined
_MAX_ROUNDS = 8  # a function body nests a few levels at most


def expand_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with function-defined ops TVM lacks inlined (see the module doc)."""
    out = model
    for _ in range(_MAX_ROUNDS):
        expanded = _expand_once(out)
        if expanded is None:
            break
        out = expanded
    if any(_scalar_constant(n) for g in all_graphs(out.graph) for n in g.node):
        if out is model:  # never edit the caller's model
            out = onnx.ModelProto()
            out.CopyFrom(model)
        _constants_as_tensors(out.graph)
    return out


_SCALAR_CONSTANTS = {
    "value_float": (onnx.TensorProto.FLOAT, lambda a: [a.f], ()),
    "value_int": (onnx.TensorProto.INT64, lambda a: [a.i], ()),
    "value_floats": (onnx.TensorProto.FLOAT, lambda a: list(a.floats), None),
    "value_ints": (onnx.TensorProto.INT64, lambda a: list(a.ints), None),
}
"""Constant's attribute forms TVM's importer does not read -> (type, values, dims;
None: 1-d).  Function bodies use them (``Constant <value_float = @alpha>``)."""


def all_graphs(graph: onnx.GraphProto):
    """``graph`` and every subgraph (If/Loop bodies) in it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attr.g)
            for sub in attr.graphs:
                yield from all_graphs(sub)


def _scalar_constant(node: onnx.NodeProto) -> bool:
    return (node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1
            and node.attribute[0].name in _SCALAR_CONSTANTS)


def _constants_as_tensors(graph: onnx.GraphProto) -> None:
    """Rewrite ``Constant(value_float=x)`` and kin as ``Constant(value=tensor)``: the
    same value in the form TVM reads."""
    for node in (n for g in all_graphs(graph) for n in g.node):
        if not _scalar_constant(node):
            continue
        attr = node.attribute[0]
        dtype, values, dims = _SCALAR_CONSTANTS[attr.name]
        vals = values(attr)
        tensor = helper.make_tensor("value", dtype, list(dims) if dims is not None else [len(vals)], vals)
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", tensor))


def _tvm_ops() -> set[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return set(_get_convert_map())


EXPAND_WHEN = {
    "LayerNormalization": (lambda node: len([o for o in node.output if o]) > 1,
                           "TVM's converter returns Y only, not the optional Mean and InvStdDev"),
}
"""Ops TVM imports except in some forms: op -> (the form's predicate, why)."""


def _wanted(node: onnx.NodeProto, known: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    when = EXPAND_WHEN.get(node.op_type)
    return (node.op_type not in known or node.op_type in EXPAND_ALWAYS
            or (when is not None and when[0](node)))


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _expand_once(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """One round: every wanted top-level node that has a function -> a local function
    call, then inline.  None when no node was expanded."""
    known = _tvm_ops()
    opset = _opset(model)
    targets = [i for i, n in enumerate(model.graph.node) if _wanted(n, known) and _has_function(n, opset)]
    if not targets:
        return None
    types = value_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    functions = []
    for i in targets:
        node = out.graph.node[i]
        body = _function_for(node, opset, types)
        if body is None:
            continue
        name = f"{node.op_type}_{i}"
        _fill_default_attributes(node, opset)
        body.name, body.domain = name, _DOMAIN
        node.op_type, node.domain = name, _DOMAIN
        functions.append(body)
    if not functions:
        return None
    out.functions.extend(functions)
    out.opset_import.append(helper.make_opsetid(_DOMAIN, 1))
    inlined = _inline(out, opset, functions)
    _drop_domain(inlined)
    return inlined


def _inline(model: onnx.ModelProto, opset: int, functions) -> onnx.ModelProto:
    """onnx's inliner.  A body written for another opset is version-converted, which
    needs the types of the values around the call (shape inference gives them); where
    the converter still fails, the body is read at the model's opset (the test suite
    checks the result against onnx's reference)."""
    convert = any(o.version != opset for f in functions for o in f.opset_import if o.domain in ("", "ai.onnx"))
    if convert:
        try:
            inferred = onnx.shape_inference.infer_shapes(skeleton_with_functions(model))
            typed = onnx.ModelProto()
            typed.CopyFrom(model)
            typed.graph.value_info.extend(inferred.graph.value_info)
            return onnx.inliner.inline_local_functions(typed, convert_version=True)
        except (RuntimeError, onnx.shape_inference.InferenceError):
            for f in model.functions:
                for o in f.opset_import:
                    if o.domain in ("", "ai.onnx"):
                        o.version = opset
    return onnx.inliner.inline_local_functions(model, convert_version=False)


def _has_function(node: onnx.NodeProto, opset: int) -> bool:
    try:
        schema = onnx.defs.get_schema(node.op_type, opset)
    except onnx.defs.SchemaError:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def _function_for(node: onnx.NodeProto, opset: int, types: dict) -> FunctionProto | None:
    """The body ONNX defines for ``node`` at ``opset`` (None when it cannot be built,
    e.g. an input type is unknown)."""
    schema = onnx.defs.get_schema(node.op_type, opset)
    body = FunctionProto()
    plain = [v for v in schema.function_opset_versions if v <= opset]
    if plain:
        body.ParseFromString(schema.get_function_with_opset_version(max(plain)))
        return body
    ctx = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if not ctx:
        return None
    input_types = [types.get(name, onnx.TypeProto()) if name else onnx.TypeProto() for name in node.input]
    if any(name and name not in types for name in node.input):
        return None
    try:
        data = schema.get_context_dependent_function_with_opset_version(
            max(ctx), node.SerializeToString(), [t.SerializeToString() for t in input_types])
    except Exception:  # noqa: BLE001 - the builder refuses some forms; leave the node as it is
        return None
    if not data:
        return None
    body.ParseFromString(data)
    return body if body.node else None


def _fill_default_attributes(node: onnx.NodeProto, opset: int) -> None:
    """Write the schema's default for every attribute the node leaves out (a function
    body may refer to it)."""
    schema = onnx.defs.get_schema(node.op_type, opset)
    present = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in present and attr.default_value and attr.default_value.name:
            node.attribute.append(attr.default_value)


def _drop_domain(model: onnx.ModelProto) -> None:
    """Remove the temporary domain's opset import (no node uses it after inlining)."""
    keep = [o for o in model.opset_import if o.domain != _DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(keep)
