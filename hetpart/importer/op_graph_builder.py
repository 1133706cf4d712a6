"""Read a fused Relax module into an :class:`OpGraph`.

In: the module from :func:`hetpart.importer.fusion.fuse` and, per fused PrimFunc, the
operators FuseOps put into it.  Out: an :class:`OpGraph` with one :class:`Kernel` per
``call_tir`` (or other call) binding of ``main``, in binding order.

Bindings that move no data -- ``TupleGetItem`` of a multi-output kernel and the
``Tuple`` that gathers outputs -- become aliases, not kernels, so an edge always runs
from the kernel that computes a tensor to the kernel that reads it.
"""

from __future__ import annotations

import dataclasses

import tvm
import tvm_ffi
from tvm import relax

from ..errors import InternalError
from .op_graph import Kernel, OpGraph, Tensor, dtype_bytes

# Operator classes the cost model fits separately, anchor-first priority: a fused
# kernel belongs to the class of its heaviest operator.
OP_CLASSES = (
    ("conv2d", ("conv",)),
    ("matmul", ("matmul", "dense", "linear")),
    ("pool", ("pool",)),
    ("norm", ("layer_norm", "batch_norm", "group_norm", "rms_norm")),
    ("softmax", ("softmax",)),
    ("reduce", ("sum", "mean", "max", "min", "prod", "argmax", "argmin", "variance", "std")),
    ("gather", ("take", "gather", "scatter", "embedding")),
    ("sort", ("sort", "topk", "non_max_suppression", "nms", "argsort", "nonzero")),
    # ``where`` (select) is elementwise: it falls through to "injective"
)


def op_class_of(ops: tuple[str, ...]) -> str:
    """The cost-model class of a fused kernel with operators ``ops``."""
    for cls, keys in OP_CLASSES:
        if any(key in op for op in ops for key in keys):
            return cls
    return "injective"


def _shape_of(ty) -> tuple:
    """Shape of a Relax TensorType: ints, or strings for symbolic dims."""
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        # No shape known (e.g. a field of relax.run.unique's tuple): data-dependent
        # dims, one per axis of a known rank -- never () (a 0-d static tensor).
        ndim = int(getattr(ty, "ndim", -1))
        return tuple(f"?{i}" for i in range(ndim)) if ndim >= 0 else ("?",)
    dims = []
    for d in shape.values:
        try:
            dims.append(int(d))
        except (TypeError, ValueError):
            dims.append(str(d))
    return tuple(dims)


def _dims_of_shape_type(ty) -> tuple:
    """Dims a ShapeType binds (``R.Shape([s, s_1])``); empty when unknown."""
    values = getattr(ty, "values", None)
    if values is None:
        return ()
    return tuple(str(d) if not str(d).lstrip("-").isdigit() else int(str(d)) for d in values)


def _tensor_types(ty) -> list:
    """The tensor types a binding produces: one, or the fields of a tuple type."""
    if isinstance(ty, relax.TupleType):
        return list(ty.fields)
    return [ty]


def _holds_tensors(ty) -> bool:
    return all(isinstance(t, relax.TensorType) for t in _tensor_types(ty))


def _const_bytes(c) -> int:
    return int(c.value.numpy().nbytes) if hasattr(c.value, "numpy") else 0


def _prim_name(name: str) -> str:
    """``reshape1`` -> ``reshape``: the operator behind a legalised PrimFunc's name."""
    return name.rstrip("0123456789").rstrip("_") or name


class _Builder:
    """Walks ``main`` once, creating kernels and tensors (see module docstring)."""

    def __init__(self, mod: tvm.IRModule, fused_ops: dict[str, tuple[str, ...]]):
        self.mod = mod
        self.fused_ops = fused_ops
        self.kernels: dict[str, Kernel] = {}
        self.tensors: dict[str, dict] = {}
        # Relax var -> tensor name(s) it stands for (aliases resolve here).
        self.alias: dict[object, list[str]] = {}
        # Symbolic dim name -> tensors its value is read from (e.g. NMS's box count):
        # a kernel whose output shape uses the dim depends on them, with no Relax var
        # in between.
        self.sym_sources: dict[str, list[str]] = {}
        # Var -> the Tuple or Var it is bound to (aliases that keep their structure).
        self.values: dict[object, object] = {}

    def tensor(self, name, shape, dtype, producer, is_input=False):
        # Relax var names are only hints and may repeat; tensor names must not.
        base, n = name, 1
        while name in self.tensors:
            name, n = f"{base}_{n}", n + 1
        self.tensors[name] = dict(
            name=name, shape=shape, dtype=str(dtype), producer=producer, consumers=[], is_input=is_input
        )
        return name

    def read(self, expr) -> list[str]:
        """Tensor names an argument expression reads (constants read none)."""
        if isinstance(expr, relax.Var):
            if expr not in self.alias:
                raise InternalError(f"variable '{expr.name}' used before it is defined")
            return list(self.alias[expr])
        if isinstance(expr, relax.Tuple):
            return [t for f in expr.fields for t in self.read(f)]
        if isinstance(expr, (list, tuple)) or type(expr).__name__ == "Array":
            return [t for f in expr for t in self.read(f)]
        return []

    def params_of(self, expr) -> int:
        if isinstance(expr, relax.Tuple):
            return sum(self.params_of(f) for f in expr.fields)
        return _const_bytes(expr) if isinstance(expr, tvm.ir.GenericConst) else 0

    def add_inputs(self, func):
        for p in func.params:
            self.alias[p] = [self.tensor(p.name, _shape_of(p.ty), p.ty.dtype, None, is_input=True)]

    def add_binding(self, index: int, var, value):
        if not _holds_tensors(var.ty):
            # Shape computations (tensor_to_shape, match_cast to a shape) run on the
            # host as part of their consumer's launch: alias them to what they read,
            # and remember which tensors define the symbolic dims they bind.
            self.alias[var] = self.read(value.args if isinstance(value, relax.Call) else value)
            for dim in _dims_of_shape_type(var.ty):
                if isinstance(dim, str):
                    self.sym_sources.setdefault(dim, []).extend(self.alias[var])
            return
        if isinstance(value, relax.TupleGetItem):
            self.alias[var] = [self.read(value.tuple_value)[value.index]]
            return
        if isinstance(value, (relax.Tuple, relax.Var)):
            self.alias[var] = self.read(value)
            self.values[var] = value  # main's return value is a var bound to the outputs' tuple
            return
        if not isinstance(value, relax.Call):
            raise InternalError(f"unexpected binding {type(value).__name__} for '{var.name}'")
        self.add_kernel(index, var, value)

    def add_kernel(self, index: int, var, call):
        kid = f"node_{len(self.kernels)}"
        if call.op.name == "relax.call_tir":
            func_name = call.args[0].name_hint
            args = call.args[1]
            ops = self.fused_ops.get(func_name, (_prim_name(func_name),))
            prim = self.mod[func_name]
            signature = f"{tvm_ffi.structural_hash(prim):016x}"
            from tvm.s_tir.analysis import estimate_tir_flops

            flops = int(estimate_tir_flops(prim.body))
        else:  # a call TVM did not lower to TIR (packed builtin, extern op)
            func_name = call.op.name if hasattr(call.op, "name") else str(call.op)
            args = relax.Tuple(list(call.args))
            ops = (_prim_name(func_name.split(".")[-1]),)
            signature = f"{func_name}:{var.ty}"
            flops = 0
        inputs = self.read(args) + [
            t for dim in _shape_of(var.ty) if isinstance(dim, str) for t in self.sym_sources.get(dim, ())
        ]
        outs = [
            self.tensor(var.name if i == 0 and not isinstance(var.ty, relax.TupleType) else f"{var.name}.{i}",
                        _shape_of(t), t.dtype, kid)
            for i, t in enumerate(_tensor_types(var.ty))
        ]
        self.alias[var] = outs
        for t in dict.fromkeys(inputs):
            self.tensors[t]["consumers"].append(kid)
        self.kernels[kid] = Kernel(
            id=kid,
            func=func_name,
            ops=tuple(ops),
            op_class=op_class_of(tuple(ops)),
            inputs=tuple(dict.fromkeys(inputs)),
            outputs=tuple(outs),
            flops=flops,
            bytes_read=sum(_nbytes(self.tensors[t]) for t in set(inputs)) + self.params_of(args),
            bytes_written=sum(_nbytes(self.tensors[t]) for t in outs),
            param_bytes=self.params_of(args),
            signature=signature,
            index=index,
        )


def _nbytes(t: dict) -> int:
    n = 1
    for d in t["shape"]:
        n *= d if isinstance(d, int) else 1
    return n * dtype_bytes(t["dtype"])


def _named_outputs(b: _Builder, body, model_names) -> tuple[list[str], list[str]]:
    """``(tensors, names)``: the tensors ``main`` returns and the model's name for each.

    ``main`` returns the model's outputs in the model's order, one field each (a
    single value when there is one).  A field that is a constant holds no tensor and
    is left out, with its name; without ``model_names`` (or when the count differs),
    the names are the tensor names."""
    while isinstance(body, relax.Var) and body in b.values:
        body = b.values[body]
    fields = list(body.fields) if isinstance(body, relax.Tuple) else [body]
    model_names = list(model_names or ())
    if len(model_names) != len(fields):
        outputs = b.read(body)
        return outputs, list(outputs)
    outputs, names = [], []
    for f, n in zip(fields, model_names):
        read = b.read(f)
        if len(read) == 1:
            outputs.append(read[0])
            names.append(n)
        else:  # a constant (nothing to read) or a nested tuple: called by tensor names
            outputs.extend(read)
            names.extend(read)
    return outputs, names


def _output_renames(b: _Builder, outputs: list[str], names: list[str]) -> dict[str, str]:
    """Tensor name -> new name, so that each tensor holding a model output takes the
    model's name for it: every tensor produced by a kernel (a model input keeps its own
    name), named once (the first name where the model returns one tensor under several;
    the first tensor where several outputs share a name), unless the name is a model
    input's.  A tensor that already has a name an output takes (an internal tensor
    Relax called ``lv`` where the model names an output ``lv``) moves to a fresh name
    (:func:`_fresh_name`).  Users read tensor names (summary, plan, transfers), so an
    output shows under its ONNX name rather than a Relax var name such as ``gv``.
    Invariant: the renamed tensor names are unique."""
    renames: dict[str, str] = {}
    for t, n in zip(outputs, names):
        taken_by_input = n in b.tensors and b.tensors[n]["is_input"]
        if t in renames or n in renames.values() or b.tensors[t]["is_input"] or (taken_by_input and n != t):
            continue
        renames[t] = n
    claimed = set(renames.values())
    used = set(b.tensors) | claimed | set(names)
    for t in b.tensors:
        if t in claimed and t not in renames:  # its name goes to an output: it takes another
            renames[t] = _fresh_name(t, used)
            used.add(renames[t])
    return {t: n for t, n in renames.items() if t != n}


def _fresh_name(name: str, used: set[str]) -> str:
    """``name_1``, ``name_2``, ...: the first not in ``used``."""
    i = 1
    while f"{name}_{i}" in used:
        i += 1
    return f"{name}_{i}"


def _rename_tensors(b: _Builder, renames: dict[str, str]) -> None:
    """Rename tensors ``old -> new`` everywhere the builder holds them (the tensor
    table, kernels' inputs and outputs); ``new`` names are unused."""
    if not renames:
        return
    b.tensors = {renames.get(t, t): dict(d, name=renames.get(t, t)) for t, d in b.tensors.items()}
    b.kernels = {
        kid: dataclasses.replace(k, inputs=tuple(renames.get(t, t) for t in k.inputs),
                                 outputs=tuple(renames.get(t, t) for t in k.outputs))
        for kid, k in b.kernels.items()
    }


def build_op_graph(name: str, fused: tvm.IRModule, fused_ops: dict[str, tuple[str, ...]], relax_module=None,
                   output_names=None) -> OpGraph:
    """The :class:`OpGraph` of the fused module ``fused`` (see module docstring);
    ``output_names`` are the model's names of ``main``'s return values, in order.
    The tensor holding an output is named as the model names it where it can be
    (:func:`_output_renames`); ``OpGraph.output_names`` still maps every output and
    ``OpGraph.relax_names`` every renamed tensor to its Relax name."""
    main = fused["main"]
    b = _Builder(fused, fused_ops)
    b.add_inputs(main)
    index = 0
    for block in main.body.blocks:
        for binding in block.bindings:
            b.add_binding(index, binding.var, binding.value)
            index += 1
    outputs, names = _named_outputs(b, main.body.body, output_names)
    renames = _output_renames(b, outputs, names)
    _rename_tensors(b, renames)
    outputs = [renames.get(t, t) for t in outputs]
    for t in outputs:
        b.tensors[t]["is_output"] = True
    tensors = {
        n: Tensor(
            name=n,
            shape=d["shape"],
            dtype=d["dtype"],
            producer=d["producer"],
            consumers=tuple(d["consumers"]),
            is_input=d["is_input"],
            is_output=d.get("is_output", False),
        )
        for n, d in b.tensors.items()
    }
    inputs = tuple(p.name for p in main.params)
    graph = OpGraph(name, b.kernels, tensors, inputs, tuple(outputs), module=fused, relax_module=relax_module,
                    output_names=tuple(names), relax_names={new: old for old, new in renames.items()})
    graph.validate()
    return graph
