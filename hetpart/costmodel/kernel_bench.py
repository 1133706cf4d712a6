"""Microbenchmark of one fused kernel, alone, exactly as the compiler builds it.

In: an :class:`OpGraph` and one of its kernels.  Out: a :class:`Timing` of the
kernel on one target.

Steps: :func:`single_kernel_module` copies the kernel's PrimFunc into a tiny
IRModule whose Relax ``main`` calls it once (every argument, constants too, becomes
a parameter); :func:`build` compiles that with :func:`hetpart.kernels.build` -- the
same schedules and pipeline the compiler uses, so what is measured is what runs;
:func:`random_inputs` makes arguments (floats uniform in [0.1, 1): never zeros;
integer tensors used as indices stay inside the dimension they index; integer
constants keep their real values; a kernel whose work depends on its values, e.g.
NonMaxSuppression, gets representative ones instead: :mod:`.data_inputs`, whose label
:func:`inputs_label` names for the profile); :func:`time_executable` runs TVM's
``time_evaluator`` after a warm-up call.

The timing is of the whole one-kernel VM call, so it contains the fixed per-call
cost once; :class:`~.CostModel` subtracts :attr:`Overheads.empty_s` (measured the
same way on an empty kernel) and adds the per-kernel launch cost instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.ir import TensorLoad

from ..errors import InternalError
from ..kernels.options import DEFAULT, KernelOptions
from ..kernels.weight_prepack import TRANSFORM_PARAMS
from . import data_inputs
from .profile_db import Timing

FLOAT_LOW, FLOAT_HIGH = 0.1, 1.0
"""Random float inputs are uniform in [FLOAT_LOW, FLOAT_HIGH): never zero, never negative
(so log/sqrt/division kernels time their normal path, not NaN handling)."""

FREE_INT_HIGH = 8
"""Integer inputs not used as an index are drawn from [0, FREE_INT_HIGH)."""


@dataclass(frozen=True)
class ArgSpec:
    """One parameter of a single-kernel module: how to make a value for it.

    ``value`` is the real constant for integer constants (always valid indices);
    ``index_bound`` is the smallest dimension an integer input indexes (values are
    drawn from ``[0, index_bound)``), 0 when unknown and random values could be out
    of range (then the input is all zeros -- integers only, never floats).
    """

    shape: tuple[int, ...]
    dtype: str
    value: np.ndarray | None = None
    index_bound: int | None = None
    weight: bool = False  # a constant of the model (comes after the inputs in ``main``)


@dataclass(frozen=True)
class KernelModule:
    """A module whose ``main(*args)`` calls one kernel once, and how to feed it."""

    mod: tvm.IRModule
    args: tuple[ArgSpec, ...]  # in ``main``'s parameter order: inputs, then weights
    num_inputs: int | None = None  # where the weights start (None: all are inputs)
    func: str = ""  # the PrimFunc's name ("" for a packed library call): picks :mod:`.data_inputs`


@dataclass(frozen=True)
class MeasureSettings:
    """How long to time: ``repeat`` repeats of at least ``min_repeat_ms`` each."""

    repeat: int = 7
    min_repeat_ms: int = 10

    @classmethod
    def quick(cls) -> "MeasureSettings":
        return cls(repeat=5, min_repeat_ms=4)


def kernel_builder():
    """THE per-target build (:func:`hetpart.kernels.build`): measured == compiled."""
    from .. import kernels

    if not hasattr(kernels, "build"):
        raise InternalError("hetpart.kernels.build is missing; the cost model needs the compiler's build")
    return kernels.build


def build_module(mod: tvm.IRModule, target: tvm.target.Target, options: KernelOptions = DEFAULT):
    """Compile a single-kernel module for ``target`` with ``options`` (an executable
    for relax.VirtualMachine)."""
    from ..kernels.tuning import default_database

    return kernel_builder()(mod, target, tuning_db=default_database(target), options=options)


# --- the module -----------------------------------------------------------------
def _binding_of(graph, kernel):
    index = 0
    for block in graph.module["main"].body.blocks:
        for binding in block.bindings:
            if index == kernel.index:
                return binding
            index += 1
    raise InternalError(f"{kernel.id} ({kernel.func}): binding {kernel.index} not found in main")


def _flat_args(call) -> tuple[list, object | None]:
    """The tensor arguments of a call, and the GlobalVar of its PrimFunc (call_tir) or None."""
    if call.op.name == "relax.call_tir":
        args = call.args[1]
        return (list(args.fields) if isinstance(args, relax.Tuple) else [args]), call.args[0]
    return list(call.args), None


def _arg_spec(expr, bound: int | None) -> ArgSpec:
    if isinstance(expr, tvm.ir.GenericConst):
        value = expr.value.numpy()
        keep = value if np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_ else None
        return ArgSpec(tuple(value.shape), str(value.dtype), keep, bound, weight=True)
    ty = expr.ty
    return ArgSpec(tuple(int(d) for d in ty.shape.values), str(ty.dtype), None, bound)


def kernel_primfunc(graph, kernel):
    """``kernel``'s PrimFunc in ``graph.module``, or None when the kernel calls no
    PrimFunc of the module (a packed library call)."""
    try:
        return graph.module[kernel.func]
    except (KeyError, ValueError, AttributeError):  # no such function in the module (TVM: ValueError)
        return None


def module_primfunc(mod: tvm.IRModule):
    """The PrimFunc of a single-kernel module, or None when it has not exactly one."""
    prims = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return prims[0] if len(prims) == 1 else None


def single_kernel_module(graph, kernel) -> KernelModule:
    """A module with ``kernel``'s PrimFunc and a ``main`` that calls it once (see module doc)."""
    call = _binding_of(graph, kernel).value
    args, gvar = _flat_args(call)
    prim = graph.module[gvar] if gvar is not None else None
    bounds = index_bounds(prim) if prim is not None else {}
    specs = [_arg_spec(a, bounds.get(i)) for i, a in enumerate(args)]
    params = [relax.Var(f"arg{i}", relax.TensorType(list(s.shape), s.dtype)) for i, s in enumerate(specs)]
    bb = relax.BlockBuilder()
    if gvar is not None:
        new_gv = bb.add_func(prim, gvar.name_hint)
        new_args = [new_gv, relax.Tuple(params), *call.args[2:]]
    else:
        new_args = params
    # main takes the inputs first, then the weights (``num_input`` says where they
    # start), so the CPU build can move weight packing into main_transform_params.
    order = [i for i, s in enumerate(specs) if not s.weight] + [i for i, s in enumerate(specs) if s.weight]
    with bb.function("main", [params[i] for i in order]):
        with bb.dataflow():  # LiftTransformParams only lifts bindings of dataflow blocks
            out = bb.emit_output(relax.Call(call.op, new_args, call.attrs, call.ty_args))
        bb.emit_func_output(out)
    mod = bb.get()
    n_inputs = sum(not s.weight for s in specs)
    mod["main"] = mod["main"].with_attr("num_input", n_inputs)
    return KernelModule(mod, tuple(specs[i] for i in order), n_inputs, gvar.name_hint if gvar is not None else "")


def bench_module(graph, kernel, target) -> tuple[KernelModule, str]:
    """The module the profiler times for ``kernel`` built for ``target``, and the record's
    ``flash`` (:attr:`.profile_db.KernelRecord.flash`): for a flash-marked ``values`` kernel on a
    target that runs marked chains as the flash kernel, its whole chain
    (:func:`.flash_cost.chain_module`; :data:`.flash_cost.CHAIN`), so the profile holds what
    runs; for every other kernel :func:`single_kernel_module` and ``""``."""
    from . import flash_cost

    marked = flash_cost.role(graph, kernel)
    if marked is not None and marked[0] == "values" and flash_cost.substitutes(target):
        chain = flash_cost.chain_module(graph, kernel)
        if chain is not None:
            return chain, flash_cost.CHAIN
    return single_kernel_module(graph, kernel), ""


def index_bounds(prim) -> dict[int, int]:
    """Parameter position -> the smallest extent any integer parameter indexes directly.

    Integer parameters loaded inside another load's index (``A[idx[i], j]``) get the
    extent of that dimension of ``A``.  An integer parameter the walk cannot bound
    while the function does index indirectly gets 0 (use zeros: always in range).
    """
    int_params = [(i, p) for i, p in enumerate(prim.params) if "int" in str(getattr(p.ty, "dtype", ""))]
    bounds: dict[int, int] = {}
    indirect = False

    def position(var) -> int | None:
        return next((i for i, p in int_params if p.same_as(var)), None)

    def visit(node):
        nonlocal indirect
        for dim, idx in enumerate(node.indices):
            inner: list = []
            tvm_ffi.structural_walk(idx, (TensorLoad, inner.append), order="post")
            for load in inner:
                indirect = True
                pos = position(load.source)
                if pos is not None:
                    extent = int(node.source.ty.shape[dim])
                    bounds[pos] = min(bounds.get(pos, extent), extent)

    tvm_ffi.structural_walk(prim.body, (TensorLoad, visit), order="post")
    if indirect:
        for pos, _ in int_params:
            bounds.setdefault(pos, 0)
    return bounds


# --- inputs and timing ------------------------------------------------------------
def random_array(spec: ArgSpec, rng: np.random.Generator) -> np.ndarray:
    """A value for ``spec`` (see :class:`ArgSpec`): floats never zero."""
    if spec.value is not None:
        return spec.value
    if spec.dtype == "bool":
        return rng.integers(0, 2, size=spec.shape).astype(bool)
    if "int" in spec.dtype:
        high = FREE_INT_HIGH if spec.index_bound is None else spec.index_bound
        if high <= 0:
            return np.zeros(spec.shape, dtype=spec.dtype)
        return rng.integers(0, high, size=spec.shape).astype(spec.dtype)
    return rng.uniform(FLOAT_LOW, FLOAT_HIGH, size=spec.shape).astype(spec.dtype)


def random_inputs(kmod: KernelModule, dev, seed: int = 0) -> list:
    """The arguments ``kmod`` is timed on, on ``dev``: :func:`random_array` per spec, or
    for a kernel registered in :mod:`.data_inputs` its representative values."""
    rng = np.random.default_rng(seed)
    op = data_inputs.op_for(kmod.func)
    arrays = op.inputs(kmod.args, rng) if op is not None else [random_array(s, rng) for s in kmod.args]
    return [tvm.runtime.tensor(a, dev) for a in arrays]


def inputs_label(kmod: KernelModule) -> str:
    """What :func:`random_inputs` feeds ``kmod``: :data:`.data_inputs.RANDOM` or the
    registered op's label (recorded as :attr:`.profile_db.KernelRecord.inputs`)."""
    op = data_inputs.op_for(kmod.func)
    return op.label if op is not None else data_inputs.RANDOM


def time_executable(executable, inputs: list, dev, settings: MeasureSettings, func: str = "main") -> Timing:
    """Median/min/max seconds per call of ``func`` after one warm-up call."""
    vm = relax.VirtualMachine(executable, dev)
    vm[func](*inputs)  # warm-up: lazy module init, allocator pools, CUDA module load
    dev.sync()
    res = vm.time_evaluator(func, dev, number=1, repeat=settings.repeat, min_repeat_ms=settings.min_repeat_ms)(*inputs)
    results = [float(r) for r in res.results]
    number = max(1, round(settings.min_repeat_ms / 1e3 / max(min(results), 1e-9))) if settings.min_repeat_ms else 1
    return Timing(float(np.median(results)), min(results), max(results), len(results), number)


def measure(kmod: KernelModule, executable, dev, settings: MeasureSettings) -> Timing:
    """Time a built single-kernel module on ``dev`` with random inputs.  Weights the
    build repacks (``main_transform_params``, see :mod:`hetpart.kernels.weight_prepack`)
    are packed once before timing, as the compiled model has them packed."""
    return time_executable(executable, prepared_inputs(kmod, executable, dev), dev, settings)


def prepared_inputs(kmod: KernelModule, executable, dev, seed: int = 0) -> list:
    """:func:`random_inputs` as the built ``main`` takes them (weights transformed)."""
    inputs = random_inputs(kmod, dev, seed)
    vm = relax.VirtualMachine(executable, dev)
    if kmod.num_inputs is None or not _has_function(vm, TRANSFORM_PARAMS):
        return inputs
    packed = vm[TRANSFORM_PARAMS](inputs[kmod.num_inputs:])
    return inputs[: kmod.num_inputs] + list(packed)


def _has_function(vm, name: str) -> bool:
    try:
        vm[name]
    except (AttributeError, KeyError, ValueError, RuntimeError):  # TVM raises one of these
        return False
    return True
