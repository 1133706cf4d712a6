"""External weights (issue 19): a partition's weights in a file beside its library, bound at load.

A library embedding 4 GiB or more of weights is cut by TVM's LLVM and crashes the
process when loaded (:mod:`hetpart.compiler.external` says how); the compiler now keeps
a partition's weights over ``external_weights`` bytes in ``<partition>.params.bin``.
Here the threshold is forced low on small models, and the results are checked against
ONNX Runtime: CPU partitions, simulated CUDA ones (both entry points), beside streamed
partitions, through a saved and reloaded artifact.  The ``cuda``-marked test runs the
same on a real GPU (CUDA graphs capture the bound weights); the ``slow`` ones build a
4.5 GB table, the direct reproduction (run on the GPU machine, tools/device_round.sh 44; 43 runs the cuda ones):

    PYTHONPATH=. python -m pytest tests/test_compiler_external_weights.py -q -m "cuda or slow"
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetpart import compiler, importer
from hetpart.compiler.artifact import MANIFEST, VERSION, WEIGHT_ALIGNMENT
from hetpart.compiler.external import EXTERNAL_MIN_BYTES
from hetpart.errors import CompileError
from hetpart.runtime import Session

from onnx_cases import model, onnxruntime_outputs, plan_all_on
from streaming_plans import plan_with_devices

VOCAB, DIM, HIDDEN, OUT = 50, 64, 96, 32
rng = np.random.default_rng(19)
TABLE = rng.standard_normal((VOCAB, DIM)).astype(np.float32)
W1 = rng.standard_normal((DIM, HIDDEN)).astype(np.float32) / 8
B1 = rng.standard_normal(HIDDEN).astype(np.float32)
W2 = rng.standard_normal((HIDDEN, OUT)).astype(np.float32) / 8


@pytest.fixture(scope="module")
def onnx_model():
    """Gather from a table (indices may be negative), add an input, two MatMuls (a division
    by a 0-d initializer and a ReLU between)."""
    nodes = [helper.make_node("Gather", ["table", "ids"], ["g"], axis=0),
             helper.make_node("Add", ["g", "x"], ["h"]),
             helper.make_node("MatMul", ["h", "w1"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["a0"]),
             helper.make_node("Div", ["a0", "two"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["y"])]
    return model(nodes, [("ids", (2, 5), np.int64), ("x", (2, 5, DIM), np.float32)], [("y", (2, 5, OUT), np.float32)],
                 {"table": TABLE, "w1": W1, "b1": B1, "two": np.array(2.0, np.float32), "w2": W2})


@pytest.fixture(scope="module")
def graph(onnx_model):
    return importer.load(onnx_model)


def feeds():
    ids = np.array([[0, 1, -1, 49, -50], [7, 0, -2, 3, 3]], np.int64)  # zeros, negatives, both ends
    x = rng.standard_normal((2, 5, DIM)).astype(np.float32)
    x[0, 0] = 0.0
    return {"ids": ids, "x": x}


PLANS = {"all-cpu": ["cpu"], "cpu-cuda-cpu": ["cpu", "cuda", "cpu"], "cuda-cpu": ["cuda", "cpu"]}
_BUILT: dict = {}


def build(graph, layout: str, external_weights, streamed: bool = False):
    """The model compiled (simulated CUDA) with ``external_weights`` (cached per arguments)."""
    key = (layout, external_weights, streamed)
    if key not in _BUILT:
        plan = plan_with_devices(graph, PLANS[layout], streamed=streamed)
        _BUILT[key] = compiler.compile(plan, simulate=True, progress=False, external_weights=external_weights)
    return _BUILT[key]


def check_against_ort(onnx_model, compiled, runs: int = 2):
    f = feeds()
    (want,) = onnxruntime_outputs(onnx_model, f)
    with Session(compiled) as s:
        for _ in range(runs):  # the bound weights serve every run
            np.testing.assert_allclose(s.run(f)["y"], want, rtol=1e-4, atol=1e-4)


def library_bytes(compiled, p) -> bytes:
    return compiled.library_path(p).read_bytes()


# --- round trip ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", list(PLANS))
def test_external_weights_round_trip_matches_onnxruntime(onnx_model, graph, layout, tmp_path):
    compiled = build(graph, layout, 0)
    check_against_ort(onnx_model, compiled)
    loaded = compiler.load_compiled(compiled.save(tmp_path / "m"))
    check_against_ort(onnx_model, loaded)
    table = TABLE.tobytes()[:256]
    weighed = {p.name: p.weight_bytes for p in compiled.plan.partitions}
    for p in loaded.partitions:
        assert (p.external is not None) == (weighed[p.name] > 0), f"{p.name}: weights over 0 bytes in its library"
        assert table not in library_bytes(loaded, p), f"{p.name}'s library still embeds the table"
    assert any(table in loaded.weights_path(p, external=True).read_bytes() for p in loaded.partitions if p.external)


def test_dps_and_main_entry_points_both_take_the_weights_last(onnx_model, graph, compose):
    """``main(*inputs, *weights)`` and ``main_dps(*inputs, *outputs, *weights)``, each called
    directly (the test harness binds the weights as the runtime does)."""
    compiled = build(graph, "cpu-cuda-cpu", 0)
    assert any(p.dps for p in compiled.partitions)
    f = feeds()
    (want,) = onnxruntime_outputs(onnx_model, f)
    for dps in (False, True):
        np.testing.assert_allclose(compose(compiled, f, dps=dps)[0], want, rtol=1e-4, atol=1e-4)


def test_manifest_records_the_threshold_and_each_weights_file(graph, tmp_path):
    compiled = build(graph, "cpu-cuda-cpu", 0)
    manifest = json.loads((compiled.save(tmp_path / "m") / MANIFEST).read_text())
    assert manifest["version"] == VERSION >= 4  # 4 added external weights
    assert manifest["external_min_bytes"] == 0
    for entry, p in zip(manifest["partitions"], compiled.plan.partitions):
        ext = entry["external"]
        if not p.weight_bytes:  # the index normalisation: no weights, no file
            assert ext is None
            continue
        assert ext["file"] == f"{p.name}.params.bin" and entry["weights"] is None
        assert ext["nbytes"] == (tmp_path / "m" / ext["file"]).stat().st_size
        assert all(t["offset"] % WEIGHT_ALIGNMENT == 0 for t in ext["tensors"])
        assert sum(t["nbytes"] for t in ext["tensors"]) <= ext["nbytes"]



def test_weight_file_layout_keeps_every_shape(tmp_path):
    """Each tensor at a 64-byte aligned offset, with its own shape -- a 0-d weight stays
    0-d (LLaMA's attention scale; ``np.ascontiguousarray`` would have made it (1,), and
    the kernel then refused it: "Mismatched param_1.ndim")."""
    import tvm

    from hetpart.compiler.external import write_weight_file

    values = [np.array(2.5, np.float32), tvm.runtime.tensor(np.arange(7, dtype=np.int64)),
              np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2], np.zeros((0, 3), np.float32)]
    wf = write_weight_file(tmp_path / "w.bin", ["s", "i", "strided", "empty"], values, "test")
    assert [t.shape for t in wf.tensors] == [(), (7,), (3, 2), (0, 3)]
    assert all(t.offset % WEIGHT_ALIGNMENT == 0 for t in wf.tensors)
    data = (tmp_path / "w.bin").read_bytes()
    assert len(data) == wf.nbytes
    for t, v in zip(wf.tensors, values):
        want = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
        got = np.frombuffer(data, t.dtype, count=want.size, offset=t.offset).reshape(t.shape)
        np.testing.assert_array_equal(got, want)


def test_small_weights_stay_in_the_library_by_default(onnx_model, graph, tmp_path):
    compiled = build(graph, "all-cpu", EXTERNAL_MIN_BYTES)
    (p,) = compiled.partitions
    assert p.external is None and TABLE.tobytes()[:256] in library_bytes(compiled, p)
    manifest = json.loads((compiled.save(tmp_path / "m") / MANIFEST).read_text())
    assert manifest["external_min_bytes"] == EXTERNAL_MIN_BYTES and manifest["partitions"][0]["external"] is None
    check_against_ort(onnx_model, compiled, runs=1)


def test_the_threshold_is_decided_per_partition(onnx_model, graph):
    """Over the threshold: all of that partition's weights in its file; under: all in its library."""
    sizes = {p.name: p.weight_bytes for p in plan_with_devices(graph, PLANS["cuda-cpu"], streamed=False).partitions}
    small, big = sorted(sizes, key=sizes.get)
    assert sizes[small] < sizes[big]
    compiled = build(graph, "cuda-cpu", sizes[small] + 1)
    by_name = {p.name: p for p in compiled.partitions}
    assert by_name[small].external is None and by_name[big].external is not None
    check_against_ort(onnx_model, compiled, runs=1)


def test_streamed_partitions_keep_their_ring(onnx_model, graph):
    """With streaming on, CUDA partitions stream as before (weights file, ring); only
    the CPU partitions' weights become external."""
    compiled = build(graph, "cpu-cuda-cpu", 0, streamed=True)
    weighed = {p.name: p.weight_bytes for p in compiled.plan.partitions}
    for p in compiled.partitions:
        assert (p.weights is not None) == (p.device == "cuda")
        assert (p.external is not None) == (p.device == "cpu" and weighed[p.name] > 0)
    check_against_ort(onnx_model, compiled)


def test_library_cache_copies_the_weights_file_with_the_library(onnx_model, graph, tmp_path):
    cache = compiler.LibraryCache()
    plan = plan_all_on(graph, "cpu")
    first = compiler.compile(plan, progress=False, external_weights=0, library_cache=cache)
    second = compiler.compile(dataclasses.replace(plan, model="again"), progress=False, external_weights=0,
                              library_cache=cache)
    assert cache.hits == 1
    del first  # its staging directory goes: the second must own its files
    check_against_ort(onnx_model, compiler.load_compiled(second.save(tmp_path / "m")), runs=1)


def test_sessions_of_one_model_share_its_host_weights(onnx_model, graph):
    """CPU weights are read once per loaded model, as an embedded executable's constants
    were shared by its VMs: a second session binds views of the same host buffer."""
    compiled = build(graph, "all-cpu", 0)
    with Session(compiled) as a, Session(compiled) as b:
        wa, wb = (s._stages[0].runner._weights for s in (a, b))
        assert wa and [int(t.data_ptr()) for t in wa] == [int(t.data_ptr()) for t in wb]
        assert int(wa[0].data_ptr()) % (2 << 20) == 0  # huge-page aligned
    check_against_ort(onnx_model, compiled, runs=1)


# --- checks on load ---------------------------------------------------------------------------
@pytest.fixture
def saved(graph, tmp_path):
    return build(graph, "all-cpu", 0).save(tmp_path / "m")


def test_a_modified_weights_file_is_refused(saved):
    (path,) = saved.glob("*.params.bin")
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(data)
    with pytest.raises(CompileError, match="corrupt or was modified"):
        compiler.load_compiled(saved)
    path.unlink()
    with pytest.raises(CompileError, match="is missing"):
        compiler.load_compiled(saved)


def test_a_version_3_artifact_still_loads_and_runs(onnx_model, graph, tmp_path):
    """Before version 4 every weight was in its library: such an artifact reads as it was."""
    directory = build(graph, "cpu-cuda-cpu", None).save(tmp_path / "m")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["version"] = 3
    del manifest["external_min_bytes"]
    for p in manifest["partitions"]:
        del p["external"]
    (directory / MANIFEST).write_text(json.dumps(manifest))
    loaded = compiler.load_compiled(directory)
    assert loaded.external_min_bytes is None and all(p.external is None for p in loaded.partitions)
    check_against_ort(onnx_model, loaded, runs=1)


def cut_library(path, extra: int) -> None:
    """Make ``path`` look like a library LLVM cut at 4 GiB: its embedded blob's header and
    the VM executable's byte count inside it claim ``extra`` bytes more than the file has."""
    from hetpart.compiler import elf

    data = bytearray(path.read_bytes())
    at = _blob_offset(path, elf)
    kind = data.index(b"relax.VMExecutable", at) + len(b"relax.VMExecutable")
    for where in (at, kind):
        (count,) = struct.unpack_from("<Q", data, where)
        struct.pack_into("<Q", data, where, count + extra)
    path.write_bytes(data)


def _blob_offset(path, elf) -> int:
    with open(path, "rb") as f:
        ident = f.read(64)
        fields = struct.unpack_from("<" + elf._LAYOUT[2][0], ident)
        phoff, shoff, phentsize, phnum, shentsize, shnum = (fields[4], fields[5], fields[8], fields[9], fields[10],
                                                            fields[11])
        sections = [struct.unpack_from("<" + elf._LAYOUT[2][2], elf._read(f, shoff, shentsize * shnum), i * shentsize)
                    for i in range(shnum)]
        vaddr = elf._symbol_value(f, sections, "<", 2, elf.LIBRARY_BIN)
        table = elf._read(f, phoff, phentsize * phnum)
    for i in range(phnum):
        ptype, _, offset, start, _, filesz, _, _ = struct.unpack_from("<" + elf._LAYOUT[2][1], table, i * phentsize)
        if ptype == 1 and start <= vaddr < start + filesz:
            return offset + vaddr - start
    raise AssertionError("no blob")


def test_a_library_cut_at_4_gib_is_refused_with_a_typed_error(graph, tmp_path):
    """An old artifact whose library embedded >= 4 GiB of weights (the llama_decode
    all-CPU build): TVM's loader would read past the file and crash the process
    (see the next test); the loader says to recompile instead."""
    directory = build(graph, "all-cpu", None).save(tmp_path / "m")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["version"] = 3
    (lib,) = directory.glob("*.so")
    cut_library(lib, 256 << 20)
    from hetpart.compiler.artifact import sha256_of

    manifest["partitions"][0]["sha256"] = sha256_of(lib)  # not a corrupt copy: the file as it was built
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CompileError, match="cut it at 4 GiB.*recompile"):
        compiler.load_compiled(directory)
    with pytest.raises(CompileError, match="cut it at 4 GiB"):
        compiler.load_compiled(directory, load_modules=False)


def test_tvm_itself_crashes_on_such_a_library(graph, tmp_path):
    """Why the check above exists: ``tvm.runtime.load_module`` on the cut library kills
    the process with a signal (SIGSEGV on the H200, SIGBUS here), no Python error."""
    directory = build(graph, "all-cpu", None).save(tmp_path / "m")
    (lib,) = directory.glob("*.so")
    cut_library(lib, 256 << 20)
    code = f"import tvm; tvm.runtime.load_module({str(lib)!r}); print('loaded')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode < 0 and "loaded" not in result.stdout, (result.returncode, result.stderr[-500:])


# --- on a real GPU ----------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("layout", ["cpu-cuda-cpu", "cuda-cpu"])
def test_external_weights_on_a_real_gpu(onnx_model, graph, layout):
    """CUDA partitions copy their weights into the GPU once; their CUDA graphs capture
    the bound weights and replay them run after run."""
    from hetpart.targets import cuda_available

    if not cuda_available():
        pytest.skip("no CUDA GPU")
    plan = plan_with_devices(graph, PLANS[layout], streamed=False)
    compiled = compiler.compile(plan, progress=False, external_weights=0)
    assert all((p.external is not None) == (q.weight_bytes > 0) for p, q in zip(compiled.partitions, plan.partitions))
    assert any(p.external is not None and p.device_type == "cuda" for p in compiled.partitions)
    check_against_ort(onnx_model, compiled, runs=4)


# --- the direct reproduction: 4.5 GB of weights in one partition --------------------------------
BIG_ROWS, BIG_DIM = 1_100_000, 1024  # 4.51 GB of float32: over 4 GiB


def big_table_model():
    """One Gather from a 4.5 GB table whose row ``i`` is ``i + j / 1024`` (checkable without a copy)."""
    table = (np.arange(BIG_ROWS, dtype=np.float32)[:, None] + np.arange(BIG_DIM, dtype=np.float32) / BIG_DIM)
    init = numpy_helper.from_array(table, "table")
    del table
    g = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)], "big",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, [8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, BIG_DIM])], [init])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _need_memory(gb: float):
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
    if avail < gb:
        pytest.skip(f"needs ~{gb:.0f} GB of free memory, {avail:.0f} GB here")


@pytest.mark.slow
@pytest.mark.parametrize("external", [True, False], ids=["external", "embedded"])
def test_a_4_5_gb_partition(external, tmp_path):
    """Built all-CPU: with its weights in a file it loads and computes the right rows
    (indices at both ends, negative too); embedded (``external_weights=None``, as before
    this fix) the library comes out cut at 4 GiB, and the compile's own load of it (where
    step 33 crashed) is a CompileError saying so, not a segfault."""
    _need_memory(40)
    graph = importer.load(big_table_model())
    plan = plan_all_on(graph, "cpu")
    if not external:
        with pytest.raises(CompileError, match="cut it at 4 GiB") as caught:
            compiler.compile(plan, progress=False, external_weights=None)
        print(caught.value)
        return
    directory = compiler.compile(plan, progress=False).save(tmp_path / "m")
    del graph, plan
    (lib,) = directory.glob("*.so")
    print("files", sorted((p.name, p.stat().st_size) for p in directory.iterdir()))
    assert lib.stat().st_size < 1 << 20
    ids = np.array([0, 1, BIG_ROWS - 1, -1, -BIG_ROWS, 123_456, 0, BIG_ROWS * 10 // 11], np.int64)
    with Session(compiler.load_compiled(directory)) as s:
        y = s.run({"ids": ids})["y"]
    rows = np.where(ids < 0, ids + BIG_ROWS, ids).astype(np.float32)
    np.testing.assert_array_equal(y, rows[:, None] + np.arange(BIG_DIM, dtype=np.float32) / BIG_DIM)
