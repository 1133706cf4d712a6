"""Small synthetic compiled models, for testing and benchmarking the runtime alone.

The runtime must be exercised before (and independently of) the importer, the
partitioner and the compiler, and the GPU benchmark needs cut edges of exact sizes
and stages of chosen duration.  :func:`build_partition` compiles one partition from a
TE computation with both entry points the compiler produces (``main`` and the
destination-passing ``main_dps``); :func:`chain` strings partitions into a model.

Chain stage k computes ``y = x * (0.5 + 0.1k) + k + 1e-3 * sum_{r<work} roll(x, -r)``
on a 2-D tensor, so ``work`` scales a stage's time and :func:`chain_reference`
computes the expected output with numpy.  A string dim (``chain(..., shape=("n", 32))``)
is symbolic: every tensor of the chain then has a shape known only at run time, as
data-dependent outputs do, and the partitions get no ``main_dps``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..compiler.artifact import CompiledModel, PartitionArtifact, TensorSpec
from ..errors import HetpartError
from ..partitioner.plan import Partition, Plan, Span
from ..targets import resolve


def plan_of(model: str, partitions: list[PartitionArtifact], predicted_s: float | None = None) -> Plan:
    """The :class:`Plan` of compiled ``partitions`` run one after another (kernel
    ``node_k`` in partition k), each predicted to take ``predicted_s`` (None: no
    prediction, an empty timeline)."""
    parts = [Partition(p.name, p.device, [f"node_{k}"], predicted_s or 0.0, compute_s=predicted_s or 0.0,
                       inputs=[t.name for t in p.inputs], outputs=[t.name for t in p.outputs])
             for k, p in enumerate(partitions)]
    timeline = [] if predicted_s is None else [
        Span(p.device, p.name, k * predicted_s, (k + 1) * predicted_s) for k, p in enumerate(parts)]
    return Plan(model, "latency", {f"node_{k}": p.device for k, p in enumerate(parts)}, parts, cuts=[],
                timeline=timeline, predicted={}, profile_origin="synthetic")


def build_partition(name: str, device: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                    compute: Callable[[list], list], *, simulate: bool = True, cuda_arch: str | None = None,
                    dps: bool = True, parallel: bool = False) -> PartitionArtifact:
    """Compile ``compute`` (TE tensors of ``inputs`` -> TE tensors of ``outputs``) as one partition.

    ``device`` is ``"cpu"`` or ``"cuda"``; with ``simulate`` a CUDA partition is built for
    the CPU.  ``dps=False`` leaves out ``main_dps`` (the runtime then copies outputs), as
    does any string (symbolic) dim in ``inputs``/``outputs``: one tensor var per name.
    ``parallel`` runs the outer loop of every block of a CPU build on TVM's thread pool
    (as scheduled real kernels do); by default the kernel is serial (one thread).
    """
    import tvm
    from tvm import te

    spec = resolve(device, simulate=simulate, cuda_arch=cuda_arch)
    dims: dict[str, object] = {}

    def shape(t: TensorSpec) -> tuple:
        return tuple(dims.setdefault(d, te.var(d, "int64")) if isinstance(d, str) else int(d)
                     for d in t.shape)

    dynamic = any(isinstance(d, str) for t in [*inputs, *outputs] for d in t.shape)
    dps = dps and not dynamic
    te_in = [te.placeholder(shape(t), t.dtype, t.name) for t in inputs]
    te_out = compute(te_in)
    prim = te.create_prim_func([*te_in, *te_out]).with_attr("global_symbol", f"{name}_kernel")
    if parallel and not spec.is_gpu:
        prim = _parallel_outer_loops(prim)
    mod = _relax_module(prim, f"{name}_kernel", [shape(t) for t in inputs], [shape(t) for t in outputs],
                        inputs, outputs, dps)
    if spec.is_gpu:
        from tvm.s_tir import dlight as dl

        with spec.tvm_target:
            mod = dl.ApplyDefaultSchedule(dl.gpu.Fallback())(mod)
    executable = tvm.compile(mod, spec.tvm_target)
    return PartitionArtifact(
        name=name, device=device, device_type=spec.device_type, target=spec.tvm_target.export(),
        library=f"{name}.so", inputs=list(inputs), outputs=list(outputs), kernels=[f"{name}_kernel"],
        simulated=spec.simulated, dps=dps, module=executable)


def _parallel_outer_loops(prim):
    """``prim`` with the outermost loop of each top-level block parallel."""
    from tvm import s_tir

    sch = s_tir.Schedule(prim)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        sch.parallel(sch.get_loops(block)[0])
    return sch.mod["main"]


def _relax_module(prim, kernel: str, in_shapes: list, out_shapes: list, inputs: list[TensorSpec],
                  outputs: list[TensorSpec], dps: bool):
    from tvm import relax

    bb = relax.BlockBuilder()
    gv = bb.add_func(prim, kernel)
    out_ty = [relax.TensorType(shape, t.dtype) for shape, t in zip(out_shapes, outputs)]

    def function(fname: str, with_outputs: bool):
        params = [relax.Var(t.name, relax.TensorType(shape, t.dtype)) for shape, t in zip(in_shapes, inputs)]
        if with_outputs:
            params += [relax.Var(f"out_{t.name}", ty) for t, ty in zip(outputs, out_ty)]
        with bb.function(fname, params):
            with bb.dataflow():
                if with_outputs:
                    idx = [len(inputs) + i for i in range(len(outputs))]
                    call = relax.op.call_tir_inplace(gv, params, idx, out_ty if len(out_ty) > 1 else out_ty[0])
                else:
                    call = relax.call_tir(gv, params, out_ty if len(out_ty) > 1 else out_ty[0])
                result = bb.emit_output(bb.emit(call))
            bb.emit_func_output(result)

    function("main", False)
    if dps:
        function("main_dps", True)
    return bb.get()


def _stage_compute(k: int, work: int):
    from tvm import te

    def compute(ins):
        (x,) = ins
        n = int(x.shape[1])
        if work > 0:
            r = te.reduce_axis((0, work), name="r")
            acc = te.compute(x.shape, lambda i, j: te.sum(x[i, (j + r) % n] * np.float32(1e-3), axis=r), name="acc")
            y = te.compute(x.shape, lambda i, j: x[i, j] * np.float32(0.5 + 0.1 * k) + np.float32(k) + acc[i, j], name="y")
        else:
            y = te.compute(x.shape, lambda i, j: x[i, j] * np.float32(0.5 + 0.1 * k) + np.float32(k), name="y")
        return [y]

    return compute


def chain(devices: list[str], shape=(64, 64), *, work: int | Sequence[int] = 0, simulate: bool = True,
          cuda_arch: str | None = None, dps: bool = True, model: str = "synthetic-chain",
          predicted_s: float | None = None, parallel: bool = False) -> CompiledModel:
    """A model of ``len(devices)`` partitions in a chain, partition k on ``devices[k]``;
    ``work`` is every stage's work, or one per stage (e.g. a heavy CPU stage and a light
    simulated GPU one, as on a real GPU); ``parallel`` makes the CPU stages' kernels
    use TVM's thread pool (see :func:`build_partition`)."""
    works = [work] * len(devices) if isinstance(work, int) else [int(w) for w in work]
    if len(works) != len(devices):
        raise HetpartError(f"chain: {len(works)} work values for {len(devices)} stages")
    specs = [TensorSpec("x", tuple(shape), "float32")]
    specs += [TensorSpec(f"t{k}", tuple(shape), "float32") for k in range(len(devices))]
    parts = []
    for k, device in enumerate(devices):
        name = f"p{k}_{device}"
        parts.append(build_partition(name, device, [specs[k]], [specs[k + 1]], _stage_compute(k, works[k]),
                                     simulate=simulate, cuda_arch=cuda_arch, dps=dps, parallel=parallel))
    return CompiledModel(plan=plan_of(model, parts, predicted_s), partitions=parts, inputs=[specs[0]], outputs=[specs[-1]], model=model,
                         simulated=simulate)


def chain_reference(x: np.ndarray, stages: int, work: int | Sequence[int] = 0) -> np.ndarray:
    """What :func:`chain` computes, in numpy (float64 accumulation)."""
    works = [work] * stages if isinstance(work, int) else list(work)
    y = x.astype(np.float64)
    for k in range(stages):
        work = works[k]
        acc = sum(np.roll(y, -r, axis=1) for r in range(work)) * 1e-3 if work else 0.0
        y = y * (0.5 + 0.1 * k) + k + acc
    return y.astype(np.float32)
