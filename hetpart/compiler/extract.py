"""Cut the fused Relax module into one standalone IRModule per partition.

In: an :class:`~hetpart.importer.OpGraph` (its ``module`` is the fused Relax module:
``main`` is one ``call_tir`` binding per kernel) and a plan (``plan.partitions``, each
with a ``name``, a ``device`` and its ``kernels`` in topological order).

Out: per partition a :class:`PartitionProgram`: its boundary tensors and an IRModule
holding only the PrimFuncs it calls and two Relax functions

* ``main(*inputs) -> output | (outputs...)``;
* ``main_dps(*inputs, *outputs) -> output | (outputs...)``: the same computation,
  but the kernel that produces each output writes it in place into the buffer the
  caller passed (``call_tir_inplace``), and returns those buffers.  Built only when
  every output is produced by a ``call_tir`` that allows it (``dps`` says so).

Invariants: a partition's ``inputs`` are model inputs or outputs of earlier
partitions, named by op-graph tensor name (parameters carry those names, so the
runtime wires partitions by name); its ``outputs`` are the tensors it produces that a
later partition reads or the model returns.  Weights are constants inside the call
arguments, so each partition carries the ones it uses (a weight used on both devices
is in both).  Composing the partitions in order computes the original ``main``.

A partition the plan marks ``weights="streamed"`` keeps no weight inside its module:
every constant argument of its kernels becomes a parameter after the inputs
(``main(*inputs, *weights)``, ``main_dps(*inputs, *weights, *outputs)``), in order of
first use, and ``weights``/``weight_values`` hold their specs and values (the
compiler writes the values to the artifact; the runtime streams them into the GPU).
A resident partition's module is built exactly as before (no weight parameters).

CUDA graphs (``PartitionProgram.cuda_graph``, what the GPU build is asked for).  TVM's
``RewriteCUDAGraph`` captures the kernels of a function that read only its constants,
its parameters past ``num_input`` and its own constant-size allocations; a kernel that
reads a partition input or writes an output runs outside the graph.  The graph replays
the pointers of its first call (``vm.builtin.cuda_graph.run_or_capture`` is keyed by
the capture region, not by its arguments).  A resident partition of a plan that streams
is built with graphs when :data:`STREAMING_CUDA_GRAPHS` is on: TVM captures in CUDA's
global mode, which forbids other threads' CUDA calls meanwhile, so the runtime captures
them in a serialized run when the session opens
(:meth:`hetpart.runtime.Session._capture_graphs`).  A streamed partition's weights arrive
in ring slot ``use % slots``; under :data:`STREAMED_CUDA_GRAPHS` it is built with graphs
too, its weights made fixed parameters (:func:`slot_graph_signature`: after the outputs
in ``main_dps``, ``num_input`` before them), and the runtime keeps one VM per ring slot,
so each graph only ever replays the slot it captured.  Under :data:`STATIC_IO_CUDA_GRAPHS`
every CUDA partition of static shapes in such a plan is built with all its parameters
fixed (:func:`static_io_signature`: ``num_input = 0``), so the kernels reading its inputs
and writing its outputs are captured too; the runtime keeps one VM per distinct set of
argument addresses (handoff slot x state parity x ring slot), all captured when the session
opens, and refuses a set it never captured (:mod:`hetpart.runtime.partition_runner`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

import tvm
from tvm import relax

from ..errors import InternalError, PlanError
from ..contracts.shapes import static_shape
from .artifact import DPS_FUNCTION, MAIN_FUNCTION, TensorSpec

CALL_TIR = "relax.call_tir"

CONTRACTION_CLASSES = ("matmul", "conv2d")
"""Op classes (:attr:`~hetpart.importer.op_graph.Kernel.op_class`) whose kernels read an
operand many times over (a GEMV's thread blocks each read the whole input vector), which
:func:`contraction_reads` records for the runtime's handoff."""

STREAMING_CUDA_GRAPHS = True
"""Resident CUDA partitions of a plan that streams weights are built with CUDA graphs
(captured when the session opens, one partition at a time; 0 = before: none in such a
plan, every kernel launched by the VM).  Streamed partitions: :data:`STREAMED_CUDA_GRAPHS`."""

STREAMED_CUDA_GRAPHS = False
"""Streamed CUDA partitions are built with CUDA graphs too (with :data:`STREAMING_CUDA_GRAPHS`):
their weights fixed parameters, one VM (and graph) per ring slot at run time.  Off by default:
TVM captures only kernels reading neither a partition input nor an output, and in a decode
layer's streamed partition (llama_decode, built here for sm_90) that left 1 kernel of 16 (its
softmax; the rest read the hidden state, cos/sin, the mask or the KV cache, or write the new
cache), so a graph saves nothing there; a partition whose kernels mostly talk to each other
(a whole encoder layer) would gain.  Correct either way (tests/test_runtime_streaming.py)."""

STATIC_IO_CUDA_GRAPHS = True
"""In a plan that streams (with :data:`STREAMING_CUDA_GRAPHS`), every CUDA partition whose
inputs and outputs have static shapes, resident or streamed, is built with graphs and every
parameter fixed (``num_input = 0``, :func:`static_io_signature`): TVM then captures the
kernels that read the partition's inputs (hidden state, rope tables, mask, KV cache) or write
its outputs, which otherwise launch one by one (~7-14 us each on the host, device step 115).
The runtime calls each VM with one set of addresses only (0 = before: inputs and outputs
not captured, streamed partitions per :data:`STREAMED_CUDA_GRAPHS`).

On the H100 (device steps 116 / 118-119, bench/results/capped-stream-graphs-nvidia-h100.md):
step 116's builds failed their first call in TVM's VM (a write to its void register:
``main_dps``'s captured region returns ``R.Tuple()``, the codegen sent the launch's result to
the void register, the capture function's ``Ret`` wrote it); fixed by
:func:`hetpart.kernels.static_graphs.keep_graph_launch_results`, and step 118's cuda tests passed with it.
Step 119, llama_decode at 1/2: a 19-kernel layer partition's host launch 180-256 -> 40-72 us,
the 145-kernel tail's 673 -> 79 us; the run 0.98x the same plan without (its CPU layers
dominate): on, as the step's rule said (0.97-1.03x with the launches under 100 us)."""


@dataclass(frozen=True)
class PartitionProgram:
    """One partition, cut out of the model and ready to build for its device."""

    name: str
    device: str
    kernels: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    module: tvm.IRModule
    dps: bool
    # streamed partitions only: the lifted constants, in parameter order
    weights: tuple[TensorSpec, ...] = ()
    weight_values: tuple = field(default=(), repr=False, compare=False)
    # May a GPU build capture the partition as a CUDA graph?  In a plan that streams,
    # only under STREAMING_CUDA_GRAPHS, and a streamed partition only under
    # STREAMED_CUDA_GRAPHS (the module docstring says why and how it is captured).
    cuda_graph: bool = True
    # Every parameter fixed for TVM's graph rewrite (STATIC_IO_CUDA_GRAPHS; with cuda_graph)
    static_io: bool = False
    # Boundary tensors (inputs or outputs) a contraction kernel of this partition reads
    # (:func:`contraction_reads`): the runtime keeps such a tensor out of mapped host memory
    # on a GPU (hetpart.runtime.handoff.COPY_GPU_CONTRACTION_READS)
    contraction_reads: tuple[str, ...] = ()
    # The plan maps its weights (Partition.weights "mapped"): built with every constant
    # external (:mod:`.external`), bound from mapped pinned host memory by the runtime
    mapped: bool = False

    @property
    def slot_graphs(self) -> bool:
        """A streamed partition with graphs: built with :func:`slot_graph_signature`."""
        return bool(self.weights) and self.cuda_graph


@dataclass
class _ModelBindings:
    """What extraction needs from the fused ``main``, keyed by op-graph names.

    ``calls[kid]`` is the Relax call of kernel ``kid``; ``names[var]`` the tensor
    names a Relax variable stands for (several for a tuple); ``types[tensor]`` the
    Relax type of a tensor.  Shape computations (``tensor_to_shape``, ``match_cast``
    to a shape) are not kernels: ``shapes[var]`` is such a binding and
    ``shape_deps[kid]`` the ones kernel ``kid`` needs (in order) because its result
    type uses the symbolic dims they define; ``reads[kid]`` is every tensor ``kid``
    depends on: its arguments and what those shape computations read;
    ``consumers[tensor]`` the kernels that read it, by the same measure.
    """

    calls: dict[str, relax.Call] = field(default_factory=dict)
    names: dict[object, list[str]] = field(default_factory=dict)
    types: dict[str, object] = field(default_factory=dict)
    shapes: dict[object, object] = field(default_factory=dict)
    shape_deps: dict[str, list] = field(default_factory=dict)
    reads: dict[str, list[str]] = field(default_factory=dict)
    consumers: dict[str, list[str]] = field(default_factory=dict)


def extract_partitions(graph, plan) -> dict[str, tvm.IRModule]:
    """``{partition name: standalone IRModule}`` for every partition of ``plan``."""
    return {p.name: p.module for p in extract(graph, plan)}


def extract(graph, plan) -> list[PartitionProgram]:
    """The :class:`PartitionProgram` of every partition of ``plan``, in plan order.

    Raises :class:`~hetpart.errors.PlanError` when the plan does not fit ``graph``
    (unknown or twice-placed kernels, a partition reading a tensor no earlier
    partition produces).
    """
    b = read_bindings(graph)
    check_plan(graph, plan, b)
    with _BLOCK_BUILDER_LOCK:
        programs = [_extract_one(graph, b, p) for p in plan.partitions]
    if plan.streamed:
        streamed = {p.name for p in plan.partitions if p.weights == "streamed"}
        graphs = STREAMING_CUDA_GRAPHS
        static = graphs and STATIC_IO_CUDA_GRAPHS
        programs = [replace(p, cuda_graph=True, static_io=True) if static and _static_io_able(p)
                    else p if graphs and (p.name not in streamed or STREAMED_CUDA_GRAPHS)
                    else replace(p, cuda_graph=False) for p in programs]
    return programs


def _static_io_able(program: PartitionProgram) -> bool:
    """A CUDA partition (real or simulated) whose every input and output has a static shape."""
    return program.device != "cpu" and all(static_shape(t.shape) for t in (*program.inputs, *program.outputs))


def static_io_signature(program: PartitionProgram, inner=None):
    """``mod -> mod`` for :func:`hetpart.kernels.build`'s ``lift`` hook, for a partition with
    ``static_io``: ``inner`` (the lifter the partition would get otherwise, e.g.
    :func:`slot_graph_signature` or an external-weight lifter) first, then ``num_input = 0``
    on ``main`` and ``main_dps``, so TVM's CUDA-graph rewrite treats every parameter (inputs,
    outputs, weights) as fixed.  Same computation and signature; the caller must call each
    VM with one set of addresses only (:mod:`hetpart.runtime.partition_runner`)."""

    def lift(mod: tvm.IRModule) -> tvm.IRModule:
        mod = inner(mod) if inner is not None else mod
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
        for gv, func in mod.functions_items():
            if gv.name_hint in (MAIN_FUNCTION, DPS_FUNCTION) and isinstance(func, relax.Function):
                out[gv] = func.with_attr("num_input", 0)
        return out

    return lift


def slot_graph_signature(program: PartitionProgram):
    """``mod -> mod`` for :func:`hetpart.kernels.build`'s ``lift`` hook, for a streamed
    partition with graphs: ``main(*inputs, *weights)`` gets ``num_input = len(inputs)``
    and ``main_dps`` is reordered to ``main_dps(*inputs, *outputs, *weights)`` with
    ``num_input = len(inputs) + len(outputs)``, so TVM's CUDA-graph rewrite treats the
    weights (and only them) as fixed.  Applied after scheduling (weight prepacking reads
    ``num_input`` too: it would pack the streamed weights).  Same computation; InternalError
    if a function's parameters are not what extraction made."""
    n_in, n_w, n_out = len(program.inputs), len(program.weights), len(program.outputs)

    def lift(mod: tvm.IRModule) -> tvm.IRModule:
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
        for gv, func in mod.functions_items():
            name = gv.name_hint
            if name not in (MAIN_FUNCTION, DPS_FUNCTION) or not isinstance(func, relax.Function):
                continue
            params = list(func.params)
            n_dps = n_out if name == DPS_FUNCTION else 0
            if len(params) != n_in + n_w + n_dps:
                raise InternalError(f"{program.name}.{name} has {len(params)} parameters, expected "
                                    f"{n_in} inputs, {n_w} weights and {n_dps} outputs")
            order = params[:n_in] + params[n_in + n_w:] + params[n_in:n_in + n_w]
            new = relax.Function(order, func.body, func.ret_ty, func.is_pure, func.attrs)
            out[gv] = new.with_attr("num_input", n_in + n_dps)
        return out

    return lift


# TVM's BlockBuilder keeps one process-wide stack of open builders: two threads
# extracting at once (e.g. compiling several plans in parallel) corrupt it.  Building
# the extracted modules needs no lock and still runs in parallel.
_BLOCK_BUILDER_LOCK = threading.Lock()


def check_plan(graph, plan, b: _ModelBindings | None = None) -> None:
    """:class:`PlanError` unless every kernel of ``graph`` is in exactly one partition
    and partitions come in an order where each reads only what earlier ones wrote."""
    b = b or read_bindings(graph)
    _same_tensors(graph, plan)
    seen: dict[str, str] = {}
    for p in plan.partitions:
        for kid in p.kernels:
            if kid not in graph.kernels:
                raise PlanError(f"partition '{p.name}' lists kernel '{kid}', which model '{graph.name}' does not have")
            if kid in seen:
                raise PlanError(f"kernel '{kid}' is in two partitions: '{seen[kid]}' and '{p.name}'")
            seen[kid] = p.name
    missing = [k for k in graph.topological_order() if k not in seen]
    if missing:
        raise PlanError(f"the plan places no device for {len(missing)} kernel(s) of '{graph.name}', e.g. '{missing[0]}'")
    available = set(graph.inputs)
    for p in plan.partitions:
        for t in _boundary_inputs(graph, b, p.kernels):
            if t not in available:
                raise PlanError(
                    f"partition '{p.name}' reads tensor '{t}' before any partition produces it; "
                    f"partitions must be listed in a topological order"
                )
        available.update(t for kid in p.kernels for t in graph.kernels[kid].outputs)


def _same_tensors(graph, plan) -> None:
    """PlanError when a partition of ``plan`` reads or writes a tensor ``graph`` does not
    have: a plan made of another model (its kernel ids, node_0 ..., may all fit).  The
    names TVM gave tensors before the importer renamed them (``graph.relax_names``, an
    older plan file's) are the graph's too."""
    known = set(graph.tensors) | set(graph.relax_names.values())
    for p in plan.partitions:
        foreign = [t for t in (*p.inputs, *p.outputs) if t not in known]
        if foreign:
            raise PlanError(f"this is a plan of model '{plan.model}', and it does not fit '{graph.name}': partition "
                            f"'{p.name}' reads or writes tensor(s) {', '.join(map(repr, foreign[:3]))}, which the "
                            "graph does not have; make the plan of this graph, hetpart.partition(graph)")


# --- boundaries ------------------------------------------------------------------
def _boundary_inputs(graph, b: _ModelBindings, kernels) -> list[str]:
    """Tensors ``kernels`` depend on but do not produce, in order of first use."""
    produced = {t for kid in kernels for t in graph.kernels[kid].outputs}
    out: dict[str, None] = {}
    for kid in kernels:
        for t in b.reads[kid]:
            if t not in produced:
                out.setdefault(t)
    return list(out)


def _boundary_outputs(graph, b: _ModelBindings, kernels) -> list[str]:
    """Tensors ``kernels`` produce that the model returns or another partition reads."""
    inside = set(kernels)
    model_outputs = set(graph.outputs)
    return [
        t
        for kid in kernels
        for t in graph.kernels[kid].outputs
        if t in model_outputs or any(c not in inside for c in b.consumers.get(t, ()))
    ]


def tensor_spec(graph, name: str) -> TensorSpec:
    t = graph.tensors[name]
    return TensorSpec(name, tuple(t.shape), t.dtype)


# --- reading the fused main ------------------------------------------------------
def read_bindings(graph) -> _ModelBindings:
    """Walk ``graph.module["main"]`` as the importer did: the i-th binding of tensor
    type that is a Call is kernel ``node_i``, and its outputs are that kernel's
    tensors; TupleGetItem, Tuple and Var bindings are aliases; bindings of non-tensor
    type are shape computations (see :class:`_ModelBindings`)."""
    main = graph.module["main"]
    b = _ModelBindings()
    for param in main.params:
        b.names[param] = [param.name]
        b.types[param.name] = param.ty
    order = graph.topological_order()
    sym_owner: dict[object, object] = {}  # symbolic dim -> shape binding defining it
    for block in main.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if not _holds_tensors(var.ty):
                b.shapes[var] = binding
                for sym in relax.analysis.tir_vars_in_type(var.ty):
                    sym_owner.setdefault(sym, var)
            elif isinstance(value, relax.Call):
                kid = order[len(b.calls)]
                b.calls[kid] = value
                b.names[var] = list(graph.kernels[kid].outputs)
                b.types.update(zip(b.names[var], _tensor_types(var.ty)))
                b.shape_deps[kid] = _shape_deps(b, value, var.ty, sym_owner)
                b.reads[kid] = list(dict.fromkeys(
                    list(graph.kernels[kid].inputs) + [t for s in b.shape_deps[kid] for t in _shape_reads(b, s)]
                ))
                for t in b.reads[kid]:
                    b.consumers.setdefault(t, []).append(kid)
            elif isinstance(value, relax.TupleGetItem):
                b.names[var] = [_names_of(b, value.tuple_value)[value.index]]
            elif isinstance(value, (relax.Tuple, relax.Var)):
                b.names[var] = _names_of(b, value)
            else:
                raise InternalError(f"cannot extract binding '{var.name}' of type {type(value).__name__}")
    if len(b.calls) != len(order):
        raise InternalError(f"main of '{graph.name}' has {len(b.calls)} calls but the op graph {len(order)} kernels")
    return b


def _tensor_types(ty) -> list:
    return list(ty.fields) if isinstance(ty, relax.TupleType) else [ty]


def _holds_tensors(ty) -> bool:
    return all(isinstance(t, relax.TensorType) for t in _tensor_types(ty))


def _names_of(b: _ModelBindings, expr) -> list[str]:
    if isinstance(expr, relax.Tuple):
        return [n for f in expr.fields for n in _names_of(b, f)]
    if isinstance(expr, relax.Var) and expr in b.shapes:
        return []
    return list(b.names.get(expr, []))


def _shape_deps(b: _ModelBindings, call, ty, sym_owner) -> list:
    """Shape-binding variables a kernel needs, dependencies first: those defining the
    symbolic dims of its result type or passed to it, and what they use in turn."""
    wanted = [sym_owner[s] for s in relax.analysis.tir_vars_in_type(ty) if s in sym_owner]
    wanted += [v for v in relax.analysis.free_vars(call) if v in b.shapes]
    out: dict[object, None] = {}

    def visit(var):
        if var in out:
            return
        for used in relax.analysis.free_vars(b.shapes[var].value):
            if used in b.shapes:
                visit(used)
        out[var] = None

    for var in wanted:
        visit(var)
    return list(out)


def _shape_reads(b: _ModelBindings, var) -> list[str]:
    """Tensors the shape binding of ``var`` reads directly."""
    return [n for v in relax.analysis.free_vars(b.shapes[var].value) for n in _names_of(b, v)]


# --- building one partition --------------------------------------------------------
def _extract_one(graph, b: _ModelBindings, partition) -> PartitionProgram:
    kernels = tuple(partition.kernels)
    inputs = _boundary_inputs(graph, b, kernels)
    outputs = _boundary_outputs(graph, b, kernels)
    prims = {}
    for kid in kernels:
        call = b.calls[kid]
        if _is_call_tir(call):
            prims[call.args[0]] = graph.module[call.args[0]]
    dps = all(_dps_slots(graph, b, kid, set(outputs)) is not None for kid in _producers(graph, outputs))
    lifted = _lift_weights(b, kernels, partition.name) if partition.weights == "streamed" else {}
    bb = relax.BlockBuilder(tvm.IRModule(prims))
    _emit_function(bb, MAIN_FUNCTION, graph, b, kernels, inputs, outputs, dps=False, lifted=lifted)
    if dps:
        _emit_function(bb, DPS_FUNCTION, graph, b, kernels, inputs, outputs, dps=True, lifted=lifted)
    weights = tuple(TensorSpec(var.name, tuple(int(d) for d in const.value.shape), str(const.value.dtype))
                    for const, var in lifted.items())
    return PartitionProgram(
        name=partition.name,
        device=partition.device,
        kernels=kernels,
        inputs=tuple(tensor_spec(graph, t) for t in inputs),
        outputs=tuple(tensor_spec(graph, t) for t in outputs),
        module=bb.get(),
        dps=dps,
        weights=weights,
        weight_values=tuple(const.value.numpy() for const in lifted),
        contraction_reads=contraction_reads(graph, kernels, inputs, outputs),
        mapped=partition.weights == "mapped",
    )


def contraction_reads(graph, kernels, inputs, outputs) -> tuple[str, ...]:
    """The partition's boundary tensors (``inputs`` or ``outputs``) that one of its
    ``kernels`` of a :data:`CONTRACTION_CLASSES` class reads, in order of first read.

    An output listed here is read again inside its own partition after its producer
    wrote it: llama_decode's layer partition ends ``norm -> gate GEMV`` and the norm's
    output also goes to the CPU, so a GPU->CPU handoff that maps it (written straight
    into pinned host memory) makes the 46 MB GEMV read its 8 KB input vector through
    PCIe once per thread block (bench/results/stream-gpu-partitions-2core.md)."""
    boundary = set(inputs) | set(outputs)
    return tuple(dict.fromkeys(t for kid in kernels if graph.kernels[kid].op_class in CONTRACTION_CLASSES
                               for t in graph.kernels[kid].inputs if t in boundary))


def _lift_weights(b: _ModelBindings, kernels, partition: str) -> dict:
    """``{constant: parameter var}`` for every tensor constant passed to the kernels of a
    streamed partition, in order of first use (a constant two kernels share is one
    parameter).  Parameters are named ``<partition>.w<i>``."""
    lifted: dict = {}
    for kid in kernels:
        call = b.calls[kid]
        if not _is_call_tir(call):
            continue
        for arg in call.args[1].fields:
            if isinstance(arg, tvm.ir.GenericConst) and isinstance(arg.ty, relax.TensorType) and arg not in lifted:
                lifted[arg] = relax.Var(f"{partition}.w{len(lifted)}", arg.ty)
    return lifted


def _producers(graph, tensors) -> list[str]:
    return list(dict.fromkeys(graph.tensors[t].producer for t in tensors))


def _is_call_tir(call) -> bool:
    return getattr(call.op, "name", None) == CALL_TIR


def _dps_slots(graph, b: _ModelBindings, kid: str, wanted: set[str]) -> list[int] | None:
    """Positions of kernel ``kid``'s outputs in ``wanted``, when they can be written
    in place; None when they cannot.

    ``call_tir_inplace`` appends freshly allocated outputs *after* its arguments, so
    the in-place outputs must be a prefix of the PrimFunc's outputs for the argument
    order to stay (inputs..., outputs...).  Calls with extra TIR variables, calls
    not lowered to TIR, and outputs of data-dependent shape (the caller cannot
    allocate them in advance) cannot be written in place.
    """
    call = b.calls[kid]
    if not _is_call_tir(call) or len(call.args) != 2:
        return None
    outs = graph.kernels[kid].outputs
    slots = [i for i, t in enumerate(outs) if t in wanted]
    if any(not graph.tensors[outs[i]].static for i in slots):
        return None
    return slots if slots == list(range(len(slots))) else None


def _emit_function(bb, fname, graph, b, kernels, inputs, outputs, *, dps: bool, lifted: dict) -> None:
    """Emit ``fname`` into ``bb`` (see the module docstring for the two forms); the
    constants in ``lifted`` become parameters after the inputs."""
    params = [relax.Var(t, b.types[t]) for t in inputs]
    env: dict = dict(zip(inputs, params))  # tensor name or shape variable -> partition expr
    # each function gets its own parameter vars (a var belongs to one function)
    weights = {c: relax.Var(v.name, v.ty) for c, v in lifted.items()}
    env.update((c, v) for c, v in weights.items())
    out_params = {t: relax.Var(f"{t}.out", b.types[t]) for t in outputs} if dps else {}
    with bb.function(fname, params + list(weights.values()) + list(out_params.values())):
        with bb.dataflow():
            for kid in kernels:
                for var in b.shape_deps[kid]:
                    _emit_shape(bb, b, var, env)
                call = _remap(b.calls[kid], b, env)
                if out_params:
                    call = _in_place(graph, b, kid, call, out_params)
                _bind_outputs(bb, graph.kernels[kid].outputs, call, env)
            result = env[outputs[0]] if len(outputs) == 1 else relax.Tuple([env[t] for t in outputs])
            gv = bb.emit_output(result)
        bb.emit_func_output(gv)


def _emit_shape(bb, b: _ModelBindings, var, env) -> None:
    """Re-emit the shape computation bound to ``var`` (once per function)."""
    if var in env:
        return
    binding = b.shapes[var]
    value = _remap(binding.value, b, env)
    if isinstance(binding, relax.MatchCast):
        env[var] = bb.match_cast(value, binding.ty, name_hint=var.name)
    else:
        env[var] = bb.emit(value, name_hint=var.name)


def _in_place(graph, b, kid, call, out_params) -> relax.Call:
    """``call`` rewritten to write the wanted outputs into the caller's buffers."""
    slots = _dps_slots(graph, b, kid, set(out_params))
    if not slots:
        return call
    outs = graph.kernels[kid].outputs
    args = list(call.args[1].fields) + [out_params[outs[i]] for i in slots]
    first = len(call.args[1].fields)
    indices = [first + i if i < len(slots) else -1 for i in range(len(outs))]
    out_ty = list(call.ty_args[0].fields) if isinstance(call.ty_args[0], relax.TupleType) else call.ty_args[0]
    return relax.op.call_tir_inplace(call.args[0], relax.Tuple(args), indices, out_ty)


def _bind_outputs(bb, names, call, env) -> None:
    """Emit ``call`` and record the tensors it produces under their op-graph names."""
    var = bb.emit(call, name_hint=names[0])
    if isinstance(var.ty, relax.TupleType):
        for i, name in enumerate(names):
            env[name] = bb.emit(relax.TupleGetItem(var, i), name_hint=name)
    else:
        env[names[0]] = var


def _remap(expr, b: _ModelBindings, env):
    """``expr`` with every variable of the model's ``main`` replaced by the
    partition's expression for the same tensor(s); constants stay, unless ``env``
    maps them (a streamed partition's weight parameters); functions stay."""
    if isinstance(expr, tvm.ir.GenericConst):
        return env.get(expr, expr)
    if isinstance(expr, relax.Var):
        if expr in b.shapes:
            return env[expr]
        names = b.names[expr]
        if isinstance(expr.ty, relax.TupleType):
            return relax.Tuple([env[n] for n in names])
        return env[names[0]]
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_remap(f, b, env) for f in expr.fields])
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [_remap(a, b, env) for a in expr.args], expr.attrs, expr.ty_args)
    return expr
