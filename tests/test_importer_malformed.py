"""Malformed models (issue 21, items 10, 11, 20): each is a typed error naming what is
wrong, never an internal error nor a silently wrong import; a ModelProto imports as
its file does."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import hetpart
from hetpart.errors import ModelLoadError, ShapeError


def mlp(zoo_onnx) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(zoo_onnx("mlp"))
    return model


def one_node(op: str, inputs, x_shape, y_shape, x_type=TensorProto.FLOAT, opset: int = 17, **attrs):
    x = helper.make_tensor_value_info("x", x_type, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)
    node = helper.make_node(op, inputs, ["y"], name="n0", **attrs)
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", opset)])


# --- item 10: internal errors on malformed models --------------------------------------------
def test_a_graph_without_outputs_is_a_model_error(zoo_onnx):
    model = mlp(zoo_onnx)
    del model.graph.output[:]
    with pytest.raises(ModelLoadError, match="no outputs"):
        hetpart.load(model)


def test_an_unknown_initializer_dtype_names_the_initializer(zoo_onnx):
    model = mlp(zoo_onnx)
    model.graph.initializer[1].data_type = 999
    with pytest.raises(ModelLoadError, match=r"initializer 'fc0\.bias' has unknown element type 999"):
        hetpart.load(model)


def test_an_input_of_undefined_element_type_names_the_input():
    model = one_node("Relu", ["x"], [2, 6], [2, 6], x_type=TensorProto.UNDEFINED)
    with pytest.raises(ModelLoadError, match=r"graph input 'x' has an undefined"):
        hetpart.load(model)


def test_an_impossible_pool_window_names_the_pool(zoo_onnx):
    """ONNX infers a negative dim without complaint; TVM's lowering raised ValueError."""
    model = onnx.ModelProto()
    model.CopyFrom(zoo_onnx("resnet18"))
    pool = next(n for n in model.graph.node if n.op_type == "MaxPool")
    next(a for a in pool.attribute if a.name == "kernel_shape").ints[:] = [1 << 16, 1 << 16]
    with pytest.raises(ShapeError, match=r"node 'maxpool' \(MaxPool\) computes .* negative dim"):
        hetpart.load(model)


def test_a_reshape_without_its_shape_is_a_typed_error():
    model = one_node("Reshape", ["x"], [2, 6], [3, 4])
    with pytest.raises(ModelLoadError, match="Reshape"):
        hetpart.load(model)


def test_a_frontend_failure_names_the_node_and_its_op(zoo_onnx):
    """TVM's own error ('Reshape expects ...') is kept, prefixed by the node it was converting."""
    model = onnx.ModelProto()
    model.CopyFrom(zoo_onnx("detector"))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 1
    with pytest.raises(ModelLoadError, match=r"could not import node '[^']+' \(Reshape\)"):
        hetpart.load(model)


# --- item 11: silently wrong or accepted where ONNX says no -----------------------------------
def test_a_bias_that_breaks_broadcasting_is_a_shape_error_not_a_wrong_shape(zoo_onnx):
    model = mlp(zoo_onnx)
    bias = next(t for t in model.graph.initializer if t.name == "fc0.bias")
    bias.dims[:] = [16, 1]
    with pytest.raises(ShapeError, match=r"output 'logits' has shape \[1, 4\] in ONNX but TVM computes \[16, 4\]"):
        hetpart.load(model)


@pytest.mark.parametrize("opset", [99, 1000])
def test_an_opset_newer_than_onnx_knows_is_refused(zoo_onnx, opset):
    model = mlp(zoo_onnx)
    model.opset_import[0].version = opset
    with pytest.raises(ModelLoadError, match=f"opset {opset}"):
        hetpart.load(model)


def test_a_graph_output_listed_twice_is_refused(zoo_onnx):
    model = mlp(zoo_onnx)
    model.graph.output.append(model.graph.output[0])
    with pytest.raises(ModelLoadError, match="'logits' is listed twice"):
        hetpart.load(model)


# --- item 20: a model object and its file import alike ----------------------------------------
@pytest.mark.slow
def test_an_old_ir_model_imports_alike_from_its_file_and_as_an_object():
    """light_shufflenet (IR 3, weights listed as graph inputs) from onnx's backend test data."""
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_shufflenet.onnx"
    if not path.exists():
        pytest.skip("this onnx package ships no backend test data")
    from_file = hetpart.load(str(path))
    from_object = hetpart.load(onnx.load(str(path)))
    assert [k.signature for k in from_file.nodes] == [k.signature for k in from_object.nodes]
    assert [from_object.tensors[t].shape for t in from_object.outputs] == [(1, 1000)]


def test_an_output_of_unknown_element_type_names_the_output(zoo_onnx):
    """Found by the fuzz test: an output's elem_type 99 reached TVM as ValueError."""
    model = mlp(zoo_onnx)
    model.graph.output[0].type.tensor_type.elem_type = 99
    with pytest.raises(ModelLoadError, match=r"graph output 'logits' has an undefined or unknown element type"):
        hetpart.load(model)


@pytest.mark.parametrize("damage", [None, "missing", "truncated"])
def test_external_weights_that_cannot_be_read_name_the_file(zoo_onnx, tmp_path, damage):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(zoo_onnx), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="mlp.weights", size_threshold=0)
    weights = tmp_path / "mlp.weights"
    if damage is None:  # whole: read as the model's own weights
        assert hetpart.load(str(path)).param_bytes == hetpart.load(mlp(zoo_onnx)).param_bytes > 0
        return
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:16])
    with pytest.raises(ModelLoadError, match=f"^{path}: .*external data.*mlp.weights"):
        hetpart.load(str(path))
