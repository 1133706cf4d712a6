"""The op graph: the unit the cost model and the partitioner work on.

Each node is one *fused kernel* exactly as TVM will compile it (e.g. conv2d + bias +
relu is one node); each edge carries the tensors one kernel hands to another.  The
graph is a :class:`networkx.DiGraph` underneath, keyed by kernel id, behind a small
typed API so callers never depend on networkx attribute names.

Invariants (checked by :meth:`OpGraph.validate`):
  * the kernel graph is acyclic, and ``topological_order()`` is the order of the
    bindings in the Relax ``main`` function;
  * every tensor has exactly one producer: a kernel, or the model input it is;
  * every edge ``u -> v`` lists at least one tensor produced by ``u`` and read by ``v``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import networkx as nx
import numpy as np

from ..contracts.shapes import static_shape
from ..errors import InternalError


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a TVM/numpy dtype string ("float32", "int64", "bool")."""
    if dtype == "bool":
        return 1
    return np.dtype(dtype).itemsize


@dataclass(frozen=True)
class Tensor:
    """A value flowing between kernels, or into or out of the model.

    ``shape`` entries are ints, or strings for data-dependent dims (e.g. the number
    of boxes NonMaxSuppression keeps); ``nbytes`` then counts those dims as 1 and
    ``static`` is False.
    """

    name: str
    shape: tuple
    dtype: str
    producer: str | None  # kernel id; None for a model input
    consumers: tuple[str, ...] = ()
    is_input: bool = False
    is_output: bool = False

    @property
    def static(self) -> bool:
        """Every dim an integer (:func:`hetpart.contracts.shapes.static_shape`; a string dim is symbolic)."""
        return static_shape(self.shape)

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d if isinstance(d, int) else 1
        return n * dtype_bytes(self.dtype)


@dataclass(frozen=True)
class Kernel:
    """One fused kernel of the model.

    ``id`` is stable for a given model and shapes (``node_<binding index>``);
    ``func`` names the PrimFunc in :attr:`OpGraph.module`; ``ops`` are the operators
    fused into it, anchor first; ``signature`` is a structural hash of the kernel, so
    identical kernels (same computation and shapes) share it, across models too.
    """

    id: str
    func: str
    ops: tuple[str, ...]
    op_class: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    flops: int
    bytes_read: int
    bytes_written: int
    param_bytes: int
    signature: str
    index: int = 0

    @property
    def name(self) -> str:
        return self.func


@dataclass
class IndexLimits:
    """The valid values of one model input used as indices: ``low <= v < high`` element
    by element (arrays broadcastable to its shape); ``uses`` says what it indexes."""

    low: np.ndarray
    high: np.ndarray
    uses: list[str]

    def __post_init__(self):
        self._floor = int(self.low.max()) if self.low.size else 0  # every element's range holds this one
        self._ceiling = int(self.high.min()) if self.high.size else 0

    def violation(self, values: np.ndarray) -> str | None:
        """None if every element of ``values`` is in range, else what the first bad one is."""
        if values.size == 0:
            return None
        if values.min() >= self._floor and values.max() < self._ceiling:  # the common case: two reductions
            return None
        bad = (values < self.low) | (values >= self.high)
        if not bad.any():
            return None
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        low = np.broadcast_to(self.low, values.shape)[at]
        high = np.broadcast_to(self.high, values.shape)[at]
        return (f"holds {int(values[at])} at {list(at)}, out of range for {' and '.join(self.uses)}: "
                f"valid values there are {int(low)}..{int(high) - 1}")

    def to_json(self) -> dict:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "uses": list(self.uses)}

    @classmethod
    def from_json(cls, d: dict) -> "IndexLimits":
        return cls(np.asarray(d["low"], dtype=np.int64), np.asarray(d["high"], dtype=np.int64),
                   [str(u) for u in d.get("uses", [])])



@dataclass
class OpGraph:
    """A model as a DAG of fused kernels, with the TVM module that defines them.

    ``module`` is the fused Relax IRModule (see :mod:`hetpart.importer.fusion`);
    ``relax_module`` the unfused import, kept so stages that need TVM's
    original program (e.g. a single-target reference build) have it.
    ``output_names[i]`` is the name the ONNX model gives output ``i`` (``outputs[i]``
    is the tensor that holds it: named so too, unless it is a model input or holds an
    earlier output, or the name is a model input's; an internal tensor Relax gave the
    name moves to a fresh one); empty for a graph not imported from ONNX, whose outputs
    are called by their tensor names.
    ``relax_names``: tensor name -> the Relax var name it had, for each tensor the
    importer renamed (a model output named as the model names it, or an internal tensor
    whose name an output took): a plan made before names its tensors so
    (:meth:`hetpart.partitioner.Plan.load` reads it under the graph's names).
    ``index_limits``: the valid values of each model input used as indices.
    ``conv_block``: the channel block its convolutions were imported in (``NCHW{c}c``,
    :mod:`hetpart.importer.conv_layout`; all-CPU builds only), None for NCHW.
    """

    name: str
    kernels: dict[str, Kernel]
    tensors: dict[str, Tensor]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    module: object = field(repr=False, default=None)
    relax_module: object = field(repr=False, default=None)
    output_names: tuple[str, ...] = ()
    relax_names: dict[str, str] = field(default_factory=dict, repr=False)
    # model inputs used as indices -> their valid values (see importer.index_guard)
    index_limits: dict[str, IndexLimits] = field(default_factory=dict, repr=False)
    conv_block: int | None = None
    _g: nx.DiGraph = field(init=False, repr=False)

    @property
    def model_output_names(self) -> tuple[str, ...]:
        """The model's name of each of ``outputs``, in order (tensor names where the
        model gave none)."""
        return tuple(self.output_names) or tuple(self.outputs)

    def __post_init__(self):
        g = nx.DiGraph()
        for k in sorted(self.kernels.values(), key=lambda k: k.index):
            g.add_node(k.id)
        for t in self.tensors.values():
            if t.producer is None:
                continue
            for c in t.consumers:
                if g.has_edge(t.producer, c):
                    g.edges[t.producer, c]["tensors"].append(t.name)
                else:
                    g.add_edge(t.producer, c, tensors=[t.name])
        self._g = g

    # --- the typed API -------------------------------------------------------
    @property
    def nodes(self) -> list[Kernel]:
        """Kernels in topological (binding) order."""
        return [self.kernels[n] for n in self.topological_order()]

    def topological_order(self) -> list[str]:
        return sorted(self.kernels, key=lambda i: self.kernels[i].index)

    @property
    def nx(self) -> nx.DiGraph:
        """The underlying networkx graph (nodes: kernel ids; edge attr ``tensors``)."""
        return self._g

    def edges(self) -> Iterator[tuple[str, str, list[str]]]:
        """``(producer, consumer, tensor names)`` for every kernel-to-kernel edge."""
        for u, v, d in self._g.edges(data=True):
            yield u, v, list(d["tensors"])

    def edge_bytes(self, u: str, v: str) -> int:
        return sum(self.tensors[t].nbytes for t in self._g.edges[u, v]["tensors"])

    def predecessors(self, kid: str) -> list[str]:
        return list(self._g.predecessors(kid))

    def successors(self, kid: str) -> list[str]:
        return list(self._g.successors(kid))

    def kernel(self, kid: str) -> Kernel:
        try:
            return self.kernels[kid]
        except KeyError:
            raise KeyError(f"no kernel '{kid}' in graph '{self.name}'") from None

    def find(self, name_or_id: str) -> Kernel | None:
        """The kernel with this id or PrimFunc name, or None."""
        if name_or_id in self.kernels:
            return self.kernels[name_or_id]
        for k in self.kernels.values():
            if k.func == name_or_id:
                return k
        return None

    @property
    def total_flops(self) -> int:
        return sum(k.flops for k in self.kernels.values())

    @property
    def param_bytes(self) -> int:
        return sum(k.param_bytes for k in self.kernels.values())

    def __len__(self) -> int:
        return len(self.kernels)

    # --- checks and reports ---------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`InternalError` if an invariant of the module docstring fails."""
        if not nx.is_directed_acyclic_graph(self._g):
            raise InternalError(f"op graph of '{self.name}' has a cycle")
        produced = Counter(o for k in self.kernels.values() for o in k.outputs)
        for t in self.tensors.values():
            count = produced[t.name] + (1 if t.is_input else 0)
            if count != 1:
                raise InternalError(f"tensor '{t.name}' has {count} producers, expected 1")
        order = {k: i for i, k in enumerate(self.topological_order())}
        for u, v, ts in self.edges():
            if order[u] >= order[v] or not ts:
                raise InternalError(f"edge {u}->{v} breaks the binding order")
        if self.output_names and len(self.output_names) != len(self.outputs):
            raise InternalError(f"op graph of '{self.name}' names {len(self.output_names)} outputs "
                                f"but has {len(self.outputs)}")

    def summary(self, top: int = 5) -> str:
        """A human-readable report: kernels by op class, FLOPs, parameters, largest tensors."""
        from .summary import render_summary

        return render_summary(self, top=top)
