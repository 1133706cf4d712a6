"""Seeded mutants of the small zoo models, and the verdict on one (issue 21, fuzz).

Imported by ``tests/test_importer_fuzz.py`` and run as a worker process
(``python tests/fuzz_models.py SEED I J ...``): for each mutant index it prints one
line ``FUZZ {"i": i, "start": true}`` before trying it and one with its verdict
after, so the parent tells a crash (a start line with no verdict) from a result.

Mutants (:func:`mutant`; index i of seed s is always the same model):
  * bytes: the serialized proto with bytes flipped, inserted, deleted or cut off,
    loaded from a file (hetpart's path reading);
  * structure: a node dropped or duplicated, an attribute changed, a dim of an
    input, output or initializer changed, an element type changed, an edge renamed.

Verdicts (:func:`judge`): ``typed`` (a HetpartError), ``correct`` (imported, and
every output's shape matches what onnxruntime (else onnx.reference) computes; the
first few are compiled for the CPU and their values compared too), ``unverified``
(imported, both references refuse the model), or a failure: ``internal``
(any other exception), ``shape`` or ``value`` (disagrees with the reference).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

MODELS = ("mlp", "mlp", "mlp", "dlrm", "resnet18", "bert", "detector")  # mlp most: fastest to import
STRUCTURE = ("drop_node", "dup_node", "attribute", "dim", "dtype", "rename_edge")
FAILURES = ("internal", "shape", "value")


def base_model(name: str):
    from hetpart import models

    return models.build(name, small=True)


def mutant(seed: int, i: int):
    """``(description, ModelProto or bytes)`` for mutant ``i`` of ``seed``."""
    import onnx

    rng = random.Random(seed * 1_000_003 + i)
    name = rng.choice(MODELS)
    model = onnx.ModelProto()
    model.CopyFrom(base_model(name))
    if rng.random() < 0.4:
        data = bytearray(model.SerializeToString())
        kind = rng.choice(("flip", "insert", "delete", "truncate"))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            if kind == "flip":
                data[at] ^= 1 << rng.randrange(8)
            elif kind == "insert":
                data[at:at] = bytes([rng.randrange(256)])
            elif kind == "delete":
                del data[at]
        if kind == "truncate":
            data = data[:rng.randrange(len(data))]
        return f"{name}: bytes {kind}", bytes(data)
    kind = rng.choice(STRUCTURE)
    return f"{name}: {kind} " + _mutate(model, kind, rng), model


def _mutate(model, kind: str, rng: random.Random) -> str:
    import onnx

    g = model.graph
    nodes = g.node
    if kind == "drop_node":
        j = rng.randrange(len(nodes))
        del nodes[j]
        return f"#{j}"
    if kind == "dup_node":
        j = rng.randrange(len(nodes))
        copy = onnx.NodeProto()
        copy.CopyFrom(nodes[j])
        nodes.insert(rng.randrange(len(nodes) + 1), copy)
        return f"#{j}"
    if kind == "attribute":
        with_attrs = [n for n in nodes if n.attribute]
        if not with_attrs:
            return "none"
        node = rng.choice(with_attrs)
        attr = rng.choice(node.attribute)
        if attr.type == onnx.AttributeProto.INT:
            attr.i = rng.choice((-1, 0, 2, 3, 7, 1 << 20, attr.i + 1))
        elif attr.type == onnx.AttributeProto.INTS and attr.ints:
            k = rng.randrange(len(attr.ints))
            attr.ints[k] = rng.choice((-2, 0, 1, 5, 9, 1 << 16))
        elif attr.type == onnx.AttributeProto.FLOAT:
            attr.f = rng.choice((0.0, -1.0, float("nan"), 1e30))
        elif attr.type == onnx.AttributeProto.STRING:
            attr.s = rng.choice((b"", b"bogus", b"NOTSET"))
        return f"{node.op_type}.{attr.name}"
    if kind == "dim":
        pool = [(v.name, v.type.tensor_type.shape.dim) for v in (*g.input, *g.output)
                if v.type.tensor_type.shape.dim]
        pool += [(t.name, t.dims) for t in g.initializer if t.dims]
        target, dims = rng.choice(pool)
        k = rng.randrange(len(dims))
        value = rng.choice((0, 1, 2, 3, 7, 1 << 20))
        if hasattr(dims[k], "dim_value"):
            dims[k].dim_value = value
        else:
            dims[k] = value
        return f"{target}[{k}]={value}"
    if kind == "dtype":
        value = rng.choice((0, 2, 5, 6, 7, 9, 10, 11, 16, 25, 99))
        pool = [v for v in (*g.input, *g.output)]
        if rng.random() < 0.5 and g.initializer:
            t = rng.choice(g.initializer)
            t.data_type = value
            return f"{t.name}={value}"
        v = rng.choice(pool)
        v.type.tensor_type.elem_type = value
        return f"{v.name}={value}"
    # rename_edge: one use or definition of a value gets another name
    node = rng.choice(nodes)
    names = [n for n in node.input if n] if rng.random() < 0.5 else list(node.output)
    if not names:
        return "none"
    old = rng.choice(names)
    new = rng.choice([n for x in nodes for n in x.output] + ["nowhere"])
    for field in (node.input, node.output):
        for k, n in enumerate(field):
            if n == old:
                field[k] = new
    return f"{node.op_type}: {old}->{new}"


def _feeds(graph, rng):
    feeds = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if np.issubdtype(np.dtype(t.dtype), np.integer):
            feeds[name] = rng.integers(0, 3, size=t.shape).astype(t.dtype)
        elif t.dtype == "bool":
            feeds[name] = rng.integers(0, 2, size=t.shape).astype(bool)
        else:
            feeds[name] = rng.standard_normal(t.shape).astype(t.dtype)
    return feeds


def _reference(model, feeds):
    """Outputs by onnxruntime, else onnx.reference; None when both refuse."""
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
    except Exception:  # noqa: BLE001 - the reference refusing the model is an answer
        pass
    try:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, feeds)
    except Exception:  # noqa: BLE001
        return None


def _run_cpu(graph, feeds):
    """The model's outputs compiled by hetpart, every kernel on the CPU."""
    import hetpart
    from hetpart.partitioner import Partition, Plan

    order = graph.topological_order()
    plan = Plan(model=graph.name, objective="fuzz", assignment={k: "cpu" for k in order},
                partitions=[Partition("p0_cpu", "cpu", list(order))], cuts=[], timeline=[], predicted={},
                profile_origin="fuzz", graph=graph)
    compiled = hetpart.compile(plan, graph, progress=False)
    with hetpart.Session(compiled) as sess:
        return list(sess.run(feeds).values())


def judge(seed: int, i: int, compile_ok: bool) -> dict:
    """The verdict on mutant ``i`` (see the module docstring)."""
    import hetpart
    from hetpart.errors import HetpartError

    what, model = mutant(seed, i)
    out = {"i": i, "what": what}
    try:
        if isinstance(model, bytes):
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "m.onnx"
                path.write_bytes(model)
                graph = hetpart.load(str(path))
                import onnx

                model = onnx.load(str(path))
        else:
            graph = hetpart.load(model)
    except HetpartError as exc:
        return {**out, "verdict": "typed", "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzz test hunts
        return {**out, "verdict": "internal", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    feeds = _feeds(graph, np.random.default_rng(i))
    ref = _reference(model, feeds)
    if ref is None:
        return {**out, "verdict": "unverified"}
    mine = [graph.tensors[t].shape for t in graph.outputs]
    theirs = [tuple(np.shape(r)) for r in ref]
    static = [m for m in mine if all(isinstance(d, int) for d in m)]
    if len(mine) != len(theirs) or any(tuple(m) != t for m, t in zip(mine, theirs)
                                       if all(isinstance(d, int) for d in m)):
        return {**out, "verdict": "shape", "error": f"hetpart {mine} vs reference {theirs}"}
    if compile_ok and len(static) == len(mine):
        try:
            got = _run_cpu(graph, feeds)
        except HetpartError as exc:
            return {**out, "verdict": "typed", "error": f"at compile/run: {type(exc).__name__}: {str(exc)[:160]}"}
        except Exception as exc:  # noqa: BLE001
            return {**out, "verdict": "internal", "error": f"compile/run: {type(exc).__name__}: {str(exc)[:300]}"}
        for a, b in zip(got, ref):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-3, equal_nan=True):
                return {**out, "verdict": "value", "error": f"max |diff| {np.nanmax(np.abs(a - b)) if a.shape == b.shape else a.shape}"}
        out["compiled"] = True
    return {**out, "verdict": "correct"}


def main(argv) -> None:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    seed, compile_budget = int(argv[0]), int(argv[1])
    for i in map(int, argv[2:]):
        print("FUZZ " + json.dumps({"i": i, "start": True}), flush=True)
        verdict = judge(seed, i, compile_budget > 0)
        compile_budget -= bool(verdict.get("compiled"))
        print("FUZZ " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
