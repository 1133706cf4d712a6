"""``partition MODEL``: ordinary mistakes are one-line errors found before any work,
output directories are replaced whole, and the report is not interleaved with TVM's log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hetpart.cli.main import main
from hetpart.importer.onnx_source import read_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = "zoo:mlp:small"


def cli(capsys, *argv):
    rc = main([*argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("shape", ["input=-1,32", "input=0,32", "input=1,-32"])
def test_non_positive_dims_are_rejected(capsys, shape):
    rc, out, err = cli(capsys, MODEL, "--shape", shape)
    assert rc == 1 and out == ""
    assert f"--shape '{shape}'" in err and "positive" in err


@pytest.mark.parametrize("argv, words", [
    (["--gpu-memory", "lots"], ["'lots' is not a size"]),
    (["--gpu-memory=-4GiB"], ["--gpu-memory", "positive"]),
    (["--gpu-memory", "inf"], ["'inf' is not a size"]),
    (["--shape", "input=1,32", "--shape", "input=2,32"], ["--shape", "'input' twice", "1,32", "2,32"]),
    (["--gpu-memory", "infGiB"], ["'infGiB' is not a size"]),
    (["--gpu-memory", "nanMiB"], ["'nanMiB' is not a size"]),
    (["--pin", "Gather"], ["--pin 'Gather'"]),
    (["--pin", "Gather=tpu"], ["unknown device 'tpu'"]),
    (["--pin", "NoSuchOp=cpu"], ["--pin NoSuchOp=cpu", "no kernel"]),
    (["--objective", "fastest"], ["unknown objective 'fastest'"]),
    (["--cuda-arch", "ampere", "-o", "{out}", "--compile"], ["--cuda-arch", "'ampere'", "sm_90"]),
    (["--compile"], ["--compile", "-o DIR"]),
    (["--run"], ["--run", "-o DIR"]),
    (["--trace", "-o", "{out}"], ["--trace", "--run"]),
])
def test_bad_arguments_fail_before_any_report(capsys, tmp_path, argv, words):
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in argv]
    rc, out, err = cli(capsys, MODEL, *argv)
    assert rc == 1, err
    assert out == "", "the report was printed before the error"
    assert err.startswith("partition: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err
    assert not (tmp_path / "out").exists()


def test_report_names_the_output_by_its_onnx_name(capsys):
    """The summary and the transfers table call the model's output by its ONNX name,
    never by TVM Relax's name for it (``gv``)."""
    (output,) = [o.name for o in read_model(MODEL).model.graph.output]
    rc, out, err = cli(capsys, MODEL, "--pin", "node_2=cuda")  # the output crosses to the host
    assert rc == 0, err
    assert re.search(rf"^outputs: {re.escape(output)} \[", out, re.M), out
    assert re.search(rf"^  {re.escape(output)} +p0_cuda +output \(host\)", out, re.M), out
    assert not re.search(r"\bgv\b", out), out


def test_out_that_is_an_existing_file_is_a_user_error(capsys, tmp_path):
    f = tmp_path / "taken"
    f.write_text("mine")
    rc, out, err = cli(capsys, MODEL, "-o", str(f))
    assert rc == 1 and out == ""
    assert str(f) in err and "not a directory" in err
    assert f.read_text() == "mine"


def test_out_under_a_file_is_a_user_error(capsys, tmp_path):
    f = tmp_path / "taken"
    f.write_text("mine")
    rc, out, err = cli(capsys, MODEL, "-o", str(f / "out"))
    assert rc == 1 and out == "" and "partition: error:" in err and "Traceback" not in err


def test_out_holding_files_hetpart_did_not_write_is_left_alone(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    rc, out, err = cli(capsys, MODEL, "-o", str(tmp_path))
    assert rc == 1 and "notes.txt" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_compile_replaces_an_older_artifact_whole(capsys, tmp_path):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, MODEL, "--pin", "node_0=cpu", "--pin", "node_1=cuda", "--pin", "node_2=cpu", "--simulate", "-o", str(out), "--compile")
    assert rc == 0, err
    before = {p.name for p in out.iterdir()}
    assert "p1_cuda.so" in before
    rc, _, err = cli(capsys, MODEL, "--simulate", "-o", str(out), "--compile")
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    libraries = {p["library"] for p in manifest["partitions"]}
    left = {p.name for p in out.iterdir()}
    assert "p1_cuda.so" not in left, "a library of the older artifact was left behind"
    assert left == libraries | {"manifest.json", "plan.json", "plan.svg", "plan.trace.json"}
    assert not [p for p in tmp_path.iterdir() if p.name != "out"], "a staging directory was left behind"


def test_missing_cxx_compiler_says_how_to_get_one(monkeypatch, tmp_path, zoo_graph):
    import hetpart

    graph = zoo_graph("mlp")
    plan = hetpart.partition(graph)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(hetpart.CompileError) as info:
        hetpart.compile(plan, graph, simulate=True, progress=False)
    assert "C++ compiler" in str(info.value) and "apt-get install g++" in str(info.value)


def run_cli(args: str, pipe: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """``partition ARGS [| PIPE]`` in a shell, as a user types it (``env``: extra variables)."""
    env = dict(os.environ, **(env or {}), PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    command = f"{sys.executable} -c 'import sys; from hetpart.cli.main import main; sys.exit(main())' {args}"
    return subprocess.run(command + (f" | {pipe}" if pipe else ""), shell=True, env=env, capture_output=True,
                          text=True, timeout=300)


def test_output_into_a_closed_pipe_is_quiet():
    done = run_cli("zoo", pipe="head -1")
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


TVM_NOISE = ("Fast mode segfaults", "pragma_scope", "max_shared_memory_per_block", "/project/include/tvm")


@pytest.mark.slow
def test_tvm_log_goes_to_a_file_not_into_the_report(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = run_cli(f"zoo:dlrm:small --pin node_1=cuda --simulate -o {tmp_path / 'out'} --compile --run", env=env)
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in TVM_NOISE)]
    assert not noise, f"TVM's log in the report's stderr: {noise[:3]}"
    log = (tmp_path / "cache" / "hetpart" / "tvm.log").read_text()
    assert "partition zoo:dlrm:small" in log and "Fast mode segfaults" in log


@pytest.mark.slow
def test_verbose_shows_tvm_log(tmp_path, capfd, monkeypatch):
    """In this process (``main``, as a shell runs it): TVM's C++ log reaches file descriptor 2,
    which ``capfd`` reads, as the terminal would."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rc = main(["zoo:dlrm:small", "--verbose"])
    err = capfd.readouterr().err
    assert rc == 0, err
    assert "Fast mode segfaults" in err
    assert not (tmp_path / "hetpart" / "tvm.log").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory_is_a_user_error(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        rc, out, err = cli(capsys, MODEL, "-o", str(locked / "out"))
    finally:
        locked.chmod(0o755)
    assert rc == 1 and out == "" and "not writable" in err
