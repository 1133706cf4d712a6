"""The corpus-layer benchmark (hetpart/bench/cpu_layers.py): its layers are valid ONNX
with the shapes they claim, and its timing runs both sides on a small layer."""

from __future__ import annotations

import onnx
import pytest

from hetpart.bench import cpu_layers


@pytest.mark.parametrize("name", list(cpu_layers.LAYERS))
def test_layer_models_check_and_infer_their_output_shape(name):
    m = cpu_layers.LAYERS[name]()
    onnx.checker.check_model(m, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in out.dim] == [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]


def test_save_writes_one_file_per_layer(tmp_path):
    assert cpu_layers.main(["inc_1x3", "vit_patch", "--save", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inc_1x3.onnx", "vit_patch.onnx"]


def test_unknown_layer_is_refused(capsys):
    assert cpu_layers.main(["no_such_layer"]) == 1
    assert "--list" in capsys.readouterr().err


def test_interleaved_times_both_sides():
    h, o = cpu_layers.interleaved(cpu_layers.LAYERS["inc_1x3"](), threads=1, runs=2)
    assert h > 0 and o > 0


def test_interleaved_settles_before_every_turn():
    from hetpart.bench.settle import SettleLog

    log = SettleLog()
    cpu_layers.interleaved(cpu_layers.LAYERS["inc_1x3"](), threads=1, runs=cpu_layers.BLOCK + 1, log=log)
    assert len(log.waits) == 4  # two rounds of a hetpart turn and an ORT turn
    assert all(w.waited_s > 0 for w in log.waits)


def test_with_batch_sets_the_leading_dim_and_leaves_the_layer_as_it_was():
    m = cpu_layers.LAYERS["r50_1x1_14"]()
    b = cpu_layers.with_batch(m, 3)
    inferred = onnx.shape_inference.infer_shapes(b, strict_mode=True)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [3, 256, 14, 14]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
