"""Store kernels' float32 weights in bfloat16 or float16, computing in float32.

In: an :class:`~hetpart.importer.OpGraph`, the kernels to convert and a storage
dtype (``bfloat16`` / ``float16``).  Out (:func:`lower_weights`): the same graph --
same kernels, tensors, dtypes and boundaries -- whose module calls, for each of those
kernels, a new PrimFunc ``<func>_<bf16|fp16>w`` that takes the kernel's weights in
the low dtype and widens each element to float32 as it reads it (FuseTIR of TVM's
``astype`` into the kernel: the widening is a block of the kernel, which the
schedule rules inline into the loads), with the weights converted once (round to
nearest even; a weight several converted kernels share is converted and stored
once), and whose kernels' ``param_bytes`` count the low dtype, their ``func`` and
``signature`` those of the widened PrimFunc (so a profile measures and keys the
low-precision kernel apart from the float32 one).
:func:`param_bytes` says what each kernel's weights would take, without converting.

Which constants are converted (:func:`convertible`): float32 tensor constants of at
least :data:`MIN_ELEMENTS` elements whose values are all finite in the low dtype.
Scalars and tiny constants (epsilons, ``sqrt(2)``, a GELU's coefficients) stay
float32: they cost no memory and are exact arithmetic constants; a constant that
would overflow (float16's range is 65504: e.g. an additive attention mask of
``-1e9``) stays float32 as well.

Why at this level and not TVM's ``ToMixedPrecision``: hetpart's op graph holds the
*fused, legalised* module (kernels are PrimFuncs), and the partitioner places each
kernel on a device only after import -- so the precision of a kernel is known only
per partition, when the high-level ops are long gone.  Converting the kernel's
weights keeps every kernel, tensor and boundary dtype of the op graph as it is: the
partitions of a plan compose whatever precision each device computes in, and the
model's inputs and outputs keep their ONNX dtypes.

Keep-in-float32 list: everything but weight storage.  Activations, accumulators,
softmax, layer/RMS norms and every reduction compute in float32; only the weights'
*values* are rounded to the low dtype.  On the GPU, matmuls and convolutions then
run on the tensor cores in TF32 (:mod:`hetpart.kernels.tf32`): bfloat16 and float16
values are exact in TF32, so the products of the weights are those of a bf16/fp16
``mma`` with float32 accumulation (the activations rounded to TF32 rather than to
the low dtype -- more accurate, not less).

Invariant: the converted kernel computes the float32 kernel's function of its
inputs with each converted weight replaced by ``float32(low(weight))``.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, te

from ..errors import InternalError

LOW_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}
"""Storage dtypes a weight can be converted to, with the suffix of converted kernels."""

CONVERTED_CLASSES = ("matmul", "conv2d", "gather")
"""Op classes (:attr:`Kernel.op_class`) whose weights are converted: contractions and
embedding lookups, which hold nearly all of a model's weight bytes.  Norms, softmax,
reductions and element-wise kernels keep their (small) float32 parameters."""

MIN_ELEMENTS = 16
"""Constants with fewer elements stay float32 (module docstring)."""

_F16_MAX = 65504.0


def convertible(const, dtype: str) -> bool:
    """Whether the Relax constant ``const`` is a float32 weight that ``dtype`` stores
    (see the module docstring)."""
    if not isinstance(const, tvm.ir.GenericConst) or not isinstance(const.ty, relax.TensorType):
        return False
    if str(const.ty.dtype) != "float32":
        return False
    value = const.value
    size = int(np.prod([int(d) for d in value.shape])) if len(value.shape) else 1
    if size < MIN_ELEMENTS:
        return False
    if dtype == "float16":
        data = value.numpy()
        return bool(np.all(np.abs(data[np.isfinite(data)]) <= _F16_MAX))
    return True


def to_low(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` (float32) rounded to ``dtype`` (round to nearest even)."""
    import ml_dtypes

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    return np.asarray(array, dtype=np.float32).astype(np_dtype)


def low_constant(const, dtype: str):
    """A Relax constant holding ``const``'s values stored in ``dtype``."""
    return relax.const(tvm.runtime.tensor(to_low(const.value.numpy(), dtype)))


def widened_kernel(kernel: tvm.tirx.PrimFunc, call: relax.Call, positions: tuple[int, ...], dtype: str):
    """``kernel`` taking the arguments at ``positions`` of ``call`` (a ``call_tir`` of
    it) in ``dtype``, widening them to float32 inside (one fused PrimFunc).

    Built by FuseTIR from a primitive Relax function ``astype(w) -> call_tir(kernel)``,
    so the result has the form of every other fused kernel of the op graph."""
    args = list(call.args[1].fields)
    out_ty = call.ty_args[0]
    with _BLOCK_BUILDER_LOCK:
        bb = relax.BlockBuilder()
        kernel_gv = bb.add_func(kernel, "kernel")
        params = []
        for i, a in enumerate(args):
            ty = a.ty if i not in positions else relax.TensorType(a.ty.shape, dtype)
            params.append(relax.Var(f"a{i}", ty))
        with bb.function("widened", params, {"Primitive": True}, private=True):
            with bb.dataflow():
                wide = []
                for i, p in enumerate(params):
                    wide.append(bb.emit_te(_widen, p, primfunc_name_hint="widen") if i in positions else p)
                out = bb.emit_output(relax.call_tir(kernel_gv, wide, out_ty))
            bb.emit_func_output(out)
        prim = fuse_primitive(bb, "widened", params, "widening")
    return _inline_elementwise_widening(prim)


def fuse_primitive(bb: relax.BlockBuilder, name: str, params: list, what: str) -> tvm.tirx.PrimFunc:
    """The one PrimFunc FuseTIR makes of primitive Relax function ``name`` in ``bb`` (taking
    ``params``), called from a ``main`` of its own.  Call it holding the block-builder lock.
    InternalError (naming ``what`` the wrapper does: "widening") if FuseTIR leaves other than one."""
    gv = bb.get().get_global_var(name)
    outer = [relax.Var(f"x{i}", p.ty) for i, p in enumerate(params)]
    with bb.function("main", outer):
        with bb.dataflow():
            r = bb.emit_output(relax.Call(gv, outer))
        bb.emit_func_output(r)
    fused = relax.transform.FuseTIR()(bb.get())
    prims = [f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    if len(prims) != 1:
        raise InternalError(f"FuseTIR left {len(prims)} PrimFuncs {what} one kernel")
    return prims[0]


def _inline_elementwise_widening(func):
    """``func`` with every widening block that only element-wise blocks read inlined
    into them (a bias: the GPU rules fuse the epilogue only when it reads the
    function's inputs).  A widening a reduction reads (a contraction's operand) stays
    a block: the contraction rules find a float32 operand and stage it widened (the
    tensor-core rules pack the weight at compile time in its own dtype first,
    :func:`hetpart.kernels.rules.gpu_tensor_core._pack_in_storage_dtype`)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if not sch.get(block).name_hint.startswith("widen"):
            continue
        consumers = sch.get_consumers(block)
        if any(any(iv.iter_type != tvm.tirx.IterVar.DataPar for iv in sch.get(c).iter_vars) for c in consumers):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - the primitive refuses by raising: the block stays
            pass
    return sch.mod["main"]


def _widen(x: te.Tensor) -> te.Tensor:
    return te.compute(x.shape, lambda *i: x(*i).astype("float32"), name="widen")


# TVM's BlockBuilder keeps one process-wide stack of open builders (see compiler.extract)
_BLOCK_BUILDER_LOCK = threading.Lock()


# --- the op graph -------------------------------------------------------------------
def kernel_calls(graph) -> dict[str, relax.Call]:
    """``{kernel id: its Relax call}`` in ``graph.module["main"]`` (kernel ``node_i``
    is the i-th call binding of tensor type, as the op-graph builder numbers them)."""
    calls: dict[str, relax.Call] = {}
    for block in graph.module["main"].body.blocks:
        for binding in block.bindings:
            if _is_kernel_binding(binding):
                calls[f"node_{len(calls)}"] = binding.value
    for kid, call in calls.items():
        if _is_call_tir(call) and graph.kernels[kid].func != call.args[0].name_hint:
            raise InternalError(f"{kid} calls {call.args[0].name_hint} in the module, {graph.kernels[kid].func} "
                                "in the op graph: the kernels are not numbered as the op-graph builder does")
    return calls


def _is_kernel_binding(binding) -> bool:
    ty = binding.var.ty
    types = list(ty.fields) if isinstance(ty, relax.TupleType) else [ty]
    return isinstance(binding.value, relax.Call) and all(isinstance(t, relax.TensorType) for t in types)


def _is_call_tir(call) -> bool:
    return getattr(call.op, "name", None) == "relax.call_tir"


def _weight_positions(kernel, call, dtype: str) -> tuple[int, ...]:
    if not _is_call_tir(call) or len(call.args) != 2 or kernel.op_class not in CONVERTED_CLASSES:
        return ()
    return tuple(i for i, a in enumerate(call.args[1].fields) if convertible(a, dtype))


def _saved_bytes(call, positions) -> int:
    """Bytes saved by storing the arguments at ``positions`` in a 2-byte dtype."""
    args = call.args[1].fields
    return sum(int(np.prod([int(d) for d in args[i].value.shape])) * 2 for i in positions)


def _const_bytes(args) -> int:
    """Bytes of the tensor constants among ``args`` (as the op-graph builder counts them)."""
    return sum(int(np.prod([int(d) for d in a.value.shape])) * np.dtype(_np_dtype(str(a.value.dtype))).itemsize
               for a in args if isinstance(a, tvm.ir.GenericConst))


def _np_dtype(dtype: str):
    import ml_dtypes

    return ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype


def param_bytes(graph, dtype: str | None) -> dict[str, int]:
    """``{kernel id: bytes of its weights}`` with its convertible weights stored in
    ``dtype`` (None or ``float32``: nothing changes).  Only kernels whose count changes
    are listed."""
    if dtype not in LOW_DTYPES:
        return {}
    out = {}
    for kid, call in kernel_calls(graph).items():
        positions = _weight_positions(graph.kernels[kid], call, dtype)
        if positions:
            out[kid] = _const_bytes(call.args[1].fields) - _saved_bytes(call, positions)
    return out


def with_weight_bytes(graph, dtype: str | None):
    """``graph`` whose kernels count their weights (``param_bytes``, ``bytes_read``) as
    stored in ``dtype`` -- what the partitioner plans a device of that format with; the
    module is ``graph``'s (the compiler converts it, :func:`lower_weights`)."""
    sizes = param_bytes(graph, dtype)
    if not sizes:
        return graph
    kernels = dict(graph.kernels)
    for kid, size in sizes.items():
        k = kernels[kid]
        kernels[kid] = dataclasses.replace(k, param_bytes=size, bytes_read=k.bytes_read - (k.param_bytes - size))
    return dataclasses.replace(graph, kernels=kernels)


def lower_weights(graph, kernels, dtype: str):
    """``graph`` with the weights of ``kernels`` (ids) stored in ``dtype`` (module
    docstring); ``graph`` itself is unchanged.  Kernels without convertible weights
    (and ``dtype`` float32) keep their calls."""
    if dtype not in LOW_DTYPES:
        return graph
    wanted = set(kernels)
    calls = kernel_calls(graph)
    bb = relax.BlockBuilder(graph.module)
    suffix = LOW_DTYPES[dtype]
    consts: dict = {}  # original constant -> its low copy (one per weight)
    funcs: dict = {}  # (PrimFunc name, positions) -> GlobalVar of the widened kernel
    signatures: dict = {}  # that GlobalVar -> the widened PrimFunc's signature
    replaced: dict = {}  # original call -> new call
    new_kernels = dict(graph.kernels)
    for kid, call in calls.items():
        positions = _weight_positions(graph.kernels[kid], call, dtype) if kid in wanted else ()
        if not positions:
            continue
        key = (call.args[0].name_hint, positions)
        if key not in funcs:
            prim = widened_kernel(graph.module[call.args[0]], call, positions, dtype)
            funcs[key] = bb.add_func(prim, f"{call.args[0].name_hint}_{suffix}w")
            signatures[funcs[key]] = f"{tvm_ffi.structural_hash(prim):016x}"
        args = list(call.args[1].fields)
        for i in positions:
            if args[i] not in consts:
                consts[args[i]] = low_constant(args[i], dtype)
            args[i] = consts[args[i]]
        replaced[call] = relax.Call(call.op, [funcs[key], relax.Tuple(args)], call.attrs, call.ty_args)
        k, size = graph.kernels[kid], _const_bytes(args)
        new_kernels[kid] = dataclasses.replace(k, func=funcs[key].name_hint, signature=signatures[funcs[key]],
                                               param_bytes=size, bytes_read=k.bytes_read - (k.param_bytes - size))
    if not replaced:
        return graph
    module = bb.get()
    main = _replace_calls(graph.module["main"], replaced)
    # PrimFuncs no call reads any more go: a build schedules every PrimFunc of a module
    before = _callees(calls.values())
    after = _callees(replaced.get(c, c) for c in calls.values())
    functions = {gv: f for gv, f in module.functions_items()
                 if not isinstance(f, tvm.tirx.PrimFunc) or gv.name_hint in after or gv.name_hint not in before}
    out = tvm.IRModule(functions, attrs=module.attrs, global_infos=module.global_infos)
    out[module.get_global_var("main")] = main
    # the rebuilt calls carry no type yet; passes that dedup functions by structure need it
    return dataclasses.replace(graph, kernels=new_kernels, module=relax.transform.Normalize()(out))


def _callees(calls) -> set[str]:
    """Names of the PrimFuncs ``calls`` call."""
    return {c.args[0].name_hint for c in calls if _is_call_tir(c)}


def _replace_calls(main: relax.Function, replaced: dict) -> relax.Function:
    blocks = []
    for block in main.body.blocks:
        bindings = [relax.VarBinding(b.var, replaced[b.value]) if b.value in replaced else b
                    for b in block.bindings]
        blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                      else relax.BindingBlock(bindings))
    return relax.Function(main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure,
                          main.attrs)


__all__ = ["LOW_DTYPES", "MIN_ELEMENTS", "convertible", "kernel_calls", "low_constant", "lower_weights",
           "param_bytes", "to_low", "widened_kernel", "with_weight_bytes"]
