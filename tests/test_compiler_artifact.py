"""The artifact on disk: save/load round trip, the manifest, every load error,
deterministic parallel builds, and cross-compiling CUDA partitions without a GPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import hetpart
from hetpart import compiler
from hetpart.compiler.artifact import MANIFEST, PLAN, READS, SCHEMA, VERSION
from hetpart.errors import CompileError, PlanError, TargetError
from hetpart.partitioner import Plan


def alternating(graph):
    return {kid: ("cpu", "cuda")[i % 2] for i, kid in enumerate(graph.topological_order())}


@pytest.fixture(scope="module")
def mlp_plan(zoo_graph, plan_for):
    g = zoo_graph("mlp")
    return plan_for(g, alternating(g))


@pytest.fixture(scope="module")
def saved(mlp_plan, tmp_path_factory):
    """``(CompiledModel, directory)``: the alternating mlp plan, simulated, saved."""
    cm = compiler.compile(mlp_plan, simulate=True, progress=False)
    return cm, cm.save(tmp_path_factory.mktemp("artifact") / "mlp")


@pytest.mark.parametrize("where", ["a_file", "a_file/below"])
def test_save_where_a_file_is_is_a_compile_error_naming_the_path(saved, tmp_path, where):
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(CompileError, match=f"cannot save the compiled model to {tmp_path / where}: .*directory"):
        saved[0].save(tmp_path / where)
    assert (tmp_path / "a_file").read_text() == "mine"


@pytest.fixture
def copy_of(saved, tmp_path):
    """A fresh copy of the saved artifact directory, to damage."""
    target = tmp_path / "copy"
    shutil.copytree(saved[1], target)
    return target


def test_save_writes_manifest_plan_and_one_library_per_partition(saved):
    cm, out = saved
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([MANIFEST, PLAN] + [f"{p.name}.so" for p in cm.partitions])
    manifest = json.loads((out / MANIFEST).read_text())
    import tvm

    assert (manifest["schema"], manifest["version"]) == (SCHEMA, VERSION)
    assert (manifest["hetpart"], manifest["tvm"]) == (hetpart.__version__, tvm.__version__)
    assert manifest["targets"]["cpu"]["kind"] == "llvm" and manifest["targets"]["cuda"]["kind"] == "llvm"
    assert manifest["simulated"] is True
    assert [t["name"] for t in manifest["inputs"]] == ["input"]
    first = manifest["partitions"][0]
    assert first["inputs"] == [{"name": "input", "shape": [1, 32], "dtype": "float32"}]
    assert first["library"] == "p0_cpu.so" and first["dps"] is True
    from hetpart.compiler.artifact import sha256_of

    for p in manifest["partitions"]:
        assert p["sha256"] == sha256_of(out / p["library"])
    assert json.loads((out / PLAN).read_text())["schema"] == "hetpart-plan"


def test_load_round_trip_runs_the_same(saved, compose, make_feeds, zoo_graph):
    cm, out = saved
    loaded = hetpart.load_compiled(out)
    assert [p.to_json() for p in loaded.partitions] == [p.to_json() for p in cm.partitions]
    assert loaded.inputs == cm.inputs and loaded.outputs == cm.outputs
    assert isinstance(loaded.plan, Plan)
    assert [p.kernels for p in loaded.plan.partitions] == [p.kernels for p in cm.plan.partitions]
    assert all(p.module is not None for p in loaded.partitions)
    feeds = make_feeds(zoo_graph("mlp"), seed=5)
    for got, want in zip(compose(loaded, feeds), compose(cm, feeds)):
        np.testing.assert_array_equal(got, want)


def test_parallel_and_serial_builds_give_identical_libraries(mlp_plan, saved):
    serial = compiler.compile(mlp_plan, simulate=True, jobs=1, progress=False)
    assert [p.sha256 for p in serial.partitions] == [p.sha256 for p in saved[0].partitions]


# --- every way loading can fail ----------------------------------------------------------
def _edit_manifest(directory, **changes):
    path = directory / MANIFEST
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_missing_library(copy_of):
    (copy_of / "p1_cuda.so").unlink()
    with pytest.raises(CompileError, match=r"p1_cuda\.so.*missing"):
        compiler.load_compiled(copy_of)


def test_library_with_another_hash(copy_of):
    with open(copy_of / "p0_cpu.so", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CompileError, match=r"p0_cpu\.so.*corrupt or was modified"):
        compiler.load_compiled(copy_of)


@pytest.mark.parametrize("field,value,match", [
    ("schema", "hetpart-profile", "not a hetpart compiled model"),
    ("version", max(READS) + 1, "format version"),  # a version this hetpart does not read
    ("tvm", "0.1.0", "compiled with TVM 0.1.0"),
], ids=["another_schema", "another_format_version", "another_tvm_version"])
def test_a_manifest_field_it_does_not_read(copy_of, field, value, match):
    _edit_manifest(copy_of, **{field: value})
    with pytest.raises(CompileError, match=match):
        compiler.load_compiled(copy_of)


def test_manifest_that_is_not_json(copy_of):
    (copy_of / MANIFEST).write_text("{not json")
    with pytest.raises(CompileError, match="not JSON"):
        compiler.load_compiled(copy_of)


def test_manifest_missing_fields(copy_of):
    data = json.loads((copy_of / MANIFEST).read_text())
    del data["partitions"][0]["sha256"], data["partitions"][0]["library"]
    (copy_of / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(CompileError, match="malformed"):
        compiler.load_compiled(copy_of)


def test_missing_manifest_or_directory(copy_of, tmp_path):
    (copy_of / MANIFEST).unlink()
    with pytest.raises(CompileError, match="manifest.json is missing"):
        compiler.load_compiled(copy_of)
    with pytest.raises(CompileError, match="does not exist"):
        compiler.load_compiled(tmp_path / "nowhere")
    with pytest.raises(CompileError, match="the directory a compiled model was saved to.*got NoneType"):
        compiler.load_compiled(None)
    # a plan written without --compile, and a file of the artifact named instead of its directory
    with pytest.raises(CompileError, match="holds a plan .plan.json. but no compiled artifact.*--compile"):
        compiler.load_compiled(copy_of)
    with pytest.raises(CompileError, match=f"is a file.*directory.*{copy_of}") as info:
        compiler.load_compiled(copy_of / PLAN)
    assert "does not exist" not in str(info.value)


def test_missing_plan(copy_of):
    (copy_of / PLAN).unlink()
    with pytest.raises(CompileError, match="plan.json is missing"):
        compiler.load_compiled(copy_of)


# --- compile-time errors -------------------------------------------------------------------
def test_compile_needs_a_graph(mlp_plan):
    bare = Plan.from_json(mlp_plan.to_json())
    with pytest.raises(CompileError, match="no op graph"):
        compiler.compile(bare, simulate=True, progress=False)


@pytest.mark.parametrize("arguments, words", [
    (lambda plan, graph: (graph, plan), "the plan first, then its graph"),
    (lambda plan, graph: ("out/plan.json", graph), "got str (a plan file is read with hetpart.partitioner.Plan.load"),
    (lambda plan, graph: (None, graph), "takes a plan (hetpart.partition(graph)), got NoneType"),
    (lambda plan, graph: (plan, "model.onnx"), "the op graph the plan was made of (hetpart.load(model)), got str"),
])
def test_compile_arguments_of_the_wrong_kind_say_what_to_pass(mlp_plan, arguments, words):
    with pytest.raises(CompileError) as info:
        compiler.compile(*arguments(mlp_plan, mlp_plan.graph), simulate=True, progress=False)
    assert words in str(info.value), str(info.value)


def test_compile_rejects_a_plan_for_another_model(mlp_plan, zoo_graph):
    with pytest.raises(PlanError):
        compiler.compile(mlp_plan, zoo_graph("dlrm"), simulate=True, progress=False)


# --- cross-compiling for a GPU this machine does not have -----------------------------------
def test_cross_compile_for_sm_90_embeds_cuda_code(mlp_plan, tmp_path):
    cm = compiler.compile(mlp_plan, cuda_arch="sm_90", progress=False)
    out = cm.save(tmp_path / "sm90")
    cuda_parts = [p for p in cm.partitions if p.device == "cuda"]
    assert cuda_parts and all(p.device_type == "cuda" and not p.simulated for p in cuda_parts)
    assert all(p.target["kind"] == "cuda" and p.target["arch"] == "sm_90" for p in cuda_parts)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["targets"]["cuda"]["arch"] == "sm_90" and manifest["simulated"] is False
    for p in cuda_parts:
        # Without a GPU the kernels stay CUDA C inside the library, compiled by
        # NVRTC when it is loaded on the GPU machine; with one, they are a cubin.
        data = (out / p.library).read_bytes()
        assert b"__global__" in data or b"\x7fELF" in data[1:]
    loaded = compiler.load_compiled(out, load_modules=False)
    assert [p.sha256 for p in loaded.partitions] == [p.sha256 for p in cm.partitions]
    assert all(p.module is not None for p in cm.partitions if p.device == "cpu")


def test_cpu_arch_builds_the_cpu_code_for_another_machine(mlp_plan, compose, make_feeds, zoo_graph):
    cm = compiler.compile(mlp_plan, simulate=True, cpu_arch="x86-64-v3", progress=False)
    assert {p.target["mcpu"] for p in cm.partitions} == {"x86-64-v3"}
    feeds = make_feeds(zoo_graph("mlp"), seed=6)
    want = compose(compiler.compile(mlp_plan, simulate=True, progress=False), feeds)
    for got, ref in zip(compose(cm, feeds), want):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(TargetError, match="not a CPU LLVM knows"):
        compiler.compile(mlp_plan, simulate=True, cpu_arch="pentium9", progress=False)


def _old_static_io_able_dims(shape) -> bool:
    """compiler.extract._static_io_able's per-tensor test before contracts.shapes.static_shape."""
    return all(not isinstance(d, (str, bool)) for d in shape)


def _old_is_static(shape) -> bool:
    """runtime.memory.is_static before contracts.shapes.static_shape."""
    return all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape)


INT_DIM_SHAPES = [(), (0,), (1,), (4, 128, 64), (np.int64(3), 5), (np.int32(2), np.uint8(7)), (1, "n"), ("n", "m"),
                  (True, 4), (4, False)]


@pytest.mark.parametrize("shape", INT_DIM_SHAPES)
def test_one_static_shape_test_agrees_with_both_old_ones_on_int_and_symbolic_dims(shape):
    from hetpart.contracts.shapes import static_shape
    from hetpart.runtime.memory import is_static

    assert static_shape(shape) == is_static(shape) == _old_is_static(shape) == _old_static_io_able_dims(shape)


@pytest.mark.parametrize("shape", [(None, 4), (4.0, 2), (np.float32(3),), (np.bool_(True),)])
def test_a_dim_that_is_no_integer_is_not_static_for_compiler_or_runtime(shape):
    """Where the two old tests differed (the compiler took these as static): now neither does;
    a partition with such a dim is built without static I/O and the runtime sizes it per call."""
    from types import SimpleNamespace

    from hetpart.compiler.artifact import TensorSpec
    from hetpart.contracts.shapes import static_shape
    from hetpart.compiler.extract import _static_io_able
    from hetpart.runtime.memory import is_static

    assert _old_static_io_able_dims(shape) and not _old_is_static(shape) or isinstance(shape[0], np.bool_)
    assert not static_shape(shape) and not is_static(shape)
    program = SimpleNamespace(device="cuda", inputs=(TensorSpec("x", shape, "float32"),),
                              outputs=(TensorSpec("y", (4,), "float32"),))
    assert not _static_io_able(program)
    program.inputs = (TensorSpec("x", (4, 2), "float32"),)
    assert _static_io_able(program)
