"""The ONNX model as the import passes read it: its skeleton (large weights as typed
inputs, so the checker and shape inference need not copy them) and its values' types.

One module the passes share, so none imports another pass for them.
"""

from __future__ import annotations

import onnx
from onnx import helper


def skeleton(model: onnx.ModelProto, min_bytes: int = 4096) -> onnx.ModelProto:
    """``model`` with every large initializer turned into a typed graph input.

    The checker and shape inference serialise the whole model (seconds for BERT's
    440 MB of weights, impossible past protobuf's 2 GB), yet only need the weights'
    types and shapes.  Small initializers stay, since shape inference reads values
    such as a Reshape's target shape.
    """
    g = model.graph
    small = [t for t in g.initializer if _tensor_bytes(t) < min_bytes]
    large = [t for t in g.initializer if _tensor_bytes(t) >= min_bytes]
    # Before IR 4 an initializer is only a default of a graph input: ONNX ignores one
    # that is not also an input (e.g. a value shape folding just added), so list it.
    listed = small if model.ir_version < 4 else []
    inputs = list(g.input) + [
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in large + listed if t.name not in {i.name for i in g.input}
    ]
    graph = onnx.helper.make_graph(list(g.node), g.name, inputs, list(g.output), small,
                                   value_info=list(g.value_info))
    out = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def _tensor_bytes(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n * max(1, onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize) if t.data_type else 0


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types of the graph's values (inputs, initializers, inferred intermediates)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton_with_functions(model))
    except Exception:  # noqa: BLE001 - the caller validated the model; fall back to what it declares
        inferred = model
    g = inferred.graph
    types = {v.name: v.type for v in [*g.input, *g.value_info, *g.output]}
    for t in g.initializer:
        types.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    return types


def skeleton_with_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large weights as typed inputs (inference need not copy them)."""
    out = skeleton(model)
    out.functions.extend(model.functions)  # the local functions being inlined
    return out
