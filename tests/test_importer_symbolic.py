"""bucket_spec: which dims of a symbolic model are bucketed, at which sizes, and which
output axes follow them (from ONNX's symbolic shapes); every undecidable case a ShapeError."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from bucket_models import batch_model, seq_model
from hetpart.contracts.buckets import DEFAULT_BATCH_SIZES
from hetpart.errors import ShapeError
from hetpart.importer import read_source
from hetpart.importer.symbolic import bucket_shapes, bucket_spec, has_symbolic_dims, symbolic_dims


def test_the_batch_dim_gets_default_buckets():
    spec = bucket_spec(batch_model())
    assert spec.batch == "batch" and spec.sizes == {"batch": DEFAULT_BATCH_SIZES}
    assert spec.input_axes == {"x": {0: "batch"}, "s": {0: "batch"}}
    assert spec.output_axes == {"y": {0: "batch"}, "p": {0: "batch"}}


def test_batch_names_the_axis0_dim_whatever_its_dim_param():
    spec = bucket_spec(batch_model(batch="N"), {"batch": [8, 1, 8]})
    assert spec.batch == "N" and spec.sizes == {"N": (1, 8)}
    assert bucket_shapes(batch_model(batch="N"), spec, {"N": 8}) == {"x": [8, 8], "s": [8, 1]}


def test_a_sequence_dim_is_bucketed_only_when_asked_for():
    with pytest.raises(ShapeError, match="seq") as e:
        bucket_spec(seq_model())
    assert "masks" in str(e.value)  # says why it has no default
    spec = bucket_spec(seq_model(), {"seq": [16, 64]})
    assert spec.sizes == {"batch": DEFAULT_BATCH_SIZES, "seq": (16, 64)}
    assert spec.output_axes == {"y": {0: "batch", 1: "seq"}}


def test_an_input_fixed_by_shapes_is_not_bucketed():
    spec = bucket_spec(seq_model(), {"seq": [16]}, shapes=None)
    assert "x" in spec.input_axes
    with pytest.raises(ShapeError, match="nothing to bucket"):
        bucket_spec(seq_model(), shapes={"x": [1, 16, 8]})
    assert not has_symbolic_dims(seq_model(), {"x": [1, 16, 8]}) and has_symbolic_dims(seq_model())


def test_a_bucket_for_no_dim_of_the_model_is_refused():
    with pytest.raises(ShapeError, match="'?tokens'?.*batch"):
        bucket_spec(batch_model(), {"tokens": [1, 2]})


def test_a_refusal_names_the_file_the_model_was_read_from(tmp_path):
    path = tmp_path / "seq.onnx"
    onnx.save(seq_model(), str(path))
    with pytest.raises(ShapeError) as e:
        bucket_spec(read_source(str(path)))  # as the CLI and compile_buckets read it: once
    assert str(e.value).startswith(f"{path}: ")


def test_an_unnamed_symbolic_dim_is_refused():
    model = batch_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()  # neither a value nor a name
    assert symbolic_dims(model)["x"] == [None, 8]
    with pytest.raises(ShapeError, match="unnamed symbolic dim"):
        bucket_spec(model)


def test_an_output_whose_axes_onnx_cannot_tie_to_a_bucket_is_refused():
    """NonZero's count is data-dependent: padding could change it, and nothing says
    which rows of it to keep; refused before anything is built."""
    model = batch_model()
    model.graph.node.append(helper.make_node("NonZero", ["y"], ["nz"]))
    model.graph.output.append(helper.make_tensor_value_info("nz", TensorProto.INT64, None))
    with pytest.raises(ShapeError, match="output 'nz'"):
        bucket_spec(model)
