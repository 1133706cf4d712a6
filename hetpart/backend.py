"""hetpart as an ONNX backend (``onnx.backend.base.Backend``).

The convention onnxruntime, onnx-tensorrt and TVM follow, so the onnx package's
backend tests (and any code written against that interface) run through hetpart:

    rep = hetpart.backend.prepare(model, device="CPU")   # or "CUDA"
    outputs = rep.run([x, y])                            # list, in the model's output order

``device`` forces every kernel onto one device: ``"CPU"`` pins each kernel to the
CPU; ``"CUDA"`` pins each kernel the GPU can build to CUDA (the few TVM cannot build
for CUDA, e.g. NonMaxSuppression, stay on the CPU, as in any hetpart plan).  On a
machine without a GPU the CUDA partitions are compiled with the GPU schedule rules
and run on the CPU (``simulate=True``, chosen automatically; pass ``simulate=`` to
decide).  The pipeline is hetpart's public one: ``load`` -> ``partition`` (pins, with
a flat cost table since the device is forced) -> ``compile`` -> ``Session``.

Errors keep hetpart's hierarchy: a model hetpart cannot run raises a
:class:`~hetpart.errors.HetpartError` subclass naming the node and op.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from .errors import InternalError, RuntimeFailure, TargetError

DEVICES = {"CPU": "cpu", "CUDA": "cuda"}
"""ONNX backend device string -> hetpart device."""


def _device(device: str) -> str:
    """``"CPU"``/``"CUDA"`` (also ``"CUDA:0"``, any case) -> hetpart's device name."""
    key = str(device).upper().split(":")[0]
    if key not in DEVICES:
        raise TargetError(f"unknown ONNX backend device '{device}'; hetpart supports {', '.join(DEVICES)}")
    return DEVICES[key]


def forced_plan(graph, device: str, cpu_tail: bool = False):
    """A plan of ``graph`` with every kernel on ``device`` where it can be built there.

    The device is forced by pins (one per kernel), so costs do not matter: a flat
    table stands in for the cost model (no profile is read) and carries the
    capability limits (:mod:`hetpart.kernels.capabilities`) so a kernel the device
    cannot build goes to the other one, as in every hetpart plan.

    ``cpu_tail`` (``device`` "cuda" only): a kernel every input of which is made on the
    CPU -- by a kernel CUDA cannot build, or by such a tail kernel -- stays on the CPU
    too, so the plan does not go CPU -> GPU -> CPU for it (the zoo detector: the three
    small kernels that trim NonMaxSuppression's rows to their count went to the GPU
    and back, a data-dependent copy each way, every run; issue 20).  Model inputs and
    weights do not count as made on the CPU.
    """
    from .kernels.capabilities import unsupported_reason
    from .partitioner import TableCosts, partition
    from .targets import DEVICES as ALL_DEVICES

    seconds, unsupported = {}, {}
    for kernel in graph.nodes:
        seconds[kernel.id] = {d: 1e-6 for d in ALL_DEVICES}
        for d in ALL_DEVICES:
            why = unsupported_reason(kernel, d)
            if why is not None:
                unsupported[(kernel.id, d)] = why
    costs = TableCosts(seconds, unsupported=unsupported, origin=f"hetpart.backend: every kernel on {device}")
    tail = cpu_tail_kernels(graph, unsupported) if cpu_tail and device == "cuda" else set()
    pins = [f"{k.id}={'cpu' if k.id in tail else device}" for k in graph.nodes if (k.id, device) not in unsupported]
    return partition(graph, objective="latency", cost_model=costs, pins=pins, progress=False)


def cpu_tail_kernels(graph, unsupported) -> set[str]:
    """The ids of the kernels :func:`forced_plan`'s ``cpu_tail`` keeps on the CPU:
    buildable on CUDA, with at least one input, every input made by a kernel that is
    not (``(kernel id, "cuda")`` in ``unsupported``) or by another such kernel."""
    on_cpu = {kid for kid, dev in unsupported if dev == "cuda"}
    tail: set[str] = set()
    for k in graph.nodes:  # topological order: producers first
        if k.id in on_cpu:
            continue
        producers = [graph.tensors[t].producer for t in k.inputs]
        if producers and all(p is not None and (p in on_cpu or p in tail) for p in producers):
            tail.add(k.id)
    return tail


class HetpartBackendRep(BackendRep):
    """A compiled model and its open :class:`~hetpart.runtime.Session`.

    ``run(inputs)`` takes the model's real inputs (initializers excluded) as a list in
    graph order, or a dict by name, and returns a list in the model's output order.
    """

    def __init__(self, model: onnx.ModelProto, graph, compiled, session):
        self.model = model
        self.graph = graph
        self.compiled = compiled
        self.session = session
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.output_names = [o.name for o in model.graph.output]

    def run(self, inputs: Any, **kwargs: Any) -> list[np.ndarray]:
        feeds = self._feeds(inputs)
        outputs = self.session.run(feeds)
        return self._in_model_order(outputs)

    def _feeds(self, inputs) -> dict[str, np.ndarray]:
        if isinstance(inputs, dict):
            return {k: np.asarray(v) for k, v in inputs.items()}
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) != len(self.input_names):
            raise RuntimeFailure(f"the model takes {len(self.input_names)} input(s) {self.input_names}, "
                                 f"got {len(inputs)}")
        return {name: np.asarray(x) for name, x in zip(self.input_names, inputs)}

    def _in_model_order(self, outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Session outputs (keyed by the model's names, or by the compiled module's in
        the model's order) -> a list in the model's output order."""
        if all(name in outputs for name in self.output_names):
            return [outputs[name] for name in self.output_names]
        values = list(outputs.values())
        if len(values) != len(self.output_names):
            raise InternalError(f"the compiled model returned {len(values)} output(s), the ONNX model "
                                 f"declares {len(self.output_names)} ({self.output_names})")
        return values

    def close(self) -> None:
        self.session.close()


class HetpartBackend(Backend):
    """``prepare`` / ``run_model`` / ``run_node`` / ``supports_device`` for hetpart."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return True  # an incompatible model raises a typed error naming the op instead

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", *, simulate: bool | None = None,
                shapes: dict[str, list[int]] | None = None, **kwargs: Any) -> HetpartBackendRep:
        """Import, plan (every kernel on ``device``), compile and open a session.

        ``simulate`` (CUDA only): None compiles real CUDA partitions when a GPU is
        present and simulates them on the CPU otherwise.  ``shapes`` fixes symbolic
        input dims.  Other keyword arguments (the onnx test runner's ``rtol``...) are
        ignored.
        """
        from . import compile as hp_compile
        from . import load
        from .runtime import Session
        from .targets import cuda_available

        target = _device(device)
        if simulate is None:
            simulate = target == "cuda" and not cuda_available()
        graph = load(model, shapes=shapes)
        plan = forced_plan(graph, target)
        compiled = hp_compile(plan, graph, simulate=simulate, progress=False)
        return HetpartBackendRep(model, graph, compiled, Session(compiled))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        rep = cls.prepare(model, device, **kwargs)
        try:
            return rep.run(inputs)
        finally:
            rep.close()

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple] | None = None, **kwargs: Any):
        """Run one node: wrapped in a model whose inputs are typed from ``inputs``.

        ``outputs_info`` (``(numpy dtype, shape)`` per output, as the base class
        defines) types the outputs; without it they are left for shape inference.
        """
        super().run_node(node, inputs, device=device, outputs_info=outputs_info)
        arrays = [np.asarray(x) for x in inputs]
        names = [n for n in node.input if n]
        graph_inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype),
                                                           list(a.shape)) for n, a in zip(names, arrays)]
        if outputs_info:
            graph_outputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)),
                                                                list(shape))
                             for n, (dt, shape) in zip(node.output, outputs_info)]
        else:
            graph_outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n]
        model = onnx.helper.make_model(onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs))
        return cls.run_model(model, arrays, device=device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """CPU always; CUDA always too (real with a GPU, simulated on the CPU without one)."""
        try:
            _device(device)
        except TargetError:
            return False
        return True


prepare = HetpartBackend.prepare
run_model = HetpartBackend.run_model
run_node = HetpartBackend.run_node
supports_device = HetpartBackend.supports_device
