"""Out-of-range indices (issue 21, item 1): a model input used as Gather indices is
range-checked when fed (a typed error naming the input, never a foreign read), valid
negative indices count from the end as in ONNX (checked against onnxruntime), and a
Gather whose indices are computed in the graph is clipped, so no value crashes it.
Each model runs in a child process: an unchecked index is a SIGSEGV."""

from __future__ import annotations

import pytest
from isolated import assert_clean, run_isolated

_RUN = """
    import numpy as np, onnxruntime as ort
    import hetpart
    from hetpart import compiler, models
    from hetpart.errors import RuntimeFailure
    from hetpart.partitioner import Partition, Plan

    def compiled(spec_or_model, name):
        graph = hetpart.load(spec_or_model)
        order = graph.topological_order()
        plan = Plan(  # first half on the CPU, the rest on a simulated GPU
            model=graph.name, objective="test", assignment={k: ("cpu", "cuda")[2 * i >= len(order)]
                                                         for i, k in enumerate(order)},
            partitions=[Partition("p0_cpu", "cpu", order[:len(order) // 2]),
                        Partition("p1_cuda", "cuda", order[len(order) // 2:])],
            cuts=[], timeline=[], predicted={}, profile_origin="test", graph=graph)
        return compiler.compile(plan, simulate=True, progress=False)

    def reference(model, feeds):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
"""


# BERT with one encoder layer: the ids reach only the embedding Gathers ahead of the
# layers, so a second layer (the small zoo's) added compile time and nothing checked.
@pytest.mark.slow
@pytest.mark.parametrize("zoo, name, rows, cfg", [("bert", "input_ids", 1000, {"layers": 1}),
                                                  ("dlrm", "sparse_indices", 100, {})])
def test_index_feeds_out_of_range_are_typed_errors_and_negative_ones_count_from_the_end(zoo, name, rows, cfg):
    out = assert_clean(run_isolated(_RUN + f"""
    model = models.build({zoo!r}, small=True, **{cfg!r})
    cm = compiled(model, {zoo!r})
    base = {{t.name: np.zeros(tuple(t.shape), t.dtype) for t in cm.inputs}}
    for t in cm.inputs:
        if t.dtype.startswith("float"):
            base[t.name] = np.random.default_rng(0).standard_normal(tuple(t.shape)).astype(t.dtype)
    with hetpart.Session(cm) as s:
        for bad in (100000, {rows}, -{rows} - 1, -100000):
            feeds = dict(base)
            feeds[{name!r}] = base[{name!r}].copy()
            feeds[{name!r}].flat[1] = bad
            try:
                s.run(feeds)
            except RuntimeFailure as e:
                assert {name!r} in str(e) and str(bad) in str(e), e
                print("refused", bad)
        feeds = dict(base)
        feeds[{name!r}] = np.arange(base[{name!r}].size).reshape(base[{name!r}].shape).astype("int64") % {rows}
        feeds[{name!r}].flat[0], feeds[{name!r}].flat[-1] = -1, -{rows}  # valid: from the end
        got = s.run(feeds)
        want = reference(model, feeds)
        for g, w in zip(got.values(), want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
        print("negative ok")
    """, timeout=300))
    assert out.count("refused") == 4 and "negative ok" in out


@pytest.mark.slow
def test_indices_computed_in_the_graph_never_read_foreign_memory():
    """Gather(table, Cast(x)) with x a float input: the indices are not a feed, so the
    take is clipped; in-range values still match onnxruntime."""
    out = assert_clean(run_isolated(_RUN + """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
         helper.make_node("Gather", ["table", "i"], ["g"], axis=0),
         helper.make_node("Relu", ["g"], ["y"])],
        "computed_indices",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])],
        [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    graph = hetpart.load(model)
    assert getattr(graph, "index_limits", {}) == {}  # nothing to check at feed time
    plan = hetpart.partition(graph, objective="latency")
    cm = compiler.compile(plan, graph, simulate=True, progress=False)
    with hetpart.Session(cm) as s:
        x = np.array([[0, 3, 9, -1, -10, 5, 2, 1]], np.float32)
        np.testing.assert_allclose(list(s.run({"x": x}).values())[0], reference(model, {"x": x})[0])
        for bad in (1e6, -1e6, 2e9):
            y = list(s.run({"x": np.full((1, 8), bad, np.float32)}).values())[0]
            assert y.shape == (1, 8, 4) and np.isin(y, table).all()  # rows of the table, nothing else
    print("ok")
    """, timeout=300))
    assert "ok" in out


@pytest.mark.cuda
def test_cuda_resident_index_feeds_are_checked_too():
    """A real GPU session fed a CUDA tensor of token ids: the ids are checked (copied to
    the host for it) before any kernel reads them."""
    out = assert_clean(run_isolated(_RUN + """
    import tvm
    graph = hetpart.load("zoo:bert:small")
    order = graph.topological_order()
    plan = Plan(model=graph.name, objective="test", assignment={k: "cuda" for k in order},
                partitions=[Partition("p0_cuda", "cuda", list(order))], cuts=[], timeline=[],
                predicted={}, profile_origin="test", graph=graph)
    cm = compiler.compile(plan, progress=False)
    ids = np.arange(16, dtype=np.int64).reshape(1, 16)
    with hetpart.Session(cm) as s:
        want = s.run({"input_ids": ids})
        got = s.run({"input_ids": tvm.runtime.tensor(ids, tvm.cuda(0))})
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
        bad = ids.copy()
        bad[0, 5] = 100000
        try:
            s.run({"input_ids": tvm.runtime.tensor(bad, tvm.cuda(0))})
        except RuntimeFailure as e:
            assert "input_ids" in str(e) and "100000" in str(e), e
            print("refused")
    """, timeout=300))
    assert "refused" in out
