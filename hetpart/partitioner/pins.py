"""User pins: ``--pin Gather=cpu`` (an op type) or ``--pin node_17=cuda`` (a kernel).

A pin's left side is a kernel id (``node_17``), a kernel's PrimFunc name, an ONNX op
type (``Gather``, ``Conv``) or a TVM op name (``take``, ``conv2d``), matched without
regard to case.  An op pin holds every kernel that fuses that op in (any of
``kernel.ops``).  A kernel pin beats an op pin, so ``--pin Gather=cpu --pin
node_6=cuda`` keeps every gather on the CPU but node_6.  To teach pins a new ONNX
op, add it to :data:`ONNX_TO_TVM`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import PlanError
from ..targets import DEVICES

ONNX_TO_TVM: dict[str, tuple[str, ...]] = {
    "add": ("add",), "sub": ("subtract",), "mul": ("multiply",), "div": ("divide",),
    "pow": ("power",), "sqrt": ("sqrt",), "exp": ("exp",), "erf": ("erf", "fast_erf"), "tanh": ("tanh",),
    "relu": ("relu",), "sigmoid": ("sigmoid", "tir_sigmoid"), "gelu": ("gelu", "gelu_fast_erf"),
    "clip": ("clip",), "where": ("where",), "less": ("less",), "greater": ("greater",),
    "equal": ("equal",), "cast": ("astype",),
    "matmul": ("matmul",), "gemm": ("matmul",), "einsum": ("einsum",),
    "conv": ("conv1d", "conv2d", "conv3d"), "convtranspose": ("conv1d_transpose", "conv2d_transpose"),
    "maxpool": ("max_pool1d", "max_pool2d", "max_pool3d"),
    "averagepool": ("avg_pool1d", "avg_pool2d", "avg_pool3d"),
    "globalaveragepool": ("mean", "adaptive_avg_pool2d"), "globalmaxpool": ("max", "adaptive_max_pool2d"),
    "batchnormalization": ("batch_norm",), "layernormalization": ("layer_norm",),
    "softmax": ("softmax",), "logsoftmax": ("log_softmax",),
    "reducemean": ("mean",), "reducesum": ("sum",), "reducemax": ("max",), "argmax": ("argmax",),
    "gather": ("take",), "gatherelements": ("gather_elements",), "gathernd": ("gather_nd",),
    "scatternd": ("scatter_nd",), "scatterelements": ("scatter_elements",),
    "concat": ("concatenate",), "split": ("split",), "slice": ("strided_slice",),
    "transpose": ("transpose",), "reshape": ("reshape",), "flatten": ("reshape",),
    "unsqueeze": ("expand_dims",), "squeeze": ("squeeze",), "expand": ("broadcast_to",),
    "resize": ("resize2d",), "topk": ("topk",),
    "nonmaxsuppression": ("non_max_suppression", "all_class_non_max_suppression"),
}
"""ONNX op type (lower case) -> the TVM op names it becomes inside fused kernels."""


@dataclass(frozen=True)
class Pin:
    """``what=device`` as the user wrote it."""

    what: str
    device: str

    def __str__(self) -> str:
        return f"{self.what}={self.device}"


def parse_pins(items) -> tuple[Pin, ...]:
    """``["Gather=cpu", "node_17=cuda"]`` (or one pin alone, ``"Gather=cpu"``) -> pins;
    PlanError on a malformed item."""
    if isinstance(items, (str, Pin)):
        items = [items]  # one pin, not a sequence of one-letter items
    pins = []
    for item in items or ():
        if isinstance(item, Pin):
            pins.append(item)
            continue
        what, sep, device = str(item).partition("=")
        what, device = what.strip(), device.strip().lower()
        if not sep or not what:
            raise PlanError(f"--pin '{item}' is not OP_OR_NODE=DEVICE, e.g. Gather=cpu or node_17=cuda")
        if device not in DEVICES:
            raise PlanError(f"--pin '{item}': unknown device '{device}'; devices: {', '.join(DEVICES)}")
        pins.append(Pin(what, device))
    return tuple(pins)


def resolve_pins(graph, pins) -> dict[str, tuple[str, str]]:
    """Kernel id -> (device, reason) for every kernel a pin holds.

    Raises PlanError when a pin matches nothing (listing close matches) or when two
    pins of the same kind send one kernel to different devices.
    """
    by_node: dict[str, tuple[str, str]] = {}
    by_op: dict[str, tuple[str, str]] = {}
    for pin in parse_pins(pins):
        node = graph.find(pin.what)
        if node is not None:
            _put(by_node, node.id, pin)
            continue
        matched = [k.id for k in graph.nodes if _matches_op(k.ops, pin.what)]
        if not matched:
            raise PlanError(_no_match_message(graph, pin))
        for kid in matched:
            _put(by_op, kid, pin)
    return {**by_op, **by_node}


def _put(table: dict[str, tuple[str, str]], kid: str, pin: Pin) -> None:
    if kid in table and table[kid][0] != pin.device:
        raise PlanError(f"{kid} is pinned to both {table[kid][0]} ({table[kid][1]}) and {pin.device} "
                        f"(pin {pin}); remove one of the pins")
    table[kid] = (pin.device, f"pinned by --pin {pin}")


IMPORTED_AS: dict[str, str] = {
    "gather": "a Gather at one constant index is imported as a slice (hetpart.importer.constant_take): "
              "pin it as Slice, or by its kernel id (--explain lists them)",
}
"""Why an ONNX op may be absent from a model that has it: the importer computes it as
another op.  Said when a pin of that op matches nothing."""


def _op_names(what: str) -> tuple[str, ...]:
    key = what.lower()
    return ONNX_TO_TVM.get(key, (key,))


def _matches_op(ops, what: str) -> bool:
    wanted = set(_op_names(what))
    return any(op.lower() in wanted or op.lower().removeprefix("tir_") in wanted for op in ops)


def _no_match_message(graph, pin: Pin) -> str:
    tvm_ops = sorted({op for k in graph.nodes for op in k.ops})
    onnx_ops = sorted(name for name, tvm in ONNX_TO_TVM.items() if set(tvm) & set(tvm_ops))
    candidates = list(dict.fromkeys(c.lower() for c in (*graph.kernels, *tvm_ops, *onnx_ops)))
    close = difflib.get_close_matches(pin.what.lower(), candidates, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"ops in this model: {', '.join(tvm_ops)}"
    if pin.what.lower() in IMPORTED_AS:
        hint = f"{IMPORTED_AS[pin.what.lower()]}; {hint}"
    return (f"--pin {pin}: no kernel of '{graph.name}' is named '{pin.what}' or uses that op; {hint}. "
            "Write a kernel id (node_17), an ONNX op type (Gather) or a TVM op name (take)")
