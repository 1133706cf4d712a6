"""A model's symbolic dims, and the shape buckets to build it for.

In: a model (path, ``zoo:`` spec or ``ModelProto``) whose inputs may have symbolic
dims (``dim_param``), the buckets asked for, and shapes fixed by the user.  Out:
:func:`symbolic_dims` (each input's dims: an int, a ``dim_param`` name, or None for an
unnamed symbolic dim), :func:`bucket_spec` (a :class:`~hetpart.contracts.buckets.BucketSpec`:
the dims to bucket, their sizes, and which output axes follow them, from ONNX's
symbolic shape inference) and :func:`bucket_shapes` (one bucket's fixed input shapes,
what :func:`hetpart.load` takes).

Padding is exact along the batch dim of an inference model (its rows are
independent), so that dim gets buckets by default; any other symbolic dim
(a sequence) is padded only when the caller names it, since zeros at padded
positions change the results unless the model masks them.
"""

from __future__ import annotations

import onnx

from ..contracts.buckets import BATCH, DEFAULT_BATCH_SIZES, BucketSpec
from ..errors import ShapeError, option
from .onnx_source import ModelSource, read_source
from .onnx_types import skeleton


def symbolic_dims(model) -> dict[str, list]:
    """Input name -> dims of every real (non-initializer) input of ``model``: an int for
    a fixed dim, the ``dim_param`` for a named symbolic dim, None for an unnamed one."""
    proto = _proto(model)
    inits = {i.name for i in proto.graph.initializer}
    return {i.name: _dims(i) for i in proto.graph.input if i.name not in inits}


def has_symbolic_dims(model, shapes: dict | None = None) -> bool:
    """Whether an input not fixed by ``shapes`` has a symbolic dim."""
    return any(any(not isinstance(d, int) for d in dims)
               for name, dims in symbolic_dims(model).items() if name not in (shapes or {}))


def bucket_spec(model, buckets: dict[str, list[int]] | None = None,
                shapes: dict[str, list[int]] | None = None) -> BucketSpec:
    """The buckets to build ``model`` for.

    ``buckets`` maps a ``dim_param`` (or ``"batch"``: the symbolic dim at axis 0 of the
    inputs, whatever its name) to its sizes; the batch dim defaults to
    :data:`~hetpart.contracts.buckets.DEFAULT_BATCH_SIZES`.  Inputs in ``shapes`` are
    fixed, not bucketed.  ShapeError when a symbolic dim is unnamed or has no buckets,
    a bucket names no dim of the model, or an output's axis may follow a bucketed dim
    but ONNX's inference cannot say whether it does (slicing it back is then a guess).
    """
    proto = _proto(model)
    origin = _origin(model)
    dims = {n: d for n, d in symbolic_dims(proto).items() if n not in (shapes or {})}
    _refuse_unnamed(dims, origin)
    params = list(dict.fromkeys(d for ds in dims.values() for d in ds if isinstance(d, str)))
    if not params:
        raise ShapeError(f"{origin}: no input has a symbolic dim, so there is nothing to bucket; "
                         f"drop {option('buckets')}")
    batch = _batch_dim(dims)
    sizes = _sizes(dict(buckets or {}), params, batch, origin)
    input_axes = {n: {a: d for a, d in enumerate(ds) if isinstance(d, str)} for n, ds in dims.items()}
    input_axes = {n: ax for n, ax in input_axes.items() if ax}
    spec = BucketSpec(sizes=sizes, input_axes=input_axes,
                      output_axes=_output_axes(proto, shapes, set(sizes), origin), batch=batch)
    spec.check()
    return spec


def bucket_shapes(model, spec: BucketSpec, bucket: dict[str, int],
                  shapes: dict[str, list[int]] | None = None) -> dict[str, list[int]]:
    """The fixed input shapes of one bucket (``shapes`` kept as given)."""
    out = {n: list(s) for n, s in (shapes or {}).items()}
    for name, dims in symbolic_dims(model).items():
        if name in spec.input_axes and name not in out:
            out[name] = [bucket[d] if isinstance(d, str) else d for d in dims]
    return out


# --- helpers ---------------------------------------------------------------------------
def _proto(model) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else read_source(model).model


def _origin(model) -> str:
    """Where ``model`` came from, for messages: a ModelSource's file or zoo spec."""
    if isinstance(model, ModelSource):
        return model.origin
    return "<in-memory model>" if isinstance(model, onnx.ModelProto) else str(model)


def _dims(value: onnx.ValueInfoProto) -> list:
    out = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or None)
    return out


def _refuse_unnamed(dims: dict[str, list], origin: str) -> None:
    for name, ds in dims.items():
        if None in ds:
            hint = ",".join(str(d) if isinstance(d, int) else "?" for d in ds)
            raise ShapeError(f"{origin}: input '{name}' has an unnamed symbolic dim ({hint}), which cannot be "
                             f"bucketed; fix it with {option('shape')} (e.g. {name}={hint}) or give it a "
                             "dim_param in the model")


def _batch_dim(dims: dict[str, list]) -> str:
    """The dim_param at axis 0 of the inputs when they all agree on one, else ``""``."""
    firsts = {ds[0] for ds in dims.values() if ds and isinstance(ds[0], str)}
    return firsts.pop() if len(firsts) == 1 else ""


def _sizes(buckets: dict, params: list[str], batch: str, origin: str) -> dict[str, tuple[int, ...]]:
    if BATCH in buckets and BATCH not in params:  # "batch" names the batch dim whatever its dim_param
        if not batch:
            raise ShapeError(f"{origin}: {option('buckets')} names 'batch', but the inputs have no common "
                             f"symbolic dim at axis 0; name a dim: {', '.join(params)}")
        buckets[batch] = buckets.pop(BATCH)
    unknown = sorted(set(buckets) - set(params))
    if unknown:
        raise ShapeError(f"{origin}: {option('buckets')} names {', '.join(unknown)}, not a symbolic dim of the "
                         f"model's inputs; they are: {', '.join(params)}")
    if batch and batch not in buckets:
        buckets[batch] = list(DEFAULT_BATCH_SIZES)
    missing = [p for p in params if p not in buckets]
    if missing:
        raise ShapeError(f"{origin}: symbolic dim(s) {', '.join(missing)} have no buckets; only the batch dim "
                         f"gets default ones. Give them with {option('buckets')} (e.g. {missing[0]}=64,128; "
                         "padding a non-batch dim changes the results unless the model masks padded "
                         f"positions) or fix the inputs with {option('shape')}")
    out = {}
    for p in params:
        sizes = sorted(set(int(s) for s in buckets[p]))
        if not sizes or sizes[0] <= 0:
            raise ShapeError(f"{origin}: buckets of '{p}' must be positive integers, got {buckets[p]}")
        out[p] = tuple(sizes)
    return out


def _output_axes(proto: onnx.ModelProto, shapes, bucketed: set[str], origin: str) -> dict[str, dict[int, str]]:
    """Output -> {axis: bucketed dim} from ONNX's symbolic shape inference of the model
    (inputs in ``shapes`` fixed); ShapeError for an output ONNX cannot shape."""
    fixed = proto
    if shapes:
        fixed = onnx.ModelProto()
        fixed.CopyFrom(proto)
        for i in fixed.graph.input:
            if i.name in shapes:
                for d, n in zip(i.type.tensor_type.shape.dim, shapes[i.name]):
                    d.Clear()
                    d.dim_value = int(n)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(fixed))
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError) as exc:
        raise ShapeError(f"{origin}: ONNX shape inference fails on the symbolic model ({exc}); cannot tell "
                         f"which outputs follow the bucketed dims: fix the inputs with {option('shape')}") from None
    out = {}
    for o in inferred.graph.output:
        dims = _dims(o) if o.type.tensor_type.HasField("shape") else None
        undecided = dims is None or any(d is None or (isinstance(d, str) and d not in bucketed) for d in dims)
        if undecided:
            shown = "unknown rank" if dims is None else [d if d is not None else "?" for d in dims]
            raise ShapeError(f"{origin}: ONNX cannot infer which axes of output '{o.name}' follow the bucketed "
                             f"dim(s) {', '.join(sorted(bucketed))} (its inferred shape: {shown}), so a padded "
                             "run's result could not be sliced back; declare the output's shape in the model "
                             f"(e.g. dim_param 'batch' at axis 0) or fix the inputs with {option('shape')}")
        axes = {a: d for a, d in enumerate(dims) if isinstance(d, str)}
        if axes:
            out[o.name] = axes
    return out
