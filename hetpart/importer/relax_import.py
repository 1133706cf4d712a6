"""ONNX -> TVM Relax, and the public ``load`` that runs the whole import stage.

In: a model (path, ``zoo:`` spec or ``ModelProto``) and optional fixed shapes.
Out: an :class:`OpGraph` whose ``module`` is the fused Relax module and whose
``relax_module`` is TVM's unfused import.
"""

from __future__ import annotations

import warnings

import tvm

from ..errors import ModelLoadError, ShapeError, UnsupportedOpsError, option
from .fusion import fuse_with_ops
from .graph_builder import build_op_graph
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
            return from_onnx(source.model, shape_dict=shapes, sanitize_input_names=False)
    except tvm.error.OpNotImplemented as exc:
        raise UnsupportedOpsError(f"{source.origin}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the frontend fails with many exception types
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{source.origin}: TVM could not import the model: {msg}") from exc


def _check_dims(shapes) -> None:
    """Every fixed dim is a positive integer (0 or -1 would plan negative FLOPs)."""
    for name, dims in (shapes or {}).items():
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            given = ",".join(str(d) for d in dims)
            raise ShapeError(f"{option('shape')} for input '{name}' is [{given}]; every dim must be a "
                             "positive integer")


def load(model, shapes: dict[str, list[int]] | None = None) -> OpGraph:
    """Import ``model`` into an :class:`OpGraph` of fused kernels.

    ``model`` is a path, ``"zoo:NAME[:small]"`` or an ``onnx.ModelProto``; ``shapes``
    fixes symbolic input dims (``{"x": [1, 3, 224, 224]}``).  Raises a
    :class:`~hetpart.errors.HetpartError` subclass for any problem with the model.
    """
    _check_dims(shapes)
    source = read_model(model, shapes)
    relax_mod = to_relax(source)
    fused, fused_ops = fuse_with_ops(relax_mod)
    return build_op_graph(source.name, fused, fused_ops, relax_module=relax_mod)
