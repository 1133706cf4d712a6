"""The importer's index guard (issue 21, item 1): which model inputs are indices, the
range of every element (per column when a split feeds tables of different sizes), and
which takes are clipped because their indices are computed in the graph."""

from __future__ import annotations

import numpy as np
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import hetpart


def _take_modes(graph) -> list[str]:
    return [str(b.value.attrs.mode) for blk in graph.relax_module["main"].body.blocks for b in blk.bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
            and b.value.op.name == "relax.take"]


def _two_tables_model():
    """idx [4, 2]: column 0 indexes a 10-row table, column 1 a 5-row one; x feeds a
    Gather through a float->int Cast (indices computed in the graph)."""
    t10 = np.arange(30, dtype=np.float32).reshape(10, 3)
    t5 = np.arange(15, dtype=np.float32).reshape(5, 3)
    nodes = [
        helper.make_node("Split", ["idx"], ["c0", "c1"], axis=1, num_outputs=2),
        helper.make_node("Squeeze", ["c0", "ax"], ["i0"]),
        helper.make_node("Squeeze", ["c1", "ax"], ["i1"]),
        helper.make_node("Gather", ["t10", "i0"], ["g0"], axis=0),
        helper.make_node("Gather", ["t5", "i1"], ["g1"], axis=0),
        helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64),
        helper.make_node("Gather", ["t5", "xi"], ["g2"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "two_tables",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [4, 2]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 3]) for n in ("g0", "g1", "g2")],
        [numpy_helper.from_array(t10, "t10"), numpy_helper.from_array(t5, "t5"),
         numpy_helper.from_array(np.array([1], np.int64), "ax")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def test_each_element_gets_the_range_of_the_table_it_indexes():
    graph = hetpart.load(_two_tables_model())
    assert set(graph.index_limits) == {"idx"}  # x is not used as indices as such
    limits = graph.index_limits["idx"]
    np.testing.assert_array_equal(np.broadcast_to(limits.high, (4, 2)), [[10, 5]] * 4)
    np.testing.assert_array_equal(np.broadcast_to(limits.low, (4, 2)), [[-10, -5]] * 4)
    ok = np.array([[9, 4], [-10, -5], [0, 0], [7, -1]])
    assert limits.violation(ok) is None
    bad = ok.copy()
    bad[3, 1] = 7  # fine for the 10-row table, not for the 5-row one
    problem = limits.violation(bad)
    assert "7 at [3, 1]" in problem and "-5..4" in problem
    # the two input-fed takes stay fast (checked at feed time); the computed one is clipped
    assert sorted(m for m in _take_modes(graph) if m != "wrap") == ["clip", "fast", "fast"]


def test_zoo_index_inputs_are_found_and_their_takes_stay_fast(zoo_graph):
    bert = zoo_graph("bert")
    assert set(bert.index_limits) == {"input_ids"} and int(bert.index_limits["input_ids"].high.max()) == 1000
    dlrm = zoo_graph("dlrm")
    assert set(dlrm.index_limits) == {"sparse_indices"}
    for g in (bert, dlrm):
        assert "clip" not in _take_modes(g)  # kernels (and their measured costs) unchanged
