"""Read and validate an ONNX model before TVM sees it.

In: a path, a ``zoo:NAME[:small]`` spec, or an ``onnx.ModelProto``; optional fixed
input shapes.  Out: a checked ``ModelProto`` whose inputs all have static shapes,
with the shape arithmetic those shapes decide folded into initializers
(:mod:`.shape_folding`; a caller's ``ModelProto`` is never edited, but copied when
something folds) and grouped-query attention read from the un-repeated K/V
(:mod:`.grouped_query_attention`).

Every way a model can be wrong is reported here as one :class:`HetpartError` that
names the file and the problem: missing, not ONNX, truncated, failing the checker or
shape inference, symbolic dims nobody fixed, or operators TVM cannot import (all of
them at once, with the nodes that use them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from ..errors import ModelLoadError, ShapeError, SymbolicDimsError, UnsupportedOpsError, option
from . import preflight
from .blocked_quantization import blocked_quantization
from .expand_functions import all_graphs, expand_functions
from .grouped_query_attention import group_query_attention
from .inference_dropout import inference_dropout
from .integer_ops import CONVERTERS as INTEGER_CONVERTERS
from .onnx_types import skeleton
from .qdq import qdq_contractions
from .qdq_conv import qdq_convs
from .qlinear import lower_qlinear
from .shape_folding import fold_static_shapes

_HANDLED_BY_FRONTEND = {"If"}  # converted by from_onnx itself, not through its op table  # protobuf cannot serialise more than this in one message


@dataclass(frozen=True)
class ModelSource:
    """A validated model and where it came from (for messages and plan metadata)."""

    model: onnx.ModelProto
    name: str
    origin: str
    outputs: tuple = ()  # per graph output: (name, elem type, dims (int, or None: unknown) or None)


def read_model(model, shapes: dict[str, list[int]] | None = None) -> ModelSource:
    """Resolve ``model`` (or take a :func:`read_source` result as it is, never edited) to
    a checked ``ModelProto`` with static input shapes and its static shape arithmetic folded."""
    source = model if isinstance(model, ModelSource) else _resolve(model)
    _check_structure(source.model, source.origin)
    _check(source)
    fixed = _fix_shapes(source.model, shapes or {}, source.origin)
    fixed = inference_dropout(fixed)  # Dropout that keeps everything, its mask output too
    fixed = lower_qlinear(fixed)  # QLinearMatMul/Conv: integer contraction + requantisation
    fixed = qdq_contractions(fixed)  # MatMul/Gemm of DequantizeLinear pairs: MatMulInteger
    fixed = qdq_convs(fixed)  # Conv of DequantizeLinear pairs: (im2col +) MatMulInteger
    fixed = blocked_quantization(fixed)  # (De)QuantizeLinear with block_size: element-wise ops
    fixed = expand_functions(fixed)  # ops TVM lacks that ONNX defines as functions
    _check_supported(fixed, source.origin)
    inferred = _infer_shapes(fixed, source.origin)
    # Fold in place only a model this function made (read, built or reshaped here).
    made_here = not isinstance(model, (onnx.ModelProto, ModelSource))
    result = fold_static_shapes(fixed, inplace=made_here or fixed is not source.model)
    if result.folded:  # checked alike whether folded in place (a file) or in a copy (a ModelProto)
        inferred = _infer_shapes(result.model, source.origin)
    preflight.check(result.model, fixed, source.origin)  # forms TVM would import wrongly
    # Attention MatMuls over repeated K/V heads computed per K/V head (the caller's model copied)
    callers = source.model if isinstance(model, (onnx.ModelProto, ModelSource)) else None
    grouped = group_query_attention(result.model, inplace=result.model is not callers)
    return ModelSource(grouped, source.name, source.origin, output_types(inferred))


def read_source(model) -> ModelSource:
    """``model`` (a path, ``zoo:`` spec or ModelProto) read as it is: no check, no shape
    fixed; a caller that imports it several times (once per shape) reads it once."""
    return model if isinstance(model, ModelSource) else _resolve(model)


def _resolve(model) -> ModelSource:
    if isinstance(model, onnx.ModelProto):
        return ModelSource(model, model.graph.name or "model", "<in-memory model>")
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"expected a path, 'zoo:NAME' or onnx.ModelProto, got {type(model).__name__}")
    spec = str(model)
    from ..models import build, parse_zoo_spec

    parsed = parse_zoo_spec(spec)
    if parsed is not None:
        name, small, cfg = parsed
        return ModelSource(build(name, small=small, **cfg), name + ("_small" if small else ""), spec)
    path = _model_file(spec)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{spec}: not a readable ONNX model (truncated or not ONNX?): {exc}") from None
    _load_external_data(proto, path, spec)
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{spec}: not a readable ONNX model (the file parsed to an empty graph)")
    return ModelSource(proto, path.stem, spec)


def check_spec(model) -> None:
    """The checks of reading ``model`` that cost nothing, made before any work (the
    ``partition bench`` command's MODELs): a ``zoo:`` spec names a model and keys of
    the zoo, a path names a file.  UnknownModelError or ModelLoadError otherwise."""
    from ..models import parse_zoo_spec

    if isinstance(model, (str, os.PathLike)) and parse_zoo_spec(str(model)) is None:
        _model_file(str(model))


def _model_file(spec: str) -> Path:
    """``spec`` as the path of a file; ModelLoadError when nothing or a directory is there."""
    path = Path(spec)
    if not path.exists():
        raise ModelLoadError(f"{spec}: no such file (built-in models are named 'zoo:NAME'; see `partition zoo`)")
    if path.is_dir():
        raise ModelLoadError(f"{spec}: is a directory, expected an .onnx file")
    return path


def _load_external_data(proto: onnx.ModelProto, path: Path, spec: str) -> None:
    """Read the weights ``proto`` keeps in external data files (next to ``path``) into it;
    ModelLoadError naming the files when one is missing, short or unreadable."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    files = sorted({e.value for g in all_graphs(proto.graph) for t in g.initializer if uses_external_data(t)
                    for e in t.external_data if e.key == "location"})
    if not files:
        return
    try:
        load_external_data_for_model(proto, str(path.parent))
    except (onnx.checker.ValidationError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{spec}: the weights it keeps in external data ({', '.join(files)}) cannot be "
                             f"read: {exc}; keep those files next to the model, whole, as it was exported") from None


def _check(source: ModelSource) -> None:
    """The ONNX checker, on the model's skeleton (weights' shapes, not their bytes)."""
    try:
        onnx.checker.check_model(skeleton(source.model))
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{source.origin}: the ONNX checker rejects the model: {first}") from None


def _infer_shapes(model: onnx.ModelProto, origin: str) -> onnx.ModelProto:
    """Strict ONNX shape inference: an inconsistent model fails here, not deep in TVM.
    Returns the inferred skeleton (its outputs carry ONNX's types and shapes)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{origin}: ONNX shape inference fails: {first}") from None
    _check_no_negative_dims(inferred, origin)
    return inferred


def _check_no_negative_dims(inferred: onnx.ModelProto, origin: str) -> None:
    """ONNX infers a negative dim, without complaint, for e.g. a pool window larger
    than its (padded) input; TVM then fails deep in lowering.  Name the node."""
    g = inferred.graph
    producer = {o: n for n in g.node for o in n.output}
    for v in (*g.value_info, *g.output):
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if any(d < 0 for d in dims):
            node = producer.get(v.name)
            where = f"node '{node.name or v.name}' ({node.op_type})" if node is not None else f"value '{v.name}'"
            raise ShapeError(f"{origin}: {where} computes '{v.name}' of shape {dims} (a negative dim): its "
                             "attributes do not fit its input (e.g. a pool or convolution window larger than "
                             "the padded input); fix them in the model")


def output_types(model: onnx.ModelProto) -> tuple:
    """``(name, elem type, dims)`` of each graph output as ONNX declares or infers it;
    a dim ONNX does not know is None, dims are None where even the rank is unknown."""
    out = []
    for o in model.graph.output:
        tt = o.type.tensor_type
        dims = None
        if tt.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        out.append((o.name, tt.elem_type, dims))
    return tuple(out)


def _check_structure(model: onnx.ModelProto, origin: str) -> None:
    """What the ONNX checker lets through but no importer can use: a graph without
    outputs or listing one twice, an opset newer than the installed onnx knows,
    tensors of an unknown or undefined element type."""
    g = model.graph
    if not g.output:
        raise ModelLoadError(f"{origin}: the graph has no outputs; list the values it computes in graph.output")
    seen: set[str] = set()
    for o in g.output:
        if o.name in seen:
            raise ModelLoadError(f"{origin}: graph output '{o.name}' is listed twice; list each output once")
        seen.add(o.name)
    newest = onnx.defs.onnx_opset_version()
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version > newest:
            raise ModelLoadError(f"{origin}: the model needs ONNX opset {op.version}, the installed onnx "
                                 f"{onnx.__version__} knows up to {newest}; export with opset <= {newest} "
                                 "or upgrade onnx")
    known = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    for t in g.initializer:
        if t.data_type not in known:
            raise ModelLoadError(f"{origin}: initializer '{t.name}' has unknown element type {t.data_type}; "
                                 "re-export the model")
    for kind, values in (("input", g.input), ("output", g.output)):
        for v in values:
            what = v.type.WhichOneof("value")
            if what not in ("tensor_type", None if kind == "output" else "tensor_type"):
                raise ModelLoadError(f"{origin}: graph {kind} '{v.name}' is not a tensor "
                                     f"({what or 'no type'}); hetpart takes tensors only")
            elem = v.type.tensor_type.elem_type
            if elem not in known and (kind == "input" or elem != onnx.TensorProto.UNDEFINED):
                raise ModelLoadError(f"{origin}: graph {kind} '{v.name}' has an undefined or unknown element "
                                     f"type ({v.type.tensor_type.elem_type}); give it one (e.g. FLOAT)")


def _symbolic_dims(model: onnx.ModelProto) -> dict[str, list]:
    out = {}
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inp.type.tensor_type.shape.dim]
        out[inp.name] = dims
    return out


def _fix_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]], origin: str) -> onnx.ModelProto:
    """Return a copy of ``model`` whose inputs have the static shapes asked for."""
    dims = _symbolic_dims(model)
    unknown = sorted(set(shapes) - set(dims))
    if unknown:
        raise ShapeError(f"{origin}: {option('shape')} names unknown input(s) {unknown}; the inputs are {sorted(dims)}")
    # a dim of 0 is a real (empty) dim, static; only unnamed/named/negative dims are symbolic
    missing = {n: d for n, d in dims.items() if n not in shapes and any(not isinstance(x, int) or x < 0 for x in d)}
    if missing:
        hint = "; ".join(f"{n}={','.join(str(x) if isinstance(x, int) and x > 0 else '?' for x in d)}"
                         for n, d in missing.items())
        raise SymbolicDimsError(f"{origin}: input(s) with symbolic dims need a fixed shape: {missing}; fix them "
                                f"with {option('shape')} (e.g. {hint}), or build shape buckets (hetpart.compile_buckets; the CLI does without "
                                "--shape)")
    if not shapes:
        return model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        if inp.name not in shapes:
            continue
        want = list(shapes[inp.name])
        have = dims[inp.name]
        if len(want) != len(have):
            raise ShapeError(f"{origin}: input '{inp.name}' has rank {len(have)}, {option('shape')} gives {len(want)} dims")
        for d, (w, h) in zip(inp.type.tensor_type.shape.dim, zip(want, have)):
            if isinstance(h, int) and h > 0 and h != w:
                raise ShapeError(f"{origin}: input '{inp.name}' is {have}; {option('shape')} {want} changes a fixed dim")
            d.Clear()
            d.dim_value = int(w)
    return fixed


def input_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of the real (non-initializer) inputs of a fixed model."""
    return {n: [int(x) for x in d] for n, d in _symbolic_dims(model).items()}


def _check_supported(model: onnx.ModelProto, origin: str) -> None:
    """Raise :class:`UnsupportedOpsError` listing every op TVM's importer lacks."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | _HANDLED_BY_FRONTEND | set(INTEGER_CONVERTERS)
    bad: dict[str, list[str]] = {}
    for i, node in enumerate(_all_nodes(model.graph)):
        if node.domain not in ("", "ai.onnx") or node.op_type not in known:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            bad.setdefault(key, []).append(node.name or f"#{i}")
    if bad:
        lines = "; ".join(f"{op} (nodes: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})" for op, names in sorted(bad.items()))
        raise UnsupportedOpsError(
            f"{origin}: {len(bad)} operator type(s) cannot be imported by TVM: {lines}. "
            "Replace them in the exporter, or split them out of the model.",
            ops=bad,
        )


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)
