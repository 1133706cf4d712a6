"""ONNX -> TVM Relax, and the public ``load`` that runs the whole import stage.

In: a model (path, ``zoo:`` spec or ``ModelProto``) and optional fixed shapes.
Out: an :class:`OpGraph` whose ``module`` is the fused Relax module and whose
``relax_module`` is TVM's unfused import.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Mapping

import tvm
from tvm import relax, tirx

from ..errors import ModelLoadError, ShapeError, UnsupportedOpsError, option
from . import conv_layout
from .fusion import fuse_with_ops
from .op_graph_builder import build_op_graph
from .index_guard import guard_indices
from .integer_ops import converters as integer_converters
from .non_max_suppression import CONVERTERS as NMS_CONVERTERS
from .top_k import CONVERTERS as TOPK_CONVERTERS
from .onnx_source import ModelSource, input_shapes, read_model
from .op_graph import OpGraph


def to_relax(source: ModelSource) -> tvm.IRModule:
    """Import a validated model with TVM's Relax ONNX frontend (weights as constants)."""
    from tvm.relax.frontend.onnx import from_onnx

    shapes = input_shapes(source.model)
    try:
        with warnings.catch_warnings():
            # The frontend re-runs the checker and warns on harmless omissions (e.g.
            # outputs without a declared shape); _check already validated the model.
            warnings.simplefilter("ignore", UserWarning)
            # ConvInteger, which TVM lacks; MatMulInteger on 8-bit operands; NonMaxSuppression's
            # absent inputs as ONNX defines them; TopK with sorted=0
            with integer_converters({**NMS_CONVERTERS, **TOPK_CONVERTERS}):
                mod = from_onnx(source.model, shape_dict=shapes, sanitize_input_names=False)
    except tvm.error.OpNotImplemented as exc:
        raise UnsupportedOpsError(f"{source.origin}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the frontend fails with many exception types
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{source.origin}: TVM could not import {_failing_node(exc)}: {msg}. "
                             "Check that node's inputs and attributes against the ONNX operator "
                             "spec, or re-export the model") from None
    check_outputs(mod, source)
    return mod


def _failing_node(exc: BaseException) -> str:
    """``node 'n3' (Reshape)``: the ONNX node TVM's frontend was converting when it
    raised (read off the traceback: the frontend converts nodes one by one in
    ``_construct_nodes``), or ``the model`` when it failed elsewhere."""
    tb, node = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_construct_nodes":
            node = tb.tb_frame.f_locals.get("node", node)
        tb = tb.tb_next
    if node is None or not hasattr(node, "op_type"):
        return "the model"
    return f"node '{node.name or node.output[0] if node.output else node.name}' ({node.op_type})"


def check_outputs(mod: tvm.IRModule, source: ModelSource) -> None:
    """Raise :class:`ShapeError` when TVM's import computes an output of another
    rank, dim or element type than ONNX declares or infers for it (e.g. a Gemm bias
    of shape [16, 1] that TVM broadcasts where ONNX forbids it): the result would be
    silently wrong."""
    ret = mod["main"].ret_ty
    got = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    if len(got) != len(source.outputs):
        raise ShapeError(f"{source.origin}: TVM's import returns {len(got)} value(s), the graph lists "
                         f"{len(source.outputs)} outputs; the model is not importable as it stands")
    for ty, (name, elem, dims) in zip(got, source.outputs):
        if not isinstance(ty, relax.TensorType):
            continue
        shape = [int(d) if isinstance(d, tirx.IntImm) else None for d in ty.shape.values] \
            if ty.shape is not None else None
        onnx_dtype = _dtype_name(elem)
        if onnx_dtype and str(ty.dtype) != onnx_dtype:
            raise ShapeError(f"{source.origin}: output '{name}' is {onnx_dtype} in ONNX but TVM computes "
                             f"{ty.dtype}; the model is inconsistent (check the nodes producing it)")
        if dims is None or shape is None:
            continue
        if len(shape) != len(dims) or any(a is not None and b is not None and a != b for a, b in zip(shape, dims)):
            onnx_shape = [d if d is not None else "?" for d in dims]
            raise ShapeError(f"{source.origin}: output '{name}' has shape {onnx_shape} in ONNX but TVM computes "
                             f"{[d if d is not None else '?' for d in shape]}; an operator's inputs break its "
                             "ONNX broadcasting rules (e.g. a Gemm bias not broadcastable to [M, N]) -- fix the "
                             "model (onnx.reference rejects it too)")


def _dtype_name(elem_type: int) -> str:
    """numpy-style dtype name of an ONNX element type (``""``: undefined or unknown)."""
    import onnx

    try:
        return "bool" if elem_type == onnx.TensorProto.BOOL else str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError):
        return ""


def _check_dims(shapes) -> dict[str, list[int]] | None:
    """``shapes`` with every dim a Python int: each input's dims a sequence (a list, a
    tuple, a numpy array or shape) of positive integers, numpy integers included;
    ShapeError naming the input otherwise (0 or -1 would plan negative FLOPs)."""
    if shapes is None:
        return None
    if not isinstance(shapes, Mapping):
        raise ShapeError(f"{option('shape')} maps each input's name to its dims, e.g. {{'x': [1, 3, 224, 224]}}; "
                         f"got {type(shapes).__name__}")
    out = {}
    for name, dims in shapes.items():
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
            raise ShapeError(f"{option('shape')} for input '{name}' is {dims!r}; give its dims as a list of "
                             f"positive integers, e.g. {{'{name}': [1, 3, 224, 224]}}")
        dims = list(dims)
        if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d <= 0 for d in dims):
            given = ",".join(str(d) for d in dims)
            raise ShapeError(f"{option('shape')} for input '{name}' is [{given}]; every dim must be a "
                             "positive integer")
        out[name] = [int(d) for d in dims]
    return out


def load(model, shapes: dict[str, list[int]] | None = None, *, conv_block: int | None = None) -> OpGraph:
    """Import ``model`` into an :class:`OpGraph` of fused kernels.

    ``model`` is a path, ``"zoo:NAME[:small]"`` or an ``onnx.ModelProto``; ``shapes``
    fixes symbolic input dims (``{"x": [1, 3, 224, 224]}``).  ``conv_block`` (8, 16, 32;
    default None: NCHW): convolutions in ``NCHW{conv_block}c``, for an all-CPU build only
    (:mod:`.conv_layout`), recorded as ``graph.conv_block``.  Raises a
    :class:`~hetpart.errors.HetpartError` subclass for any problem with the model.
    """
    shapes = _check_dims(shapes)
    conv_block = conv_layout.check_block(conv_block)
    source = read_model(model, shapes)
    relax_mod, limits = guard_indices(to_relax(source))
    try:
        fused, fused_ops = fuse_with_ops(relax_mod, conv_block)
    except (ValueError, RuntimeError) as exc:  # TVM's lowering refusing what its import took
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{source.origin}: TVM cannot lower the imported model: {msg}; check the "
                             "operators' attributes against their inputs' shapes") from None
    graph = build_op_graph(source.name, fused, fused_ops, relax_module=relax_mod,
                           output_names=[o.name for o in source.model.graph.output])
    graph.index_limits = limits
    graph.conv_block = conv_block
    return graph
