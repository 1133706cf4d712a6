"""Fold the parts of an ONNX graph that static shapes and constants already decide.

In: a checked ``ModelProto`` whose inputs have static shapes.  Out: the same model
with every such part replaced by initializers, or the very model given when nothing
folds (every zoo model), so a model without shape arithmetic costs one scan.

Exporters spell shape arithmetic as graph nodes: torch.onnx turns
``input_ids.size()``, ``position_ids[:, :seq_len]``, ``mask[:, None, None, :]
.expand(bsz, 1, tgt, src)`` and ``torch.arange(seq_len)`` into ``Shape`` ->
``Gather`` -> ``Unsqueeze`` -> ``Concat`` -> ``ConstantOfShape``/``Mul``/``Equal``/
``Where`` -> ``Expand``/``Slice``/``Range`` chains.  With the inputs' shapes fixed
each of them is one constant, but TVM 0.27's ONNX frontend follows them symbolically
and fails on several (e.g. ``arange(seq).unsqueeze(0).expand(input_shape)`` at batch
1; a ``Range`` whose length comes from ``Size`` becomes a symbolic dim the op graph
cannot take).  Folding them first, in ONNX, gives TVM only constants.

Removes:
  * ``Shape``/``Size`` of any value whose shape is static (known from the graph
    inputs, or from ONNX shape inference with data propagation);
  * every node whose inputs are all constants (initializers, ``Constant`` nodes,
    folded values) and whose outputs together hold at most ``max_bytes`` (1 MiB),
    evaluated with :class:`onnx.reference.ReferenceEvaluator`, the ONNX reference
    implementation (so the folded model computes what the original one did);
  * then every node, ``Constant`` node and initializer nothing live reads any more.

Keeps:
  * weights: an original tensor (initializer or ``Constant``) of more than
    :data:`SCALAR_LIKE` elements is read only when it is shape-like -- integers of
    16 bits or more, or bool, up to ``max_bytes`` (position and token-type
    buffers).  Any other (float, 8-bit) is a weight: never read, copied or folded,
    and a node that reads one stays for TVM (``Gather`` of an embedding table by
    constant indices, ``Expand`` of a weight, ``DequantizeLinear`` of int8
    weights).  Scalar-like constants (``1.0``, ``finfo.min``) are read;
  * nodes whose result would be large (more than ``max_bytes``: a constant mask
    expanded to ``[batch, heads, seq, seq]``): TVM folds or computes them itself;
  * nodes producing graph outputs, nodes with subgraphs (``If``/``Loop``), random
    and non-``ai.onnx`` operators;
  * the names of folded values (each becomes an initializer of the same name) and
    the order of the remaining nodes.

Why not a library: onnxscript's ``optimizer.fold_constants`` (0.7.2, with
onnx_ir 1.1) was tried first on the transformers-like test model.  It leaves
``ConstantOfShape`` unfolded on purpose (so torch's ``expand`` pattern,
``Where(Equal(size, ConstantOfShape(..) * -1), ..)``, and its ``Expand`` stay unless
forced through ``should_fold``), leaves ``Constant(value_ints=...)`` nodes that TVM
0.27's frontend rejects ("no value in Constant"), round-trips every model through
onnx_ir (2.0 s on the 440 MB zoo BERT-base even with nothing to fold, against 2 ms
for this pass), takes 0.8 s to import, needs onnx>=1.17 and would add onnxscript,
onnx_ir, sympy and mpmath (7.8 MB of wheels) to every machine.  Evaluating nodes
is left to the ONNX reference evaluator; this module only decides what to fold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

MAX_BYTES = 1 << 20
"""Largest total size of a folded node's outputs."""

SCALAR_LIKE = 64
"""Original non-integer tensors of at most this many elements are read (constants
such as ``1.0`` or ``finfo.min``); larger ones are weights and never read."""

# Integer and bool tensors are shape-like: positions, token types, sizes, masks.
_SHAPE_LIKE = {
    onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16,
    onnx.TensorProto.UINT64, onnx.TensorProto.UINT32, onnx.TensorProto.UINT16,
    onnx.TensorProto.BOOL,
}
_RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class FoldResult:
    """What :func:`fold_static_shapes` did: the model (the one given when
    ``folded`` is empty), the outputs it folded, and the nodes it removed."""

    model: onnx.ModelProto
    folded: list[str] = field(default_factory=list)
    removed_nodes: int = 0


def fold_static_shapes(model: onnx.ModelProto, *, inplace: bool = False,
                       max_bytes: int = MAX_BYTES) -> FoldResult:
    """Fold what static shapes and constants decide (see the module docstring).

    ``inplace`` edits ``model`` itself; otherwise a model that folds is copied first
    (the copy includes its weights: pass ``inplace=True`` for a model you own).

    Repeats until a round folds nothing: ONNX shape inference cannot follow every
    computed shape (its data propagation skips ``Mod``, ``Floor``, ``Where`` ...), so
    a ``Reshape`` to ``H // ws`` windows (Swin) has an unknown output shape until its
    shape input is folded, and the ``Shape`` -> ``Concat`` -> ``Pad`` chain behind it
    folds only in the next round.  Each round removes at least one node, so this ends.
    """
    result = FoldResult(model)
    while True:
        step = _fold_once(result.model, inplace=inplace or bool(result.folded), max_bytes=max_bytes)
        if not step.folded:
            return result
        result = FoldResult(step.model, result.folded + step.folded,
                            result.removed_nodes + step.removed_nodes)


def _fold_once(model: onnx.ModelProto, *, inplace: bool, max_bytes: int) -> FoldResult:
    """One round: fold with the shapes one run of ONNX shape inference knows."""
    graph = model.graph
    sources = _Sources(graph, max_bytes)
    if not any(_may_fold(n, sources) for n in graph.node):
        return FoldResult(model)
    shapes = _static_shapes(model)
    values: dict[str, np.ndarray] = {}  # folded outputs, in node order
    folded_nodes: set[int] = set()
    outputs = {o.name for o in graph.output}
    opset = _default_opset(model)
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            continue  # a source: read on demand by _Sources
        if not _foldable_kind(node) or any(o in outputs for o in node.output):
            continue
        result = _fold(node, values, sources, shapes, opset, max_bytes)
        if result is not None:
            values.update((name, value) for name, value in zip(node.output, result) if name)
            folded_nodes.add(index)
    if not folded_nodes:
        return FoldResult(model)
    folded = list(values)
    if not inplace:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    removed = _rewrite(model.graph, folded_nodes, values)
    log.debug("folded %d node(s), removed %d: %s", len(folded_nodes), removed, folded)
    return FoldResult(model, folded, removed)


class _Sources:
    """Original constants (initializers and ``Constant`` nodes), read lazily: a
    weight is never converted to numpy."""

    def __init__(self, graph: onnx.GraphProto, max_bytes: int):
        # Initializers also listed as graph inputs (IR < 4 exports) count as constants:
        # hetpart feeds only the other inputs, and TVM binds these to their values.
        self.tensors = {t.name: t for t in graph.initializer}
        self.max_bytes = max_bytes
        self.constants = {n.output[0]: n for n in graph.node
                          if n.op_type == "Constant" and n.domain in _DEFAULT_DOMAINS and n.output}
        self.cache: dict[str, np.ndarray | None] = {}

    def readable(self, name: str) -> bool:
        if name in self.tensors:
            return self._readable(self.tensors[name].data_type, self.tensors[name].dims)
        node = self.constants.get(name)
        if node is None:
            return False
        attr = node.attribute[0] if len(node.attribute) == 1 else None
        if attr is None or attr.name == "sparse_value":
            return False
        if attr.name == "value":
            return self._readable(attr.t.data_type, attr.t.dims)
        return attr.name in ("value_float", "value_floats", "value_int", "value_ints")

    def _readable(self, data_type: int, dims) -> bool:
        """Shape-like tensors up to ``max_bytes``, others only when scalar-like."""
        if data_type in _SHAPE_LIKE:
            return _bytes(data_type, list(dims)) <= self.max_bytes
        return int(np.prod(list(dims), dtype=np.int64)) <= SCALAR_LIKE

    def value(self, name: str) -> np.ndarray | None:
        if name not in self.cache:
            try:
                self.cache[name] = self._load(name) if self.readable(name) else None
            except Exception:  # noqa: BLE001 - e.g. external data not loaded: not a constant here
                self.cache[name] = None
        return self.cache[name]

    def _load(self, name: str) -> np.ndarray | None:
        if name in self.tensors:
            return numpy_helper.to_array(self.tensors[name])
        attr = self.constants[name].attribute[0]
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        return {
            "value_float": lambda: np.array(attr.f, np.float32),
            "value_floats": lambda: np.array(list(attr.floats), np.float32),
            "value_int": lambda: np.array(attr.i, np.int64),
            "value_ints": lambda: np.array(list(attr.ints), np.int64),
        }[attr.name]()


def _may_fold(node: onnx.NodeProto, sources: _Sources) -> bool:
    """Cheap pre-check: could ``node`` fold on original constants alone?"""
    if node.op_type == "Constant" or not _foldable_kind(node):
        return False
    if node.op_type in ("Shape", "Size"):
        return True
    inputs = [i for i in node.input if i]
    return all(sources.readable(i) for i in inputs)


def _foldable_kind(node: onnx.NodeProto) -> bool:
    return (node.domain in _DEFAULT_DOMAINS and node.op_type not in _RANDOM
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute))


def _fold(node, values, sources, shapes, opset, max_bytes) -> list[np.ndarray] | None:
    """The outputs of ``node`` as arrays, or None when it does not fold."""
    def known(name):
        return values[name] if name in values else sources.value(name)

    if node.op_type in ("Shape", "Size"):
        data = node.input[0]
        shape = list(values[data].shape) if data in values else shapes.get(data, (0, None))[1]
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)]
        return [np.array(_shape_slice(shape, node), dtype=np.int64)]
    inputs = [known(i) if i else None for i in node.input]
    if any(v is None for v, name in zip(inputs, node.input) if name):
        return None
    if _output_bytes(node, inputs, shapes, opset) > max_bytes:
        return None
    try:
        result = _evaluate(node, inputs, opset)
    except Exception as exc:  # noqa: BLE001 - anything the reference cannot run stays for TVM
        log.debug("not folding %s (%s): %s", node.name or node.output[0], node.op_type, exc)
        return None
    if len(result) != len(node.output) or not all(isinstance(r, np.ndarray) for r in result):
        return None
    if sum(r.nbytes for r in result) > max_bytes:
        return None
    try:  # it must become an initializer (e.g. no exotic dtype the helper lacks)
        for r in result:
            numpy_helper.from_array(r)
    except Exception:  # noqa: BLE001
        return None
    return result


def _shape_slice(shape: list[int], node: onnx.NodeProto) -> list[int]:
    """``Shape``'s optional ``start``/``end`` (opset 15), clamped as the spec says."""
    attrs = {a.name: a.i for a in node.attribute}
    rank = len(shape)

    def clamp(i):
        i = i + rank if i < 0 else i
        return min(max(i, 0), rank)

    return shape[clamp(attrs.get("start", 0)):clamp(attrs.get("end", rank))]


def _output_bytes(node, inputs, shapes, opset) -> float:
    """Size of ``node``'s outputs, known before anything is computed (an ``Expand`` to
    a huge shape is never materialised): from the whole-graph shape inference, else
    from ONNX's inference of this node on its actual input values; ``inf`` when
    neither can tell."""
    names = [name for name in node.output if name]
    if all(name in shapes for name in names):
        return sum(_bytes(*shapes[name]) for name in names)
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        types, data = {}, {}
        for name, value in zip(node.input, inputs):
            if name:
                tensor = numpy_helper.from_array(value, name)
                types[name] = onnx.helper.make_tensor_type_proto(tensor.data_type, list(value.shape))
                data[name] = tensor
        out = onnx.shape_inference.infer_node_outputs(schema, node, types, input_data=data)
    except Exception:  # noqa: BLE001 - an op or version inference does not cover
        return float("inf")
    total = 0
    for name in names:
        tt = out.get(name)
        if tt is None or not tt.tensor_type.HasField("shape"):
            return float("inf")
        dims = tt.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            return float("inf")
        total += _bytes(tt.tensor_type.elem_type, [d.dim_value for d in dims])
    return total


def _bytes(elem_type: int, dims: list[int]) -> int:
    size = onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize if elem_type else 8
    for d in dims:
        size *= d
    return size


def _evaluate(node: onnx.NodeProto, inputs: list, opset: int) -> list:
    """Run one node with the ONNX reference implementation."""
    evaluator, names = _evaluator(_signature(node), opset)
    feeds = {n: v for n, v in zip(names, inputs) if n}
    return [np.asarray(r) if isinstance(r, np.generic) else r for r in evaluator.run(None, feeds)]


def _signature(node: onnx.NodeProto) -> bytes:
    """``node`` with its inputs and outputs renamed, so identical nodes share one
    evaluator (building one costs about a millisecond)."""
    canon = onnx.NodeProto()
    canon.CopyFrom(node)
    canon.name = ""
    canon.doc_string = ""
    for i, name in enumerate(node.input):
        canon.input[i] = f"x{i}" if name else ""
    for i in range(len(node.output)):
        canon.output[i] = f"y{i}"
    return canon.SerializeToString(deterministic=True)


@lru_cache(maxsize=256)
def _evaluator(signature: bytes, opset: int):
    from onnx.reference import ReferenceEvaluator

    node = onnx.NodeProto.FromString(signature)
    return ReferenceEvaluator(node, opsets={"": opset}), list(node.input)


def _default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in _DEFAULT_DOMAINS:
            return op.version
    return onnx.defs.onnx_opset_version()


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, list[int]]]:
    """Element type and static shape of the graph's values: ONNX shape inference
    with data propagation (so ``Reshape`` to a computed shape is known), on the
    skeleton (the weights' shapes, not their bytes)."""
    from .onnx_types import skeleton

    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), data_prop=True)
    except Exception:  # noqa: BLE001 - the strict check in onnx_source reports problems
        inferred = skeleton(model)
    g = inferred.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = (tt.elem_type, [d.dim_value for d in tt.shape.dim])
    for t in g.initializer:
        shapes[t.name] = (t.data_type, list(t.dims))
    return shapes


def _rewrite(graph: onnx.GraphProto, folded: set[int], values: dict[str, np.ndarray]) -> int:
    """Replace folded nodes by initializers and drop what nothing live reads."""
    live = {o.name for o in graph.output}
    keep = []
    for index in range(len(graph.node) - 1, -1, -1):
        node = graph.node[index]
        if index in folded or not any(o in live for o in node.output):
            continue
        keep.append(index)
        live.update(node.input)
        live.update(_subgraph_reads(node))
    keep.reverse()
    removed = len(graph.node) - len(keep)
    nodes = []
    for index in keep:
        copy = onnx.NodeProto()
        copy.CopyFrom(graph.node[index])
        nodes.append(copy)
    del graph.node[:]
    graph.node.extend(nodes)

    inputs = {i.name for i in graph.input}
    for index in range(len(graph.initializer) - 1, -1, -1):
        name = graph.initializer[index].name
        if name not in live and name not in inputs:
            del graph.initializer[index]
    graph.initializer.extend(numpy_helper.from_array(value, name)
                             for name, value in values.items() if name in live)
    constants = set(values)
    value_info = []
    for vi in graph.value_info:
        if vi.name in live and vi.name not in constants:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(vi)
            value_info.append(copy)
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    return removed


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names the subgraphs of ``node`` may read from the outer scope."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for inner in g.node:
                names.update(inner.input)
                names.update(_subgraph_reads(inner))
    return names
