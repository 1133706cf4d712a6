"""Artifacts edited by someone else (issue 21, items 6 and 7): every file a manifest
names stays inside the artifact directory, the partition order is checked against
the data dependencies, and a library is checked (hash, ELF bounds) right before it is
loaded, on every path that loads one.  Crash-prone cases run in a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from isolated import assert_clean, run_isolated

import hetpart
from hetpart import compiler
from hetpart.compiler.artifact import MANIFEST, sha256_of
from hetpart.errors import CompileError


@pytest.fixture(scope="module")
def saved(zoo_graph, plan_for, tmp_path_factory):
    """An mlp artifact of two partitions (cpu, then simulated cuda), saved."""
    g = zoo_graph("mlp")
    order = g.topological_order()
    half = len(order) // 2
    plan = plan_for(g, {k: ("cpu" if i < half else "cuda") for i, k in enumerate(order)})
    cm = compiler.compile(plan, simulate=True, progress=False)
    return cm.save(tmp_path_factory.mktemp("artifact") / "mlp")


@pytest.fixture
def art(saved, tmp_path):
    target = tmp_path / "art"
    shutil.copytree(saved, target)
    return target


@pytest.fixture(scope="module")
def evil_library(tmp_path_factory):
    """``(library, marker)``: a shared library whose constructor creates ``marker``."""
    d = tmp_path_factory.mktemp("evil")
    marker = d / "constructor-ran"
    src = d / "evil.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void ran(void) '
                   f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    lib = d / "evil.so"
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")
    if cc is None:
        pytest.skip("no C compiler")
    subprocess.run([cc, "-shared", "-fPIC", "-x", "c", str(src), "-o", str(lib)], check=True)
    return lib, marker


def _manifest(directory):
    return json.loads((directory / MANIFEST).read_text())


def _write_manifest(directory, data):
    (directory / MANIFEST).write_text(json.dumps(data))


def _point_library_at(directory, name, sha256):
    data = _manifest(directory)
    data["partitions"][0]["library"] = name
    data["partitions"][0]["sha256"] = sha256
    _write_manifest(directory, data)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "subdir", "symlink"])
def test_a_library_outside_the_artifact_directory_is_never_loaded(art, evil_library, how):
    lib, marker = evil_library
    if how == "absolute":
        name = str(lib)
    elif how == "dotdot":
        shutil.copy(lib, art.parent / "evil.so")
        name = "../evil.so"
    elif how == "subdir":
        (art / "sub").mkdir()
        shutil.copy(lib, art / "sub" / "evil.so")
        name = "sub/evil.so"
    else:
        os.symlink(lib, art / "innocent.so")
        name = "innocent.so"
    _point_library_at(art, name, sha256_of(lib))
    for load_modules in (True, False):
        with pytest.raises(CompileError, match="artifact directory"):
            compiler.load_compiled(art, load_modules=load_modules)
    assert not marker.exists(), "the library's constructor ran"


def test_reversed_partitions_are_refused_not_run(art):
    data = _manifest(art)
    data["partitions"].reverse()
    _write_manifest(art, data)
    with pytest.raises(CompileError, match="order"):
        compiler.load_compiled(art)


@pytest.mark.slow
def test_in_memory_model_in_the_wrong_order_is_refused_by_the_session(saved):
    """The session checks too (a CompiledModel may be built or edited in memory); run
    in a child: the unchecked session hangs."""
    out = assert_clean(run_isolated(f"""
        import numpy as np
        import hetpart
        from hetpart.errors import CompileError
        cm = hetpart.load_compiled({str(saved)!r})
        cm.partitions.reverse()
        x = np.zeros(tuple(cm.inputs[0].shape), "float32")
        try:
            hetpart.Session(cm).run({{cm.inputs[0].name: x}})
        except CompileError as e:
            print("refused:", e)
    """, timeout=90))
    assert "refused:" in out and "order" in out


@pytest.mark.slow
def test_truncated_library_with_matching_hash_is_refused_not_mapped(art):
    lib = art / "p0_cpu.so"
    size = lib.stat().st_size
    with open(lib, "r+b") as f:
        f.truncate(size // 2)
    _point_library_at(art, "p0_cpu.so", sha256_of(lib))
    out = assert_clean(run_isolated(f"""
        import hetpart
        from hetpart.errors import CompileError
        try:
            hetpart.load_compiled({str(art)!r})
        except CompileError as e:
            print("refused:", e)
    """, timeout=120))
    assert "refused:" in out and "p0_cpu.so" in out


def test_a_library_replaced_after_load_compiled_is_checked_when_the_session_loads_it(art, evil_library):
    lib, marker = evil_library
    cm = compiler.load_compiled(art, load_modules=False)
    shutil.copy(lib, art / "p0_cpu.so")
    with pytest.raises(CompileError, match="corrupt or was modified"):
        hetpart.Session(cm)
    assert not marker.exists(), "the replaced library's constructor ran"


def test_save_never_writes_outside_the_target_directory(art, tmp_path):
    data = _manifest(art)
    os.rename(art / "p0_cpu.so", art.parent / "outside.so")
    data["partitions"][0]["library"] = "../outside.so"
    _write_manifest(art, data)
    with pytest.raises(CompileError, match="artifact directory"):
        cm = compiler.load_compiled(art, load_modules=False)
    # a model whose partition names such a file in memory is refused by save() too
    os.rename(art.parent / "outside.so", art / "p0_cpu.so")
    data["partitions"][0]["library"] = "p0_cpu.so"
    _write_manifest(art, data)
    cm = compiler.load_compiled(art, load_modules=False)
    cm.partitions[0].library = "../../escaped.so"
    out = tmp_path / "out" / "deeper"
    with pytest.raises(CompileError, match="artifact directory"):
        cm.save(out)
    assert not (tmp_path / "escaped.so").exists() and not (tmp_path / "out" / "escaped.so").exists()


def test_a_clean_artifact_still_loads_and_runs(art):
    cm = compiler.load_compiled(art)
    x = np.random.default_rng(0).standard_normal(tuple(cm.inputs[0].shape)).astype("float32")
    with hetpart.Session(cm) as s:
        out = s.run({cm.inputs[0].name: x})
    assert all(np.isfinite(v).all() for v in out.values())
