"""Refuse, with a typed error, the model forms TVM 0.27 would import wrongly or crash on.

In: a checked ``ModelProto`` with static input shapes, its shape arithmetic folded
(``folded``) and the same model before folding (``unfolded``, to name the op behind
a folded value).  Out: nothing, or :class:`~hetpart.errors.UnsupportedOpsError`
listing every refused node (``ops``: op -> node names) with the reason.

Each rule below was found by the onnx backend node tests
(``tests/conformance/``): without it the model imported and then gave a wrong result
or failed deep inside TVM.  A rule is a refusal, not a fix; where ONNX defines an op
as a function, :mod:`.expand_functions` expands it instead.
"""

from __future__ import annotations

import onnx

from ..errors import UnsupportedOpsError

SUPPORTED_DTYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BOOL,
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
}
"""Element types hetpart runs (TVM lacks bfloat16, float8, 4-bit, complex and strings)."""

CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4),
    "Expand": (1,),
    "NonMaxSuppression": (2, 3, 4),
}
"""Op -> inputs that decide the output's shape (or, for NonMaxSuppression, that TVM
reads only as constants, taking 0 boxes otherwise): they must be constants once the
input shapes are fixed."""

_INTEGER = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
            onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def check(folded: onnx.ModelProto, unfolded: onnx.ModelProto, origin: str) -> None:
    """Raise UnsupportedOpsError naming every node of a form hetpart refuses."""
    g = folded.graph
    types, shapes = _value_infos(folded)
    constants = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    problems: dict[str, list[str]] = {}
    reasons: list[str] = []

    def refuse(op: str, node: str, why: str) -> None:
        problems.setdefault(op, []).append(node)
        reasons.append(f"{op} '{node}': {why}")

    _check_values(g, unfolded, types, constants, refuse)
    for i, node in enumerate(g.node):
        name = node.name or f"#{i}"
        why = _node_problem(node, types, constants, shapes)
        if why:
            refuse(node.op_type, name, why)
    if problems:
        raise UnsupportedOpsError(f"{origin}: hetpart cannot run {len(reasons)} node(s): " + "; ".join(reasons[:10])
                                  + (" ..." if len(reasons) > 10 else ""), ops=problems)


def _check_values(g, unfolded, types, constants, refuse) -> None:
    """Graph inputs/outputs: tensors of supported types, outputs computed from inputs."""
    producers = {o: n for n in unfolded.graph.node for o in n.output}
    for v in [*g.input, *g.output]:
        kind = v.type.WhichOneof("value")
        if kind != "tensor_type":
            refuse(kind or "untyped", v.name, f"'{v.name}' is a {kind or 'value of no type'}; hetpart runs tensors only")
    for name, dtype in types.items():
        if dtype not in SUPPORTED_DTYPES and dtype != onnx.TensorProto.UNDEFINED:
            refuse(onnx.TensorProto.DataType.Name(dtype), name,
                   f"'{name}' is {onnx.TensorProto.DataType.Name(dtype).lower()}, an element type TVM does not support")
    live = _input_dependent(g)
    for out in g.output:
        if out.name not in live:
            node = producers.get(out.name)
            op = node.op_type if node is not None else "Constant"
            refuse(op, (node.name or out.name) if node is not None else out.name,
                   f"output '{out.name}' is a constant once the input shapes are fixed; hetpart compiles only "
                   "outputs computed from the inputs (take it out of the model's outputs)")


def _input_dependent(g: onnx.GraphProto) -> set[str]:
    """Values whose data depend on a graph input (Shape/Size read only the static shape)."""
    inits = {t.name for t in g.initializer}
    live = {i.name for i in g.input if i.name not in inits}
    for node in g.node:
        if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx"):
            continue
        if any(i in live for i in node.input) or _reads_subgraph_inputs(node, live):
            live.update(o for o in node.output if o)
    return live


def _reads_subgraph_inputs(node: onnx.NodeProto, live: set[str]) -> bool:
    """Whether an If/Loop body refers to a live outer value (captured, not an input)."""
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            if any(i in live for n in sub.node for i in n.input):
                return True
    return False


def _node_problem(node: onnx.NodeProto, types, constants, shapes=None) -> str | None:
    """Why hetpart refuses this node, or None."""
    if node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    for i in CONSTANT_INPUTS.get(op, ()):
        if i < len(node.input) and node.input[i] and node.input[i] not in constants:
            return (f"input {i} ('{node.input[i]}') is not a constant; the output's shape would depend on input "
                    "values, which hetpart's static-shape compile cannot express")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if op in ("If", "Loop", "Scan"):
        return "control flow; hetpart's kernel graph has no branches or loops"
    if op == "Pow" and types.get(node.input[0]) in _INTEGER:
        return "an integer base; TVM's power takes floating point only"
    if op == "Dropout" and (len(node.output) > 1 and node.output[1] or len(node.input) > 2 and node.input[2]):
        return ("training mode (training_mode not a constant false, ratio not a constant 0); hetpart runs "
                "inference (Dropout as identity, its mask all true) only")
    if op == "IsInf" and (attrs.get("detect_positive", 1) != 1 or attrs.get("detect_negative", 1) != 1):
        return "detect_positive/detect_negative; TVM's importer ignores them"
    if op == "EyeLike" and "dtype" not in attrs:
        return "no dtype; TVM's importer then returns a constant that hetpart's kernel graph drops"
    if op == "BatchNormalization" and attrs.get("training_mode", 0):
        return "training_mode=1; hetpart runs inference (running statistics) only"
    if op == "ConvTranspose" and "output_shape" in attrs and not _output_shape_is_implied(node, attrs, shapes or {}):
        return ("output_shape other than the pads and output_padding give (or not known); TVM's importer ignores "
                "output_shape")
    if op == "RoiAlign" and attrs.get("mode", b"avg") not in (b"avg", "avg"):
        return "mode max; TVM's importer computes avg"
    if op == "SpaceToDepth" and attrs.get("mode", b"DCR") not in (b"DCR", "DCR"):
        return "mode CRD; TVM's importer ignores the mode"
    return None


def _output_shape_is_implied(node: onnx.NodeProto, attrs: dict, shapes: dict) -> bool:
    """Whether ConvTranspose's ``output_shape`` is the shape TVM computes from the
    node's pads and output_padding, with those pads where ONNX would put them
    (then ignoring ``output_shape``, as TVM's importer does, gives ONNX's result)."""
    x, w = (shapes.get(n) for n in node.input[:2])
    if not x or not w or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    n = len(x) - 2
    want = list(attrs["output_shape"])[-n:]
    kernel = list(attrs.get("kernel_shape", w[2:]))
    strides, dilations = list(attrs.get("strides", [1] * n)), list(attrs.get("dilations", [1] * n))
    out_pad, pads = list(attrs.get("output_padding", [0] * n)), list(attrs.get("pads", [0] * 2 * n))
    for i in range(n):
        full = strides[i] * (x[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
        total = full - want[i]
        if (pads[i], pads[n + i]) != (total - total // 2, total // 2):  # ONNX's split for NOTSET
            return False
    return True


def _value_infos(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Element type of every tensor value ONNX shape inference can type, and the
    static shape of those it can shape."""
    from .onnx_types import skeleton  # weights as typed inputs: inference need not copy them

    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model))
    except Exception:  # noqa: BLE001 - read_model validated the model; use what it declares
        inferred = model
    g = inferred.graph
    types, shapes = {}, {}
    for v in [*g.input, *g.value_info, *g.output]:
        if v.type.WhichOneof("value") == "tensor_type":
            types[v.name] = v.type.tensor_type.elem_type
            dims = v.type.tensor_type.shape.dim
            if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                shapes[v.name] = [d.dim_value for d in dims]
    for t in g.initializer:
        types[t.name] = t.data_type
        shapes[t.name] = list(t.dims)
    for n in g.node:
        if n.op_type == "Cast":
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            if to is not None:
                types.update({o: to for o in n.output})
    return types, shapes
