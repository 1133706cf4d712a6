"""Tests of the built-in model zoo (hetpart.models)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import hetpart.models as models
from hetpart.errors import HetpartError, UnknownModelError

ALL = models.names()


def _check(model: onnx.ModelProto, strict_inference: bool = True) -> None:
    onnx.checker.check_model(model, full_check=True)
    if strict_inference:  # full_check already infers shapes; this is the API others call
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _run_reference(model: onnx.ModelProto, seed: int = 0) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, models.example_inputs(model, seed))


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


@pytest.fixture(scope="module")
def small_models() -> dict[str, onnx.ModelProto]:
    return {name: models.build(name, small=True) for name in ALL}


def test_zoo_has_the_expected_models():
    assert set(ALL) >= {"mlp", "resnet18", "resnet50", "bert", "detector", "dlrm"}
    assert ALL == sorted(ALL)


# --- every small model: valid, runs, imports into TVM ------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_small_model_is_valid_onnx(small_models, name):
    model = small_models[name]
    _check(model)
    assert model.producer_name == "hetpart.models"
    assert name in model.doc_string
    assert model.opset_import[0].version == 17
    props = {p.key: p.value for p in model.metadata_props}
    assert props["hetpart.zoo.name"] == name
    assert models.parse_zoo_spec(props["hetpart.zoo.spec"])[:2] == (name, True)


@pytest.mark.parametrize("name", ALL)
def test_small_model_names_are_unique_and_readable(small_models, name):
    graph = small_models[name].graph
    node_names = [n.name for n in graph.node]
    assert all(node_names) and len(set(node_names)) == len(node_names)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer if t.name.endswith(".weight"))


@pytest.mark.parametrize("name", ALL)
def test_small_model_runs_in_reference_evaluator(small_models, name):
    model = small_models[name]
    outputs = _run_reference(model)
    assert len(outputs) == len(model.graph.output)
    for info, value in zip(model.graph.output, outputs):
        assert np.all(np.isfinite(value)), info.name
        if value.size > 1:
            assert not np.all(value == value.flat[0]), f"{info.name} is constant"


@pytest.mark.parametrize("name", ALL)
def test_small_model_imports_into_tvm(small_models, name):
    tvm = pytest.importorskip("tvm")
    from tvm.relax.frontend.onnx import from_onnx

    from hetpart.importer.shape_folding import fold_static_shapes

    # Folded first, as hetpart's importer does: swin's pads are computed from shapes,
    # which TVM's frontend alone refuses ("Dynamic pads are not supported yet").
    mod = tvm.relax.transform.LegalizeOps()(from_onnx(fold_static_shapes(small_models[name]).model))
    assert "main" in [gv.name_hint for gv in mod.get_global_vars()]


@pytest.mark.slow
def test_detector_runs_end_to_end_in_tvm(small_models):
    """NonMaxSuppression and TopK compile with TVM and agree with the ONNX reference."""
    tvm = pytest.importorskip("tvm")
    from tvm.relax.frontend.onnx import from_onnx

    model = small_models["detector"]
    feeds = models.example_inputs(model, seed=3)
    expected = ReferenceEvaluator(model).run(None, feeds)
    mod = tvm.relax.transform.LegalizeOps()(from_onnx(model))
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target("llvm")), tvm.cpu())
    got = [t.numpy() for t in vm["main"](tvm.runtime.tensor(feeds["input"]))]
    names = [o.name for o in model.graph.output]
    for name, want, have in zip(names, expected, got):
        assert have.shape == want.shape, name
        if want.dtype.kind == "f":
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4, err_msg=name)
        else:
            np.testing.assert_array_equal(have, want, err_msg=name)
    # The comparison means something only if NMS did suppress boxes: fewer than
    # max_detections for some class, either by IoU or by score threshold.
    selected = expected[names.index("selected_indices")]
    assert 0 < len(selected) < models.registry.entry("detector").small.max_detections * 4


# --- determinism -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_same_seed_gives_identical_bytes(name):
    a = models.build(name, small=True, seed=7).SerializeToString()
    b = models.build(name, small=True, seed=7).SerializeToString()
    assert a == b


@pytest.mark.parametrize("name", ALL)
def test_different_seed_gives_different_weights(name):
    a = models.build(name, small=True, seed=1).graph.initializer
    b = models.build(name, small=True, seed=2).graph.initializer
    assert [t.name for t in a] == [t.name for t in b]
    assert any(x.raw_data != y.raw_data for x, y in zip(a, b))


# --- configuration -----------------------------------------------------------------------
def test_config_overrides_change_the_model():
    model = models.build("bert", small=True, layers=3, seq_len=8, batch=2)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 8]
    assert sum(n.op_type == "Softmax" for n in model.graph.node) == 3
    _check(model)


def test_resnet_blocks_follow_torchvision():
    r18 = models.build("resnet18", small=True)
    r50 = models.build("resnet50", small=True)
    convs18 = [n.name for n in r18.graph.node if n.op_type == "Conv"]
    convs50 = [n.name for n in r50.graph.node if n.op_type == "Conv"]
    # stem + 8 blocks x 2 convs + 3 shortcut convs; stem + 16 blocks x 3 + 4 shortcuts.
    assert len(convs18) == 1 + 16 + 3 and len(convs50) == 1 + 48 + 4
    assert "layer2.0.downsample.0" in convs18 and "layer1.0.downsample.0" not in convs18
    assert "layer1.0.downsample.0" in convs50  # bottleneck widens 8 -> 32 channels
    assert sum(n.op_type == "BatchNormalization" for n in r18.graph.node) == len(convs18)


def test_dlrm_indices_and_interaction_shape():
    model = models.build("dlrm", small=True, num_tables=4, table_rows=50)
    feeds = models.example_inputs(model)
    assert feeds["sparse_indices"].dtype == np.int64 and feeds["sparse_indices"].max() < 50
    (prob,) = ReferenceEvaluator(model).run(None, feeds)
    assert prob.shape == (256, 1) and ((0 < prob) & (prob < 1)).all()  # served at batch 256
    pairs = next(t for t in model.graph.initializer if t.name == "interaction.pair_indices")
    assert pairs.dims == [5 * 4 // 2]  # F = 4 tables + dense


def test_default_batch_is_per_model_and_overridable():
    assert models.build("mlp", small=True).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    dlrm = models.build("dlrm", small=True)
    assert dlrm.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 256
    one = models.build("dlrm", small=True, batch=1)
    assert one.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_example_inputs_respect_index_limits():
    model = models.build("bert", small=True, vocab=37, batch=3)
    feeds = models.example_inputs(model, seed=5)
    ids = feeds["input_ids"]
    assert ids.dtype == np.int64 and ids.shape == (3, 16) and 0 <= ids.min() and ids.max() < 37
    np.testing.assert_array_equal(ids, models.example_inputs(model, seed=5)["input_ids"])


def test_unknown_model_lists_known_ones():
    with pytest.raises(UnknownModelError, match="resnet18") as info:
        models.build("resnet1000")
    assert isinstance(info.value, HetpartError)
    with pytest.raises(UnknownModelError, match="resnet18"):
        models.describe("nope")


def test_unknown_config_key_is_named_with_the_allowed_ones():
    with pytest.raises(UnknownModelError, match=r"'hiddn'.*allowed keys:.*hidden.*seq_len"):
        models.build("bert", small=True, hiddn=32)


@pytest.mark.parametrize(
    "cfg",
    [{"layers": "two"}, {"layers": 2.5}, {"batch": 0}, {"seed": -1}, {"heads": 3}, {"layers": True}],
)
def test_bad_config_values_are_rejected(cfg):
    with pytest.raises(UnknownModelError):
        models.build("bert", small=True, **cfg)


def test_describe_shows_both_variants():
    text = models.describe("bert")
    assert "full:" in text and "small:" in text and "hidden=768" in text and "hidden=64" in text


# --- zoo specs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, expected",
    [
        ("zoo:resnet18", ("resnet18", False, {})),
        ("zoo:resnet18:small", ("resnet18", True, {})),
        ("zoo:resnet18:full", ("resnet18", False, {})),
        ("zoo:bert:layers=4,seq_len=64", ("bert", False, {"layers": 4, "seq_len": 64})),
        ("zoo:bert:small:layers=4", ("bert", True, {"layers": 4})),
        ("zoo:dlrm:table_rows=1_000_000,batch=8", ("dlrm", False, {"table_rows": 1_000_000, "batch": 8})),
        ("zoo:detector:small:iou_threshold=0.25", ("detector", True, {"iou_threshold": 0.25})),
        ("zoo:resnet50:small:layers=1/1/1/1", ("resnet50", True, {"layers": (1, 1, 1, 1)})),
        ("model.onnx", None),
        ("resnet18", None),
    ],
)
def test_parse_zoo_spec(spec, expected):
    assert models.parse_zoo_spec(spec) == expected


@pytest.mark.parametrize(
    "spec", ["zoo:", "zoo:nosuch", "zoo:bert:hiddn=3", "zoo:bert:tiny", "zoo:bert:layers=1,layers=2"]
)
def test_parse_zoo_spec_rejects_bad_specs(spec):
    with pytest.raises(UnknownModelError):
        models.parse_zoo_spec(spec)


def test_parsed_spec_builds_and_spec_round_trips():
    name, small, cfg = models.parse_zoo_spec("zoo:resnet50:small:layers=1/1/1/1,num_classes=7")
    model = models.build(name, small, **cfg)
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 7
    spec = {p.key: p.value for p in model.metadata_props}["hetpart.zoo.spec"]
    name, small, cfg = models.parse_zoo_spec(spec)
    again = models.build(name, small, **cfg)
    assert again.SerializeToString() == model.SerializeToString()


# --- saving ------------------------------------------------------------------------------
def test_save_small_model_in_one_file(tmp_path, small_models):
    files = models.save(small_models["mlp"], tmp_path / "mlp.onnx")
    assert files == [tmp_path / "mlp.onnx"]
    assert onnx.load(files[0]).SerializeToString() == small_models["mlp"].SerializeToString()


def test_save_uses_external_data_above_threshold(tmp_path, monkeypatch):
    model = models.build("dlrm", small=True)
    before = model.SerializeToString()
    monkeypatch.setattr(models, "EXTERNAL_DATA_THRESHOLD", 1000)
    for _ in range(2):  # saving twice must not append to the data file
        files = models.save(model, tmp_path / "dlrm.onnx")
    assert files == [tmp_path / "dlrm.onnx", tmp_path / "dlrm.onnx.data"]
    assert files[1].stat().st_size < len(before)
    assert model.SerializeToString() == before  # the caller's model keeps its weights
    loaded = onnx.load(files[0])
    onnx.checker.check_model(loaded, full_check=True)
    np.testing.assert_array_equal(_run_reference(loaded)[0], _run_reference(model)[0])


# --- full-size variants ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected_params",
    [("mlp", 5.82e6), ("resnet18", 11.69e6), pytest.param("resnet50", 25.56e6, marks=pytest.mark.slow)],
)
def test_full_model_is_valid_and_has_the_real_size(name, expected_params):
    model = models.build(name)
    _check(model)
    assert _params(model) == pytest.approx(expected_params, rel=0.03)


def test_full_resnet_input_is_imagenet_sized():
    model = models.build("resnet18")
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 224, 224]


@pytest.mark.slow
def test_full_bert_is_bert_base():
    model = models.build("bert")
    _check(model, strict_inference=False)
    # BERT-base has ~110M parameters; ours lacks token-type embeddings and has only
    # 128 (not 512) positions.
    assert _params(model) == pytest.approx(110e6, rel=0.03)
    assert sum(n.op_type == "LayerNormalization" for n in model.graph.node) == 1 + 2 * 12


@pytest.mark.slow
@pytest.mark.parametrize("name", ["detector", "dlrm"])
def test_full_model_runs(name):
    model = models.build(name)
    _check(model, strict_inference=False)
    for value in _run_reference(model):
        assert np.all(np.isfinite(value))


def test_full_dlrm_tables_are_the_configured_size():
    cfg = models.registry.entry("dlrm").full
    model = models.build("dlrm", table_rows=1000)  # the real table count and width, fewer rows
    tables = [t for t in model.graph.initializer if t.name.startswith("emb.")]
    assert len(tables) == cfg.num_tables
    assert all(list(t.dims) == [1000, cfg.embedding_dim] for t in tables)
