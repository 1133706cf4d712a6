"""TopK through hetpart's kernel (:mod:`hetpart.importer.top_k`) against the ONNX reference
evaluator and ONNX Runtime.

One model holds every case (one TopK node each), so one compile covers them all: ties
(including -0.0 against 0.0), NaN and +-inf (NaN ranks above +inf for ``largest`` 1
and 0 alike, as both references do), ``largest=0``, TopK along the first, a middle
and the last axis, ``k`` of 1 and of the whole axis, and ``sorted=0``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import hetpart
import hetpart.backend
from hetpart.importer.top_k import topk_primfunc

OPSET = 13


def _cases():
    rng = np.random.default_rng(3)
    ties = rng.choice(np.array([0.1, 0.5, 0.9, -0.0, 0.0], np.float32), (3, 64))
    specials = rng.uniform(-1, 1, (3, 64)).astype(np.float32)
    specials[0, 5] = specials[1, ::7] = np.nan
    specials[2, 3], specials[2, 4], specials[0, 9] = np.inf, -np.inf, np.inf
    cube = rng.choice(np.array([np.nan, -1.0, 0.0, 1.0, 2.0], np.float32), (4, 6, 5))
    # name: (data, k, axis, largest, sorted)
    return {
        "ties_largest": (ties, 10, -1, 1, 1),
        "ties_smallest": (ties, 10, -1, 0, 1),
        "nan_inf_largest": (specials, 12, -1, 1, 1),
        "nan_inf_smallest": (specials, 12, -1, 0, 1),
        "first_axis": (cube, 3, 0, 1, 1),
        "middle_axis_smallest": (cube, 4, 1, 0, 1),
        "k_one": (specials, 1, 1, 1, 1),
        "k_whole_axis": (cube, 5, 2, 1, 1),
        "unsorted": (rng.uniform(size=(2, 50)).astype(np.float32), 7, -1, 1, 0),
    }


def _model(cases: dict) -> onnx.ModelProto:
    nodes, inputs, outputs, inits = [], [], [], []
    for name, (data, k, axis, largest, sort) in cases.items():
        out_shape = list(data.shape)
        out_shape[axis] = k
        inits.append(numpy_helper.from_array(np.array([k], np.int64), f"{name}.k"))
        inputs.append(helper.make_tensor_value_info(f"{name}.x", onnx.TensorProto.FLOAT, data.shape))
        outputs += [helper.make_tensor_value_info(f"{name}.values", onnx.TensorProto.FLOAT, out_shape),
                    helper.make_tensor_value_info(f"{name}.indices", onnx.TensorProto.INT64, out_shape)]
        nodes.append(helper.make_node("TopK", [f"{name}.x", f"{name}.k"], [f"{name}.values", f"{name}.indices"],
                                      name=name, axis=axis, largest=largest, sorted=sort))
    graph = helper.make_graph(nodes, "topk_cases", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


@pytest.fixture(scope="module")
def results():
    cases = _cases()
    model = _model(cases)
    feeds = {f"{n}.x": c[0] for n, c in cases.items()}
    rep = hetpart.backend.prepare(model, device="CPU")
    try:
        got = dict(zip(rep.output_names, rep.run(feeds)))
    finally:
        rep.close()
    return model, cases, feeds, got


def _check(got: dict, want: dict, cases: dict, who: str) -> None:
    for name, (_, _, axis, _, sort) in cases.items():
        g_idx, w_idx = got[f"{name}.indices"], want[f"{name}.indices"]
        g_val, w_val = got[f"{name}.values"], want[f"{name}.values"]
        if not sort:  # any order is right: compare as sorted sets along the axis
            g_idx, w_idx = np.sort(g_idx, axis=axis), np.sort(w_idx, axis=axis)
            g_val, w_val = np.sort(g_val, axis=axis), np.sort(w_val, axis=axis)
        np.testing.assert_array_equal(g_idx, w_idx, err_msg=f"{name}: indices, hetpart vs {who}")
        np.testing.assert_array_equal(g_val, w_val, err_msg=f"{name}: values, hetpart vs {who}")
        assert got[f"{name}.indices"].dtype == np.int64


@pytest.mark.slow
def test_matches_the_onnx_reference(results):
    model, cases, feeds, got = results
    names = [o.name for o in model.graph.output]
    _check(got, dict(zip(names, ReferenceEvaluator(model).run(names, feeds))), cases, "onnx.reference")


@pytest.mark.slow
def test_matches_onnxruntime(results):
    pytest.importorskip("onnxruntime")
    from hetpart.bench.peers import ort_session

    model, cases, feeds, got = results
    names = [o.name for o in model.graph.output]
    _check(got, dict(zip(names, ort_session(model).run(names, feeds))), cases, "onnxruntime")


@pytest.mark.slow
def test_the_cases_mean_something(results):
    """NaN reached the top of a largest=1 output and stayed out of a largest=0 one; ties were kept."""
    _, cases, _, got = results
    assert np.isnan(got["nan_inf_largest.values"][0, 0])
    assert not np.isnan(got["nan_inf_smallest.values"]).any()
    assert np.isneginf(got["nan_inf_smallest.values"][2, 0])
    assert len(np.unique(got["ties_largest.values"][0])) < 10


def test_the_detector_topk_is_hetparts_kernel(zoo_graph):
    """The zoo detector's TopK is a TIR kernel of the op graph (class ``sort``), not TVM's
    runtime builtin, and its kernel is a parallel loop over rows."""
    graph = zoo_graph("detector")  # the session's import of zoo:detector:small
    (topk,) = [k for k in graph.nodes if "topk" in k.ops]
    assert topk.func.startswith("topk") and topk.op_class == "sort"
    assert "T.parallel" in topk_primfunc([4, 7], 1, 3, True, "int64").script()


def test_a_kernel_is_parsed_once_per_form():
    """``topk_primfunc`` hands back the kernel it parsed for the same form (the shape a list
    or a tuple), the same as a fresh parse; another form is another kernel."""
    import tvm_ffi

    from hetpart.importer import top_k

    a = topk_primfunc([4, 7], 1, 3, True, "int64")
    assert topk_primfunc((4, 7), 1, 3, True, "int64") is a
    assert tvm_ffi.structural_equal(a, top_k._topk_primfunc([4, 7], 1, 3, True, "int64"))
    assert not tvm_ffi.structural_equal(topk_primfunc([4, 7], 1, 3, False, "int64"), a)
