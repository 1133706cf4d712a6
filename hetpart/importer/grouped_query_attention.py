"""Grouped-query attention read from the un-repeated K/V: no repeated cache is materialised.

In: a checked ``ModelProto`` with static shapes and its shape arithmetic folded (after
:mod:`.shape_folding` and the preflight).  Out: the same model where every ``MatMul``
whose right operand is a key/value tensor repeated over query heads is computed per
key/value head; the model itself (the same object) when there is none.

The pattern (transformers' ``repeat_kv``, hetpart's zoo llama models):
``X [*b, kvH, M, N] -> Unsqueeze(axis -3) -> Expand [*b, kvH, rep, M, N] -> Reshape
[*b, kvH*rep, M, N]``, torch.onnx's no-op ``Slice`` nodes for ``x[:, :, None, :, :]``
anywhere in it (step 1, output shape = input shape), then any number of head-wise ops
(``Transpose`` that keeps the leading axes, the key's ``K^T``; ``Mul``/``Div`` by a
one-element tensor, the SDPA export's ``sqrt(scale)`` on ``K^T``), then the right
operand of ``MatMul(A [*b, H, S, K], .)`` with ``H = kvH*rep``, ``rep > 1``.  Head ``h``
of the repeat is ``X[h // rep]`` (the Reshape merges ``[kvH, rep]`` row-major).  So

    A [*b, H, S, K] -> Reshape [*b, kvH, rep*S, K]
    MatMul with head-wise(X) [*b, kvH, K, N] -> [*b, kvH, rep*S, N]
    -> Reshape [*b, H, S, N]   (the original MatMul's output name)

computes the same numbers (each row is the same dot products, in the same order).
Where the head-wise chain is a ``K^T`` (one ``Transpose`` of the last two axes, scalar
``Mul``/``Div`` besides) and ``rep*S < K`` (a decode step: 8 query rows per group against
a head dim of 64), the product is computed transposed instead, ``K [*b, kvH, N, K] @
A_g^T -> [*b, kvH, N, rep*S]``, then transposed back: the copy is of the ``rep*S x N``
scores, not of the ``N x K`` cache (on 2 cores, 2048 slots: 127 against 312 us).
Both reshapes are row-major regroupings, no data moves; the scale, mask and softmax
between the scores and context MatMuls stay as they are, on ``[*b, H, S, T]``.  The
repeat nodes are removed when nothing else reads them.  Not rewritten: a repeat whose
heads are not ``kvH x rep`` in that order (``Unsqueeze`` at another axis, ``Tile``:
head ``h`` reads ``X[h % kvH]``), any non-static shape, a batch that broadcasts in
the MatMul, a head-wise op with a larger operand.

Why in ONNX and not in Relax: the pattern is a handful of named nodes whose
attributes and constant inputs (axes, shapes) the folded ONNX graph holds literally,
while TVM's import turns the same repeat into ``expand_dims``/``broadcast_to``/
``reshape`` calls with ``ShapeExpr`` operands and may fold or reorder them; the
rewritten model is still ONNX, so it is checked against ONNX Runtime directly (the
tests run the rewritten graph itself there), and every later stage -- Relax import,
fusion, both targets' kernels, the cost model -- sees one grouped MatMul without
knowing this pass exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

_HEADWISE = ("Transpose", "Mul", "Div")


@dataclass(frozen=True)
class _Repeat:
    """A matched repeat: ``source`` [*b, kvH, M, N] whose heads are repeated ``rep`` times."""

    source: str
    kv_heads: int
    rep: int
    nodes: tuple[int, ...]  # the repeat's node indices (Unsqueeze, Expand, Reshape, no-op Slices)


@dataclass(frozen=True)
class _Grouped:
    """A MatMul to rewrite: ``left`` [*b, H, S, K] times ``chain`` applied to the repeat."""

    matmul: int
    left_shape: tuple[int, ...]
    right_shape: tuple[int, ...]
    repeat: _Repeat
    chain: tuple[int, ...]  # head-wise node indices, from the repeat towards the MatMul
    swap: int | None = None  # the chain's one Transpose, where it swaps the last two axes and
    #                          every other chain node is a one-element Mul/Div (the key's K^T)


class _Graph:
    """The lookups the matcher needs: producers, consumers, static shapes, constants."""

    def __init__(self, model: onnx.ModelProto):
        from .onnx_types import value_types

        g = model.graph
        self.nodes = list(g.node)
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.outputs = {o.name for o in g.output}
        self.shapes = {name: _static_shape(t) for name, t in value_types(model).items()}
        self._init = {t.name: t for t in g.initializer}
        self._inputs = {i.name for i in g.input}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def node_of(self, name: str, op: str) -> onnx.NodeProto | None:
        i = self.producer.get(name)
        n = self.nodes[i] if i is not None else None
        return n if n is not None and n.op_type == op and n.domain in ("", "ai.onnx") else None

    def ints(self, name: str) -> list[int] | None:
        """A small integer constant (initializer or ``Constant`` node) as a list, else None."""
        if name in self._init and name not in self._inputs:
            t = self._init[name]
            if np.prod(t.dims, dtype=np.int64) > 64:
                return None
            return [int(v) for v in numpy_helper.to_array(t).reshape(-1)]
        node = self.node_of(name, "Constant")
        if node is not None and len(node.attribute) == 1:
            a = node.attribute[0]
            if a.name == "value" and np.prod(a.t.dims, dtype=np.int64) <= 64:
                return [int(v) for v in numpy_helper.to_array(a.t).reshape(-1)]
            if a.name in ("value_int", "value_ints"):
                return [a.i] if a.name == "value_int" else list(a.ints)
        return None


def _static_shape(t: onnx.TypeProto) -> tuple[int, ...] | None:
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def group_query_attention(model: onnx.ModelProto, *, inplace: bool = False,
                          transposed_scores: bool = True) -> onnx.ModelProto:
    """``model`` with every repeated-K/V MatMul computed per key/value head (module doc).

    ``inplace`` edits ``model`` itself; otherwise a model that changes is copied first.
    ``transposed_scores`` False keeps ``Q_g @ K^T`` even where ``K @ Q_g^T`` moves less
    (for A/B measurements).
    """
    ops = {n.op_type for n in model.graph.node}
    if "Expand" not in ops or "MatMul" not in ops:  # no shape inference for most models
        return model
    graph = _Graph(model)
    found = [m for i, n in enumerate(graph.nodes) if n.op_type == "MatMul" and n.domain in ("", "ai.onnx")
             for m in [_match(graph, i)] if m is not None]
    if not found:
        return model
    out = model
    if not inplace:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    _rewrite(out.graph, graph, found, transposed_scores)
    return out


def _match(graph: _Graph, index: int) -> _Grouped | None:
    """The grouped form of MatMul ``index``, or None where the pattern is not exact."""
    node = graph.nodes[index]
    left, right = node.input[0], node.input[1]
    a, b = graph.shape(left), graph.shape(right)
    if a is None or b is None or len(a) < 3 or len(a) != len(b) or a[:-3] != b[:-3] or a[-3] != b[-3]:
        return None
    chain, cur = [], right
    while True:
        step = _headwise(graph, cur, len(b))
        if step is None:
            break
        chain.append(graph.producer[cur])
        cur = step
    repeat = _match_repeat(graph, cur)
    if repeat is None or repeat.kv_heads * repeat.rep != a[-3]:
        return None
    chain.reverse()
    return _Grouped(index, a, b, repeat, tuple(chain), _swap(graph, chain, len(b)))


def _swap(graph: _Graph, chain: list[int], rank: int) -> int | None:
    """The chain's Transpose if it is the only one and swaps the last two axes (so the
    chain without it gives the operand transposed), else None."""
    transposes = [i for i in chain if graph.nodes[i].op_type == "Transpose"]
    if len(transposes) != 1:
        return None
    perm = next(list(a.ints) for a in graph.nodes[transposes[0]].attribute if a.name == "perm")
    return transposes[0] if perm == [*range(rank - 2), rank - 1, rank - 2] else None


def _headwise(graph: _Graph, name: str, rank: int) -> str | None:
    """The data input of the node producing ``name`` if that node acts on each head alike
    (commutes with repeating heads), else None."""
    i = graph.producer.get(name)
    if i is None:
        return None
    node = graph.nodes[i]
    if node.op_type not in _HEADWISE or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    if node.op_type == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        ok = perm is not None and len(perm) == rank and perm[:rank - 2] == list(range(rank - 2))
        return node.input[0] if ok else None
    if len(node.input) != 2:
        return None
    for data, other in ((0, 1), (1, 0)) if node.op_type == "Mul" else ((0, 1),):
        s = graph.shape(node.input[other])
        if s is not None and len(s) <= rank and int(np.prod(s, dtype=np.int64)) == 1 \
                and graph.shape(node.input[data]) is not None:
            return node.input[data]
    return None


def _match_repeat(graph: _Graph, name: str) -> _Repeat | None:
    """``name`` as ``Reshape(Expand(Unsqueeze(X, -3)))`` of ``X [*b, kvH, M, N]`` into
    ``[*b, kvH*rep, M, N]`` (no-op Slices allowed between), else None."""
    out = graph.shape(name)
    reshape = graph.node_of(name, "Reshape")
    if out is None or reshape is None or len(out) < 3:
        return None
    nodes = [graph.producer[name]]
    cur = _skip_noop_slices(graph, reshape.input[0], nodes)
    expand = graph.node_of(cur, "Expand")
    if expand is None:
        return None
    nodes.append(graph.producer[cur])
    wide = graph.shape(cur)
    cur = _skip_noop_slices(graph, expand.input[0], nodes)
    unsqueeze = graph.node_of(cur, "Unsqueeze")
    if unsqueeze is None or wide is None or len(wide) != len(out) + 1:
        return None
    nodes.append(graph.producer[cur])
    axes = (graph.ints(unsqueeze.input[1]) if len(unsqueeze.input) > 1
            else next((list(a.ints) for a in unsqueeze.attribute if a.name == "axes"), None))
    rank = len(out) + 1
    if axes is None or len(axes) != 1 or axes[0] % rank != rank - 3:
        return None
    source = _skip_noop_slices(graph, unsqueeze.input[0], nodes)
    x = graph.shape(source)
    if x is None or len(x) != len(out):
        return None
    kv, rep = x[-3], wide[-3]
    exact = (wide == x[:-2] + (rep,) + x[-2:] and out == x[:-3] + (kv * rep,) + x[-2:]
             and graph.shape(unsqueeze.output[0]) == x[:-2] + (1,) + x[-2:])
    return _Repeat(source, kv, rep, tuple(nodes)) if exact and rep > 1 else None


def _skip_noop_slices(graph: _Graph, name: str, nodes: list[int]) -> str:
    """Walk back from ``name`` through Slices that copy their input whole (steps 1,
    output shape = input shape), appending their indices to ``nodes``."""
    while True:
        node = graph.node_of(name, "Slice")
        if node is None or graph.shape(name) is None or graph.shape(name) != graph.shape(node.input[0]):
            return name
        if graph.opset < 10:
            steps = [1]
        else:
            steps = graph.ints(node.input[4]) if len(node.input) > 4 and node.input[4] else [1]
        if steps is None or any(s != 1 for s in steps):
            return name
        nodes.append(graph.producer[name])
        name = node.input[0]


def _rewrite(g: onnx.GraphProto, graph: _Graph, found: list[_Grouped], transposed_scores: bool) -> None:
    """Insert each grouped MatMul before its original, drop the originals and the repeat
    nodes nothing reads any more."""
    taken = {o for n in graph.nodes for o in n.output} | {t.name for t in g.initializer} | \
        {i.name for i in g.input}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    copies: dict[tuple, str] = {}  # (original chain output, Transpose skipped) -> its copy
    before: dict[int, list[onnx.NodeProto]] = {}
    for m in found:
        new = before.setdefault(m.matmul, [])
        mm = graph.nodes[m.matmul]
        label = mm.name or mm.output[0]
        *batch, heads, s, k = m.left_shape
        kv, rep, n = m.repeat.kv_heads, m.repeat.rep, m.right_shape[-1]
        # K @ Q^T, then the product transposed, where that moves fewer elements than K^T
        flip = transposed_scores and m.swap is not None and rep * s < k
        right = _copy_chain(graph, m, copies, fresh, new, skip=m.swap if flip else None)
        left_shape = fresh(f"{label}/gqa_left_shape")
        out_shape = fresh(f"{label}/gqa_out_shape")
        g.initializer.extend([numpy_helper.from_array(np.array([*batch, kv, rep * s, k], np.int64), left_shape),
                              numpy_helper.from_array(np.array([*batch, heads, s, n], np.int64), out_shape)])
        left, prod = fresh(f"{label}/gqa_left"), fresh(f"{label}/gqa_matmul")
        new.append(helper.make_node("Reshape", [mm.input[0], left_shape], [left], name=left))
        if flip:
            swap = [*range(len(batch) + 1), len(batch) + 2, len(batch) + 1]
            left_t, prod_t = fresh(f"{label}/gqa_left_t"), fresh(f"{label}/gqa_matmul_t")
            new += [helper.make_node("Transpose", [left], [left_t], name=left_t, perm=swap),
                    helper.make_node("MatMul", [right, left_t], [prod_t], name=prod_t),
                    helper.make_node("Transpose", [prod_t], [prod], name=prod, perm=swap)]
        else:
            new.append(helper.make_node("MatMul", [left, right], [prod], name=prod))
        new.append(helper.make_node("Reshape", [prod, out_shape], [mm.output[0]], name=fresh(f"{label}/gqa_out")))
    replaced = {m.matmul for m in found}
    nodes = [x for i, n in enumerate(graph.nodes) for x in (*before.get(i, []), *([] if i in replaced else [n]))]
    candidates = {graph.nodes[i].output[0] for m in found for i in (*m.repeat.nodes, *m.chain)}
    kept = _drop_dead(nodes, candidates, graph.outputs)
    dropped = {x for n in graph.nodes if n.output and n.output[0] in candidates for x in n.input}
    read = _reads(kept) | graph.outputs | {i.name for i in g.input}
    del g.node[:]
    g.node.extend(kept)
    unread = [t for t in g.initializer if t.name in dropped and t.name not in read]  # the repeat's shapes
    for t in unread:
        g.initializer.remove(t)


def _copy_chain(graph: _Graph, m: _Grouped, copies: dict, fresh, new: list, skip: int | None = None) -> str:
    """The head-wise chain of ``m`` applied to the un-repeated source, without node
    ``skip`` (the swap Transpose, for ``K @ Q^T``) when given (copies shared between
    MatMuls reading the same chain); the name of its last value."""
    cur = m.repeat.source
    prev = m.repeat.nodes[0]  # the Reshape producing the repeated tensor
    prev_out = graph.nodes[prev].output[0]
    for i in m.chain:
        node = graph.nodes[i]
        out = node.output[0]
        if i == skip:  # the next node reads the un-transposed value
            prev_out = out
            continue
        key = (out, skip is not None)
        if key not in copies:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [cur if x == prev_out else x for x in node.input]
            copy.output[0] = fresh(f"{out}/grouped")
            copy.name = copy.output[0]
            new.append(copy)
            copies[key] = copy.output[0]
        cur, prev_out = copies[key], out
    return cur


def _drop_dead(nodes: list[onnx.NodeProto], candidates: set[str], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` without those producing a value of ``candidates`` that nothing reads
    (the repeat and its head-wise chain once every MatMul reading it is grouped)."""
    while True:
        read = _reads(nodes) | outputs
        dead = [n for n in nodes if n.output and n.output[0] in candidates
                and not any(o in read for o in n.output)]
        if not dead:
            return nodes
        ids = {id(n) for n in dead}
        nodes = [n for n in nodes if id(n) not in ids]


def _reads(nodes) -> set[str]:
    """Every value ``nodes`` read, inside their subgraphs (``If``/``Loop`` bodies) too."""
    read = set()
    for n in nodes:
        read.update(n.input)
        for a in n.attribute:
            for sub in [a.g] * a.HasField("g") + list(a.graphs):
                read |= _reads(sub.node)
    return read
