"""A small helper that accumulates ONNX nodes and initializers for the model zoo.

Every zoo model is written against :class:`GraphBuilder`, so each model module reads
like the architecture it builds (``b.conv`` / ``b.bn`` / ``b.relu`` ...) instead of
like protobuf plumbing.

Conventions the builder enforces, so all zoo models look alike:

* Node names are the dotted module paths a PyTorch export would show
  (``layer1.0.conv1``); a node's (first) output tensor carries the same name.
* Learned weights are float32 initializers named like a PyTorch ``state_dict``
  (``layer1.0.conv1.weight``), drawn from the builder's seeded generator, so the
  same seed always gives byte-identical models.
* Small constants (shapes, axes, thresholds) are initializers too, shared by name.
* Opset 17 of the default domain and IR version 8, which every consumer we care
  about (TVM's Relax frontend, ``onnx.reference``, onnxruntime) reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

OPSET = 17
IR_VERSION = 8
# Metadata key prefix recording the exclusive upper bound of an index input.
INPUT_LIMIT_PREFIX = "hetpart.input_limit."


class GraphBuilder:
    """Accumulates one ONNX graph; ``finish()`` turns it into a ModelProto."""

    def __init__(self, name: str, seed: int = 0):
        self.name = name
        self.rng = np.random.default_rng(seed)
        # Initializers go straight into the final ModelProto: copying a graph
        # (as make_graph/make_model do) would double the memory of big tables.
        self._model = onnx.ModelProto()
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._node_names: set[str] = set()
        self._tensor_names: set[str] = set()
        self._consts: dict[str, np.ndarray] = {}
        self._props: dict[str, str] = {}

    # --- graph inputs and tensors ----------------------------------------------------
    def input(
        self, name: str, shape: Sequence[int], dtype=np.float32, index_limit: int | None = None
    ) -> str:
        """Declare a graph input with a static shape.

        ``index_limit`` marks an integer input as indices in ``[0, index_limit)``
        (token ids, table rows); it is recorded in the model's metadata
        (``hetpart.input_limit.<name>``) so feeds can be generated in range.
        """
        self._claim_tensor(name)
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        if index_limit is not None:
            self._props[f"{INPUT_LIMIT_PREFIX}{name}"] = str(index_limit)
        return name

    def weight(self, name: str, shape: Sequence[int], std: float, mean: float = 0.0) -> str:
        """A float32 initializer drawn from N(mean, std^2).

        Drawn directly in float32 and scaled in place, so a multi-GB model costs about
        its own size (plus two passing copies of the tensor being stored).
        """
        data = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        data *= np.float32(std)
        if mean:
            data += np.float32(mean)
        return self._add_initializer(name, data)

    def uniform(self, name: str, shape: Sequence[int], low: float, high: float) -> str:
        """A float32 initializer drawn from U(low, high)."""
        data = self.rng.random(tuple(shape), dtype=np.float32)
        data *= np.float32(high - low)
        data += np.float32(low)
        return self._add_initializer(name, data)

    def const(self, name: str, value) -> str:
        """A constant initializer (shape, axes, threshold ...), shared by name.

        Python ints become int64 and floats float32, the types ONNX ops expect.
        Asking twice for the same name with the same value returns the same tensor.
        """
        arr = np.asarray(value)
        if arr.dtype.kind == "i":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        if name in self._consts:
            if not np.array_equal(self._consts[name], arr):
                raise ValueError(f"constant {name!r} redefined with a different value")
            return name
        self._consts[name] = arr
        return self._add_initializer(name, arr)

    # --- generic node ----------------------------------------------------------------
    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        name: str,
        num_outputs: int = 1,
        **attrs,
    ) -> str | list[str]:
        """Add one node; returns its output name (or names when num_outputs > 1).

        The first output is named like the node; further outputs get ``:1``, ``:2``...
        """
        if name in self._node_names:
            raise ValueError(f"duplicate node name {name!r}")
        self._node_names.add(name)
        outputs = [name] + [f"{name}:{i}" for i in range(1, num_outputs)]
        for out in outputs:
            self._claim_tensor(out)
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))
        return outputs[0] if num_outputs == 1 else outputs

    # --- layers ----------------------------------------------------------------------
    def conv(
        self,
        x: str,
        name: str,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        bias: bool = False,
        gain: float = 2.0,
    ) -> str:
        """Conv2d with 'same'-style padding ``kernel // 2``.

        Weights are He-normal (``gain=2`` suits a following ReLU) so activations keep
        their scale through deep stacks.
        """
        std = math.sqrt(gain / (in_ch * kernel * kernel))
        inputs = [x, self.weight(f"{name}.weight", (out_ch, in_ch, kernel, kernel), std)]
        if bias:
            inputs.append(self.weight(f"{name}.bias", (out_ch,), 0.01))
        pad = kernel // 2
        return self.op(
            "Conv", inputs, name,
            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
        )

    def bn(self, x: str, name: str, channels: int, gamma: float = 1.0) -> str:
        """Inference-mode BatchNormalization with plausible running statistics.

        ``gamma`` scales the learned scale; residual branches pass < 1 so the sum of
        many blocks stays in range (the idea behind zero-init-residual training).
        """
        scale = self.weight(f"{name}.weight", (channels,), 0.1 * gamma, mean=gamma)
        shift = self.weight(f"{name}.bias", (channels,), 0.1)
        mean = self.weight(f"{name}.running_mean", (channels,), 0.1)
        var = self.uniform(f"{name}.running_var", (channels,), 0.5, 1.5)
        return self.op("BatchNormalization", [x, scale, shift, mean, var], name, epsilon=1e-5)

    def relu(self, x: str, name: str) -> str:
        return self.op("Relu", [x], name)

    def linear(self, x: str, name: str, in_f: int, out_f: int, gain: float = 2.0) -> str:
        """A 2-D fully-connected layer as ``Gemm(transB=1)``, as PyTorch exports nn.Linear.

        He-scaled by default (MLP layers feed a ReLU); pass ``gain=1`` for logits.
        """
        w = self.weight(f"{name}.weight", (out_f, in_f), math.sqrt(gain / in_f))
        b = self.weight(f"{name}.bias", (out_f,), 0.01)
        return self.op("Gemm", [x, w, b], name, transB=1)

    def dense(self, x: str, name: str, in_f: int, out_f: int, gain: float = 1.0) -> str:
        """An N-D fully-connected layer as ``MatMul`` + ``Add`` (how transformers export).

        Xavier-like by default (transformer projections feed no ReLU).
        """
        w = self.weight(f"{name}.weight", (in_f, out_f), math.sqrt(gain / in_f))
        b = self.weight(f"{name}.bias", (out_f,), 0.01)
        y = self.op("MatMul", [x, w], f"{name}.matmul")
        return self.op("Add", [y, b], name)

    def layernorm(self, x: str, name: str, dim: int, eps: float = 1e-12) -> str:
        """LayerNormalization over the last axis (the opset-17 op)."""
        scale = self.weight(f"{name}.weight", (dim,), 0.05, mean=1.0)
        shift = self.weight(f"{name}.bias", (dim,), 0.02)
        return self.op("LayerNormalization", [x, scale, shift], name, axis=-1, epsilon=eps)

    def gelu(self, x: str, name: str) -> str:
        """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, as opset-17 exports spell it."""
        scaled = self.op("Div", [x, self.const("const.sqrt2", math.sqrt(2.0))], f"{name}.div")
        erf = self.op("Erf", [scaled], f"{name}.erf")
        one_plus = self.op("Add", [erf, self.const("const.one", 1.0)], f"{name}.add")
        xy = self.op("Mul", [x, one_plus], f"{name}.mul")
        return self.op("Mul", [xy, self.const("const.half", 0.5)], name)

    def reshape(self, x: str, name: str, shape: Sequence[int]) -> str:
        shape_name = "shape." + "x".join(str(int(d)) for d in shape).replace("-", "m")
        return self.op("Reshape", [x, self.const(shape_name, list(shape))], name)

    def transpose(self, x: str, name: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", [x], name, perm=list(perm))

    # --- finishing -------------------------------------------------------------------
    def finish(self, outputs: dict[str, str]) -> onnx.ModelProto:
        """Build the ModelProto; ``outputs`` maps graph output names to tensors.

        Output types come from shape inference.  Each tensor is renamed to its output
        name (``{"logits": "classifier"}``) so the graph's interface reads well.
        """
        if self._model.graph.node:
            raise ValueError("finish() called twice")
        for public, tensor in outputs.items():
            self._rename(tensor, public)
        types = self._infer_output_types(list(outputs))
        model = self._model
        model.ir_version = IR_VERSION
        model.producer_name = "hetpart.models"
        model.opset_import.append(helper.make_opsetid("", OPSET))
        graph = model.graph
        graph.name = self.name
        graph.node.extend(self.nodes)
        graph.input.extend(self.inputs)
        graph.output.extend(types[o] for o in outputs)
        for key, value in self._props.items():
            model.metadata_props.add(key=key, value=value)
        return model

    def _infer_output_types(self, outputs: Sequence[str]) -> dict[str, onnx.ValueInfoProto]:
        # Weights are stood in for by typed graph inputs: inference needs their shapes,
        # never their values, and must not serialize gigabytes of them (nor hit
        # protobuf's 2 GB limit).  Constants keep their values: Reshape needs them.
        consts, described = [], []
        for t in self._model.graph.initializer:
            if t.name in self._consts:
                consts.append(t)
            else:
                described.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        probe = helper.make_graph(
            self.nodes, self.name, self.inputs + described, [], initializer=consts
        )
        probe_model = helper.make_model(
            probe, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
        )
        inferred = onnx.shape_inference.infer_shapes(probe_model, strict_mode=True)
        types = {vi.name: vi for vi in inferred.graph.value_info}
        found = {}
        for o in outputs:
            if o not in types:
                raise ValueError(f"shape inference gave no type for output {o!r}")
            found[o] = types[o]
        return found

    # --- internals -------------------------------------------------------------------
    def _rename(self, tensor: str, new: str) -> None:
        if tensor not in self._tensor_names:
            raise ValueError(f"unknown tensor {tensor!r}")
        if tensor == new:
            return
        self._claim_tensor(new)
        self._tensor_names.discard(tensor)
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, n in enumerate(names):
                    if n == tensor:
                        names[i] = new

    def _claim_tensor(self, name: str) -> None:
        if name in self._tensor_names:
            raise ValueError(f"duplicate tensor name {name!r}")
        self._tensor_names.add(name)

    def _add_initializer(self, name: str, data: np.ndarray) -> str:
        self._claim_tensor(name)
        tensor = self._model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(data.dtype)
        tensor.dims.extend(data.shape)
        # ONNX raw_data is little-endian; a no-op (no copy) on little-endian hosts.
        tensor.raw_data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()
        return name
