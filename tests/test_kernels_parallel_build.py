"""kernels.parallel_build: a CPU build's kernels lowered and code-generated as several LLVM
modules on threads, objects written on threads -- same values, same machine code per function
(tools/build_code_hash.py's disassembly), in memory and through export_library; and
importer.constant_builds: FoldConstant builds each distinct function once, same constants."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax

from hetpart import kernels
from hetpart.importer import constant_builds
from hetpart.kernels import parallel_build

from onnx_cases import fused_program, run_vm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from build_code_hash import disassembly  # noqa: E402

TARGET = tvm.target.Target("llvm")


def test_chunks_partition_names_two_or_more_each():
    names = [f"f{i}" for i in range(11)]
    parts = parallel_build.chunks(names, 4)
    assert sorted(sum(parts, [])) == sorted(names) and len(parts) == 4
    assert all(len(p) >= 2 for p in parts)
    assert parallel_build.chunks(names, 1) == [names]
    assert parallel_build.chunks(names[:3], 8) == [names[:3]]  # 3 names: no two lists of two
    assert all(len(p) >= 2 for p in parallel_build.chunks(names[:5], 8))


def _program():
    """A chain of matmuls, each with its activation, then a sum: 5+ distinct kernels, weights constant."""
    rng = np.random.default_rng(0)
    w = [rng.standard_normal((16 + 4 * i, 16 + 4 * (i + 1))).astype("float32") for i in range(4)]

    def body(bb, x):
        h = x
        for i, wi in enumerate(w):
            h = bb.emit(relax.op.matmul(h, relax.const(wi)))
            h = bb.emit(relax.op.nn.relu(h) if i % 2 else relax.op.tanh(h))
        return relax.op.sum(h, axis=[1], keepdims=True)

    x = rng.standard_normal((8, 16)).astype("float32")
    return fused_program([("x", (8, 16))], body), x, w


def _reference(x, w):
    h = x
    for i, wi in enumerate(w):
        h = h @ wi
        h = np.maximum(h, 0) if i % 2 else np.tanh(h)
    return h.sum(axis=1, keepdims=True)


def _llvm_modules(exe) -> int:
    return len([m for m in exe.mod._collect_dso_modules() if m.kind == "llvm"])  # noqa: SLF001


@pytest.fixture
def threads_two(monkeypatch):
    monkeypatch.setattr(parallel_build, "jobs", lambda: 2)
    monkeypatch.setattr(parallel_build, "MIN_FUNCTIONS", 4)


def test_parallel_build_same_values_and_code(tmp_path, threads_two, monkeypatch):
    mod, x, w = _program()
    monkeypatch.setattr(parallel_build, "ENABLED", False)
    serial = kernels.build(mod, TARGET)
    parallel_build.export_library(serial, str(tmp_path / "serial.so"))
    monkeypatch.setattr(parallel_build, "ENABLED", True)
    par = kernels.build(mod, TARGET)
    assert _llvm_modules(serial) == 1 and _llvm_modules(par) >= 2
    parallel_build.export_library(par, str(tmp_path / "parallel.so"))
    want = _reference(x, w)
    for exe in (serial, par, tvm.runtime.load_module(str(tmp_path / "parallel.so"))):
        np.testing.assert_allclose(run_vm(exe, [x]), want, rtol=2e-5, atol=2e-5)
    a, b = disassembly(str(tmp_path / "serial.so")), disassembly(str(tmp_path / "parallel.so"))
    kernels_ = [k for k in a if k.startswith("__tvm_ffi_")]
    assert len(kernels_) >= 4
    assert {k: a[k] for k in kernels_} == {k: b.get(k) for k in kernels_}


def test_small_module_builds_as_one(threads_two):
    exe = kernels.build(fused_program([("x", (4, 4))], lambda bb, v: relax.op.nn.relu(v)), TARGET)
    assert _llvm_modules(exe) == 1
    x = np.linspace(-1, 1, 16, dtype="float32").reshape(4, 4)
    np.testing.assert_array_equal(run_vm(exe, [x]), np.maximum(x, 0))


def _folding_module(sites: int):
    """main(x) = x + sum of ``sites`` reshapes of the same constant (one PrimFunc per shape,
    called ``sites`` times on constants: FoldConstant evaluates each call)."""
    c = np.arange(12, dtype="float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((3, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = x
            for i in range(sites):
                r = bb.emit(relax.op.reshape(relax.const(c + i), (3, 4)))
                acc = bb.emit(relax.op.add(acc, r))
            out = bb.emit_output(acc)
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    return mod, c


@pytest.mark.parametrize("enabled", [False, True])
def test_constant_builds_once_same_constants(enabled, monkeypatch):
    monkeypatch.setattr(constant_builds, "ENABLED", enabled)
    mod, c = _folding_module(4)
    with constant_builds.cached() as cache, tvm.transform.PassContext(opt_level=3):
        folded = relax.transform.FoldConstant()(mod)
    if enabled:
        assert cache.builds == 1 and cache.hits == 3  # one reshape PrimFunc, four constant call sites
    else:
        assert cache is None
    exe = tvm.compile(folded, TARGET)
    x = np.ones((3, 4), "float32")
    want = x + sum((c + i).reshape(3, 4) for i in range(4))
    np.testing.assert_array_equal(run_vm(exe, [x]), want)


def test_build_cache_keys_by_structure():
    from tvm.script import tirx as T

    def make():
        @T.prim_func
        def f(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
            for i in range(4):
                b[i] = a[i] * T.float32(2)
        return f

    calls = []
    cache = constant_builds.BuildCache()

    def build(func, target, pipeline):
        calls.append(func)
        return object()

    first = cache.get_or_build(build, make(), "llvm", "default")
    assert cache.get_or_build(build, make(), "llvm", "default") is first  # equal, not the same object
    assert cache.get_or_build(build, make(), "c", "default") is not first  # another target
    assert (cache.builds, cache.hits, len(calls)) == (2, 1, 2)


def test_schedule_on_threads_equals_in_turn(threads_two, monkeypatch):
    mod, _, _ = _program()
    monkeypatch.setattr(parallel_build, "SCHEDULE_THREADS", False)
    in_turn = kernels.schedule(mod, TARGET)
    monkeypatch.setattr(parallel_build, "SCHEDULE_THREADS", True)
    threaded = kernels.schedule(mod, TARGET)
    assert len(kernels.rules_applied(threaded)) >= 4
    assert tvm_ffi.structural_equal(in_turn, threaded)
    assert parallel_build.map_threads(lambda x: x * x, list(range(10)), threads=3) == [x * x for x in range(10)]


def test_prebuild_serves_every_fold(monkeypatch):
    """constant_builds.prebuild legalises the operator calls on constants (and on their results)
    as FoldConstant does and builds them ahead on threads: FoldConstant then builds nothing, same
    constants."""
    monkeypatch.setattr(constant_builds, "PREBUILD_MIN", 1)
    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal((1, 4)).astype("float32"), rng.standard_normal((i + 1, 1, 4)).astype("float32"))
             for i in range(3)]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            outs = []
            for a, b in pairs:  # a * b + a folds (two distinct functions per shape); x + it does not
                folded = bb.emit(relax.op.multiply(relax.const(a), relax.const(b)))
                folded = bb.emit(relax.op.add(folded, relax.const(a)))  # a fold of a fold
                outs.append(bb.emit(relax.op.add(x, folded)))
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    mod = bb.get()
    with tvm.transform.PassContext(opt_level=3):
        plain = relax.transform.FoldConstant()(mod)
        with constant_builds.cached() as cache:
            ahead = constant_builds.prebuild(mod, cache, threads=2)
            built = cache.builds
            folded = relax.transform.FoldConstant()(mod)
    assert ahead == built == 6 and cache.builds == 6 and cache.hits == 6  # FoldConstant built none
    x_ = np.ones((1, 4), "float32")
    vm = [relax.VirtualMachine(tvm.compile(m, TARGET), tvm.cpu()) for m in (folded, plain)]
    for got, want in zip(*(v["main"](tvm.runtime.tensor(x_)) for v in vm)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
