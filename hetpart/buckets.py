"""Build a model with symbolic dims once per shape bucket: import, plan, compile each.

In: a model whose inputs have symbolic dims (``dim_param``: ``batch``, ``seq``) and
the buckets to build (``{"batch": [1, 8, 32]}``; default: the batch dim at
:data:`~hetpart.contracts.buckets.DEFAULT_BATCH_SIZES`, powers of two up to 32).
Out: a :class:`~hetpart.compiler.bucketed.BucketedModel`, one ordinary compiled
artifact per bucket, each from its own plan (the best placement depends on the
shape: at batch 1 a small layer may belong on the CPU, at batch 32 on the GPU)::

    model = hetpart.compile_buckets("model.onnx", buckets={"batch": [1, 8, 32]}, simulate=True)
    model.save("out/")
    with hetpart.Session(hetpart.load_compiled("out/")) as s:   # a BucketedSession
        s.run({"input": x})          # any batch up to 32: padded to the smallest bucket

The stages are used as they are (``hetpart.load``, ``hetpart.partition``,
``hetpart.compile``); one :class:`~hetpart.compiler.build.LibraryCache` spans the
buckets, so a partition whose code is the same in two buckets is built once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from .compiler.bucketed import Bucket, BucketedModel, bucket_directory
from .compiler.artifact import TensorSpec
from .contracts.buckets import BATCH, BucketSpec, bucket_label
from .errors import ShapeError
from .kernels.options import DEFAULT, KernelOptions


@dataclass
class PlannedBucket:
    """One bucket planned: its sizes, its op graph (imported at those sizes) and its plan."""

    spec: BucketSpec
    sizes: dict[str, int]
    graph: object
    plan: object

    @property
    def label(self) -> str:
        return bucket_label(self.sizes)


def plan_buckets(model, buckets: dict[str, list[int]] | None = None, *,
                 shapes: dict[str, list[int]] | None = None, objective: str = "latency", profile=None,
                 gpu_memory: int | None = None, pins=(), progress: bool = False,
                 precision=None) -> Iterator[PlannedBucket]:
    """Import and plan ``model`` once per bucket, smallest first, one at a time (a
    bucket's graph can be dropped before the next is imported).

    ``buckets``: dim name (a ``dim_param``, or ``"batch"``) -> sizes; ``shapes`` fixes
    inputs outright (not bucketed).  ``objective``, ``profile``, ``gpu_memory``,
    ``pins`` and ``precision`` go to :func:`hetpart.partition`.  Raises ShapeError, before any import,
    when the buckets cannot be decided (see :func:`~hetpart.importer.symbolic.bucket_spec`).
    """
    from . import importer, partitioner
    from .importer.symbolic import bucket_shapes, bucket_spec

    source = importer.read_source(model)  # read once: a zoo model is built once, a file parsed once
    spec = bucket_spec(source, buckets, shapes)
    for sizes in spec.grid():
        graph = importer.load(source, bucket_shapes(source.model, spec, sizes, shapes))
        _check_outputs(graph, spec, sizes)
        plan = partitioner.partition(graph, objective=objective, profile=profile, gpu_memory=gpu_memory,
                                     pins=pins, progress=progress, precision=precision)
        yield PlannedBucket(spec, sizes, graph, plan)


def compile_buckets(model, buckets: dict[str, list[int]] | None = None, *,
                    shapes: dict[str, list[int]] | None = None, objective: str = "latency", profile=None,
                    gpu_memory: int | None = None, pins=(), simulate: bool = False, cuda_arch: str | None = None,
                    options: KernelOptions = DEFAULT, progress: bool = False, reuse_libraries: bool = True,
                    on_bucket: Callable[[PlannedBucket], None] | None = None, precision=None) -> BucketedModel:
    """Import, plan and compile ``model`` once per bucket; see the module docstring
    and :func:`plan_buckets` for the arguments it shares.

    ``simulate``, ``cuda_arch`` and ``options`` go to :func:`hetpart.compile`.
    ``reuse_libraries=False`` builds every partition even where an earlier bucket built
    the same code (for measuring).  ``on_bucket(planned)`` is called after each bucket
    is planned, before it is compiled.  ``precision``: each bucket is planned and
    compiled in it (:func:`plan_buckets`; the compile takes the plan's).
    """
    from . import compiler
    from .compiler.build import LibraryCache

    start = time.perf_counter()
    cache = LibraryCache() if reuse_libraries else None
    built, spec, name = [], None, ""
    for planned in plan_buckets(model, buckets, shapes=shapes, objective=objective, profile=profile,
                                gpu_memory=gpu_memory, pins=pins, progress=progress, precision=precision):
        if on_bucket is not None:
            on_bucket(planned)
        compiled = compiler.compile(planned.plan, planned.graph, simulate=simulate, cuda_arch=cuda_arch,
                                    options=options, progress=progress, library_cache=cache)
        built.append(Bucket(planned.sizes, bucket_directory(planned.sizes), compiled))
        spec, name = planned.spec, planned.graph.name
    first = built[0].compiled
    stats = {"libraries_built": cache.misses, "libraries_reused": cache.hits} if cache is not None else {}
    return BucketedModel(spec=spec, buckets=built, inputs=_symbolic(first.inputs, spec.input_axes),
                         outputs=_symbolic_outputs(first, spec), output_names=first.model_output_names,
                         model=name, compile_seconds=time.perf_counter() - start, build_stats=stats)


def nms_batch_columns(onnx_model) -> dict[str, int]:
    """``{output name: 0}`` for each output of ``onnx_model`` (a ModelProto or a path)
    that a ``NonMaxSuppression`` node writes: its rows are (batch, class, box), the
    batch row in column 0 -- what :func:`bucket_batches` takes as ``batch_columns``."""
    import onnx

    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(str(onnx_model),
                                                                                load_external_data=False)
    by_nms = {out for node in proto.graph.node if node.op_type == "NonMaxSuppression" for out in node.output}
    return {o.name: 0 for o in proto.graph.output if o.name in by_nms}


def bucket_batches(builds: Mapping[int, object], model: str = "",
                   batch_columns: Mapping[str, int] | None = None) -> BucketedModel:
    """Models compiled at fixed batches (one model exported at batch 1, 2, 4, ...) as one
    :class:`BucketedModel` over the batch dim, so a :class:`hetpart.Session` of it runs
    any batch up to the largest on the smallest build that holds it.

    In: ``{batch: CompiledModel}``.  Every build must have the same inputs, each with
    the build's batch as its leading dim and the rest alike; an output follows the
    batch (sliced back after padding) when its leading dim is the build's batch in
    every build, else it must be the same shape in all, or be named in
    ``batch_columns`` (output name -> the column holding each row's batch row, e.g.
    :func:`nms_batch_columns`: padding's rows are dropped by it, and a server splits a
    batch's rows back to its requests by it).  Out: the BucketedModel (not saved;
    ``.save(dir)`` writes it).  ShapeError naming the input or output that breaks this
    (such builds are not one model at different batches).
    """
    if not builds:
        raise ShapeError("bucket_batches needs at least one build")
    sizes = sorted(int(b) for b in builds)
    first = builds[sizes[0]]
    by_batch = {b: builds[b] for b in sizes}
    for b, c in by_batch.items():
        _check_inputs(c.inputs, first.inputs, b, sizes[0])
    columns = dict(batch_columns or {})
    unknown = sorted(set(columns) - set(first.model_output_names))
    if unknown:
        raise ShapeError(f"batch_columns name outputs the model does not have: {', '.join(unknown)}; "
                         f"its outputs: {', '.join(first.model_output_names)}")
    output_axes = {}
    for i, name in enumerate(first.model_output_names):
        if name in columns:
            continue
        follows = all(len(c.outputs[i].shape) and c.outputs[i].shape[0] == b for b, c in by_batch.items())
        if follows:
            output_axes[name] = {0: BATCH}
        elif len({tuple(c.outputs[i].shape) for c in by_batch.values()}) > 1:
            raise ShapeError(f"output '{name}' changes shape with the batch but not along its leading dim "
                             f"({', '.join(f'b{b}: {list(c.outputs[i].shape)}' for b, c in by_batch.items())}); "
                             "padded rows could not be sliced back: serve it at one batch")
    spec = BucketSpec(sizes={BATCH: tuple(sizes)}, input_axes={t.name: {0: BATCH} for t in first.inputs},
                      output_axes=output_axes, batch=BATCH, batch_columns=columns)
    spec.check()
    built = [Bucket({BATCH: b}, bucket_directory({BATCH: b}), by_batch[b]) for b in sizes]
    return BucketedModel(spec=spec, buckets=built, inputs=_symbolic(first.inputs, spec.input_axes),
                         outputs=_symbolic_outputs(first, spec), output_names=first.model_output_names,
                         model=model or getattr(first.plan, "model", "") or "",
                         compile_seconds=sum(c.compile_seconds for c in by_batch.values()))


def _check_inputs(specs, reference, batch: int, ref_batch: int) -> None:
    """ShapeError unless the inputs ``specs`` are ``reference`` with ``batch`` for ``ref_batch`` as every leading dim."""
    if [t.name for t in specs] != [t.name for t in reference]:
        raise ShapeError(f"the build at batch {batch} has inputs {[t.name for t in specs]}, the one at batch "
                         f"{ref_batch} {[t.name for t in reference]}: not one model at two batches")
    for t, r in zip(specs, reference):
        if not len(t.shape) or t.shape[0] != batch or tuple(t.shape[1:]) != tuple(r.shape[1:]):
            raise ShapeError(f"input '{t.name}' is {list(t.shape)} in the build at batch {batch} (batch {ref_batch}: "
                             f"{list(r.shape)}); each build's inputs must lead with its batch, the rest alike")


def _check_outputs(graph, spec: BucketSpec, sizes: dict[str, int]) -> None:
    """Every output axis ONNX says follows a bucketed dim has that bucket's size in the
    built graph (else slicing it back would cut the wrong rows)."""
    shapes = {name: graph.tensors[t].shape for name, t in zip(graph.model_output_names, graph.outputs)}
    for name, axes in spec.output_axes.items():
        for axis, dim in axes.items():
            got = shapes[name][axis] if name in shapes and axis < len(shapes[name]) else None
            if got != sizes[dim]:
                raise ShapeError(f"output '{name}' axis {axis} follows dim '{dim}' in ONNX's inference, but the "
                                 f"model built for {bucket_label(sizes)} makes it {got}; the padded rows "
                                 "cannot be sliced back; fix the inputs' shapes instead")


def _symbolic(specs: list[TensorSpec], axes: dict[str, dict[int, str]]) -> list[TensorSpec]:
    """``specs`` with each bucketed dim shown by its name."""
    out = []
    for t in specs:
        ax = axes.get(t.name, {})
        out.append(TensorSpec(t.name, tuple(ax.get(i, d) for i, d in enumerate(t.shape)), t.dtype))
    return out


def _symbolic_outputs(compiled, spec: BucketSpec) -> list[TensorSpec]:
    by_tensor = dict(zip((t.name for t in compiled.outputs), compiled.model_output_names))
    return [TensorSpec(t.name, tuple(spec.output_axes.get(by_tensor[t.name], {}).get(i, d)
                                     for i, d in enumerate(t.shape)), t.dtype) for t in compiled.outputs]


__all__ = ["PlannedBucket", "bucket_batches", "compile_buckets", "nms_batch_columns", "plan_buckets"]
