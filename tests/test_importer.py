"""Import stage: ONNX -> fused-kernel op graph, its invariants, and every bad-input error."""

from __future__ import annotations

import subprocess
import sys

import networkx as nx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hetpart
from hetpart import models
from hetpart.errors import HetpartError, InternalError, ModelLoadError, ShapeError, UnsupportedOpsError
from hetpart.importer import load
from hetpart.importer.fusion import fuse_with_ops


def conv_mlp(batch="N", op="Relu", opset=17):
    """Conv -> <op> -> Flatten -> MatMul -> Softmax, with a symbolic batch dim."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((8,)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((512, 10)).astype(np.float32), "M"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node(op, ["c"], ["r"], name="act"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "M"], ["y0"], name="fc"),
        helper.make_node("Softmax", ["y0"], ["y"], name="softmax"),
    ]
    g = helper.make_graph(
        nodes, "conv_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


# --- the op graph -------------------------------------------------------------------
def test_conv_bias_relu_is_one_kernel():
    g = load(conv_mlp(), shapes={"x": [2, 3, 8, 8]})
    first = g.nodes[0]
    assert first.ops == ("conv2d", "add", "relu")
    assert first.op_class == "conv2d"
    assert first.flops >= 2 * 2 * 8 * 8 * 8 * 27  # 2*N*OC*OH*OW*(IC*KH*KW) multiply-adds
    assert first.param_bytes == (8 * 3 * 3 * 3 + 8) * 4
    assert g.tensors["x"].shape == (2, 3, 8, 8) and g.tensors["x"].is_input
    assert [g.tensors[o].shape for o in g.outputs] == [(2, 10)]


def test_identical_kernels_share_a_signature():
    rng = np.random.default_rng(1)
    w = [numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), f"w{i}") for i in range(3)]
    nodes = [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"]) for i in range(3)]
    nodes = [n for i, n in enumerate(nodes) for n in (n, helper.make_node("Relu", [f"m{i}"], [f"h{i + 1}"]))]
    gr = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [4, 16])],
                           [helper.make_tensor_value_info("h3", TensorProto.FLOAT, [4, 16])], w)
    g = load(helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)]))
    sigs = [k.signature for k in g.nodes]
    assert len(g) == 3 and len(set(sigs)) == 1, "same matmul+relu on the same shapes must share one signature"


def test_grouping_matches_what_tvm_compiles():
    """The kernels of the op graph are exactly the PrimFuncs TVM's own fusion emits."""
    import tvm_ffi
    from tvm import relax

    from hetpart.importer.fusion import prepare_for_inference

    graph = load(models.build("resnet18", small=True))
    zero = relax.get_pipeline("zero")(prepare_for_inference(graph.relax_module))
    called = []
    for block in zero["main"].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir":
                called.append(b.value.args[0].name_hint)
    assert [k.func for k in graph.nodes] == called
    for k in graph.nodes:
        assert tvm_ffi.structural_equal(zero[k.func], graph.module[k.func]), k.func


def test_batch_norm_folds_into_conv():
    graph = load(models.build("resnet18", small=True))
    assert not any("batch_norm" in op for k in graph.nodes for op in k.ops)
    assert graph.nodes[0].ops[:1] == ("conv2d",) and "relu" in graph.nodes[0].ops


def _check_invariants(graph, model):
    graph.validate()
    assert nx.is_directed_acyclic_graph(graph.nx)
    order = graph.topological_order()
    assert len(order) == len(graph) == graph.nx.number_of_nodes()
    for t in graph.tensors.values():
        producers = [k for k in graph.kernels.values() if t.name in k.outputs]
        assert len(producers) + int(t.is_input) == 1, t.name
        for c in t.consumers:
            assert t.name in graph.kernels[c].inputs
    for u, v, names in graph.edges():
        assert graph.edge_bytes(u, v) == sum(graph.tensors[n].nbytes for n in names) > 0
    # Outputs agree with ONNX shape inference, in shape and in bytes.
    inferred = onnx.shape_inference.infer_shapes(model)
    onnx_out = {o.name: o for o in inferred.graph.output}
    assert len(graph.outputs) == len(onnx_out)
    for gout, oout in zip(graph.outputs, inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in oout.type.tensor_type.shape.dim]
        t = graph.tensors[gout]
        if t.static and all(d is not None for d in dims):
            assert list(t.shape) == dims
            elem = onnx.helper.tensor_dtype_to_np_dtype(oout.type.tensor_type.elem_type).itemsize
            assert t.nbytes == int(np.prod(dims)) * elem
    for k in graph.nodes:
        assert k.bytes_read >= k.param_bytes >= 0 and k.bytes_written > 0 and k.flops >= 0
    _check_output_names(graph, model)


def _check_output_names(graph, model):
    """A kernel's tensor holding a model output is named as the model names it (the
    first name where it holds several), and the summary shows that name."""
    names = [o.name for o in model.graph.output]
    assert graph.model_output_names == tuple(names)
    for i, (t, name) in enumerate(zip(graph.outputs, names)):
        if graph.tensors[t].producer is not None and t not in graph.outputs[:i]:
            assert t == name
    shown = graph.summary().splitlines()[2]
    assert shown.startswith("outputs: ") and "gv" not in shown.replace(",", " ").split(), shown
    assert all(f" {t} [" in shown for t in graph.outputs), shown


@pytest.mark.parametrize("name", [n if n not in ("swin", "resnet50") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in models.names()])
def test_every_small_zoo_model_imports(name):
    model = models.build(name, small=True)
    graph = load(model)
    assert len(graph) > 0
    _check_invariants(graph, model)
    assert graph.summary().startswith(f"model {graph.name}")


def test_the_summary_of_a_one_kernel_model_has_no_empty_tensor_table():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "one",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    lines = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).summary().splitlines()
    assert lines[-1] == "no tensor passes between kernels (each kernel reads only inputs and weights)", lines


def test_output_tensors_take_the_model_output_names_where_they_can():
    """``y`` passes the input through (the tensor keeps the input's name), ``same`` is
    one tensor with ``probs`` (named by the first), ``lv`` is the Relax var name of
    another tensor (the output takes it; that tensor moves to a fresh name)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["probs"], axis=-1),
             helper.make_node("Identity", ["probs"], ["same"]), helper.make_node("Identity", ["x"], ["y"]),
             helper.make_node("Neg", ["probs"], ["lv"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in ("probs", "same", "y", "lv")]
    m = helper.make_model(helper.make_graph(nodes, "names", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                                            outs), opset_imports=[helper.make_opsetid("", 17)])
    g = load(m)
    g.validate()
    assert g.model_output_names == ("probs", "same", "y", "lv")
    assert g.outputs == ("probs", "probs", "x", "lv") and g.tensors["lv"].is_output
    (moved,) = [t for t, old in g.relax_names.items() if old == "lv"]
    assert not g.tensors[moved].is_output and moved not in g.relax_names.values()
    assert g.tensors[moved].producer == g.topological_order()[0]  # the Relu's tensor, Relax's lv


def test_outputs_named_as_each_others_relax_tensors_swap_names():
    """Outputs named as Relax named each other's tensors take the names without a fresh
    one: the renames apply at once."""
    def two(names):
        nodes = [helper.make_node("Relu", ["x"], [names[0]]), helper.make_node("Neg", ["x"], [names[1]])]
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in names]
        return helper.make_model(helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                                 [2, 4])], outs),
                                 opset_imports=[helper.make_opsetid("", 17)])

    plain = load(two(("a", "b")))
    relax = [plain.relax_names[t] for t in plain.outputs]
    g = load(two(tuple(reversed(relax))))
    g.validate()
    assert g.outputs == tuple(reversed(relax)) and set(g.tensors) == {"x", *relax}


def test_symbolic_batch_is_fixed_by_shapes():
    g = load(conv_mlp(), shapes={"x": [5, 3, 8, 8]})
    assert g.tensors[g.outputs[0]].shape == (5, 10)


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 21])
def test_opsets(opset):
    model = conv_mlp(batch=1, opset=opset)
    model.ir_version = min(model.ir_version, 10)
    g = load(model)
    assert g.nodes[0].ops[0] == "conv2d"


# --- bad input: one clear, typed error each ------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_text("this is not a protobuf at all \x00\x01\x02" * 10)
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        load(p)


def test_truncated(tmp_path):
    p = tmp_path / "cut.onnx"
    data = conv_mlp(batch=1).SerializeToString()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cut.onnx"):
        load(p)


def test_checker_failure():
    model = conv_mlp(batch=1)
    model.graph.node[1].input[0] = "does_not_exist"
    with pytest.raises(ModelLoadError, match="checker"):
        load(model)


def test_shape_inference_failure():
    model = conv_mlp(batch=1)
    model.graph.initializer[2].dims[0] = 100  # MatMul of [1, 512] by [100, 10]
    model.graph.initializer[2].raw_data = np.zeros((100, 10), np.float32).tobytes()
    with pytest.raises(ModelLoadError, match="shape inference"):
        load(model)


def test_symbolic_dims_without_shape():
    with pytest.raises(ShapeError, match="x=\\?,3,8,8") as info:
        load(conv_mlp())
    assert "shapes (e.g. x=" in str(info.value) and "--shape (e.g. x=" in info.value.cli_message()


def test_bad_shape_overrides():
    with pytest.raises(ShapeError, match=": shapes names unknown input") as info:  # the API's argument
        load(conv_mlp(), shapes={"nope": [1]})
    assert "--shape names unknown input" in info.value.cli_message()  # the CLI's flag
    with pytest.raises(ShapeError, match="rank 4, shapes gives 3"):
        load(conv_mlp(), shapes={"x": [1, 3, 8]})
    with pytest.raises(ShapeError, match="fixed dim"):
        load(conv_mlp(), shapes={"x": [1, 4, 8, 8]})


def test_all_unsupported_ops_listed_at_once():
    model = conv_mlp(batch=1)
    model.graph.node[1].op_type = "FancyActivation"
    model.graph.node[1].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    model.graph.node[4].op_type = "LpNormalization"  # a real ONNX op TVM cannot import
    with pytest.raises(UnsupportedOpsError) as err:
        load(model)
    assert set(err.value.ops) == {"com.example.FancyActivation", "LpNormalization"}
    assert "act" in str(err.value) and "softmax" in str(err.value)


def test_wrong_type_is_a_user_error():
    with pytest.raises(ModelLoadError, match="expected a path"):
        load(42)


def test_error_families_are_separate():
    assert issubclass(UnsupportedOpsError, HetpartError)
    assert not issubclass(InternalError, HetpartError)


# --- the CLI: exit 1 and no traceback for user errors --------------------------------
# One test runs the CLI as a process (exit status and stderr as a shell sees them); the
# others call its ``main`` in this process, which returns that exit status and prints
# the same stderr (a process per case cost ~3 s of TVM import each).
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hetpart.cli.main", *args], capture_output=True, text=True)


def _cli_here(capsys, *args):
    from hetpart.cli.main import main

    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_cli_user_error_has_no_traceback(tmp_path):
    r = _cli(str(tmp_path / "missing.onnx"), "--summary-only")
    assert r.returncode == 1
    assert "no such file" in r.stderr and "Traceback" not in r.stderr


def test_cli_unknown_zoo_model(capsys):
    rc, _, err = _cli_here(capsys, "zoo:nonexistent", "--summary-only")
    assert rc == 1 and "Traceback" not in err and "resnet18" in err


def test_cli_summary(tmp_path, capsys):
    p = tmp_path / "m.onnx"
    onnx.save(conv_mlp(), p)
    rc, out, err = _cli_here(capsys, str(p), "--shape", "x=1,3,8,8", "--summary-only")
    assert rc == 0, err
    assert "conv2d" in out and "fused kernels" in out


def test_cli_bad_shape_syntax(tmp_path, capsys):
    p = tmp_path / "m.onnx"
    onnx.save(conv_mlp(), p)
    rc, _, err = _cli_here(capsys, str(p), "--shape", "x=1,three", "--summary-only")
    assert rc == 1 and "NAME=D0,D1" in err


def test_cli_lists_zoo(capsys):
    rc, out, _ = _cli_here(capsys, "zoo")
    assert rc == 0 and all(n in out for n in models.names())


def test_fused_ops_are_reported_per_function():
    import tvm  # noqa: F401

    graph = load(conv_mlp(batch=1))
    _, ops = fuse_with_ops(graph.relax_module)
    assert ops["fused_conv2d_add_relu"] == ("conv2d", "add", "relu")


def test_public_api():
    assert hetpart.load is load


def test_dependency_through_a_symbolic_shape_is_an_edge():
    """NMS's box count reaches the slice that trims its output only through a
    symbolic dim (tensor_to_shape + match_cast); the op graph must still link them."""
    g = load(models.build("detector", small=True))
    slice_k = next(k for k in g.nodes if k.func.startswith("dynamic_strided_slice"))
    shape_k = next(k for k in g.nodes if k.func.startswith("shape_func"))
    assert shape_k.id in g.predecessors(slice_k.id)


def test_erf_is_imported_as_tvm_fast_erf_and_still_pinnable():
    """BERT's GELU erf becomes TVM's fast_erf at import (hetpart.importer.fast_erf), and
    `--pin Erf=cpu` still finds those kernels by their ONNX name."""
    from hetpart import importer
    from hetpart.partitioner.pins import parse_pins, resolve_pins

    g = importer.load("zoo:bert:small")
    gelu = [k.id for k in g.nodes if "fast_erf" in k.ops]
    assert gelu and not any("erf" in k.ops for k in g.nodes)
    assert set(resolve_pins(g, parse_pins(["Erf=cpu"]))) == set(gelu)


@pytest.mark.parametrize("dims", [[-1, 32], [0, 32], [1, -32]])
def test_non_positive_shape_dims_are_a_shape_error_naming_the_argument(dims):
    from hetpart import ShapeError, load

    with pytest.raises(ShapeError, match=r"^shapes for input .input. is \[.*positive") as info:
        load("zoo:mlp:small", shapes={"input": dims})
    assert "--shape" not in str(info.value) and "--shape" in info.value.cli_message()


@pytest.mark.parametrize("dims", [np.array([1, 32]), [np.int64(1), 32], (1, 32)])
def test_shape_dims_may_be_numpy_integers_or_a_tuple(dims):
    from hetpart import load

    assert load("zoo:mlp:small", shapes={"input": dims}).tensors["input"].shape == (1, 32)


@pytest.mark.parametrize("shapes, words", [({"input": "1,32"}, "'1,32'; give its dims as a list"),
                                           ({"input": 1}, "is 1; give its dims as a list"),
                                           ([1, 32], "maps each input's name to its dims")])
def test_shapes_that_are_no_dims_are_a_shape_error_naming_the_input(shapes, words):
    from hetpart import ShapeError, load

    with pytest.raises(ShapeError, match=r"^shapes ") as info:
        load("zoo:mlp:small", shapes=shapes)
    assert words in str(info.value)


def test_a_zero_size_input_dim_is_static_not_symbolic():
    # onnx's CastLike tests pass their type as an empty tensor (shape [0]); a dim of 0
    # is a real (empty) dim, not a symbolic one that would need --shape
    from onnx.reference import ReferenceEvaluator

    from hetpart.backend import HetpartBackend

    f32, f16 = TensorProto.FLOAT, TensorProto.FLOAT16
    graph = helper.make_graph(
        [helper.make_node("CastLike", ["x", "like"], ["y"]), helper.make_node("Relu", ["e"], ["r"])], "m",
        [helper.make_tensor_value_info("x", f32, [4]), helper.make_tensor_value_info("like", f16, [0]),
         helper.make_tensor_value_info("e", f32, [0, 3])],
        [helper.make_tensor_value_info("y", f16, [4]), helper.make_tensor_value_info("r", f32, [0, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": np.arange(4, dtype=np.float32) / 3, "like": np.zeros(0, np.float16), "e": np.zeros((0, 3), np.float32)}
    got = HetpartBackend.run_model(m, list(feeds.values()))
    for g, w in zip(got, ReferenceEvaluator(m).run(None, feeds)):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
