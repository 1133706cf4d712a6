"""Extraction: a plan cuts the fused Relax module into standalone partition modules.

Fast (nothing is built): partition signatures by name, weights shared across devices,
multi-output kernels cut apart, dependencies through data-dependent shapes, plan
errors, and a property test of the boundary invariants on random assignments.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from hetpart import importer
from hetpart.compiler import DPS_FUNCTION, MAIN_FUNCTION, extract, extract_partitions
from hetpart.errors import PlanError
from hetpart.partitioner import partition


def _names(specs):
    return [t.name for t in specs]


def _params(func):
    return [p.name for p in func.params]


def _prim_funcs(mod):
    return {gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def _constants(mod) -> list[np.ndarray]:
    found = []

    def visit(expr):
        if isinstance(expr, tvm.ir.GenericConst):
            found.append(expr.value.numpy())

    relax.analysis.post_order_visit(mod[MAIN_FUNCTION].body, visit)
    return found


def test_signatures_of_a_two_way_cut(zoo_graph, plan_for):
    g = zoo_graph("mlp")  # node_0 -> node_1 -> node_2, tensors lv, lv1, logits (the ONNX output name)
    a, b = extract(g, plan_for(g, {"node_0": "cpu", "node_1": "cuda", "node_2": "cuda"}))
    assert (a.name, a.device, a.kernels) == ("p0_cpu", "cpu", ("node_0",))
    assert (_names(a.inputs), _names(a.outputs)) == (["input"], ["lv"])
    assert (_names(b.inputs), _names(b.outputs)) == (["lv"], ["logits"])
    assert _params(a.module[MAIN_FUNCTION]) == ["input"]
    assert _params(b.module[MAIN_FUNCTION]) == ["lv"]
    assert _params(b.module[DPS_FUNCTION]) == ["lv", "logits.out"]
    assert a.inputs[0].shape == (1, 32) and a.inputs[0].dtype == "float32"
    # each module carries exactly the PrimFuncs its kernels call
    assert _prim_funcs(a.module) == {g.kernels["node_0"].func}
    assert _prim_funcs(b.module) == {g.kernels["node_1"].func, g.kernels["node_2"].func}
    for p in (a, b):
        assert p.dps
        assert relax.analysis.check_well_formed(p.module)


def _shared_weight_model():
    """x -> MatMul(W) -> Relu -> MatMul(W) -> y: one weight read by two kernels."""
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W"], ["y"])]
    graph = helper.make_graph(
        nodes, "shared_weight", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])], [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_a_weight_used_on_both_devices_is_placed_in_both(plan_for):
    model, w = _shared_weight_model()
    g = importer.load(model)
    assert len(g.kernels) == 2
    mods = extract_partitions(g, plan_for(g, {"node_0": "cpu", "node_1": "cuda"}))
    for name, mod in mods.items():
        assert any(c.shape == w.shape and np.array_equal(c, w) for c in _constants(mod)), name


def test_multi_output_kernel_outputs_cross_as_separate_tensors(zoo_graph, plan_for):
    g = zoo_graph("dlrm")
    split = next(k for k in g.nodes if len(k.outputs) > 1)
    assignment = {kid: "cuda" for kid in g.kernels}
    assignment[split.id] = "cpu"
    parts = extract(g, plan_for(g, assignment))
    owner = next(p for p in parts if split.id in p.kernels)
    assert _names(owner.outputs) == list(split.outputs)
    ret = owner.module[MAIN_FUNCTION].ret_ty
    assert isinstance(ret, relax.TupleType) and len(ret.fields) == len(split.outputs)
    readers = [p for p in parts if set(_names(p.inputs)) & set(split.outputs)]
    assert {t for p in readers for t in _names(p.inputs) if t in split.outputs} == set(split.outputs)


def test_data_dependent_shapes_bring_their_shape_computation(zoo_graph, plan_for):
    """The detector's NMS slice has an output shape computed at run time from another
    kernel's result; that tensor (an input of the slice in the op graph, through the
    symbolic dim) must cross into the slice's partition."""
    g = zoo_graph("detector")
    dynamic = next(k for k in g.nodes if not all(g.tensors[t].static for t in k.outputs))
    assignment = {kid: "cpu" for kid in g.kernels}
    assignment[dynamic.id] = "cuda"
    parts = extract(g, plan_for(g, assignment))
    alone = next(p for p in parts if p.kernels == (dynamic.id,))
    hidden = {t for t in dynamic.inputs
              if g.tensors[t].producer and g.kernels[g.tensors[t].producer].func.startswith("shape_func")}
    assert hidden and hidden <= set(_names(alone.inputs)), "the shape source must be an input of the partition"
    assert all(g.tensors[t].producer is not None for t in hidden)
    assert not alone.dps  # a data-dependent output cannot be allocated by the caller
    for t in hidden:
        producer = next(p for p in parts if g.tensors[t].producer in p.kernels)
        assert t in _names(producer.outputs)
    assert relax.analysis.check_well_formed(alone.module)


@pytest.mark.parametrize("mutate, message", [
    (lambda parts: parts[0].kernels.pop(), "places no device"),
    (lambda parts: parts[1].kernels.append(parts[0].kernels[0]), "two partitions"),
    (lambda parts: parts[0].kernels.append("node_999"), "does not have"),
    (lambda parts: parts.reverse(), "topological order"),
])
def test_invalid_plans_are_rejected(zoo_graph, plan_for, mutate, message):
    g = zoo_graph("mlp")
    plan = plan_for(g, {"node_0": "cpu", "node_1": "cuda", "node_2": "cpu"})
    mutate(plan.partitions)
    with pytest.raises(PlanError, match=message):
        extract(g, plan)


def _relu_model(name: str):
    graph = helper.make_graph([helper.make_node("Relu", [name], ["y"])], f"relu_{name}",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_plan_of_another_model_is_rejected_even_where_its_kernel_ids_fit():
    """Both graphs have one kernel, node_0: the plan's boundary tensors tell them apart."""
    mine, other = importer.load(_relu_model("x")), importer.load(_relu_model("a"))
    plan = partition(other, progress=False)  # a real plan: its partitions name their inputs and outputs
    assert [p.kernels for p in plan.partitions] == [["node_0"]] and mine.kernels.keys() == {"node_0"}
    extract(other, plan)  # fits its own graph
    with pytest.raises(PlanError, match=r"plan of model 'relu_a'.*'relu_x'.*'a'.*hetpart\.partition"):
        extract(mine, plan)


PROPERTY_MODELS = ["mlp", "dlrm", "detector", "bert", "resnet18"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(PROPERTY_MODELS), bits=st.lists(st.booleans(), min_size=64, max_size=64))
def test_boundaries_of_random_assignments(zoo_graph, plan_for, model, bits):
    """Any assignment: partitions read only model inputs and earlier partitions'
    outputs, export exactly what is read later or returned, cover every kernel once,
    and are well-formed Relax."""
    g = zoo_graph(model)
    order = g.topological_order()
    assignment = {kid: "cuda" if bits[i % len(bits)] else "cpu" for i, kid in enumerate(order)}
    parts = extract(g, plan_for(g, assignment))
    assert sorted(k for p in parts for k in p.kernels) == sorted(order)
    available, exported = set(g.inputs), []
    for i, p in enumerate(parts):
        assert set(_names(p.inputs)) <= available
        later_reads = {t for q in parts[i + 1:] for t in _names(q.inputs)}
        for t in _names(p.outputs):
            assert t in later_reads or t in g.outputs
        available |= set(_names(p.outputs))
        exported += _names(p.outputs)
        assert _params(p.module[MAIN_FUNCTION]) == _names(p.inputs)
        assert relax.analysis.check_well_formed(p.module)
    assert set(g.outputs) <= set(exported)
    assert len(exported) == len(set(exported))
